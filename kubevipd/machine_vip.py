"""The Lease machine's rules for the VIP on this node's interface.

The kernel fence (a lifetime that ends before any follower may take the lease), a VIP netlink
refused or found where it should not be, losing and handing over leadership (the VIP first,
then the lease), and a VIP a crashed run left behind. See kubevipd/machine_state.py for the
layers.
"""

from __future__ import annotations

import math

from kubevipd.election.base import (
    LeaderRecord,
    release_record,
)
from kubevipd.events import (
    INFO,
    WARNING,
    Action,
    AddVip,
    HealthChanged,
    HoldVip,
    PathChanged,
    RemoveVip,
    Role,
    VipStray,
)
from kubevipd.machine_state import (
    ADD_RETRY_MAX,
    FENCE_MARGIN,
    KERNEL_LATE,
    MachineState,
)


class VipRules(MachineState):
    def _path(self, ev: PathChanged) -> None:
        """The announcer's path came or went. Not said at once: sessions take a moment to come
        up at start and after a router restarts; ``_warn_path`` speaks once the grace is over."""
        self.path_detail = ev.detail
        if ev.ok == (self.path_down_since is None):
            return
        if ev.ok:
            self.path_down_since = None
            if self.path_warned:
                self._say(INFO, f"the VIP can be announced again ({ev.detail})")
            self.path_warned = False
        else:
            self.path_down_since = self.now

    def _warn_path(self) -> None:
        if self._path_failed() and not self.path_warned:
            self.path_warned = True
            self._say(
                WARNING,
                f"the VIP cannot be announced for {self.t.path_grace:g}s: {self.path_detail}; "
                "unfit to hold it: as leader, it hands over to a node that can announce it",
            )

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
        still = "still " if ev.failed else ""
        doing = "trying again" if ev.failed else "removing it"
        self._warn_repeating(
            f"the VIP is {still}on the interface although this node does not hold the lease "
            f"({ev.reason}); {doing}"
        )
        self.stray.heard(ev.failed, self.now, self.t.retry_period)

    def _remove_stray(self, out: list[Action]) -> None:
        if self.stray.take(self.now, self.holds_vip):
            out.append(RemoveVip())

    def _fence_enabled(self) -> bool:
        """The timings leave room for the kernel fence: a prompt renewal's lifetime lasts to our
        own deadline and still ends, however late the kernel acts, before any follower may take
        the lease (shipped 5s/3s: yes; the lab's 3s/2s: no)."""
        room = math.floor(self._duration_s() - KERNEL_LATE - FENCE_MARGIN)
        return room >= math.ceil(self.t.renew_deadline)

    def _vip_lifetime(self) -> int | None:
        """Whole seconds for the kernel to keep the VIP: a fence that needs no running daemon.

        At most what is left of our own deadline, and short enough that it ends, even as late
        as the kernel may act on it (and with the netlink call a moment after ``now``), before
        any follower may take the lease: a daemon that froze, was killed, or restarts too slowly
        loses the VIP by itself in time. 0: no whole second fits now (the lifetime given before
        still ends in time). None: the timings leave no room for the fence at all
        (_fence_enabled): the VIP then stays until removed, and the systemd watchdog with
        ExecStopPost is the only fence.
        """
        if not self._fence_enabled():
            return None
        room = math.floor(self.takeover_after - KERNEL_LATE - FENCE_MARGIN - self.now)
        left = self.deadline - self.now
        return max(0, min(math.ceil(left), room)) if left > 0 else 0

    def _fenced(self, life: int | None) -> None:
        """Record the lifetime given. When it is shorter than what is left of our own deadline
        (a renewal answered late), the deadline is cut to just before it (the kernel may act
        20 ms early): a living daemon removes the VIP itself, and knows it did."""
        if life is None:
            self.kernel_lifetime = self.kernel_ends_at = None
            return
        if life >= 1:
            self.kernel_lifetime, self.kernel_ends_at = life, self.now + life
        if self.kernel_ends_at is not None and self.kernel_ends_at < self.deadline:
            self.deadline = self.kernel_ends_at - 0.02

    def _hold_vip(self, out: list[Action]) -> None:
        """After a renewal: extend the kernel's lifetime of the VIP (or set it forever again,
        after a reload that left no room for a fence). When no whole second fits (a renewal
        answered very late), nothing is sent: the lifetime given before ends in time."""
        if not self.holds_vip:
            return
        life = self._vip_lifetime()
        if (life is None and self.kernel_lifetime is not None) or (life is not None and life >= 1):
            out.append(HoldVip(life))
        self._fenced(life)

    def _fence_for_renewal(self, out: list[Action]) -> None:
        """Before a renewal goes out: cut the VIP's kernel lifetime to this renewal's lease.

        Followers that see the renewal may take the lease its lease duration after they saw it.
        After a reload to a shorter lease that can be before the lifetime given so far ends (it
        was sized for the longer one), and the leader may freeze right after sending, before the
        answer and the HoldVip that follows it: two holders. So the HoldVip comes first, in this
        decision, before the Write, sized for the earlier of the two takeovers: the one known so
        far (the renewal may never land) and now + the new duration (the Write leaves after this
        decision, so followers see it later still). A VIP held forever (timings that had no room
        for the fence, before the reload) gets its first lifetime here the same way. In steady
        state a renewal lets nobody take the lease earlier, and nothing extra is sent.

        Not when the new timings leave no room for the fence (_fence_enabled): the answer then
        sets the VIP forever and the systemd watchdog is the fence for this renewal as for every
        later one; a lifetime cut for this one alone would not fence the next, and would cut the
        deadline (_fenced) below the renew deadline. The lifetime given before stays as it is
        until that answer.
        """
        if not self.holds_vip or not self._fence_enabled():
            return
        takeover = self.now + self._duration_s()
        if takeover >= self.takeover_after and self.kernel_lifetime is not None:
            return  # the lifetime given ends before this renewal lets anyone take the lease
        # Also after this renewal's answer if it fails: the write may have landed all the same.
        self.takeover_after = min(self.takeover_after, takeover)
        self._hold_vip(out)

    def _restore_vip(self, out: list[Action], news: str, then: str) -> None:
        """Put the VIP (back) on the interface while leading, with the lifetime it would get
        now; not when no whole second of lifetime fits: the lease is all but over."""
        life = self._vip_lifetime()
        if life == 0:
            self._say(WARNING, f"{news}; not putting it back this close to the renew deadline")
            return
        self._say(WARNING, f"{news}; {then}")
        self._fenced(life)
        out.append(AddVip(life))
        self._start_announcing()

    def _drop_vip(self, out: list[Action]) -> None:
        if self.holds_vip:
            out.append(RemoveVip())
            self.holds_vip = False
            self.stray.new_removal()
        self.announcements.clear()
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
