"""The contract of a policy: who should hold the VIP.

A policy is the one pure decider of the daemon. The Lease state machine (kubevipd/machine.py)
is one: it holds the VIP while it holds a Kubernetes Lease. The all-nodes policy
(kubevipd/all_nodes.py) is another: every healthy node holds it and nothing is written, for
BGP's ECMP mode. The main loop (kubevipd/daemon.py) feeds a policy every event, carries out
its decisions in order, and reads the rest of this contract for ``status`` and metrics; it
never knows which policy it runs.

What an implementation must guarantee (Patroni's AbstractDCS is the model of this docstring):

- ``handle(event, now, wall) -> Decision``: pure. No I/O, no clock of its own (``now`` is the
  monotonic clock, ``wall`` only for timestamps it writes out), no blocking, no logging: what
  it has to say goes into the Decision, with a sentence for every decision ("became leader of
  plndr-cp-lock, ... (acquired the lease)", "lost leadership: could not renew ...").
- Never two holders: it returns ``AddVip`` only while no other node may hold the VIP under
  its rules, and ``RemoveVip`` before another node may take it (the Lease machine: before any
  follower may take the lease, counted from when its last renewal was *sent*).
- Every ``Write`` it returns gets exactly one ``WriteDone`` back, and every ``AddVip`` either
  ``VipAdded`` or ``VipAddFailed``; it must decide well on both, and on either arriving late.
  A ``HoldVip`` (a new kernel lifetime for the VIP held) netlink refused, and an ``AddVip`` or
  ``HoldVip`` dropped after an earlier action of its batch failed, come back as
  ``VipAddFailed`` too: the VIP's fence is no longer what the policy set.
- ``holds_vip``: True from the decision that returned ``AddVip`` to the one that returned
  ``RemoveVip``, i.e. what the interface should show; the main loop reports a VIP seen there
  while it is False (``VipStray``), and the policy removes it.
- ``next_wakeup()``: the monotonic time by which ``handle(None, ...)`` must be called at the
  latest (None: only events matter).
- ``role``, ``role_since``, ``transitions`` and ``status()``: for ``kubevipd status`` and the
  metrics. ``Role.STOPPED`` ends the main loop, which then removes the VIP whatever happened.
- ``set_timings(t)``: a reload's new timings apply at once, and never lengthen a deadline
  already running.
- ``uses_election``: True when it decides on a Lock's news (``Observed``, ``WriteDone``): the
  main loop then connects the election backend, watches the lock and warns when the systemd
  watchdog is too slow to fence. False (the all-nodes policy): none of that runs, and the
  policy never returns a ``Write``.
- ``VipMoved``: the main loop moved the VIP (a reload, a VIP source); a policy that holds it
  answers with ``AddVip`` and announces as after a takeover (the Lease machine adds nothing
  when no whole second of kernel lifetime fits before its deadline: it is about to drop it).
- What the main loop writes itself: ``vip_text`` when the VIP moves (for its sentences), and
  ``holds_vip = False`` at exit once it removed the VIP. Everything else reaches a policy as an
  event, the carrier at start included (a policy starts believing it has carrier).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from kubevipd.announce.base import AnnounceTiming
from kubevipd.events import Decision, Event, Role, Timings


@dataclass(frozen=True)
class PolicyStatus:
    """What ``kubevipd status`` shows of a policy."""

    holder: str  # who holds the VIP as far as this node knows ("" for nobody or unknown)
    last_renew: float | None  # monotonic time of the last successful renewal, if any
    last_error: str
    held_until: float | None  # monotonic: a VIP left after a crash may stay until then


class Policy(Protocol):
    t: Timings
    role: Role
    role_since: float
    transitions: int
    holds_vip: bool
    link_up: bool
    vip_text: str
    announce_timing: AnnounceTiming

    @property
    def uses_election(self) -> bool: ...

    def handle(self, event: Event | None, now: float, wall: float) -> Decision: ...

    def next_wakeup(self) -> float | None: ...

    def status(self) -> PolicyStatus: ...

    def set_timings(self, t: Timings) -> None: ...
