"""The contract of an announcer: how the network learns which node has the VIP.

The decider (kubevipd/machine.py) says *when* to announce, from the timing the announcer
declares; the main loop (kubevipd/daemon.py) calls the announcer and reports the outcome back
as an event. ARP/NDP is one implementation (kubevipd/announce/arp.py); BGP (an ExaBGP child
announcing VIP/32) and a cloud Elastic IP are the next ones.

What an implementation must guarantee:

- ``timing``: when it wants to be called after the VIP went up here (a takeover, a VIP restored,
  the carrier back): ``burst`` offsets in seconds from then, and ``refresh`` seconds between
  announcements while leading, or None for never again (a BGP session keeps a route up by
  itself). Fixed for the announcer's life.
- ``slow``: False when ``announce()`` and ``withdraw()`` return within milliseconds (a send() a
  frame); the main loop then calls them itself. True when they may take seconds (an API call):
  the main loop runs them on a worker thread of their own, never on its own thread (the systemd
  watchdog pings from there), one call at a time and in order.
- ``announce()``: tell the network that this node has the VIP now. Idempotent, called again at
  every due time. Returns how many frames or messages went out; raises ``AnnounceError`` with a
  sentence an operator can act on when it could not tell the network. Never raises anything
  else for a network or peer failure.
- ``withdraw()``: tell the network this node no longer has it (BGP: withdraw the route; ARP:
  nothing, the next holder's announcement overrides the neighbour entries). Called after the
  VIP was removed from the interface; raises ``AnnounceError`` like ``announce()``.
- ``set_vips(vips)``: the VIP moved at run time; from then on ``announce()`` is for these.
- ``close()``: release sockets and children; called once, last.

Each announcer is built by an explicit factory that matches on the config
(kubevipd/parts.py), never by dynamic loading.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from kubevipd.vip.model import Vip


class AnnounceError(Exception):
    """The network could not be told; the message says what failed and where."""


@dataclass(frozen=True)
class AnnounceTiming:
    burst: tuple[float, ...]
    refresh: float | None


ONCE = AnnounceTiming(burst=(0.0,), refresh=None)


class Announcer(Protocol):
    timing: AnnounceTiming
    slow: bool

    def announce(self) -> int: ...

    def withdraw(self) -> None: ...

    def set_vips(self, vips: Sequence[Vip]) -> None: ...

    def close(self) -> None: ...
