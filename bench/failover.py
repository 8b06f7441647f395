#!/usr/bin/env python3
"""Failover of the control-plane VIP: kubevipd, keepalived and a polling elector, in one run.

Each system gets a fresh lab (three node namespaces, a client, the lab Lease server); the
client sends an ICMP echo to the VIP every 5 ms and every node is sampled every 5 ms. For each
scenario and round it records the outage the client saw (the longest gap between answers from
the event until answers flow again), the time during which two nodes held the VIP, and how long
the client's neighbour entry took to point at the new holder. Prints one JSON document.

    sudo .venv/bin/python bench/failover.py --rounds 10 > bench/results.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kubevipd import __version__  # noqa: E402
from kubevipd.lab.topology import HolderSampler, Lab, Node, Pinger  # noqa: E402

PROBE = 0.005
SCENARIOS = ("graceful_stop", "crash", "link_down", "follower_restart", "apiserver_partition")
KUBEVIPD_TIMINGS = {"lease_duration": "3s", "renew_deadline": "2s", "retry_period": "500ms"}


# ------------------------------------------------------------------ the systems


class Kubevipd:
    name = "kubevipd"
    settle = 1.0  # seconds of one stable holder before a round starts
    scenarios = SCENARIOS

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.env: dict[str, str] = {}

    def start(self, node: Node) -> None:
        self.lab.start(node, env=self.env, election=KUBEVIPD_TIMINGS)

    def ready(self, node: Node) -> bool:
        return self.lab.ready(node)

    def stop(self, node: Node, wait: bool = True) -> None:
        self.lab.signal(node, signal.SIGTERM)
        if wait:
            self.lab.wait_exit(node, 10)

    def kill(self, node: Node) -> None:
        self.lab.signal(node, signal.SIGKILL)
        self.lab.wait_exit(node, 10)

    def version(self) -> str:
        return __version__


class _ChildPerNode:
    """A system that the bench runs as one child process a node."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def running(self, node: Node) -> bool:
        p = self.procs.get(node.name)
        return p is not None and p.poll() is None

    def stop(self, node: Node, wait: bool = True) -> None:
        p = self.procs[node.name]
        p.send_signal(signal.SIGTERM)
        if wait:
            p.wait(10)


