"""The semantic checks of the sections after vip, and the build of the Config.

Checker runs the rules a JSON Schema cannot state well on the schema-valid sections: the
election's timings and server, the announce mode's section (BGP peers, Metal, secrets), the
health gate and metrics. build() reports every error at once and yields the Config only when
there is none.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from kubevipd.config.model import (
    BGP_PORT,
    MULTIHOP_TTL,
    TEN_SECONDS,
    THIRTY_SECONDS,
    AnnounceSpec,
    ArpSpec,
    BgpFamily,
    BgpPeer,
    BgpSpec,
    Config,
    Duration,
    ElectionSpec,
    HealthSpec,
    IPAddress,
    MetalSpec,
    MetricsSpec,
    SecretRef,
    VipSpec,
    default_election_server,
    default_health_url,
    vip_families,
)
from kubevipd.config.vip_checks import VipChecks, vip_named_by
from kubevipd.config.yaml_tree import FieldPath

_CLIENT_GO_JITTER = 1.2  # client-go: RenewDeadline must exceed JitterFactor * RetryPeriod


class Checker(VipChecks):
    """Rules a JSON Schema cannot state well, then conversion to the model."""

    def build(self, source: Path | None, skip: set[str]) -> Config | None:
        """The Config, or None when anything is wrong; sections in ``skip`` are not checked."""
        if skip:
            # Still check the sound sections, so every error is reported in one run.
            sound_vip = self._vip(self.doc["vip"]) if "vip" not in skip else None
            if "election" not in skip:
                self._election(self.doc.get("election", {}), sound_vip)
            if "announce" not in skip:
                self._announce(self.doc.get("announce", {"mode": "arp"}), None)
            if "metrics" not in skip:
                self._metrics(self.doc.get("metrics"))
            if "health" not in skip:
                self._health(self.doc.get("health", {}), sound_vip)
            return None
        vip = self._vip(self.doc["vip"])
        election = self._election(self.doc.get("election", {}), vip)
        announce = self._announce(self.doc.get("announce", {"mode": "arp"}), vip)
        metrics = self._metrics(self.doc.get("metrics"))
        health = self._health(self.doc.get("health", {}), vip)
        if self.errors or vip is None or election is None or announce is None or health is None:
            return None
        return Config(
            vip=vip,
            node_name=self.doc.get("node_name"),
            interface=self.doc.get("interface"),
            election=election,
            announce=announce,
            health=health,
            metrics=metrics,
            log_level=self.doc.get("log", {}).get("level", "info"),
            source=source,
        )

    # election -------------------------------------------------------------

    def _election(self, e: Mapping[str, Any], vip: VipSpec | None) -> ElectionSpec | None:
        base = ElectionSpec()
        lease = self._duration(("election", "lease_duration"), e.get("lease_duration"))
        renew = self._duration(("election", "renew_deadline"), e.get("renew_deadline"))
        retry = self._duration(("election", "retry_period"), e.get("retry_period"))
        lease = lease or base.lease_duration
        renew = renew or base.renew_deadline
        retry = retry or base.retry_period
        ok = True
        if lease <= renew:
            where = "renew_deadline" if "renew_deadline" in e else "lease_duration"
            self.error(
                ("election", where),
                f"lease_duration ({lease}) must be longer than "
                f"renew_deadline ({renew}), or two nodes could both believe they lead",
            )
            ok = False
        if renew <= retry * _CLIENT_GO_JITTER:
            where = "retry_period" if "retry_period" in e else "renew_deadline"
            self.error(
                ("election", where),
                f"renew_deadline ({renew}) must be longer than "
                f"1.2 x retry_period ({retry}), as client-go requires",
            )
            ok = False
        if "server" in e and vip is not None and not self._server_is_not_the_vip(e["server"], vip):
            ok = False
        backend = e.get("backend", "lease")
        if backend == "kubernetes":
            self.warn(
                ("election", "backend"),
                "kubernetes is the former name of lease: write backend: lease (same meaning)",
            )
            backend = "lease"
        if backend == "none" and not self._all_nodes_fits_the_mode():
            ok = False
        if not ok:
            return None
        return ElectionSpec(
            backend=backend,
            kubeconfig=Path(e.get("kubeconfig", str(base.kubeconfig))),
            server=e.get("server"),
            namespace=e.get("namespace", base.namespace),
            lease_name=e.get("lease_name", base.lease_name),
            lease_duration=lease,
            renew_deadline=renew,
            retry_period=retry,
        )

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
            f"where each node announces a route (ECMP); {why}: use backend lease",
        )
        return False

    def _server_is_not_the_vip(self, server: str, vip: VipSpec) -> bool:
        """False, with the error, when election.server's host is the VIP itself.

        Nobody holds the VIP at bootstrap, nor between a leader's crash and the next takeover:
        an election that goes through it could never elect anyone then.
        """
        try:
            parts = urlsplit(server)
            host = parts.hostname or ""
        except ValueError as e:  # e.g. an unclosed '[' the schema's pattern lets through
            self.error(
                ("election", "server"), f"must be a URL such as https://127.0.0.1:6443 ({e})"
            )
            return False
        shown = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"  # never a userinfo password
        what = vip_named_by(host, vip)
        if what is None:
            if parts.username is None and parts.password is None:
                return True
            self.error(
                ("election", "server"),
                f"{shown} must not carry a user or password (user:password@): the credentials "
                "come from election.kubeconfig, and the URL is printed in logs",
            )
            return False
        self.error(
            ("election", "server"),
            f"{shown} is {what}, which nobody holds at bootstrap or after a crash: the "
            "election must reach this node's own apiserver; remove election.server "
            f"(default {default_election_server(vip.port)}) or name a local address",
        )
        return False

    # announce -------------------------------------------------------------

    def _announce(self, a: Mapping[str, Any], vip: VipSpec | None) -> AnnounceSpec | None:
        mode = a["mode"]
        for other in ("arp", "bgp", "metal"):
            if other != mode and other in a:
                self.error(
                    ("announce", other),
                    f"is set, but announce.mode is {mode}: remove "
                    f"this section or set mode: {other}",
                    at_key=True,
                )
        if mode == "arp":
            refresh = self._duration(
                ("announce", "arp", "refresh"), a.get("arp", {}).get("refresh")
            )
            return AnnounceSpec(mode="arp", arp=ArpSpec(refresh or Duration(3000)))
        if mode not in a:
            self.error(("announce",), f"mode {mode} needs an announce.{mode} section", at_key=True)
            return None
        if mode == "bgp":
            bgp = self._bgp(a["bgp"], vip)
            return AnnounceSpec(mode="bgp", arp=None, bgp=bgp) if bgp else None
        metal = self._metal(a["metal"], vip)
        return AnnounceSpec(mode="metal", arp=None, metal=metal) if metal else None

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
        keepalive = keepalive or TEN_SECONDS
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
                f"{hold} is too short: a BGP hold time is at least 3s (RFC 4271)",
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

    def _metal(self, m: Mapping[str, Any], vip: VipSpec | None) -> MetalSpec | None:
        base: FieldPath = ("announce", "metal")
        if vip is not None and not vip.addresses:
            self.error(
                ("vip",),
                "announce mode metal moves an Elastic IP: set vip.address to "
                "it (dns and dhcp cannot be used with metal)",
                at_key=True,
            )
        token = self._secret(base, m, "token", required=True)
        if token is None:
            return None
        return MetalSpec(project_id=m["project_id"].lower(), token=token)

    def _secret(
        self, base: FieldPath, section: Mapping[str, Any], name: str, required: bool
    ) -> SecretRef | None:
        keys = {f"{name}_file": "file", f"{name}_credential": "credential", name: "inline"}
        given = [k for k in keys if k in section]
        if len(given) > 1:
            for extra in given[1:]:
                self.error(
                    (*base, extra),
                    f"conflicts with {given[0]}: give the {name} one way only",
                    at_key=True,
                )
            return None
        if not given:
            if required:
                self.error(
                    base,
                    f"needs {name}_file or {name}_credential (the {name} is never "
                    "read from anywhere else)",
                    at_key=True,
                )
            return None
        key = given[0]
        if keys[key] == "inline":
            self.warn(
                (*base, key),
                f"inline {name} in the config file: move it to {name}_file "
                f"(mode 0600) or a systemd credential ({name}_credential)",
            )
        return SecretRef(kind=keys[key], value=section[key])  # type: ignore[arg-type]

    # health ---------------------------------------------------------------

    def _health(self, h: Mapping[str, Any], vip: VipSpec | None) -> HealthSpec | None:
        base = HealthSpec()
        period = self._duration(("health", "period"), h.get("period")) or base.period
        timeout = self._duration(("health", "timeout"), h.get("timeout")) or base.timeout
        grace = self._duration(("health", "link_down_grace"), h.get("link_down_grace"))
        if timeout > period:
            where = "timeout" if "timeout" in h else "period"
            self.error(
                ("health", where),
                f"timeout ({timeout}) must not be longer than period ({period}), "
                "or checks would pile up",
            )
            return None
        url = h.get("url")
        if url is not None and vip is not None:
            try:
                what = vip_named_by(urlsplit(url).hostname or "", vip)
            except ValueError:
                what = None  # the schema's URL pattern reports it
            if what is not None:
                self.error(
                    ("health", "url"),
                    f"names {what}: the health gate must check this node's own apiserver, not "
                    f"whichever node holds the VIP; remove health.url (default "
                    f"{default_health_url(vip.port)})",
                )
                return None
        return HealthSpec(
            enabled=h.get("enabled", base.enabled),
            url=h.get("url", default_health_url(vip.port if vip else VipSpec().port)),
            ca_file=Path(h["ca_file"]) if "ca_file" in h else None,
            tls_server_name=h.get("tls_server_name"),
            period=period,
            timeout=timeout,
            failure_threshold=int(h.get("failure_threshold", base.failure_threshold)),
            success_threshold=int(h.get("success_threshold", base.success_threshold)),
            link_down_grace=grace or base.link_down_grace,
        )

    # metrics --------------------------------------------------------------

    def _metrics(self, m: Mapping[str, Any] | None) -> MetricsSpec | None:
        if m is None:
            return None
        listen = m["listen"]
        host, _, port = listen.rpartition(":")
        if not 1 <= int(port) <= 65535:
            self.error(("metrics", "listen"), f"port {port} is out of range (1 to 65535)")
        if host.startswith("["):
            try:
                ipaddress.IPv6Address(host[1:-1])
            except ValueError:
                self.error(("metrics", "listen"), f"{host} is not an IPv6 address")
        return MetricsSpec(listen=listen)


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
