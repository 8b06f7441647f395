#!/usr/bin/env python3
"""Print the Markdown table of a bench/failover.py result: bench/table.py bench/results.json"""

from __future__ import annotations

import json
import sys
from typing import Any

NAMES = {
    "graceful_stop": "graceful stop (SIGTERM)",
    "crash": "crash (SIGKILL + link cut)",
    "link_down": "leader's link down",
    "follower_restart": "follower restart",
    "apiserver_partition": "leader cut off from the apiserver",
}


def table(doc: dict[str, Any]) -> str:
    systems = list(doc["systems"])
    head = (
        "| scenario | "
        + " | ".join(f"{s}: outage median / p95 / max (ms)" for s in systems)
        + " | two holders (ms): "
        + " / ".join(systems)
        + " |"
    )
    lines = [head, "|---" * (2 + len(systems)) + "|"]
    for key, label in NAMES.items():
        cells = [label]
        double = []
        for s in systems:
            sc = doc["systems"][s]["scenarios"].get(key)
            if sc is None:
                cells.append("-")
                double.append("-")
                continue
            o = sc["outage_ms"]
            cells.append(f"{o['median']:.0f} / {o['p95']:.0f} / {o['max']:.0f}")
            double.append(f"{sc['dual_holder_ms_total']:.0f}")
        lines.append("| " + " | ".join([*cells, " / ".join(double)]) + " |")
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
        extra.append(f"- {s} ({d['version']}): " + "; ".join(bits))
    return "\n".join([*lines, "", *extra])


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        print(table(json.load(f)))
