"""The vocabulary between the parts and the decider: events in, actions out, a decision.

Threads (the Lease watch, the netlink monitor, the health checker, the VIP source) and the
effects the main loop carries out only ever produce these events; a policy (kubevipd/policy.py)
turns each into a Decision; the main loop carries out its actions in order and reports each
fallible one's outcome as another event. Plain frozen dataclasses: easy to build in a test,
easy to log.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field

from kubevipd.election.base import LeaderRecord, Op, WriteResult
from kubevipd.vip.model import Vip


class Role(enum.Enum):
    STARTING = "starting"
    FOLLOWER = "follower"
    LEADER = "leader"
    STEPPING_DOWN = "stepping-down"
    STOPPED = "stopped"


# ------------------------------------------------------------------ events


@dataclass(frozen=True)
class Observed:
    """The lease as the watch (or a read) saw it; None: it does not exist."""

    record: LeaderRecord | None


@dataclass(frozen=True)
class WriteDone:
    op: Op
    result: WriteResult
    sent_at: float  # monotonic time the request was sent


@dataclass(frozen=True)
class HealthChanged:
    healthy: bool
    detail: str = ""


@dataclass(frozen=True)
class LinkChanged:
    up: bool


@dataclass(frozen=True)
class VipMissing:
    """The VIP vanished from the interface (deleted by hand, link flap) while we hold it."""


@dataclass(frozen=True)
class VipAddFailed:
    """Netlink refused the VIP (the interface went away, IPv6 is off on it, ...)."""

    error: str


@dataclass(frozen=True)
class VipStray:
    """The VIP is on the interface although this node does not hold it: netlink refused to
    remove it (``failed``), or netlink shows it there after all (added by hand, by another
    tool). It must go: a follower takes the lease expecting it gone."""

    reason: str
    failed: bool = False


@dataclass(frozen=True)
class VipAdded:
    """Netlink added the VIP (or it was there already)."""


@dataclass(frozen=True)
class Announced:
    """An announcement went out: ``sent`` frames or messages."""

    sent: int


@dataclass(frozen=True)
class AnnounceFailed:
    """The announcer could not announce (a socket error, a peer down, an API refusing)."""

    error: str


@dataclass(frozen=True)
class PathChanged:
    """The announcer's path to the network (BGP: its sessions) came or went: ``ok`` while at
    least one peer can take the VIP's routes; ``detail`` names each peer and its state."""

    ok: bool
    detail: str = ""
    peers: tuple[tuple[str, str], ...] = ()  # (peer, state), for the status and metrics


@dataclass(frozen=True)
class VipChanged:
    """The VIP's addresses changed at run time (a reload today; a DNS name or a DHCP lease
    later): the main loop moves it, on whatever path moved it."""

    vips: tuple[Vip, ...]
    interface: str


@dataclass(frozen=True)
class VipMoved:
    """The main loop moved the VIP (a reload, a source's VipChanged): the new address or
    interface is attached but not on yet. The policy puts it on if it holds the VIP."""


@dataclass(frozen=True)
class Stop:
    reason: str = "SIGTERM"


Event = (
    Observed
    | WriteDone
    | HealthChanged
    | LinkChanged
    | VipMissing
    | VipAddFailed
    | VipAdded
    | VipStray
    | VipMoved
    | Announced
    | AnnounceFailed
    | PathChanged
    | Stop
)


# ------------------------------------------------------------------ actions


@dataclass(frozen=True)
class Write:
    op: Op
    record: LeaderRecord
    timeout: float


@dataclass(frozen=True)
class AddVip:
    """Put the VIP on the interface; with ``lifetime``, the kernel removes it by itself that
    many seconds later unless a HoldVip extends it (None: it stays until removed)."""

    lifetime: int | None = None


@dataclass(frozen=True)
class HoldVip:
    """Set the kernel lifetime of the VIP that is there (after each renewal)."""

    lifetime: int | None


@dataclass(frozen=True)
class RemoveVip:
    pass


@dataclass(frozen=True)
class Announce:
    """Tell the network this node has the VIP. ``term``: the Lease's leaseTransitions when
    this node took it, so that a later leader's announcement wins over an earlier one's
    (BGP: a lower MED); None where every holder is equal (all-nodes mode)."""

    term: int | None = None


Action = Write | AddVip | HoldVip | RemoveVip | Announce


@dataclass(frozen=True)
class Timings:
    lease_duration: float
    renew_deadline: float
    retry_period: float
    link_down_grace: float = 1.0
    health_gate: bool = True
    # How long the announcer's path may be down (BGP: no session established) before a
    # leader counts as unfit to hold the VIP, as an unhealthy apiserver makes it.
    path_grace: float = 3.0

    @property
    def api_timeout(self) -> float:
        """Every call ends well inside the renew deadline, leaving room for one retry."""
        return max(0.2, min(self.retry_period, self.renew_deadline / 2))


@dataclass(frozen=True)
class Decision:
    """What a policy decided on one event, and why: ``said`` holds its sentences in order,
    each with its logging level ("became leader of plndr-cp-lock, VIP ... (acquired the lease)",
    "lost leadership: could not renew the lease within 3s (...)"). The main loop logs them; the
    tests assert on them."""

    actions: list[Action] = field(default_factory=list)
    said: tuple[tuple[int, str], ...] = ()

    @property
    def why(self) -> str:
        return "; ".join(text for _, text in self.said)

    def says(self, text: str) -> bool:
        """True when one of its sentences contains ``text``."""
        return any(text in sentence for _, sentence in self.said)


INFO, WARNING = logging.INFO, logging.WARNING
