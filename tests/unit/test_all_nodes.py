"""The all-nodes policy on a fake clock, and the announce schedule it shares with the Lease
machine (kubevipd/announce/base.py): both policies announce alike because they use one."""

from __future__ import annotations

import pytest

from kubevipd.all_nodes import AllNodes
from kubevipd.announce.base import ONCE, AnnounceSchedule, AnnounceTiming
from kubevipd.events import (
    INFO,
    WARNING,
    AddVip,
    Announce,
    AnnounceFailed,
    HealthChanged,
    LinkChanged,
    RemoveVip,
    Role,
    Stop,
    Timings,
    VipAddFailed,
    VipMissing,
    VipStray,
)

ARP = AnnounceTiming(burst=(0.0, 0.25, 0.5, 1.0), refresh=3.0)  # what ArpAnnouncer declares
T = Timings(lease_duration=5, renew_deadline=3, retry_period=1, link_down_grace=1)

# ------------------------------------------------------------------ the schedule


def test_a_schedule_bursts_then_refreshes_from_each_announcement() -> None:
    s = AnnounceSchedule()
    assert s.next_at() is None and s.due(100.0) == 0
    s.start(100.0, ARP)
    times = []
    for i in range(0, 40):
        now = 100.0 + i * 0.25
        times += [now - 100.0] * s.due(now)
    assert times == [0.0, 0.25, 0.5, 1.0, 4.0, 7.0]
    assert s.next_at() == pytest.approx(110.0)


def test_a_late_call_sends_the_whole_burst_and_counts_the_refresh_from_then() -> None:
    """A loop that woke late still sends one announcement per burst offset; the refresh never
    comes early because of it."""
    s = AnnounceSchedule()
    s.start(100.0, ARP)
    assert s.due(100.7) == 3  # 0, 0.25 and 0.5
    assert s.next_at() == 101.0
    assert s.due(102.0) == 1
    assert s.next_at() == 105.0  # 3 s from when it went out, not from 101


def test_a_schedule_without_refresh_announces_the_burst_only() -> None:
    s = AnnounceSchedule()
    s.start(0.0, ONCE)
    assert s.due(0.0) == 1
    assert s.next_at() is None and s.due(1000.0) == 0


def test_start_again_restarts_the_burst_and_clear_stops_everything() -> None:
    s = AnnounceSchedule()
    s.start(0.0, ARP)
    s.due(5.0)
    s.start(10.0, ARP)  # the VIP went up again: a new burst
    assert s.next_at() == 10.0 and s.due(10.3) == 2
    s.clear()
    assert s.next_at() is None and s.due(100.0) == 0


def test_a_refresh_of_zero_is_due_once_a_call_not_forever() -> None:
    s = AnnounceSchedule()
    s.start(0.0, AnnounceTiming(burst=(0.0,), refresh=0.0))
    assert s.due(0.0) == 1 and s.due(0.0) == 1  # bounded: one per call


def test_an_unsorted_burst_is_announced_in_time_order() -> None:
    s = AnnounceSchedule()
    s.start(0.0, AnnounceTiming(burst=(1.0, 0.0), refresh=None))
    assert s.due(0.0) == 1 and s.next_at() == 1.0


# ------------------------------------------------------------------ the all-nodes policy


def node(timing: AnnounceTiming = ARP, t: Timings = T) -> AllNodes:
    return AllNodes("n1", t, now=100.0, announce_timing=timing)


def test_a_healthy_node_holds_the_vip_and_announces_its_burst() -> None:
    p = node()
    d = p.handle(HealthChanged(True), 100.0, 0.0)
    assert d.actions == [AddVip(), Announce()] and p.role is Role.LEADER and p.holds_vip
    assert p.next_wakeup() == 100.25
    assert p.handle(None, 100.25, 0.0).actions == [Announce()]
    assert p.handle(None, 101.5, 0.0).actions == [Announce(), Announce()]  # 0.5 and 1 s, late
    assert p.next_wakeup() == pytest.approx(104.5)


