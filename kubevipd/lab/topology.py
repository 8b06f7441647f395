"""A lab of network namespaces: N control-plane "nodes" and a client on one bridge.

Every name carries a unique id, and ``destroy()`` (also run by ``with``) kills what runs inside
and deletes every namespace, so a test or an interrupted demo leaves the host as it was. The
bridge lives in a namespace of its own, which also hosts the lab Lease API server: nothing is
added to the host's own network.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pyroute2 import IPRoute

from kubevipd.lab.apiserver import LabApiServer, node_tokens, standard_tokens
from kubevipd.lab.netns import run_in_netns
from kubevipd.lab.pki import make_pki, write_kubeconfig

API_PORT = 6443


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def netns_exists(name: str) -> bool:
    return Path(f"/run/netns/{name}").exists()


@dataclass
class Node:
    name: str
    netns: str
    ip: str
    bridge_port: str  # the veth end on the bridge: set it down to cut the node's link
    mac: str = ""
    link_cut: bool = False
    proc: subprocess.Popen[bytes] | None = None
    config: Path | None = None
    run_dir: Path | None = None
    log: Path | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Lab:
    """Build with ``Lab.create(n)``; use as a context manager so it is always destroyed."""

    uid: str
    subnet: str  # "10.A.B"
    prefix6: str  # "fd00:A:B::" (a /64 on the same bridge, for dual-stack tests)
    workdir: Path
    bridge_ns: str
    client_ns: str
    nodes: list[Node]
    api: LabApiServer
    vip: str
    client_ip: str
    client_mac: str = ""
    # How to run a daemon: this checkout's by default; the installed package's in its test.
    command: list[str] = field(default_factory=lambda: [sys.executable, "-m", "kubevipd"])
    _ipr: dict[str, IPRoute] = field(default_factory=dict)
    # destroy() removes the work directory when the lab made it (KUBEVIPD_KEEP_LAB=1 keeps it).
    _own_workdir: bool = False
    _log_files: list[Any] = field(default_factory=list)

    @classmethod
    def create(cls, n: int = 3, workdir: Path | None = None) -> Lab:
        uid = secrets.token_hex(3)
        rnd = secrets.randbelow(250 * 250)
        subnet = f"10.{rnd // 250 + 1}.{rnd % 250 + 1}"
        prefix6 = f"fd00:{rnd // 250 + 1:x}:{rnd % 250 + 1:x}::"
        wd = workdir or Path(tempfile.mkdtemp(prefix=f"kubevipd-lab-{uid}-"))
        names = [f"n{i + 1}" for i in range(n)]
        pki = make_pki(wd / "pki", [f"{subnet}.1"])
        tokens = standard_tokens() | node_tokens(names)
        lab = cls(
            uid=uid,
            subnet=subnet,
            prefix6=prefix6,
            workdir=wd,
            bridge_ns=f"kvl-{uid}-br",
            client_ns=f"kvl-{uid}-c",
            nodes=[
                Node(name, f"kvl-{uid}-{name}", f"{subnet}.{11 + i}", f"kv{uid}{name}")
                for i, name in enumerate(names)
            ],
            api=LabApiServer(pki, tokens, bookmark_interval=1.0),
            vip=f"{subnet}.75",
            client_ip=f"{subnet}.100",
            _own_workdir=workdir is None,
        )
        try:
            lab._build()
            lab.api.start(f"{subnet}.1", API_PORT, netns=lab.bridge_ns)
        except BaseException:
            lab.destroy()
            raise
        return lab

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    # building ---------------------------------------------------------------

    def _build(self) -> None:
        br = self.bridge_ns
        _ip("netns", "add", br)
        _ip("-n", br, "link", "set", "lo", "up")
        _ip("-n", br, "link", "add", "name", "br0", "type", "bridge")
        _ip("-n", br, "addr", "add", f"{self.subnet}.1/24", "dev", "br0")
        _ip("-n", br, "link", "set", "br0", "up")
        ports = [(n.netns, n.bridge_port, n.ip, f"{11 + i}") for i, n in enumerate(self.nodes)]
        ports.append((self.client_ns, f"kv{self.uid}c", self.client_ip, "100"))
        for ns, port, ip, host6 in ports:
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", br, "link", "add", "name", port, "type", "veth", "peer", "name", "eth0",
                "netns", ns)  # fmt: skip
            _ip("-n", br, "link", "set", port, "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
            _ip("-n", ns, "addr", "add", f"{self.prefix6}{host6}/64", "dev", "eth0", "nodad")
            _ip("-n", ns, "link", "set", "eth0", "up")
        for node in self.nodes:
            node.mac = self.mac_of(node.netns)
        self.client_mac = self.mac_of(self.client_ns)

    def ipr(self, netns: str) -> IPRoute:
        """A netlink socket inside ``netns`` (usable from any thread)."""
        if netns not in self._ipr:
            self._ipr[netns] = run_in_netns(netns, IPRoute)
        return self._ipr[netns]

    def mac_of(self, netns: str, ifname: str = "eth0") -> str:
        ipr = self.ipr(netns)
        idx = ipr.link_lookup(ifname=ifname)[0]
        return str(ipr.get_links(idx)[0].get_attr("IFLA_ADDRESS"))

    # daemons ----------------------------------------------------------------

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def write_config(self, node: Node, **overrides: Any) -> Path:
        kubeconfig = write_kubeconfig(
            self.workdir / f"{node.name}.kubeconfig",
            self.api.url,
            self.api.pki,
            f"lab-{node.name}-token",
            user=f"system:node:{node.name}",
        )
        doc: dict[str, Any] = {
            "node_name": node.name,
            "interface": "eth0",
            "vip": {"address": self.vip},
            "election": {
                "kubeconfig": str(kubeconfig),
                "lease_duration": "3s",
                "renew_deadline": "2s",
                "retry_period": "500ms",
            },
            "announce": {"mode": "arp", "arp": {"refresh": "3s"}},
            "health": {
                "url": f"{self.api.url}/readyz",
                "period": "200ms",
                "timeout": "200ms",
                "failure_threshold": 2,
                "link_down_grace": "500ms",
            },
            "log": {"level": "info"},
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(doc.get(key), dict):
                doc[key] = {**doc[key], **value}
            else:
                doc[key] = value
        path = self.workdir / f"{node.name}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        node.config = path
        return path

    def start(self, node: Node, env: dict[str, str] | None = None, **overrides: Any) -> None:
        if node.config is None or overrides:
            self.write_config(node, **overrides)
        node.run_dir = self.workdir / f"{node.name}.run"
        node.log = self.workdir / f"{node.name}.log"
        log = node.log.open("ab")
        self._log_files.append(log)
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        full_env.pop("NOTIFY_SOCKET", None)
        full_env.update(env or {})
        node.proc = subprocess.Popen(
            ["ip", "netns", "exec", node.netns, *self.command, "run",
             "--config", str(node.config), "--run-dir", str(node.run_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
        )  # fmt: skip

    def ready(self, node: Node) -> bool:
        """The daemon's main loop runs: it has written its status file."""
        return node.run_dir is not None and (node.run_dir / "status.json").exists()

    def signal(self, node: Node, sig: signal.Signals) -> None:
        if node.running:
            assert node.proc is not None
            node.proc.send_signal(sig)

    def wait_exit(self, node: Node, timeout: float = 10) -> int | None:
        if node.proc is None:
            return None
        try:
            return node.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def cut_link(self, node: Node) -> None:
        """The node's cable is pulled: its eth0 loses carrier and nothing gets through."""
        _ip("-n", self.bridge_ns, "link", "set", node.bridge_port, "down")
        node.link_cut = True

    def restore_link(self, node: Node) -> None:
        _ip("-n", self.bridge_ns, "link", "set", node.bridge_port, "up")
        node.link_cut = False

    # observation ------------------------------------------------------------

    def holders(self, iprs: dict[str, IPRoute] | None = None) -> list[str]:
        """Nodes that answer for the VIP: their eth0 carries it and their cable is in.

        A node whose cable is pulled cannot answer for anything; it stands for a dead node,
        whose addresses are gone with its power.
        """
        out = []
        for n in self.nodes:
            if n.link_cut:
                continue
            ipr = iprs[n.netns] if iprs is not None else self.ipr(n.netns)
            if any(a.get_attr("IFA_ADDRESS") == self.vip for a in ipr.get_addr(family=2)):
                out.append(n.name)
        return out

    def client_neighbour_mac(self, dst: str | None = None) -> str | None:
        """The MAC the client's neighbour table has for ``dst`` (default: the IPv4 VIP)."""
        dst = dst or self.vip
        ipr = self.ipr(self.client_ns)
        for nb in ipr.get_neighbours(family=10 if ":" in dst else 2):
            if nb.get_attr("NDA_DST") == dst:
                mac = nb.get_attr("NDA_LLADDR")
                return str(mac) if mac else None
        return None

    @property
    def vip6(self) -> str:
        return f"{self.prefix6}75"

    def wait_for(self, predicate: Any, timeout: float, interval: float = 0.01) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            time.sleep(interval)
        return bool(predicate())

    def log_text(self, node: Node) -> str:
        return node.log.read_text(errors="replace") if node.log and node.log.exists() else ""

    # teardown ---------------------------------------------------------------

    def destroy(self) -> None:
        for n in self.nodes:
            if n.running:
                assert n.proc is not None
                n.proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    n.proc.wait(5)
        for f in self._log_files:
            f.close()
        self.api.stop()
        for ipr in self._ipr.values():
            ipr.close()
        self._ipr.clear()
        for ns in [self.client_ns, *(n.netns for n in self.nodes), self.bridge_ns]:
            if netns_exists(ns):
                for pid in subprocess.run(
                    ["ip", "netns", "pids", ns], capture_output=True, text=True
                ).stdout.split():
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pid), signal.SIGKILL)
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        if self._own_workdir and not os.environ.get("KUBEVIPD_KEEP_LAB"):
            shutil.rmtree(self.workdir, ignore_errors=True)


