"""What the main loop is built from, each part by an explicit factory that matches on the config.

No dynamic loading: reading this file tells which backend runs for which setting. The main
loop (kubevipd/daemon.py) knows only the contracts (kubevipd/policy.py, kubevipd/vip/source.py,
kubevipd/announce/base.py, kubevipd/election/base.py); tests/unit/test_loop.py replaces any
part with a fake. Backends are imported here and nowhere in the loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kubevipd.all_nodes import AllNodes
from kubevipd.announce.arp import ArpAnnouncer
from kubevipd.announce.base import Announcer, AnnouncerEnv, AnnounceTiming
from kubevipd.config.model import BgpSpec, Config, ElectionSpec, HealthSpec
from kubevipd.election.base import Election
from kubevipd.election.client import kubeconfig_ca
from kubevipd.election.lease import LeaseElection
from kubevipd.events import Timings
from kubevipd.health import HealthChecker
from kubevipd.machine import Machine
from kubevipd.policy import Policy
from kubevipd.resolve import RunError
from kubevipd.vip.model import Vip
from kubevipd.vip.netlink import Monitor, VipLink
from kubevipd.vip.source import VipSource
from kubevipd.vip.static import StaticVipSource

log = logging.getLogger("kubevipd")
PATH_GRACE_MIN = 3.0


class Health(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class PolicyStart:
    """What a policy is started with: who we are, the timings, and what the last run left."""

    identity: str
    timings: Timings
    now: float
    wall: float
    vip_at_start: bool
    inherited_deadline: float | None
    vip_text: str
    announce_timing: AnnounceTiming


def timings(cfg: Config) -> Timings:
    e = cfg.election
    return Timings(
        lease_duration=e.lease_duration.seconds,
        renew_deadline=e.renew_deadline.seconds,
        retry_period=e.retry_period.seconds,
        link_down_grace=cfg.health.link_down_grace.seconds,
        health_gate=cfg.health.enabled,
        # No BGP session for as long as the apiserver check may fail before it counts, and
        # never less than ExaBGP needs to start and open its sessions (about a second here).
        path_grace=max(PATH_GRACE_MIN, cfg.health.period.seconds * cfg.health.failure_threshold),
    )


def build_policy(cfg: Config, start: PolicyStart) -> Policy:
    """``election.backend``: kubernetes, the Lease state machine (one holder); none, the
    all-nodes policy (every healthy node holds the VIP: BGP's ECMP mode, the only announcer
    the loader allows it with)."""
    if cfg.election.backend == "none":
        return build_all_nodes_policy(cfg, start)
    return Machine(
        identity=start.identity,
        t=start.timings,
        now=start.now,
        wall=start.wall,
        vip_at_start=start.vip_at_start,
        inherited_deadline=start.inherited_deadline,
        lease_name=cfg.election.lease_name,
        vip_text=start.vip_text,
        announce_timing=start.announce_timing,
    )


def build_all_nodes_policy(cfg: Config, start: PolicyStart) -> Policy:
    """Every healthy node holds the VIP; for BGP's ECMP mode (``election.backend: none``)."""
    return AllNodes(
        identity=start.identity,
        t=start.timings,
        now=start.now,
        vip_at_start=start.vip_at_start,
        vip_text=start.vip_text,
        announce_timing=start.announce_timing,
    )


def build_vip_source(cfg: Config) -> VipSource:
    """``vip.address``: the config's addresses. ``vip.dns`` and ``vip.dhcp`` are refused before
    this runs (kubevipd.resolve.check_supported) until their sources exist."""
    return StaticVipSource(cfg)


def build_announcer(
    cfg: Config, ifname: str, link: VipLink, vips: Sequence[Vip], env: AnnouncerEnv
) -> Announcer:
    """``announce.mode``: arp (gratuitous ARP / unsolicited NA, from the interface's MAC); bgp
    (routes through a supervised ExaBGP). metal is refused before this runs until its
    announcer exists."""
    if cfg.announce.mode == "bgp":
        assert cfg.announce.bgp is not None  # the loader's rule
        return build_bgp_announcer(cfg.announce.bgp, vips, env)
    if cfg.announce.mode != "arp":
        raise ValueError(f"announce.mode {cfg.announce.mode} has no announcer in this version")
    refresh = cfg.announce.arp.refresh.seconds if cfg.announce.arp else 3.0
    return ArpAnnouncer(ifname, link.mac(), vips, refresh)


def build_bgp_announcer(spec: BgpSpec, vips: Sequence[Vip], env: AnnouncerEnv) -> Announcer:
    """The sessions resolved on this host (a setting it cannot use is a RunError: exit 2),
    then ExaBGP started for them."""
    from kubevipd.announce import bgp_plan
    from kubevipd.announce.bgp import BgpAnnouncer
    from kubevipd.announce.exabgp import exabgp_command

    if exabgp_command() is None:
        raise RunError("announce.mode bgp needs ExaBGP, which is not installed: apt install exabgp")
    try:
        plan = bgp_plan.resolve(spec, list(vips))
    except bgp_plan.PlanError as e:
        raise RunError(str(e)) from None
    hold, keepalive = spec.hold_time.seconds, spec.keepalive.seconds
    if abs(keepalive - hold / 3) >= 1:
        log.warning(
            "announce.bgp.keepalive %gs is not used: ExaBGP sends a keepalive every hold_time "
            "/ 3 (%gs here) and has no setting for it",
            keepalive,
            hold // 3,
        )
    return BgpAnnouncer(plan, vips, env.run_dir, env.on_path)


def build_election(spec: ElectionSpec, identity: str) -> Election:
    return LeaseElection(spec, identity)


def build_health(
    spec: HealthSpec, ca_file: str | None, report: Callable[[bool, str], None]
) -> Health:
    return HealthChecker(spec, ca_file, report)


@dataclass(frozen=True)
class Parts:
    """The factories the main loop builds its parts with: the real ones by default."""

    policy: Callable[[Config, PolicyStart], Policy] = build_policy
    vip_source: Callable[[Config], VipSource] = build_vip_source
    link: Callable[[str, list[Vip]], VipLink] = VipLink
    monitor: Callable[..., Monitor] = Monitor
    announcer: Callable[[Config, str, VipLink, Sequence[Vip], AnnouncerEnv], Announcer] = (
        build_announcer
    )
    election: Callable[[ElectionSpec, str], Election] = build_election
    health: Callable[[HealthSpec, str | None, Callable[[bool, str], None]], Health] = build_health
    kubeconfig_ca: Callable[[Path, Path], str | None] = kubeconfig_ca  # no election: health CA
