"""The Kubernetes Lease backend (coordination.k8s.io/v1) on the ``kubernetes`` client.

What it adds to the client: no urllib3 retries (a retried call would outlive the renew deadline),
a hard timeout on every call, a read-back after a timed-out write (it may have gone through),
a watch that survives 410 Gone and uses bookmarks, kubeadm's super-admin.conf fallback, and a
release that also goes to the other control-plane apiservers (kubevipd.election.peers), so a
leader whose own apiserver died still hands over at once.

This module is the election itself: the writes and reads with their outcomes, the release sent
everywhere, the list of the other apiservers, close(). The parts live next to it: client (the
kubeconfigs made into clients, the super-admin.conf fallback, timeouts, how a call failed),
watch (the change stream), lease_object (the Lease as JSON to a LeaderRecord and back).
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from kubevipd.lazyimport import defer_kubernetes

defer_kubernetes()  # before the first kubernetes import: only the modules named below load

import urllib3  # noqa: E402
from kubernetes.client.api.coordination_v1_api import CoordinationV1Api  # noqa: E402
from kubernetes.client.api.discovery_v1_api import DiscoveryV1Api  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402

from kubevipd.config.model import ElectionSpec  # noqa: E402
from kubevipd.election import peers  # noqa: E402
from kubevipd.election.base import ErrorKind, LeaderRecord, Observer, Op, WriteResult  # noqa: E402
from kubevipd.election.client import (  # noqa: E402
    READ_ERRORS,
    Caller,
    ElectionSetupError,
    KubeconfigClient,
    KubeconfigClients,
    api_error_text,
    is_timeout,
    kind_of_status,
    net_error_text,
    request_options,
)
from kubevipd.election.lease_object import lease_from_record, microtime, record_from_lease  # noqa: E402
from kubevipd.election.watch import LeaseWatch  # noqa: E402
from kubevipd.health import KUBEADM_NAME  # noqa: E402

# What other code imports from here; the definitions live in the modules named above.
__all__ = [
    "ElectionSetupError",
    "LeaseElection",
    "lease_from_record",
    "microtime",
    "record_from_lease",
]

log = logging.getLogger("kubevipd.election")


class LeaseElection(KubeconfigClients):
    """A Lease as the lock, with client-go's semantics (see election.base for what is written)."""

    def __init__(self, spec: ElectionSpec, identity: str) -> None:
        self.identity = identity
        self.namespace = spec.namespace
        self.name = spec.lease_name
        super().__init__(spec.kubeconfig, spec.server)
        self._base_meta: dict[str, Any] | None = None
        self._closed = threading.Event()
        self._watcher = LeaseWatch(
            self._call, self.namespace, self.name, self.describe, self._closed
        )
        # The other nodes' apiservers (kubevipd.election.peers), read while ours works, and the
        # kubeconfig (path, stamp) their clients were made from.
        self._peers: dict[str, KubeconfigClient] = {}
        self._peers_source: tuple[Path, tuple[int, int, int] | None] | None = None
        self._peer_error = ""

    # interface --------------------------------------------------------------

    def describe(self) -> str:
        return f"Lease {self.namespace}/{self.name} at {self._active.host}"

    def write(self, op: Op, record: LeaderRecord, timeout: float) -> WriteResult:
        if op == "release":
            with self._lock:
                others = list(self._peers.items())
            if others:
                return self._release_anywhere(record, timeout, others)
        return self._write(self._call, op, record, timeout)

    def _write(
        self, call: Caller, op: Op, record: LeaderRecord, timeout: float, where: str = ""
    ) -> WriteResult:
        body = lease_from_record(record, self.namespace, self.name, self._base_meta)
        started = time.monotonic()
        try:
            if record.version:
                resp = call(
                    lambda api: api.replace_namespaced_lease(
                        self.name, self.namespace, body, **request_options(timeout)
                    )
                )
            else:
                resp = call(
                    lambda api: api.create_namespaced_lease(
                        self.namespace, body, **request_options(timeout)
                    )
                )
        except ApiException as e:
            if e.status == 409:
                left = max(0.2, timeout - (time.monotonic() - started))
                fresh = self._read(call, left)
                return WriteResult(
                    ok=False,
                    conflict=True,
                    record=fresh.record,
                    missing=fresh.ok and fresh.record is None,
                    error=api_error_text(e),
                )
            if e.status == 404:
                return WriteResult(ok=False, missing=True, error=api_error_text(e))
            return WriteResult(
                ok=False, error=api_error_text(e), error_kind=kind_of_status(e.status)
            )
        except (urllib3.exceptions.HTTPError, OSError, ssl.SSLError) as e:
            kind: ErrorKind = "timeout" if is_timeout(e) else "network"
            if kind == "timeout":
                # The write may have been applied before the answer was lost: look.
                back = self._read(call, timeout)
                r = back.record
                if back.ok and r is not None and r.content() == record.content():
                    log.info("%s timed out but was applied (read back)%s", op, where)
                    return WriteResult(ok=True, record=r)
            return WriteResult(ok=False, error=net_error_text(e, timeout), error_kind=kind)
        obj = json.loads(resp.data)
        self._base_meta = obj.get("metadata")
        return WriteResult(ok=True, record=record_from_lease(obj))

    def _release_anywhere(
        self, record: LeaderRecord, timeout: float, others: list[tuple[str, KubeconfigClient]]
    ) -> WriteResult:
        """The release at once through our apiserver and every other one: the first that
        lands wins, the rest meet a conflict (the write is conditional on the version), so
        a dead local apiserver costs nothing. Returns the first success, else the most telling
        failure (a conflict, then ours)."""
        pool = ThreadPoolExecutor(max_workers=1 + len(others), thread_name_prefix="release")
        jobs: dict[Future[WriteResult], str] = {
            pool.submit(self._write, self._call, "release", record, timeout): ""
        }
        for url, client in others:

            def via(fn: Callable[[CoordinationV1Api], Any], c: KubeconfigClient = client) -> Any:
                return fn(c.api)

            jobs[pool.submit(self._write, via, "release", record, timeout, f" via {url}")] = url
        pool.shutdown(wait=False)
        results: dict[str, WriteResult] = {}
        pending = set(jobs)
        end = time.monotonic() + timeout * 2 + 0.5  # each call also bounds itself
        while pending:
            done, pending = wait(pending, timeout=max(0.0, end - time.monotonic()),
                                 return_when=FIRST_COMPLETED)  # fmt: skip
            if not done:
                break
            for f in done:
                try:
                    r = f.result()
                except Exception as e:  # one odd answer must not spoil the others' chance
                    log.debug("release via %s raised", jobs[f] or "our apiserver", exc_info=True)
                    r = WriteResult(ok=False, error=f"{type(e).__name__}: {e}", error_kind="other")
                results[jobs[f]] = r
                if r.ok:
                    if jobs[f]:
                        local = results.get("")
                        why = f" (ours: {local.error})" if local is not None and local.error else ""
                        log.info("released the lease through %s%s", jobs[f], why)
                    return r
        conflict = next((r for r in results.values() if r.conflict), None)
        return (
            conflict
            or results.get("")
            or WriteResult(
                ok=False, error=f"no apiserver answered within {timeout:.1f}s", error_kind="timeout"
            )
        )

    def read(self, timeout: float) -> WriteResult:
        return self._read(self._call, timeout)

    def _read(self, call: Caller, timeout: float) -> WriteResult:
        try:
            resp = call(
                lambda api: api.read_namespaced_lease(
                    self.name, self.namespace, **request_options(timeout)
                )
            )
        except ApiException as e:
            if e.status == 404:
                return WriteResult(ok=True, record=None)
            return WriteResult(
                ok=False, error=api_error_text(e), error_kind=kind_of_status(e.status)
            )
        except (urllib3.exceptions.HTTPError, OSError, ssl.SSLError) as e:
            kind: ErrorKind = "timeout" if is_timeout(e) else "network"
            return WriteResult(ok=False, error=net_error_text(e, timeout), error_kind=kind)
        obj = json.loads(resp.data)
        self._base_meta = obj.get("metadata")
        return WriteResult(ok=True, record=record_from_lease(obj))

    def watch(self, observe: Observer, stopped: Callable[[], bool]) -> None:
        """List, then watch from the list's version; relist on 410 Gone or a broken stream."""
        self._watcher.run(observe, stopped)

    def run_peer_refresh(self, stopped: Callable[[], bool]) -> None:
        """Blocks: keep the list of the other apiservers fresh until ``stopped()`` or close().

        Its own thread, so a slow local apiserver never holds up the watch. It starts once the
        Lease could be read: until then, that failure is the one to report."""
        while not self._watcher.listed.wait(1.0):
            if stopped() or self._closed.is_set():
                return
        while not stopped() and not self._closed.is_set():
            ok = self.refresh_peers()
            self._closed.wait(peers.REFRESH_S if ok else peers.RETRY_S)

    def refresh_peers(self, timeout: float = 2.0) -> bool:
        """Read the other apiservers from the ``kubernetes`` EndpointSlice; False on failure.

        A failure keeps the last list: that list matters exactly when our apiserver is down.
        The clients are made again when the kubeconfig changed (renewed certificates).
        """
        try:
            resp = self._call(
                lambda api: DiscoveryV1Api(api.api_client).read_namespaced_endpoint_slice(
                    peers.SLICE_NAME, peers.SLICE_NAMESPACE, **request_options(timeout)
                )
            )
            urls = peers.remote_apiserver_urls(json.loads(resp.data))
        except (ApiException, *READ_ERRORS) as e:
            text = api_error_text(e) if isinstance(e, ApiException) else net_error_text(e, timeout)
            if text != self._peer_error:
                hint = (
                    "; grant get on endpointslices in namespace default"
                    if isinstance(e, ApiException) and e.status == 403
                    else ""
                )
                log.warning(
                    "cannot read the other apiservers (EndpointSlice %s/%s): %s%s; if this "
                    "node's apiserver dies, followers wait for the lease to expire",
                    peers.SLICE_NAMESPACE, peers.SLICE_NAME, text, hint,
                )  # fmt: skip
                self._peer_error = text
            return False
        self._peer_error = ""
        with self._lock:
            source = (self._active.path, self._active.stamp)
            if urls == list(self._peers) and source == self._peers_source:
                return True
            old = self._peers
        fresh: dict[str, KubeconfigClient] = {}
        for url in urls:
            try:
                reuse = old.get(url) if source == self._peers_source else None
                fresh[url] = reuse or KubeconfigClient(source[0], url, KUBEADM_NAME)
            except ElectionSetupError as e:
                log.warning("cannot reach the apiserver at %s for a hand-over: %s", url, e)
        with self._lock:
            self._peers, self._peers_source = fresh, source
        for url, c in old.items():
            if fresh.get(url) is not c:
                c.close()
        if list(fresh) != list(old):
            log.info(
                "other apiservers, for a hand-over when this node's is down: %s",
                ", ".join(fresh) or "none",
            )
        return True

    def close(self) -> None:
        self._closed.set()
        self._watcher.interrupt()
        self._primary.close()
        if self._fallback is not None:
            self._fallback.close()
        with self._lock:
            others = list(self._peers.values())
        for c in others:
            c.close()
