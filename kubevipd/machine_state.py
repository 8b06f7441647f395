"""The Lease state machine's state, and the bookkeeping every rule shares.

The machine (kubevipd/machine.py) is built in three layers, one a module: this one holds what it
knows and how it says and records things (a sentence for the Decision, a role change, a write
sent); kubevipd/machine_vip.py the rules for the VIP on this node's interface (the kernel fence,
a VIP refused or stray, hand-over, a VIP a crashed run left); kubevipd/machine.py the election
itself (events in, the decision out, leading and following).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from kubevipd.announce.base import ONCE, AnnounceSchedule, AnnounceTiming
from kubevipd.election.base import (
    LeaderRecord,
    Op,
)
from kubevipd.events import (
    INFO,
    WARNING,
    Action,
    Role,
    Timings,
    Write,
)
from kubevipd.policy import PolicyStatus
from kubevipd.stray import StrayRemoval

REPEAT_EVERY = 60.0  # seconds between two log lines of the same repeating failure
ADD_RETRY_MAX = 60.0  # seconds: the longest a node that could not add the VIP stays out
# The kernel fence (see _vip_lifetime): Linux removes an address whose lifetime ended at its next
# lifetime check, which runs at most once a second with 250 ms of rounding; since Linux 6.9 the
# IPv4 check is a deferrable timer, which an idle CPU runs only when something else wakes it.
# bench/kernel_fence.py measures it: on a 2-CPU VM, up to 0.83 s late idle (1.07 s once), 0.26 s
# busy. This bound keeps room over that and still fits the shipped 5s/3s (a 3 s lifetime).
KERNEL_LATE = 1.9
FENCE_MARGIN = 0.05  # s: the netlink call that sets a lifetime comes a moment after the decision


@dataclass
class MachineState:
    identity: str
    t: Timings
    now: float  # monotonic time at construction
    wall: float = 0.0  # wall-clock time of the last call, for timestamps written to the lease
    vip_at_start: bool = False
    # The deadline of the run that left the VIP (monotonic, this boot), from the run directory;
    # None: unknown, so a VIP found at start cannot be proven live and goes at once.
    inherited_deadline: float | None = None
    # For log lines: "became leader of plndr-cp-lock, VIP 192.168.0.75 on eth0".
    lease_name: str = "the lease"
    vip_text: str = "the VIP"
    # When the announcer wants to be called (its own declaration, kubevipd/announce/base.py).
    announce_timing: AnnounceTiming = ONCE

    role: Role = Role.STARTING
    role_since: float = 0.0
    transitions: int = 0
    observed: LeaderRecord | None = None
    seen: bool = False  # any observation yet
    observed_at: float = 0.0
    in_flight: Op | None = None
    deadline: float = 0.0  # leader: the VIP must be gone by then unless renewed
    next_renew: float = 0.0
    next_attempt: float = 0.0  # follower: backoff after an error
    last_renew_ok: float | None = None
    last_error: str = ""
    healthy: bool | None = None
    link_up: bool = True
    link_down_since: float | None = None
    # The announcer's path (BGP: a session established to at least one peer): None while it
    # is up, else since when it is down.
    path_down_since: float | None = None
    path_detail: str = ""
    path_warned: bool = False
    holds_vip: bool = False
    degraded: bool = False  # leading although unhealthy, because no healthy node took over
    stopping: bool = False
    requested_takeover_of: str | None = None
    announcements: AnnounceSchedule = field(default_factory=AnnounceSchedule)
    step_down_reason: str = ""
    # Writes still out whose answers no longer gate the next one: a release went out beside
    # them, because a renewal hung on a dying apiserver must not delay a hand-over.
    superseded: list[Op] = field(default_factory=list)
    re_released: bool = False  # a release that met our own late renewal was sent again
    # After the VIP could not be added: no campaign before then, so the lease goes to a node
    # that can hold the VIP instead of coming back here at once.
    cannot_hold_until: float = 0.0
    add_failures: int = 0  # in a row; a renew after the VIP went up resets it
    # The earliest a follower may take the lease after our last successful write: its sent
    # time plus the lease duration it wrote. The kernel lifetime of the VIP ends before it.
    takeover_after: float = 0.0
    kernel_lifetime: int | None = None  # the lifetime last given to the VIP (None: forever)
    kernel_ends_at: float | None = None  # when that lifetime ends (monotonic; None: never)
    # A VIP on the interface that this node does not hold: when to remove it again (None: not
    # pending), and how many removals failed in a row.
    stray: StrayRemoval = field(default_factory=StrayRemoval)  # a VIP we must not have
    # The last repeating warning and when it was logged: a failure that repeats every retry
    # period is logged once a minute, not every second.
    _repeat: tuple[str, float] = ("", 0.0)
    # The renew deadline when the acquire or renew in flight was sent (see _held_for).
    _sent_renew_deadline: float = float("inf")
    # What it has to say since the last decision (level, sentence): the Decision carries it.
    _said: list[tuple[int, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.role_since = self.now
        self.holds_vip = self.vip_at_start

    def status(self) -> PolicyStatus:
        holder = self.observed.holder if self.observed else ""
        held = self.deadline if self.role is Role.LEADER and self.holds_vip else None
        return PolicyStatus(holder, self.last_renew_ok, self.last_error, held)

    def _say(self, level: int, sentence: str) -> None:
        self._said.append((level, sentence))

    def _warn_repeating(self, msg: str) -> None:
        last, at = self._repeat
        if msg != last or self.now - at >= REPEAT_EVERY:
            self._say(WARNING, msg)
            self._repeat = (msg, self.now)

    def _become(self, role: Role, why: str) -> None:
        if role is self.role:
            return
        self.role = role
        self.role_since = self.now
        self.transitions += 1
        if role is Role.LEADER:
            self._say(INFO, f"became leader of {self.lease_name}, {self.vip_text} ({why})")
        elif role is Role.FOLLOWER:
            holder = self.observed.holder if self.observed else ""
            who = f"; leader is {holder}" if holder and holder != self.identity else ""
            self._say(INFO, f"follower of {self.lease_name} ({why}){who}")
        else:
            self._say(INFO, f"{role.value} ({why})")

    def _send(self, out: list[Action], op: Op, record: LeaderRecord) -> None:
        if op in ("acquire", "renew"):
            self._sent_renew_deadline = self.t.renew_deadline
        self.in_flight = op
        out.append(Write(op, record, self.t.api_timeout))

    def _duration_s(self) -> int:
        """leaseDurationSeconds is whole seconds: rounded up, never down, or followers would
        take a 2.5s lease at 2s while this leader holds until its 2.2s renew deadline."""
        return max(1, math.ceil(self.t.lease_duration - 1e-9))

    def _held_for(self) -> float:
        """How long a successful write lets this node hold the VIP, from when it was sent: the
        renew deadline of the timings that wrote its lease duration, or of today's if a reload
        made it shorter since (a longer one applies from the next write, which carries its
        longer lease duration to the followers)."""
        return min(self.t.renew_deadline, self._sent_renew_deadline)

    def _start_announcing(self) -> None:
        self.announcements.start(self.now, self.announce_timing)

    def _gate_open(self) -> bool:
        """Fit to hold the VIP: the local apiserver healthy (with the gate on) and a path to
        announce it on."""
        return (not self.t.health_gate or self.healthy is True) and not self._path_failed()

    def _path_failed(self) -> bool:
        """The announcer has had no path to the network for the whole grace."""
        return self.path_down_since is not None and (
            self.now >= self.path_down_since + self.t.path_grace
        )

    def _unfit(self) -> str:
        """Why this node is not fit to hold the VIP, for a sentence."""
        if self._path_failed():
            return f"the VIP cannot be announced ({self.path_detail})"
        return "the local apiserver is not healthy"


def _older(a: str, b: str) -> bool:
    """True when resourceVersion ``a`` is older than ``b`` (both numeric, as etcd's are)."""
    return a.isdigit() and b.isdigit() and int(a) < int(b)
