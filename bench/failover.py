#!/usr/bin/env python3
r"""Failover of the control-plane VIP: kubevipd, keepalived and a polling elector, in one run.

Each system gets a fresh lab shaped like a kubeadm control plane (kubevipd.lab.topology): three
node namespaces, each running its own apiserver on 6443 in front of one shared store (etcd),
every node's kubeconfig naming the VIP, and a client. From the client, an ICMP echo goes to the
VIP every 5 ms and ``GET https://VIP:6443/readyz`` (a new TLS connection each time, what kubectl
reaches) every 10 ms; every node is sampled every 5 ms. For each scenario and round it records
two outages, the longest gap between ping answers and the longest gap between 200s from the API
through the VIP, from the event until both flow again; the time during which two nodes held the
VIP; and how long the client's neighbour entry took to point at the new holder. Prints one JSON
document.

    sudo .venv/bin/python bench/failover.py --rounds 10 --plot bench/failover.png \
        > bench/results.json
"""

from __future__ import annotations

import argparse
import bisect
import importlib.metadata
import itertools
import json
import os
import platform
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kubevipd import __version__  # noqa: E402
from kubevipd.announce.exabgp import exabgp_command  # noqa: E402
from kubevipd.lab.probes import ApiProber, HolderSampler, Pinger  # noqa: E402
from kubevipd.lab.topology import API_PORT, Lab, Node  # noqa: E402

PROBE = 0.005  # ICMP echo and holder samples
API_PROBE = 0.01  # GET https://VIP:6443/readyz
SCENARIOS = (
    "graceful_stop",
    "crash",
    "link_down",
    "follower_restart",
    "apiserver_partition",
    "apiserver_dies",
)
# The leader's apiserver fails and the node lives on: cut from etcd (up, its calls hang, /readyz
# fails), or stopped (a crash, or kubeadm upgrade restarting the static pod).
APISERVER_FAULTS = ("apiserver_partition", "apiserver_dies")
KUBEVIPD_TIMINGS = {"lease_duration": "3s", "renew_deadline": "2s", "retry_period": "500ms"}
LOCAL_API = f"https://127.0.0.1:{API_PORT}"  # kube-vip: https://kubernetes:6443, aliased
KUBEADM_TLS_NAME = "kubernetes"  # the certificate names it; it does not name 127.0.0.1
TAKEOVER_TIMEOUT = 20.0


# ------------------------------------------------------------------ the systems


class BenchSystem:
    """What the bench needs of a system under test; one instance per lab."""

    name: ClassVar[str] = ""
    settle: ClassVar[float] = 1.0  # seconds of one stable holder before a round starts
    scenarios: ClassVar[tuple[str, ...]] = SCENARIOS
    # Scenarios that take long by the system's own settings: they run --slow-rounds rounds.
    slow: ClassVar[frozenset[str]] = frozenset()
    # A log line that says the system noticed the fault (timed by LogWatch), if it logs one.
    detect_marker: ClassVar[str | None] = None
    # Its longest periodic timer (retry period, VRRP advert): each fault comes at a random
    # phase within it, or rounds that follow whole-second waits would all hit the same phase.
    period: ClassVar[float] = 1.0

    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    def start(self, node: Node) -> None:
        raise NotImplementedError

    def ready(self, node: Node) -> bool:
        raise NotImplementedError

    def stop(self, node: Node, wait: bool = True) -> None:
        raise NotImplementedError

    def kill(self, node: Node) -> None:
        raise NotImplementedError

    def version(self) -> str:
        raise NotImplementedError

    def log_path(self, node: Node) -> Path | None:
        return None

    def takeover_timeout(self, scenario: str) -> float:
        return TAKEOVER_TIMEOUT

    def phase(self, scenario: str) -> float:
        return self.period

    def home(self) -> Node | None:
        """The node the VIP returns to by itself once it is healthy again (preemption)."""
        return None


class Kubevipd(BenchSystem):
    name = "kubevipd"
    detect_marker = "the local apiserver is unhealthy"

    def __init__(self, lab: Lab) -> None:
        super().__init__(lab)
        self.env: dict[str, str] = {}

    def start(self, node: Node) -> None:
        # The lab's config (lab.write_config): the README's smallest one, no election.server and
        # no health URL: the daemon finds its own apiserver at 127.0.0.1:6443.
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

    def log_path(self, node: Node) -> Path | None:
        return node.log