def test_an_unhealthy_node_removes_the_vip_and_stops_announcing() -> None:
    p = node()
    p.handle(HealthChanged(True), 100.0, 0.0)
    d = p.handle(HealthChanged(False), 100.1, 0.0)
    assert d.actions == [RemoveVip()] and p.role is Role.FOLLOWER
    assert p.next_wakeup() is None
    assert p.handle(None, 110.0, 0.0).actions == []


def test_a_restored_vip_is_announced_as_after_a_takeover() -> None:
    p = node(ONCE)
    p.handle(HealthChanged(True), 100.0, 0.0)
    assert p.next_wakeup() is None  # ONCE: nothing more
    d = p.handle(VipMissing(), 105.0, 0.0)
    assert d.actions == [AddVip(), Announce()]


def test_a_refused_vip_is_tried_again_a_lease_duration_later() -> None:
    p = node()
    p.handle(HealthChanged(True), 100.0, 0.0)
    assert p.handle(VipAddFailed("EBUSY"), 100.0, 0.0).actions == []
    assert p.next_wakeup() == 105.0
    assert p.handle(None, 105.0, 0.0).actions[:1] == [AddVip()]


def test_a_carrier_lost_past_the_grace_removes_the_vip() -> None:
    p = node()
    p.handle(HealthChanged(True), 100.0, 0.0)
    p.handle(None, 101.0, 0.0)  # the burst is over
    p.handle(LinkChanged(False), 102.0, 0.0)
    assert p.next_wakeup() == 103.0
    assert p.handle(None, 103.0, 0.0).actions == [RemoveVip()]


def test_stop_removes_the_vip_and_stops() -> None:
    p = node()
    p.handle(HealthChanged(True), 100.0, 0.0)
    d = p.handle(Stop("SIGTERM"), 100.1, 0.0)
    assert d.actions == [RemoveVip()] and p.role is Role.STOPPED and p.next_wakeup() is None


def test_a_refused_vip_makes_a_follower_that_says_when_it_tries_again() -> None:
    """Review: after VipAddFailed the role stayed LEADER with holds_vip False, even once
    unhealthy."""
    p = node()
    p.handle(HealthChanged(True), 100.0, 0.0)
    d = p.handle(VipAddFailed("EBUSY"), 100.1, 0.0)
    assert p.role is Role.FOLLOWER and not p.holds_vip and p.status().holder == ""
    assert d.said == (
        (INFO, "follower: netlink refused the VIP (EBUSY); trying again in 5s, the VIP"),
    )
    assert p.handle(HealthChanged(False), 101.0, 0.0).actions == [] and p.role is Role.FOLLOWER
    p.handle(HealthChanged(True), 102.0, 0.0)
    assert p.role is Role.FOLLOWER and p.next_wakeup() == pytest.approx(105.1)
    assert p.handle(None, 105.1, 0.0).actions[:1] == [AddVip()] and p.role is Role.LEADER


