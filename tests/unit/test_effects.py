"""The effects (kubevipd/effects.py) and the attachment they act on (kubevipd/attached.py), with
fakes for the link, the monitor and the announcer: no namespaces, no root.

What is checked is what a slow announcer's worker must guarantee around a VIP that moves and a
daemon that stops: an outcome names the attachment it was called for, a withdraw queued before
a detach or an exit is still done, nothing calls a closed announcer, an exit never waits past
its bound, and an announcer that raises what it should not is reported, not lost.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest

from kubevipd.announce.base import AnnounceError, AnnouncerEnv, AnnounceTiming
from kubevipd.attached import Attached
from kubevipd.config import load_text
from kubevipd.effects import Effects, FromLink
from kubevipd.events import Announce, Announced, AnnounceFailed, RemoveVip
from kubevipd.metrics import Metrics
from kubevipd.parts import Parts
from kubevipd.vip.model import Vip

WAIT_S = 5.0  # the bound on every wait: a broken worker fails the test, never hangs it
VIPS = [Vip(ip_address("192.0.2.75"), 32)]


class FakeLink:
    """The VIP on an interface, in memory."""

    def __init__(self, ifname: str, vips: list[Vip]) -> None:
        self.ifname, self.vips, self.index = ifname, vips, 7
        self.up: list[Vip] = []

    def carrier(self) -> bool:
        return True

    def present(self) -> list[Vip]:
        return list(self.up)

    def add(self, lifetime: int | None = None) -> None:
        self.up = list(self.vips)

    def remove(self) -> None:
        self.up = []

    def close(self) -> None:
        pass


class FakeMonitor:
    """A monitor that never reports: the only news on the queue is the announcer's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class Recorder:
    """An announcer that records its calls in order, can hold ``announce()`` until released
    (a slow API call), and fails the test if it is called once closed."""

    timing = AnnounceTiming(burst=(0.0,), refresh=None)

    def __init__(self, slow: bool = True, hold: bool = False) -> None:
        self.slow = slow
        self.calls: list[str] = []
        self.started = threading.Event()  # an announce() began
        self.release = threading.Event()  # lets a held announce() return
        self.closed = threading.Event()
        self.hold = hold
        self.raises: list[Exception] = []  # raised by the next announce() calls, in order
        self.after_close: list[str] = []

    def _enter(self, name: str) -> None:
        if self.closed.is_set():
            self.after_close.append(name)
        self.calls.append(name)

    def announce(self, term: int | None = None) -> int:
        self._enter("announce")
        self.started.set()
        if self.hold:
            assert self.release.wait(WAIT_S), "announce() was never released"
        if self.raises:
            raise self.raises.pop(0)
        return 1

    def withdraw(self) -> None:
        self._enter("withdraw")

    def set_vips(self, vips: list[Vip]) -> None:
        self.vips = vips

    def close(self) -> None:
        self._enter("close")
        self.closed.set()


def attach(effects: Effects, q: queue.SimpleQueue[object], announcer: Recorder) -> Attached:
    """An attachment on eth0 whose announcer is ``announcer``, with the VIP already up."""
    cfg = load_text("node_name: n1\ninterface: eth0\nvip: {address: 192.0.2.75}\n").config

    def build(cfg: object, ifname: str, link: object, vips: object, env: object) -> Recorder:
        return announcer

    parts = Parts(link=FakeLink, announcer=build, monitor=FakeMonitor)  # type: ignore[arg-type]
    att = Attached(parts, cfg, "eth0", VIPS, effects, q.put, None, AnnouncerEnv(Path(".")))
    att.link.up = list(VIPS)  # type: ignore[attr-defined]
    return att


@pytest.fixture
def effects() -> tuple[Effects, queue.SimpleQueue[object]]:
    q: queue.SimpleQueue[object] = queue.SimpleQueue()
    return Effects(q.put, Metrics()), q


def test_a_slow_outcome_carries_the_generation_of_its_call_even_after_the_vip_moved(
    effects: tuple[Effects, queue.SimpleQueue[object]],
) -> None:
    """The VIP moves while a slow announcement is under way: its outcome must be news of the
    old attachment (dropped by the loop), not of the new one."""
    fx, q = effects
    old = Recorder(hold=True)
    first = attach(fx, q, old)
    fx.carry_out([Announce()])
    assert old.started.wait(WAIT_S)
    first.detach(fx)  # the VIP moves: a new attachment, a new generation
    fast = Recorder(slow=False)
    second = attach(fx, q, fast)
    assert (first.generation, second.generation, fx.generation) == (1, 2, 2)
    fx.carry_out([Announce()])  # a fast announcer: its outcome at once
    assert q.get(timeout=WAIT_S) == FromLink(2, Announced(1))
    old.release.set()
    assert q.get(timeout=WAIT_S) == FromLink(1, Announced(1))  # the call's, not the current
    fast.raises = [AnnounceError("cannot send on eth0: Network is down")]
    fx.carry_out([Announce()])
    assert q.get(timeout=WAIT_S) == FromLink(
        2, AnnounceFailed("cannot send on eth0: Network is down")
    )
    assert fx.attached is second and fx.ifname == "eth0" and fx.vip_on_interface()
    fx.close(within=WAIT_S)


