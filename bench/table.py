#!/usr/bin/env python3
"""Print the Markdown table of a bench/failover.py result: bench/table.py bench/results.json

The outage is given two ways for each system, median / p95 in ms: the longest gap in the
client's pings to the VIP ("ping"), and in its ``GET https://VIP:6443/readyz`` ("API": what
kubectl sees, the VIP held *and* a working apiserver behind it).
"""

from __future__ import annotations

import json
import sys
from typing import Any

NAMES = {
    "graceful_stop": "graceful stop (SIGTERM)",
    "crash": "crash (SIGKILL + link cut)",
    "link_down": "leader's link down",
    "follower_restart": "follower restart",
    "apiserver_partition": "leader's apiserver cut from etcd",
    "apiserver_dies": "leader's apiserver dies",
}


def cells(sc: dict[str, Any] | None, rounds: int) -> list[str]:
    if sc is None:
        return ["-", "-"]
    o, a = sc["outage_ms"], sc["api_outage_ms"]
    fewer = f" ({sc['rounds']} rounds)" if sc["rounds"] != rounds else ""
    return [f"{o['median']:.0f} / {o['p95']:.0f}", f"{a['median']:.0f} / {a['p95']:.0f}{fewer}"]


def table(doc: dict[str, Any]) -> str:
    systems = list(doc["systems"])
    rounds = doc["rounds"]
    head = (
        "| scenario | "
        + " | ".join(f"{s} ping | {s} API" for s in systems)
        + " | two holders (ms): "
        + " / ".join(systems)
        + " |"
    )
    lines = [head, "|---" * (2 + 2 * len(systems)) + "|"]
    for key, label in NAMES.items():
        scs = [doc["systems"][s]["scenarios"].get(key) for s in systems]
        if all(sc is None for sc in scs):
            continue
        double = [f"{sc['dual_holder_ms_total']:.0f}" if sc else "-" for sc in scs]
        lines.append(
            "| "
            + " | ".join([label, *(c for sc in scs for c in cells(sc, rounds)), " / ".join(double)])
            + " |"
        )
    lines.append("")
    lines.append("Outages in ms, median / p95 over the rounds.")
    detail = []
    for s in systems:
        for key in ("apiserver_partition", "apiserver_dies"):
            sc = doc["systems"][s]["scenarios"].get(key)
            if sc is None:
                continue
            bits = [
                f"{what} {sc[f'{k}_median']:.0f} ms"
                for k, what in (
                    ("detected_ms", "noticed"),
                    ("dropped_ms", "old leader without the VIP"),
                    ("takeover_ms", "new holder"),
                )
                if f"{k}_median" in sc
            ]
            if bits:
                detail.append(f"- {s}, {NAMES[key]} (medians after the fault): " + ", ".join(bits))
        backs = [
            (k, sc["failback"])
            for k, sc in doc["systems"][s]["scenarios"].items()
            if "failback" in sc
        ]
        if backs:
            detail.append(
                f"- {s}: the VIP moves back to its MASTER when it recovers (preemption): "
                + "; ".join(
                    f"{NAMES[k]}: after {b['after_ms_median']:.0f} ms, ping "
                    f"{b['outage_ms']['median']:.0f} / API {b['api_outage_ms']['median']:.0f} ms "
                    f"median, two holders {b['dual_holder_ms_total']:.0f} ms"
                    for k, b in backs
                )
            )
    extra = []
    for s in systems:
        d = doc["systems"][s]
        bits = []
        alone = d.get("single_node_start")
        if alone:
            ready = f"READY {alone['to_ready_ms']:.0f} ms, " if "to_ready_ms" in alone else ""
            bits.append(f"started alone: {ready}VIP {alone['to_vip_ms']:.0f} ms")
        bits.append(f"three started at once: VIP {d.get('start_to_vip_ms')} ms")
        if "idle_leader" in d:
            idle = d["idle_leader"]
            bits.append(f"idle leader {idle['rss_mib']} MiB RSS, {idle['cpu_percent']} % CPU")
        if "idle_shipped_defaults" in d:
            i = d["idle_shipped_defaults"]
            bits.append(
                f"idle with the shipped 5s/3s/1s timings: leader {i['leader']['rss_mib']} MiB, "
                f"{i['leader']['cpu_percent']} % CPU; follower {i['follower']['rss_mib']} MiB, "
                f"{i['follower']['cpu_percent']} % CPU"
            )
        if "api_requests_per_s" in d:
            r = d["api_requests_per_s"]
            bits.append(f"API requests/s: leader {r['leader']}, follower {r['follower']}")
        if "dual_holder_ms_whole_run" in d:
            bits.append(f"two holders over the whole run: {d['dual_holder_ms_whole_run']:.0f} ms")
        if d.get("errors"):
            bits.append(f"{len(d['errors'])} failed rounds: " + "; ".join(d["errors"]))
        extra.append(f"- {s} ({d['version']}): " + "; ".join(bits))
    use = doc.get("machine", {}).get("cpu_use")
    if use:
        extra.append(
            f"- the machine during the run ({use['seconds']} s, {doc['machine']['cpus']} CPUs): "
            f"the bench used {use['bench_cores']} cores on average, other processes "
            f"{use['other_cores']}"
        )
    return "\n".join([*lines, *detail, "", *extra])


BGP_NAMES = {
    "graceful_stop": "graceful hand-over (SIGTERM)",
    "crash_hold_30s": "leader's node dies, hold time 30 s",
    "crash_hold_9s": "leader's node dies, hold time 9 s",
    "apiserver_dies": "leader's apiserver dies",
    "all_nodes_apiserver_dies": "all-nodes mode: one apiserver dies",
}


def bgp_table(bgp: dict[str, Any]) -> str:
    """The BGP rows (bench/bgp_failover.py): the client behind BIRD, and r1's kernel."""
    lines = [
        "| event | ping | API | route gone at r1 | new leader's route used at r1 | "
        "kube-vip (documented) |",
        "|---|---|---|---|---|---|",
    ]
    for key, label in BGP_NAMES.items():
        sc = bgp["scenarios"].get(key)
        if sc is None:
            continue
        o, a = sc["outage_ms"], sc["api_outage_ms"]
        gone = sc.get("withdrawn_ms_median")
        used = sc.get("installed_ms_median")
        lines.append(
            f"| {label} | {o['median']:.0f} / {o['p95']:.0f} | {a['median']:.0f} / "
            f"{a['p95']:.0f} | {gone if gone is not None else '-'} | "
            f"{used if used is not None else '-'} | "
            f"{bgp['kube_vip_documented'].get(key, '-')} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        doc = json.load(f)
    if "systems" in doc:
        print(table(doc))
    if "scenarios" in doc or "bgp" in doc:
        print(bgp_table(doc.get("bgp", doc)))
