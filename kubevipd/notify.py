"""The systemd notify protocol: READY, STATUS, WATCHDOG, RELOADING, STOPPING.

Outside systemd (no $NOTIFY_SOCKET) every call is a no-op. The watchdog is pinged only from the
main loop, so a stuck loop makes systemd restart the daemon.
"""

from __future__ import annotations

import os
import time

import sdnotify


class Notifier:
    def __init__(self) -> None:
        self._n = sdnotify.SystemdNotifier() if os.environ.get("NOTIFY_SOCKET") else None
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        for_us = not pid or pid == str(os.getpid())
        self.watchdog_interval: float | None = (
            int(usec) / 1e6 if usec.isdigit() and int(usec) > 0 and for_us else None
        )
        self._next_ping = 0.0

    @property
    def active(self) -> bool:
        return self._n is not None

    def _send(self, text: str) -> None:
        if self._n is not None:
            self._n.notify(text)

    def ready(self, status: str) -> None:
        self._send(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        self._send(f"STATUS={status}")

    def reloading(self) -> None:
        self._send(
            f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
        )

    def stopping(self, status: str) -> None:
        self._send(f"STOPPING=1\nSTATUS={status}")

    def watchdog(self, now: float) -> None:
        """Ping at half the interval; call from the main loop on every turn."""
        if self.watchdog_interval is None or now < self._next_ping:
            return
        self._send("WATCHDOG=1")
        self._next_ping = now + self.watchdog_interval / 2

    def max_sleep(self) -> float:
        """The main loop wakes at least this often: a quarter of the watchdog, at most 1s."""
        return min(self.watchdog_interval / 4, 1.0) if self.watchdog_interval else 1.0


# What fencing a frozen leader takes besides WatchdogSec: the unit's TimeoutAbortSec (SIGABRT,
# then SIGKILL) and ``kubevipd cleanup`` (ExecStopPost) removing the VIP.
ABORT_S = 1.0
CLEANUP_S = 0.5


def watchdog_fence_warning(
    watchdog_s: float | None, lease_duration: float, retry_period: float
) -> str | None:
    """One line when the lease is too short for systemd's watchdog to fence a frozen leader.

    A frozen daemon keeps its VIP until the watchdog kills it and the cleanup removes it; a
    follower may take the lease ``lease_duration`` after the last renewal it saw, which can be
    a retry period before the freeze. The warning is for that case, the one of a healthy leader.
    A freeze at the end of a streak of failing renewals (up to ``renew_deadline`` after the last
    one that landed) would need ``lease_duration - renew_deadline`` above the fence time, which
    the shipped 5s/3s with WatchdogSec=2s do not give; warning for it would warn on the defaults,
    so docs/systemd.md says it instead.
    """
    if watchdog_s is None:
        return None
    fence = watchdog_s + ABORT_S + CLEANUP_S
    window = lease_duration - retry_period
    if fence < window:
        return None
    return (
        f"election.lease_duration {lease_duration:g}s is too short for systemd's watchdog "
        f"(WatchdogSec={watchdog_s:g}s) to fence a frozen leader: the kill, the abort and the "
        f"cleanup take about {fence:g}s, and a follower may take the lease {window:g}s after "
        f"the last renewal; use lease_duration > {fence + retry_period:g}s or a shorter "
        "WatchdogSec"
    )
