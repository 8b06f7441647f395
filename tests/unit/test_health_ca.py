"""With no election (all-nodes mode), the health check still trusts the election kubeconfig's
CA, as ``health.ca_file``'s default says: read from the kubeconfig, waited for while kubeadm
has not written it, and never replaced by the system's CAs meanwhile."""

from __future__ import annotations

import base64
import logging
import ssl
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


FAKE = base64.b64encode(b"-----BEGIN CERTIFICATE-----\naaa\n-----END CERTIFICATE-----\n").decode()


def test_the_ca_is_the_one_the_current_context_trusts_inline_or_by_file(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", ["192.0.2.75"], ("kubernetes",))
    inline = write_kubeconfig(tmp_path / "admin.conf", "https://192.0.2.75:6443", pki, "t")
    assert kubeconfig_ca(inline) == pki.ca_pem.decode()  # certificate-authority-data
    doc = yaml.safe_load(inline.read_text())

    def variant(name: str, **change: Any) -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump({**doc, **change}))
        return path

    other = {"name": "other", "cluster": {"server": "https://192.0.2.99:6443"}}
    by_file = {"server": "https://127.0.0.1:6443", "certificate-authority": "pki/ca.crt"}
    # A relative path is the kubeconfig's directory's; the current context picks the cluster.
    two = variant("k3s.yaml", clusters=[other, {"name": "lab", "cluster": by_file}])
    assert kubeconfig_ca(two) == pki.ca_pem.decode()
    # Read from the copy under the unit, it is the original's directory's.
    (tmp_path / "copies").mkdir()
    copy = tmp_path / "copies" / "k3s.yaml"
    copy.write_text(two.read_text())
    assert kubeconfig_ca(copy, relative_to=tmp_path) == pki.ca_pem.decode()
    # Base64 broken over lines (a block scalar) decodes, as client-go decodes it.
    wrapped = base64.b64encode(pki.ca_pem).decode()
    wrapped = "\n".join(wrapped[i : i + 64] for i in range(0, len(wrapped), 64))
    lines = [{"name": "lab", "cluster": {"certificate-authority-data": wrapped}}]
    assert kubeconfig_ca(variant("wrapped.yaml", clusters=lines)) == pki.ca_pem.decode()
    # Names are strings, whatever they look like to YAML: 1.10 is no float, nor a date a date.
    data = base64.b64encode(pki.ca_pem).decode()
    path = tmp_path / "odd.yaml"
    path.write_text(
        "current-context: 2024-02-30\ncontexts: [{name: 2024-02-30, context: {cluster: 1.10}}]\n"
        f"clusters: [{{name: 1.10, cluster: {{certificate-authority-data: {data}}}}}]\n"
    )
    assert kubeconfig_ca(path) == pki.ca_pem.decode()
    # No credentials are read: a user whose files are gone, or an exec plugin, is not run.
    users = [{"name": "lab", "user": {"exec": {"command": "/nonexistent/plugin"}}}]
    assert kubeconfig_ca(variant("exec.yaml", users=users)) == pki.ca_pem.decode()
    # A CA-only kubeconfig (one cluster, no context) names its one cluster's CA.
    ca_only = {"clusters": doc["clusters"]}
    (tmp_path / "ca-only.yaml").write_text(yaml.safe_dump(ca_only))
    assert kubeconfig_ca(tmp_path / "ca-only.yaml") == pki.ca_pem.decode()
    bare = [{"name": "lab", "cluster": {"server": "https://127.0.0.1:6443"}}]
    assert kubeconfig_ca(variant("none.yaml", clusters=bare)) is None  # the system's CAs
    for name, change, says in (
        ("ctx.yaml", {"current-context": "gone"}, "current-context 'gone' is not among"),
        ("two.yaml", {"current-context": None, "clusters": [other, *bare]}, "2 clusters"),
        (
            "b64.yaml",
            {"clusters": [{"name": "lab", "cluster": {"certificate-authority-data": "%"}}]},
            "CA",
        ),
        (
            "pem.yaml",
            {"clusters": [{"name": "lab", "cluster": {"certificate-authority-data": "aGk="}}]},
            "no PEM",
        ),
        (
            "file.yaml",
            {
                "clusters": [
                    {"name": "lab", "cluster": {"certificate-authority": "/nonexistent.crt"}}
                ]
            },
            "nonexistent.crt",
        ),
        (
            "empty.yaml",
            {"clusters": [{"name": "lab", "cluster": {"certificate-authority-data": "%"}}]},
            "no PEM",
        ),
        (
            "fake.yaml",
            {"clusters": [{"name": "lab", "cluster": {"certificate-authority-data": FAKE}}]},
            "ssl can load",
        ),
        (
            "insecure.yaml",
            {"clusters": [{"name": "lab", "cluster": {"insecure-skip-tls-verify": True}}]},
            "set health.ca_file",
        ),
        ("list.yaml", {"clusters": 5}, "clusters is not a list"),
        ("ctxs.yaml", {"contexts": True}, "contexts is not a list"),
    ):
        with pytest.raises(ElectionSetupError, match=says):
            kubeconfig_ca(variant(name, **change))
    # Whatever the shape of the file, an ElectionSetupError (waited for), never a crash.
    for text in ("", "- a\n", "a: " + "[" * 3000 + "]" * 3000 + "\n", "\xff\xfe", "{a: [}"):
        path = tmp_path / "shape.yaml"
        path.write_bytes(text.encode("latin-1"))
        with pytest.raises(ElectionSetupError, match="cannot use kubeconfig"):
            kubeconfig_ca(path)


