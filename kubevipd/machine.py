"""The Lease state machine: the policy that holds the VIP while it holds a Kubernetes Lease.

It implements the Policy contract (kubevipd/policy.py) and is pure: events in (lease observed,
write finished, health, link, VIP gone, stop, time), a Decision out (write the lease, add or
remove the VIP, announce, and why). It never blocks, logs nothing itself and never reads a clock
of its own, so every decision is tested with a fake clock (tests/unit/test_machine.py); the main
loop (kubevipd/daemon.py) does the I/O and logs what the decision says.

Safety argument (never two holders): a leader counts its renew deadline from the moment it *sent*
its last successful write; a follower counts the lease's expiry from the moment it *saw* that write
on its own monotonic clock, which is later. renew_deadline < lease_duration, and the leader removes
the VIP when its deadline passes, so it is gone before any follower may take the lease. Remote
timestamps are never compared with the local clock, so skew between nodes cannot break this; the
lease duration written is rounded *up* to whole seconds, so followers never wait less than the
leader holds. Two more rules keep it across a restart and a reload: a VIP left by a crashed run
stays only until that run's own deadline, measured on the monotonic clock (never this host's wall
clock, which may have stepped); and shorter timings shorten the running deadline at once. A
fence for a daemon that froze or died: the VIP's kernel lifetime ends, however late the kernel
acts on it, before any follower may take the lease (_vip_lifetime).
tests/unit/test_safety.py checks the property on arbitrary interleavings (hypothesis).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from kubevipd.announce.base import ONCE, AnnounceTiming
from kubevipd.election.base import (
    LeaderRecord,
    Op,
    acquire_record,
    release_record,
    takeover_request,
)
from kubevipd.events import (
    INFO,
    WARNING,
    Action,
    AddVip,
    Announce,
    Announced,
    AnnounceFailed,
    Decision,
    Event,
    HealthChanged,
    HoldVip,
    LinkChanged,
    Observed,
    RemoveVip,
    Role,
    Stop,
    Timings,
    VipAdded,
    VipAddFailed,
    VipMissing,
    VipStray,
    Write,
    WriteDone,
)
from kubevipd.policy import PolicyStatus

REPEAT_EVERY = 60.0  # seconds between two log lines of the same repeating failure
ADD_RETRY_MAX = 60.0  # seconds: the longest a node that could not add the VIP stays out
# A removal netlink refused is tried again at once (a transient error is gone by then), then
# after these pauses, doubling, up to the retry period: there is no safe alternative to trying.
REMOVE_RETRY_FIRST = 0.05
# The kernel fence (see _vip_lifetime): Linux removes an address whose lifetime ended at its next
# check, which runs at most once a second with 250 ms of slack; so up to this late.
KERNEL_LATE = 1.3


@dataclass
class Machine:
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
    holds_vip: bool = False
    degraded: bool = False  # leading although unhealthy, because no healthy node took over
    stopping: bool = False
    requested_takeover_of: str | None = None
    announce_due: list[float] = field(default_factory=list)
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
    # A VIP on the interface that this node does not hold: when to remove it again (None: not
    # pending), and how many removals failed in a row.
    remove_due: float | None = None
    remove_failures: int = 0
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

    # ---------------------------------------------------------------- input

    def handle(self, event: Event | None, now: float, wall: float) -> Decision:
        """Apply one event (None: only time passed): what to do, in order, and why."""
        self.now, self.wall = now, wall
        out: list[Action] = []
        if isinstance(event, Observed):
            self._observe(event.record)
        elif isinstance(event, WriteDone):
            self._write_done(event, out)
        elif isinstance(event, HealthChanged):
            self._health(event)
        elif isinstance(event, LinkChanged):
            self._link(event.up)
        elif isinstance(event, VipMissing):
            if self.role is Role.LEADER and self.holds_vip:
                self._restore_vip(out)
        elif isinstance(event, VipAddFailed):
            self._vip_add_failed(event.error, out)
        elif isinstance(event, VipStray):
            self._vip_stray(event)
        elif isinstance(event, Stop):
            if not self.stopping:
                self._say(INFO, f"stopping ({event.reason})")
            self.stopping = True
        elif isinstance(event, VipAdded | Announced):
            pass  # what it asked for happened
        elif isinstance(event, AnnounceFailed):
            self._warn_repeating(f"announcement failed: {event.error}; trying again at the next")
        self._decide(out)
        said, self._said = tuple(self._said), []
        return Decision(out, said)

    def next_wakeup(self) -> float | None:
        """The monotonic time of the next decision that depends on time alone."""
        times: list[float] = []
        if self.remove_due is not None:
            times.append(self.remove_due)
        if self.role is Role.LEADER:
            times.append(self.deadline)
            if self.in_flight is None:
                times.append(self.next_renew)
            if self.link_down_since is not None:
                times.append(self.link_down_since + self.t.link_down_grace)
            if self.announce_due:
                times.append(self.announce_due[0])
        elif self.role is Role.STARTING and self.holds_vip:
            times.append(self._inherited_until())
        elif self.role is Role.FOLLOWER and self.in_flight is None:
            at = self._campaign_at()
            if at is not None:
                times.append(max(at, self.next_attempt))
            if self.next_attempt > self.now:
                times.append(self.next_attempt)  # e.g. a takeover request to send again
        return min(times) if times else None

    def set_timings(self, t: Timings) -> None:
        """A reload: the new timings apply at once. A shorter renew deadline also shortens the
        running one (counted from the last renewal sent), or the leader would keep the VIP past
        what followers, told the new lease duration at the next renewal, wait for."""
        self.t = t
        if self.role is Role.LEADER:
            # A leader carrying on from an earlier run has no renewal of its own yet: count
            # from now, which is never later than the renewal the old run made.
            since = self.last_renew_ok if self.last_renew_ok is not None else self.now
            self.deadline = min(self.deadline, since + t.renew_deadline)
            self.next_renew = min(self.next_renew, since + t.retry_period)

    def status(self) -> PolicyStatus:
        holder = self.observed.holder if self.observed else ""
        held = self.deadline if self.role is Role.LEADER and self.holds_vip else None
        return PolicyStatus(holder, self.last_renew_ok, self.last_error, held)

    def restart_announcing(self) -> None:
        """The VIP moved (reload): announce it as after a takeover."""
        if self.role is Role.LEADER:
            self._start_announcing()

    # ---------------------------------------------------------------- rules

    def _observe(self, record: LeaderRecord | None) -> None:
        old = self.observed
        if old is not None and record is not None and _older(record.version, old.version):
            return  # a late watch event: never go back to an older version
        # A new resourceVersion is a write, hence a renewal, even when its content is the same
        # as before (the leader's wall clock stepped back to the last renewTime, or is coarse):
        # the expiry counts from it. client-go compares the record only; waiting longer is safe.
        changed = not self.seen or (
            (old is None) != (record is None)
            or (
                old is not None
                and record is not None
                and (old.content() != record.content() or old.version != record.version)
            )
        )
        if changed:
            self.observed_at = self.now
            holder = record.holder if record else ""
            new_holder = holder and holder != (old.holder if old else "")
            if self.role is not Role.LEADER and new_holder and holder != self.identity:
                self._say(INFO, f"observed leader {holder}")
        self.observed = record
        self.seen = True
        if record is None or not record.degraded:
            self.requested_takeover_of = None

    def _health(self, ev: HealthChanged) -> None:
        if ev.healthy == self.healthy:
            return
        self.healthy = ev.healthy
        if ev.healthy:
            detail = f" ({ev.detail})" if ev.detail else ""
            self._say(INFO, f"local apiserver is healthy{detail}")
        else:
            self._say(WARNING, f"local apiserver is unhealthy: {ev.detail or 'check failed'}")

    def _link(self, up: bool) -> None:
        if up == self.link_up:
            return
        self.link_up = up
        if up:
            self.link_down_since = None
            self._say(INFO, "interface carrier is back")
            if self.role is Role.LEADER:
                self._start_announcing()
        else:
            self.link_down_since = self.now
            self._say(WARNING, "interface lost carrier")

    def _vip_add_failed(self, error: str, out: list[Action]) -> None:
        """A leader that cannot hold the VIP hands the lease to one that can, and waits before
        it campaigns again: a lease duration, doubling while it keeps failing, up to a minute."""
        wait = min(self.t.lease_duration * 2**self.add_failures, ADD_RETRY_MAX)
        self.add_failures += 1
        self.cannot_hold_until = self.now + wait
        if self.role is Role.LEADER:
            self._step_down(out, f"cannot add the VIP ({error}); not campaigning for {wait:g}s")

    def _vip_stray(self, ev: VipStray) -> None:
        if self.holds_vip:
            return  # ours after all (e.g. a VIP a crashed run left, while start-up decides)
        if ev.failed:
            self.remove_failures += 1
            n = self.remove_failures
            pause = 0.0 if n == 1 else min(REMOVE_RETRY_FIRST * 2 ** (n - 2), self.t.retry_period)
            self._warn_repeating(
                f"the VIP is still on the interface although this node does not hold the "
                f"lease ({ev.reason}); trying again"
            )
        else:
            pause = 0.0
            self._warn_repeating(
                f"the VIP is on the interface although this node does not hold the lease "
                f"({ev.reason}); removing it"
            )
        due = self.now + pause
        self.remove_due = due if self.remove_due is None else min(self.remove_due, due)

    def _remove_stray(self, out: list[Action]) -> None:
        if self.remove_due is None:
            return
        if self.holds_vip:
            self.remove_due = None  # leading again: the VIP is meant to be there
        elif self.now >= self.remove_due:
            self.remove_due = None
            out.append(RemoveVip())

    def _vip_lifetime(self) -> int | None:
        """Whole seconds for the kernel to keep the VIP: a fence that needs no running daemon.

        It lasts until our own deadline (a living daemon decides, and removes the VIP itself at
        its deadline; the kernel may act 20 ms early), and ends, even as late as the kernel may
        act on it, before any follower may take the lease: a daemon that froze, was killed, or
        restarts too slowly loses the VIP by itself in time. None when the timings leave no
        such second (the lease must be about 1.3 s longer than the renew deadline): the VIP
        then stays until removed, and the systemd watchdog with ExecStopPost is the only fence.
        """
        left = self.deadline - self.now
        if left <= 0:
            return None
        life = math.ceil(left)
        return life if self.now + life + KERNEL_LATE <= self.takeover_after else None

    def _hold_vip(self, out: list[Action]) -> None:
        """After a renewal: extend the kernel's lifetime of the VIP (or set it forever again,
        after a reload that left no room for a fence)."""
        if not self.holds_vip:
            return
        life = self._vip_lifetime()
        if life is not None or self.kernel_lifetime is not None:
            out.append(HoldVip(life))
        self.kernel_lifetime = life

    def _restore_vip(self, out: list[Action]) -> None:
        life = self._vip_lifetime()
        if self.kernel_lifetime is not None and life is None:
            # Its kernel lifetime ended: renewals failed for about the whole renew deadline,
            # which is all but over. Putting it back for a moment would outlive the fence.
            self._say(WARNING, "VIP expired at the end of its kernel lifetime; not restoring it")
            return
        self._say(WARNING, "VIP disappeared from the interface while leader; restoring it")
        self.kernel_lifetime = life
        out.append(AddVip(life))
        self._start_announcing()

    def _gate_open(self) -> bool:
        return not self.t.health_gate or self.healthy is True

    def _write_done(self, ev: WriteDone, out: list[Action]) -> None:
        r = ev.result
        if ev.op in self.superseded:
            # The write a release overtook: only what it tells of the lease still counts.
            self.superseded.remove(ev.op)
            if r.record is not None:
                self._observe(r.record)
            return
        self.in_flight = None
        if r.record is not None or r.missing:
            self._observe(r.record)
        if not r.ok and not r.conflict and not r.missing:
            self.last_error = r.error
        if ev.op == "acquire":
            if r.ok and r.record is not None:
                if self.stopping:
                    self._send(out, "release", release_record(r.record, self.wall))
                    self._become(Role.STEPPING_DOWN, "acquired the lease while stopping")
                    return
                if self.now >= ev.sent_at + self._held_for():
                    # The answer came after the deadline it would have started: followers may
                    # have taken the lease meanwhile. Never add the VIP for it; give it back.
                    self._warn_repeating(
                        f"acquired the lease, but the answer took {self.now - ev.sent_at:.1f}s, "
                        "past the renew deadline: releasing it"
                    )
                    self.next_attempt = self.now + self.t.lease_duration
                    self._send(out, "release", release_record(r.record, self.wall))
                    return
                self.deadline = ev.sent_at + self._held_for()
                self.next_renew = ev.sent_at + self.t.retry_period
                self.last_renew_ok = ev.sent_at
                self.takeover_after = ev.sent_at + r.record.lease_duration_s
                self.degraded = r.record.degraded
                if not self.holds_vip:
                    self.kernel_lifetime = self._vip_lifetime()
                    out.append(AddVip(self.kernel_lifetime))
                    self.holds_vip = True
                else:
                    self._hold_vip(out)
                self._start_announcing()
                self._become(Role.LEADER, "acquired the lease")
            elif not r.conflict:
                self._warn_repeating(f"could not acquire the lease: {r.error}; retrying")
                self.next_attempt = self.now + self.t.retry_period
            elif r.record is None:
                # A lost race whose read-back failed too: the apiserver is struggling, and the
                # lease as we know it is stale. Wait a retry period instead of trying again now.
                self._warn_repeating(f"lost a race for the lease and cannot read it: {r.error}")
                self.next_attempt = self.now + self.t.retry_period
        elif ev.op == "renew":
            if self.role is not Role.LEADER:
                pass  # a late answer
            elif r.ok and r.record is not None:
                self.deadline = ev.sent_at + self._held_for()
                self.next_renew = ev.sent_at + self.t.retry_period
                self.last_renew_ok = ev.sent_at
                self.takeover_after = ev.sent_at + r.record.lease_duration_s
                self.degraded = r.record.degraded
                self.add_failures = 0
                self._hold_vip(out)
            elif r.conflict and r.record is not None and r.record.holder == self.identity:
                self.next_renew = self.now  # someone touched the lease; renew on the new version
            elif r.conflict or r.missing:
                holder = r.record.holder if r.record else "nobody"
                self._lose(out, f"the lease was taken over by {holder or 'nobody'}")
            else:
                self.next_renew = self.now + self.t.retry_period / 2
                self._say(WARNING, f"renew failed: {r.error}")
        elif ev.op == "release":
            mine = r.conflict and r.record is not None and r.record.holder == self.identity
            if mine and r.record is not None and not self.re_released:
                # A renewal we had sent landed after the release: release that version too.
                self.re_released = True
                self._send(out, "release", release_record(r.record, self.wall))
                return
            if not r.ok:
                self._say(
                    WARNING,
                    f"could not release the lease ({r.error}); followers wait for it to expire",
                )
            self._become(Role.STOPPED if self.stopping else Role.FOLLOWER, self.step_down_reason)
        elif ev.op == "request" and not r.ok:
            # Lost a race (the leader renewed meanwhile) or failed: ask again after a retry
            # period, unless the fresh lease shows the request is there already.
            self.requested_takeover_of = None
            self.next_attempt = self.now + self.t.retry_period

    def _decide(self, out: list[Action]) -> None:
        self._remove_stray(out)
        if self.role is Role.STARTING:
            if self.seen:
                self._settle_startup(out)
            elif self.holds_vip and self.now >= self._inherited_until():
                why = (
                    "the lease cannot be read to prove this node still holds it"
                    if self.inherited_deadline is not None
                    else "no deadline of that run is known on this boot"
                )
                self._say(WARNING, f"removing a VIP left behind by an earlier run: {why}")
                out.append(RemoveVip())
                self.holds_vip = False
        if self.role is Role.LEADER:
            self._lead(out)
        elif self.role in (Role.FOLLOWER, Role.STARTING):
            self._follow(out)

    def _inherited_until(self) -> float:
        """Until when a VIP found at start may stay while the lease is not read yet: the old
        run's own deadline. No follower may take the lease before it (that is what the old run
        kept it by), so waiting for the lease that long is safe, and a restart on a loaded host,
        whose first read is slow, still carries on instead of dropping the VIP."""
        return self.now if self.inherited_deadline is None else self.inherited_deadline

    def _inherited_deadline_for(self, r: LeaderRecord | None) -> float | None:
        """The deadline a restarted leader carries on with, or None: the lease must name this
        node, and the old run's deadline (monotonic) must not have passed."""
        until = self.inherited_deadline
        if r is None or r.holder != self.identity or until is None or self.now >= until:
            return None
        return min(until, self.now + self.t.renew_deadline)

    def _settle_startup(self, out: list[Action]) -> None:
        """A VIP left by a crashed run stays only if this node still holds the lease, and only
        until that run's own deadline (monotonic: the lease's renewTime is this host's wall clock,
        which may have stepped since), and never longer than renew_deadline from now."""
        if self.holds_vip:
            until = self._inherited_deadline_for(self.observed)
            if until is not None and not self.stopping:
                self.deadline = until
                self.next_renew = self.now
                self._start_announcing()
                self._become(Role.LEADER, "this node still holds the lease from an earlier run")
                return
            self._say(
                WARNING,
                "removing a VIP left behind by an earlier run (this node does not hold the lease)",
            )
            out.append(RemoveVip())
            self.holds_vip = False
        if self.stopping:
            self._become(Role.STOPPED, "stopped before the election started")
        else:
            self._become(Role.FOLLOWER, "watching the lease")

    def _lead(self, out: list[Action]) -> None:
        if self.now >= self.deadline:
            self._lose(
                out,
                f"could not renew the lease within {self.t.renew_deadline:g}s "
                f"({self.last_error or 'no answer'})",
            )
            self._release_after_loss(out)
            return
        r = self.observed
        if r is None:
            self._lose(out, "the lease was deleted")
            return
        if r.holder != self.identity:
            self._lose(out, f"the lease now names {r.holder or 'no holder'}")
            return
        reason = ""
        if self.stopping:
            reason = "shutting down"
        elif (
            self.link_down_since is not None
            and self.now >= self.link_down_since + self.t.link_down_grace
        ):
            reason = f"the interface has had no carrier for {self.t.link_down_grace:g}s"
        elif self.t.health_gate and self.healthy is False and not self.degraded:
            reason = "the local apiserver is unhealthy"
        elif self.degraded and r.takeover_requested_by:
            reason = f"healthy node {r.takeover_requested_by} asked to take over"
        if reason:
            self._step_down(out, reason)
            return
        while self.announce_due and self.announce_due[0] <= self.now:
            self.announce_due.pop(0)
            if not self.announce_due:
                refresh = self.announce_timing.refresh
                if refresh is not None:
                    self.announce_due.append(self.now + refresh)
            out.append(Announce())
        if self.in_flight is None and self.now >= self.next_renew:
            degraded = self.degraded and not self._gate_open()
            rec = acquire_record(r, self.identity, self._duration_s(), self.wall, degraded)
            self._send(out, "renew", rec)

    def _follow(self, out: list[Action]) -> None:
        if self.stopping:
            if self.in_flight is None:
                self._become(Role.STOPPED, "stopped")
            return
        if self.in_flight is not None or self.role is Role.STARTING:
            return
        r = self.observed
        if (
            r is not None
            and r.holder not in ("", self.identity)
            and r.degraded
            and self._gate_open()
            and self.link_up
            and self.requested_takeover_of != r.holder
            and not r.takeover_requested_by
            and self.now >= self.next_attempt
        ):
            self._say(
                INFO,
                f"leader {r.holder} is degraded and this node is healthy: asking it to hand over",
            )
            self.requested_takeover_of = r.holder
            self._send(out, "request", takeover_request(r, self.identity))
            return
        at = self._campaign_at()
        if at is None or self.now < max(at, self.next_attempt):
            return
        degraded = not self._gate_open()
        if degraded:
            self._say(
                WARNING,
                "no healthy node took the lease; campaigning although the local apiserver "
                "is not healthy",
            )
        rec = acquire_record(r, self.identity, self._duration_s(), self.wall, degraded)
        self._send(out, "acquire", rec)

    def _campaign_at(self) -> float | None:
        """When this follower may try to take the lease, or None (not eligible)."""
        if not self.seen or self.stopping or not self.link_up:
            return None
        r = self.observed
        if r is None or r.holder == self.identity:
            at = self.observed_at
        elif r.holder == "":
            at = self.observed_at  # released: no need to wait
        else:
            at = self.observed_at + max(r.lease_duration_s, 1)
        if not self._gate_open():
            # Give healthy nodes a full lease duration to take it first.
            at += self.t.lease_duration
        return max(at, self.cannot_hold_until)

    # ---------------------------------------------------------------- helpers

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

    def _send(self, out: list[Action], op: Op, record: LeaderRecord) -> None:
        if op in ("acquire", "renew"):
            self._sent_renew_deadline = self.t.renew_deadline
        self.in_flight = op
        out.append(Write(op, record, self.t.api_timeout))

    def _start_announcing(self) -> None:
        self.announce_due = [self.now + d for d in self.announce_timing.burst]

    def _say(self, level: int, sentence: str) -> None:
        self._said.append((level, sentence))

    def _warn_repeating(self, msg: str) -> None:
        last, at = self._repeat
        if msg != last or self.now - at >= REPEAT_EVERY:
            self._say(WARNING, msg)
            self._repeat = (msg, self.now)

    def _drop_vip(self, out: list[Action]) -> None:
        if self.holds_vip:
            out.append(RemoveVip())
            self.holds_vip = False
            self.remove_failures = 0  # a new removal: a failure of it is first tried again at once
        self.announce_due = []
        self.degraded = False

    def _lose(self, out: list[Action], why: str) -> None:
        """Leadership is gone (or cannot be proven): the VIP goes at once, nothing is written."""
        self._drop_vip(out)
        self._become(Role.STOPPED if self.stopping else Role.FOLLOWER, f"lost leadership: {why}")

    def _release_after_loss(self, out: list[Action]) -> None:
        """After the renew deadline the VIP is already gone; releasing the version we last
        wrote lets a follower take over now instead of at expiry (the backend also sends it to
        the other apiservers, for when ours is the one that failed). The write is conditional
        on that version, so it changes nothing if anyone wrote since. This node then waits a
        lease duration before it campaigns: it just proved the worst candidate."""
        self.next_attempt = max(self.next_attempt, self.now + self.t.lease_duration)
        o = self.observed
        if o is not None and o.holder == self.identity:
            self._release_now(out, o)

    def _release_now(self, out: list[Action], record: LeaderRecord) -> None:
        """Send the release at once, beside any write still out (which it supersedes): both
        are conditional on the version, so at most one lands, and if our renewal lands first,
        the release is sent again on its version (see _write_done)."""
        if self.in_flight is not None:
            self.superseded.append(self.in_flight)
        self.re_released = False
        self._send(out, "release", release_record(record, self.wall))

    def _step_down(self, out: list[Action], why: str) -> None:
        """Hand over on purpose: the VIP first, then the lease, so a follower takes it at once."""
        self._drop_vip(out)
        self.step_down_reason = f"stepped down: {why}"
        assert self.observed is not None
        self._release_now(out, self.observed)
        self._become(Role.STEPPING_DOWN, f"stepping down: {why}")

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


def _older(a: str, b: str) -> bool:
    """True when resourceVersion ``a`` is older than ``b`` (both numeric, as etcd's are)."""
    return a.isdigit() and b.isdigit() and int(a) < int(b)
