"""The all-nodes policy: every healthy node holds the VIP, and nothing is ever written.

For BGP's ECMP mode, where every control-plane node announces VIP/32 and the routers spread
the traffic: there is no Lease, so no election and no hand-over, only health. It implements
the Policy contract (kubevipd/policy.py) beside the Lease machine, without touching it; the
factory in kubevipd/parts.py will select it on its own setting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from kubevipd.announce.base import ONCE, AnnounceSchedule, AnnounceTiming
from kubevipd.events import (
    INFO,
    WARNING,
    Action,
    AddVip,
    Announce,
    AnnounceFailed,
    Decision,
    Event,
    HealthChanged,
    LinkChanged,
    RemoveVip,
    Role,
    Stop,
    Timings,
    VipAddFailed,
    VipMissing,
    VipMoved,
    VipStray,
)
from kubevipd.machine_state import REPEAT_EVERY
from kubevipd.policy import PolicyStatus
from kubevipd.stray import StrayRemoval


@dataclass
class AllNodes:
    uses_election: ClassVar[bool] = False  # the Policy contract: no Lease client, no watch

    identity: str
    t: Timings
    now: float
    vip_at_start: bool = False
    vip_text: str = "the VIP"
    announce_timing: AnnounceTiming = ONCE

    role: Role = Role.STARTING
    role_since: float = 0.0
    transitions: int = 0
    holds_vip: bool = False
    link_up: bool = True
    healthy: bool | None = None
    stopping: bool = False
    last_error: str = ""
    retry_at: float = 0.0  # after netlink refused the VIP
    link_down_since: float | None = None
    announcements: AnnounceSchedule = field(default_factory=AnnounceSchedule)
    # A VIP on the interface that this node does not hold: when to remove it (None: not
    # pending), and how many removals netlink refused in a row (the Lease machine's backoff).
    stray: StrayRemoval = field(default_factory=StrayRemoval)
    _repeat: tuple[str, float] = ("", 0.0)  # the last repeating warning, and when it was said
    _said: list[tuple[int, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.role_since = self.now
        self.holds_vip = self.vip_at_start

    def handle(self, event: Event | None, now: float, wall: float) -> Decision:
        self.now = now
        out: list[Action] = []
        if isinstance(event, HealthChanged):
            self.healthy = event.healthy
        elif isinstance(event, LinkChanged):
            self._link(event.up)
        elif isinstance(event, VipMissing) and self.holds_vip:
            self._say(WARNING, "VIP disappeared from the interface; restoring it")
            out.append(AddVip())
            self._announce_from_now()
        elif isinstance(event, VipMoved) and self.holds_vip:
            out.append(AddVip())
            self._announce_from_now()
        elif isinstance(event, VipAddFailed):
            self.holds_vip = False
            self.announcements.clear()  # or next_wakeup stays in the past: a busy loop
            self.last_error = event.error
            self.retry_at = now + self.t.lease_duration
            wait = self.t.lease_duration
            self._become(
                Role.FOLLOWER, f"netlink refused the VIP ({event.error}); trying again in {wait:g}s"
            )
        elif isinstance(event, VipStray) and not self.holds_vip:
            self._vip_stray(event)
        elif isinstance(event, AnnounceFailed):
            again = self.announcements.next_at() is not None
            then = "trying again at the next due time" if again else "none is due again for now"
            self._warn_repeating(f"announcement failed: {event.error}; {then}")
        elif isinstance(event, Stop):
            self.stopping = True
        self._decide(out)
        said, self._said = tuple(self._said), []
        return Decision(out, said)

    def _link(self, up: bool) -> None:
        """Only a change counts: a repeated carrier-down must not restart the grace."""
        if up == self.link_up:
            return
        self.link_up = up
        self.link_down_since = None if up else self.now
        if not up:
            self._say(WARNING, "interface lost carrier")
            return
        self._say(INFO, "interface carrier is back")
        if self.holds_vip:
            self._announce_from_now()  # the neighbours may have forgotten it: a new burst

    def _vip_stray(self, ev: VipStray) -> None:
        """A stray copy goes at once; a removal netlink refused is retried as the Lease
        machine retries it (kubevipd/stray.py: no hot loop)."""
        doing = "trying again" if ev.failed else "removing it"
        self._warn_repeating(f"the VIP is on the interface while not held ({ev.reason}); {doing}")
        self.stray.heard(ev.failed, self.now, self.t.retry_period)

    def _remove_stray(self, out: list[Action]) -> None:
        if self.stray.take(self.now, self.holds_vip):
            out.append(RemoveVip())

    def _decide(self, out: list[Action]) -> None:
        self._remove_stray(out)
        if self.stopping:
            self._drop(out)
            self._become(Role.STOPPED, "stopped")
            return
        link_ok = self.link_down_since is None or self.now < self.link_down_since + (
            self.t.link_down_grace
        )
        should = (not self.t.health_gate or self.healthy is True) and link_ok
        if should and not self.holds_vip and self.now >= self.retry_at:
            out.append(AddVip())
            self.holds_vip = True
            self._announce_from_now()
            self._become(Role.LEADER, "healthy: every healthy node holds the VIP")
        elif not should and self.holds_vip:
            self._drop(out)
            why = "the local apiserver is unhealthy" if link_ok else "the interface lost carrier"
            self._become(Role.FOLLOWER, why)
        elif not should and self.role is Role.STARTING and self.healthy is not None:
            self._become(Role.FOLLOWER, "waiting to be healthy")
        if self.holds_vip:
            out.extend(Announce() for _ in range(self.announcements.due(self.now)))

    def _drop(self, out: list[Action]) -> None:
        if self.holds_vip:
            out.append(RemoveVip())
            self.holds_vip = False
            self.stray.new_removal()
        self.announcements.clear()

    def _announce_from_now(self) -> None:
        self.announcements.start(self.now, self.announce_timing)

    def next_wakeup(self) -> float | None:
        announce_at = self.announcements.next_at()
        times = [] if announce_at is None else [announce_at]
        if self.link_down_since is not None and self.holds_vip:
            times.append(self.link_down_since + self.t.link_down_grace)
        if not self.holds_vip and self.retry_at > self.now:
            times.append(self.retry_at)
        if self.stray.due is not None:
            times.append(self.stray.due)
        return min(times) if times else None

    def status(self) -> PolicyStatus:
        holder = self.identity if self.holds_vip else ""
        return PolicyStatus(holder, None, self.last_error, None)

    def set_timings(self, t: Timings) -> None:
        self.t = t

    def _say(self, level: int, sentence: str) -> None:
        self._said.append((level, sentence))

    def _warn_repeating(self, msg: str) -> None:
        """The same failure again is said once every REPEAT_EVERY seconds, as by the machine."""
        last, at = self._repeat
        if msg != last or self.now - at >= REPEAT_EVERY:
            self._say(WARNING, msg)
            self._repeat = (msg, self.now)

    def _become(self, role: Role, why: str) -> None:
        if role is self.role:
            return
        self.role, self.role_since = role, self.now
        self.transitions += 1
        self._say(INFO, f"{role.value}: {why}, {self.vip_text}")