class HolderSampler:
    """Samples which nodes hold the VIP every ``interval`` from a thread; records every change."""

    def __init__(self, lab: Lab, interval: float = 0.01) -> None:
        self.lab = lab
        self.interval = interval
        self.samples = 0
        self.max_holders = 0
        self.double: list[tuple[float, list[str]]] = []
        self.changes: list[tuple[float, tuple[str, ...]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="holder-sampler", daemon=True)
        # Sockets of its own: one pyroute2 socket must not serve two threads' dumps at once.
        self._iprs = {n.netns: run_in_netns(n.netns, IPRoute) for n in lab.nodes}

    def __enter__(self) -> HolderSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for ipr in self._iprs.values():
            ipr.close()

    def _run(self) -> None:
        last: tuple[str, ...] | None = None
        while not self._stop.is_set():
            t = time.monotonic()
            holders = self.lab.holders(self._iprs)
            self.samples += 1
            self.max_holders = max(self.max_holders, len(holders))
            if len(holders) > 1:
                self.double.append((t, holders))
            if tuple(holders) != last:
                last = tuple(holders)
                self.changes.append((t, last))
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - t)))

    def holder(self) -> str | None:
        return self.changes[-1][1][0] if self.changes and self.changes[-1][1] else None


class Pinger:
    """ICMP echo to the VIP from the client namespace every ``interval``; records replies."""

    def __init__(self, lab: Lab, interval: float = 0.01) -> None:
        import socket

        self.target = lab.vip
        self.interval = interval
        self.ident = os.getpid() & 0xFFFF
        self.replies: list[float] = []
        self.sent = 0
        self._sock = run_in_netns(
            lab.client_ns,
            lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
        )
        self._sock.settimeout(0.1)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._send_loop, name="ping-send", daemon=True),
            threading.Thread(target=self._recv_loop, name="ping-recv", daemon=True),
        ]

    def __enter__(self) -> Pinger:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(2)
        self._sock.close()

    @staticmethod
    def _checksum(data: bytes) -> int:
        if len(data) % 2:
            data += b"\0"
        s = sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
        s = (s >> 16) + (s & 0xFFFF)
        s += s >> 16
        return ~s & 0xFFFF

    def _send_loop(self) -> None:
        seq = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            seq = (seq + 1) & 0xFFFF
            hdr = bytes([8, 0, 0, 0]) + self.ident.to_bytes(2, "big") + seq.to_bytes(2, "big")
            payload = b"kubevipd-lab"
            csum = self._checksum(hdr + payload)
            pkt = hdr[:2] + csum.to_bytes(2, "big") + hdr[4:] + payload
            with contextlib.suppress(OSError):
                self._sock.sendto(pkt, (self.target, 0))
                self.sent += 1
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _recv_loop(self) -> None:
        while not self._stop.is_set():
            try:
                data, (src, _) = self._sock.recvfrom(2048)
            except (TimeoutError, OSError):
                continue
            ihl = (data[0] & 0x0F) * 4
            icmp = data[ihl:]
            is_reply = src == self.target and len(icmp) >= 8 and icmp[0] == 0
            if is_reply and int.from_bytes(icmp[4:6], "big") == self.ident:
                self.replies.append(time.monotonic())

    def replies_after(self, t: float) -> list[float]:
        return [r for r in self.replies if r > t]

    def outage_between(self, t0: float, t1: float) -> float:
        """The longest gap between replies within [t0, t1] (seconds)."""
        rs = [r for r in self.replies if t0 <= r <= t1]
        if len(rs) < 2:
            return float("inf")
        return max(b - a for a, b in itertools.pairwise(rs))

    def outage_around(self, t: float, window: float = 30.0) -> float:
        """The longest gap between replies in [t - 1s, t + window] (seconds)."""
        return self.outage_between(t - 1.0, t + window)
