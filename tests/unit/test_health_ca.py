"""With no election (all-nodes mode), the health check still trusts the election kubeconfig's
CA, as ``health.ca_file``'s default says: read from the kubeconfig, waited for while kubeadm
has not written it, and never replaced by the system's CAs meanwhile."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubevipd.config import load_text
from kubevipd.connect import ElectionConnector
from kubevipd.election.client import ElectionSetupError, kubeconfig_ca
from kubevipd.lab.pki import make_pki, write_kubeconfig


def no_election(spec: Any, identity: str) -> Any:
    raise AssertionError("no election client is made for the CA")


def config(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.delenv("KUBEVIPD_KUBECONFIG_DIR", raising=False)
    text = (
        "vip: {address: 192.0.2.75}\n"
        "announce: {mode: bgp, bgp: {local_as: 65001, router_id: 192.0.2.11,"
        " peers: [{address: 192.0.2.1, as: 65000}]}}\n"
        f"election: {{backend: none, kubeconfig: {kubeconfig}}}\n"
    )
    return load_text(text).config


def test_the_ca_is_the_one_the_kubeconfig_trusts_inline_or_by_file(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", ["192.0.2.75"], ("kubernetes",))
    inline = write_kubeconfig(tmp_path / "admin.conf", "https://192.0.2.75:6443", pki, "t")
    ca = kubeconfig_ca(inline)
    assert ca is not None and Path(ca).read_bytes() == pki.ca_pem  # certificate-authority-data
    doc = yaml.safe_load(inline.read_text())
    del doc["clusters"][0]["cluster"]["certificate-authority-data"]
    by_file = tmp_path / "k3s.yaml"
    by_file.write_text(
        yaml.safe_dump(
            {
                **doc,
                "clusters": [
                    {
                        "name": "lab",
                        "cluster": {
                            "server": "https://127.0.0.1:6443",
                            "certificate-authority": str(pki.ca_cert),
                        },
                    }
                ],
            }
        )
    )
    assert kubeconfig_ca(by_file) == str(pki.ca_cert)
    none = tmp_path / "none.yaml"
    none.write_text(yaml.safe_dump(doc))
    assert kubeconfig_ca(none) is None  # the system's CAs
    bad = tmp_path / "bad.yaml"
    bad.write_text("clusters: [\n")
    with pytest.raises(ElectionSetupError, match="cannot use kubeconfig"):
        kubeconfig_ca(bad)


def test_the_connector_waits_for_the_kubeconfig_and_says_so_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    kc = tmp_path / "admin.conf"
    cfg = config(kc, monkeypatch)
    seen: list[Path] = []

    def ca_of(path: Path) -> str | None:
        seen.append(path)
        if "half" in path.read_text():
            raise ElectionSetupError(f"cannot use kubeconfig {path}: caught mid-write")
        return "/ca.crt"

    c = ElectionConnector(no_election, "n1", ca_of)
    with caplog.at_level(logging.INFO, logger="kubevipd"):
        assert c.health_ca(cfg) is None and c.health_ca(cfg) is None
        assert seen == []  # nothing to read yet
        kc.write_text("half")
        assert c.health_ca(cfg) is None and c.health_ca(cfg) is None
        kc.write_text("whole")
        assert c.health_ca(cfg) == "/ca.crt"
    assert seen == [kc] * 3
    text = caplog.text
    assert text.count(f"waiting for kubeconfig {kc} to exist") == 1
    assert text.count("caught mid-write; waiting for it to become usable") == 1
    assert f"health check trusts the CA of kubeconfig {kc}" in text


def test_a_kubeconfig_that_names_no_ca_gives_the_systems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kc = tmp_path / "admin.conf"
    kc.write_text("whole")
    c = ElectionConnector(no_election, "n1", lambda path: None)
    assert c.health_ca(config(kc, monkeypatch)) == ""  # not None: nothing to wait for


def test_a_kubeconfig_caught_half_written_is_a_setup_error_not_a_crash(tmp_path: Path) -> None:
    """The kubernetes client lets PyYAML's errors out of load_kube_config: a kubeconfig that
    kubeadm was writing (an unclosed flow sequence) escaped the election's 'wait for it to
    become usable' and ended the daemon."""
    from kubevipd.election.client import KubeconfigClient

    bad = tmp_path / "admin.conf"
    bad.write_text("apiVersion: v1\nclusters: [\n")
    with pytest.raises(ElectionSetupError, match=r"cannot use kubeconfig .*admin.conf: \S") as e:
        KubeconfigClient(bad, "https://127.0.0.1:6443")
    assert "\n" not in str(e.value)  # one log line
