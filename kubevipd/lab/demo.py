"""``kubevipd demo``: a VIP failing over between three simulated control-plane nodes.

The lab has kubeadm's shape: each node namespace runs its own apiserver on 6443 (one shared
store stands for etcd), and each node's kubeconfig names the VIP, as ``kubeadm init
--control-plane-endpoint VIP:6443`` writes admin.conf. Three real daemons (``kubevipd run``, one
a node) elect a leader through the Lease at their own apiserver; a client namespace pings the
VIP and GETs ``https://VIP:6443/readyz`` every 10 ms. The demo stops the leader (SIGTERM: a
planned hand-over) and starts it again, then stops the new leader's apiserver (a kubeadm upgrade
restarts it; the node lives on), then kills the next leader and pulls its cable (a dead node:
the lease must expire). It prints who holds the VIP, each outage the client's pings saw, and
how long the API was unreachable through the VIP.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from kubevipd import exitcodes
from kubevipd.lab.probes import ApiProber, HolderSampler, Pinger, Replies
from kubevipd.lab.topology import Lab


def _say(text: str) -> None:
    print(text, flush=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _wait_single_holder(lab: Lab, sampler: HolderSampler, not_: str | None, timeout: float) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        h = lab.holders()
        if len(h) == 1 and h[0] != not_:
            return h[0]
        time.sleep(0.005)
    raise RuntimeError(f"no single VIP holder after {timeout:.0f}s (holders: {lab.holders()})")


def _outage_ms(probe: Replies, since: float, settle: float = 0.5) -> float:
    """The longest silence the client saw around ``since``, once replies flow again."""
    end = time.monotonic() + 15
    while time.monotonic() < end:
        later = probe.replies_after(since)
        if later and later[-1] - later[0] > settle and len(later) > 20:
            break
        time.sleep(0.05)
    return round(probe.outage_around(since, window=30) * 1000, 1)


def _outages(pinger: Pinger, api: ApiProber, since: float, key: str, out: dict[str, object]) -> str:
    out[f"{key}_outage_ms"] = ping = _outage_ms(pinger, since)
    out[f"{key}_api_outage_ms"] = reach = _outage_ms(api, since)
    return (
        f"the client's pings saw an outage of {ping} ms; https://VIP:6443/readyz answered "
        f"again after {reach} ms"
    )


def main(n_nodes: int = 3, keep_logs: str | None = None) -> int:
    if os.geteuid() != 0:
        print("kubevipd demo needs root: it builds network namespaces", file=sys.stderr)
        return exitcodes.CONFIG
    if shutil.which("ip") is None:
        print("kubevipd demo needs the ip command (Debian package iproute2)", file=sys.stderr)
        return exitcodes.CONFIG
    signal.signal(signal.SIGTERM, _interrupt)
    results: dict[str, object] = {}
    lab: Lab | None = None
    rc = 0
    try:
        lab = Lab.create(n_nodes)
        _say(
            f"lab {lab.uid}: {n_nodes} nodes on {lab.subnet}.0/24, each with its own apiserver "
            f"on :6443; VIP {lab.vip}, client {lab.client_ip}"
        )
        _say(
            f"every kubeconfig names {lab.vip_url}, as kubeadm writes admin.conf; the daemons "
            "reach the Lease at their own apiserver (127.0.0.1:6443), never through the VIP"
        )
        _say("timings: lease_duration 3s, renew_deadline 2s, retry_period 500ms; ARP mode")
        with HolderSampler(lab) as sampler, Pinger(lab) as pinger, ApiProber(lab) as api:
            t0 = time.monotonic()
            for node in lab.nodes:
                lab.start(node)
            first = _wait_single_holder(lab, sampler, None, 30)
            results["start_to_vip_ms"] = round((time.monotonic() - t0) * 1000)
            _say(
                f"{first} holds the VIP, {results['start_to_vip_ms']} ms after the daemons started"
            )
            steady = time.monotonic() + 0.5
            if not lab.wait_for(lambda: len(pinger.replies_after(steady)) > 20, 10):
                raise RuntimeError("the client cannot ping the VIP")
            if not lab.wait_for(lambda: len(api.replies_after(steady)) > 20, 10):
                raise RuntimeError(f"the client cannot reach {lab.vip_url}")
            _say(f"the client pings {lab.vip} and GETs {lab.vip_url}/readyz every 10 ms")

            _say(f"\n1. systemctl stop on {first} (SIGTERM): a planned hand-over")
            t1 = time.monotonic()
            lab.signal(lab.node(first), signal.SIGTERM)
            second = _wait_single_holder(lab, sampler, first, 30)
            _say(f"   {second} holds the VIP; {_outages(pinger, api, t1, 'sigterm', results)}")
            _say(f"   {first} exited with status {lab.wait_exit(lab.node(first))}; started again")
            lab.start(lab.node(first))

            _say(f"\n2. the apiserver on {second} stops (a kubeadm upgrade restarts it)")
            if not lab.wait_for(lambda: lab.ready(lab.node(first)), 10):
                raise RuntimeError(f"{first} did not start again")
            t2 = time.monotonic()
            lab.node(second).api.stop()
            third = _wait_single_holder(lab, sampler, second, 30)
            _say(
                f"   {third} holds the VIP; {_outages(pinger, api, t2, 'apiserver_down', results)}"
            )
            lab.node(second).api.restart()
            _say(f"   the apiserver on {second} is back; {second} follows")

            _say(f"\n3. {third} dies: SIGKILL and its cable pulled (the lease must expire)")
            t3 = time.monotonic()
            lab.signal(lab.node(third), signal.SIGKILL)
            lab.cut_link(lab.node(third))
            fourth = _wait_single_holder(lab, sampler, third, 30)
            _say(f"   {fourth} holds the VIP; {_outages(pinger, api, t3, 'node_death', results)}")
            mac = lab.client_neighbour_mac()
            ok_mac = mac == lab.node(fourth).mac
            _say(
                f"   the client's neighbour table maps {lab.vip} to {mac} "
                f"({'the new leader' if ok_mac else 'NOT the new leader'})"
            )
        results["samples"] = sampler.samples
        results["max_holders"] = sampler.max_holders
        _say(
            f"\n{sampler.samples} samples of all nodes every 10 ms: at most "
            f"{sampler.max_holders} node held the VIP at any sample"
        )
        _say(json.dumps(results))
        if sampler.max_holders > 1 or not ok_mac:
            rc = 1
    except KeyboardInterrupt:
        _say("\ninterrupted: cleaning up")
        rc = 130
    except RuntimeError as e:
        print(f"demo failed: {e}", file=sys.stderr)
        rc = 1
    finally:
        if lab is not None:
            if keep_logs:
                dest = Path(keep_logs)
                dest.mkdir(parents=True, exist_ok=True)
                for n in lab.nodes:
                    if n.log and n.log.exists():
                        shutil.copy(n.log, dest / f"{n.name}.log")
            elif rc != 0:
                for n in lab.nodes:
                    print(f"--- {n.name} log\n{lab.log_text(n)[-3000:]}", file=sys.stderr)
            lab.destroy()
            shutil.rmtree(lab.workdir, ignore_errors=True)
            _say(f"removed lab {lab.uid}: its namespaces, daemons and files are gone")
    return rc