class _ChildPerNode(BenchSystem):
    """A system that the bench runs as one child process a node (with lab.node_exec)."""

    def __init__(self, lab: Lab) -> None:
        super().__init__(lab)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def running(self, node: Node) -> bool:
        p = self.procs.get(node.name)
        return p is not None and p.poll() is None

    def stop(self, node: Node, wait: bool = True) -> None:
        p = self.procs[node.name]
        p.send_signal(signal.SIGTERM)
        if wait:
            p.wait(10)

    def log_path(self, node: Node) -> Path | None:
        return self.lab.workdir / f"{node.name}.{self.name}.log"


# kubeadm's docs/ha-considerations.md, "keepalived configuration": the guide's
# /etc/keepalived/keepalived.conf and check_apiserver.sh, with its variables filled in (the
# guide's script GETs https://localhost:${APISERVER_DEST_PORT}/; here the node's /readyz).
KEEPALIVED_CHECK = {"interval": 3, "weight": -2, "fall": 10, "rise": 2}
KEEPALIVED_PRIORITIES = (101, 100)  # the MASTER, every BACKUP
CHECK_APISERVER_SH = f"""#!/bin/sh

errorExit() {{
    echo "*** $*" 1>&2
    exit 1
}}

curl -sfk --max-time 2 {LOCAL_API}/readyz -o /dev/null || errorExit "Error GET {LOCAL_API}/readyz"
"""


