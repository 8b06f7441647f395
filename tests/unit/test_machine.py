"""The state machine that owns the VIP, driven by a fake clock: every decision, no I/O."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

from kubevipd.announce.base import ONCE, AnnounceTiming
from kubevipd.election.base import DEGRADED, TAKEOVER, LeaderRecord, WriteResult
from kubevipd.events import (
    AddVip,
    Announce,
    Decision,
    HealthChanged,
    HoldVip,
    LinkChanged,
    Observed,
    RemoveVip,
    Role,
    Stop,
    Timings,
    VipAddFailed,
    VipMissing,
    VipMoved,
    VipStray,
    Write,
    WriteDone,
)
from kubevipd.machine import KERNEL_LATE, Machine

T = Timings(lease_duration=5, renew_deadline=3, retry_period=1, link_down_grace=1)
ARP = AnnounceTiming(burst=(0.0, 0.25, 0.5, 1.0), refresh=3.0)  # what ArpAnnouncer declares
WALL0 = 1_800_000_000.0


class Sim:
    """One machine on a fake clock; ``wall`` runs with the monotonic clock unless skewed."""

    def __init__(
        self,
        ident: str = "n1",
        t: Timings = T,
        vip_at_start: bool = False,
        inherited: float | None = None,
        skew: float = 0.0,
    ) -> None:
        self.now = 100.0
        self.skew = skew
        self.said: list[str] = []  # every sentence of every decision, in order
        self.m = Machine(
            ident,
            t,
            now=self.now,
            wall=WALL0 + skew,
            vip_at_start=vip_at_start,
            inherited_deadline=inherited,
            announce_timing=ARP,
        )

    @property
    def wall(self) -> float:
        return WALL0 + self.now - 100.0 + self.skew

    def decide(self, e: object) -> Decision:
        d = self.m.handle(e, self.now, self.wall)  # type: ignore[arg-type]
        self.said.extend(sentence for _, sentence in d.said)
        return d

    def ev(self, e: object) -> list[object]:
        """The actions, without the kernel fence's lifetimes (HoldVip, AddVip's lifetime): the
        tests of the fence look at those through decide()."""
        return [
            AddVip() if isinstance(a, AddVip) else a
            for a in self.decide(e).actions
            if not isinstance(a, HoldVip)
        ]

    def tick(self, dt_: float) -> list[object]:
        self.now += dt_
        return self.ev(None)

    def healthy(self) -> list[object]:
        return self.ev(HealthChanged(True))

    def write_of(self, actions: list[object]) -> Write:
        writes = [a for a in actions if isinstance(a, Write)]
        assert len(writes) == 1, actions
        return writes[0]

    def done(self, w: Write, sent_at: float | None = None) -> WriteDone:
        """Its success, stored as written (version+1)."""
        stored = replace(w.record, version=str(int(w.record.version or "0") + 1))
        at = self.now if sent_at is None else sent_at
        return WriteDone(w.op, WriteResult(ok=True, record=stored), at)

    def complete(self, w: Write, ok: bool = True, **kw: object) -> list[object]:
        """The write returns now; when ok, the stored record is what was written (version+1)."""
        if ok:
            return self.ev(self.done(w))
        return self.ev(WriteDone(w.op, WriteResult(ok=False, **kw), self.now))  # type: ignore[arg-type]


class _AnyAnnounce:
    """Equal to an Announce of any term: most tests here are about when, not which term."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Announce)

    __hash__ = None  # type: ignore[assignment]


ANNOUNCE = _AnyAnnounce()


def held_by(holder: str, version: str = "7", duration: int = 5, **kw: object) -> LeaderRecord:
    when = dt.datetime.fromtimestamp(WALL0, dt.UTC)
    return LeaderRecord(
        holder=holder,
        lease_duration_s=duration,
        acquire_time=when,
        renew_time=when,
        transitions=kw.pop("transitions", 3),  # type: ignore[arg-type]
        version=version,
        **kw,  # type: ignore[arg-type]
    )


def leader(ident: str = "n1") -> tuple[Sim, Write]:
    """A machine that just became leader of a lease that did not exist."""
    s = Sim(ident)
    s.healthy()
    w = s.write_of(s.ev(Observed(None)))
    out = s.complete(w)
    assert s.m.role is Role.LEADER and AddVip() in out
    return s, w


# ------------------------------------------------------------------ acquiring


def test_follower_creates_a_missing_lease_at_once_and_leads() -> None:
    s = Sim()
    s.healthy()
    w = s.write_of(s.ev(Observed(None)))
    assert w.op == "acquire" and w.record.version == "" and w.record.holder == "n1"
    assert w.record.transitions == 0 and w.record.lease_duration_s == 5
    out = s.complete(w)
    assert out[:2] == [AddVip(), ANNOUNCE]
    assert s.m.role is Role.LEADER and s.m.holds_vip


def test_a_held_lease_is_taken_only_after_lease_duration_on_the_followers_own_clock() -> None:
    s = Sim("n2")
    s.healthy()
    s.skew = -3600.0  # the follower's wall clock is an hour behind: it must not matter
    assert s.ev(Observed(held_by("n1"))) == []
    assert s.tick(4.99) == []
    w = s.write_of(s.tick(0.01))
    assert w.op == "acquire" and w.record.version == "7"
    assert w.record.transitions == 4  # a takeover counts one more transition, as client-go does


