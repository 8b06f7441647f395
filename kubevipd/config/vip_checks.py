"""The semantic checker's state and reporting, and the vip section's rules.

VipChecks collects errors and warnings at their positions and builds the VipSpec, which the
other sections' rules (checks.Checker) are checked against: vip_named_by() tells when a URL
names the VIP itself. unusable_reason() is the rule for what can be a virtual IP at all.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from kubevipd.config.errors import Diagnostic
from kubevipd.config.model import DhcpSource, DnsSource, Duration, IPAddress, SecretRef, VipSpec
from kubevipd.config.yaml_tree import FieldPath, field_name, position


class VipChecks:
    """The checker's state: what it checks, and the errors and warnings found so far."""

    def __init__(self, doc: Mapping[str, Any], root: Any, filename: str) -> None:
        self.doc = doc
        self.root = root
        self.filename = filename
        self.errors: list[Diagnostic] = []
        self.warnings: list[Diagnostic] = []

    def error(self, path: FieldPath, message: str, at_key: bool = False) -> None:
        line, col = position(self.root, path, at_key)
        self.errors.append(Diagnostic(self.filename, line, col, field_name(path), message))

    def warn(self, path: FieldPath, message: str) -> None:
        line, col = position(self.root, path, at_key=True)
        self.warnings.append(
            Diagnostic(self.filename, line, col, field_name(path), message, "warning")
        )

    def _duration(self, path: FieldPath, raw: str | float | None) -> Duration | None:
        if raw is None:
            return None
        try:
            return Duration.parse(raw)
        except ValueError as e:
            self.error(path, str(e))
            return None

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

    # vip ------------------------------------------------------------------

    def _vip(self, v: Mapping[str, Any]) -> VipSpec | None:
        sources = [k for k in ("address", "dns", "dhcp") if k in v]
        if not sources:
            self.error(("vip",), "needs exactly one of address, dns or dhcp", at_key=True)
            return None
        if len(sources) > 1:
            for extra in sources[1:]:
                self.error(
                    ("vip", extra),
                    f"conflicts with vip.{sources[0]}: set only one of address, dns or dhcp",
                    at_key=True,
                )
            return None
        port = int(v.get("port", 6443))
        prefix = v.get("prefix_length")
        # int(): the schema takes 24.0 as an integer, which the model must not carry as a float.
        prefixes = (
            tuple(int(p) for p in prefix)
            if isinstance(prefix, list)
            else ((int(prefix),) if prefix is not None else None)
        )
        if "address" in v:
            addresses = self._addresses(v["address"])
            if addresses is None:
                return None
            prefixes = self._prefixes(prefixes, tuple(a.version for a in addresses))
            return VipSpec(addresses=addresses, prefix_lengths=prefixes, port=port)
        if "dns" in v:
            d = v["dns"]
            family = d.get("family", "first")
            refresh = self._duration(("vip", "dns", "refresh"), d.get("refresh", "3s"))
            if prefixes is not None:
                if family == "first":
                    self.error(
                        ("vip", "prefix_length"),
                        "dns family 'first' may resolve to either "
                        "family: set vip.dns.family to ipv4, ipv6 or dual to give a prefix "
                        "length",
                    )
                    return None
                versions = {"ipv4": (4,), "ipv6": (6,), "dual": (4, 6)}[family]
                prefixes = self._prefixes(prefixes, versions)
            dns = DnsSource(name=d["name"], family=family, refresh=refresh or Duration(3000))
            return VipSpec(dns=dns, prefix_lengths=prefixes, port=port)
        h = v["dhcp"]
        if prefixes is not None:
            prefixes = self._prefixes(prefixes, (4,))
        dhcp = DhcpSource(hostname=h["hostname"], family=h.get("family", "ipv4"))
        return VipSpec(dhcp=dhcp, prefix_lengths=prefixes, port=port)

    def _addresses(self, raw: str | list[str]) -> tuple[IPAddress, ...] | None:
        items = raw if isinstance(raw, list) else [raw]
        base: FieldPath = ("vip", "address")
        out: list[IPAddress] = []
        for i, text in enumerate(items):
            path = (*base, i) if isinstance(raw, list) else base
            addr = ipaddress.ip_address(text)
            bad = unusable_reason(addr)
            if bad:
                self.error(path, f"{addr} is {bad} and cannot be a virtual IP")
                return None
            out.append(addr)
        if len(out) == 2 and out[0].version == out[1].version:
            self.error(
                base,
                "a dual-stack VIP needs one IPv4 and one IPv6 address, "
                f"not two IPv{out[0].version} addresses",
            )
            return None
        return tuple(out)

    def _prefixes(
        self, given: tuple[int, ...] | None, versions: tuple[int, ...]
    ) -> tuple[int, ...]:
        path: FieldPath = ("vip", "prefix_length")
        if given is None:
            return tuple(32 if ver == 4 else 128 for ver in versions)
        if len(given) != len(versions):
            self.error(
                path,
                f"gives {len(given)} prefix length(s) for {len(versions)} "
                "address(es): give one per address, in the same order",
            )
            return given
        for i, (plen, ver) in enumerate(zip(given, versions, strict=True)):
            top = 32 if ver == 4 else 128
            if plen > top:
                where = (
                    (*path, i)
                    if len(given) > 1 or isinstance(self.doc["vip"]["prefix_length"], list)
                    else path
                )
                self.error(where, f"{plen} does not fit IPv{ver} (0 to {top})")
        return given


def vip_named_by(host: str, vip: VipSpec) -> str | None:
    """How ``host`` (a URL's host name, without brackets) names the VIP, or None if it does not."""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        names = []
        if vip.dns is not None:
            names.append((vip.dns.name, "vip.dns.name"))
        if vip.dhcp is not None:
            names.append((vip.dhcp.hostname, "vip.dhcp.hostname"))
        for vip_name, label in names:
            if host.rstrip(".").lower() == vip_name.rstrip(".").lower():
                return f"the VIP's DNS name ({label})"
        return None
    mapped = addr.ipv4_mapped if isinstance(addr, ipaddress.IPv6Address) else None
    for vip_addr in vip.addresses:
        if addr == vip_addr or mapped == vip_addr:
            return "the VIP"
    return None


def unusable_reason(addr: IPAddress) -> str | None:
    """Why ``addr`` cannot be a virtual IP, or None when it can."""
    if addr.is_unspecified:
        return "the unspecified address"
    if addr.is_loopback:
        return "a loopback address"
    if addr.is_multicast:
        return "a multicast address"
    if addr.is_link_local:
        return "a link-local address"
    return None
