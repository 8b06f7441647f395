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
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

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


class NetnsIPRoute:
    """A pyroute2 ``IPRoute`` inside network namespace ``name``, usable from any thread: every
    call runs on one thread of its own that joined the namespace, one call at a time.

    A socket made on a thread that joined the namespace and then used from other threads works
    on pyroute2 0.7 only: 0.9 keeps one socket per thread, and another thread's socket is made
    in that thread's namespace.
    """

    def __init__(self, name: str) -> None:
        from pyroute2 import IPRoute

        self._pool = ThreadPoolExecutor(
            1, f"netns-{name}", initializer=enter_netns, initargs=(name,)
        )
        self._ipr = self._pool.submit(IPRoute).result()

    def __getattr__(self, attr: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            return self._pool.submit(lambda: getattr(self._ipr, attr)(*args, **kwargs)).result()

        return call

    def close(self) -> None:
        try:
            self._pool.submit(self._ipr.close).result()
        finally:
            self._pool.shutdown()
