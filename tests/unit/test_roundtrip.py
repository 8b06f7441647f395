"""import(render(c)) == c for every valid config c that kube-vip can express (hypothesis).

Secrets travel through a DaemonSet's Secret by file name, so generated secrets live in
/etc/kubevip/, where import-manifest tells the operator to put them.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubevipd.config import load_text
from kubevipd.config.loader import unusable_reason
from kubevipd.manifest import ManifestError, RenderOptions, dump, import_manifest, render, to_yaml

names = st.from_regex(r"[a-z][a-z0-9-]{0,8}[a-z0-9]", fullmatch=True)
dns_names = st.builds(lambda a, b: f"{a}.{b}.example", names, names)


def usable(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Generate only what the loader accepts as a VIP: its own rule, so the two cannot drift."""
    return unusable_reason(addr) is None


v4 = st.ip_addresses(v=4).filter(usable).map(str)
v6 = st.ip_addresses(v=6).filter(usable).map(str)
seconds = st.integers(min_value=1, max_value=30)
secret_files = names.map(lambda n: f"/etc/kubevip/{n}.secret")


@st.composite
def vips(draw: st.DrawFn) -> dict[str, Any]:
    vip: dict[str, Any] = {}
    kind = draw(st.sampled_from(["v4", "v6", "dual", "dns", "dhcp"]))
    if kind == "v4":
        vip["address"] = draw(v4)
        if draw(st.booleans()):
            vip["prefix_length"] = draw(st.integers(0, 32))
    elif kind == "v6":
        vip["address"] = draw(v6)
        if draw(st.booleans()):
            vip["prefix_length"] = draw(st.integers(0, 128))
    elif kind == "dual":
        vip["address"] = [draw(v4), draw(v6)]
        if draw(st.booleans()):
            vip["prefix_length"] = [draw(st.integers(0, 32)), draw(st.integers(0, 128))]
    elif kind == "dns":
        family = draw(st.sampled_from(["first", "ipv4", "ipv6", "dual"]))
        vip["dns"] = {"name": draw(dns_names), "family": family}
        if family != "first" and draw(st.booleans()):
            vip["prefix_length"] = {"ipv4": 24, "ipv6": 64, "dual": [24, 64]}[family]
    else:
        vip["dhcp"] = {"hostname": draw(names)}
    if draw(st.booleans()):
        vip["port"] = draw(st.integers(1, 65535))
    return vip


@st.composite
def elections(draw: st.DrawFn) -> dict[str, Any]:
    retry = draw(seconds)
    renew = draw(st.integers(int(retry * 1.2) + 1, int(retry * 1.2) + 20))
    lease = draw(st.integers(renew + 1, renew + 30))
    e: dict[str, Any] = {
        "lease_duration": f"{lease}s",
        "renew_deadline": f"{renew}s",
        "retry_period": retry,
    }
    if draw(st.booleans()):
        e["namespace"] = draw(names)
    if draw(st.booleans()):
        e["lease_name"] = draw(names)
    if draw(st.booleans()):
        e["kubeconfig"] = draw(st.sampled_from(["/etc/rancher/k3s/k3s.yaml", "/root/kube.conf"]))
    return e