def test_renewals_seen_by_the_follower_restart_its_expiry() -> None:
    s = Sim("n2")
    s.healthy()
    s.ev(Observed(held_by("n1", version="7")))
    s.tick(4.0)
    renewed = replace(
        held_by("n1", version="8"), renew_time=held_by("n1").renew_time + dt.timedelta(seconds=4)
    )
    s.ev(Observed(renewed))
    assert s.tick(4.9) == []
    assert s.write_of(s.tick(0.2)).op == "acquire"


def test_a_released_lease_is_taken_at_once() -> None:
    s = Sim("n2")
    s.healthy()
    s.ev(Observed(held_by("n1")))
    w = s.write_of(s.ev(Observed(held_by("", version="8", duration=1))))
    assert w.op == "acquire" and w.record.holder == "n2"


def test_a_lost_race_is_not_an_error_the_follower_keeps_watching() -> None:
    s = Sim("n2")
    s.healthy()
    w = s.write_of(s.ev(Observed(held_by("", version="8", duration=1))))
    fresh = held_by("n3", version="9")
    out = s.ev(WriteDone("acquire", WriteResult(ok=False, conflict=True, record=fresh), s.now))
    assert out == [] and s.m.role is Role.FOLLOWER and s.m.observed == fresh
    assert not s.m.last_error
    assert w.record.version == "8"


def test_an_acquire_error_is_retried_after_retry_period() -> None:
    s = Sim()
    s.healthy()
    w = s.write_of(s.ev(Observed(None)))
    assert s.complete(w, ok=False, error="HTTP 500", error_kind="server") == []
    assert s.tick(0.9) == []
    assert s.write_of(s.tick(0.1)).op == "acquire"


def test_a_repeating_acquire_failure_is_said_once_a_minute() -> None:
    s = Sim()
    s.healthy()
    w = s.write_of(s.ev(Observed(None)))
    for _ in range(30):  # 30 failures, one a second
        s.complete(w, ok=False, error="HTTP 403: forbidden", error_kind="forbidden")
        w = s.write_of(s.tick(1.0))
    lines = [line for line in s.said if "could not acquire" in line]
    assert lines == ["could not acquire the lease: HTTP 403: forbidden; retrying"]
    for _ in range(31):
        s.complete(w, ok=False, error="HTTP 403: forbidden", error_kind="forbidden")
        w = s.write_of(s.tick(1.0))
    assert len([line for line in s.said if "could not acquire" in line]) == 2
    d = s.decide(WriteDone(w.op, WriteResult(ok=False, error="HTTP 500: boom"), s.now))
    assert d.why == "could not acquire the lease: HTTP 500: boom; retrying"  # a new one at once


def test_a_late_watch_event_never_moves_the_observation_back() -> None:
    s = Sim("n2")
    s.healthy()
    s.ev(Observed(held_by("n1", version="9")))
    s.ev(Observed(held_by("n3", version="8")))
    assert s.m.observed is not None and s.m.observed.holder == "n1"


# ------------------------------------------------------------------ leading


def test_the_leader_renews_every_retry_period_keeping_acquire_time_and_transitions() -> None:
    s, first = leader()
    w = s.write_of(s.tick(1.0))
    assert w.op == "renew" and w.record.version == "1"
    assert w.record.acquire_time == first.record.acquire_time
    assert w.record.renew_time is not None and first.record.renew_time is not None
    assert (w.record.renew_time - first.record.renew_time).total_seconds() == pytest.approx(1.0)
    assert w.record.transitions == first.record.transitions
    s.complete(w)
    assert s.m.role is Role.LEADER
    assert s.write_of(s.tick(1.0)).op == "renew"


def test_announcements_burst_after_takeover_then_repeat_every_refresh() -> None:
    s, _ = leader()
    sent = []
    for _ in range(700):  # 7 s in 10 ms steps, renewals answered at once
        out = s.tick(0.01)
        sent += [round(s.now - 100.0, 2) for a in out if isinstance(a, Announce)]
        for a in out:
            if isinstance(a, Write):
                s.complete(a)
    assert sent == [0.25, 0.5, 1.0, 4.0, 7.0]


def test_a_leader_that_cannot_renew_drops_the_vip_at_the_renew_deadline() -> None:
    s, _ = leader()
    acquired_at = s.now
    removed_at = None
    for _ in range(400):
        out = s.tick(0.01)
        for a in out:
            if isinstance(a, Write):
                s.complete(a, ok=False, error="no answer within 1.0s", error_kind="timeout")
        if RemoveVip() in out:
            removed_at = s.now
            break
    assert removed_at == pytest.approx(acquired_at + 3.0, abs=0.011)
    assert s.m.role is Role.FOLLOWER and not s.m.holds_vip
    # The error kept is the write's own; the sentence says what it cost, with that error.
    assert s.m.last_error == "no answer within 1.0s"
    lost = "lost leadership: could not renew the lease within 3s (no answer within 1.0s)"
    assert any(lost in line for line in s.said), s.said


def test_the_deadline_holds_even_while_a_renew_hangs() -> None:
    s, _ = leader()
    w = s.write_of(s.tick(1.0))
    assert w.op == "renew"
    out: list[object] = []
    while RemoveVip() not in out:
        out = s.tick(0.05)
        assert s.now < 104
    assert s.now == pytest.approx(103.0, abs=0.051)
    # The VIP goes at the deadline and the release goes out at once, beside the hung renew.
    rel = s.write_of(out)
    assert out.index(RemoveVip()) < out.index(rel)
    assert rel.op == "release" and rel.record.version == "1"
    # The hung renew comes back too late: no VIP from it. It did land (version 2), so the
    # release meets a conflict with a lease that still names this node: released again on it.
    assert s.complete(w, ok=True) == [] and s.m.role is Role.FOLLOWER
    renewed = s.m.observed
    assert renewed is not None and renewed.version == "2"
    out = s.ev(WriteDone("release", WriteResult(ok=False, conflict=True, record=renewed), s.now))
    again = s.write_of(out)
    assert again.op == "release" and again.record.version == "2" and again.record.holder == ""
    assert AddVip() not in out
    s.ev(WriteDone("release", WriteResult(ok=False, conflict=True, record=renewed), s.now))
    assert s.m.in_flight is None  # only once


