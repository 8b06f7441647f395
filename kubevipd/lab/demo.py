"""``kubevipd demo``: a VIP failing over between three simulated control-plane nodes.

Three real daemons (``kubevipd run``, each in its own network namespace) share a Lease on the lab
API server; a client namespace pings the VIP every 10 ms. The demo stops the leader (SIGTERM: a
planned hand-over), then kills the next one and pulls its cable (a dead node: the lease must
expire), and prints who holds the VIP and each outage the client saw.
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

from kubevipd.lab.topology import HolderSampler, Lab, Pinger


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


def _outage_ms(pinger: Pinger, since: float, settle: float = 0.5) -> float:
    """The longest silence the client saw around ``since``, once replies flow again."""
    end = time.monotonic() + 15
    while time.monotonic() < end:
        later = pinger.replies_after(since)
        if later and later[-1] - later[0] > settle and len(later) > 20:
            break
        time.sleep(0.05)
    return round(pinger.outage_around(since, window=30) * 1000, 1)


def main(n_nodes: int = 3, keep_logs: str | None = None) -> int:
    if os.geteuid() != 0:
        print("kubevipd demo needs root: it builds network namespaces", file=sys.stderr)
        return 2
    if shutil.which("ip") is None:
        print("kubevipd demo needs the ip command (Debian package iproute2)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    results: dict[str, object] = {}
    lab: Lab | None = None
    rc = 0
    try:
        lab = Lab.create(n_nodes)
        _say(
            f"lab {lab.uid}: {n_nodes} nodes on {lab.subnet}.0/24, Lease API at {lab.api.url}, "
            f"VIP {lab.vip}, client {lab.client_ip}"
        )
        _say("timings: lease_duration 3s, renew_deadline 2s, retry_period 500ms; ARP mode")
        with HolderSampler(lab) as sampler, Pinger(lab) as pinger:
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
            _say(f"the client pings {lab.vip} every 10 ms and gets answers")

            _say(f"\n1. systemctl stop on {first} (SIGTERM): a planned hand-over")
            t1 = time.monotonic()
            lab.signal(lab.node(first), signal.SIGTERM)
            second = _wait_single_holder(lab, sampler, first, 30)
            results["sigterm_outage_ms"] = _outage_ms(pinger, t1)
            _say(
                f"   {second} holds the VIP; the client saw an outage of "
                f"{results['sigterm_outage_ms']} ms; {first} exited with status "
                f"{lab.wait_exit(lab.node(first))}"
            )

            _say(f"\n2. {second} dies: SIGKILL and its cable pulled (the lease must expire)")
            t2 = time.monotonic()
            lab.signal(lab.node(second), signal.SIGKILL)
            lab.cut_link(lab.node(second))
            third = _wait_single_holder(lab, sampler, second, 30)
            results["node_death_outage_ms"] = _outage_ms(pinger, t2)
            _say(
                f"   {third} holds the VIP; the client saw an outage of "
                f"{results['node_death_outage_ms']} ms"
            )
            mac = lab.client_neighbour_mac()
            ok_mac = mac == lab.node(third).mac
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