def test_only_the_certificates_are_kept_so_the_checker_loads_what_was_checked(
    tmp_path: Path,
) -> None:
    """Third review: a certificate with a broken CRL or key block passed ssl's cadata reader
    and failed its cafile reader when the checker loaded the written file: a crash, at start
    a restart loop. The certificates alone are kept (client-go's AppendCertsFromPEM skips
    other blocks), so a key pasted into the field never reaches the run dir either."""
    pki = make_pki(tmp_path / "pki", ["192.0.2.75"], ("kubernetes",))
    cert = pki.ca_pem.decode()
    for junk in (
        "-----BEGIN X509 CRL-----\nQUJD\n-----END X509 CRL-----\n",
        "-----BEGIN PRIVATE KEY-----\nQUJD\n-----END PRIVATE KEY-----\n",
    ):
        for pem in (cert + junk, junk + cert):
            kc = tmp_path / "admin.conf"
            data = base64.b64encode(pem.encode()).decode()
            kc.write_text(
                f"clusters: [{{name: c, cluster: {{certificate-authority-data: {data}}}}}]\n"
            )
            kept = kubeconfig_ca(kc)
            assert kept is not None and "CRL" not in kept and "KEY" not in kept
            (tmp_path / "ca.crt").write_text(kept)
            ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))  # the checker's reader


def test_the_connector_waits_for_the_kubeconfig_and_says_so_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    kc = tmp_path / "admin.conf"
    cfg = config(kc, monkeypatch)
    seen: list[Path] = []

    def ca_of(path: Path, relative_to: Path) -> str | None:
        assert relative_to == kc.parent
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


def test_a_kubeconfig_that_names_no_ca_gives_the_systems_and_the_copy_is_what_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Under the unit the daemon is not root: it reads kubevipd-kubeconfig.service's copy."""
    kc = tmp_path / "admin.conf"
    cfg = config(kc, monkeypatch)
    copies = tmp_path / "copies"
    copies.mkdir()
    (copies / "admin.conf").write_text("whole")
    monkeypatch.setenv("KUBEVIPD_KUBECONFIG_DIR", str(copies))
    seen: list[tuple[Path, Path]] = []

    def ca_of(path: Path, relative_to: Path) -> None:
        seen.append((path, relative_to))

    c = ElectionConnector(no_election, "n1", ca_of)
    with caplog.at_level(logging.INFO, logger="kubevipd"):
        assert c.health_ca(cfg) == ""  # not None: nothing to wait for
    assert seen == [(copies / "admin.conf", tmp_path)]  # a relative CA path: the original's
    assert (
        f"kubeconfig {kc} (read at {copies / 'admin.conf'}) names no CA: health check trusts "
        "the system's" in caplog.text
    )


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
    with pytest.raises(ElectionSetupError, match=r"cannot use kubeconfig .*admin.conf: \S") as e:
        kubeconfig_ca(bad)
    assert "\n" not in str(e.value)