class Keepalived(_ChildPerNode):
    """keepalived as kubeadm's HA guide sets it up: VRRP (advert_int 1 s, the default), state
    MASTER priority 101 on the first node and BACKUP 100 on the others, preemption (the
    default), and ``vrrp_script check_apiserver`` (curl of the node's apiserver every 3 s,
    weight -2 after 10 failures, back after 2 successes) in ``track_script``."""

    name = "keepalived"
    settle = 3.0  # after_restore already waited for the MASTER to take the VIP back
    # A failing apiserver lowers the MASTER to 99 only after fall x interval = 30 s.
    slow = frozenset(APISERVER_FAULTS)
    detect_marker = "Changing effective priority from"

    def __init__(self, lab: Lab) -> None:
        super().__init__(lab)
        self.starts = 0
        self.check = lab.workdir / "check_apiserver.sh"
        self.check.write_text(CHECK_APISERVER_SH)
        self.check.chmod(0o755)

    def config(self, node: Node) -> str:
        master = self.lab.nodes.index(node) == 0
        c = KEEPALIVED_CHECK
        return (
            "! Configuration File for keepalived\n"
            "global_defs {\n    router_id LVS_DEVEL\n}\n"
            "vrrp_script check_apiserver {\n"
            f'  script "{self.check}"\n'
            f"  interval {c['interval']}\n  weight {c['weight']}\n"
            f"  fall {c['fall']}\n  rise {c['rise']}\n}}\n\n"
            "vrrp_instance VI_1 {\n"
            f"    state {'MASTER' if master else 'BACKUP'}\n"
            "    interface eth0\n    virtual_router_id 51\n"
            f"    priority {KEEPALIVED_PRIORITIES[0 if master else 1]}\n"
            "    authentication {\n        auth_type PASS\n        auth_pass 42\n    }\n"
            f"    virtual_ipaddress {{\n        {self.lab.vip}\n    }}\n"
            "    track_script {\n        check_apiserver\n    }\n}\n"
        )

    def start(self, node: Node) -> None:
        conf = self.lab.workdir / f"{node.name}.keepalived.conf"
        conf.write_text(self.config(node))
        # Fresh pid files each start: keepalived refuses to start over a stale one.
        self.starts += 1
        run = self.lab.workdir / f"{node.name}.ka.{self.starts}"
        run.mkdir()
        log_path = self.log_path(node)
        assert log_path is not None
        log = log_path.open("ab")
        self.procs[node.name] = subprocess.Popen(
            [*self.lab.node_exec(node), "keepalived", "-n", "-l", "-P", "-f", str(conf),
             "-p", str(run / "keepalived.pid"), "-r", str(run / "vrrp.pid")],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        log.close()
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

    def takeover_timeout(self, scenario: str) -> float:
        # 10 failed checks 3 s apart (27-30 s), then the master-down interval (3.6 s).
        return 45.0 if scenario in self.slow else TAKEOVER_TIMEOUT

    def phase(self, scenario: str) -> float:
        return float(KEEPALIVED_CHECK["interval"]) if scenario in self.slow else self.period

    def home(self) -> Node:
        return self.lab.nodes[0]  # the MASTER, 101: it preempts when it is back and healthy


class PollingElector(_ChildPerNode):
    """The kube-vip-like baseline: the ``kubernetes`` package's polling leaderelection module on
    a Lease (bench/polling_elector.py), with the lab's lease (3s/2s) and a 1s retry period (the
    module's minimum; kube-vip's own default). It talks to its node's own apiserver as kube-vip
    does (https://127.0.0.1:6443, verified as ``kubernetes``), with the credentials of the
    node's kubeconfig (which names the VIP)."""

    name = "polling-elector"
    timings: ClassVar[dict[str, int]] = {
        "lease_duration": 3,
        "renew_deadline": 2,
        "retry_period": 1,
    }
    detect_marker = "dropped the VIP"

    def _ready_file(self, node: Node) -> Path:
        return self.lab.workdir / f"{node.name}.polling.ready"

    def start(self, node: Node) -> None:
        kubeconfig = self.lab.kubeconfig(
            node.name, f"lab-{node.name}-token", f"system:node:{node.name}"
        )
        ready = self._ready_file(node)
        ready.unlink(missing_ok=True)
        log_path = self.log_path(node)
        assert log_path is not None
        log = log_path.open("ab")
        t = self.timings
        self.procs[node.name] = subprocess.Popen(
            [*self.lab.node_exec(node), sys.executable,
             str(ROOT / "bench" / "polling_elector.py"),
             "--kubeconfig", str(kubeconfig),
             "--server", LOCAL_API, "--tls-server-name", KUBEADM_TLS_NAME,
             "--identity", node.name, "--interface", "eth0", "--vip", self.lab.vip,
             "--ready-file", str(ready),
             "--lease-duration", str(t["lease_duration"]),
             "--renew-deadline", str(t["renew_deadline"]),
             "--retry-period", str(t["retry_period"])],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        node.proc = self.procs[node.name]

    def ready(self, node: Node) -> bool:
        return self.running(node) and self._ready_file(node).exists()

    def kill(self, node: Node) -> None:
        p = self.procs[node.name]
        p.kill()
        p.wait(10)

    def version(self) -> str:
        return f"kubernetes {importlib.metadata.version('kubernetes')} leaderelection"


FACTORIES: dict[str, Callable[[Lab], BenchSystem]] = {
    "kubevipd": Kubevipd,
    "keepalived": Keepalived,
    "polling-elector": PollingElector,
}


# ------------------------------------------------------------------ measuring


class Probes:
    """The three probes of one lab, for the whole of a system's run."""

    def __init__(self, lab: Lab) -> None:
        self.sampler = HolderSampler(lab, interval=PROBE)
        self.pinger = Pinger(lab, interval=PROBE)
        self.api = ApiProber(lab, interval=API_PROBE)

    def __enter__(self) -> Probes:
        self.sampler.__enter__()
        self.pinger.__enter__()
        self.api.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.api.__exit__()
        self.pinger.__exit__()
        self.sampler.__exit__()

    @property
    def ping(self) -> list[float]:
        return self.pinger.replies

    @property
    def api_ok(self) -> list[float]:
        return self.api.ok

    def flowing(self, since: float, timeout: float = 10) -> bool:
        """Pings and API answers both flow again after ``since`` (the takeover): 20 pings
        (100 ms) and 5 API answers, so that the longest gap up to now is the whole outage."""

        def now_ok() -> bool:
            return answers_since(self.ping, since) > 20 and answers_since(self.api_ok, since) > 5

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if now_ok():
                return True
            time.sleep(0.02)
        return now_ok()

    def outages(self, t0: float, t1: float, before: float = 0.5) -> dict[str, float]:
        """The longest gaps within [t0 - before, t1], in ms: pings, and the API through the VIP.

        ``before`` reaches back to the last answer before the event."""
        return {
            "outage_ms": gap_ms(self.ping, t0 - before, t1, "ping"),
            "api_outage_ms": gap_ms(self.api_ok, t0 - before, t1, "API"),
        }

    def double_ms(self, since: int) -> float:
        return round((len(self.sampler.double) - since) * self.sampler.interval * 1000, 1)


def answers_since(times: list[float], t: float) -> int:
    """How many answers came after ``t`` (the lists are appended in time order)."""
    return len(times) - bisect.bisect_right(times, t)


def gap_ms(times: list[float], t0: float, t1: float, what: str) -> float:
    window = times[bisect.bisect_left(times, t0) : bisect.bisect_right(times, t1)]
    if len(window) < 2:
        raise RuntimeError(f"fewer than two {what} answers within {t1 - t0:.1f}s")
    return round(max(b - a for a, b in itertools.pairwise(window)) * 1000, 1)


class LogWatch:
    """Times the first appearance of ``marker`` in a log written after it starts."""

    def __init__(self, path: Path | None, marker: str | None) -> None:
        self.path, self.marker = path, marker
        self.seen_at: float | None = None
        self._offset = path.stat().st_size if path is not None and path.exists() else 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-watch", daemon=True)

    def __enter__(self) -> LogWatch:
        if self.path is not None and self.marker is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)

    def _run(self) -> None:
        assert self.path is not None and self.marker is not None
        while not self._stop.wait(0.01):
            try:
                with self.path.open("rb") as f:
                    f.seek(self._offset)
                    text = f.read().decode(errors="replace")
            except OSError:
                continue
            if self.marker in text:
                self.seen_at = time.monotonic()
                return


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


def flush_vip(lab: Lab, node: Node, dev: str = "eth0") -> None:
    """A node that died comes back without the VIP (its addresses went with the power)."""
    subprocess.run(
        ["ip", "-n", node.netns, "addr", "del", f"{lab.vip}/32", "dev", dev],
        capture_output=True,
    )


def heal_apiservers(lab: Lab) -> None:
    """Every node's apiserver up, joined to the store, without injected faults."""
    for n in lab.nodes:
        lab.cut_from_store(n, False)
        f = n.api.faults
        f.latency, f.error_code, f.unready = 0.0, None, False
        if not n.api.running:
            n.api.restart()


def ms(t: float | None, t0: float) -> float | None:
    return round((t - t0) * 1000, 1) if t is not None else None


def one_round(system: BenchSystem, lab: Lab, probes: Probes, scenario: str) -> dict[str, Any]:
    leader = lab.node(stable_holder(lab, system.settle))
    time.sleep(random.uniform(0, system.phase(scenario)))
    double0 = len(probes.sampler.double)
    target: Node = leader
    with LogWatch(system.log_path(leader), system.detect_marker) as logwatch:
        t0 = time.monotonic()
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
            lab.cut_from_store(leader)
        elif scenario == "apiserver_dies":
            leader.api.stop()
        new: str | None = None
        took = dropped = None
        if scenario == "follower_restart":
            lab.wait_for(lambda: system.ready(target), 20)
            time.sleep(2.0)
            new = lab.holders()[0] if len(lab.holders()) == 1 else None
        else:
            end = time.monotonic() + system.takeover_timeout(scenario)
            while time.monotonic() < end:
                h = lab.holders()
                if dropped is None and leader.name not in h:
                    dropped = time.monotonic()
                if len(h) == 1 and h[0] != leader.name:
                    new, took = h[0], time.monotonic()
                    break
                time.sleep(0.002)
            if new is None:
                raise RuntimeError(
                    f"no takeover from {leader.name} within "
                    f"{system.takeover_timeout(scenario):.0f}s: {lab.holders()}"
                )
        neighbour = None
        if new is not None and scenario != "follower_restart":
            mac = lab.node(new).mac
            if lab.wait_for(lambda: lab.client_neighbour_mac() == mac, 5, interval=0.002):
                neighbour = time.monotonic()
        if not probes.flowing(since=took or t0):
            raise RuntimeError(f"pings or the API do not answer through the VIP after {scenario}")
    result: dict[str, Any] = {
        **probes.outages(t0, time.monotonic()),
        "takeover_ms": ms(took, t0),
        # When the old leader had removed the VIP (a pulled cable hides it at once: not there).
        "dropped_ms": ms(dropped, t0) if scenario not in ("crash", "link_down") else None,
        "detected_ms": ms(logwatch.seen_at, t0) if scenario in APISERVER_FAULTS else None,
        "dual_holder_ms": probes.double_ms(double0),
        "neighbour_ms": ms(neighbour, t0),
        "new_holder": new,
    }
    # Put the lab back for the next round.
    t_back = time.monotonic()
    double_back = len(probes.sampler.double)
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
        lab.cut_from_store(leader, False)
    elif scenario == "apiserver_dies":
        leader.api.restart()
    home = system.home()
    if home is leader and scenario != "follower_restart":
        # keepalived: the MASTER takes the VIP back once it runs and its check passes again.
        if not lab.wait_for(lambda: lab.holders() == [home.name], 30, interval=0.002):
            raise RuntimeError(f"the VIP did not come back to {home.name}: {lab.holders()}")
        back = time.monotonic()
        if not probes.flowing(since=back):
            raise RuntimeError("pings or the API do not answer through the VIP after failback")
        result["failback"] = {
            "after_ms": ms(back, t_back),
            **probes.outages(t_back, time.monotonic(), before=0.0),
            "dual_holder_ms": probes.double_ms(double_back),
        }
    return result


def keep_logs(lab: Lab, name: str) -> None:
    dest = Path(os.environ.get("BENCH_LOGS", "/tmp/kubevipd-bench-logs")) / f"{name}-{lab.uid}"
    shutil.copytree(lab.workdir, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("pki"))
    print(f"logs kept in {dest}", file=sys.stderr)


def restart_all(system: BenchSystem, lab: Lab) -> None:
    for n in lab.nodes:
        if n.proc is not None and n.proc.poll() is None:
            system.kill(n)
        flush_vip(lab, n)
        if n.link_cut:
            lab.restore_link(n)
    heal_apiservers(lab)
    for n in lab.nodes:
        system.start(n)


def stats(values: list[float]) -> dict[str, float]:
    v = sorted(values)
    p95 = v[min(len(v) - 1, round(0.95 * (len(v) - 1)))]
    return {"median": round(statistics.median(v), 1), "p95": p95, "max": v[-1]}


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "rounds": len(rounds),
        "outage_ms": stats([r["outage_ms"] for r in rounds]),
        "api_outage_ms": stats([r["api_outage_ms"] for r in rounds]),
        "dual_holder_ms_total": round(sum(r["dual_holder_ms"] for r in rounds), 1),
        "neighbour_ms_median": statistics.median(
            [r["neighbour_ms"] for r in rounds if r.get("neighbour_ms") is not None] or [0]
        ),
    }
    for key in ("takeover_ms", "dropped_ms", "detected_ms", "withdrawn_ms", "installed_ms"):
        values = [r[key] for r in rounds if r.get(key) is not None]
        if values:
            out[f"{key}_median"] = round(statistics.median(values), 1)
    backs = [r["failback"] for r in rounds if "failback" in r]
    if backs:
        out["failback"] = {
            "after_ms_median": round(statistics.median(b["after_ms"] for b in backs), 1),
            "outage_ms": stats([b["outage_ms"] for b in backs]),
            "api_outage_ms": stats([b["api_outage_ms"] for b in backs]),
            "dual_holder_ms_total": round(sum(b["dual_holder_ms"] for b in backs), 1),
        }
    out["all"] = rounds
    return out


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


