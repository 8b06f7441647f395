"""kubevipd copy-kubeconfig: the root-only kubeconfig handed to the non-root daemon."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from kubevipd import kubeconfig_copy
from kubevipd.config import load_text
from kubevipd.config.model import Config


def config(kubeconfig: Path) -> Config:
    loaded = load_text(f"vip: {{address: 192.0.2.75}}\nelection: {{kubeconfig: {kubeconfig}}}\n")
    assert loaded.config is not None
    return loaded.config


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    src = tmp_path / "etc-kubernetes"
    dest = tmp_path / "run-copies"
    src.mkdir()
    dest.mkdir(mode=0o750)
    return src, dest


def test_nothing_there_yet_is_not_an_error(dirs: tuple[Path, Path]) -> None:
    src, dest = dirs
    assert kubeconfig_copy.run(config(src / "admin.conf"), dest) == 0
    assert list(dest.iterdir()) == []


def test_admin_conf_and_kubeadms_fallback_are_copied_readable_by_the_group_only(
    dirs: tuple[Path, Path],
) -> None:
    src, dest = dirs
    (src / "admin.conf").write_text("admin")
    (src / "super-admin.conf").write_text("super")
    for f in src.iterdir():
        f.chmod(0o600)
    changes = kubeconfig_copy.copy_kubeconfigs(config(src / "admin.conf"), dest)
    assert len(changes) == 2
    for name, body in (("admin.conf", "admin"), ("super-admin.conf", "super")):
        copy = dest / name
        assert copy.read_text() == body
        st = copy.stat()
        assert stat.S_IMODE(st.st_mode) == 0o440
        assert st.st_gid == dest.stat().st_gid
    assert sorted(p.name for p in dest.iterdir()) == ["admin.conf", "super-admin.conf"]  # no tmp


def test_only_an_admin_conf_brings_its_super_admin_sibling(dirs: tuple[Path, Path]) -> None:
    src, dest = dirs
    (src / "k3s.yaml").write_text("k3s")
    (src / "super-admin.conf").write_text("super")
    kubeconfig_copy.copy_kubeconfigs(config(src / "k3s.yaml"), dest)
    assert [p.name for p in dest.iterdir()] == ["k3s.yaml"]


def test_a_renewed_file_replaces_the_copy_at_once_and_a_removed_one_goes(
    dirs: tuple[Path, Path],
) -> None:
    src, dest = dirs
    cfg = config(src / "admin.conf")
    (src / "admin.conf").write_text("old")
    (src / "super-admin.conf").write_text("super")
    kubeconfig_copy.copy_kubeconfigs(cfg, dest)
    before = (dest / "admin.conf").stat().st_ino
    assert kubeconfig_copy.copy_kubeconfigs(cfg, dest) == []  # unchanged: nothing rewritten
    (src / "admin.conf").write_text("renewed")
    (src / "super-admin.conf").unlink()
    changes = kubeconfig_copy.copy_kubeconfigs(cfg, dest)
    assert (dest / "admin.conf").read_text() == "renewed"
    assert (dest / "admin.conf").stat().st_ino != before  # a rename, never a rewrite in place
    assert not (dest / "super-admin.conf").exists()
    assert any("removed" in c for c in changes)


def test_a_kubeconfig_the_path_unit_does_not_watch_is_named_in_a_warning(
    dirs: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    src, dest = dirs
    (src / "kubevip.conf").write_text("x")
    assert kubeconfig_copy.run(config(src / "kubevip.conf"), dest) == 0
    assert f"add PathChanged={src / 'kubevip.conf'} in a drop-in" in caplog.text
    caplog.clear()
    kubeconfig_copy.run(config(Path("/etc/kubernetes/admin.conf")), dest)
    assert "not watched" not in caplog.text


def test_a_missing_directory_is_an_error(dirs: tuple[Path, Path]) -> None:
    src, dest = dirs
    assert kubeconfig_copy.run(config(src / "admin.conf"), dest / "absent") == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand a file to another group")
def test_the_copy_takes_the_directorys_group_when_run_by_root(dirs: tuple[Path, Path]) -> None:
    src, dest = dirs
    os.chown(dest, -1, 65534)  # nogroup: as systemd gives the directory the kubevipd group
    (src / "admin.conf").write_text("admin")
    kubeconfig_copy.copy_kubeconfigs(config(src / "admin.conf"), dest)
    assert (dest / "admin.conf").stat().st_gid == 65534
    assert (dest / "admin.conf").stat().st_uid == 0
