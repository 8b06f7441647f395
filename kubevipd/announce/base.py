"""The contract of an announcer: how the network learns which node has the VIP.

The policy (kubevipd/policy.py: the Lease machine, the all-nodes policy) says *when* to
announce, from the timing the announcer declares; the main loop (kubevipd/daemon.py) calls the
announcer and reports the outcome back as an event. ARP/NDP is one implementation
(kubevipd/announce/arp.py); BGP (an ExaBGP child announcing VIP/32) and a cloud Elastic IP are
the next ones.

What an implementation must guarantee:

- ``timing``: when it wants to be called after the VIP went up here (a takeover, a VIP restored,
  the carrier back): ``burst`` offsets in seconds from then, and ``refresh`` seconds between
  announcements while leading, or None for never again (a BGP session keeps a route up by
  itself). Fixed for the announcer's life.
- ``slow``: False when ``announce()`` and ``withdraw()`` return within milliseconds (a send() a
  frame); the main loop then calls them itself. True when they may take seconds (an API call):
  the main loop runs them on a worker thread of their own, never on its own thread (the systemd
  watchdog pings from there), one call at a time and in order, ``set_vips`` and ``close``
  included; so a slow announcer is never called from two threads at once. A slow call still
  returns within a bound it documents (seconds, not minutes): every later call, for whatever
  VIP, waits behind it, and at exit only a short drain is waited for. An announcement already
  waiting is not queued again.
- ``announce(term)``: tell the network that this node has the VIP now. Idempotent, called
  again at every due time. ``term`` is the leadership's (the Lease's leaseTransitions when this
  node took it; None in all-nodes mode): a later term's announcement must win over an earlier
  one's wherever the network could keep both (BGP: a lower MED); an announcer whose network
  keeps only the latest claim ignores it. Returns how many frames or messages went out; raises
  ``AnnounceError`` with a sentence an operator can act on when it could not tell the network.
  Never raises anything else for a network or peer failure.
- ``withdraw()``: tell the network this node no longer has it (BGP: withdraw the route; ARP:
  nothing, the next holder's announcement overrides the neighbour entries). Called just before
  the VIP leaves the interface on a step-down, a lost lease and at exit (a route must go while
  the address still answers what it brings); when the VIP moves at run time, just after the old
  address left (a removal that fails keeps the old VIP, announced); also when this node never
  announced it (a stray copy removed): it must undo only
  what this node announced, never another node's claim (an Elastic IP assigned to the new
  leader stays there). Raises ``AnnounceError`` like ``announce()``; a failed withdrawal is
  logged and not retried.
- ``set_vips(vips)``: the VIP moved at run time on the same interface (a new interface gets a
  new announcer); from then on ``announce()`` and ``withdraw()`` are for these. When this node
  held the old VIP, its ``withdraw()`` came first.
- ``close()``: release sockets and children; called once, last.
- The path to the network: an announcer that depends on one (BGP: its sessions) reports it
  through ``AnnouncerEnv.on_path(ok, detail, peers)`` whenever it changes, from any thread,
  first from its constructor, and never after ``close()`` returned; ``ok`` False means no
  announcement can reach anyone. One that does not (ARP: the carrier says it all) never calls
  it.

Each announcer is built by an explicit factory that matches on the config
(kubevipd/parts.py), never by dynamic loading. ``AnnounceSchedule`` turns a timing into due
times; every policy keeps one, so the Lease machine and the all-nodes policy announce alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from kubevipd.vip.model import Vip


class AnnounceError(Exception):
    """The network could not be told; the message says what failed and where."""


@dataclass(frozen=True)
class AnnounceTiming:
    burst: tuple[float, ...]
    refresh: float | None


ONCE = AnnounceTiming(burst=(0.0,), refresh=None)


@dataclass
class AnnounceSchedule:
    """When to announce while holding the VIP, from an announcer's timing; pure, no clock.

    What it guarantees, for ``start(now, timing)`` and then ``due(now)`` at non-decreasing
    times: every burst offset counts exactly once, at the first ``due()`` at or after
    start + offset (several at once when called late: one announcement each, so a late loop
    still sends the whole burst); after the last of them, refresh announcements every
    ``refresh`` seconds counted from when the previous one was *returned* (a late call never
    makes the next one come early); none at all with refresh None. ``next_at()`` is the time
    from which ``due()`` returns more than 0 (None: nothing scheduled), for ``next_wakeup``.
    ``start()`` again restarts the burst (the VIP went up again); ``clear()`` stops it all.
    """

    _due: list[float] = field(default_factory=list)
    _refresh: float | None = None

    def start(self, now: float, timing: AnnounceTiming) -> None:
        """The VIP went up here now: the burst from now, then the timing's refresh."""
        self._due = sorted(now + d for d in timing.burst)
        self._refresh = timing.refresh

    def clear(self) -> None:
        """The VIP is gone from here: nothing more to announce until ``start()``."""
        self._due, self._refresh = [], None

    def due(self, now: float) -> int:
        """How many announcements are due by ``now`` (0: none); they count as sent."""
        n = 0
        while self._due and self._due[0] <= now:
            self._due.pop(0)
            n += 1
            if not self._due and self._refresh is not None:
                self._due.append(now + self._refresh)
                break  # counted from now: never due in this call, even with a refresh of 0
        return n

    def next_at(self) -> float | None:
        """The monotonic time of the next announcement, or None."""
        return self._due[0] if self._due else None


PathReport = Callable[[bool, str, dict[str, str]], None]


def no_path_report(ok: bool, detail: str, peers: dict[str, str]) -> None:
    """For an announcer built where nobody listens (tests, ``check-config``)."""


@dataclass(frozen=True)
class AnnouncerEnv:
    """What an announcer gets from the daemon besides the config: where it may keep files
    (ExaBGP's config and socket) and whom to tell of its path."""

    run_dir: Path
    on_path: PathReport = no_path_report


class Announcer(Protocol):
    timing: AnnounceTiming
    slow: bool

    def announce(self, term: int | None = None) -> int: ...

    def withdraw(self) -> None: ...

    def set_vips(self, vips: Sequence[Vip]) -> None: ...

    def close(self) -> None: ...
