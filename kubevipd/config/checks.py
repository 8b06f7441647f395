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
from typing import Any
from urllib.parse import urlsplit

from kubevipd.config.bgp_checks import BgpChecks
from kubevipd.config.model import (
    AnnounceSpec,
    ArpSpec,
    Config,
    Duration,
    ElectionSpec,
    HealthSpec,
    MetalSpec,
    MetricsSpec,
    VipSpec,
    default_election_server,
    default_health_url,
)
from kubevipd.config.vip_checks import vip_named_by
from kubevipd.config.yaml_tree import FieldPath

_CLIENT_GO_JITTER = 1.2  # client-go: RenewDeadline must exceed JitterFactor * RetryPeriod


class Checker(BgpChecks):
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
            # BGP's VIP is routed: unset, it goes on the loopback (and a rendered kube-vip
            # manifest says so, since kube-vip would pick the default route's interface).
            interface=self.doc.get("interface") or ("lo" if announce.mode == "bgp" else None),
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
        backend = e.get("backend", "kubernetes")
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
