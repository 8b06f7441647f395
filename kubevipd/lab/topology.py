"""A lab of network namespaces shaped like a kubeadm control plane: N nodes and a client.

Each node namespace runs its own "local apiserver" on port 6443 of all its addresses (so
``VIP:6443`` reaches the leader's, 127.0.0.1:6443 its own), and all of them serve one shared
:class:`LeaseStore`, which stands for etcd. Every node's kubeconfig names the VIP, exactly as
``kubeadm init --control-plane-endpoint VIP:6443`` writes ``admin.conf``, and the apiserver's
certificate carries kubeadm's names (``kubernetes``, ``kubernetes.default``, ..., the node IPs,
the VIP) but not 127.0.0.1. Faults are injected per node: its apiserver stopped, slow, answering
5xx or 429, or cut from the store while still up (its ``/readyz`` then fails, as a real
apiserver's does when it loses etcd). A pulled cable also cuts the node's apiserver from the
store: with stacked etcd, a node alone has no quorum.

Every name carries a unique id, and ``destroy()`` (also run by ``with``) kills what runs inside
and deletes every namespace, so a test or an interrupted demo leaves the host as it was. The
bridge lives in a namespace of its own: nothing is added to the host's own network.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pyroute2 import IPRoute

from kubevipd.lab.apiserver import (
    LabApiServer,
    LeaseStore,
    kubernetes_endpoint_slice,
    node_tokens,
    standard_tokens,
)
from kubevipd.lab.netns import NetnsIPRoute
from kubevipd.lab.pki import Pki, make_pki, write_kubeconfig

API_PORT = 6443
# The names kubeadm puts in the apiserver's certificate, besides the node's own name and IPs.
KUBEADM_NAMES = (
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
SERVICE_IP = "10.96.0.1"  # the first address of kubeadm's default Service CIDR
MAX_NODES = 10  # node addresses .11 to .20, all in the apiservers' certificate


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
    api: LabApiServer  # this node's own apiserver (0.0.0.0:6443 and [::]:6443 in its namespace)
    mac: str = ""
    link_cut: bool = False
    proc: subprocess.Popen[bytes] | None = None
    config: Path | None = None
    run_dir: Path | None = None
    log: Path | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def api_url(self) -> str:
        """The node's apiserver as other nodes reach it (its advertise address)."""
        return f"https://{self.ip}:{API_PORT}"


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
    store: LeaseStore  # what every node's apiserver serves: the lab's etcd
    pki: Pki
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
        ips = [f"{subnet}.{11 + i}" for i in range(n)]
        vip = f"{subnet}.75"
        # One certificate for every node's apiserver, with kubeadm's names: each node's IPs,
        # the control-plane endpoint (the VIP), the Service IP; never 127.0.0.1.
        # Room for nodes added later (add_node): .11 to .20.
        spare = range(max(n, MAX_NODES))
        sans_ip = [*(f"{subnet}.{11 + i}" for i in spare), *(f"{prefix6}{11 + i}" for i in spare)]
        sans_ip += [vip, f"{prefix6}75"]
        pki = make_pki(wd / "pki", [*sans_ip, SERVICE_IP], (*KUBEADM_NAMES, *names), loopback=False)
        tokens = standard_tokens() | node_tokens(names)  # one dict, shared by every server
        store = LeaseStore()
        store.set_endpoint_slice("default", "kubernetes", kubernetes_endpoint_slice(ips, API_PORT))
        lab = cls(
            uid=uid,
            subnet=subnet,
            prefix6=prefix6,
            workdir=wd,
            bridge_ns=f"kvl-{uid}-br",
            client_ns=f"kvl-{uid}-c",
            nodes=[
                Node(
                    name,
                    f"kvl-{uid}-{name}",
                    ips[i],
                    f"kv{uid}{name}",
                    LabApiServer(pki, tokens, store=store, bookmark_interval=1.0),
                )
                for i, name in enumerate(names)
            ],
            store=store,
            pki=pki,
            vip=vip,
            client_ip=f"{subnet}.100",
            _own_workdir=workdir is None,
        )
        try:
            lab._build()
            for node in lab.nodes:
                node.api.start("::", API_PORT, netns=node.netns)
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
            self._ipr[netns] = NetnsIPRoute(netns)
        return self._ipr[netns]

    def mac_of(self, netns: str, ifname: str = "eth0") -> str:
        ipr = self.ipr(netns)
        idx = ipr.link_lookup(ifname=ifname)[0]
        return str(ipr.get_links(idx)[0].get_attr("IFLA_ADDRESS"))

    # daemons ----------------------------------------------------------------

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def kubeconfig(self, name: str, token: str, user: str = "lab") -> Path:
        """A kubeconfig as kubeadm writes ``admin.conf``: its server is the VIP."""
        return write_kubeconfig(
            self.workdir / f"{name}.kubeconfig", self.vip_url, self.pki, token, user=user
        )

    @property
    def vip_url(self) -> str:
        """The control-plane endpoint, as kubeadm's kubeconfigs and every client name it."""
        return f"https://{self.vip}:{API_PORT}"

    def write_config(self, node: Node, **overrides: Any) -> Path:
        """The README's smallest config (interface, VIP, kubeconfig) plus the lab's timings.

        No ``election.server`` and no health URL: the daemon must find its own apiserver at
        127.0.0.1:6443 by itself, and its name is the namespace's host name, as on a real node.
        """
        kubeconfig = self.kubeconfig(
            node.name, f"lab-{node.name}-token", f"system:node:{node.name}"
        )
        doc: dict[str, Any] = {
            "interface": "eth0",
            "vip": {"address": self.vip},
            "election": {
                "kubeconfig": str(kubeconfig),
                # The lab's timings, shorter than the shipped 5s/3s/1s to keep the tests quick.
                "lease_duration": "3s",
                "renew_deadline": "2s",
                "retry_period": "500ms",
            },
            "health": {
                "period": "200ms",
                "timeout": "200ms",
                "failure_threshold": 2,
                "link_down_grace": "500ms",
            },
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
            [*self.node_exec(node), *self.command, "run",
             "--config", str(node.config), "--run-dir", str(node.run_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
        )  # fmt: skip

    @staticmethod
    def node_exec(node: Node) -> list[str]:
        """Run a command "on" the node: in its network namespace, with its host name (a UTS
        namespace of its own). Every step execs, so the command keeps the process's PID."""
        return ["ip", "netns", "exec", node.netns, "unshare", "--uts", "--",
                "sh", "-c", 'hostname "$0" && exec "$@"', node.name]  # fmt: skip

    def add_node(self, name: str, netns: str, ip: str) -> Node:
        """A node whose namespace someone else made (a systemd container): it gets its own
        apiserver on 6443, a token, and a place in the ``kubernetes`` EndpointSlice. Wiring its
        link to the bridge is the caller's."""
        api = LabApiServer(self.pki, self.nodes[0].api.tokens, store=self.store)
        api.tokens.update(node_tokens([name]))  # the dict every node's server shares
        node = Node(name, netns, ip, f"kv{self.uid}{name}", api)
        api.start("::", API_PORT, netns=netns)
        self.nodes.append(node)
        ips = [n.ip for n in self.nodes]
        self.store.set_endpoint_slice(
            "default", "kubernetes", kubernetes_endpoint_slice(ips, API_PORT)
        )
        return node

    # faults -----------------------------------------------------------------

    def cut_from_store(self, node: Node, cut: bool = True) -> None:
        """The node's apiserver stays up but loses etcd: calls hang, /readyz fails."""
        node.api.faults.store_cut = cut

    def stop_apiservers(self) -> None:
        """Every apiserver down at once (an etcd outage looks the same to kubevipd)."""
        for n in self.nodes:
            n.api.stop()

    def start_apiservers(self) -> None:
        for n in self.nodes:
            if not n.api.running:
                n.api.restart()

    def requests(self) -> list[tuple[str, str, str, int]]:
        """Every request any node's apiserver has served, recent ones last per node."""
        return [r for n in self.nodes for r in n.api.requests]

    @property
    def request_count(self) -> int:
        return sum(n.api.request_count for n in self.nodes)

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
        """The node's cable is pulled: its eth0 loses carrier and nothing gets through, and its
        apiserver loses etcd (stacked etcd: a node alone has no quorum)."""
        _ip("-n", self.bridge_ns, "link", "set", node.bridge_port, "down")
        node.link_cut = True
        self.cut_from_store(node)

    def restore_link(self, node: Node) -> None:
        _ip("-n", self.bridge_ns, "link", "set", node.bridge_port, "up")
        node.link_cut = False
        self.cut_from_store(node, False)

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
        for n in self.nodes:
            n.api.stop()
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