def test_a_leader_past_its_renew_deadline_releases_the_last_version_it_wrote() -> None:
    """Its apiserver fails every call: the VIP goes at the deadline, then a conditional release
    (the backend also sends it to the other apiservers), so followers need not wait for expiry;
    and this node, the worst candidate now, stays out for a lease duration."""
    s, first = leader()
    last_version = "1"  # what the acquire stored
    out: list[object] = []
    for _ in range(400):
        out = s.tick(0.01)
        for a in [a for a in out if isinstance(a, Write) and a.op == "renew"]:
            s.complete(a, ok=False, error="cannot reach the apiserver", error_kind="network")
        if RemoveVip() in out:
            break
    assert s.m.role is Role.FOLLOWER and not s.m.holds_vip
    assert out.index(RemoveVip()) < out.index(s.write_of(out))  # the VIP first
    rel = s.write_of(out)
    assert rel.op == "release" and rel.record.version == last_version
    assert rel.record.holder == "" and rel.record.transitions == first.record.transitions
    lost_at = s.now
    s.complete(rel, ok=True)
    # Released, yet this node does not campaign again before a lease duration has passed.
    for _ in range(int(T.lease_duration * 10) - 1):
        assert not [a for a in s.tick(0.1) if isinstance(a, Write)], s.now - lost_at
    s.tick(0.2)
    assert s.m.in_flight == "acquire"


def test_a_leader_whose_lease_was_taken_writes_nothing() -> None:
    s, _ = leader()
    out = s.ev(Observed(held_by("n2", version="9")))
    assert RemoveVip() in out and not [a for a in out if isinstance(a, Write)]


def test_never_two_holders_when_the_leader_is_cut_off_from_the_apiserver() -> None:
    """Two machines share one lock; A loses the apiserver. B must not hold the VIP until A
    has dropped it, whatever the delays."""
    for watch_delay in (0.0, 0.01, 0.2, 0.9):
        a, _ = leader("a")
        b = Sim("b")
        b.now = a.now
        b.healthy()
        b.ev(Observed(a.m.observed))
        pending: list[tuple[float, object]] = []
        partitioned = False
        for step in range(1000):
            for sim in (a, b):
                sim.now = 100.0 + step * 0.01 + (a.now - 100.0 if step == 0 else 0)
            now = a.now
            due = [e for t_, e in pending if t_ <= now]
            pending = [(t_, e) for t_, e in pending if t_ > now]
            for e in due:
                b.ev(e)
            out_a = a.ev(None)
            for act in out_a:
                if isinstance(act, Write):
                    if step > 150:
                        partitioned = True
                    if partitioned:
                        a.complete(act, ok=False, error="timeout", error_kind="timeout")
                    else:
                        a.complete(act)
                        pending.append((now + watch_delay, Observed(a.m.observed)))
            for act in b.ev(None):
                if isinstance(act, Write):
                    b.complete(act)
            assert not (a.m.holds_vip and b.m.holds_vip), (watch_delay, now)
        assert b.m.role is Role.LEADER and not a.m.holds_vip


def test_a_renew_conflict_on_our_own_lease_renews_again_at_once() -> None:
    s, _ = leader()
    w = s.write_of(s.tick(1.0))
    mine = replace(s.m.observed, version="5")  # type: ignore[arg-type]
    out = s.ev(WriteDone("renew", WriteResult(ok=False, conflict=True, record=mine), s.now))
    assert s.write_of(out).record.version == "5"
    assert w.op == "renew"


def test_a_lease_taken_by_another_node_drops_the_vip_at_once() -> None:
    s, _ = leader()
    s.write_of(s.tick(1.0))
    theirs = held_by("n9", version="44")
    out = s.ev(WriteDone("renew", WriteResult(ok=False, conflict=True, record=theirs), s.now))
    assert out == [RemoveVip()] and s.m.role is Role.FOLLOWER


def test_a_vip_deleted_by_hand_is_restored_and_announced() -> None:
    s, _ = leader()
    out = s.ev(VipMissing())
    assert out[:2] == [AddVip(), ANNOUNCE]


def test_a_leader_that_cannot_add_the_vip_hands_the_lease_to_a_node_that_can() -> None:
    s, _ = leader()
    out = s.ev(VipAddFailed("cannot add fd00::75/128 to eth0: Permission denied"))
    assert out[0] == RemoveVip()  # whatever part of it went up
    w = s.write_of(out)
    assert w.op == "release" and s.m.role is Role.STEPPING_DOWN
    s.complete(w)
    assert s.m.role is Role.FOLLOWER
    # The released lease is free, but this node stays out for a lease duration (5s) ...
    released = replace(w.record, version="2")
    assert s.ev(Observed(released)) == []
    assert s.tick(4.9) == []
    # ... then campaigns again; failing again doubles the wait (10s).
    w = s.write_of(s.tick(0.2))
    assert w.op == "acquire"
    assert AddVip() in s.complete(w)
    w = s.write_of(s.ev(VipAddFailed("still no IPv6")))
    assert w.op == "release"
    s.complete(w)
    s.ev(Observed(replace(w.record, version="4")))
    assert s.tick(9.9) == []
    assert s.write_of(s.tick(0.2)).op == "acquire"