def requests_per_user(lab: Lab, seconds: float) -> dict[str, float]:
    """Authenticated API requests a second, per user, over ``seconds``, at every apiserver.

    Anonymous ones (health checks, the client's /readyz probe) are left out."""
    counts0 = [n.api.request_count for n in lab.nodes]
    time.sleep(seconds)
    per_user: dict[str, int] = {}
    for n, c0 in zip(lab.nodes, counts0, strict=True):
        new = n.api.request_count - c0
        window = list(n.api.requests)[-new:] if new > 0 else []
        for user, _, _, _ in window:
            if user != "-":
                per_user[user] = per_user.get(user, 0) + 1
    return {u: round(c / seconds, 2) for u, c in per_user.items()}


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


def single_node_start(factory: Callable[[Lab], BenchSystem], rounds: int) -> dict[str, Any]:
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
    factory: Callable[[Lab], BenchSystem], rounds: int, slow_rounds: int, only: set[str] | None
) -> dict[str, Any]:
    lab = Lab.create(3)
    system = factory(lab)
    out: dict[str, Any] = {"version": system.version(), "scenarios": {}}
    try:
        with Probes(lab) as probes:
            t0 = time.monotonic()
            for n in lab.nodes:
                system.start(n)
            lab.wait_for(lambda: len(lab.holders()) == 1, 30, interval=0.002)
            out["start_to_vip_ms"] = round((time.monotonic() - t0) * 1000)
            lab.wait_for(lambda: all(system.ready(n) for n in lab.nodes), 30)
            leader = lab.node(stable_holder(lab, system.settle))
            if isinstance(system, Kubevipd | PollingElector):
                follower = next(n for n in lab.nodes if n is not leader)
                per_user = requests_per_user(lab, 5.0)
                out["api_requests_per_s"] = {
                    "leader": per_user.get(f"system:node:{leader.name}", 0),
                    "follower": per_user.get(f"system:node:{follower.name}", 0),
                }
            if leader.proc is not None:
                out["idle_leader"] = idle_usage(leader.proc.pid)
            for scenario in system.scenarios:
                if only and scenario not in only:
                    continue
                n_rounds = slow_rounds if scenario in system.slow else rounds
                results = []
                for i in range(n_rounds):
                    try:
                        r = one_round(system, lab, probes, scenario)
                    except RuntimeError as e:  # recorded, and the lab is restarted
                        out.setdefault("errors", []).append(f"{scenario} round {i + 1}: {e}")
                        print(f"{system.name} {scenario} {i + 1}/{n_rounds}: {e}", file=sys.stderr)
                        keep_logs(lab, system.name)
                        restart_all(system, lab)
                        continue
                    results.append(r)
                    print(f"{system.name} {scenario} {i + 1}/{n_rounds}: {r}", file=sys.stderr)
                if results:
                    out["scenarios"][scenario] = summary(results)
            out["dual_holder_ms_whole_run"] = probes.double_ms(0)
            out["api_probes"] = {"sent": probes.api.sent, "ok": len(probes.api.ok)}
    finally:
        lab.destroy()
    return out