def test_detach_closes_a_slow_announcer_only_after_the_call_running_and_the_queued_withdraw(
    effects: tuple[Effects, queue.SimpleQueue[object]],
) -> None:
    fx, q = effects
    slow = Recorder(hold=True)
    att = attach(fx, q, slow)
    fx.carry_out([Announce()])
    assert slow.started.wait(WAIT_S)
    fx.carry_out([RemoveVip()])  # the VIP off, its withdraw queued behind the announcement
    att.detach(fx)  # returns at once: the loop never waits for the announcer
    assert not slow.closed.is_set()
    slow.release.set()
    assert slow.closed.wait(WAIT_S)
    assert slow.calls == ["announce", "withdraw", "close"] and slow.after_close == []
    # The effects held the attachment itself: once detached, nothing of it is left to act on.
    assert fx.attached is None and fx.link is None and fx.vips_on_interface() == 0
    # A fast announcer is closed at once, as before.
    fast = Recorder(slow=False)
    attach(fx, q, fast).detach(fx)
    assert fast.calls == ["close"]
    fx.close(within=WAIT_S)


def test_close_drains_a_withdraw_queued_behind_a_slow_call(
    effects: tuple[Effects, queue.SimpleQueue[object]], caplog: pytest.LogCaptureFixture
) -> None:
    """At exit a withdraw still queued must go out: the network would send the VIP here."""
    fx, q = effects
    slow = Recorder(hold=True)
    att = attach(fx, q, slow)
    fx.carry_out([Announce()])
    assert slow.started.wait(WAIT_S)
    fx.carry_out([RemoveVip()])

    def release_once_closing() -> None:
        """The held call ends only once close() has begun: close must wait for both calls."""
        if fx.slow.closed.wait(WAIT_S):
            slow.release.set()

    releaser = threading.Thread(target=release_once_closing)
    releaser.start()
    fx.close()  # bare, as the daemon's shutdown calls it: the default bound
    releaser.join(WAIT_S)
    assert slow.calls == ["announce", "withdraw"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    att.detach(fx)  # the daemon's order at exit: the drain is over, so it closes at once
    assert slow.calls == ["announce", "withdraw", "close"]


def test_close_with_a_stuck_call_returns_within_its_bound_and_says_what_was_not_done(
    effects: tuple[Effects, queue.SimpleQueue[object]], caplog: pytest.LogCaptureFixture
) -> None:
    fx, q = effects
    slow = Recorder(hold=True)
    att = attach(fx, q, slow)
    fx.carry_out([Announce()])
    assert slow.started.wait(WAIT_S)
    fx.carry_out([RemoveVip()])
    try:
        t0 = time.monotonic()
        fx.close(within=0.3)
        took = time.monotonic() - t0
        assert 0.25 < took < 1.5, took
        (warning,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
        text = warning.getMessage()
        assert "\n" not in text and "within 0.3s" in text
        assert "announcement of 192.0.2.75 on eth0 still running" in text
        assert "not done: withdrawal of 192.0.2.75 on eth0" in text
        att.detach(fx)  # a call still runs on it: left open rather than closed under it
        assert not slow.closed.is_set()
    finally:
        slow.release.set()
    assert q.get(timeout=WAIT_S) == FromLink(1, Announced(1))  # the stuck call ended
    assert slow.calls == ["announce"] and q.empty()  # the dropped withdraw never ran


def test_close_without_an_argument_returns_at_once_when_nothing_is_queued(
    effects: tuple[Effects, queue.SimpleQueue[object]], caplog: pytest.LogCaptureFixture
) -> None:
    """The daemon's shutdown calls close() bare: the default bound, no warning when idle."""
    fx, q = effects
    attach(fx, q, Recorder())
    t0 = time.monotonic()
    fx.close()
    assert time.monotonic() - t0 < 0.5
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_an_unexpected_exception_from_a_slow_announcer_is_reported_and_the_worker_goes_on(
    effects: tuple[Effects, queue.SimpleQueue[object]], caplog: pytest.LogCaptureFixture
) -> None:
    fx, q = effects
    slow = Recorder()
    slow.raises = [RuntimeError("unexpected reply from the API")]
    attach(fx, q, slow)
    with caplog.at_level(logging.DEBUG, logger="kubevipd"):
        fx.carry_out([Announce()])
        failed = q.get(timeout=WAIT_S)
        fx.carry_out([Announce()])
        assert q.get(timeout=WAIT_S) == FromLink(1, Announced(1))  # the next call still ran
    assert failed == FromLink(
        1, AnnounceFailed("announce() raised RuntimeError: unexpected reply from the API")
    )
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert tracebacks and all(r.levelno == logging.DEBUG for r in tracebacks)
    assert slow.calls == ["announce", "announce"]
    fx.close(within=WAIT_S)