@st.composite
def announces(draw: st.DrawFn, vip: dict[str, Any]) -> dict[str, Any]:
    modes = ["arp", "bgp"] + (["metal"] if "address" in vip else [])
    mode = draw(st.sampled_from(modes))
    if mode == "arp":
        if draw(st.booleans()):
            return {"mode": "arp", "arp": {"refresh": f"{draw(st.integers(100, 60000))}ms"}}
        return {"mode": "arp"}
    if mode == "metal":
        uuid = draw(st.uuids()).hex
        uuid = f"{uuid[:8]}-{uuid[8:12]}-{uuid[12:16]}-{uuid[16:20]}-{uuid[20:]}"
        return {"mode": "metal", "metal": {"project_id": uuid, "token_file": draw(secret_files)}}
    addresses = draw(st.lists(st.one_of(v4, v6), min_size=1, max_size=4, unique=True))
    peers = []
    for addr in addresses:
        peer: dict[str, Any] = {"address": addr, "as": draw(st.integers(1, 2**32 - 1))}
        if draw(st.booleans()):
            # kube-vip sends every multihop session with TTL 50: the one it can express (any
            # other TTL renders with a note, and comes back as 50)
            peer["multihop"] = 50
        if draw(st.booleans()):
            peer["port"] = draw(st.integers(1, 65535))  # kube-vip parses it (and ignores it)
        if draw(st.booleans()):
            peer["password_file"] = draw(secret_files)
        peers.append(peer)
    bgp: dict[str, Any] = {}
    if draw(st.booleans()):
        bgp["router_id"] = draw(v4)
    else:
        bgp["router_interface"] = draw(st.sampled_from(["eth0", "ens192", "lo"]))
    bgp["local_as"] = draw(st.integers(1, 2**32 - 1))
    source = draw(st.sampled_from(["", "address", "interface"]))
    versions = {ipaddress.ip_address(a).version for a in addresses}
    if source == "address" and len(versions) == 1:
        bgp["source_address"] = draw(v4 if versions == {4} else v6)
    elif source == "interface":
        bgp["source_interface"] = draw(st.sampled_from(["eth1", "bond0.100"]))
    if draw(st.booleans()):
        hold = draw(st.integers(3, 300))
        bgp["hold_time"] = f"{hold}s"
        if draw(st.booleans()):  # else the default, a third of the hold time
            bgp["keepalive"] = draw(st.integers(1, hold // 3))
    bgp["peers"] = peers
    return {"mode": "bgp", "bgp": bgp}


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Any]:
    vip = draw(vips())
    doc: dict[str, Any] = {
        "vip": vip,
        "election": draw(elections()),
        "announce": draw(announces(vip)),
    }
    if doc["announce"]["mode"] == "bgp" and draw(st.booleans()):
        doc["election"]["backend"] = "none"  # kube-vip's BGP without leader election
    if draw(st.booleans()):
        doc["interface"] = draw(st.sampled_from(["eth0", "ens192", "bond0.100", "lo"]))
    if draw(st.booleans()):
        doc["node_name"] = draw(names)
    if draw(st.booleans()):
        doc["metrics"] = {
            "listen": draw(
                st.sampled_from(["127.0.0.1:2112", ":2112", "[::1]:9100", "0.0.0.0:8080"])
            )
        }
    if draw(st.booleans()):
        doc["log"] = {"level": draw(st.sampled_from(["debug", "info", "warning", "error"]))}
    return doc


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs(), st.booleans())
def test_import_of_render_is_the_config(doc: dict[str, Any], in_daemonset: bool) -> None:
    original = load_text(to_yaml(doc), "generated").config
    has_secrets = original.announce.mode == "metal" or any(
        p.password for p in (original.announce.bgp.peers if original.announce.bgp else ())
    )
    daemonset = has_secrets or (in_daemonset and original.node_name is None)
    kind = "daemonset" if daemonset else "pod"
    if has_secrets and original.node_name is not None:
        # A static pod cannot read a Secret and a DaemonSet cannot take a fixed node name:
        # kube-vip cannot express this without --include-secrets, and render must say which key.
        with pytest.raises(ManifestError) as raised:
            render(original, RenderOptions(kind=kind))
        assert raised.value.field == "node_name"
        return
    rendered = render(original, RenderOptions(kind=kind))
    manifest = dump(rendered.documents)
    back = load_text(to_yaml(import_manifest(manifest).config), "imported").config
    assert back == original
    # the health check, which kube-vip has no setting for, still follows the VIP's port
    assert back.health.url == f"https://127.0.0.1:{original.vip.port}/readyz"
