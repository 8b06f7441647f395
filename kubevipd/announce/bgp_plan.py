"""What the BGP sessions are, resolved on this host at start: addresses, next hops, router ID.

The config names peers and, optionally, a source address or interface; the session needs a
local address per peer (ExaBGP 4.2 refuses a neighbour without one), the route an explicit next
hop per family (Debian's 4.2.21 can drop ``next-hop self``, exabgp#1153), and a router ID.
They come from the kernel, as the router would see them: the source address of the route to
the peer, an address of the same interface for the other family. Read once, with one netlink
socket, so a bad setting fails the start with one line naming it.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field

from pyroute2 import IPRoute

from kubevipd.config.model import BgpFamily, BgpSpec, IPAddress, bgp_family
from kubevipd.config.secrets import SecretError, read_secret
from kubevipd.vip.model import Vip, address_family


class PlanError(Exception):
    """A BGP setting cannot be used on this host; the message names it."""


@dataclass(frozen=True)
class PeerPlan:
    address: IPAddress
    asn: int
    port: int
    local_address: IPAddress
    families: tuple[BgpFamily, ...]
    # The next hop announced for each IP version of the VIP (4, 6) on this session.
    next_hops: dict[int, IPAddress]
    multihop_ttl: int | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        """How log lines and the status name the peer (never with its password)."""
        port = "" if self.port == 179 else f" port {self.port}"
        return f"{self.address}{port} (AS {self.asn})"


@dataclass(frozen=True)
class Plan:
    local_as: int
    router_id: ipaddress.IPv4Address
    hold_time: int
    peers: tuple[PeerPlan, ...]


def _addresses(ipr: IPRoute, index: int, family: int) -> list[IPAddress]:
    """The interface's global addresses of ``family`` (link-local ones cannot be next hops)."""
    out: list[IPAddress] = []
    for a in ipr.get_addr(index=index, family=family):
        if a.get("scope", 0) != 0:
            continue
        addr = ipaddress.ip_address(a.get_attr("IFA_ADDRESS"))
        if not addr.is_link_local:
            out.append(addr)
    return out


def _index(ipr: IPRoute, ifname: str, what: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise PlanError(f"{what}: interface {ifname} does not exist")
    return int(found[0])


def _route_to(ipr: IPRoute, peer: IPAddress) -> tuple[int, IPAddress | None]:
    """The interface and source address the kernel would use to reach ``peer``."""
    family = address_family(peer.version)
    try:
        routes = ipr.route("get", dst=str(peer), family=family)
    except Exception as e:  # pyroute2 raises NetlinkError (an OSError) or its own errors
        raise PlanError(f"announce.bgp.peers: no route to {peer} ({e})") from None
    if not routes:
        raise PlanError(f"announce.bgp.peers: no route to {peer}")
    oif = int(routes[0].get_attr("RTA_OIF") or 0)
    src = routes[0].get_attr("RTA_PREFSRC")
    return oif, (ipaddress.ip_address(src) if src else None)


def resolve(spec: BgpSpec, vips: list[Vip], ipr: IPRoute | None = None) -> Plan:
    """The sessions as they will run on this host; raises PlanError naming the setting."""
    own = ipr is None
    ipr = ipr or IPRoute()
    try:
        return _resolve(spec, vips, ipr)
    finally:
        if own:
            ipr.close()


def _resolve(spec: BgpSpec, vips: list[Vip], ipr: IPRoute) -> Plan:
    source_index = (
        _index(ipr, spec.source_interface, "announce.bgp.source_interface")
        if spec.source_interface
        else None
    )
    versions = sorted({v.address.version for v in vips})
    peers: list[PeerPlan] = []
    for p in spec.peers:
        oif, src = _route_to(ipr, p.address)
        if spec.source_address is not None:
            local: IPAddress | None = (
                spec.source_address if spec.source_address.version == p.address.version else None
            )
            if local is None:
                raise PlanError(
                    f"announce.bgp.source_address {spec.source_address} is IPv"
                    f"{spec.source_address.version}, peer {p.address} is IPv{p.address.version}"
                )
        elif source_index is not None:
            own = _addresses(ipr, source_index, address_family(p.address.version))
            if not own:
                raise PlanError(
                    f"announce.bgp.source_interface {spec.source_interface} has no IPv"
                    f"{p.address.version} address for peer {p.address}"
                )
            local, oif = own[0], source_index
        else:
            local = src
            if local is None:
                raise PlanError(
                    f"announce.bgp.peers: no source address for the route to {p.address}"
                )
        hops: dict[int, IPAddress] = {}
        families = p.families or tuple(bgp_family(v) for v in versions)
        for version in versions:
            if bgp_family(version) not in families:
                continue  # not announced on this session: no next hop needed
            if version == local.version:
                hops[version] = local
                continue
            other = _addresses(ipr, oif, address_family(version))
            if not other:
                raise PlanError(
                    f"announce.bgp.peers: the VIP has an IPv{version} address, and the session "
                    f"to {p.address} is IPv{local.version}: its interface needs a global IPv"
                    f"{version} address for the next hop (or list only "
                    f"ipv{local.version}-unicast in the peer's families)"
                )
            hops[version] = other[0]
        try:
            password = read_secret(p.password) if p.password is not None else None
        except SecretError as e:
            raise PlanError(f"announce.bgp.peers ({p.address}): {e}") from None
        peers.append(
            PeerPlan(
                address=p.address,
                asn=p.asn,
                port=p.port,
                local_address=local,
                families=tuple(families),
                next_hops=hops,
                multihop_ttl=p.multihop_ttl,
                password=password,
            )
        )
    return Plan(
        local_as=spec.local_as,
        router_id=_router_id(spec, ipr, peers),
        hold_time=int(spec.hold_time.seconds),
        peers=tuple(peers),
    )


def _router_id(spec: BgpSpec, ipr: IPRoute, peers: list[PeerPlan]) -> ipaddress.IPv4Address:
    if spec.router_id is not None:
        return spec.router_id
    if spec.router_interface:
        index = _index(ipr, spec.router_interface, "announce.bgp.router_interface")
        found = _addresses(ipr, index, socket.AF_INET)
        if not found:
            raise PlanError(
                f"announce.bgp.router_interface {spec.router_interface} has no IPv4 address "
                "to take the router ID from: set announce.bgp.router_id"
            )
        return ipaddress.IPv4Address(found[0])
    for p in peers:  # the schema requires one of the two; this is for a hand-built spec
        if p.local_address.version == 4:
            return ipaddress.IPv4Address(p.local_address)
    raise PlanError("announce.bgp.router_id is needed: no IPv4 session to take it from")
