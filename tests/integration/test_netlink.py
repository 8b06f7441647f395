"""kubevipd's netlink code on the pyroute2 this interpreter has, in a namespace of its own.

The monitor is made on one thread and read on another, as the daemon does (the main loop makes it,
its own thread reads it): pyroute2 0.9 keeps one socket per thread, and a monitor built on its
IPRoute heard nothing there. Each test makes a network namespace with a veth pair (``dummy``
links do not work on these machines) and removes it.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import ip_address

import pytest

from kubevipd.lab.netns import run_in_netns
from kubevipd.machine import KERNEL_LATE
from kubevipd.vip.netlink import InterfaceError, Monitor, Vip, VipLink, default_route_interface

from .conftest import require_root

pytestmark = pytest.mark.root

BOUND = 5.0  # seconds: the news is due at once (the monitor's select wakes every 0.2 s)
V4 = Vip(ip_address("192.0.2.10"), 32)
V6 = Vip(ip_address("2001:db8::10"), 128)
OTHER = "192.0.2.20/32"


def _ip(*args: str) -> str:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    assert r.returncode == 0, f"ip {' '.join(args)}: {r.stderr}"
    return r.stdout


@dataclass
class Pair:
    ns: str
    link: str = "kvdnl-a"  # the interface kubevipd watches
    peer: str = "kvdnl-b"  # its other end: down means no carrier on ``link``

    def ip(self, *args: str) -> str:
        return _ip("-n", self.ns, *args)

    def index(self) -> int:
        return int(json.loads(self.ip("-j", "link", "show", self.link))[0]["ifindex"])


@pytest.fixture
def pair() -> Iterator[Pair]:
    require_root()
    p = Pair(f"kvdnl-{os.getpid()}-{secrets.token_hex(3)}")
    _ip("netns", "add", p.ns)
    try:
        p.ip("link", "add", p.link, "type", "veth", "peer", "name", p.peer)
        for dev in ("lo", p.link, p.peer):
            p.ip("link", "set", dev, "up")
        yield p
    finally:
        subprocess.run(["ip", "netns", "del", p.ns], capture_output=True, check=False)


class Heard:
    """The monitor's callbacks, in order, on a queue the test waits on."""

    def __init__(self) -> None:
        self.q: queue.Queue[tuple[str, bool]] = queue.Queue()
        self.seen: list[tuple[str, bool]] = []

    def on_link(self, up: bool) -> None:
        self.q.put(("link", up))

    def on_vip_gone(self) -> None:
        self.q.put(("gone", True))

    def wait_for(self, item: tuple[str, bool]) -> list[tuple[str, bool]]:
        """Everything heard up to and including ``item``; fails after BOUND seconds without it."""
        while True:
            try:
                got = self.q.get(timeout=BOUND)
            except queue.Empty:
                pytest.fail(f"no {item} within {BOUND}s; heard {self.seen}")
            self.seen.append(got)
            if got == item:
                return self.seen


def _monitor(p: Pair, heard: Heard, cls: type[Monitor] = Monitor) -> Monitor:
    """A monitor made inside the namespace on a short-lived thread; the caller starts it, so
    its socket is read by a thread other than the one that made and bound it."""
    index = p.index()
    return run_in_netns(p.ns, lambda: cls(index, [V4, V6], heard.on_link, heard.on_vip_gone))


def test_a_vip_deleted_by_hand_is_reported_once_and_other_addresses_are_not(pair: Pair) -> None:
    def add() -> None:
        link = VipLink(pair.link, [V4, V6])
        try:
            link.add()
        finally:
            link.close()

    run_in_netns(pair.ns, add)
    pair.ip("addr", "add", OTHER, "dev", pair.link)
    heard = Heard()
    mon = _monitor(pair, heard)
    mon.start()
    try:
        pair.ip("addr", "del", OTHER, "dev", pair.link)  # not ours: must not be reported
        pair.ip("addr", "del", f"{V4.address}/{V4.prefixlen}", "dev", pair.link)
        # Netlink delivers in order: a report for OTHER would be heard before this one.
        assert [e for e in heard.wait_for(("gone", True)) if e[0] == "gone"] == [("gone", True)]
        pair.ip("addr", "del", f"{V6.address}/{V6.prefixlen}", "dev", pair.link)
        heard.wait_for(("gone", True))
    finally:
        mon.stop()


def test_carrier_loss_and_return_are_reported(pair: Pair) -> None:
    heard = Heard()
    mon = _monitor(pair, heard)
    mon.start()
    try:
        pair.ip("link", "set", pair.peer, "down")
        heard.wait_for(("link", False))
        pair.ip("link", "set", pair.peer, "up")
        heard.wait_for(("link", True))
        pair.ip("link", "del", pair.link)  # takes the peer with it
        heard.wait_for(("link", False))
    finally:
        mon.stop()


class _TinyBuffer(Monitor):
    RCVBUF = 1  # the kernel's smallest: a few messages overflow it


