"""How the main loop turns the config into what the daemon uses (no I/O beyond the environment)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from kubevipd import parts
from kubevipd.announce.base import AnnouncerEnv
from kubevipd.config import load_text
from kubevipd.parts import timings
from kubevipd.resolve import RunError, election_spec, resolve_identity, resolve_vips
from kubevipd.vip.model import Vip


def cfg(text: str):  # type: ignore[no-untyped-def]
    return load_text(text).config


def test_the_kubeconfig_credential_wins_over_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = cfg("vip: {address: 192.0.2.75}\n")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.delenv("KUBEVIPD_KUBECONFIG_DIR", raising=False)
    assert election_spec(c).kubeconfig == Path("/etc/kubernetes/admin.conf")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert election_spec(c).kubeconfig == Path("/etc/kubernetes/admin.conf")  # none given
    (tmp_path / "kubeconfig").write_text("x")
    assert election_spec(c).kubeconfig == tmp_path / "kubeconfig"
    assert election_spec(c).lease_name == "plndr-cp-lock"


def test_the_non_root_daemon_reads_the_copy_of_the_kubeconfig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = cfg("vip: {address: 192.0.2.75}\n")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.setenv("KUBEVIPD_KUBECONFIG_DIR", "/run/kubevipd-kubeconfig")
    # Same file name, so kubeadm's super-admin.conf fallback is looked for beside the copy.
    assert election_spec(c).kubeconfig == Path("/run/kubevipd-kubeconfig/admin.conf")
    k3s = cfg("vip: {address: 192.0.2.75}\nelection: {kubeconfig: /etc/rancher/k3s/k3s.yaml}\n")
    assert election_spec(k3s).kubeconfig == Path("/run/kubevipd-kubeconfig/k3s.yaml")
    # A systemd credential still wins.
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    (tmp_path / "kubeconfig").write_text("x")
    assert election_spec(c).kubeconfig == tmp_path / "kubeconfig"


def test_vips_take_the_family_default_prefix_or_the_configured_one() -> None:
    c = cfg('vip: {address: [192.0.2.75, "fd00::75"]}\n')
    assert resolve_vips(c) == [
        Vip(ipaddress.ip_address("192.0.2.75"), 32),
        Vip(ipaddress.ip_address("fd00::75"), 128),
    ]
    c = cfg("vip: {address: 192.0.2.75, prefix_length: 24}\n")
    assert resolve_vips(c)[0].prefixlen == 24


def test_a_vip_from_dns_is_refused_for_now() -> None:
    with pytest.raises(RunError, match="not supported by this version"):
        resolve_vips(cfg("vip: {dns: {name: cp.example.com}}\n"))


def test_identity_defaults_to_the_short_lower_case_host_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "CP1.Example.COM")
    assert resolve_identity(cfg("vip: {address: 192.0.2.75}\n")) == "cp1"
    assert resolve_identity(cfg("node_name: cp7\nvip: {address: 192.0.2.75}\n")) == "cp7"


def test_timings_come_from_election_health_and_announce() -> None:
    t = timings(
        cfg(
            "vip: {address: 192.0.2.75}\n"
            "election: {lease_duration: 2s, renew_deadline: 1500ms, retry_period: 500ms}\n"
            "health: {enabled: false, link_down_grace: 250ms}\n"
            "announce: {mode: arp, arp: {refresh: 10s}}\n"
        )
    )
    assert (t.lease_duration, t.renew_deadline, t.retry_period) == (2.0, 1.5, 0.5)
    assert t.link_down_grace == 0.25 and not t.health_gate
    assert t.api_timeout == 0.5


def test_the_announcer_is_chosen_by_announce_mode_and_takes_its_refresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[tuple[object, ...]] = []
    monkeypatch.setattr(parts, "ArpAnnouncer", lambda *a: made.append(a) or "arp")
    c = cfg("vip: {address: 192.0.2.75}\nannounce: {mode: arp, arp: {refresh: 10s}}\n")
    vips = [Vip(ipaddress.ip_address("192.0.2.75"), 32)]
    link = type("Link", (), {"mac": lambda self: "02:00:00:00:00:01"})()
    env = AnnouncerEnv(Path("."))
    assert parts.build_announcer(c, "eth0", link, vips, env) == "arp"
    assert made == [("eth0", "02:00:00:00:00:01", vips, 10.0)]
