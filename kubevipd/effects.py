"""Carrying out a decision's actions, and reporting each fallible one's outcome as an event.

The rules the main loop keeps here:

- In order, and a failed action drops the rest of its batch: no announcement of a VIP netlink
  refused, no release while a VIP we could not remove may still be up. The policy still hears
  of every write it expects an answer to ("not sent").
- Netlink calls are fast and bounded: done on the loop's own thread, so a removal at the renew
  deadline never waits behind anything. Lease writes go to a small pool (up to three at once: a
  release goes out beside a renewal hung on a dying apiserver). An announcer that declares
  itself slow runs on a worker thread of its own, one call at a time, in order.
- Every outcome comes back as an event on the loop's queue: VipAdded / VipAddFailed, VipStray
  (a removal refused), Announced / AnnounceFailed, WriteDone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

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

log = logging.getLogger("kubevipd")


@dataclass(frozen=True)
class FromLink:
    """News about one interface (its monitor's, or an announcement's check); dropped once a
    reload has replaced that interface or VIP."""

    generation: int
    event: Event


class Effects:
    """The hands of the main loop. It holds no state of its own beyond the parts it drives,
    which the loop swaps when the VIP moves (``link``, ``announcer``, ``generation``)."""

    def __init__(self, put: Callable[[object], None], metrics: Metrics) -> None:
        self.put = put
        self.metrics = metrics
        self.link: VipLink | None = None
        self.announcer: Announcer | None = None
        self.election: Election | None = None
        self.generation = 0
        self.ifname = ""
        self.vip_count = 0  # how many addresses the VIP has
        self.writer = ThreadPoolExecutor(max_workers=3, thread_name_prefix="lease-write")
        self.slow = ThreadPoolExecutor(max_workers=1, thread_name_prefix="announce")

    def carry_out(self, actions: list[Action]) -> None:
        for i, a in enumerate(actions):
            if not self.do(a):
                self.drop(actions[i + 1 :], f"{type(a).__name__} failed")
                return

    def drop(self, rest: list[Action], why: str) -> None:
        for a in rest:
            log.debug("not done, %s: %s", why, type(a).__name__)
            if isinstance(a, Write):
                failed = WriteResult(ok=False, error=f"not sent: {why}", error_kind="other")
                self.put(WriteDone(a.op, failed, time.monotonic()))

    def do(self, a: Action) -> bool:
        """Carry out one action; False when it failed (the rest of the batch is dropped)."""
        assert self.link is not None and self.announcer is not None
        if isinstance(a, Write):
            return self._submit_write(a)
        if isinstance(a, AddVip | HoldVip):
            try:
                self.link.add(a.lifetime)
            except InterfaceError as e:
                self.vip_add_failed(e)
                return False
            if isinstance(a, AddVip):
                self.put(VipAdded())
        elif isinstance(a, RemoveVip):
            try:
                self.link.remove()
            except InterfaceError as e:
                log.error("%s", e)
                self.put(VipStray(f"could not remove it: {e}", failed=True))
                return False
            self._call(self.announcer, withdraw=True)
        elif isinstance(a, Announce):
            # A backstop for a netlink monitor that went deaf: announce only what is held.
            if not self.vip_on_interface():
                log.warning("the VIP is not on %s at announcement time; restoring it", self.ifname)
                self.put(FromLink(self.generation, VipMissing()))
                return False
            self._call(self.announcer, withdraw=False)
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

    def _call(self, announcer: Announcer, withdraw: bool) -> None:
        if announcer.slow:
            self.slow.submit(self._announce, announcer, withdraw)
        else:
            self._announce(announcer, withdraw)

    def _announce(self, announcer: Announcer, withdraw: bool) -> None:
        try:
            if withdraw:
                announcer.withdraw()
                return
            sent = announcer.announce()
        except AnnounceError as e:
            self.put(AnnounceFailed(str(e)))
            return
        self.metrics.announcements.inc(sent)
        self.put(Announced(sent))

    def vips_on_interface(self) -> int:
        """How many of the VIP's addresses are on the interface now, as netlink says."""
        if self.link is None:
            return 0
        try:
            return len(self.link.present())
        except (InterfaceError, OSError) as e:
            log.debug("cannot read the addresses of %s: %s", self.ifname, e)
            return 0

    def vip_on_interface(self) -> bool:
        """Every VIP address is on the interface now, as netlink says."""
        return self.vip_count > 0 and self.vips_on_interface() == self.vip_count

    def close(self) -> None:
        self.writer.shutdown(wait=False, cancel_futures=True)
        self.slow.shutdown(wait=False, cancel_futures=True)
