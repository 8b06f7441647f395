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

This module builds that topology: the namespaces, the bridge and the veths, the addresses, the
links cut and restored, and what is seen on them (who holds the VIP, the client's neighbour
table); it creates the lab and destroys it. The parts of :class:`Lab` behind it:

- ``kubevipd.lab.control_plane``: the apiservers' PKI and kubeconfigs, their faults;
- ``kubevipd.lab.nodes``: :class:`Node`, and the daemon run on it (config, process, log);
- ``kubevipd.lab.routers``: the BGP shape's routers.

The BGP shape (``Lab.create(n, bgp=True)``): the VIP is routed, not on-link. It is an address
outside the node subnet, unique per lab (``10.251.A.B`` for nodes on ``10.A.B.0/24``, and
``fd00:A:B:ff::75`` outside the nodes' ``fd00:A:B::/64``). Two routers sit on the bridge:
r1 (``.2`` and ``::2``) runs BIRD 2 and forwards, with its best BGP routes in its kernel table
(ECMP when they are equal), and r2 (``.3`` and ``::3``) runs GoBGP, a RIB only. Both peer with
every node (routers AS 65000, nodes AS 65001). The client is not on the bridge: it sits behind
r1 on a link of its own (a /30 out of ``10.252.0.0/14``, and ``fd00:A:B:c::/64``), and every
node's default routes (IPv4 and IPv6) point at r1, so the client reaches the VIP only through
the route r1 learnt, and the answer comes back through r1.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from kubevipd.lab.apiserver import (
    LabApiServer,
    LeaseStore,
    kubernetes_endpoint_slice,
    node_tokens,
    standard_tokens,
)
from kubevipd.lab.control_plane import API_PORT, make_apiserver_pki
from kubevipd.lab.netns import NetnsIPRoute
from kubevipd.lab.nodes import Daemons, Node
from kubevipd.lab.pki import Pki
from kubevipd.lab.routers import NODE_AS, ROUTER_AS, Bird, GoBgp, Neighbour, Peering, Router

__all__ = ["API_PORT", "Lab", "Node", "netns_exists"]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _sysctl(netns: str, *settings: str) -> None:
    subprocess.run(["ip", "netns", "exec", netns, "sysctl", "-q", "-w", *settings],
                   check=True, capture_output=True, text=True)  # fmt: skip


def netns_exists(name: str) -> bool:
    return Path(f"/run/netns/{name}").exists()


@dataclass
class Lab(Daemons):
    """Build with ``Lab.create(n)``; use as a context manager so it is always destroyed.

    Its daemons (``start``, ``signal``, ``wait_exit``, ``log_text``...) are
    :class:`kubevipd.lab.nodes.Daemons`'; its apiservers' kubeconfigs and faults
    (``kubeconfig``, ``cut_from_store``...) :class:`kubevipd.lab.control_plane.ControlPlane`'.
    """

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
    client_ip6: str = ""
    # The BGP shape (see the module doc): r1's addresses on the client's link, the routers.
    bgp: bool = False
    client_gateway: str = ""
    client_gateway6: str = ""
    _vip6: str = ""
    _r1: Bird | None = None
    _r2: GoBgp | None = None
    # How to run a daemon: this checkout's by default; the installed package's in its test.
    command: list[str] = field(default_factory=lambda: [sys.executable, "-m", "kubevipd"])
    _ipr: dict[str, IPRoute] = field(default_factory=dict)
    # destroy() removes the work directory when the lab made it (KUBEVIPD_KEEP_LAB=1 keeps it).
    _own_workdir: bool = False
    _log_files: list[Any] = field(default_factory=list)

    @classmethod
    def create(
        cls,
        n: int = 3,
        workdir: Path | None = None,
        *,
        bgp: bool = False,
        r1: Peering | None = None,
        r2: Peering | None = None,
    ) -> Lab:
        """``n`` nodes and a client; ``bgp=True``: the BGP shape (module doc), its routers
        peering as ``r1`` and ``r2`` say (default :class:`Peering`: IPv4, hold time 30 s, no
        password). Routers started; the nodes run nothing but their apiservers."""
        uid = secrets.token_hex(3)
        rnd = secrets.randbelow(250 * 250)
        a, b = rnd // 250 + 1, rnd % 250 + 1
        subnet = f"10.{a}.{b}"
        prefix6 = f"fd00:{a:x}:{b:x}::"
        wd = workdir or Path(tempfile.mkdtemp(prefix=f"kubevipd-lab-{uid}-"))
        names = [f"n{i + 1}" for i in range(n)]
        ips = [f"{subnet}.{11 + i}" for i in range(n)]
        vip = f"{subnet}.75"
        vip6 = f"{prefix6}75"
        client_ip, client_ip6 = f"{subnet}.100", f"{prefix6}100"
        gateway = gateway6 = ""
        if bgp:
            vip, vip6 = f"10.251.{a}.{b}", f"fd00:{a:x}:{b:x}:ff::75"
            link = ipaddress.IPv4Address("10.252.0.0") + 4 * rnd  # a /30 of 10.252.0.0/14
            gateway, client_ip = str(link + 1), str(link + 2)
            gateway6, client_ip6 = f"fd00:{a:x}:{b:x}:c::1", f"fd00:{a:x}:{b:x}:c::2"
        pki = make_apiserver_pki(wd / "pki", subnet, prefix6, vip, names, vip6=vip6)
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
                    ip6=f"{prefix6}{11 + i}",
                )
                for i, name in enumerate(names)
            ],
            store=store,
            pki=pki,
            vip=vip,
            client_ip=client_ip,
            client_ip6=client_ip6,
            bgp=bgp,
            client_gateway=gateway,
            client_gateway6=gateway6,
            _vip6=vip6,
            _own_workdir=workdir is None,
        )
        if bgp:
            peers = [Neighbour(n.name, n.ip, n.ip6) for n in lab.nodes]
            lab._r1 = Bird("r1", f"kvl-{uid}-r1", f"{subnet}.2", f"{prefix6}2", wd, peers,
                           r1 or Peering())  # fmt: skip
            lab._r2 = GoBgp("r2", f"kvl-{uid}-r2", f"{subnet}.3", f"{prefix6}3", wd, peers,
                            r2 or Peering())  # fmt: skip
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
        if self.bgp:
            ports += [(r.netns, f"kv{self.uid}{r.name}", r.address, r.address6.rpartition(":")[2])
                      for r in self.routers]  # fmt: skip
        else:
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
        if self.bgp:
            self._build_routed()
        self.client_mac = self.mac_of(self.client_ns)

    def _build_routed(self) -> None:
        """The BGP shape's rest: the client behind r1, r1 forwarding, every node's and the
        client's default routes via r1, both routers started."""
        r1, c = self.r1, self.client_ns
        _ip("netns", "add", c)
        _ip("-n", c, "link", "set", "lo", "up")
        _ip("-n", r1.netns, "link", "add", "name", "eth1", "type", "veth", "peer", "name", "eth0",
            "netns", c)  # fmt: skip
        for ns, dev, ip, ip6 in (
            (r1.netns, "eth1", self.client_gateway, self.client_gateway6),
            (c, "eth0", self.client_ip, self.client_ip6),
        ):
            _ip("-n", ns, "addr", "add", f"{ip}/30", "dev", dev)
            _ip("-n", ns, "addr", "add", f"{ip6}/64", "dev", dev, "nodad")
            _ip("-n", ns, "link", "set", dev, "up")
        _sysctl(r1.netns, "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
        for ns, via, via6 in [
            *((n.netns, r1.address, r1.address6) for n in self.nodes),
            (c, self.client_gateway, self.client_gateway6),
        ]:
            _ip("-n", ns, "route", "add", "default", "via", via)
            _ip("-n", ns, "-6", "route", "add", "default", "via", via6)
        for router in self.routers:
            router.start()

    def ipr(self, netns: str) -> IPRoute:
        """A netlink socket inside ``netns`` (usable from any thread)."""
        if netns not in self._ipr:
            self._ipr[netns] = NetnsIPRoute(netns)
        return self._ipr[netns]

    def mac_of(self, netns: str, ifname: str = "eth0") -> str:
        ipr = self.ipr(netns)
        idx = ipr.link_lookup(ifname=ifname)[0]
        return str(ipr.get_links(idx)[0].get_attr("IFLA_ADDRESS"))

    # nodes ------------------------------------------------------------------

    @property
    def r1(self) -> Bird:
        """The BGP shape's BIRD router (it forwards to the VIP)."""
        if self._r1 is None:
            raise RuntimeError("not a BGP lab: Lab.create(n, bgp=True) has routers")
        return self._r1

    @property
    def r2(self) -> GoBgp:
        """The BGP shape's GoBGP router (a RIB only)."""
        if self._r2 is None:
            raise RuntimeError("not a BGP lab: Lab.create(n, bgp=True) has routers")
        return self._r2

    @property
    def routers(self) -> list[Router]:
        return [r for r in (self._r1, self._r2) if r is not None]

    def bgp_config(self, password_file: Path | None = None, ipv6: bool = False) -> dict[str, Any]:
        """A node's config overrides in the BGP shape: the VIP on lo, the router ID from eth0,
        an eBGP session (NODE_AS) to every router (ROUTER_AS), to its IPv6 address with
        ``ipv6``, with TCP MD5 from ``password_file`` if given."""
        peers: list[dict[str, Any]] = []
        for r in self.routers:
            peer: dict[str, Any] = {"address": r.address6 if ipv6 else r.address, "as": ROUTER_AS}
            if password_file is not None:
                peer["password_file"] = str(password_file)
            peers.append(peer)
        spec = {"router_interface": "eth0", "local_as": NODE_AS, "peers": peers}
        return {"interface": "lo", "announce": {"mode": "bgp", "bgp": spec}}

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

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

    # links ------------------------------------------------------------------

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

    def holders(self, iprs: dict[str, IPRoute] | None = None, vip: str | None = None) -> list[str]:
        """Nodes that answer for the VIP (or the address ``vip``: the IPv6 one): one of their
        interfaces carries it (eth0; lo in the BGP shape, where kube-vip puts it) and their
        cable is in.

        A node whose cable is pulled cannot answer for anything; it stands for a dead node,
        whose addresses are gone with its power.
        """
        address = vip or self.vip
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        out = []
        for n in self.nodes:
            if n.link_cut:
                continue
            ipr = iprs[n.netns] if iprs is not None else self.ipr(n.netns)
            if any(a.get_attr("IFA_ADDRESS") == address for a in ipr.get_addr(family=family)):
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
        return self._vip6 or f"{self.prefix6}75"

    def wait_for(self, predicate: Any, timeout: float, interval: float = 0.01) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            time.sleep(interval)
        return bool(predicate())

    # teardown ---------------------------------------------------------------

    def destroy(self) -> None:
        self._kill_daemons()
        for router in self.routers:
            router.stop(timeout=2)
        self.stop_apiservers()
        for ipr in self._ipr.values():
            ipr.close()
        self._ipr.clear()
        routers = [r.netns for r in self.routers]
        for ns in [self.client_ns, *(n.netns for n in self.nodes), *routers, self.bridge_ns]:
            if netns_exists(ns):
                for pid in subprocess.run(
                    ["ip", "netns", "pids", ns], capture_output=True, text=True
                ).stdout.split():
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pid), signal.SIGKILL)
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        if self._own_workdir and not os.environ.get("KUBEVIPD_KEEP_LAB"):
            shutil.rmtree(self.workdir, ignore_errors=True)