def test_a_removal_netlink_refuses_is_tried_again_at_once_then_with_growing_pauses() -> None:
    """Review: every VipStray(failed=True) got RemoveVip at once, a hot loop (the effects layer
    logs each refusal). Now as the Lease machine: once at once, then from REMOVE_RETRY_FIRST
    doubling up to the retry period, with next_wakeup at the due time."""
    p = node()
    p.handle(HealthChanged(True), 100.0, 0.0)
    assert p.handle(HealthChanged(False), 100.0, 0.0).actions == [RemoveVip()]
    refused = VipStray("could not remove it: EPERM", failed=True)
    d = p.handle(refused, 100.0, 0.0)
    assert d.actions == [RemoveVip()]  # a transient error is gone by now
    assert d.said == (
        (
            WARNING,
            "the VIP is on the interface while not held (could not remove it: EPERM); trying again",
        ),
    )
    now, pauses = 100.0, []
    for _ in range(7):
        d = p.handle(refused, now, 0.0)
        assert d.actions == [] and d.said == ()  # the same failure: said once a minute
        due = p.next_wakeup()
        assert due is not None and p.handle(None, (due + now) / 2, 0.0).actions == []
        pauses.append(round(due - now, 6))
        now = due
        assert p.handle(None, now, 0.0).actions == [RemoveVip()]
    assert pauses == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]  # up to retry_period
    # Found on the interface (not refused): removed at once, whatever failed before.
    assert p.handle(VipStray("netlink shows it"), now, 0.0).actions == [RemoveVip()]
    # Held again while a retry is due: the VIP is meant to be there, no RemoveVip.
    p.handle(refused, now, 0.0)
    assert p.handle(HealthChanged(True), now, 0.0).actions[:1] == [AddVip()]
    assert p.handle(None, now + 5.0, 0.0).actions.count(RemoveVip()) == 0
    # A new removal starts over: its first failure is tried again at once.
    assert p.handle(HealthChanged(False), now + 5.0, 0.0).actions == [RemoveVip()]
    assert p.handle(refused, now + 5.0, 0.0).actions == [RemoveVip()]


def test_the_carrier_back_while_holding_restarts_the_burst() -> None:
    """Review: the Lease machine announces anew when the carrier comes back (the neighbours
    may have dropped the entry meanwhile); the all-nodes policy did not."""
    p = node()
    p.handle(HealthChanged(True), 100.0, 0.0)
    p.handle(None, 101.0, 0.0)  # the burst is over
    assert p.next_wakeup() == pytest.approx(104.0)
    assert p.handle(LinkChanged(False), 102.0, 0.0).says("interface lost carrier")
    d = p.handle(LinkChanged(True), 102.5, 0.0)
    assert d.actions == [Announce()] and d.says("interface carrier is back")
    assert p.next_wakeup() == 102.75
    assert p.handle(None, 103.5, 0.0).actions == [Announce(), Announce(), Announce()]


def test_a_repeated_carrier_loss_does_not_restart_the_grace() -> None:
    p = node()
    p.handle(HealthChanged(True), 100.0, 0.0)
    p.handle(None, 101.0, 0.0)
    p.handle(LinkChanged(False), 102.0, 0.0)
    assert p.handle(LinkChanged(False), 102.5, 0.0).said == ()
    assert p.next_wakeup() == 103.0
    assert p.handle(None, 103.0, 0.0).actions == [RemoveVip()]


def test_an_announce_failure_is_said_once_a_minute_and_announcing_goes_on() -> None:
    """Review: AnnounceFailed was ignored, and the effects layer does not log AnnounceError:
    every failure was invisible."""
    p = node()
    p.handle(HealthChanged(True), 100.0, 0.0)
    d = p.handle(AnnounceFailed("sendto eth0: ENETDOWN"), 100.01, 0.0)
    said = "announcement failed: sendto eth0: ENETDOWN; trying again at the next due time"
    assert d.actions == [] and d.said == ((WARNING, said),)
    assert p.next_wakeup() == 100.25 and p.handle(None, 100.25, 0.0).actions == [Announce()]
    assert p.handle(AnnounceFailed("sendto eth0: ENETDOWN"), 100.26, 0.0).said == ()
    assert p.handle(AnnounceFailed("sendto eth0: ENETDOWN"), 160.02, 0.0).said == ((WARNING, said),)
    assert p.handle(AnnounceFailed("sendto eth0: EPERM"), 160.03, 0.0).says("EPERM")  # new: at once
    assert p.role is Role.LEADER and p.holds_vip
    once = node(ONCE)
    once.handle(HealthChanged(True), 100.0, 0.0)
    d = once.handle(AnnounceFailed("ENETDOWN"), 100.01, 0.0)
    assert d.said == ((WARNING, "announcement failed: ENETDOWN; none is due again for now"),)