def test_a_node_that_added_the_vip_and_renewed_forgets_its_failures() -> None:
    s, _ = leader()
    s.ev(VipAddFailed("interface gone"))
    assert s.m.add_failures == 1
    s2, _ = leader()
    s2.m.add_failures = 3
    s2.complete(s2.write_of(s2.tick(1.0)))  # a renew while holding the VIP
    assert s2.m.add_failures == 0


def test_a_failed_add_while_following_only_delays_the_next_campaign() -> None:
    s = Sim("n2")
    s.healthy()
    s.ev(Observed(held_by("n1")))
    assert s.ev(VipAddFailed("late news")) == []
    assert s.m.role is Role.FOLLOWER and s.m.cannot_hold_until == s.now + 5


def test_a_removal_netlink_refused_is_tried_again_at_once_then_with_a_growing_pause() -> None:
    s, _ = leader()
    s.tick(3.0)  # no renewal answered: the deadline passes
    assert s.m.role is Role.FOLLOWER and not s.m.holds_vip
    # The main loop could not remove it: at once, then 0.05s, 0.1s, ... up to the retry period.
    assert s.ev(VipStray("could not remove it: EBUSY", failed=True)) == [RemoveVip()]
    pauses = []
    for _ in range(6):
        assert s.ev(VipStray("could not remove it: EBUSY", failed=True)) == []
        due = s.m.next_wakeup()
        assert due is not None
        pauses.append(round(due - s.now, 3))
        assert s.tick(due - s.now - 0.001) == []
        assert s.tick(0.001) == [RemoveVip()]
    assert pauses == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0]


def test_a_vip_seen_on_a_follower_is_removed_and_a_leaders_is_kept() -> None:
    s = Sim("n2")
    s.healthy()
    s.ev(Observed(held_by("n1")))
    assert s.ev(VipStray("netlink shows 1 of its addresses on eth0")) == [RemoveVip()]
    assert s.m.next_wakeup() != s.now  # nothing more pending
    lead, _ = leader()
    assert lead.ev(VipStray("netlink shows 1 of its addresses on eth0")) == []


def test_a_pending_removal_is_dropped_when_the_node_leads_again() -> None:
    s, _ = leader()
    s.tick(3.0)
    s.ev(VipStray("could not remove it", failed=True))  # the at-once retry
    s.ev(VipStray("could not remove it", failed=True))  # pending, 0.05s from now
    s.m.holds_vip = True  # e.g. it won again and added the VIP in between
    assert RemoveVip() not in s.tick(0.1)
    assert s.m.stray.due is None


def test_a_vip_gone_while_following_is_left_alone() -> None:
    s = Sim("n2")
    s.healthy()
    s.ev(Observed(held_by("n1")))
    assert s.ev(VipMissing()) == []


# ------------------------------------------------------------------ handing over


def test_sigterm_removes_the_vip_then_releases_like_release_on_cancel() -> None:
    s, _ = leader()
    out = s.ev(Stop())
    assert out[0] == RemoveVip()
    w = s.write_of(out)
    assert w.op == "release" and w.record.holder == "" and w.record.lease_duration_s == 1
    assert w.record.transitions == 0 and w.record.version == "1"
    assert s.m.role is Role.STEPPING_DOWN
    s.complete(w)
    assert s.m.role is Role.STOPPED


def test_sigterm_while_a_renew_hangs_releases_at_once() -> None:
    """A renewal hung on a dying apiserver must not delay the hand-over: the release goes out
    beside it (to the other apiservers too), and its answer, when it comes, changes nothing."""
    s, _ = leader()
    w = s.write_of(s.tick(1.0))
    out = s.ev(Stop())
    assert out[0] == RemoveVip() and s.m.role is Role.STEPPING_DOWN
    rel = s.write_of(out)
    assert rel.op == "release" and rel.record.version == "1"
    s.complete(rel)
    assert s.m.role is Role.STOPPED
    assert s.complete(w, ok=False, error="no answer", error_kind="timeout") == []
    assert s.m.role is Role.STOPPED


def test_sigterm_on_a_follower_stops_at_once() -> None:
    s = Sim("n2")
    s.healthy()
    s.ev(Observed(held_by("n1")))
    assert s.ev(Stop()) == [] and s.m.role is Role.STOPPED


def test_an_acquire_that_lands_during_stop_is_released_without_adding_the_vip() -> None:
    s = Sim()
    s.healthy()
    w = s.write_of(s.ev(Observed(None)))
    s.ev(Stop())
    out = s.complete(w)
    assert AddVip() not in out and s.write_of(out).op == "release"


def test_a_failed_release_still_ends_the_stop() -> None:
    s, _ = leader()
    w = s.write_of(s.ev(Stop()))
    s.complete(w, ok=False, error="no answer", error_kind="timeout")
    assert s.m.role is Role.STOPPED


# ------------------------------------------------------------------ health gate


def test_a_leader_whose_apiserver_turns_unhealthy_hands_over_at_once() -> None:
    s, _ = leader()
    out = s.ev(HealthChanged(False, "HTTP 500"))
    assert out[0] == RemoveVip() and s.write_of(out).op == "release"
    s.complete(s.write_of(out))
    assert s.m.role is Role.FOLLOWER


def test_an_unhealthy_node_lets_healthy_ones_go_first() -> None:
    s = Sim("n2")
    s.ev(HealthChanged(False, "HTTP 500"))
    s.ev(Observed(held_by("", version="8", duration=1)))
    assert s.tick(4.99) == []
    w = s.write_of(s.tick(0.01))  # nobody healthy took it within a lease duration
    assert w.record.annotations.get(DEGRADED) == "true"


