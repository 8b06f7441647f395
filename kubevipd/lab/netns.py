"""Run code inside a network namespace from a Python thread.

setns(2) changes only the calling thread's namespace, and a socket keeps the namespace it was
made in, so a short-lived thread can create sockets (a listener, a netlink socket) that the rest
of the process then uses from any thread.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def enter_netns(name: str) -> None:
    """Move the calling thread (only it) into network namespace ``name``."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        _setns(fd)
    finally:
        os.close(fd)


def run_in_netns(name: str, fn: Callable[[], T]) -> T:
    """Call ``fn`` in a new thread that has joined network namespace ``name``."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            enter_netns(name)
            result.append(fn())
        except BaseException as e:
            error.append(e)

    t = threading.Thread(target=target, name=f"netns-{name}", daemon=True)
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]
