"""Real BGP routers for the lab's BGP shape: BIRD 2 on r1 (it forwards), GoBGP on r2 (RIB only).

Each router runs in a namespace of its own (``ip netns exec``), with its config, control
socket, pid file and log under the lab's work directory, and peers with every node (eBGP:
routers AS :data:`ROUTER_AS`, nodes AS :data:`NODE_AS`). A test reads what a router learnt
with the router's own CLI (:meth:`Router.routes`, :meth:`Router.sessions`), never from the
speaker's side, so a route counts only once a real BGP implementation took it.

What each config relies on (written out in it even where it is the default, so a change of
default upstream cannot change a test silently):

BIRD 2.0.12, r1:

- RFC 8212: an eBGP channel without filters imports and exports nothing, so every channel says
  ``import all; export none;`` (the routers tell the nodes nothing).
- ``protocol device``: BIRD learns the interfaces from it; without it no next hop resolves and
  every route learnt is unreachable.
- One kernel protocol per family, ``export all`` with ``merge paths on``: the best route and the
  routes "mergable" with it (same local preference, AS path length and origin, and the same MED
  when they come from the same neighbour AS: ``bgp_rte_mergable``) become one multipath kernel
  route. Routes with different MEDs do not merge: only the best one's next hop is forwarded to.
- ``med metric off`` (the default): MED is compared only between routes from the same
  neighbour AS (RFC 4271 9.1.2.2 c). Every node is AS 65001, so the lowest MED is best.
  ``deterministic med off`` (the default) compares routes pairwise, exact when all routes come
  from one AS.
- Lab timers: ``connect delay time 1`` (default 5), ``connect retry time 2`` (120), ``error
  wait time 1, 5`` (60, 300): a speaker restarted on a node is back within seconds.
- ``password``: TCP MD5 (RFC 2385). ``birdc configure`` restarts a session whose hold time or
  password changed (``bgp_reconfigure`` compares the whole protocol config).

GoBGP 3.10, r2:

- No ``[zebra]`` section: routes stay in its RIB, nothing reaches r2's kernel.
- ``default-import-policy = accept-route`` (GoBGP's default: it has no RFC 8212 rule) and
  ``default-export-policy = reject-route``, as BIRD's.
- ``always-compare-med = false`` (the default): MED compared as BIRD compares it.
- ``connect-retry = 2`` (default 120). Not configurable: after a session goes down GoBGP's FSM
  stays idle 5 s (``holdtimeIdle``) and closes every connection accepted meanwhile ("Closed an
  accepted connection"): a speaker restarted on a node is back on r2 after about 6.5 s, on r1
  within a second.
- ``auth-password``: TCP MD5. A reload (SIGHUP) would re-create a peer whose password changed
  but keep a changed hold time for its next session only, so :meth:`GoBgp.reconfigure`
  restarts gobgpd: the new config is in force at once.
- Its gRPC API listens on 127.0.0.1:``api_port`` inside r2's namespace (the ``gobgp`` CLI runs
  there too); pprof is disabled (it would listen on localhost:6060).

Session states are RFC 4271's names in lower case (``idle``, ``connect``, ``active``,
``opensent``, ``openconfirm``, ``established``); a protocol that is down is ``idle``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ROUTER_AS = 65000
NODE_AS = 65001
GOBGP_API_PORT = 50051
DEFAULT_HOLD_TIME = 30  # kube-vip's (and kubevipd's) default hold time
STATES = ("idle", "connect", "active", "opensent", "openconfirm", "established")
# GoBGP's PeerState.SessionState enum (api/gobgp.proto); 0 is UNKNOWN.
_GOBGP_STATES = {i + 1: s for i, s in enumerate(STATES)}


@dataclass(frozen=True)
class Peering:
    """How one router peers with every node. Defaults: kube-vip's (hold time 30 s, IPv4)."""

    hold_time: int = DEFAULT_HOLD_TIME
    password: str | None = None  # TCP MD5, the same for every node
    ipv4: bool = True  # a session from the router's IPv4 address to each node's, ipv4 unicast
    ipv6: bool = False  # a session between the IPv6 addresses, ipv6 unicast
    local_as: int = ROUTER_AS
    peer_as: int = NODE_AS

    def __post_init__(self) -> None:
        if self.hold_time != 0 and not 3 <= self.hold_time <= 65535:
            raise ValueError(f"hold time {self.hold_time}: RFC 4271 allows 0 or 3 to 65535 s")
        if self.password is not None and not re.fullmatch(r"[!#-\[\]-~]{1,80}", self.password):
            # Both configs quote it: no quote, backslash, space or control character.
            raise ValueError('a lab password is 1 to 80 printable characters without " or \\')
        if not (self.ipv4 or self.ipv6):
            raise ValueError("a peering needs ipv4, ipv6 or both")


