"""The Kubernetes Lease backend (coordination.k8s.io/v1) on the ``kubernetes`` client.

What it adds to the client: no urllib3 retries (a retried call would outlive the renew deadline),
a hard timeout on every call, a read-back after a timed-out write (it may have gone through),
a watch that survives 410 Gone and uses bookmarks, kubeadm's super-admin.conf fallback, and a
release that also goes to the other control-plane apiservers (kubevipd.election.peers), so a
leader whose own apiserver died still hands over at once.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import socket
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
from kubernetes.client.api_client import ApiClient  # noqa: E402
from kubernetes.client.configuration import Configuration  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402
from kubernetes.config.config_exception import ConfigException  # noqa: E402
from kubernetes.config.kube_config import load_kube_config  # noqa: E402
from kubernetes.watch.watch import iter_resp_lines  # noqa: E402

from kubevipd.config.model import ElectionSpec  # noqa: E402
from kubevipd.election import peers  # noqa: E402
from kubevipd.election.base import ErrorKind, LeaderRecord, Observer, Op, WriteResult  # noqa: E402
from kubevipd.health import KUBEADM_NAME, tls_name  # noqa: E402
from kubevipd.kubeconfig_copy import SUPER_ADMIN, super_admin_fallback  # noqa: E402

log = logging.getLogger("kubevipd.election")

ADMIN_RETRY_S = 30.0  # while on super-admin.conf, how often to try admin.conf again
WATCH_SECONDS = 60  # server-side watch timeout; the stream is restarted after it


class ElectionSetupError(Exception):
    """The kubeconfig cannot be used at all (missing, unreadable, malformed)."""


def microtime(t: dt.datetime) -> str:
    """MicroTime as the apiserver requires it: exactly six fractional digits and a zone."""
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(s: Any) -> dt.datetime | None:
    if not isinstance(s, str) or not s:
        return None
    try:
        return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None


def record_from_lease(obj: dict[str, Any]) -> LeaderRecord:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    return LeaderRecord(
        holder=spec.get("holderIdentity") or "",
        lease_duration_s=int(spec.get("leaseDurationSeconds") or 0),
        acquire_time=_parse_time(spec.get("acquireTime")),
        renew_time=_parse_time(spec.get("renewTime")),
        transitions=int(spec.get("leaseTransitions") or 0),
        annotations=dict(meta.get("annotations") or {}),
        version=str(meta.get("resourceVersion") or ""),
    )


def lease_from_record(
    r: LeaderRecord, namespace: str, name: str, base_meta: dict[str, Any] | None
) -> dict[str, Any]:
    """The Lease body; metadata we do not own (labels, owners) is carried over as client-go does."""
    meta: dict[str, Any] = {
        k: v
        for k, v in (base_meta or {}).items()
        if k in ("labels", "ownerReferences", "finalizers")
    }
    meta.update(name=name, namespace=namespace)
    if r.annotations:
        meta["annotations"] = dict(r.annotations)
    if r.version:
        meta["resourceVersion"] = r.version
    spec: dict[str, Any] = {
        "holderIdentity": r.holder,
        "leaseDurationSeconds": r.lease_duration_s,
        "leaseTransitions": r.transitions,
    }
    if r.acquire_time is not None:
        spec["acquireTime"] = microtime(r.acquire_time)
    if r.renew_time is not None:
        spec["renewTime"] = microtime(r.renew_time)
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}


def _kind_of_status(status: int) -> ErrorKind:
    if status == 401:
        return "unauthorized"
    if status == 403:
        return "forbidden"
    if status in (400, 422):
        return "invalid"
    if status >= 500 or status == 429:
        return "server"
    return "other"


def _api_error_text(e: ApiException) -> str:
    try:
        msg = json.loads(e.body or "{}").get("message") or e.reason
    except ValueError:
        msg = e.reason
    return f"HTTP {e.status}: {msg}"


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is rewritten or replaced (``kubeadm certs renew``, the copier)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class _Client:
    """One kubeconfig's API client."""

    def __init__(self, path: Path, server: str | None, tls_server_name: str | None = None) -> None:
        self.stamp = _stamp(path)
        self.server = server
        self.tls_server_name = tls_server_name
        cfg = Configuration()
        try:
            load_kube_config(config_file=str(path), client_configuration=cfg, persist_config=False)
        except (OSError, ConfigException, ValueError, TypeError) as e:
            raise ElectionSetupError(f"cannot use kubeconfig {path}: {e}") from None
        if server:
            cfg.host = server.rstrip("/")
            hook = getattr(cfg, "refresh_api_key_hook", None)
            if hook is not None:
                # For a token user, newer clients (kubernetes 3x) copy the kubeconfig's server
                # back before every request, from this hook: that is the VIP on kubeadm.
                host = cfg.host

                def keep_our_server(c: Configuration, _hook: Any = hook) -> None:
                    _hook(c)  # it also puts itself back as the hook: put ours back after it
                    c.host = host
                    c.refresh_api_key_hook = keep_our_server

                cfg.refresh_api_key_hook = keep_our_server
        name = tls_name(cfg.host, tls_server_name)
        if name is not None:
            cfg.assert_hostname = name  # kubeadm's certificate names "kubernetes", not 127.0.0.1
        cfg.retries = False  # every call is bounded by our own timeout, not urllib3's retries
        self.path = path
        self.host: str = cfg.host
        self.ca_file: str | None = cfg.ssl_ca_cert
        self.api_client = ApiClient(cfg)
        self.api = CoordinationV1Api(self.api_client)

    def changed(self) -> bool:
        """The file was rewritten since it was loaded (and is there now)."""
        now = _stamp(self.path)
        return now is not None and now != self.stamp

    def close(self) -> None:
        pool = getattr(self.api_client.rest_client, "pool_manager", None)
        if pool is not None:
            pool.clear()