def test_health_unknown_counts_as_not_healthy() -> None:
    s = Sim("n2")
    assert s.ev(Observed(None)) == []


def test_without_the_gate_health_does_not_matter() -> None:
    s = Sim("n2", t=replace(T, health_gate=False))
    s.ev(HealthChanged(False))
    assert s.write_of(s.ev(Observed(None))).op == "acquire"


def test_a_degraded_leader_keeps_the_vip_until_a_healthy_node_asks() -> None:
    s = Sim("n1")
    s.ev(HealthChanged(False))
    s.ev(Observed(None))
    w = s.write_of(s.tick(5.0))
    s.complete(w)
    assert s.m.role is Role.LEADER and s.m.degraded
    renew = s.write_of(s.tick(1.0))
    assert renew.record.annotations.get(DEGRADED) == "true"
    s.complete(renew)
    # A healthy follower asks (its write lands as a new version carrying the request).
    asked = replace(s.m.observed, annotations={DEGRADED: "true", TAKEOVER: "n2"}, version="9")  # type: ignore[arg-type]
    out = s.ev(Observed(asked))
    assert out[0] == RemoveVip()
    rel = s.write_of(out)
    assert rel.op == "release" and TAKEOVER not in rel.record.annotations


def test_a_healthy_follower_asks_a_degraded_leader_to_hand_over_once() -> None:
    s = Sim("n2")
    s.healthy()
    rec = held_by("n1", annotations={DEGRADED: "true"})
    w = s.write_of(s.ev(Observed(rec)))
    assert w.op == "request" and w.record.annotations[TAKEOVER] == "n2"
    assert w.record.holder == "n1" and w.record.version == "7"
    s.complete(w)
    assert s.tick(0.5) == []


def test_a_degraded_leader_that_recovers_clears_the_mark() -> None:
    s = Sim("n1")
    s.ev(HealthChanged(False))
    s.ev(Observed(None))
    s.complete(s.write_of(s.tick(5.0)))
    s.healthy()
    renew = s.write_of(s.tick(1.0))
    assert DEGRADED not in renew.record.annotations
    s.complete(renew)
    assert not s.m.degraded
    assert s.ev(HealthChanged(False))[0] == RemoveVip()  # a normal leader again


# ------------------------------------------------------------------ link


def test_a_leader_without_carrier_past_the_grace_hands_over() -> None:
    s, _ = leader()
    s.ev(LinkChanged(False))
    assert RemoveVip() not in s.tick(0.5)
    for a in s.tick(0.0):
        if isinstance(a, Write):
            s.complete(a)
    out = s.tick(0.5)
    assert out[0] == RemoveVip() and s.write_of(out).op == "release"


def test_a_short_carrier_blip_keeps_the_leader_and_announces_again() -> None:
    s, _ = leader()
    s.ev(LinkChanged(False))
    s.tick(0.3)
    out = s.ev(LinkChanged(True))
    assert ANNOUNCE in out and RemoveVip() not in out
    assert s.m.role is Role.LEADER


def test_a_follower_without_carrier_does_not_campaign() -> None:
    s = Sim("n2")
    s.healthy()
    s.ev(LinkChanged(False))
    assert s.ev(Observed(None)) == []
    assert s.write_of(s.ev(LinkChanged(True))).op == "acquire"


# ------------------------------------------------------------------ start-up


def test_a_vip_left_by_a_crashed_run_is_removed_when_another_node_holds_the_lease() -> None:
    s = Sim("n2", vip_at_start=True, inherited=102.5)
    s.healthy()
    assert s.ev(Observed(held_by("n1")))[0] == RemoveVip()
    assert not s.m.holds_vip


def test_a_vip_left_by_a_crashed_run_stays_until_that_runs_own_deadline() -> None:
    """Restarted half a second after its last renewal (renew deadline 3s): the old run wrote
    its deadline, 102.5 on the monotonic clock, to the run directory."""
    s = Sim("n1", vip_at_start=True, inherited=102.5)
    s.healthy()
    s.now += 0.5
    out = s.ev(Observed(held_by("n1")))
    assert RemoveVip() not in out and AddVip() not in out
    assert s.m.role is Role.LEADER and s.write_of(out).op == "renew"
    assert s.m.deadline == pytest.approx(102.5)


@pytest.mark.parametrize("skew", [-20.0, 20.0])
def test_a_wall_clock_step_does_not_move_the_inherited_deadline(skew: float) -> None:
    """The lease's renewTime was written on the wall clock, which then stepped: with the clock
    20s behind, trusting it gave a deadline 23s away against a 3s renew deadline."""
    s = Sim("n1", vip_at_start=True, inherited=102.5, skew=skew)
    s.healthy()
    s.now += 0.5
    s.ev(Observed(held_by("n1")))  # renewTime = WALL0: 20s in this host's future, or past
    assert s.m.role is Role.LEADER and s.m.deadline == pytest.approx(102.5)


def test_never_more_than_renew_deadline_from_now() -> None:
    s = Sim("n1", vip_at_start=True, inherited=150.0)  # whatever the run directory says
    s.healthy()
    s.ev(Observed(held_by("n1")))
    assert s.m.deadline == pytest.approx(s.now + T.renew_deadline)