@dataclass(frozen=True)
class Neighbour:
    """A node as a router sees it: its name and its addresses on the bridge."""

    name: str
    ip: str
    ip6: str


@dataclass(frozen=True)
class SeenRoute:
    """One path a router holds for a prefix, as its CLI shows it."""

    prefix: str
    next_hop: str
    med: int | None
    best: bool
    from_peer: str  # the address of the neighbour it was learnt from


def _norm(address: str) -> str:
    return str(ipaddress.ip_address(address))


def _net(prefix: str) -> str:
    """``10.1.2.3`` or ``10.1.2.3/32`` -> ``10.1.2.3/32`` (host routes by default)."""
    if "/" not in prefix:
        prefix += "/128" if ":" in prefix else "/32"
    return str(ipaddress.ip_network(prefix))


@dataclass
class Router(ABC):
    """A BGP router process in ``netns``; its files are ``workdir/<name>.*``."""

    name: str
    netns: str
    address: str  # on the bridge, IPv4 (its router ID too)
    address6: str
    workdir: Path
    neighbours: list[Neighbour]
    peering: Peering = field(default_factory=Peering)
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.workdir / f"{self.name}.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def pid_path(self) -> Path:
        return self.workdir / f"{self.name}.pid"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def peers(self) -> list[str]:
        """The neighbour addresses the router is configured with, in the nodes' order."""
        out = []
        for n in self.neighbours:
            out += [n.ip] if self.peering.ipv4 else []
            out += [_norm(n.ip6)] if self.peering.ipv6 else []
        return out

    # process ----------------------------------------------------------------

    @abstractmethod
    def render(self) -> str:
        """The router's config for :attr:`peering`."""

    @abstractmethod
    def _argv(self) -> list[str]: ...

    @abstractmethod
    def _answers(self) -> bool:
        """The router's CLI answers and every configured peer is known to it."""

    def start(self, timeout: float = 10) -> None:
        """Write the config, start the daemon, return once its CLI answers."""
        if self.running:
            raise RuntimeError(f"{self.name} runs already: stop() it, or reconfigure()")
        self.config_path.write_text(self.render())
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, *self._argv()],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not self._answers():
            if not self.running:
                raise RuntimeError(f"{self.name} exited at start:\n{self.log_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}'s CLI did not answer in {timeout}s")
            time.sleep(0.05)

    def stop(self, timeout: float = 5) -> None:
        """SIGTERM (a clean shutdown), SIGKILL after ``timeout``; waited for."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        self.pid_path.unlink(missing_ok=True)

    def reconfigure(self, peering: Peering) -> None:
        """Put ``peering`` in force; sessions whose hold time or password changed restart."""
        self.peering = peering
        self._apply()

    @abstractmethod
    def _apply(self) -> None: ...

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # observation ------------------------------------------------------------

    @abstractmethod
    def routes(self, prefix: str) -> list[SeenRoute]:
        """Every path the router holds for exactly ``prefix`` (none: an empty list)."""

    @abstractmethod
    def sessions(self) -> dict[str, str]:
        """Each configured neighbour address -> its session state (see the module doc)."""

    @abstractmethod
    def hold_time(self, peer: str) -> int | None:
        """The hold time negotiated with ``peer`` (None while not established)."""

    def wait_established(self, peers: Iterable[str] | None = None, timeout: float = 10) -> None:
        """Return once every peer in ``peers`` (default: all) is established; TimeoutError
        with the states seen last otherwise."""
        want = [_norm(p) for p in (self.peers() if peers is None else peers)]
        deadline = time.monotonic() + timeout
        while True:
            seen = self.sessions()
            if all(seen.get(p) == "established" for p in want):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: {want} not all established in {timeout}s: {seen}")
            time.sleep(0.05)

    def _run(self, *argv: str, timeout: float = 5) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


class Bird(Router):
    """BIRD 2 (r1): forwards, with every best route (merged for ECMP) in its kernel table."""

    @property
    def socket_path(self) -> Path:
        return self.workdir / f"{self.name}.ctl"

    def _protocols(self) -> dict[str, str]:
        """BGP protocol name -> neighbour address."""
        out = {}
        for n in self.neighbours:
            if self.peering.ipv4:
                out[f"{n.name}_v4"] = n.ip
            if self.peering.ipv6:
                out[f"{n.name}_v6"] = _norm(n.ip6)
        return out

    def render(self) -> str:
        p = self.peering
        lines = [
            "# kubevipd lab router r1 (BIRD 2): see kubevipd/lab/routers.py for what it relies on",
            "log stderr all;",
            f"router id {self.address};",
            "protocol device { }",
            "protocol kernel k4 { ipv4 { import none; export all; }; merge paths on; }",
            "protocol kernel k6 { ipv6 { import none; export all; }; merge paths on; }",
            "template bgp node {",
            f"  local as {p.local_as};",
            f"  hold time {p.hold_time};",
            "  connect delay time 1;",
            "  connect retry time 2;",
            "  error wait time 1, 5;",
            "  med metric off;",
            "  deterministic med off;",
            "  debug { states, events };",
        ]
        lines += [f'  password "{p.password}";'] if p.password else []
        lines.append("}")
        for n in self.neighbours:
            for fam, mine, theirs, ok in (
                ("4", self.address, n.ip, p.ipv4),
                ("6", self.address6, n.ip6, p.ipv6),
            ):
                if ok:
                    lines += [
                        f"protocol bgp {n.name}_v{fam} from node {{",
                        f"  local {mine} as {p.local_as};",
                        f"  neighbor {theirs} as {p.peer_as};",
                        f"  ipv{fam} {{ import all; export none; }};",
                        "}",
                    ]
        return "\n".join(lines) + "\n"

    def _argv(self) -> list[str]:
        return ["bird", "-f", "-c", str(self.config_path), "-s", str(self.socket_path),
                "-P", str(self.pid_path)]  # fmt: skip

    def birdc(self, *command: str) -> str:
        """``birdc -s SOCK COMMAND``'s output (birdc runs outside the namespace: the socket is
        a file)."""
        r = self._run("birdc", "-s", str(self.socket_path), *command)
        return r.stdout

    def _answers(self) -> bool:
        if not self.socket_path.exists():
            return False
        if "Daemon is up and running" not in self.birdc("show", "status"):
            return False
        shown = self.birdc("show", "protocols")
        return all(name in shown for name in self._protocols())

    def _apply(self) -> None:
        self.config_path.write_text(self.render())
        out = self.birdc("configure")
        if "Reconfigured" not in out and "Reconfiguration in progress" not in out:
            raise RuntimeError(f"birdc configure: {out.strip()}")

    def routes(self, prefix: str) -> list[SeenRoute]:
        net = _net(prefix)
        return self._parse_routes(self.birdc("show", "route", net, "all"), self._protocols())

    @staticmethod
    def _parse_routes(text: str, protocols: dict[str, str]) -> list[SeenRoute]:
        """``show route NET all``: a header line per path (``NET unicast [PROTO TIME] * ...``,
        the net left out after the first), then tab-indented attributes."""
        routes: list[dict[str, Any]] = []
        net = ""
        header = re.compile(r"^(\S+)?\s+\w+ \[(\S+) [^\]]*\](\s\*)?")
        for line in text.splitlines():
            if line.startswith("Table ") or line.startswith("BIRD "):
                continue
            m = header.match(line)
            if m and not line.startswith("\t"):
                net = m.group(1) or net
                routes.append({"prefix": net, "proto": m.group(2), "best": bool(m.group(3))})
            elif routes and line.startswith("\t"):
                key, _, value = line.strip().partition(": ")
                if key == "BGP.next_hop":
                    routes[-1]["next_hop"] = value.split()[0]  # IPv6: global [link-local]
                elif key == "BGP.med":
                    routes[-1]["med"] = int(value)
        return [
            SeenRoute(
                prefix=_net(r["prefix"]),
                next_hop=_norm(r.get("next_hop", "0.0.0.0")),
                med=r.get("med"),
                best=r["best"],
                from_peer=protocols.get(r["proto"], r["proto"]),
            )
            for r in routes
        ]

    def _show_protocols(self) -> dict[str, dict[str, str]]:
        """``show protocols all``: the BGP protocols' name -> their ``Key: value`` lines."""
        out: dict[str, dict[str, str]] = {}
        current: dict[str, str] | None = None
        for line in self.birdc("show", "protocols", "all").splitlines():
            if line and not line[0].isspace():
                cols = line.split()
                bgp = len(cols) > 1 and cols[1] == "BGP"
                current = out.setdefault(cols[0], {}) if bgp else None
            elif current is not None and ":" in line:
                key, _, value = line.strip().partition(":")
                current.setdefault(key, value.strip())
        return out

    def sessions(self) -> dict[str, str]:
        shown = self._show_protocols()
        out = {}
        for name, peer in self._protocols().items():
            state = shown.get(name, {}).get("BGP state", "Down").lower()
            out[peer] = state if state in STATES else "idle"
        return out

    def hold_time(self, peer: str) -> int | None:
        shown = self._show_protocols()
        for name, address in self._protocols().items():
            if address == _norm(peer):
                info = shown.get(name, {})
                if info.get("BGP state") == "Established" and "Hold timer" in info:
                    return int(info["Hold timer"].rpartition("/")[2])  # "4.982/6"
        return None

    def kernel_next_hops(self, prefix: str) -> list[str]:
        """The gateways r1's kernel forwards ``prefix`` to (several: ECMP), sorted."""
        net = _net(prefix)
        fam = "-6" if ":" in net else "-4"
        r = self._run("ip", fam, "-j", "-n", self.netns, "route", "show", "exact", net)
        hops: list[str] = []
        for route in json.loads(r.stdout or "[]"):
            if "gateway" in route:
                hops.append(route["gateway"])
            hops += [h["gateway"] for h in route.get("nexthops", []) if "gateway" in h]
        return sorted(_norm(h) for h in hops)


