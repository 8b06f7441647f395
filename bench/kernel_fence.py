#!/usr/bin/env python3
"""How late Linux removes an address whose lifetime (valid_lft) ended: the kernel fence's margin.

kubevipd gives the VIP a kernel lifetime at each renewal so that a frozen or killed leader loses it
by itself before any follower may take the Lease (kubevipd.machine_state.KERNEL_LATE). The kernel
removes an expired address at its next lifetime check, which runs at most once a second with
250 ms of rounding; and since Linux 6.9 (the per-namespace IPv4 check) that check is a
*deferrable* timer, which an idle CPU runs only when something else wakes it. So the lateness is
measured, not derived: idle (the worst case), and with every CPU busy.

Each sample sets a 1 s lifetime through kubevipd's own netlink code (vip/netlink.VipLink) in a
namespace made for the run, at a staggered phase, and times the RTM_DELADDR kubevipd's Monitor
hears. Prints one JSON document.

    .venv/bin/python bench/kernel_fence.py --samples 20 > bench/kernel_fence.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import secrets
import statistics
import subprocess
import sys
import time
from ipaddress import ip_address
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kubevipd.lab.netns import run_in_netns  # noqa: E402
from kubevipd.machine import KERNEL_LATE  # noqa: E402
from kubevipd.vip.netlink import Monitor, Vip, VipLink  # noqa: E402

FAMILIES = {"ipv4": Vip(ip_address("192.0.2.10"), 32), "ipv6": Vip(ip_address("2001:db8::10"), 128)}
LIFETIME = 1
WAIT_S = 10.0  # per sample: far past any lateness seen; a sample that never ends fails the run


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _sample(ns: str, ifname: str, index: int, vip: Vip, phase: float) -> float:
    """Seconds after the lifetime ended until the kernel said the address was gone."""
    gone: queue.Queue[float] = queue.Queue()
    mon = run_in_netns(
        ns, lambda: Monitor(index, [vip], lambda up: None, lambda: gone.put(time.monotonic()))
    )
    mon.start()
    try:
        time.sleep(phase)  # a random phase against the kernel's once-a-second check

        def add() -> float:
            link = VipLink(ifname, [vip])
            try:
                sent = time.monotonic()  # the kernel stamps the lifetime after this
                link.add(LIFETIME)
                return sent
            finally:
                link.close()

        sent = run_in_netns(ns, add)
        return gone.get(timeout=WAIT_S) - sent - LIFETIME
    finally:
        mon.stop()


def _busy_cpus(n: int) -> list[subprocess.Popen[bytes]]:
    """One busy loop per CPU: a busy CPU runs deferrable timers on time."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def _summary(late: list[float]) -> dict[str, float]:
    s = sorted(late)
    return {
        "median_ms": round(statistics.median(s) * 1000),
        "p95_ms": round(s[min(len(s) - 1, int(0.95 * len(s)))] * 1000),
        "max_ms": round(s[-1] * 1000),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=20, help="per family and load (default 20)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/kernel_fence.py needs root (it makes a network namespace)", file=sys.stderr)
        return 2
    ns = f"kvdkf-{os.getpid()}-{secrets.token_hex(3)}"
    _ip("netns", "add", ns)
    result: dict[str, Any] = {
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "lifetime_s": LIFETIME,
        "samples": args.samples,
        "kernel_late_bound_ms": round(KERNEL_LATE * 1000),
    }
    try:
        _ip("-n", ns, "link", "add", "kf-a", "type", "veth", "peer", "name", "kf-b")
        for dev in ("lo", "kf-a", "kf-b"):
            _ip("-n", ns, "link", "set", dev, "up")
        out = subprocess.run(
            ["ip", "-n", ns, "-j", "link", "show", "kf-a"], check=True, capture_output=True
        )
        index = int(json.loads(out.stdout)[0]["ifindex"])
        for load in ("idle", "busy"):
            procs: list[subprocess.Popen[bytes]] = []
            if load == "busy":
                procs = _busy_cpus(os.cpu_count() or 1)
            try:
                for name, vip in FAMILIES.items():
                    late = [
                        _sample(ns, "kf-a", index, vip, (0.37 * i) % 1.0)
                        for i in range(args.samples)
                    ]
                    result[f"{name}_{load}"] = _summary(late)
            finally:
                for p in procs:
                    p.kill()
                    p.wait()
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
    worst = max(v["max_ms"] for k, v in result.items() if isinstance(v, dict))
    result["worst_ms"] = worst
    result["within_bound"] = worst < result["kernel_late_bound_ms"]
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