def test_after_lost_messages_the_link_and_the_vip_are_checked_again(pair: Pair) -> None:
    run_in_netns(pair.ns, lambda: VipLink(pair.link, [V4]).add())
    heard = Heard()
    mon = _monitor(pair, heard, _TinyBuffer)  # bound, but nobody reads it yet
    # Fill its buffer, then remove the VIP and the carrier: the kernel drops that news.
    batch = "".join(f"addr add 198.51.100.{i}/32 dev {pair.link}\n" for i in range(1, 101))
    r = subprocess.run(
        ["ip", "-n", pair.ns, "-batch", "-"], input=batch, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    pair.ip("addr", "del", f"{V4.address}/{V4.prefixlen}", "dev", pair.link)
    pair.ip("link", "set", pair.peer, "down")
    mon.start()
    try:
        heard.wait_for(("gone", True))
        heard.wait_for(("link", False))
    finally:
        mon.stop()


class _DiesOnce(Monitor):
    """Its first message raises what the monitor does not expect (as a parser or a callback
    bug would): the thread must not die silently with the VIP unwatched."""

    died = False

    def _dispatch(self, msg: object) -> None:
        if not self.died:
            self.died = True
            raise RuntimeError("an unexpected message")
        super()._dispatch(msg)


def test_a_monitor_that_dies_is_logged_restarted_and_checks_again(
    pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    run_in_netns(pair.ns, lambda: VipLink(pair.link, [V4]).add())
    heard = Heard()
    mon = _monitor(pair, heard, _DiesOnce)
    mon.start()
    try:
        pair.ip("addr", "add", OTHER, "dev", pair.link)  # the message it dies on
        # Removed while the dead monitor waits to start again: its restart checks the VIP.
        pair.ip("addr", "del", f"{V4.address}/{V4.prefixlen}", "dev", pair.link)
        heard.wait_for(("gone", True))
        assert mon.died
        died = [r for r in caplog.records if "thread netlink-monitor died" in r.getMessage()]
        assert len(died) == 1 and "Traceback" in died[0].getMessage()
        heard.seen.clear()
        pair.ip("link", "set", pair.peer, "down")  # and it goes on hearing news
        heard.wait_for(("link", False))
    finally:
        mon.stop()


def test_the_vip_link_adds_removes_and_reads_the_interface(pair: Pair) -> None:
    mac = json.loads(pair.ip("-j", "link", "show", pair.link))[0]["address"]

    def scenario() -> None:
        with pytest.raises(InterfaceError, match="does not exist"):
            VipLink("kvdnl-none", [V4])
        link = VipLink(pair.link, [V4, V6])
        try:
            assert link.present() == []
            assert link.mac() == mac
            link.add()
            link.add()  # already there: done
            assert link.present() == [V4, V6]
            assert link.carrier()
            link.remove()
            link.remove()  # already gone: done
            assert link.present() == []
            _ip("-n", pair.ns, "link", "set", pair.peer, "down")
            assert not link.carrier()
        finally:
            link.close()

    run_in_netns(pair.ns, scenario)


def test_a_vip_added_with_a_lifetime_goes_by_itself_unless_added_again(pair: Pair) -> None:
    """The kernel fence: an address given 1 s of lifetime is gone within 1 s + the kernel's
    lateness (kubevipd.machine.KERNEL_LATE; bench/kernel_fence.py measures it), counted from the
    netlink call that set it and stamped on the monitor's thread; and one added again in time
    stays."""
    gone_at: queue.Queue[float] = queue.Queue()
    index = pair.index()
    mon = run_in_netns(
        pair.ns,
        lambda: Monitor(index, [V4, V6], lambda up: None, lambda: gone_at.put(time.monotonic())),
    )
    mon.start()
    try:

        def add(lifetime: int | None) -> float:
            link = VipLink(pair.link, [V4, V6])
            try:
                sent = time.monotonic()  # the kernel stamps the lifetime after this
                link.add(lifetime)
                return sent
            finally:
                link.close()

        run_in_netns(pair.ns, lambda: add(2))
        show = pair.ip("-o", "addr", "show", "dev", pair.link)
        assert "valid_lft 2sec" in show or "valid_lft 1sec" in show, show
        sent = run_in_netns(pair.ns, lambda: add(1))  # replaced: 1 s from here
        for _family in (V4, V6):
            took = gone_at.get(timeout=BOUND) - sent
            assert 1.0 - 0.05 < took < 1.0 + KERNEL_LATE, took
        run_in_netns(pair.ns, lambda: add(None))  # forever again
        assert "valid_lft forever" in pair.ip("-o", "addr", "show", "dev", pair.link)
    finally:
        mon.stop()


def test_the_default_route_names_its_interface(pair: Pair) -> None:
    assert run_in_netns(pair.ns, default_route_interface) is None
    pair.ip("addr", "add", "192.0.2.1/24", "dev", pair.link)
    pair.ip("route", "add", "default", "via", "192.0.2.254", "dev", pair.link)
    assert run_in_netns(pair.ns, default_route_interface) == pair.link