@dataclass
class GoBgp(Router):
    """GoBGP (r2): a RIB only, read through its gRPC API on 127.0.0.1:``api_port``."""

    api_port: int = GOBGP_API_PORT

    def render(self) -> str:
        p = self.peering
        q = json.dumps  # a TOML basic string, for the characters a Peering admits
        lines = [
            "# kubevipd lab router r2 (GoBGP): see kubevipd/lab/routers.py for what it relies on",
            "[global.config]",
            f"  as = {p.local_as}",
            f"  router-id = {q(self.address)}",
            f"  local-address-list = [{q(self.address)}, {q(self.address6)}]",
            "[global.apply-policy.config]",
            '  default-import-policy = "accept-route"',
            '  default-export-policy = "reject-route"',
            "[global.route-selection-options.config]",
            "  always-compare-med = false",
        ]
        for n in self.neighbours:
            for fam, mine, theirs, ok in (
                ("ipv4", self.address, n.ip, p.ipv4),
                ("ipv6", self.address6, n.ip6, p.ipv6),
            ):
                if not ok:
                    continue
                lines += [
                    "",
                    "[[neighbors]]",
                    "  [neighbors.config]",
                    f"    neighbor-address = {q(theirs)}",
                    f"    peer-as = {p.peer_as}",
                    f"    description = {q(n.name)}",
                ]
                lines += [f"    auth-password = {q(p.password)}"] if p.password else []
                lines += [
                    "  [neighbors.timers.config]",
                    f"    hold-time = {p.hold_time}",
                    f"    keepalive-interval = {p.hold_time // 3}",
                    "    connect-retry = 2",
                    "  [neighbors.transport.config]",
                    f"    local-address = {q(mine)}",
                    "  [[neighbors.afi-safis]]",
                    "    [neighbors.afi-safis.config]",
                    f'      afi-safi-name = "{fam}-unicast"',
                ]
        return "\n".join(lines) + "\n"

    def _argv(self) -> list[str]:
        return ["gobgpd", "-f", str(self.config_path), "-t", "toml", "-p", "-l", "info",
                "--api-hosts", f"127.0.0.1:{self.api_port}", "--pprof-disable"]  # fmt: skip

    def start(self, timeout: float = 10) -> None:
        super().start(timeout)
        assert self.proc is not None
        self.pid_path.write_text(f"{self.proc.pid}\n")  # gobgpd writes none; ip netns exec execs

    def gobgp(self, *command: str) -> Any:
        """``gobgp -p PORT COMMAND -j``, in r2's namespace, parsed (None if it failed)."""
        r = self._run(
            "ip", "netns", "exec", self.netns, "gobgp", "-u", "127.0.0.1",
            "-p", str(self.api_port), *command, "-j",
        )  # fmt: skip
        if r.returncode != 0 or not r.stdout.strip():
            return None
        with contextlib.suppress(ValueError):
            return json.loads(r.stdout)
        return None

    def _neighbors(self) -> list[dict[str, Any]]:
        return list(self.gobgp("neighbor") or [])

    def _answers(self) -> bool:
        known = {_norm(n["conf"]["neighbor_address"]) for n in self._neighbors()}
        return known >= set(self.peers())

    def _apply(self) -> None:
        self.stop()
        self.start()

    def routes(self, prefix: str) -> list[SeenRoute]:
        net = _net(prefix)
        family = "ipv6" if ":" in net else "ipv4"
        rib = self.gobgp("global", "rib", "-a", family, net) or {}
        return self._parse_rib(rib, net)

    @staticmethod
    def _parse_rib(rib: dict[str, list[dict[str, Any]]], net: str) -> list[SeenRoute]:
        """``global rib -a FAMILY NET -j``: ``{net: [path...]}``; a path's attributes by type
        code: 3 NEXT_HOP, 4 MULTI_EXIT_DISC, 14 MP_REACH_NLRI (IPv6's next hop)."""
        out = []
        for prefix, paths in rib.items():
            if _net(prefix) != net:
                continue
            for path in paths:
                attrs = {a["type"]: a for a in path.get("attrs", [])}
                hop = attrs.get(3, attrs.get(14, {})).get("nexthop", "0.0.0.0")
                med = attrs[4].get("metric", 0) if 4 in attrs else None
                out.append(
                    SeenRoute(
                        prefix=net,
                        next_hop=_norm(hop),
                        med=med,
                        best=bool(path.get("best", False)),
                        from_peer=_norm(path.get("neighbor-ip", "0.0.0.0")),
                    )
                )
        return out

    def sessions(self) -> dict[str, str]:
        out = dict.fromkeys(self.peers(), "idle")
        for n in self._neighbors():
            peer = _norm(n["conf"]["neighbor_address"])
            if peer in out:
                out[peer] = _GOBGP_STATES.get(n.get("state", {}).get("session_state", 0), "idle")
        return out

    def hold_time(self, peer: str) -> int | None:
        for n in self._neighbors():
            if _norm(n["conf"]["neighbor_address"]) == _norm(peer):
                if n.get("state", {}).get("session_state") != 6:
                    return None
                held = n.get("timers", {}).get("state", {}).get("negotiated_hold_time")
                return int(held) if held is not None else None
        return None
