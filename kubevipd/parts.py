"""What the main loop is built from, each part by an explicit factory that matches on the config.

No dynamic loading: reading this file tells which backend runs for which setting. The main
loop (kubevipd/daemon.py) knows only the contracts (kubevipd/policy.py, kubevipd/vip/source.py,
kubevipd/announce/base.py, kubevipd/election/base.py); tests/unit/test_loop.py replaces any
part with a fake. Backends are imported here and nowhere in the loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from kubevipd.all_nodes import AllNodes
from kubevipd.announce.arp import ArpAnnouncer
from kubevipd.announce.base import Announcer, AnnounceTiming
from kubevipd.config.model import Config, ElectionSpec, HealthSpec
from kubevipd.election.base import Election
from kubevipd.election.lease import LeaseElection
from kubevipd.events import Timings
from kubevipd.health import HealthChecker
from kubevipd.machine import Machine
from kubevipd.policy import Policy
from kubevipd.vip.model import Vip
from kubevipd.vip.netlink import Monitor, VipLink
from kubevipd.vip.source import VipSource
from kubevipd.vip.static import StaticVipSource


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
    )


def build_policy(cfg: Config, start: PolicyStart) -> Policy:
    """The Lease state machine: today every mode elects. BGP's all-nodes ECMP mode will return
    kubevipd.all_nodes.AllNodes here, on its own setting."""
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
    """Every healthy node holds the VIP; for BGP's ECMP mode, which selects it (issue 14)."""
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


def build_announcer(cfg: Config, ifname: str, link: VipLink, vips: Sequence[Vip]) -> Announcer:
    """``announce.mode``: arp (gratuitous ARP / unsolicited NA, from the interface's MAC). bgp
    and metal are refused before this runs until their announcers exist."""
    if cfg.announce.mode != "arp":
        raise ValueError(f"announce.mode {cfg.announce.mode} has no announcer in this version")
    refresh = cfg.announce.arp.refresh.seconds if cfg.announce.arp else 3.0
    return ArpAnnouncer(ifname, link.mac(), vips, refresh)


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
    announcer: Callable[[Config, str, VipLink, Sequence[Vip]], Announcer] = build_announcer
    election: Callable[[ElectionSpec, str], Election] = build_election
    health: Callable[[HealthSpec, str | None, Callable[[bool, str], None]], Health] = build_health