def test_a_vip_without_a_known_deadline_goes_at_once() -> None:
    """No run directory from this boot (or another boot's): nothing proves the VIP live."""
    s = Sim("n1", vip_at_start=True)
    assert s.ev(None) == [RemoveVip()]
    s.healthy()
    assert AddVip() not in s.ev(Observed(held_by("n1")))
    assert s.m.role is Role.FOLLOWER


def test_an_inherited_deadline_that_passed_removes_the_vip() -> None:
    s = Sim("n1", vip_at_start=True, inherited=100.3)
    s.healthy()
    s.now += 0.5
    assert RemoveVip() in s.ev(Observed(held_by("n1")))


def test_a_vip_left_behind_goes_at_the_old_deadline_when_the_lease_cannot_be_read() -> None:
    s = Sim("n1", vip_at_start=True, inherited=102.5)
    assert s.tick(0.5) == []  # a slow first read (a loaded host) does not drop it
    assert s.m.next_wakeup() == pytest.approx(102.5)  # the old run's own deadline
    assert s.tick(1.99) == []
    assert s.tick(0.01) == [RemoveVip()]


def test_next_wakeup_tells_the_loop_when_time_alone_matters() -> None:
    s = Sim("n2")
    s.healthy()
    s.ev(Observed(held_by("n1")))
    assert s.m.next_wakeup() == pytest.approx(105.0)
    s2, _ = leader()
    assert s2.m.next_wakeup() == pytest.approx(100.25)  # the next announcement


# ------------------------------------------------------------------ issue 12's defects


def test_a_fractional_lease_is_written_rounded_up() -> None:
    """2.5s would be written as 2: followers would take it at 2s, the leader holds to 2.2s."""
    s = Sim(t=replace(T, lease_duration=2.5, renew_deadline=2.2, retry_period=1.0))
    s.healthy()
    assert s.write_of(s.ev(Observed(None))).record.lease_duration_s == 3


def test_a_takeover_request_that_loses_a_race_is_sent_again() -> None:
    s = Sim("n2")
    s.healthy()
    rec = held_by("n1", annotations={DEGRADED: "true"})
    w = s.write_of(s.ev(Observed(rec)))
    renewed = replace(rec, version="8")  # the degraded leader renewed meanwhile
    out = s.ev(WriteDone("request", WriteResult(ok=False, conflict=True, record=renewed), s.now))
    assert out == []
    assert s.m.next_wakeup() == pytest.approx(s.now + T.retry_period)
    again = s.write_of(s.tick(T.retry_period))
    assert again.op == "request" and again.record.version == "8"
    assert w.record.version == "7"


def test_a_conflict_whose_read_back_failed_waits_a_retry_period() -> None:
    s = Sim("n2")
    s.healthy()
    s.write_of(s.ev(Observed(held_by("", version="8", duration=1))))
    out = s.ev(WriteDone("acquire", WriteResult(ok=False, conflict=True, error="409"), s.now))
    assert out == [] and s.tick(0.01) == [] and s.tick(0.5) == []
    assert s.write_of(s.tick(0.5)).op == "acquire"  # one retry period later, not in a loop


def test_a_reload_that_shortens_the_renew_deadline_shortens_the_running_one() -> None:
    s, _ = leader()
    s.tick(0.4)
    s.m.set_timings(replace(T, lease_duration=2, renew_deadline=1.0, retry_period=0.5))
    assert s.m.deadline == pytest.approx(101.0)  # the last renewal was sent at 100.0
    assert RemoveVip() in s.tick(0.6)  # no renewal answered since 100.0


def test_a_longer_renew_deadline_counts_only_for_writes_that_carried_the_longer_lease() -> None:
    """A renewal sent with a 5s lease, answered after a reload to 15s/10s: the followers were
    told 5s, so this renewal may hold the VIP for the old 3s only."""
    s, _ = leader()
    w = s.write_of(s.tick(1.0))
    assert w.op == "renew" and w.record.lease_duration_s == 5
    s.m.set_timings(replace(T, lease_duration=15, renew_deadline=10, retry_period=2))
    s.complete(w)
    assert s.m.deadline == pytest.approx(101.0 + 3.0)
    w2 = s.write_of(s.tick(2.0))
    assert w2.record.lease_duration_s == 15
    s.complete(w2)
    assert s.m.deadline == pytest.approx(103.0 + 10.0)


def test_an_acquire_answered_after_its_deadline_never_adds_the_vip() -> None:
    s = Sim("n2")
    s.healthy()
    w = s.write_of(s.ev(Observed(None)))
    sent = s.now
    s.now += T.renew_deadline + 0.1  # a hung apiserver answers at last: followers may lead now
    stored = replace(w.record, version="1")
    out = s.ev(WriteDone("acquire", WriteResult(ok=True, record=stored), sent))
    assert AddVip() not in out and s.m.role is not Role.LEADER
    rel = s.write_of(out)
    assert rel.op == "release" and rel.record.version == "1"


def test_a_reload_right_after_a_restart_shortens_the_inherited_deadline() -> None:
    """A leader carrying on from a crashed run has no renewal of its own yet: a reload to
    shorter timings counts from now (found by review: two holders otherwise)."""
    t10 = replace(T, lease_duration=10, renew_deadline=8, retry_period=2)
    s = Sim("n1", t=t10, vip_at_start=True, inherited=107.9)
    s.healthy()
    s.ev(Observed(held_by("n1", duration=10)))
    assert s.m.role is Role.LEADER and s.m.deadline == pytest.approx(107.9)
    s.m.set_timings(replace(T, lease_duration=3, renew_deadline=2, retry_period=0.5))
    assert s.m.deadline == pytest.approx(s.now + 2)


# ------------------------------------------------------------------ decisions and their reasons