class LeaseElection:
    """A Lease as the lock, with client-go's semantics (see election.base for what is written)."""

    def __init__(self, spec: ElectionSpec, identity: str) -> None:
        self.identity = identity
        self.namespace = spec.namespace
        self.name = spec.lease_name
        self._server = spec.server
        self._primary_path = spec.kubeconfig
        self._fallback_path = super_admin_fallback(spec.kubeconfig)
        self._primary = _Client(spec.kubeconfig, spec.server)
        self._active = self._primary
        self._fallback: _Client | None = None
        self._next_primary_try = 0.0
        self._lock = threading.Lock()
        self._base_meta: dict[str, Any] | None = None
        self._closed = threading.Event()
        self._listed = threading.Event()  # the Lease was read once
        self._watch_resp: Any = None
        # The other nodes' apiservers (kubevipd.election.peers), read while ours works, and the
        # kubeconfig (path, stamp) their clients were made from.
        self._peers: dict[str, _Client] = {}
        self._peers_source: tuple[Path, tuple[int, int, int] | None] | None = None
        self._peer_error = ""

    # interface --------------------------------------------------------------

    def describe(self) -> str:
        return f"Lease {self.namespace}/{self.name} at {self._active.host}"

    @property
    def ca_file(self) -> str | None:
        return self._primary.ca_file

    @property
    def kubeconfig_in_use(self) -> Path:
        return self._active.path

    def write(self, op: Op, record: LeaderRecord, timeout: float) -> WriteResult:
        if op == "release":
            with self._lock:
                others = list(self._peers.items())
            if others:
                return self._release_anywhere(record, timeout, others)
        return self._write(self._call, op, record, timeout)

    def _write(
        self, call: _Caller, op: Op, record: LeaderRecord, timeout: float, where: str = ""
    ) -> WriteResult:
        body = lease_from_record(record, self.namespace, self.name, self._base_meta)
        started = time.monotonic()
        try:
            if record.version:
                resp = call(
                    lambda api: api.replace_namespaced_lease(
                        self.name, self.namespace, body, **self._opts(timeout)
                    )
                )
            else:
                resp = call(
                    lambda api: api.create_namespaced_lease(
                        self.namespace, body, **self._opts(timeout)
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
                    error=_api_error_text(e),
                )
            if e.status == 404:
                return WriteResult(ok=False, missing=True, error=_api_error_text(e))
            return WriteResult(
                ok=False, error=_api_error_text(e), error_kind=_kind_of_status(e.status)
            )
        except (urllib3.exceptions.HTTPError, OSError, ssl.SSLError) as e:
            kind: ErrorKind = "timeout" if _is_timeout(e) else "network"
            if kind == "timeout":
                # The write may have been applied before the answer was lost: look.
                back = self._read(call, timeout)
                r = back.record
                if back.ok and r is not None and r.content() == record.content():
                    log.info("%s timed out but was applied (read back)%s", op, where)
                    return WriteResult(ok=True, record=r)
            return WriteResult(ok=False, error=_net_error_text(e, timeout), error_kind=kind)
        obj = json.loads(resp.data)
        self._base_meta = obj.get("metadata")
        return WriteResult(ok=True, record=record_from_lease(obj))

    def _release_anywhere(
        self, record: LeaderRecord, timeout: float, others: list[tuple[str, _Client]]
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

            def via(fn: Callable[[CoordinationV1Api], Any], c: _Client = client) -> Any:
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

    def _read(self, call: _Caller, timeout: float) -> WriteResult:
        try:
            resp = call(
                lambda api: api.read_namespaced_lease(
                    self.name, self.namespace, **self._opts(timeout)
                )
            )
        except ApiException as e:
            if e.status == 404:
                return WriteResult(ok=True, record=None)
            return WriteResult(
                ok=False, error=_api_error_text(e), error_kind=_kind_of_status(e.status)
            )
        except (urllib3.exceptions.HTTPError, OSError, ssl.SSLError) as e:
            kind: ErrorKind = "timeout" if _is_timeout(e) else "network"
            return WriteResult(ok=False, error=_net_error_text(e, timeout), error_kind=kind)
        obj = json.loads(resp.data)
        self._base_meta = obj.get("metadata")
        return WriteResult(ok=True, record=record_from_lease(obj))

    def watch(self, observe: Observer, stopped: Callable[[], bool]) -> None:
        """List, then watch from the list's version; relist on 410 Gone or a broken stream."""
        backoff = 0.2
        rv: str | None = None
        failing = False
        while not stopped() and not self._closed.is_set():
            try:
                if rv is None:
                    rv = self._list(observe)
                    self._listed.set()
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
                if not isinstance(e, _WATCH_ERRORS):
                    raise
                text = (
                    _api_error_text(e) if isinstance(e, ApiException) else _net_error_text(e, 5.0)
                )
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

    def run_peer_refresh(self, stopped: Callable[[], bool]) -> None:
        """Blocks: keep the list of the other apiservers fresh until ``stopped()`` or close().

        Its own thread, so a slow local apiserver never holds up the watch. It starts once the
        Lease could be read: until then, that failure is the one to report."""
        while not self._listed.wait(1.0):
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
                    peers.SLICE_NAME, peers.SLICE_NAMESPACE, **self._opts(timeout)
                )
            )
            urls = peers.remote_apiserver_urls(json.loads(resp.data))
        except (ApiException, *_WATCH_ERRORS) as e:
            text = (
                _api_error_text(e) if isinstance(e, ApiException) else _net_error_text(e, timeout)
            )
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
        fresh: dict[str, _Client] = {}
        for url in urls:
            try:
                reuse = old.get(url) if source == self._peers_source else None
                fresh[url] = reuse or _Client(source[0], url, KUBEADM_NAME)
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
        resp = self._watch_resp
        # Another thread is blocked reading the stream: closing the response from here can wait
        # on that read for good. Shutting the TCP socket down ends the read at once instead.
        sock = getattr(getattr(resp, "_connection", None), "sock", None)
        if sock is not None:
            try:
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                log.debug("shutting the watch stream down failed", exc_info=True)
        self._primary.close()
        if self._fallback is not None:
            self._fallback.close()
        with self._lock:
            others = list(self._peers.values())
        for c in others:
            c.close()

    # internals --------------------------------------------------------------

    @staticmethod
    def _opts(timeout: float) -> dict[str, Any]:
        half = max(0.05, timeout / 2)
        return {"_request_timeout": (half, half), "_preload_content": False}

    def _reload_changed(self) -> None:
        """Load a kubeconfig again once its file changed: renewed certificates (``kubeadm certs
        renew``) take effect without a restart, before the old ones expire."""
        with self._lock:
            for attr in ("_primary", "_fallback"):
                old: _Client | None = getattr(self, attr)
                if old is None or not old.changed():
                    continue
                try:
                    new = _Client(old.path, old.server)
                except ElectionSetupError as e:  # caught mid-write: the next call tries again
                    log.debug("%s changed but cannot be used yet: %s", old.path, e)
                    continue
                setattr(self, attr, new)
                if self._active is old:
                    self._active = new
                # The old client is not closed: a watch may still be reading through it; it
                # ends within WATCH_SECONDS and the next one uses the new client.
                log.info("%s changed; loaded it again", old.path)

    def _call(self, fn: Callable[[CoordinationV1Api], Any]) -> Any:
        """Run ``fn`` with the active client; handles kubeadm's super-admin.conf fallback."""
        self._reload_changed()
        with self._lock:
            active = self._active
            try_primary = active is not self._primary and time.monotonic() >= self._next_primary_try
        if try_primary:
            try:
                out = fn(self._primary.api)
            except ApiException as e:
                if e.status not in (401, 403):
                    raise
                with self._lock:
                    self._next_primary_try = time.monotonic() + ADMIN_RETRY_S
            else:
                with self._lock:
                    self._active = self._primary
                log.warning("%s works now; stopped using %s", self._primary.path, SUPER_ADMIN)
                return out
        try:
            return fn(active.api)
        except ApiException as e:
            if e.status not in (401, 403) or active is not self._primary:
                raise
            fallback = self._use_fallback(e)
            if fallback is None:
                raise
            return fn(fallback.api)

    def _use_fallback(self, e: ApiException) -> _Client | None:
        path = self._fallback_path
        if path is None or not path.exists():
            return None
        with self._lock:
            if self._fallback is None:
                try:
                    self._fallback = _Client(path, self._server)
                except ElectionSetupError as err:
                    log.error("%s", err)
                    return None
            self._active = self._fallback
            self._next_primary_try = time.monotonic() + ADMIN_RETRY_S
        log.warning(
            "%s is not authorized yet (HTTP %s); using %s until it is "
            "(kubeadm 1.29+ grants admin.conf its rights only at the end of kubeadm init)",
            self._primary.path,
            e.status,
            path,
        )
        return self._fallback

    def _list(self, observe: Observer) -> str:
        resp = self._call(
            lambda api: api.list_namespaced_lease(
                self.namespace, field_selector=f"metadata.name={self.name}", **self._opts(5.0)
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
        self._watch_resp = resp
        try:
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
            self._watch_resp = None
            resp.release_conn()
        return rv


class _Relist(Exception):
    pass


_Caller = Callable[[Callable[[CoordinationV1Api], Any]], Any]


_WATCH_ERRORS = (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError)


def _is_timeout(e: BaseException) -> bool:
    if isinstance(e, urllib3.exceptions.NewConnectionError):
        return False  # a subclass of ConnectTimeoutError in urllib3 1.26, yet "refused"
    return isinstance(e, urllib3.exceptions.TimeoutError | TimeoutError) or "timed out" in str(e)


def _net_error_text(e: BaseException, timeout: float) -> str:
    if _is_timeout(e):
        return f"no answer within {timeout:.1f}s"
    reason = str(getattr(e, "reason", None) or e)
    # urllib3 prefixes the connection object's repr: "<...HTTPSConnection object at 0x..>: "
    reason = re.sub(r"^<[^>]*object at 0x[0-9a-f]+>: ", "", reason)
    return f"cannot reach the apiserver: {reason}"
