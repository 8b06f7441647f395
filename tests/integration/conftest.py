"""Fixtures for tests that run real clients against the lab Lease API server."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kubevipd.lab.apiserver import LabApiServer, node_tokens, standard_tokens
from kubevipd.lab.pki import Pki, make_pki, write_kubeconfig


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), ["127.0.0.1"])


@pytest.fixture
def api(pki: Pki) -> Iterator[LabApiServer]:
    """A fresh Lease API server on loopback (HTTPS, tokens, no leases yet)."""
    server = LabApiServer(pki, standard_tokens() | node_tokens(["n1", "n2"]), bookmark_interval=0.2)
    server.start("127.0.0.1", 0)
    try:
        yield server
    finally:
        server.stop()


KubeconfigFactory = Callable[..., Path]


@pytest.fixture
def kubeconfig(api: LabApiServer, pki: Pki, tmp_path: Path) -> KubeconfigFactory:
    """``kubeconfig(token, name="x.kubeconfig")`` writes a kubeconfig for the server."""

    def make(token: str = "lab-admin-token", name: str | None = None) -> Path:
        return write_kubeconfig(tmp_path / (name or f"{token}.kubeconfig"), api.url, pki, token)

    return make


@pytest.fixture(scope="session")
def built_deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """kubevipd_VERSION_all.deb built from this checkout (packaging/deb/build.sh)."""
    import shutil
    import subprocess

    from kubevipd import __version__

    require_root()
    for tool in ("dpkg-buildpackage", "dh_python3"):
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            pytest.skip(f"{tool} is not installed (./dev.sh setup installs the build tools)")
    out = tmp_path_factory.mktemp("deb")
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run(
        [str(root / "packaging" / "deb" / "build.sh"), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    path = Path(r.stdout.strip().splitlines()[-1])
    assert path.name == f"kubevipd_{__version__}_all.deb" and path.exists()
    return path


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces (run ./dev.sh test as root)")