def test_every_decision_says_why() -> None:
    s = Sim()
    s.healthy()
    w = s.write_of(s.ev(Observed(None)))
    d = s.decide(
        WriteDone(w.op, WriteResult(ok=True, record=replace(w.record, version="1")), s.now)
    )
    assert AddVip(3) in d.actions  # with a kernel lifetime: see the fence's tests below
    assert d.why == "became leader of the lease, the VIP (acquired the lease)"
    s.now += 3.0  # no renewal answered within the renew deadline
    d = s.decide(None)
    assert RemoveVip() in d.actions
    assert d.says("lost leadership: could not renew the lease within 3s")


def test_the_announcers_own_timing_is_kept() -> None:
    """BGP announces once and keeps the route up itself: one Announce, no refresh."""
    s = Sim()
    s.m.announce_timing = ONCE
    s.healthy()
    w = s.write_of(s.ev(Observed(None)))
    assert s.complete(w).count(ANNOUNCE) == 1
    for _ in range(10):
        assert ANNOUNCE not in s.tick(1.0)
    lead, _ = leader()  # ARP's: a burst at 0, 0.25, 0.5 and 1s, then every 3s
    times = []
    for i in range(1, 30):
        out = lead.tick(0.25)
        if ANNOUNCE in out:
            times.append(i * 0.25)
        for w in [a for a in out if isinstance(a, Write)]:
            lead.complete(w)  # renewals succeed: it stays leader
    assert times == [0.25, 0.5, 1.0, 4.0, 7.0]


def test_a_renewal_with_the_same_content_still_restarts_the_followers_expiry() -> None:
    """The leader's wall clock stepped back to its last renewTime: the renewal reads the same,
    but it is a new version, a write: the follower must wait a full lease from it."""
    s = Sim("n2")
    s.healthy()
    s.ev(Observed(held_by("n1", version="7")))
    s.tick(4.0)
    s.ev(Observed(held_by("n1", version="8")))  # same holder, same renewTime
    assert s.tick(4.9) == []  # 8.9s after the first, 4.9s after the renewal
    assert s.write_of(s.tick(0.2)).op == "acquire"


# ------------------------------------------------------------------ the kernel fence


def test_the_vip_gets_a_kernel_lifetime_that_ends_before_any_follower_may_take_over() -> None:
    """Shipped timings 5s/3s/1s: the VIP lives 3s in the kernel from each renewal, so a frozen
    or killed daemon's VIP is gone by 3s + 1.9s (the kernel's lateness) < 5s; a living daemon
    extends it at every renewal."""
    s = Sim()
    s.healthy()
    w = s.write_of(s.ev(Observed(None)))
    sent, s.now = s.now, s.now + 0.01  # the answer
    assert AddVip(3) in s.decide(s.done(w, sent)).actions and s.m.kernel_lifetime == 3
    w = s.write_of(s.tick(0.99))
    sent, s.now = s.now, s.now + 0.01
    assert HoldVip(3) in s.decide(s.done(w, sent)).actions


def test_timings_too_tight_for_the_kernel_fence_keep_the_vip_until_removed() -> None:
    """The lab's 3s/2s/500ms: a 2s lifetime could end up to 3.3s after the renewal, past the
    lease; no lifetime then (the systemd watchdog is the fence), and nothing to extend."""
    lab = Timings(lease_duration=3, renew_deadline=2, retry_period=0.5)
    s = Sim(t=lab)
    s.healthy()
    w = s.write_of(s.ev(Observed(None)))
    sent, s.now = s.now, s.now + 0.01
    assert AddVip(None) in s.decide(s.done(w, sent)).actions
    w = s.write_of(s.tick(0.5))
    assert not any(isinstance(a, HoldVip) for a in s.decide(s.done(w)).actions)


def test_a_vip_that_expired_in_the_kernel_is_not_put_back_at_the_end_of_its_lease() -> None:
    s = Sim()
    s.healthy()
    w = s.write_of(s.ev(Observed(None)))
    sent, s.now = s.now, s.now + 0.01
    s.decide(s.done(w, sent))  # AddVip(3)
    s.now += 2.97  # renewals fail; the kernel drops it 20 ms before our own deadline
    d = s.decide(VipMissing())
    assert AddVip(None) not in d.actions and not any(isinstance(a, AddVip) for a in d.actions)
    assert d.says("not putting it back this close to the renew deadline")
    s2 = Sim()
    s2.healthy()
    w = s2.write_of(s2.ev(Observed(None)))
    s2.complete(w)
    s2.now += 0.5  # deleted by hand mid-lease: restored, with the lifetime that fits now
    assert AddVip(2) in s2.decide(VipMissing()).actions


@pytest.mark.parametrize(
    ("answer", "life"), [(0.01, 3), (0.04, 3), (0.2, 2), (1.0, 2), (1.2, 1), (1.75, 1)]
)
def test_a_late_answer_gets_a_shorter_lifetime_never_forever(answer: float, life: int) -> None:
    """Review of issue 13: with the lifetime dropped whenever ceil(deadline left) did not fit,
    a renewal answered a moment late (an ordinary API timeout) set the VIP forever. Now it gets
    what fits, and the daemon's own deadline never outlasts it."""
    s = Sim()
    s.healthy()
    w = s.write_of(s.ev(Observed(None)))
    s.decide(s.done(w))
    w = s.write_of(s.tick(1.0))
    sent, s.now = s.now, s.now + answer
    d = s.decide(s.done(w, sent))
    assert HoldVip(life) in d.actions
    assert s.m.deadline <= s.now + life  # it removes the VIP itself first (or 20 ms after)
    assert s.now + life + KERNEL_LATE <= sent + 5  # and the kernel ends it before the lease