class CpuShare:
    """How busy the machine was with anything else during the run, in cores: what /proc/stat
    counts as busy, less this process's and its reaped children's CPU time. The bench itself
    uses most of one core; another job on the machine (a test run) makes the figures noisier."""

    def __init__(self) -> None:
        self.t0, self.busy0, self.own0 = time.monotonic(), self._busy(), self._own()

    @staticmethod
    def _busy() -> float:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own() -> float:
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    def result(self) -> dict[str, float]:
        wall = time.monotonic() - self.t0
        busy, own = self._busy() - self.busy0, self._own() - self.own0
        return {
            "seconds": round(wall),
            "bench_cores": round(own / wall, 2),
            "other_cores": round(max(0.0, busy - own) / wall, 2),
        }


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = list(doc["systems"])
    scenarios = [s for s in SCENARIOS if any(s in doc["systems"][x]["scenarios"] for x in systems)]
    fig, axes = plt.subplots(2, 1, figsize=(11, 8), sharex=True)
    width = 0.8 / len(systems)
    measures = (
        ("outage_ms", "ping through the VIP"),
        ("api_outage_ms", "GET https://VIP:6443/readyz"),
    )
    for ax, (key, what) in zip(axes, measures, strict=True):
        for i, name in enumerate(systems):
            sc = doc["systems"][name]["scenarios"]
            ran = [j for j, s in enumerate(scenarios) if s in sc]
            med = [sc[scenarios[j]][key]["median"] for j in ran]
            p95 = [sc[scenarios[j]][key]["p95"] for j in ran]
            xs = [j + i * width for j in ran]
            ax.bar(xs, med, width, label=f"{name} (median)", color=f"C{i}")
            ax.scatter(xs, p95, marker="_", s=200, color="black")
        ax.set_yscale("log")
        ax.set_ylabel(f"outage (ms), log scale\n{what}")
        ax.grid(axis="y", which="major", alpha=0.3)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(systems), frameon=False)
    axes[1].set_xticks([j + width * (len(systems) - 1) / 2 for j in range(len(scenarios))])
    labels = {
        "follower_restart": "follower\nrestart",
        "apiserver_partition": "leader's apiserver\ncut from etcd",
        "apiserver_dies": "leader's apiserver\ndies",
    }
    axes[1].set_xticklabels([labels.get(s, s.replace("_", " ")) for s in scenarios])
    slow = doc.get("slow_rounds")
    note = f" (keepalived's apiserver faults: {slow})" if slow and slow != doc["rounds"] else ""
    axes[0].set_title(
        f"Control-plane VIP failover seen from a client, {doc['rounds']} rounds each{note}, "
        f"{doc['date']}; black tick: p95"
    )
    fig.tight_layout(rect=(0, 0.04, 1, 1))  # room for the legend below
    fig.savefig(path, dpi=100)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument(
        "--slow-rounds",
        type=int,
        default=None,
        help="rounds of keepalived's apiserver faults, each about 50 s with the kubeadm guide's\n"
        "check (10 failures 3 s apart before it acts); default: min(rounds, 5)",
    )
    ap.add_argument("--systems", default="kubevipd,keepalived,polling-elector")
    ap.add_argument(
        "--scenarios", default="", help=f"comma-separated subset of: {','.join(SCENARIOS)}"
    )
    ap.add_argument("--plot", metavar="PNG", help="also draw the outages")
    ap.add_argument("--no-idle", action="store_true", help="skip the idle measurement (10s)")
    ap.add_argument(
        "--no-bgp", action="store_true", help="skip the BGP rows (bench/bgp_failover.py)"
    )
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/failover.py needs root (network namespaces)", file=sys.stderr)
        return 2
    only = set(args.scenarios.split(",")) - {""} or None
    if only and only - set(SCENARIOS):
        print(f"unknown scenarios: {', '.join(sorted(only - set(SCENARIOS)))}", file=sys.stderr)
        return 2
    names = args.systems.split(",")
    if set(names) - set(FACTORIES):
        print(f"unknown systems: {', '.join(sorted(set(names) - set(FACTORIES)))}", file=sys.stderr)
        return 2
    if "keepalived" in names:
        missing = [tool for tool in ("keepalived", "curl") if shutil.which(tool) is None]
        if missing:
            print(f"not installed: {' '.join(missing)}: apt-get install {' '.join(missing)}",
                  file=sys.stderr)  # fmt: skip
            return 2
    slow_rounds = args.slow_rounds if args.slow_rounds is not None else min(args.rounds, 5)
    doc: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "rounds": args.rounds,
        "slow_rounds": slow_rounds,
        "probe_interval_ms": PROBE * 1000,
        "api_probe_interval_ms": API_PROBE * 1000,
        "machine": {
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "topology": (
            "kubeadm: every node runs its own apiserver on :6443 (one shared store stands for "
            "etcd); every kubeconfig names https://VIP:6443"
        ),
        "timings": {
            "kubevipd": KUBEVIPD_TIMINGS,
            "keepalived": {
                "advert_int": "1s",
                "priorities": "MASTER 101, BACKUP 100",
                "check_apiserver": {
                    **KEEPALIVED_CHECK,
                    "command": f"curl -sfk --max-time 2 {LOCAL_API}/readyz",
                },
            },
            "polling-elector": {k: f"{v}s" for k, v in PollingElector.timings.items()},
        },
        "systems": {},
    }
    cpu = CpuShare()
    for name in names:
        doc["systems"][name] = run_system(FACTORIES[name], args.rounds, slow_rounds, only)
        doc["systems"][name]["single_node_start"] = single_node_start(
            FACTORIES[name], max(1, min(5, args.rounds))
        )
        if name == "kubevipd" and not args.no_idle:
            doc["systems"][name]["idle_shipped_defaults"] = idle_with_defaults()
    routers = all(shutil.which(t) for t in ("bird", "gobgpd")) and exabgp_command() is not None
    if not args.no_bgp and routers and not only:
        import bgp_failover  # bench/: BIRD, GoBGP and kubevipd's ExaBGP, same machine, same run

        doc["bgp"] = bgp_failover.run_rows(args.rounds, max(1, min(3, args.rounds)))
    elif not args.no_bgp and not routers:
        print("BGP rows skipped: apt-get install bird2 gobgpd exabgp", file=sys.stderr)
    doc["machine"]["cpu_use"] = cpu.result()
    print(json.dumps(doc, indent=2))
    if args.plot:
        plot(doc, Path(args.plot))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
