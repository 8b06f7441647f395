"""``kubevipd copy-kubeconfig``: hand the root-only kubeconfig to the non-root daemon.

Why: the daemon runs as the ``kubevipd`` user, but kubeadm's kubeconfig (``admin.conf``, and
during ``kubeadm init`` on 1.29+ ``super-admin.conf``) is a root-only file that appears *after*
kubevipd has started. systemd 252's ``LoadCredential=`` reads a file once, at start, and fails
the unit when it is missing. So ``kubevipd-kubeconfig.service`` (root, no capabilities, no
network) runs this before the daemon starts and again whenever ``kubevipd-kubeconfig.path``
sees one of the files change, and keeps a copy readable by the daemon's group in
``/run/kubevipd-kubeconfig`` (memory only, gone at reboot). The daemon reads the copy
(``resolve.election_spec``) and waits for it like it waits for the file itself.

Each copy is written beside its final name and renamed over it, so the daemon never reads half a
file; it gets the group of the directory (systemd makes that ``kubevipd``) and mode 0440. A copy
whose source is gone is removed.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from kubevipd import exitcodes
from kubevipd.config.model import Config

log = logging.getLogger("kubevipd")
DEFAULT_DIR = Path("/run/kubevipd-kubeconfig")
KUBECONFIG_DIR_ENV = "KUBEVIPD_KUBECONFIG_DIR"  # the unit sets it; resolve.election_spec reads it
MODE = 0o440
# What kubevipd-kubeconfig.path watches (a test keeps the two in step).
WATCHED = (
    Path("/etc/kubernetes/admin.conf"),
    Path("/etc/kubernetes/super-admin.conf"),
    Path("/etc/rancher/k3s/k3s.yaml"),
)
ADMIN = "admin.conf"
SUPER_ADMIN = "super-admin.conf"


def super_admin_fallback(kubeconfig: Path) -> Path | None:
    """kubeadm 1.29+'s super-admin.conf next to admin.conf: admin.conf gets its rights only at
    the end of ``kubeadm init``, while the VIP is needed during it."""
    return kubeconfig.parent / SUPER_ADMIN if kubeconfig.name == ADMIN else None


def sources(cfg: Config) -> list[Path]:
    """The files the daemon may need: the configured kubeconfig and kubeadm's fallback."""
    main = cfg.election.kubeconfig
    fallback = super_admin_fallback(main)
    return [main] if fallback is None else [main, fallback]


def copy_kubeconfigs(cfg: Config, dest: Path) -> list[str]:
    """Bring ``dest`` in line with the sources; returns one line a change, for the journal."""
    done: list[str] = []
    group = dest.stat().st_gid
    for src in sources(cfg):
        target = dest / src.name
        try:
            data = src.read_bytes()
        except FileNotFoundError:
            if target.exists():
                target.unlink()
                done.append(f"removed {target}: {src} is gone")
            continue
        try:
            if target.read_bytes() == data and target.stat().st_gid == group:
                continue
        except FileNotFoundError:
            pass
        fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{src.name}.")
        try:
            os.fchmod(fd, MODE)
            if os.fstat(fd).st_gid != group:  # under the unit it is already (Group=kubevipd),
                os.fchown(fd, -1, group)  # and its system call filter forbids chown
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        done.append(f"copied {src} to {target} for the kubevipd daemon")
    return done


def run(cfg: Config, dest: Path) -> int:
    """The command: 0 when the copies match the sources (also when there is nothing yet)."""
    if not dest.is_dir():
        log.error("copy-kubeconfig: %s is not a directory (systemd creates it)", dest)
        return exitcodes.FAILURE
    try:
        changes = copy_kubeconfigs(cfg, dest)
    except OSError as e:
        log.error("copy-kubeconfig: %s", e)
        return exitcodes.FAILURE
    for line in changes:
        log.info("%s", line)
    if cfg.election.kubeconfig not in WATCHED:
        log.warning(
            "%s is not watched by kubevipd-kubeconfig.path: a change to it reaches the daemon "
            "only when kubevipd restarts; add PathChanged=%s in a drop-in (docs/systemd.md)",
            cfg.election.kubeconfig,
            cfg.election.kubeconfig,
        )
    if not cfg.election.kubeconfig.exists():
        log.info(
            "%s does not exist yet; kubevipd-kubeconfig.path copies it when it appears",
            cfg.election.kubeconfig,
        )
    return exitcodes.OK
