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

Three layers, one a module: kubevipd/machine_state.py (what it knows, and the bookkeeping every
rule shares), kubevipd/machine_vip.py (the VIP on this node's interface: the kernel fence, a VIP
refused or stray, losing and handing over, a VIP a crashed run left), and this one (the
election: events in, the decision out, leading and following).
"""

from __future__ import annotations

from kubevipd.election.base import (
    LeaderRecord,
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
    LinkChanged,
    Observed,
    PathChanged,
    RemoveVip,
    Role,
    Stop,
    Timings,
    VipAdded,
    VipAddFailed,
    VipMissing,
    VipMoved,
    VipStray,
    WriteDone,
)
from kubevipd.machine_state import KERNEL_LATE, MachineState, _older
from kubevipd.machine_vip import VipRules

__all__ = ["KERNEL_LATE", "Machine", "MachineState"]


class Machine(VipRules):
    uses_election = True  # the Policy contract: the loop runs the Lease client for it

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
                self._restore_vip(
                    out, "VIP disappeared from the interface while leader", "restoring it"
                )
        elif isinstance(event, VipMoved):
            if self.role is Role.LEADER and self.holds_vip:
                self._restore_vip(out, f"VIP moved: {self.vip_text}", "putting it on")
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
            self._warn_repeating(
                f"announcement failed: {event.error}; trying again at the next due time"
            )
        elif isinstance(event, PathChanged):
            self._path(event)
        self._warn_path()
        self._decide(out)
        said, self._said = tuple(self._said), []
        return Decision(out, said)

    def next_wakeup(self) -> float | None:
        """The monotonic time of the next decision that depends on time alone."""
        times: list[float] = []
        if self.stray.due is not None:
            times.append(self.stray.due)
        if self.path_down_since is not None and not self.path_warned:
            times.append(self.path_down_since + self.t.path_grace)
        if self.role is Role.LEADER:
            times.append(self.deadline)
            if self.in_flight is None:
                times.append(self.next_renew)
            if self.link_down_since is not None:
                times.append(self.link_down_since + self.t.link_down_grace)
            if (announce_at := self.announcements.next_at()) is not None:
                times.append(announce_at)
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
                    life = self._vip_lifetime()
                    if life == 0:  # answered so late that no second of lifetime fits: give it back
                        self.next_attempt = self.now + self.t.lease_duration
                        self._send(out, "release", release_record(r.record, self.wall))
                        return
                    self._fenced(life)
                    out.append(AddVip(life))
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
        term = r.transitions  # this leadership's: a later leader's announcement wins
        out.extend(Announce(term) for _ in range(self.announcements.due(self.now)))
        if self.in_flight is None and self.now >= self.next_renew:
            # Without a path (no BGP session) the leader keeps the VIP, degraded, until a node
            # that can announce it asks to take over: releasing it would leave nobody holding
            # it when every node lost its sessions at once (a top-of-rack router restarting).
            degraded = (self.degraded and not self._gate_open()) or self._path_failed()
            rec = acquire_record(r, self.identity, self._duration_s(), self.wall, degraded)
            self._fence_for_renewal(out)  # a shorter lease after a reload: the lifetime first
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
                f"no healthy node took the lease; campaigning although {self._unfit()}",
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