def _hold_then_write(actions: list[object]) -> tuple[HoldVip, Write]:
    """The HoldVip and the renewal of one decision, the HoldVip first."""
    holds = [k for k, a in enumerate(actions) if isinstance(a, HoldVip)]
    writes = [k for k, a in enumerate(actions) if isinstance(a, Write)]
    assert len(holds) == 1 and len(writes) == 1 and holds[0] < writes[0], actions
    return actions[holds[0]], actions[writes[0]]  # type: ignore[return-value]


def test_a_reload_to_a_shorter_lease_cuts_the_kernel_lifetime_before_the_renewal() -> None:
    """10s/5s, then a reload to 5s/3s: followers that see the next renewal may take the lease
    5s after it, but the VIP's lifetime was sized for 10s (it could last to 105.01 + 1.9 s).
    A leader that froze right after sending that renewal would keep the VIP past 106: two
    holders. So the lifetime is cut first, in the same decision, before the Write."""
    s = Sim(t=replace(T, lease_duration=10, renew_deadline=5, retry_period=2))
    s.healthy()
    w = s.write_of(s.ev(Observed(None)))
    sent, s.now = s.now, s.now + 0.01
    assert AddVip(5) in s.decide(s.done(w, sent)).actions  # min(5s to the deadline, 8)
    s.now = 100.5
    s.m.set_timings(T)  # 5s/3s/1s
    assert s.m.deadline == pytest.approx(103.0)  # never beyond what the new timings allow
    s.now = 101.0
    hold, renew = _hold_then_write(s.decide(None).actions)
    assert renew.record.lease_duration_s == 5
    assert hold == HoldVip(2)  # to the deadline, 103, and 103 + 1.9 < 106
    assert s.m.kernel_ends_at is not None and s.m.kernel_ends_at + KERNEL_LATE < s.now + 5
    assert s.m.deadline <= min(s.m.kernel_ends_at, 100.0 + T.renew_deadline)
    s.now += 0.01  # the answer: the usual HoldVip, and the next renewal needs no cut
    assert HoldVip(3) in s.decide(s.done(renew, 101.0)).actions
    w = s.write_of(s.tick(0.99))
    assert not any(isinstance(a, HoldVip) for a in s.decide(None).actions)
    assert w.record.lease_duration_s == 5


def test_a_renewal_that_fails_after_the_cut_keeps_the_shorter_takeover() -> None:
    """The renewal may have landed although its answer was an error: the followers may count
    from it, so every later lifetime stays sized for it."""
    s = Sim(t=replace(T, lease_duration=10, renew_deadline=5, retry_period=2))
    s.healthy()
    s.complete(s.write_of(s.ev(Observed(None))))
    s.m.set_timings(T)
    s.now = 101.0
    _hold_then_write(s.decide(None).actions)
    s.now = 101.5
    s.decide(WriteDone("renew", WriteResult(ok=False, error="timeout"), 101.0))
    assert s.m.takeover_after == pytest.approx(106.0)
    s.now = 101.5  # restored: with the lifetime that ends before 106, late as the kernel acts
    d = s.decide(VipMissing())
    (add,) = [a for a in d.actions if isinstance(a, AddVip)]
    assert add.lifetime is not None and s.now + add.lifetime + KERNEL_LATE < 106.0


def test_a_reload_that_makes_room_for_the_fence_gives_the_vip_a_lifetime_first() -> None:
    """5s/4.4s leaves no room (the VIP is held forever); a reload to 5s/3s does: the renewal
    under the new timings is fenced from the moment it is sent, not from its answer."""
    s = Sim(t=replace(T, renew_deadline=4.4))
    s.healthy()
    w = s.write_of(s.ev(Observed(None)))
    assert AddVip(None) in s.decide(s.done(w)).actions
    s.now = 100.5
    s.m.set_timings(T)
    s.now = 101.0
    hold, _ = _hold_then_write(s.decide(None).actions)
    assert hold == HoldVip(2)  # ends, late as the kernel acts, before 105 (the last write's)


def test_a_reload_too_tight_for_the_fence_sends_the_renewal_as_it_is() -> None:
    """10s/5s, then the lab's 3s/2s: no lifetime lasts to the renew deadline and still ends in
    time; the watchdog is the fence from here, as for any such timings (_fence_for_renewal)."""
    s = Sim(t=replace(T, lease_duration=10, renew_deadline=5, retry_period=2))
    s.healthy()
    s.complete(s.write_of(s.ev(Observed(None))))
    s.m.set_timings(Timings(lease_duration=3, renew_deadline=2, retry_period=0.5))
    s.now = 100.5
    d = s.decide(None)
    assert [type(a) for a in d.actions if isinstance(a, HoldVip | Write)] == [Write]
    assert s.m.deadline == pytest.approx(102.0)
    assert HoldVip(None) in s.decide(s.done(s.write_of(d.actions), 100.5)).actions


def test_a_vip_moved_while_leading_goes_on_with_the_lifetime_it_would_get_now() -> None:
    s = Sim()
    s.healthy()
    w = s.write_of(s.ev(Observed(None)))
    s.decide(s.done(w))
    s.now += 0.5
    d = s.decide(VipMoved())
    assert AddVip(2) in d.actions and ANNOUNCE in d.actions
    s.now += 2.45  # near the end of a lease whose renewals fail: no whole second fits
    assert not any(isinstance(a, AddVip) for a in s.decide(VipMoved()).actions)