class Keepalived(_ChildPerNode):
    """keepalived as the kubeadm HA guide sets it up: VRRP, advert_int 1, priorities 150/100/50."""

    name = "keepalived"
    settle = 5.0  # a restarted higher-priority node preempts after ~3.6s
    scenarios = ("graceful_stop", "crash", "link_down", "follower_restart")

    def __init__(self, lab: Lab) -> None:
        super().__init__(lab)
        self.starts = 0

    def start(self, node: Node) -> None:
        i = self.lab.nodes.index(node)
        prio = (150, 100, 50)[i] if i < 3 else 10
        conf = self.lab.workdir / f"{node.name}.keepalived.conf"
        conf.write_text(
            "global_defs {\n  enable_script_security\n}\n"
            "vrrp_instance VI_1 {\n"
            f"  state {'MASTER' if i == 0 else 'BACKUP'}\n"
            "  interface eth0\n  virtual_router_id 51\n"
            f"  priority {prio}\n  advert_int 1\n"
            "  authentication {\n    auth_type PASS\n    auth_pass kubevipd\n  }\n"
            f"  virtual_ipaddress {{\n    {self.lab.vip}/32\n  }}\n}}\n"
        )
        # Fresh pid files each start: keepalived refuses to start over a stale one.
        self.starts += 1
        run = self.lab.workdir / f"{node.name}.ka.{self.starts}"
        run.mkdir()
        log = (self.lab.workdir / f"{node.name}.keepalived.log").open("ab")
        self.procs[node.name] = subprocess.Popen(
            ["ip", "netns", "exec", node.netns, "keepalived", "-n", "-l", "-P", "-f", str(conf),
             "-p", str(run / "keepalived.pid"), "-r", str(run / "vrrp.pid")],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        node.proc = self.procs[node.name]

    def ready(self, node: Node) -> bool:
        return self.running(node)

    def kill(self, node: Node) -> None:
        p = self.procs[node.name]
        os.killpg(p.pid, signal.SIGKILL)  # the parent and its VRRP child
        p.wait(10)

    def version(self) -> str:
        out = subprocess.run(["keepalived", "--version"], capture_output=True, text=True)
        return (out.stderr or out.stdout).splitlines()[0].strip()


class PollingElector(_ChildPerNode):
    """The kube-vip-like baseline: the ``kubernetes`` package's polling leaderelection module on
    a Lease (bench/polling_elector.py), with the lab's lease (3s/2s) and a 1s retry period (the
    module's minimum; kube-vip's own default)."""

    name = "polling-elector"
    settle = 1.0
    scenarios = SCENARIOS
    timings: ClassVar[dict[str, int]] = {
        "lease_duration": 3,
        "renew_deadline": 2,
        "retry_period": 1,
    }

    def _ready_file(self, node: Node) -> Path:
        return self.lab.workdir / f"{node.name}.polling.ready"

    def start(self, node: Node) -> None:
        self.lab.write_config(node)  # also writes the node's kubeconfig
        ready = self._ready_file(node)
        ready.unlink(missing_ok=True)
        log = (self.lab.workdir / f"{node.name}.polling.log").open("ab")
        t = self.timings
        self.procs[node.name] = subprocess.Popen(
            ["ip", "netns", "exec", node.netns, sys.executable,
             str(ROOT / "bench" / "polling_elector.py"),
             "--kubeconfig", str(self.lab.workdir / f"{node.name}.kubeconfig"),
             "--identity", node.name, "--interface", "eth0", "--vip", self.lab.vip,
             "--ready-file", str(ready),
             "--lease-duration", str(t["lease_duration"]),
             "--renew-deadline", str(t["renew_deadline"]),
             "--retry-period", str(t["retry_period"])],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        node.proc = self.procs[node.name]

    def ready(self, node: Node) -> bool:
        return self.running(node) and self._ready_file(node).exists()

    def kill(self, node: Node) -> None:
        p = self.procs[node.name]
        p.kill()
        p.wait(10)

    def version(self) -> str:
        import importlib.metadata

        return f"kubernetes {importlib.metadata.version('kubernetes')} leaderelection"


System = Kubevipd | Keepalived | PollingElector


# ------------------------------------------------------------------ measuring


def stable_holder(lab: Lab, seconds: float, timeout: float = 60) -> str:
    """Wait until one node has held the VIP alone for ``seconds``; returns it."""
    end = time.monotonic() + timeout
    since, last = time.monotonic(), None
    while time.monotonic() < end:
        h = lab.holders()
        cur = h[0] if len(h) == 1 else None
        if cur != last:
            since, last = time.monotonic(), cur
        elif cur is not None and time.monotonic() - since >= seconds:
            return cur
        time.sleep(0.02)
    raise RuntimeError(f"no stable holder within {timeout}s: {lab.holders()}")


def outage(pinger: Pinger, t0: float, t1: float) -> float:
    """The longest gap between answers within [t0 - 0.5s, t1], in ms."""
    return round(pinger.outage_between(t0 - 0.5, t1) * 1000, 1)


def flush_vip(lab: Lab, node: Node) -> None:
    """A node that died comes back without the VIP (its addresses went with the power)."""
    subprocess.run(
        ["ip", "-n", node.netns, "addr", "del", f"{lab.vip}/32", "dev", "eth0"],
        capture_output=True,
    )


def one_round(
    system: System, lab: Lab, sampler: HolderSampler, pinger: Pinger, scenario: str
) -> dict[str, Any]:
    leader = lab.node(stable_holder(lab, system.settle))
    double0 = len(sampler.double)
    t0 = time.monotonic()
    target: Node = leader
    if scenario == "graceful_stop":
        system.stop(leader, wait=False)  # measured from the signal, not from the exit
    elif scenario == "crash":
        system.kill(leader)
        lab.cut_link(leader)
    elif scenario == "link_down":
        lab.cut_link(leader)
    elif scenario == "follower_restart":
        target = next(n for n in lab.nodes if n is not leader)
        system.stop(target)
        system.start(target)
    elif scenario == "apiserver_partition":
        lab.api.faults.cut(leader.ip)
    new: str | None = None
    took = None
    if scenario == "follower_restart":
        lab.wait_for(lambda: system.ready(target), 20)
        time.sleep(2.0)
        new = lab.holders()[0] if len(lab.holders()) == 1 else None
    else:
        end = time.monotonic() + 20
        while time.monotonic() < end:
            h = lab.holders()
            if len(h) == 1 and h[0] != leader.name:
                new, took = h[0], time.monotonic() - t0
                break
            time.sleep(0.002)
        if new is None:
            raise RuntimeError(f"no takeover from {leader.name} within 20s: {lab.holders()}")
    neighbour_ms = None
    if new is not None and scenario != "follower_restart":
        mac = lab.node(new).mac
        if lab.wait_for(lambda: lab.client_neighbour_mac() == mac, 5, interval=0.002):
            neighbour_ms = round((time.monotonic() - t0) * 1000, 1)
    lab.wait_for(lambda: len(pinger.replies_after(time.monotonic() - 0.3)) > 20, 10)
    result = {
        "outage_ms": outage(pinger, t0, time.monotonic()),
        "takeover_ms": round(took * 1000, 1) if took is not None else None,
        "dual_holder_ms": round((len(sampler.double) - double0) * sampler.interval * 1000, 1),
        "neighbour_ms": neighbour_ms,
        "new_holder": new,
    }
    # Put the lab back for the next round.
    if scenario in ("crash", "link_down"):
        if scenario == "link_down":
            system.kill(leader)
        flush_vip(lab, leader)
        lab.restore_link(leader)
        system.start(leader)
    elif scenario == "graceful_stop":
        assert leader.proc is not None
        leader.proc.wait(10)
        system.start(leader)
    elif scenario == "apiserver_partition":
        lab.api.faults.heal()
    return result


def keep_logs(lab: Lab, name: str) -> None:
    dest = Path(os.environ.get("BENCH_LOGS", "/tmp/kubevipd-bench-logs")) / f"{name}-{lab.uid}"
    shutil.copytree(lab.workdir, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("pki"))
    print(f"logs kept in {dest}", file=sys.stderr)


def restart_all(system: System, lab: Lab) -> None:
    for n in lab.nodes:
        if n.proc is not None and n.proc.poll() is None:
            system.kill(n)
        flush_vip(lab, n)
        if n.link_cut:
            lab.restore_link(n)
    lab.api.faults.heal()
    for n in lab.nodes:
        system.start(n)


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    outs = sorted(r["outage_ms"] for r in rounds)
    p95 = outs[min(len(outs) - 1, round(0.95 * (len(outs) - 1)))]
    return {
        "rounds": len(rounds),
        "outage_ms": {"median": statistics.median(outs), "p95": p95, "max": outs[-1]},
        "dual_holder_ms_total": round(sum(r["dual_holder_ms"] for r in rounds), 1),
        "neighbour_ms_median": statistics.median(
            [r["neighbour_ms"] for r in rounds if r["neighbour_ms"] is not None] or [0]
        ),
        "all": rounds,
    }


def idle_usage(pid: int, seconds: float = 5.0) -> dict[str, float]:
    def cpu() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    c0, t0 = cpu(), time.monotonic()
    time.sleep(seconds)
    c1, t1 = cpu(), time.monotonic()
    rss_kb = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    return {
        "cpu_percent": round((c1 - c0) / (t1 - t0) * 100, 2),
        "rss_mib": round(rss_kb / 1024, 1),
    }


def idle_with_defaults(seconds: float = 10.0) -> dict[str, Any]:
    """RSS and CPU of an idle leader and follower with the shipped timings (5s/3s/1s, health
    checks every second), as an operator runs kubevipd."""
    lab = Lab.create(2)
    try:
        for n in lab.nodes:
            lab.start(
                n,
                election={"lease_duration": "5s", "renew_deadline": "3s", "retry_period": "1s"},
                health={"period": "1s", "timeout": "1s", "failure_threshold": 3},
            )
        leader = lab.node(stable_holder(lab, 3.0))
        follower = next(n for n in lab.nodes if n is not leader)
        assert leader.proc is not None and follower.proc is not None
        return {
            "leader": idle_usage(leader.proc.pid, seconds),
            "follower": idle_usage(follower.proc.pid, seconds),
        }
    finally:
        lab.destroy()


def single_node_start(factory: Callable[[Lab], System], rounds: int) -> dict[str, Any]:
    """Start to READY=1 (kubevipd's sd_notify, on a real NOTIFY_SOCKET) and to VIP held, for a
    daemon started alone on one node; the median of ``rounds`` starts (stopped in between)."""
    lab = Lab.create(1)
    system = factory(lab)
    node = lab.nodes[0]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = lab.workdir / "notify.sock"
    sock.bind(str(path))
    if isinstance(system, Kubevipd):
        system.env = {"NOTIFY_SOCKET": str(path)}
    ready_ms: list[float] = []
    vip_ms: list[float] = []
    try:
        for _ in range(rounds):
            t0 = time.monotonic()
            system.start(node)
            if isinstance(system, Kubevipd):
                sock.settimeout(30)
                while b"READY=1" not in sock.recv(4096):
                    pass
                ready_ms.append(round((time.monotonic() - t0) * 1000))
            if not lab.wait_for(lambda: lab.holders() == [node.name], 30, interval=0.002):
                raise RuntimeError(f"{system.name} took no VIP within 30s alone")
            vip_ms.append(round((time.monotonic() - t0) * 1000))
            system.stop(node)
            flush_vip(lab, node)
    finally:
        sock.close()
        lab.destroy()
    out: dict[str, Any] = {"rounds": rounds, "to_vip_ms": statistics.median(vip_ms)}
    if ready_ms:
        out["to_ready_ms"] = statistics.median(ready_ms)
    return out


def run_system(
    factory: Callable[[Lab], System], rounds: int, only: set[str] | None
) -> dict[str, Any]:
    lab = Lab.create(3)
    system = factory(lab)
    out: dict[str, Any] = {"version": system.version(), "scenarios": {}}
    try:
        with HolderSampler(lab, interval=PROBE) as sampler, Pinger(lab, interval=PROBE) as pinger:
            t0 = time.monotonic()
            for n in lab.nodes:
                system.start(n)
            lab.wait_for(lambda: len(lab.holders()) == 1, 30, interval=0.002)
            out["start_to_vip_ms"] = round((time.monotonic() - t0) * 1000)
            lab.wait_for(lambda: all(system.ready(n) for n in lab.nodes), 30)
            leader = lab.node(stable_holder(lab, system.settle))
            if isinstance(system, Kubevipd | PollingElector):
                follower = next(n for n in lab.nodes if n is not leader)
                requests0 = len(lab.api.requests)
                time.sleep(5)
                window = list(lab.api.requests)[requests0:]
                per_user: dict[str, int] = {}
                for user, _, _, _ in window:
                    per_user[user] = per_user.get(user, 0) + 1
                out["api_requests_per_s"] = {
                    "leader": round(per_user.get(f"system:node:{leader.name}", 0) / 5, 2),
                    "follower": round(per_user.get(f"system:node:{follower.name}", 0) / 5, 2),
                }
            if leader.proc is not None:
                out["idle_leader"] = idle_usage(leader.proc.pid)
            for scenario in system.scenarios:
                if only and scenario not in only:
                    continue
                results = []
                for i in range(rounds):
                    try:
                        r = one_round(system, lab, sampler, pinger, scenario)
                    except RuntimeError as e:  # recorded, and the lab is restarted
                        out.setdefault("errors", []).append(f"{scenario} round {i + 1}: {e}")
                        print(f"{system.name} {scenario} {i + 1}/{rounds}: {e}", file=sys.stderr)
                        keep_logs(lab, system.name)
                        restart_all(system, lab)
                        continue
                    results.append(r)
                    print(f"{system.name} {scenario} {i + 1}/{rounds}: {r}", file=sys.stderr)
                if results:
                    out["scenarios"][scenario] = summary(results)
    finally:
        lab.destroy()
    return out


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = list(doc["systems"])
    scenarios = [s for s in SCENARIOS if any(s in doc["systems"][x]["scenarios"] for x in systems)]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / len(systems)
    for i, name in enumerate(systems):
        sc = doc["systems"][name]["scenarios"]
        ran = [j for j, s in enumerate(scenarios) if s in sc]  # keepalived has no apiserver
        med = [sc[scenarios[j]]["outage_ms"]["median"] for j in ran]
        p95 = [sc[scenarios[j]]["outage_ms"]["p95"] for j in ran]
        xs = [j + i * width for j in ran]
        ax.bar(xs, med, width, label=f"{name} (median)")
        ax.scatter(xs, p95, marker="_", s=200, color="black")
    ax.set_xticks([j + width * (len(systems) - 1) / 2 for j in range(len(scenarios))])
    ax.set_xticklabels([s.replace("_", " ") for s in scenarios])
    ax.set_ylabel("client-visible outage (ms); black tick: p95")
    ax.set_title(f"VIP failover, {doc['rounds']} rounds each, {doc['date']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--systems", default="kubevipd,keepalived,polling-elector")
    ap.add_argument("--scenarios", default="", help="comma-separated subset")
    ap.add_argument("--plot", metavar="PNG", help="also draw the outages")
    ap.add_argument("--no-idle", action="store_true", help="skip the idle measurement (10s)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/failover.py needs root (network namespaces)", file=sys.stderr)
        return 2
    only = set(args.scenarios.split(",")) - {""} or None
    if "keepalived" in args.systems.split(",") and shutil.which("keepalived") is None:
        print("keepalived is not installed: apt-get install keepalived", file=sys.stderr)
        return 2
    factories: dict[str, Callable[[Lab], System]] = {
        "kubevipd": Kubevipd,
        "keepalived": Keepalived,
        "polling-elector": PollingElector,
    }
    doc: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "rounds": args.rounds,
        "probe_interval_ms": PROBE * 1000,
        "machine": {
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "timings": {
            "kubevipd": KUBEVIPD_TIMINGS,
            "keepalived": {"advert_int": "1s"},
            "polling-elector": {k: f"{v}s" for k, v in PollingElector.timings.items()},
        },
        "systems": {},
    }
    for name in args.systems.split(","):
        doc["systems"][name] = run_system(factories[name], args.rounds, only)
        doc["systems"][name]["single_node_start"] = single_node_start(
            factories[name], max(1, min(5, args.rounds))
        )
        if name == "kubevipd" and not args.no_idle:
            doc["systems"][name]["idle_shipped_defaults"] = idle_with_defaults()
    print(json.dumps(doc, indent=2))
    if args.plot:
        plot(doc, Path(args.plot))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
