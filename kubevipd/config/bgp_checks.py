"""The rules of announce.bgp, and of election.backend none, which only BGP can carry.

BgpChecks adds them to the checker's state and reporting (vip_checks.VipChecks); checks.Checker
runs them with the other sections' rules. BGP's own rules are kept: a hold time of at least 3 s
(RFC 4271), whole seconds, a keepalive of at most a third of it; a session opened from an
address of the peer's family; a peer that learns at least one of the VIP's families.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any, Literal

from kubevipd.config.model import (
    BGP_PORT,
    MULTIHOP_TTL,
    THIRTY_SECONDS,
    BgpFamily,
    BgpPeer,
    BgpSpec,
    Duration,
    IPAddress,
    VipSpec,
    vip_families,
)
from kubevipd.config.vip_checks import VipChecks
from kubevipd.config.yaml_tree import FieldPath


class BgpChecks(VipChecks):
    def _all_nodes_fits_the_mode(self) -> bool:
        """False, with the error, when election.backend none meets a mode that one node only
        may announce: every node holding the VIP is BGP's ECMP, and a conflict anywhere else."""
        a = self.doc.get("announce", {"mode": "arp"})
        mode = a.get("mode") if isinstance(a, Mapping) else None
        if mode == "arp":
            why = (
                "with announce.mode arp every node would claim the VIP on one L2 segment, an "
                "address conflict"
            )
        elif mode == "metal":
            why = "with announce.mode metal the nodes would keep moving the Elastic IP"
        else:
            return True  # bgp, or a mode the schema reports
        self.error(
            ("election", "backend"),
            f"none (no election: every healthy node holds the VIP) needs announce.mode bgp, "
            f"where each node announces a route (ECMP); {why}: use backend kubernetes",
        )
        return False

    def _bgp(self, b: Mapping[str, Any], vip: VipSpec | None) -> BgpSpec | None:
        base: FieldPath = ("announce", "bgp")
        ok = True
        router_id, router_interface = self._router_id(b)
        if router_id is None and router_interface is None:
            ok = False
        source_address, source_interface = None, b.get("source_interface")
        if "source_address" in b:
            source_address = ipaddress.ip_address(b["source_address"])
            bad = _unusable_source(source_address)
            if bad:
                self.error((*base, "source_address"), f"{source_address} is {bad}")
                ok = False
            if "source_interface" in b:
                self.error(
                    (*base, "source_interface"),
                    "conflicts with source_address: give the source one way only",
                    at_key=True,
                )
                ok = False
        hold, keepalive = self._bgp_timers(b)
        if hold is None or keepalive is None:
            ok = False
        if not b["peers"]:
            self.error((*base, "peers"), "the peer list is empty: give at least one BGP peer")
            return None
        default_families = vip_families(vip) if vip is not None else None
        peers: list[BgpPeer] = []
        seen: set[IPAddress] = set()
        for i, p in enumerate(b["peers"]):
            ppath = (*base, "peers", i)
            addr = ipaddress.ip_address(p["address"])
            if addr in seen:
                self.error((*ppath, "address"), f"peer {addr} is listed twice")
                ok = False
            seen.add(addr)
            if source_address is not None and source_address.version != addr.version:
                self.error(
                    (*ppath, "address"),
                    f"peer {addr} is IPv{addr.version} but source_address {source_address} is "
                    f"IPv{source_address.version}: a session is opened from an address of the "
                    "peer's family (set source_interface instead, or leave the source out)",
                )
                ok = False
            families = self._families(ppath, p, vip, default_families)
            if families is False:
                ok = False
                families = None
            secret = self._secret(ppath, p, "password", required=False)
            peers.append(
                BgpPeer(
                    address=addr,
                    asn=int(p["as"]),
                    multihop_ttl=_multihop_ttl(p.get("multihop", False)),
                    password=secret,
                    port=int(p.get("port", BGP_PORT)),
                    families=families,
                )
            )
        if not ok or hold is None or keepalive is None:
            return None
        return BgpSpec(
            local_as=int(b["local_as"]),
            peers=tuple(peers),
            router_id=router_id,
            router_interface=router_interface,
            source_address=source_address,
            source_interface=source_interface,
            hold_time=hold,
            keepalive=keepalive,
        )

    def _router_id(self, b: Mapping[str, Any]) -> tuple[ipaddress.IPv4Address | None, str | None]:
        """(router_id, router_interface), exactly one of them set; (None, None) on an error."""
        base: FieldPath = ("announce", "bgp")
        if "router_id" in b and "router_interface" in b:
            self.error(
                (*base, "router_interface"),
                "conflicts with router_id: give the router ID one way only (router_interface "
                "takes it from the interface's IPv4 address)",
                at_key=True,
            )
            return None, None
        if "router_interface" in b:
            return None, b["router_interface"]
        if "router_id" not in b:
            self.error(
                base,
                "needs router_id (an IPv4 address, usually the node's) or router_interface (an "
                "interface whose IPv4 address becomes the router ID)",
                at_key=True,
            )
            return None, None
        router_id = ipaddress.IPv4Address(b["router_id"])
        if router_id.is_unspecified:
            self.error(
                (*base, "router_id"), "0.0.0.0 is not a BGP router ID: use this node's IPv4 address"
            )
            return None, None
        return router_id, None

    def _bgp_timers(self, b: Mapping[str, Any]) -> tuple[Duration | None, Duration | None]:
        """hold_time and keepalive, checked against BGP's rules; None for one that is wrong."""
        base: FieldPath = ("announce", "bgp")
        hold = self._duration((*base, "hold_time"), b.get("hold_time"))
        keepalive = self._duration((*base, "keepalive"), b.get("keepalive"))
        if ("hold_time" in b and hold is None) or ("keepalive" in b and keepalive is None):
            return None, None
        hold = hold or THIRTY_SECONDS
        # Default: a third of the hold time, as BIRD, FRR, GoBGP and ExaBGP take it (10s for
        # the default 30s, kube-vip's).
        keepalive = keepalive or Duration(max(1, hold // 3000) * 1000)
        for key, value in (("hold_time", hold), ("keepalive", keepalive)):
            if value % 1000:
                self.error(
                    (*base, key),
                    f"{value} is not a whole number of seconds: BGP carries its timers in seconds",
                )
                return None, None
        if hold < 3000:
            self.error(
                (*base, "hold_time"),
                f"{hold} is too short: a BGP hold time is 0 or at least 3s (RFC 4271), and "
                "kubevipd needs one (at least 3s)",
            )
            return None, None
        if hold > 65_535_000:
            self.error(
                (*base, "hold_time"),
                f"{hold} is too long: a BGP hold time is at most 65535s (a 16-bit field)",
            )
            return None, None
        if keepalive < 1000 or keepalive * 3 > hold:
            where = "keepalive" if "keepalive" in b else "hold_time"
            self.error(
                (*base, where),
                f"keepalive ({keepalive}) must be from 1s to hold_time / 3 "
                f"({Duration(hold // 3000 * 1000)} for hold_time {hold}), the BGP rule of "
                "thumb: three keepalives may be lost before the session drops",
            )
            return None, None
        return hold, keepalive

    def _families(
        self,
        ppath: FieldPath,
        p: Mapping[str, Any],
        vip: VipSpec | None,
        default: tuple[BgpFamily, ...] | None,
    ) -> tuple[BgpFamily, ...] | Literal[False] | None:
        """The peer's families (the VIP's by default); False, with the error, when a given list
        carries none of the VIP's families, so the peer would learn no route."""
        if "families" not in p:
            return default
        given = tuple(sorted(p["families"]))  # ipv4 first, so order does not change meaning
        if vip is not None and default is not None and not set(given) & set(default):
            names = ", ".join(default)
            self.error(
                (*ppath, "families"),
                f"lists none of the VIP's families ({names}): this peer would learn no route",
            )
            return False
        return given


def _multihop_ttl(value: bool | int) -> int | None:
    """multihop as the model carries it: None for false, 255 for true, else the TTL given."""
    if isinstance(value, bool):
        return MULTIHOP_TTL if value else None
    return int(value)


def _unusable_source(addr: IPAddress) -> str | None:
    """Why ``addr`` cannot be the source of a BGP session, or None when it can."""
    if addr.is_unspecified:
        return "the unspecified address: leave source_address out for the kernel's choice"
    if addr.is_multicast:
        return "a multicast address, which cannot open a TCP session"
    return None
