"""The lab's BGP shape without kubevipd: real routers (BIRD on r1, GoBGP on r2) and a bare
ExaBGP 4.2 on each node announcing the VIP with a MED of its own.

What a BGP test of kubevipd will lean on, checked with the routers' own CLIs: both routers
learn one path per node, the lowest MED is best on both, r1's kernel forwards the VIP to that
node (to every node, ECMP, when the MEDs are equal), the client behind r1 reaches a listener
bound to the VIP there, a wrong TCP MD5 password keeps a session down, an IPv6 peering carries
a /128, and ``destroy()`` leaves nothing running.
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kubevipd.lab.control_plane import API_PORT
from kubevipd.lab.netns import run_in_netns
from kubevipd.lab.routers import NODE_AS, ROUTER_AS, Peering, Router, SeenRoute
from kubevipd.lab.topology import Lab, Node, netns_exists

from .conftest import require_root

pytestmark = pytest.mark.root
EXABGP = "/usr/sbin/exabgp"
# ExaBGP 4.2 always gives up root, to exabgp.daemon.user ("drop false" only delays that until
# its API processes have started): Debian's /etc/exabgp/exabgp.env says exabgp, the built-in
# default is nobody. An env file of the test's own (``--env``) keeps the host's out of it.
EXABGP_ENV = {
    "exabgp_daemon_daemonize": "false",
    "exabgp_daemon_drop": "false",
    "exabgp_daemon_user": "nobody",
    "exabgp_api_cli": "false",
    "exabgp_log_destination": "stdout",
}
PORT = 8080  # the listener bound to the VIP on every node


class Speakers:
    """Bare ExaBGP processes on the lab's nodes, killed at the end of the test."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(
        self,
        node: Node,
        med: int,
        *,
        ipv6: bool = False,
        hold_time: int = 30,
        passwords: dict[str, str] | None = None,
    ) -> None:
        """ExaBGP on ``node`` peering with r1 and r2 (over IPv6 if ``ipv6``), announcing the
        VIP (/32, or the IPv6 VIP /128) with next hop ``node`` and ``med``; ``passwords``:
        router name -> its MD5 password."""
        blocks = []
        for r in self.lab.routers:
            peer, local = (r.address6, node.ip6) if ipv6 else (r.address, node.ip)
            vip, family = (
                (f"{self.lab.vip6}/128", "ipv6") if ipv6 else (f"{self.lab.vip}/32", "ipv4")
            )
            md5 = (passwords or {}).get(r.name)
            blocks.append(
                f"neighbor {peer} {{\n"
                f"  router-id {node.ip};\n"
                f"  local-address {local};\n"
                f"  local-as {NODE_AS};\n"
                f"  peer-as {ROUTER_AS};\n"
                f"  hold-time {hold_time};\n"
                + (f'  md5-password "{md5}";\n' if md5 else "")
                + f"  family {{ {family} unicast; }}\n"
                f"  static {{ route {vip} next-hop {local} med {med}; }}\n"
                "}\n"
            )
        conf = self.lab.workdir / f"{node.name}.exabgp.conf"
        conf.write_text("".join(blocks))
        env = self.lab.workdir / "exabgp.env"
        env.write_text("# ExaBGP's defaults and the environment's exabgp_* only\n")
        log = (self.lab.workdir / f"{node.name}.exabgp.log").open("ab")
        self.procs[node.name] = subprocess.Popen(
            ["ip", "netns", "exec", node.netns, EXABGP, "--env", str(env), str(conf)],
            env={**os.environ, **EXABGP_ENV},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def log_text(self, node: Node) -> str:
        path = self.lab.workdir / f"{node.name}.exabgp.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


LabFactory = Callable[..., tuple[Lab, Speakers]]


@pytest.fixture
def bgp_lab() -> Iterator[LabFactory]:
    """``bgp_lab(r1=Peering(...), r2=...)``: a three-node BGP lab and its speakers."""
    require_root()
    made: list[tuple[Lab, Speakers]] = []

    def make(**peerings: Peering) -> tuple[Lab, Speakers]:
        lab = Lab.create(3, bgp=True, **peerings)
        made.append((lab, Speakers(lab)))
        return made[-1]

    yield make
    for lab, speakers in made:
        speakers.stop_all()
        lab.destroy()


def wait_routes(router: Router, prefix: str, count: int, timeout: float = 10) -> list[SeenRoute]:
    """The router's paths for ``prefix`` once it holds ``count`` of them (one of them best)."""
    deadline = time.monotonic() + timeout
    while True:
        routes = router.routes(prefix)
        if len(routes) == count and any(r.best for r in routes):
            return routes
        if time.monotonic() > deadline:
            raise AssertionError(f"{router.name} holds {routes} for {prefix}, not {count} paths")
        time.sleep(0.05)


def wait_kernel(lab: Lab, prefix: str, hops: list[str], timeout: float = 5) -> None:
    ok = lab.wait_for(lambda: lab.r1.kernel_next_hops(prefix) == sorted(hops), timeout, 0.05)
    assert ok, f"r1's kernel forwards {prefix} to {lab.r1.kernel_next_hops(prefix)}, not {hops}"


def serve_names(lab: Lab, address: str) -> list[socket.socket]:
    """``address`` on every node's lo, and on each a TCP listener on it that answers the
    node's name: what the client reaches tells which node r1 forwarded to."""
    fam = socket.AF_INET6 if ":" in address else socket.AF_INET
    plen = "128" if ":" in address else "32"
    # nodad, as kubevipd adds an IPv6 VIP: even on lo a new IPv6 address stays tentative
    # until the kernel's DAD work runs, and binding to it before then fails (EADDRNOTAVAIL).
    nodad = ["nodad"] if ":" in address else []
    listeners = []
    for node in lab.nodes:
        subprocess.run(["ip", "-n", node.netns, "addr", "add", f"{address}/{plen}", "dev", "lo",
                        *nodad], check=True, capture_output=True)  # fmt: skip

        def listen() -> socket.socket:
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((address, PORT))
            s.listen(8)
            return s

        sock = run_in_netns(node.netns, listen)
        listeners.append(sock)

        def answer(sock: socket.socket = sock, name: str = node.name) -> None:
            while True:
                try:
                    conn, _ = sock.accept()
                except OSError:
                    return  # closed at the end of the test
                with conn:
                    conn.sendall(name.encode())

        threading.Thread(target=answer, daemon=True).start()
    return listeners


def ask_vip(lab: Lab, address: str) -> str:
    """From the client (behind r1): connect to ``address``:PORT, read who answers."""

    def ask() -> str:
        with socket.create_connection((address, PORT), timeout=3) as s:
            return s.recv(64).decode()

    return run_in_netns(lab.client_ns, ask)


def readyz_via_vip(lab: Lab, address: str) -> dict[str, int]:
    """From the client: ``GET https://VIP:6443/readyz``, the certificate checked against the
    VIP (kubeadm's names it, so the lab's must). Returns how many requests each node's
    apiserver served for it (one node's: 1), after asserting the answer was 200."""
    before = {n.name: n.api.request_count for n in lab.nodes}
    ctx = ssl.create_default_context(cafile=str(lab.pki.ca_cert))

    def get() -> int:
        conn = http.client.HTTPSConnection(address, API_PORT, timeout=3, context=ctx)
        try:
            conn.request("GET", "/readyz")
            return conn.getresponse().status
        finally:
            conn.close()

    assert run_in_netns(lab.client_ns, get) == 200
    return {n.name: n.api.request_count - before[n.name] for n in lab.nodes}


def md5_failures(netns: str) -> int:
    """The namespace's TcpExtTCPMD5Failure: segments dropped for a wrong MD5 signature."""
    text = subprocess.run(["ip", "netns", "exec", netns, "cat", "/proc/net/netstat"],
                          capture_output=True, text=True, check=True).stdout  # fmt: skip
    lines = [line.split() for line in text.splitlines() if line.startswith("TcpExt:")]
    return int(dict(zip(lines[0], lines[1], strict=True))["TCPMD5Failure"])


def assert_paths(
    routes: list[SeenRoute], meds: dict[str, int], best: str, hop: dict[str, str]
) -> None:
    """One path per node, from that node, next hop its address, its MED; ``best`` alone best."""
    assert sorted(r.from_peer for r in routes) == sorted(meds), routes
    for r in routes:
        assert r.med == meds[r.from_peer], routes
        assert r.next_hop == hop[r.from_peer], routes
    assert [r.from_peer for r in routes if r.best] == [best], routes


def test_both_routers_hold_a_path_per_node_lowest_med_best_and_r1_forwards_to_it(
    bgp_lab: LabFactory,
) -> None:
    lab, speakers = bgp_lab(r1=Peering(hold_time=9), r2=Peering(hold_time=6))
    n1, n2, n3 = lab.nodes
    meds = {n1.ip: 30, n2.ip: 10, n3.ip: 20}  # n2 best: neither the first nor the last
    for node in lab.nodes:
        speakers.start(node, meds[node.ip])  # hold time 30, as kube-vip's
    listeners = serve_names(lab, lab.vip)
    for router in lab.routers:
        router.wait_established(timeout=15)
        routes = wait_routes(router, lab.vip, 3)
        assert_paths(routes, meds, n2.ip, {n.ip: n.ip for n in lab.nodes})
        assert all(r.prefix == f"{lab.vip}/32" for r in routes)
    # The hold time negotiated is the lower one (RFC 4271 4.2): the router's.
    assert [lab.r1.hold_time(n.ip) for n in lab.nodes] == [9, 9, 9]
    assert [lab.r2.hold_time(n.ip) for n in lab.nodes] == [6, 6, 6]
    # MEDs differ: r1's kernel has the best path alone, and the client reaches n2 through it.
    wait_kernel(lab, lab.vip, [n2.ip])
    assert ask_vip(lab, lab.vip) == "n2"
    assert readyz_via_vip(lab, lab.vip) == {"n1": 0, "n2": 1, "n3": 0}
    # The client is behind r1, not on the bridge: its route to the VIP is its default via r1.
    out = subprocess.run(["ip", "-n", lab.client_ns, "route", "get", lab.vip],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert f"via {lab.client_gateway} " in out, out
    for s in listeners:
        s.close()


def test_equal_meds_make_one_ecmp_route_in_r1s_kernel(bgp_lab: LabFactory) -> None:
    lab, speakers = bgp_lab(r1=Peering(hold_time=9), r2=Peering(hold_time=9))
    for node in lab.nodes:
        speakers.start(node, 10)
    for router in lab.routers:
        router.wait_established(timeout=15)
        routes = wait_routes(router, lab.vip, 3)
        assert sum(r.best for r in routes) == 1 and {r.med for r in routes} == {10}, routes
    wait_kernel(lab, lab.vip, [n.ip for n in lab.nodes])  # merge paths on


def test_a_wrong_md5_password_keeps_the_session_down(bgp_lab: LabFactory) -> None:
    lab, speakers = bgp_lab(
        r1=Peering(password="r1-secret", hold_time=9), r2=Peering(password="r2-secret", hold_time=9)
    )
    n1 = lab.nodes[0]
    before = md5_failures(lab.r2.netns)
    speakers.start(n1, 10, passwords={"r1": "r1-secret", "r2": "not-r2s"})
    # The same speaker, with the right password, gets its session with r1 ...
    lab.r1.wait_established([n1.ip], timeout=15)
    assert [r.from_peer for r in wait_routes(lab.r1, lab.vip, 1)] == [n1.ip]
    # ... and never with r2, whose kernel drops its segments for their signature.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        assert lab.r2.sessions()[n1.ip] != "established", lab.r2.log_text()
        time.sleep(0.1)
    assert lab.r2.routes(lab.vip) == []
    assert md5_failures(lab.r2.netns) > before
    # r2 given the speaker's password: the session comes up, so the password alone kept it down.
    lab.r2.reconfigure(Peering(password="not-r2s", hold_time=9))
    lab.r2.wait_established([n1.ip], timeout=30)
    assert [r.from_peer for r in wait_routes(lab.r2, lab.vip, 1)] == [n1.ip]


def test_an_ipv6_peering_carries_a_128(bgp_lab: LabFactory) -> None:
    six = Peering(ipv4=False, ipv6=True, hold_time=9)
    lab, speakers = bgp_lab(r1=six, r2=six)
    n1, n2, _ = lab.nodes
    meds = {n1.ip6: 20, n2.ip6: 10}
    for node in (n1, n2):
        speakers.start(node, meds[node.ip6], ipv6=True)
    listeners = serve_names(lab, lab.vip6)
    for router in lab.routers:
        assert sorted(router.sessions()) == sorted(n.ip6 for n in lab.nodes)  # IPv6 only
        router.wait_established([n1.ip6, n2.ip6], timeout=15)
        routes = wait_routes(router, lab.vip6, 2)
        assert_paths(routes, meds, n2.ip6, {n1.ip6: n1.ip6, n2.ip6: n2.ip6})
        assert all(r.prefix == f"{lab.vip6}/128" for r in routes), routes
    wait_kernel(lab, lab.vip6, [n2.ip6])
    assert ask_vip(lab, lab.vip6) == "n2"
    assert readyz_via_vip(lab, lab.vip6) == {"n1": 0, "n2": 1, "n3": 0}
    for s in listeners:
        s.close()


def test_destroy_stops_the_routers_and_deletes_their_namespaces(bgp_lab: LabFactory) -> None:
    lab, _ = bgp_lab()
    r1, r2 = lab.r1, lab.r2
    procs = [r.proc for r in lab.routers]
    assert all(p is not None and p.poll() is None for p in procs)
    # Everything of theirs is in the lab's work directory: nothing of the host's is used.
    for path in (r1.config_path, r1.socket_path, r1.pid_path, r1.log_path, r2.config_path,
                 r2.pid_path, r2.log_path):  # fmt: skip
        assert path.parent == lab.workdir and path.exists(), path
    assert int(r1.pid_path.read_text()) == procs[0].pid  # type: ignore[union-attr]
    namespaces = [r1.netns, r2.netns, lab.client_ns, *(n.netns for n in lab.nodes)]
    assert all(netns_exists(ns) for ns in namespaces)
    workdir = Path(lab.workdir)
    lab.destroy()
    assert all(p is not None and p.poll() is not None for p in procs)
    assert not any(netns_exists(ns) for ns in namespaces)
    assert not workdir.exists()
