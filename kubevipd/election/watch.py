"""The Lease's change stream: list, then watch from the list's version, for as long as it runs.

A watch ends after WATCH_SECONDS (asked of the server), the apiserver forgets old versions
(410 Gone, after a compaction or a restart), and a stream may break at any time: the loop lists
again whenever it cannot go on from the version it has, and asks for bookmarks, which keep that
version recent on a quiet Lease. It is a class of its own because it has a life of its own: one
thread blocks in run(), and the election's close() from another must end that read at once
(interrupt).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from kubevipd.lazyimport import defer_kubernetes

defer_kubernetes()  # before the first kubernetes import: only the modules named below load

from kubernetes.client.exceptions import ApiException  # noqa: E402
from kubernetes.watch.watch import iter_resp_lines  # noqa: E402

from kubevipd.election.base import Observer  # noqa: E402
from kubevipd.election.client import (  # noqa: E402
    READ_ERRORS,
    Caller,
    api_error_text,
    net_error_text,
    request_options,
)
from kubevipd.election.lease_object import record_from_lease  # noqa: E402

log = logging.getLogger("kubevipd.election")

WATCH_SECONDS = 60  # server-side watch timeout; the stream is restarted after it


class LeaseWatch:
    """One Lease's list-and-watch loop, through the election's clients (``call``)."""

    def __init__(
        self,
        call: Caller,
        namespace: str,
        name: str,
        describe: Callable[[], str],
        closed: threading.Event,
    ) -> None:
        self._call = call
        self.namespace = namespace
        self.name = name
        self.describe = describe
        self._closed = closed  # the election's: set by its close()
        self.listed = threading.Event()  # the Lease was read once
        self._resp: Any = None

    def run(self, observe: Observer, stopped: Callable[[], bool]) -> None:
        """List, then watch from the list's version; relist on 410 Gone or a broken stream."""
        backoff = 0.2
        rv: str | None = None
        failing = False
        while not stopped() and not self._closed.is_set():
            try:
                if rv is None:
                    rv = self._list(observe)
                    self.listed.set()
                    if failing:
                        log.info("reading %s works again", self.describe())
                    failing = False
                began = time.monotonic()
                rv = self._watch_once(rv, observe, stopped)
                if time.monotonic() - began < 1.0:
                    self._closed.wait(backoff)  # a stream that ends at once must not spin
                    backoff = min(backoff * 2, 2.0)
                else:
                    backoff = 0.2
            except _Relist:
                rv = None
            except Exception as e:
                if self._closed.is_set() or stopped():
                    return  # close() pulled the stream away under us
                if not isinstance(e, READ_ERRORS):
                    raise
                text = api_error_text(e) if isinstance(e, ApiException) else net_error_text(e, 5.0)
                if not failing and rv is None:
                    log.warning("cannot read %s: %s; retrying", self.describe(), text)
                    failing = True
                else:
                    log.debug(
                        "watch of %s broke (%s); retrying in %.1fs", self.describe(), text, backoff
                    )
                rv = None
                self._closed.wait(backoff)
                backoff = min(backoff * 2, 2.0)

    def interrupt(self) -> None:
        """End the read another thread is blocked in (after the election's ``closed`` is set)."""
        resp = self._resp
        # Another thread is blocked reading the stream: closing the response from here can wait
        # on that read for good. Shutting the TCP socket down ends the read at once instead.
        sock = getattr(getattr(resp, "_connection", None), "sock", None)
        if sock is not None:
            try:
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                log.debug("shutting the watch stream down failed", exc_info=True)

    def _list(self, observe: Observer) -> str:
        resp = self._call(
            lambda api: api.list_namespaced_lease(
                self.namespace, field_selector=f"metadata.name={self.name}", **request_options(5.0)
            )
        )
        doc = json.loads(resp.data)
        items = doc.get("items") or []
        observe(record_from_lease(items[0]) if items else None)
        return str(doc["metadata"]["resourceVersion"])

    def _watch_once(self, rv: str, observe: Observer, stopped: Callable[[], bool]) -> str:
        resp = self._call(
            lambda api: api.list_namespaced_lease(
                self.namespace,
                field_selector=f"metadata.name={self.name}",
                watch=True,
                resource_version=rv,
                allow_watch_bookmarks=True,
                timeout_seconds=WATCH_SECONDS,
                _request_timeout=(2.0, WATCH_SECONDS + 10),
                _preload_content=False,
            )
        )
        self._resp = resp
        try:
            # close() sets ``closed`` and then interrupts the stream it sees: one that came
            # after (we were still reading its headers) must end here, not block for a minute.
            if self._closed.is_set():
                return rv
            for line in iter_resp_lines(resp):
                if stopped():
                    break
                ev = json.loads(line)
                obj = ev.get("object") or {}
                kind = ev.get("type")
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Relist
                    raise ValueError(f"watch error: {obj.get('message')}")
                rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                if kind in ("ADDED", "MODIFIED"):
                    observe(record_from_lease(obj))
                elif kind == "DELETED":
                    observe(None)
        finally:
            self._resp = None
            resp.release_conn()
        return rv


class _Relist(Exception):
    """The watch cannot go on from its version (410 Gone): list again."""
