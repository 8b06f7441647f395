"""The election interface and client-go's lock rules, free of any I/O.

A backend stores one ``LeaderRecord`` with compare-and-swap on an opaque version, and streams
changes of it. Everything about *when* to write lives in the daemon's state machine; *what* to
write follows client-go's LeaderElector field for field (tryAcquireOrRenew and release), so
kubevipd and kube-vip can share a Lease during a migration.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

# Annotations kubevipd adds to the Lease; client-go keeps annotations it does not know on update.
DEGRADED = "kubevipd.io/degraded"
TAKEOVER = "kubevipd.io/takeover-requested-by"
OURS = (DEGRADED, TAKEOVER)

ErrorKind = Literal["timeout", "network", "unauthorized", "forbidden", "server", "invalid", "other"]
Op = Literal["acquire", "renew", "release", "request"]


@dataclass(frozen=True)
class LeaderRecord:
    """client-go's LeaderElectionRecord plus the Lease's annotations and resourceVersion."""

    holder: str = ""
    lease_duration_s: int = 0
    acquire_time: dt.datetime | None = None
    renew_time: dt.datetime | None = None
    transitions: int = 0
    annotations: Mapping[str, str] = field(default_factory=dict)
    # The backend's version (resourceVersion): compared, never interpreted.
    version: str = field(default="", compare=False)

    @property
    def degraded(self) -> bool:
        return self.annotations.get(DEGRADED) == "true"

    @property
    def takeover_requested_by(self) -> str | None:
        return self.annotations.get(TAKEOVER) or None

    def content(self) -> tuple[object, ...]:
        """What client-go compares to decide that the record changed (not the version)."""
        return (
            self.holder,
            self.lease_duration_s,
            self.acquire_time,
            self.renew_time,
            self.transitions,
            tuple(sorted(self.annotations.items())),
        )


@dataclass(frozen=True)
class WriteResult:
    """The outcome of one write. ``record`` is the stored record after it (or, after a conflict,
    the fresh one read back), when known."""

    ok: bool
    record: LeaderRecord | None = None
    conflict: bool = False
    missing: bool = False  # the lease does not exist (after a conflict read-back, or on update)
    error: str = ""
    error_kind: ErrorKind | None = None


def _utc(now: float) -> dt.datetime:
    # Lease times are MicroTime: whole microseconds.
    return dt.datetime.fromtimestamp(round(now, 6), dt.UTC)


def _keep_foreign(annotations: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in annotations.items() if k not in OURS}


def acquire_record(
    old: LeaderRecord | None, identity: str, duration_s: int, wall_now: float, degraded: bool
) -> LeaderRecord:
    """What tryAcquireOrRenew writes: a renewal keeps acquireTime and transitions, a takeover
    counts one more transition."""
    now = _utc(wall_now)
    ann = _keep_foreign(old.annotations) if old else {}
    if degraded:
        ann[DEGRADED] = "true"
    if old is not None and old.holder == identity:
        return LeaderRecord(
            holder=identity,
            lease_duration_s=duration_s,
            acquire_time=old.acquire_time or now,
            renew_time=now,
            transitions=old.transitions,
            annotations=ann,
            version=old.version,
        )
    return LeaderRecord(
        holder=identity,
        lease_duration_s=duration_s,
        acquire_time=now,
        renew_time=now,
        transitions=(old.transitions + 1) if old is not None else 0,
        annotations=ann,
        version=old.version if old else "",
    )


def release_record(old: LeaderRecord, wall_now: float) -> LeaderRecord:
    """What client-go's release (ReleaseOnCancel) writes: no holder, a one-second lease."""
    now = _utc(wall_now)
    return LeaderRecord(
        holder="",
        lease_duration_s=1,
        acquire_time=now,
        renew_time=now,
        transitions=old.transitions,
        annotations=_keep_foreign(old.annotations),
        version=old.version,
    )


def takeover_request(old: LeaderRecord, identity: str) -> LeaderRecord:
    """A healthy follower asks a degraded leader to hand over; only the annotation changes."""
    return replace(old, annotations={**old.annotations, TAKEOVER: identity})


Observer = Callable[[LeaderRecord | None], None]


class Election(Protocol):
    """A lock with compare-and-swap and a change stream, the contract of an election backend
    (the Kubernetes Lease: kubevipd/election/lease.py). What an implementation must guarantee:

    - ``write``: atomic compare-and-swap on ``record.version``; never retried behind the
      caller's back, and returns within ``timeout`` (a hung call must not delay the leader's
      drop): every failure is a ``WriteResult`` with ``ok`` False and an ``error_kind``, never
      an exception for a network or server failure.
    - ``watch``: every new version of the record reaches ``observe``, even one whose content is
      unchanged (a follower restarts its expiry on any new version); it reconnects by itself
      and returns only once ``stopped()``.
    - It is called from several threads at once (writes from a pool, the watch, the peer
      refresh): each call must be safe beside the others.
    """

    identity: str

    def describe(self) -> str:
        """Where the lock lives, for log lines (e.g. ``Lease kube-system/plndr-cp-lock``)."""
        ...

    def write(self, op: Op, record: LeaderRecord, timeout: float) -> WriteResult:
        """Create (``record.version`` empty) or replace the record if its version still matches."""
        ...

    def read(self, timeout: float) -> WriteResult:
        """The current record (``ok`` and ``record`` None when the lock does not exist yet)."""
        ...

    def watch(self, observe: Observer, stopped: Callable[[], bool]) -> None:
        """Call ``observe`` with every new state of the record until ``stopped()``; blocks."""
        ...

    @property
    def ca_file(self) -> str | None:
        """The CA bundle the lock's API is verified with (None: the system's); the health
        check of the local apiserver trusts the same one."""
        ...

    def run_peer_refresh(self, stopped: Callable[[], bool]) -> None:
        """Keep up to date the other places a release can go when ours does not answer (the
        Lease: the other control-plane apiservers); blocks until ``stopped()``. A backend with
        only one place returns at once."""
        ...

    def close(self) -> None:
        """Release connections; no call is made after it."""
        ...
