"""With no election (all-nodes mode), the health check still trusts the election kubeconfig's
CA, as ``health.ca_file``'s default says: read from the kubeconfig, waited for while kubeadm
has not written it, and never replaced by the system's CAs meanwhile."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kubevipd.election.client import ElectionSetupError, kubeconfig_ca
from kubevipd.lab.pki import make_pki, write_kubeconfig


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
