"""Fixtures for tests that run real clients against the lab Lease API server."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from kubevipd.lab.apiserver import LabApiServer, node_tokens, standard_tokens
from kubevipd.lab.pki import Pki, make_pki, write_kubeconfig

if TYPE_CHECKING:
    from kubevipd.lab.topology import Lab, Node


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


def kubectl() -> str:
    path = os.environ.get("KUBEVIPD_KUBECTL") or shutil.which("kubectl")
    assert path, "Debian's kubectl is needed: ./dev.sh setup unpacks kubernetes-client"
    return path


def kubectl_via_vip(
    lab: Lab, *args: str, server: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Debian's kubectl in the client's namespace, through ``https://VIP:6443`` as users reach
    the API (the kubeconfig names the VIP too; ``--server`` says it again, or names ``server``:
    the IPv6 VIP's URL). Output: JSON."""
    kc = lab.workdir / "client.kubeconfig"
    if not kc.exists():
        lab.kubeconfig("client", "lab-admin-token", "kubernetes-admin")
    return subprocess.run(
        ["ip", "netns", "exec", lab.client_ns, kubectl(), "--kubeconfig", str(kc),
         "--server", server or lab.vip_url, "--request-timeout", "5s", *args, "-o", "json"],
        capture_output=True,
        text=True,
        timeout=30,
    )  # fmt: skip


def assert_api_via_vip(
    lab: Lab, node: Node, identity: str | None = None, server: str | None = None
) -> None:
    """The API answers through the VIP as users reach it: kubectl gets the Lease, held by
    ``identity`` (default: the node's name), and ``node``'s own apiserver served the request."""
    import json

    def kubectl_reads() -> int:
        return sum(
            1
            for user, _, path, code in list(node.api.requests)
            if user == "kubernetes-admin" and "/leases/plndr-cp-lock" in path and code == 200
        )

    before = kubectl_reads()
    out = kubectl_via_vip(lab, "get", "lease", "-n", "kube-system", "plndr-cp-lock", server=server)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["spec"]["holderIdentity"] == (identity or node.name)
    assert kubectl_reads() > before, f"{node.name}'s apiserver did not serve kubectl"


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces (run ./dev.sh test as root)")


UNIT_CAPS = (1 << 12) | (1 << 13)  # CAP_NET_ADMIN and CAP_NET_RAW: what kubevipd's unit grants


def capability_sets(status: str) -> dict[str, int]:
    """CapEff, CapPrm and CapAmb from a /proc/PID/status text, as bit masks."""
    caps = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in ("CapEff", "CapPrm", "CapAmb"):
            caps[key] = int(value.strip(), 16)
    assert len(caps) == 3, status
    return caps
