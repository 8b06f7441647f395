"""The election talks to this node's own apiserver, never to the kubeconfig's server (the VIP)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubevipd.config import load_text
from kubevipd.resolve import election_spec


def spec(text: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.delenv("KUBEVIPD_KUBECONFIG_DIR", raising=False)
    return election_spec(load_text(text).config)


def test_the_default_server_is_this_nodes_apiserver(monkeypatch: pytest.MonkeyPatch) -> None:
    assert spec("vip: {address: 192.0.2.75}\n", monkeypatch).server == "https://127.0.0.1:6443"
    assert (
        spec("vip: {address: 192.0.2.75, port: 8443}\n", monkeypatch).server
        == "https://127.0.0.1:8443"
    )
    k3s = "vip: {address: 192.0.2.75}\nelection: {kubeconfig: /etc/rancher/k3s/k3s.yaml}\n"
    assert spec(k3s, monkeypatch).server == "https://127.0.0.1:6443"


def test_election_server_still_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "vip: {address: 192.0.2.75}\nelection: {server: 'https://192.0.2.11:6443'}\n"
    assert spec(text, monkeypatch).server == "https://192.0.2.11:6443"


def test_a_kubeadm_kubeconfig_naming_the_vip_is_used_for_credentials_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """admin.conf names https://VIP:6443; the client must go to 127.0.0.1 and verify the
    certificate against "kubernetes", which kubeadm's certificate carries (127.0.0.1 it does
    not)."""
    from kubevipd.election.lease import LeaseElection
    from kubevipd.lab.pki import make_pki, write_kubeconfig

    pki = make_pki(tmp_path / "pki", ["192.0.2.75"], ("kubernetes",), loopback=False)
    kc = write_kubeconfig(tmp_path / "admin.conf", "https://192.0.2.75:6443", pki, "t")
    text = f"vip: {{address: 192.0.2.75}}\nelection: {{kubeconfig: {kc}}}\n"
    e = LeaseElection(spec(text, monkeypatch), "n1")
    try:
        assert e.describe() == "Lease kube-system/plndr-cp-lock at https://127.0.0.1:6443"
        cfg = e._primary.api_client.configuration
        assert cfg.host == "https://127.0.0.1:6443" and cfg.assert_hostname == "kubernetes"
        # Newer clients refresh a token user's settings before every request, host included.
        for _ in range(3):  # every request calls it
            hook = getattr(cfg, "refresh_api_key_hook", None)
            if hook is not None:
                hook(cfg)
            assert cfg.host == "https://127.0.0.1:6443", "the kubeconfig's server came back"
        assert cfg.api_key == {"authorization": "Bearer t"} or "t" in str(cfg.api_key)
    finally:
        e.close()


def test_an_election_server_name_that_resolves_to_the_vip_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """kubeadm's docs suggest a DNS name as the control-plane endpoint; copied from admin.conf
    into election.server, it would elect through the VIP."""
    import socket

    from kubevipd.resolve import RunError, check_server_is_not_the_vip, resolve_vips

    def fake(host: str, port: object) -> list[tuple[object, ...]]:
        ip = {"cp.example.com": "192.0.2.75", "n2.example.com": "192.0.2.12"}[host]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, 0))]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    for host, refused in (("cp.example.com", True), ("n2.example.com", False)):
        c = load_text(
            f"vip: {{address: 192.0.2.75}}\nelection: {{server: 'https://{host}:6443'}}\n"
        ).config
        if refused:
            with pytest.raises(RunError, match=r"election.server cp.example.com resolves to the"):
                check_server_is_not_the_vip(c, resolve_vips(c))
        else:
            check_server_is_not_the_vip(c, resolve_vips(c))
