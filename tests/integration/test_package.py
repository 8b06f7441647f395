"""The Debian package: built with dpkg-buildpackage, checked with lintian, installed with apt
(so Depends are resolved from Debian), run on Debian's python and libraries, then purged.

This installs a package on the machine, so it runs only when KUBEVIPD_PACKAGE_TEST=1 (what
./dev.sh test and CI set), and never over a kubevipd that something else installed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubevipd import __version__
from kubevipd.lab.probes import HolderSampler
from kubevipd.lab.topology import Lab

from .conftest import assert_api_via_vip

ROOT = Path(__file__).resolve().parents[2]
CLEAN = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "HOME": "/root"}

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        os.environ.get("KUBEVIPD_PACKAGE_TEST") != "1",
        reason="installs a package: set KUBEVIPD_PACKAGE_TEST=1 (./dev.sh test does)",
    ),
]


def sh(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        list(args),
        capture_output=True,
        text=True,
        env={**CLEAN, "DEBIAN_FRONTEND": "noninteractive"},
        timeout=timeout,
    )
    if check:
        assert r.returncode == 0, f"{args}: {r.stdout}\n{r.stderr}"
    return r


@pytest.fixture(scope="module")
def deb(built_deb: Path) -> Path:
    return built_deb


def test_depends_on_debians_libraries(deb: Path) -> None:
    depends = sh("dpkg-deb", "-f", str(deb), "Depends").stdout
    for pkg in (
        "python3-kubernetes",
        "python3-pyroute2",
        "python3-scapy",
        "python3-ruamel.yaml",
        "python3-jsonschema",
        "python3-sdnotify",
        "python3-prometheus-client",
        "python3-urllib3",
        "python3-yaml",
        "python3-cryptography",
        "iproute2",
    ):
        assert pkg in depends, f"{pkg} missing from Depends: {depends}"
    assert "python3:any (>= 3.11~)" in depends
    assert "exabgp" not in depends  # ARP mode runs without it
    assert sh("dpkg-deb", "-f", str(deb), "Recommends").stdout.strip() == "exabgp"
    assert sh("dpkg-deb", "-f", str(deb), "Architecture").stdout.strip() == "all"


def test_lintian_is_clean(deb: Path) -> None:
    r = sh("lintian", "--allow-root", str(deb), check=False)
    bad = [line for line in r.stdout.splitlines() if line[:2] in ("E:", "W:")]
    assert bad == [], r.stdout
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_package_ships_what_operators_need(deb: Path) -> None:
    files = sh("dpkg-deb", "-c", str(deb)).stdout
    for path in (
        "./usr/bin/kubevipd",
        "./lib/systemd/system/kubevipd.service",
        "./lib/systemd/system/kubevipd-kubeconfig.service",
        "./lib/systemd/system/kubevipd-kubeconfig.path",
        "./usr/lib/sysusers.d/kubevipd.conf",
        "./usr/share/doc/kubevipd/examples/kubevip.yaml.example",
        "./usr/share/kubevipd/schema.json",
        "./usr/share/man/man8/kubevipd.8.gz",
        "./usr/lib/python3/dist-packages/kubevipd/config/schema.json",
    ):
        assert path in files, path
    assert "./etc/kubevip.yaml" not in files  # the operator's file, never the package's


@pytest.fixture(scope="module")
def installed(deb: Path) -> Iterator[Path]:
    already = sh("dpkg-query", "-W", "-f=${Status}", "kubevipd", check=False).stdout
    if "install ok installed" in already:
        pytest.skip("kubevipd is already installed on this machine; not touching it")
    sh("apt-get", "install", "-y", "-q", str(deb), timeout=900)
    try:
        yield deb
    finally:
        sh("apt-get", "purge", "-y", "-q", "kubevipd", check=False, timeout=900)


def test_installed_commands_run_on_debians_python(installed: Path) -> None:
    assert Path("/usr/bin/kubevipd").read_text().startswith("#!/usr/bin/python3")
    assert sh("/usr/bin/kubevipd", "--version").stdout.strip() == f"kubevipd {__version__}"
    example = "/usr/share/doc/kubevipd/examples/kubevip.yaml.example"
    assert sh("/usr/bin/kubevipd", "check-config", example).stdout.strip() == f"{example}: ok"
    pod = sh("/usr/bin/kubevipd", "render-manifest", "--config", example).stdout
    assert "kind: Pod" in pod and "plndr-cp-lock" in pod
    r = sh("systemd-analyze", "verify", "/lib/systemd/system/kubevipd.service", check=False)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stdout + r.stderr
    # apt install enables and starts nothing.
    assert not Path("/etc/systemd/system/multi-user.target.wants/kubevipd.service").exists()


def test_failover_with_the_installed_package(installed: Path) -> None:
    lab = Lab.create(3)
    lab.command = ["/usr/bin/kubevipd"]
    try:
        with HolderSampler(lab) as sampler:
            for n in lab.nodes:
                lab.start(n)
            assert lab.wait_for(lambda: len(lab.holders()) == 1, 30), lab.log_text(lab.nodes[0])
            assert lab.wait_for(lambda: all(lab.ready(n) for n in lab.nodes), 30)
            first = lab.node(lab.holders()[0])
            assert_api_via_vip(lab, first)
            t0 = time.monotonic()
            lab.signal(first, signal.SIGTERM)
            assert lab.wait_for(lambda: lab.holders() not in ([], [first.name]), 5, 0.002)
            handover = time.monotonic() - t0
            assert lab.wait_exit(first, 10) == 0
            # As test_failover's SIGTERM test: a few times the bench's median (about 40 ms),
            # on Debian's python and libraries.
            assert handover < 0.25, f"hand-over took {handover:.2f}s: the lease was not released"
            new = lab.node(lab.holders()[0])
            assert lab.wait_for(lambda: lab.client_neighbour_mac() in (None, new.mac), 2)
            assert_api_via_vip(lab, new)
            # The daemon is Debian's python running the package's code.
            assert new.proc is not None
            assert os.readlink(f"/proc/{new.proc.pid}/exe").startswith("/usr/bin/python3")
        assert sampler.max_holders == 1
    finally:
        lab.destroy()


def test_purge_removes_the_package_and_keeps_the_operators_config(installed: Path) -> None:
    conf = Path("/etc/kubevip.yaml")
    ours = not conf.exists()
    if ours:
        conf.write_text("vip: {address: 192.0.2.75}\n")
    before = conf.read_text()
    try:
        sh("apt-get", "purge", "-y", "-q", "kubevipd", timeout=900)
        assert conf.read_text() == before
        assert not Path("/usr/bin/kubevipd").exists()
        assert not Path("/lib/systemd/system/kubevipd.service").exists()
        assert not Path("/usr/lib/python3/dist-packages/kubevipd").exists()
        status = sh("dpkg-query", "-W", "-f=${Status}", "kubevipd", check=False).stdout
        assert "install ok" not in status
    finally:
        if ours:
            conf.unlink(missing_ok=True)
