"""Carrying out a decision's actions, and reporting each fallible one's outcome as an event.

The rules the main loop keeps here:

- In order, and a failed action drops the rest of its batch: no announcement of a VIP netlink
  refused, no release while a VIP we could not remove may still be up. The policy still hears
  of every write it expects an answer to ("not sent").
- Netlink calls are fast and bounded: done on the loop's own thread, so a removal at the renew
  deadline never waits behind anything. Lease writes go to a small pool (up to three at once: a
  release goes out beside a renewal hung on a dying apiserver). An announcer that declares
  itself slow runs on a worker thread of its own, one call at a time, in order; its close()
  is queued there too, after the calls before it, so a withdraw still to go is done first and
  nothing calls a closed announcer. At exit that worker is drained, within a bound.
- Every outcome comes back as an event on the loop's queue: VipAdded / VipAddFailed, VipStray
  (a removal refused), Announced / AnnounceFailed, WriteDone. An announcement's outcome comes as
  ``FromLink`` with the generation of the attachment whose announcer was called, so that news
  of an interface or VIP replaced meanwhile is dropped like its monitor's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kubevipd.announce.base import AnnounceError, Announcer
from kubevipd.election.base import Election, WriteResult
from kubevipd.events import (
    Action,
    AddVip,
    Announce,
    Announced,
    AnnounceFailed,
    Event,
    HoldVip,
    RemoveVip,
    VipAdded,
    VipAddFailed,
    VipMissing,
    VipStray,
    Write,
    WriteDone,
)
from kubevipd.metrics import Metrics
from kubevipd.vip.netlink import InterfaceError, VipLink

if TYPE_CHECKING:  # attached.py imports this module
    from kubevipd.attached import Attached

log = logging.getLogger("kubevipd")

# How long close() waits for a slow announcer's queued calls at exit: systemd's TimeoutStopSec
# is 5s, and the hand-over before it may take twice the API timeout plus a second (3s at the
# defaults).
DRAIN_S = 1.5


@dataclass(frozen=True)
class FromLink:
    """News about one interface (its monitor's, or an announcement's check); dropped once a
    reload has replaced that interface or VIP."""

    generation: int
    event: Event


class InOrder:
    """One thread that runs calls one at a time, in the order they were queued: a slow
    announcer's contract. A daemon thread rather than a pool's: a call stuck in an API must not
    hold the process past its stop (a pool's threads are joined at exit), and what close()
    gives up on is known by name, for the operator."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = threading.Event()  # set when close() begins: nothing more is taken
        self._cond = threading.Condition()
        self._queued: deque[tuple[str, Callable[[], None]]] = deque()
        self._running: str | None = None
        self._thread: threading.Thread | None = None

    def submit(self, what: str, call: Callable[[], None]) -> bool:
        """Queue ``call`` (``what`` names it in a log line) after those already queued; False
        once closed: nothing will run it."""
        with self._cond:
            if self.closed.is_set():
                return False
            self._queued.append((what, call))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._cond.notify_all()
        return True

    def has_queued(self, what: str) -> bool:
        """``what`` is waiting (not running yet): the same call queued again would add nothing."""
        with self._cond:
            return any(w == what for w, _ in self._queued)

    def busy(self) -> bool:
        """A call is running or queued."""
        with self._cond:
            return self._running is not None or bool(self._queued)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queued and not self.closed.is_set():
                    self._cond.wait()
                if not self._queued:
                    return
                what, call = self._queued.popleft()
                self._running = what
            try:
                call()
            except Exception as e:  # a call reports its own outcome; this keeps the thread
                log.error("%s raised %s: %s", what, type(e).__name__, e)
                log.debug("details", exc_info=True)
            finally:
                with self._cond:
                    self._running = None
                    self._cond.notify_all()

    def close(self, within: float) -> tuple[str | None, list[str]]:
        """Take no more calls; wait up to ``within`` seconds for those queued to finish, then
        drop what is left. Returns the call still running (None) and the ones dropped."""
        end = time.monotonic() + within
        with self._cond:
            self.closed.set()
            self._cond.notify_all()
            while self._running is not None or self._queued:
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            dropped = [what for what, _ in self._queued]
            self._queued.clear()
            return self._running, dropped


class Effects:
    """The hands of the main loop. It holds no state of its own beyond the parts it drives:
    the current attachment (``attached``: link, announcer, interface, VIP), which the loop
    swaps when the VIP moves, and its ``generation``."""

    def __init__(self, put: Callable[[object], None], metrics: Metrics) -> None:
        self.put = put
        self.metrics = metrics
        self.attached: Attached | None = None
        self.election: Election | None = None
        self.generation = 0  # of the latest attachment; counts on after a detach
        self.writer = ThreadPoolExecutor(max_workers=3, thread_name_prefix="lease-write")
        self.slow = InOrder("announce")

    # The current attachment's parts, for whoever reads them; never copies.
    @property
    def link(self) -> VipLink | None:
        return self.attached.link if self.attached is not None else None

    @property
    def announcer(self) -> Announcer | None:
        return self.attached.announcer if self.attached is not None else None

    @property
    def ifname(self) -> str:
        return self.attached.ifname if self.attached is not None else ""

    @property
    def vip_count(self) -> int:
        """How many addresses the VIP has."""
        return len(self.attached.vips) if self.attached is not None else 0

    def attach(self, attached: Attached) -> int:
        """From now on act on ``attached``; returns its generation (news of older ones is
        dropped by the loop)."""
        self.generation += 1
        self.attached = attached
        return self.generation

    def detach(self, attached: Attached, close_announcer: bool = True) -> None:
        """Stop acting on ``attached`` and close its announcer (unless the next attachment
        keeps it): a slow one after the calls queued for it (a withdraw still to go), a fast
        one at once."""
        if self.attached is attached:
            self.attached = None
        if not close_announcer:
            return
        announcer = attached.announcer
        if not announcer.slow:
            announcer.close()
            return
        if self.slow.submit(f"close of the announcer on {attached.ifname}", announcer.close):
            return
        # Closed at exit: the drain is over. Close it unless a call stuck on it still runs.
        if self.slow.busy():
            log.debug("announcer on %s left open: a call on it still runs", attached.ifname)
        else:
            announcer.close()

    def carry_out(self, actions: list[Action]) -> None:
        for i, a in enumerate(actions):
            if not self.do(a):
                self.drop(actions[i + 1 :], f"{type(a).__name__} failed")
                return

    def drop(self, rest: list[Action], why: str) -> None:
        """The policy still hears of each action it expects an answer to (a Write, an AddVip
        or HoldVip): not done is an answer too."""
        for a in rest:
            log.debug("not done, %s: %s", why, type(a).__name__)
            if isinstance(a, Write):
                failed = WriteResult(ok=False, error=f"not sent: {why}", error_kind="other")
                self.put(WriteDone(a.op, failed, time.monotonic()))
            elif isinstance(a, AddVip | HoldVip):
                self.put(VipAddFailed(f"not done: {why}"))

    def do(self, a: Action) -> bool:
        """Carry out one action; False when it failed (the rest of the batch is dropped)."""
        att = self.attached
        assert att is not None
        if isinstance(a, Write):
            return self._submit_write(a)
        if isinstance(a, AddVip | HoldVip):
            try:
                att.link.add(a.lifetime)
            except InterfaceError as e:
                self.vip_add_failed(e)
                return False
            if isinstance(a, AddVip):
                self.put(VipAdded())
        elif isinstance(a, RemoveVip):
            # The route first, while the address still answers what the route brings; then
            # the address, before anything after this (a release) lets another node take it.
            self._call(att, withdraw=True)
            try:
                att.link.remove()
            except InterfaceError as e:
                log.error("%s", e)
                self.put(VipStray(f"could not remove it: {e}", failed=True))
                return False
        elif isinstance(a, Announce):
            if not att.vips:  # a source that knows the VIP only later (DHCP): nothing to tell
                return True
            # A backstop for a netlink monitor that went deaf: announce only what is held.
            if not self.vip_on_interface():
                log.warning("the VIP is not on %s at announcement time; restoring it", att.ifname)
                self.put(FromLink(att.generation, VipMissing()))
                return False
            self._call(att, withdraw=False, term=a.term)
        return True

    def vip_add_failed(self, e: InterfaceError) -> None:
        """Netlink refused the VIP: the policy hands the lease over (VipAddFailed)."""
        log.error("%s", e)
        self.metrics.vip_add_failures.inc()
        self.put(VipAddFailed(str(e)))

    def _submit_write(self, a: Write) -> bool:
        election = self.election
        if election is None:  # cannot happen (no news without a client), yet must answer
            failed = WriteResult(ok=False, error="no Lease client yet", error_kind="other")
            self.put(WriteDone(a.op, failed, time.monotonic()))
            return False
        self.writer.submit(self._write, election, a, time.monotonic())
        return True

    def _write(self, election: Election, a: Write, sent_at: float) -> None:
        try:
            result = election.write(a.op, a.record, a.timeout)
        except Exception as e:  # a write must always report back
            log.debug("lease write raised", exc_info=True)
            result = WriteResult(ok=False, error=str(e) or type(e).__name__, error_kind="other")
        self.metrics.renew_latency.labels(a.op).observe(time.monotonic() - sent_at)
        if result.error_kind is not None:
            self.metrics.api_errors.labels(result.error_kind).inc()
        self.put(WriteDone(a.op, result, sent_at))

    def _call(self, att: Attached, withdraw: bool, term: int | None = None) -> None:
        """Call ``att``'s announcer; its outcome is tagged with ``att``'s generation, taken
        now: by the time a slow call ends the VIP may have moved."""
        announcer, gen = att.announcer, att.generation
        if not announcer.slow:
            self._guarded(announcer, gen, withdraw, term)
            return
        vips = ", ".join(str(v) for v in att.vips)
        what = f"{'withdrawal' if withdraw else 'announcement'} of {vips} on {att.ifname}"
        if not withdraw and self.slow.has_queued(what):
            log.debug("already queued: %s", what)  # a hung call must not grow a backlog
            return
        if not self.slow.submit(what, lambda: self._guarded(announcer, gen, withdraw, term)):
            log.debug("not done, stopping: %s", what)

    def _guarded(
        self, announcer: Announcer, gen: int, withdraw: bool, term: int | None = None
    ) -> None:
        """Whatever an announcer raises comes back as AnnounceFailed: on a worker it would be
        lost (and the worker goes on with the next call); on the loop's thread it would end
        the daemon, VIP and all, over an announcement."""
        try:
            self._announce(announcer, gen, withdraw, term)
        except Exception as e:
            method = "withdraw" if withdraw else "announce"
            log.debug("%s.%s() raised", type(announcer).__name__, method, exc_info=True)
            raised = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            self._failed(gen, withdraw, f"{method}() raised {raised}")

    def _announce(self, announcer: Announcer, gen: int, withdraw: bool, term: int | None) -> None:
        try:
            if withdraw:
                announcer.withdraw()
                return
            sent = announcer.announce(term)
        except AnnounceError as e:
            self._failed(gen, withdraw, str(e))
            return
        self.metrics.announcements.inc(sent)
        self.put(FromLink(gen, Announced(sent)))

    def _failed(self, gen: int, withdraw: bool, error: str) -> None:
        """A failed announcement goes to the policy, which tries again at the next due time.
        A failed withdrawal is this layer's to say: no policy holds the VIP by then, and none
        retries it."""
        if withdraw:
            log.error("withdrawal failed: %s; the network may still send the VIP here", error)
        else:
            self.put(FromLink(gen, AnnounceFailed(error)))

    def withdraw(self) -> None:
        """At exit, before the VIP leaves the interface: tell the network (a BGP route must
        not outlive us). A slow announcer's withdraw is drained by ``close``."""
        if self.attached is not None:
            self._call(self.attached, withdraw=True)

    def vips_on_interface(self) -> int:
        """How many of the VIP's addresses are on the interface now, as netlink says."""
        link = self.link
        if link is None:
            return 0
        try:
            return len(link.present())
        except (InterfaceError, OSError) as e:
            log.debug("cannot read the addresses of %s: %s", self.ifname, e)
            return 0

    def vip_on_interface(self) -> bool:
        """Every VIP address is on the interface now, as netlink says."""
        return self.vip_count > 0 and self.vips_on_interface() == self.vip_count

    def close(self, within: float = DRAIN_S) -> None:
        """At exit: lease writes are left (the hand-over is over); a slow announcer's queued
        calls are given up to ``within`` seconds to finish (a withdraw must not be dropped),
        then what is left is dropped and named in one warning."""
        self.writer.shutdown(wait=False, cancel_futures=True)
        running, dropped = self.slow.close(within)
        if running is None and not dropped:
            return
        left = [f"{running} still running"] if running is not None else []
        if dropped:
            left.append(f"not done: {'; '.join(dropped)}")
        log.warning(
            "the announcer did not finish within %gs at exit (%s); what the network was told "
            "may be out of date: check it on the announcer's side and correct it by hand",
            within,
            "; ".join(left),
        )
