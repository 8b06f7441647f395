#!/usr/bin/env python3
r"""BGP rows of the failover bench: kubevipd with its ExaBGP against real routers.

The lab's BGP shape (``Lab.create(3, bgp=True)``, kubevipd/lab/topology.py): three kubeadm-shaped
nodes (own apiserver each, kubeconfigs naming the VIP), BIRD 2 on r1 (it forwards: its best
routes go to its kernel, ECMP when equal) and GoBGP on r2, every node peering with both; the
client sits behind r1 and reaches the VIP only through the route r1 learnt. From the client an
ICMP echo every 5 ms and ``GET https://VIP:6443/readyz`` every 10 ms, as bench/failover.py.

Each row gives the outages seen by that client and, read from r1's kernel (what it forwards
by), the time from the event until the old node's route is gone (``withdrawn``) and until the
new leader's is the one used (``installed``):

- ``graceful_stop``: SIGTERM to the leader (withdraw, remove the VIP, release the Lease);
- ``crash_hold_30s`` / ``crash_hold_9s``: the leader's node dies (its cable cut, then every
  process of it killed, so nothing reaches the routers): they keep its route until their hold
  timer fires, and the new leader's wins on MED at once;
- ``apiserver_dies``: the leader's apiserver stops, the node lives on;
- ``all_nodes_apiserver_dies``: ``election.backend: none``, every node announcing (ECMP); one
  node's apiserver stops and its route must go.

    sudo .venv/bin/python bench/bgp_failover.py --rounds 5 > bench/bgp.json

bench/failover.py runs it too, in the same run (its ``bgp`` section).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from failover import (  # noqa: E402
    KUBEVIPD_TIMINGS,
    Probes,
    flush_vip,
    keep_logs,
    ms,
    stable_holder,
    summary,
)

from kubevipd.lab.routers import NODE_AS, ROUTER_AS, Peering  # noqa: E402
from kubevipd.lab.topology import Lab, Node  # noqa: E402

SCENARIOS = (
    "graceful_stop",
    "crash_hold_30s",
    "crash_hold_9s",
    "apiserver_dies",
    "all_nodes_apiserver_dies",
)
POLL = 0.005
# What kube-vip documents for the same events (its BGP mode embeds GoBGP): a dead leader's
# route stays until the hold timer (30 s by default, or BFD where configured); its all-nodes
# mode's health check takes a dead apiserver out of ECMP after 15-18 s.
KUBE_VIP_DOCUMENTED = {
    "crash_hold_30s": "30 s: the hold timer (kube-vip withdraws nothing per prefix)",
    "crash_hold_9s": "9 s: the hold timer",
    "all_nodes_apiserver_dies": "15-18 s: its health check's documented defaults",
}


class BgpLab:
    """One BGP lab and its daemons, in leader mode or all-nodes mode."""

    def __init__(self, hold: int, all_nodes: bool = False) -> None:
        self.hold = hold
        self.all_nodes = all_nodes
        self.lab = Lab.create(3, bgp=True, r1=Peering(hold_time=hold), r2=Peering(hold_time=hold))

    def start(self, node: Node) -> None:
        extra: dict[str, Any] = {"election": KUBEVIPD_TIMINGS}
        if self.all_nodes:
            extra = {
                "election": {"backend": "none"},
                "health": {"ca_file": str(self.lab.pki.ca_cert)},
            }
        self.lab.start(node, **self.lab.bgp_config(), **extra)

    def hops(self) -> list[str]:
        return self.lab.r1.kernel_next_hops(self.lab.vip)

    def settled(self, timeout: float) -> None:
        """Every session up on both routers, and r1 forwarding as the mode wants."""
        for r in self.lab.routers:
            r.wait_established(timeout=timeout)
        want = sorted(n.ip for n in self.lab.nodes)
        if not self.all_nodes:
            leader = self.lab.node(stable_holder(self.lab, 1.0))
            want = [leader.ip]
        if not self.lab.wait_for(lambda: self.hops() == want, timeout, interval=0.02):
            raise RuntimeError(f"r1 forwards to {self.hops()}, not {want}")

    def close(self) -> None:
        self.lab.destroy()


def seen_at(lab: Lab, predicate: Any, timeout: float) -> float | None:
    """When ``predicate`` first held (polled every POLL seconds), or None."""
    return time.monotonic() if lab.wait_for(predicate, timeout, interval=POLL) else None


def one_round(b: BgpLab, probes: Probes, scenario: str) -> dict[str, Any]:
    lab = b.lab
    b.settled(b.hold + 20)
    victim = lab.nodes[0] if b.all_nodes else lab.node(lab.holders()[0])
    time.sleep(random.uniform(0.2, 0.7))  # a random phase of the 500 ms retry period
    double0 = len(probes.sampler.double)
    t0 = time.monotonic()
    if scenario == "graceful_stop":
        lab.signal(victim, signal.SIGTERM)
    elif scenario.startswith("crash"):
        pids = Lab.process_tree(victim)
        lab.cut_link(victim)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
    else:
        victim.api.stop()
    withdrawn = seen_at(lab, lambda: victim.ip not in b.hops(), 40)
    installed = None
    if not b.all_nodes:
        installed = seen_at(lab, lambda: (h := b.hops()) != [] and victim.ip not in h, 40)
    if not probes.flowing(since=installed or withdrawn or t0):
        raise RuntimeError(f"pings or the API do not answer through the VIP after {scenario}")
    old_kept = scenario.startswith("crash") and any(
        r.from_peer == victim.ip for r in lab.r1.routes(lab.vip)
    )
    result = {
        **probes.outages(t0, time.monotonic()),
        "withdrawn_ms": ms(withdrawn, t0),
        "installed_ms": ms(installed, t0),
        # A crash: the routers still hold the dead node's route (hold timer) when the new
        # leader's wins: the MED decided, not the hold timer.
        "old_route_still_held": old_kept if scenario.startswith("crash") else None,
        "dual_holder_ms": probes.double_ms(double0),
    }
    # Put the lab back for the next round.
    if scenario == "graceful_stop":
        lab.wait_exit(victim, 10)
        b.start(victim)
    elif scenario.startswith("crash"):
        assert victim.proc is not None
        victim.proc.wait(10)
        flush_vip(lab, victim, "lo")
        lab.restore_link(victim)
        b.start(victim)
    else:
        victim.api.restart()
    return result


def run_rows(rounds: int, crash_rounds: int, only: set[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "routers": f"r1 BIRD 2 (forwards; ECMP in its kernel), r2 GoBGP (RIB); both AS {ROUTER_AS}",
        "kubevipd": {"timings": KUBEVIPD_TIMINGS, "local_as": NODE_AS, "peers": 2},
        "kube_vip_documented": KUBE_VIP_DOCUMENTED,
        "scenarios": {},
    }
    plans = [
        (30, False, ["graceful_stop", "crash_hold_30s", "apiserver_dies"]),
        (9, False, ["crash_hold_9s"]),
        (30, True, ["all_nodes_apiserver_dies"]),
    ]
    for hold, all_nodes, scenarios in plans:
        scenarios = [s for s in scenarios if not only or s in only]
        if not scenarios:
            continue
        b = BgpLab(hold, all_nodes)
        try:
            with Probes(b.lab) as probes:
                for n in b.lab.nodes:
                    b.start(n)
                for scenario in scenarios:
                    n_rounds = crash_rounds if scenario.startswith("crash") else rounds
                    results = []
                    for i in range(n_rounds):
                        try:
                            r = one_round(b, probes, scenario)
                        except (RuntimeError, TimeoutError) as e:
                            out.setdefault("errors", []).append(f"{scenario} {i + 1}: {e}")
                            print(f"bgp {scenario} {i + 1}/{n_rounds}: {e}", file=sys.stderr)
                            keep_logs(b.lab, f"bgp-{scenario}")
                            continue
                        results.append(r)
                        print(f"bgp {scenario} {i + 1}/{n_rounds}: {r}", file=sys.stderr)
                    if results:
                        s = summary(results)
                        if all_nodes:  # every node holds it by design: no two-holder figure
                            s.pop("dual_holder_ms_total")
                            for r in s["all"]:
                                r.pop("dual_holder_ms")
                        out["scenarios"][scenario] = s
                if not all_nodes:
                    out.setdefault("dual_holder_ms_leader_mode_runs", 0.0)
                    out["dual_holder_ms_leader_mode_runs"] += probes.double_ms(0)
        finally:
            b.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--crash-rounds", type=int, default=3, help="each waits for a hold timer")
    ap.add_argument("--scenarios", default="", help=f"a subset of: {','.join(SCENARIOS)}")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/bgp_failover.py needs root (network namespaces)", file=sys.stderr)
        return 2
    only = set(args.scenarios.split(",")) - {""} or None
    doc = {"date": time.strftime("%Y-%m-%d"), **run_rows(args.rounds, args.crash_rounds, only)}
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
