"""Threads that gather news for the main loop, kept alive.

A thread that dies silently is worse than a crash: a dead Lease watch leaves followers blind to
releases and renewals, a dead health checker freezes the last verdict. So every such thread runs
under :func:`supervise`: an exception is logged once with its traceback (the same failure again
is counted, not logged again), and the work starts over after a short pause.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable

log = logging.getLogger("kubevipd")

RESTART_S = 1.0  # pause before a dead thread's work starts over


def supervise(
    name: str,
    target: Callable[[], None],
    stopped: Callable[[], bool],
    pause: Callable[[float], bool] | None = None,
) -> threading.Thread:
    """Start ``target`` on a daemon thread and run it again whenever it raises, until
    ``stopped()``. ``pause(seconds)`` waits between two runs (True: stop now); by default a
    plain wait. A target that returns while not stopped is run again too."""
    stop_event = threading.Event()
    wait = pause or (lambda s: stop_event.wait(s) or stopped())

    def run() -> None:
        seen: dict[str, int] = {}
        while not stopped():
            try:
                target()
            except Exception as e:
                key = f"{type(e).__name__}: {e}"
                seen[key] = seen.get(key, 0) + 1
                if seen[key] == 1:
                    log.error(
                        "thread %s died (%s); starting it again. Traceback:\n%s",
                        name,
                        key,
                        traceback.format_exc().rstrip(),
                    )
                else:
                    log.debug("thread %s died again (%s, %d times)", name, key, seen[key])
            if stopped() or wait(RESTART_S):
                return

    t = threading.Thread(target=run, name=name, daemon=True)
    t.start()
    return t
