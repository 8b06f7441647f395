"""The shipped unit: systemd's own verifier and its security analysis, run offline."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kubevipd import kubeconfig_copy

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "kubevipd.service"
COPIER = ROOT / "systemd" / "kubevipd-kubeconfig.service"
WATCHER = ROOT / "systemd" / "kubevipd-kubeconfig.path"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def section(unit: Path, name: str = "Service") -> configparser.SectionProxy:
    p = configparser.ConfigParser(strict=False, interpolation=None)
    p.optionxform = str  # type: ignore[assignment,method-assign]
    p.read_string(unit.read_text())
    return p[name]


def service() -> configparser.SectionProxy:
    return section(UNIT)


def test_the_unit_is_a_notify_service_with_a_watchdog_and_a_crash_cleanup() -> None:
    s = service()
    assert s["Type"] == "notify" and s["NotifyAccess"] == "main"
    assert s["Restart"] == "on-failure"
    # A frozen leader is killed and its VIP removed before the default 5s lease expires.
    assert s["WatchdogSec"] == "2s" and s["TimeoutAbortSec"] == "1s"
    assert s["ExecStart"] == "/usr/bin/kubevipd run --config /etc/kubevip.yaml"
    assert s["ExecStopPost"] == "/usr/bin/kubevipd cleanup --config /etc/kubevip.yaml"
    assert s["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert s["RuntimeDirectory"] == "kubevipd"
    # A stop signals kubevipd alone: it withdraws the BGP route before it ends its ExaBGP.
    assert s["KillMode"] == "mixed"
    assert s["CapabilityBoundingSet"] == "CAP_NET_ADMIN CAP_NET_RAW"
    text = UNIT.read_text()
    for line in (
        "ConditionPathExists=/etc/kubevip.yaml",
        "After=network-online.target kubevipd-kubeconfig.service",
        "Before=kubelet.service",
        "WantedBy=multi-user.target",
    ):
        assert line in text.splitlines()


def test_the_daemon_is_not_root_and_gets_the_kubeconfig_from_the_copier() -> None:
    s = service()
    assert s["User"] == "kubevipd" and s["Group"] == "kubevipd"
    assert s["AmbientCapabilities"] == s["CapabilityBoundingSet"]
    assert s["Environment"] == "KUBEVIPD_KUBECONFIG_DIR=/run/kubevipd-kubeconfig"
    wants = section(UNIT, "Unit")["Wants"].split()
    assert {"kubevipd-kubeconfig.service", "kubevipd-kubeconfig.path"} <= set(wants)
    copier = section(COPIER)
    assert copier["Type"] == "oneshot" and "User" not in copier  # root, to read root's files
    assert copier["Group"] == "kubevipd" and copier["CapabilityBoundingSet"] == ""
    assert copier["RuntimeDirectory"] == "kubevipd-kubeconfig"
    assert copier["RuntimeDirectoryMode"] == "0750" and copier["RuntimeDirectoryPreserve"] == "yes"
    assert copier["ExecStart"].endswith("--to /run/kubevipd-kubeconfig")
    assert copier["PrivateNetwork"] == "yes"
    watched = [
        line.split("=", 1)[1]
        for line in WATCHER.read_text().splitlines()
        if line.startswith("PathChanged=")
    ]
    assert watched == [
        "/etc/kubernetes/admin.conf",
        "/etc/kubernetes/super-admin.conf",
        "/etc/rancher/k3s/k3s.yaml",
    ]
    assert watched == [str(p) for p in kubeconfig_copy.WATCHED]  # the copier warns about any other
    assert section(WATCHER, "Path")["Unit"] == "kubevipd-kubeconfig.service"


def _installed_copies(tmp_path: Path) -> list[Path]:
    """The units with /usr/bin/kubevipd pointing at this checkout's kubevipd."""
    exe = shutil.which("kubevipd", path=str(Path(sys.executable).parent))
    assert exe, "kubevipd is not installed in this environment"
    copies = []
    for unit in (UNIT, COPIER, WATCHER):
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace("/usr/bin/kubevipd", exe))
        copies.append(copy)
    return copies


@needs_analyze
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    assert ANALYZE
    r = subprocess.run(
        [ANALYZE, "verify", "--man=no", *map(str, _installed_copies(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # verify exits 0 even on warnings: any output is a finding.
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stdout + r.stderr


def _exposure(args: list[str]) -> float:
    assert ANALYZE
    r = subprocess.run(
        [ANALYZE, "security", "--offline=yes", *args], capture_output=True, text=True, timeout=60
    )
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d)", r.stdout)
    assert m, r.stdout + r.stderr
    return float(m.group(1))


@needs_analyze
@pytest.mark.parametrize("unit", [UNIT, COPIER], ids=lambda u: u.name)
def test_security_exposure_is_at_most_2_0(unit: Path) -> None:
    assert _exposure([str(unit)]) <= 2.0
    r = subprocess.run(
        [ANALYZE, "security", "--offline=yes", "--threshold=20", str(unit)],  # type: ignore[list-item]
        capture_output=True,
        timeout=60,
    )
    assert r.returncode == 0
