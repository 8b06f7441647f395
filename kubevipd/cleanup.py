"""``kubevipd cleanup``: what systemd runs after the daemon exited (ExecStopPost).

The VIP goes first, before anything slow is imported: after a crash or a watchdog kill, every
millisecond the VIP stays is a millisecond a follower might hold it too once the lease expires.
Then, if this node still holds the Lease, it is released so a follower takes over at once.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from pathlib import Path

from kubevipd import exitcodes
from kubevipd import status as status_file
from kubevipd.config.model import Config
from kubevipd.resolve import (
    RunError,
    election_spec,
    resolve_identity,
    resolve_interface,
    resolve_vips,
)
from kubevipd.vip.model import Vip
from kubevipd.vip.netlink import InterfaceError, VipLink

log = logging.getLogger("kubevipd")


def _vip_to_remove(cfg: Config, run_dir: Path) -> tuple[list[Vip], str]:
    """What the stopped daemon ran with, as it recorded it; else what the config names (a run
    that never wrote its status)."""
    recorded = status_file.recorded_vip(run_dir)
    if recorded is not None:
        cidrs, ifname = recorded
        nets = [ipaddress.ip_interface(c) for c in cidrs]
        return [Vip(n.ip, n.network.prefixlen) for n in nets], ifname
    return resolve_vips(cfg), resolve_interface(cfg)


def cleanup(cfg: Config, run_dir: Path) -> int:
    """``kubevipd cleanup``: the VIP off this node; the lease released if this node holds it.

    Run by systemd after the daemon exited for any reason (ExecStopPost). After a clean stop
    there is nothing left to do; after a crash this turns a lease expiry into a hand-over.
    """
    try:
        vips, ifname = _vip_to_remove(cfg, run_dir)
        link = VipLink(ifname, vips)
    except (RunError, InterfaceError, ValueError) as e:
        log.warning("cleanup: %s; nothing to remove", e)
        return exitcodes.OK
    try:
        if link.present():
            link.remove()
            log.warning("cleanup: removed %s left behind on %s", ", ".join(map(str, vips)), ifname)
    except InterfaceError as e:
        # Releasing now would let a follower take the VIP while it may still be up here: the
        # lease is left to expire (and the VIP's kernel lifetime, if it has one, ends first).
        log.error("cleanup: %s; the lease is left to expire", e)
        return exitcodes.FAILURE
    finally:
        link.close()
    status_file.remove(run_dir)
    identity = resolve_identity(cfg)
    spec = election_spec(cfg)
    if not spec.kubeconfig.exists():
        return exitcodes.OK
    from kubevipd.election.base import release_record
    from kubevipd.election.lease import ElectionSetupError, LeaseElection

    try:
        election = LeaseElection(spec, identity)
    except ElectionSetupError as e:
        log.warning("cleanup: %s; the lease is left to expire", e)
        return exitcodes.OK
    try:
        got = election.read(2.0)
        r = got.record
        if not got.ok:
            log.warning(
                "cleanup: cannot read %s (%s); it will expire", election.describe(), got.error
            )
        elif r is not None and r.holder == identity:
            out = election.write("release", release_record(r, time.time()), 2.0)
            if out.ok:
                log.warning("cleanup: released %s held by the stopped daemon", election.describe())
            else:
                log.warning("cleanup: could not release the lease (%s); it will expire", out.error)
    finally:
        election.close()
    return exitcodes.OK
