"""Typed, frozen view of /etc/kubevip.yaml.

The loader builds these objects only from a document that passed the schema and the semantic
checks, so the rest of kubevipd never sees a half-valid config. Defaults are filled in here, so two
files that mean the same thing give equal objects (import-manifest's round trip relies on it).
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_CONFIG_PATH = Path("/etc/kubevip.yaml")

_DURATION_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
# No timing of kubevipd needs more; beyond it, a number stops being a duration the daemon can
# wait for (1e308s overflows, a Lease counts its seconds in an int32).
MAX_DURATION_MS = 24 * 3_600_000


class Duration(int):
    """A duration in whole milliseconds; an int so equality and hashing are exact."""

    @classmethod
    def parse(cls, value: str | int | float) -> Duration:
        """Parse ``500ms``, ``5s``, ``1m``, ``2h`` or a number of seconds.

        Raises ValueError for anything else, or for a value that is not a whole number of ms.
        """
        if isinstance(value, bool):
            raise ValueError("a duration is not a boolean")
        if isinstance(value, int | float):
            ms = value * 1000
        else:
            m = _DURATION_RE.match(value.strip())
            if not m:
                raise ValueError(f"{value!r} is not a duration such as 500ms, 5s or 1m")
            ms = float(m.group(1)) * _UNIT_MS[m.group(2)]
        if isinstance(ms, float) and math.isnan(ms):
            raise ValueError("a duration must be a number, not NaN")
        if ms <= 0:
            raise ValueError("a duration must be greater than zero")
        # Compared before any rounding: 1e308 s, .inf or 400 digits of seconds overflow there.
        if ms > MAX_DURATION_MS:
            raise ValueError(f"a duration must be at most {cls(MAX_DURATION_MS)}")
        if abs(ms - round(ms)) > 1e-6:
            raise ValueError("a duration must be a whole number of milliseconds")
        return cls(round(ms))

    @property
    def seconds(self) -> float:
        return self / 1000

    def __str__(self) -> str:
        ms = int(self)
        if ms % 3_600_000 == 0:
            return f"{ms // 3_600_000}h"
        if ms % 60_000 == 0:
            return f"{ms // 60_000}m"
        if ms % 1000 == 0:
            return f"{ms // 1000}s"
        return f"{ms}ms"

    def __repr__(self) -> str:
        return f"Duration({self})"


# Immutable defaults (Duration is an int), named so the dataclasses below read as the docs do.
ONE_SECOND = Duration(1000)
THREE_SECONDS = Duration(3000)
FIVE_SECONDS = Duration(5000)

SecretKind = Literal["file", "credential", "inline"]


@dataclass(frozen=True)
class SecretRef:
    """Where a secret comes from. An inline value never appears in repr() or str()."""

    kind: SecretKind
    value: str = field(repr=False)

    def describe(self) -> str:
        """A log-safe description: the path or credential name, never the secret itself."""
        if self.kind == "file":
            return f"file {self.value}"
        if self.kind == "credential":
            return f"systemd credential {self.value}"
        return "inline value"

    def __repr__(self) -> str:
        return f"SecretRef({self.describe()})"

    __str__ = __repr__


@dataclass(frozen=True)
class DnsSource:
    name: str
    family: Literal["first", "ipv4", "ipv6", "dual"] = "first"
    refresh: Duration = THREE_SECONDS


@dataclass(frozen=True)
class DhcpSource:
    hostname: str
    family: Literal["ipv4"] = "ipv4"


@dataclass(frozen=True)
class VipSpec:
    """Exactly one of ``addresses`` (non-empty), ``dns`` or ``dhcp`` is set."""

    addresses: tuple[IPAddress, ...] = ()
    dns: DnsSource | None = None
    dhcp: DhcpSource | None = None
    # One prefix length per address; for dns/dhcp only what the file set (None: family default).
    prefix_lengths: tuple[int, ...] | None = None
    port: int = 6443


def default_election_server(port: int) -> str:
    """The apiserver the election uses when election.server is unset: this node's own.

    Never the VIP, which nobody holds at bootstrap or after a crash. kubeadm's certificate does
    not name 127.0.0.1, so the name verified is ``kubernetes``; the kubeconfig gives only the
    credentials and the CA.
    """
    return f"https://127.0.0.1:{port}"


def default_health_url(port: int) -> str:
    """health.url when unset: the readiness of this node's apiserver, on the VIP's port."""
    return f"{default_election_server(port)}/readyz"


@dataclass(frozen=True)
class ElectionSpec:
    # kubernetes: the holder of a Kubernetes Lease holds the VIP. none: every healthy node does
    # (BGP's ECMP only).
    backend: Literal["kubernetes", "none"] = "kubernetes"
    # Only credentials and the CA come from it, never the apiserver's address.
    kubeconfig: Path = Path("/etc/kubernetes/admin.conf")
    # None: this node's own apiserver, default_election_server(vip.port). Never the VIP.
    server: str | None = None
    namespace: str = "kube-system"
    lease_name: str = "plndr-cp-lock"
    lease_duration: Duration = FIVE_SECONDS
    renew_deadline: Duration = THREE_SECONDS
    retry_period: Duration = ONE_SECOND


@dataclass(frozen=True)
class ArpSpec:
    refresh: Duration = THREE_SECONDS


BgpFamily = Literal["ipv4-unicast", "ipv6-unicast"]
BGP_PORT = 179
MULTIHOP_TTL = 255  # what ``multihop: true`` means, as FRR's ebgp-multihop without a number
THIRTY_SECONDS = Duration(30_000)
TEN_SECONDS = Duration(10_000)


def bgp_family(version: int) -> BgpFamily:
    """The unicast family that carries addresses of IP ``version`` (4 or 6)."""
    return "ipv4-unicast" if version == 4 else "ipv6-unicast"


def vip_families(vip: VipSpec) -> tuple[BgpFamily, ...] | None:
    """The BGP families of the VIP's addresses, in order; None when only the DNS answer at run
    time tells (vip.dns.family first)."""
    if vip.addresses:
        versions: tuple[int, ...] = tuple(a.version for a in vip.addresses)
    elif vip.dns is not None:
        if vip.dns.family == "first":
            return None
        versions = {"ipv4": (4,), "ipv6": (6,), "dual": (4, 6)}[vip.dns.family]
    else:
        versions = (4,)  # DHCP leases IPv4 only
    return tuple(bgp_family(v) for v in versions)


@dataclass(frozen=True)
class BgpPeer:
    address: IPAddress
    asn: int
    # The TTL of an eBGP multihop session; None for a directly connected peer (TTL 1).
    multihop_ttl: int | None = None
    password: SecretRef | None = None
    port: int = BGP_PORT
    # None only when the VIP's families are known at run time alone (vip.dns.family first):
    # the loader fills in the VIP's families as the default otherwise.
    families: tuple[BgpFamily, ...] | None = None

    @property
    def multihop(self) -> bool:
        return self.multihop_ttl is not None


@dataclass(frozen=True)
class BgpSpec:
    """Exactly one of ``router_id`` and ``router_interface`` is set; at most one of
    ``source_address`` and ``source_interface``."""

    local_as: int
    peers: tuple[BgpPeer, ...]
    router_id: ipaddress.IPv4Address | None = None
    # The interface whose IPv4 address becomes the router ID, read when the daemon starts.
    router_interface: str | None = None
    source_address: IPAddress | None = None
    source_interface: str | None = None
    hold_time: Duration = THIRTY_SECONDS  # whole seconds, at least 3s
    keepalive: Duration = TEN_SECONDS  # whole seconds, 1s to hold_time / 3


@dataclass(frozen=True)
class MetalSpec:
    project_id: str
    token: SecretRef


AnnounceMode = Literal["arp", "bgp", "metal"]


@dataclass(frozen=True)
class AnnounceSpec:
    """``mode`` names the one section that is set."""

    mode: AnnounceMode = "arp"
    arp: ArpSpec | None = field(default_factory=ArpSpec)
    bgp: BgpSpec | None = None
    metal: MetalSpec | None = None


@dataclass(frozen=True)
class HealthSpec:
    """The health gate on the local apiserver (kube-vip has none in ARP mode)."""

    enabled: bool = True
    # The loader fills in default_health_url(vip.port) when the file sets no url.
    url: str = default_health_url(6443)
    # None: the CA of the election kubeconfig.
    ca_file: Path | None = None
    # None: "kubernetes" for a loopback URL (see kubevipd.health.tls_name), else the URL's host.
    tls_server_name: str | None = None
    period: Duration = ONE_SECOND
    timeout: Duration = ONE_SECOND
    failure_threshold: int = 3
    success_threshold: int = 1
    link_down_grace: Duration = ONE_SECOND


@dataclass(frozen=True)
class MetricsSpec:
    listen: str


LogLevel = Literal["debug", "info", "warning", "error"]


@dataclass(frozen=True)
class Config:
    vip: VipSpec
    node_name: str | None = None
    interface: str | None = None
    election: ElectionSpec = field(default_factory=ElectionSpec)
    announce: AnnounceSpec = field(default_factory=AnnounceSpec)
    health: HealthSpec = field(default_factory=HealthSpec)
    metrics: MetricsSpec | None = None
    log_level: LogLevel = "info"
    # Where the config came from: for messages only, not part of its meaning.
    source: Path | None = field(default=None, compare=False)


def not_supported_yet(cfg: Config) -> tuple[tuple[tuple[str, ...], str], ...]:
    """What this version of the daemon cannot run, as (field path, message) pairs.

    Such a config is valid (render-manifest and import-manifest take it, as kube-vip would), but
    ``kubevipd run`` refuses it, and ``check-config`` says so: both ask this one function.
    """
    found: list[tuple[tuple[str, ...], str]] = []
    if cfg.vip.dns is not None:
        found.append((("vip", "dns"), "a VIP from DNS " + _NOT_YET + " (set vip.address)"))
    if cfg.vip.dhcp is not None:
        found.append((("vip", "dhcp"), "a VIP from DHCP " + _NOT_YET + " (set vip.address)"))
    if cfg.announce.mode == "metal":
        found.append((("announce", "mode"), f"metal {_NOT_YET} (it runs arp and bgp)"))
    return tuple(found)


_NOT_YET = "is not supported by this version of kubevipd yet"
