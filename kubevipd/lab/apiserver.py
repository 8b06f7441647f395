"""A faithful Lease API server (coordination.k8s.io/v1) for the demo and the tests.

No kube-apiserver can be installed on our machines, so this speaks the part of its API that
kubevipd, client-go and kubectl use, with the same semantics: HTTPS, bearer-token auth (401
without a known token, 403 for a token without rights), resourceVersion optimistic concurrency
(409 on a stale version and on create-if-exists), strict MicroTime validation (422), list and
watch with bookmarks and 410 Gone for a compacted version, the discovery documents clients read
first, a per-client ``/readyz``, and the ``kubernetes`` EndpointSlice that lists the cluster's
apiservers. Fault injection (latency, 5xx or 429 answers, dropped connections, a partition per
client address or user, the server cut from its store as from etcd, the whole server down) is
driven from Python.

Several servers may share one :class:`LeaseStore`: that is kubeadm's topology, every
control-plane node running its own apiserver in front of one etcd (``kubevipd.lab.topology``).
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
import re
import socket
import socketserver
import ssl
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from kubevipd.lab.pki import Pki

GROUP = "coordination.k8s.io"
VERSION = "v1"
GROUP_VERSION = f"{GROUP}/{VERSION}"
LEASES = f"/apis/{GROUP_VERSION}"
_MICROTIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LEASE_PATH = re.compile(
    r"^/apis/coordination\.k8s\.io/v1/(?:namespaces/([^/]+)/)?leases(?:/([^/]+))?$"
)
_SLICE_PATH = re.compile(
    r"^/apis/discovery\.k8s\.io/v1/(?:namespaces/([^/]+)/)?endpointslices(?:/([^/]+))?$"
)
# What a server needs its store for: these hang while it is cut from it.
_STORE_PATHS = ("/apis/coordination.k8s.io/v1/", "/apis/discovery.k8s.io/v1/")
READ_VERBS = frozenset({"get", "list", "watch"})
ALL_VERBS = frozenset({"get", "list", "watch", "create", "update", "delete"})


class ApiError(Exception):
    """A Kubernetes Status response."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            doc["details"] = self.details
        return doc


def _now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _lease_details(name: str) -> dict[str, Any]:
    return {"name": name, "group": GROUP, "kind": "leases"}


def _injected(code: int) -> ApiError:
    if code == 429:
        return ApiError(429, "TooManyRequests", "Too many requests, please try again later.")
    return ApiError(code, "InternalError", "Internal error occurred: injected fault")


def _not_found(name: str) -> ApiError:
    msg = f'leases.{GROUP} "{name}" not found'
    return ApiError(404, "NotFound", msg, _lease_details(name))


def _invalid(name: str, field_: str, value: Any, why: str) -> ApiError:
    msg = f'Lease.{GROUP} "{name}" is invalid: {field_}: Invalid value: {json.dumps(value)}: {why}'
    details = _lease_details(name) | {
        "kind": "Lease",
        "causes": [{"reason": "FieldValueInvalid", "message": why, "field": field_}],
    }
    return ApiError(422, "Invalid", msg, details)


@dataclass
class Event:
    rv: int
    type: str
    obj: dict[str, Any]


class LeaseStore:
    """Leases with a global resourceVersion and a bounded event history, as etcd gives."""

    def __init__(self, history: int = 1000) -> None:
        self.cond = threading.Condition()
        self.rv = 1
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: deque[Event] = deque(maxlen=history)
        # Oldest resourceVersion a watch may still start from (older: 410 Gone).
        self.compacted = 1
        # discovery.k8s.io/v1 EndpointSlices by (namespace, name): read-only for clients; the
        # lab writes the ``kubernetes`` one, as the apiservers' endpoint reconciler does.
        self.endpoint_slices: dict[tuple[str, str], dict[str, Any]] = {}

    def set_endpoint_slice(self, ns: str, name: str, obj: dict[str, Any]) -> None:
        with self.cond:
            self.rv += 1
            meta = obj.setdefault("metadata", {})
            meta.update(name=name, namespace=ns, resourceVersion=str(self.rv))
            self.endpoint_slices[(ns, name)] = copy.deepcopy(obj)

    def _commit(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        if self.events.maxlen is not None and len(self.events) == self.events.maxlen:
            self.compacted = self.events[0].rv
        self.events.append(Event(self.rv, kind, copy.deepcopy(obj)))
        self.cond.notify_all()
        return copy.deepcopy(obj)

    def compact(self) -> None:
        """Forget the event history, as an etcd compaction does: older watches get 410."""
        with self.cond:
            self.events.clear()
            self.compacted = self.rv

    def get(self, ns: str, name: str) -> dict[str, Any]:
        with self.cond:
            obj = self.objects.get((ns, name))
            if obj is None:
                raise _not_found(name)
            return copy.deepcopy(obj)

    def items(self, ns: str | None, name: str | None) -> tuple[list[dict[str, Any]], int]:
        with self.cond:
            items = [
                copy.deepcopy(o)
                for (ons, oname), o in sorted(self.objects.items())
                if (ns is None or ons == ns) and (name is None or oname == name)
            ]
            return items, self.rv

    def create(self, ns: str, obj: dict[str, Any]) -> dict[str, Any]:
        name = obj["metadata"]["name"]
        with self.cond:
            if (ns, name) in self.objects:
                msg = f'leases.{GROUP} "{name}" already exists'
                raise ApiError(409, "AlreadyExists", msg, _lease_details(name))
            meta = obj["metadata"]
            meta.update(namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=_now_rfc3339())
            meta.pop("resourceVersion", None)
            out = self._commit("ADDED", obj)
            self.objects[(ns, name)] = copy.deepcopy(out)
            return out

    def update(self, ns: str, name: str, obj: dict[str, Any]) -> dict[str, Any]:
        with self.cond:
            old = self.objects.get((ns, name))
            if old is None:
                raise _not_found(name)
            want = obj["metadata"].get("resourceVersion")
            if want and want != old["metadata"]["resourceVersion"]:
                msg = (
                    f'Operation cannot be fulfilled on leases.{GROUP} "{name}": the object has '
                    "been modified; please apply your changes to the latest version and try again"
                )
                raise ApiError(409, "Conflict", msg, _lease_details(name))
            new = copy.deepcopy(old)
            new["spec"] = obj.get("spec", {})
            for key in ("labels", "annotations"):
                if key in obj["metadata"]:
                    new["metadata"][key] = obj["metadata"][key]
                else:
                    new["metadata"].pop(key, None)
            if new == old:
                return copy.deepcopy(old)  # a no-op update keeps the resourceVersion
            out = self._commit("MODIFIED", new)
            self.objects[(ns, name)] = copy.deepcopy(out)
            return out

    def delete(self, ns: str, name: str) -> dict[str, Any]:
        with self.cond:
            old = self.objects.pop((ns, name), None)
            if old is None:
                raise _not_found(name)
            return self._commit("DELETED", old)

    def since(self, rv: int) -> list[Event]:
        """Events after ``rv``; caller holds ``cond``. Raises 410 when history is gone."""
        if rv < self.compacted:
            msg = f"too old resource version: {rv} ({self.compacted})"
            raise ApiError(410, "Expired", msg)
        return [e for e in self.events if e.rv > rv]


@dataclass
class Faults:
    """What goes wrong, set from tests or the demo. Every field may change at any time."""

    latency: float = 0.0
    # The next this many writes are applied at once but answered only after ``latency``: the
    # "did my write go through?" case. 0: ``latency`` delays every request before it is served.
    delay_next: int = 0
    fail_next: int = 0
    fail_code: int = 500
    drop_next: int = 0
    partitioned: set[str] = field(default_factory=set)  # client addresses or user names
    not_ready: set[str] = field(default_factory=set)  # client addresses whose /readyz fails
    # The server is up but has lost its store (etcd): API calls hang as a real apiserver's do
    # until its storage timeout, watches deliver nothing, and /readyz fails for everyone.
    store_cut: bool = False
    unready: bool = False  # /readyz fails for every client (the API itself still works)
    # Every API call (not /readyz, not discovery) is answered with this status, e.g. 503 or 429.
    error_code: int | None = None

    def cut(self, who: str) -> None:
        self.partitioned.add(who)

    def heal(self, who: str | None = None) -> None:
        if who is None:
            self.partitioned.clear()
        else:
            self.partitioned.discard(who)


class LabApiServer:
    """The Lease API over HTTPS. ``start`` binds (in a network namespace when one is named)."""

    def __init__(
        self,
        pki: Pki,
        tokens: dict[str, tuple[str, frozenset[str]]],
        store: LeaseStore | None = None,
        bookmark_interval: float = 1.0,
    ) -> None:
        self.pki = pki
        self.tokens = tokens  # token -> (user, verbs allowed on leases)
        self.store = store or LeaseStore()
        self.faults = Faults()
        self.bookmark_interval = bookmark_interval
        self.requests: deque[tuple[str, str, str, int]] = deque(maxlen=10_000)
        self.request_count = 0  # every request ever served, for rates
        self.watches = 0  # watch streams open now
        self._count_lock = threading.Lock()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._address: tuple[str, int] | None = None
        self._netns: str | None = None

    # lifecycle ------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._address is not None
        return self._address[1]

    @property
    def url(self) -> str:
        assert self._address is not None
        host, port = self._address
        if host in ("::", "0.0.0.0"):
            host = "127.0.0.1"
        return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"

    def start(self, host: str = "127.0.0.1", port: int = 0, netns: str | None = None) -> None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(self.pki.server_cert), str(self.pki.server_key))

        def bind() -> _Server:
            return _Server((host, port), _Handler, self, ctx)

        if netns is not None:
            from kubevipd.lab.netns import run_in_netns

            httpd = run_in_netns(netns, bind)
        else:
            httpd = bind()
        self._httpd = httpd
        self._address = (host, httpd.server_address[1])
        self._netns = netns
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Close the listener and every connection: clients see refused connections."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        httpd.close_all()
        with self.store.cond:
            self.store.cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def restart(self) -> None:
        """Start again on the same address and port, with the same leases."""
        assert self._address is not None
        self.start(self._address[0], self._address[1], self._netns)

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def __enter__(self) -> LabApiServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        lab: LabApiServer,
        ctx: ssl.SSLContext,
    ) -> None:
        self.lab = lab
        self.ctx = ctx
        self.stopping = False
        self.live: set[socket.socket] = set()
        self.live_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            # "::" serves IPv4 too, as a real apiserver bound to all addresses does.
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        # HTTPServer.server_bind would look the host name up (getfqdn): not in a lab namespace.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = self.socket.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as Go's net/http does
        tls = self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        with self.live_lock:
            self.live.add(tls)
        return tls, addr

    def shutdown_request(self, request: Any) -> None:
        with self.live_lock:
            self.live.discard(request)
        super().shutdown_request(request)

    def close_all(self) -> None:
        self.stopping = True
        with self.live_lock:
            socks = list(self.live)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


class _Drop(Exception):
    """Close the connection without an answer."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 120
    _answer_delay = 0.0

    def setup(self) -> None:
        self.request.settimeout(10)
        try:
            self.request.do_handshake()
        except (OSError, ssl.SSLError, AttributeError):
            # AttributeError: stop() closed the socket before its handshake (its _sslobj is
            # gone); the client sees a closed connection, as from a stopped apiserver.
            self.close_connection = True
            self.rfile = self.wfile = None  # type: ignore[assignment]
            return
        self.request.settimeout(self.timeout)
        super().setup()

    def handle(self) -> None:
        if self.rfile is None:
            return
        with contextlib.suppress(OSError, ssl.SSLError):
            super().handle()

    def finish(self) -> None:
        if self.rfile is None:
            return
        with contextlib.suppress(OSError, ssl.SSLError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the lab stays quiet; requests are kept in lab.requests

    # plumbing -------------------------------------------------------------

    @property
    def lab(self) -> LabApiServer:
        return self.server.lab

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def _client(self) -> str:
        return str(self.client_address[0])

    def _user(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return None
        entry = self.lab.tokens.get(auth[7:].strip())
        return entry[0] if entry else None

    def _health_path(self) -> bool:
        return self.path.startswith(("/readyz", "/livez", "/healthz"))

    def _blackholed(self) -> bool:
        """Nothing comes back: a partition between this client and the server, or a server
        that lost its store (then only the calls that need the store hang)."""
        if self._health_path():
            return False
        f = self.lab.faults
        if f.store_cut and self.path.startswith(_STORE_PATHS):
            return True
        p = f.partitioned
        return bool(p) and (self._client() in p or self._user() in p)

    def _ready(self) -> bool:
        f = self.lab.faults
        return not (f.unready or f.store_cut or self._client() in f.not_ready)

    def _serve(self, method: str) -> None:
        url = urlsplit(self.path)
        body = self._read_body()
        code = 0
        try:
            self._inject_faults()
            code = self._route(method, url.path, parse_qs(url.query), body)
        except _Drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.request.shutdown(socket.SHUT_RDWR)
            code = -1
        except ApiError as e:
            code = e.code
            self._json(e.code, e.status(), {"Retry-After": "1"} if e.code == 429 else None)
        finally:
            self.lab.requests.append((self._user() or "-", method, self.path, code))
            with self.lab._count_lock:
                self.lab.request_count += 1

    def _read_body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _inject_faults(self) -> None:
        f = self.lab.faults
        if self._blackholed():
            # A partition: nothing comes back; the client times out on its own.
            deadline = time.monotonic() + 60
            while self._blackholed() and time.monotonic() < deadline and not self.server.stopping:
                time.sleep(0.02)
            raise _Drop
        if f.drop_next > 0:
            f.drop_next -= 1
            raise _Drop
        if f.latency and not self._health_path():
            if f.delay_next > 0:
                if self.command in ("POST", "PUT", "DELETE"):
                    f.delay_next -= 1
                    self._answer_delay = f.latency
                    if f.delay_next == 0:
                        f.latency = 0.0
            else:
                time.sleep(f.latency)
        if self._health_path():
            return
        if f.fail_next > 0:
            f.fail_next -= 1
            raise _injected(f.fail_code)
        if f.error_code is not None and self.path.startswith(_STORE_PATHS):
            raise _injected(f.error_code)

    def _json(self, code: int, doc: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(doc).encode()
        delay, self._answer_delay = self._answer_delay, 0.0
        if delay:
            time.sleep(delay)
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.write(data)

    def _text(self, code: int, text: str) -> None:
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    # routing --------------------------------------------------------------

    def _route(self, method: str, path: str, q: dict[str, list[str]], body: bytes) -> int:
        if path in ("/readyz", "/livez", "/healthz"):
            # Anonymous, as system:public-info-viewer allows on a real apiserver.
            if path == "/readyz" and not self._ready():
                self._text(500, "[-]etcd failed: reason withheld\nreadyz check failed\n")
                return 500
            self._text(200, "ok")
            return 200
        user = self._user()
        if user is None:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        if method == "GET" and path in _DISCOVERY:
            self._json(200, _DISCOVERY[path])
            return 200
        es = _SLICE_PATH.match(path)
        if es is not None and method == "GET":
            return self._endpoint_slices(user, es.group(1), es.group(2), q)
        m = _LEASE_PATH.match(path)
        if m is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        ns, name = m.group(1), m.group(2)
        verb = self._verb(method, name, q)
        self._authorize(user, verb, ns, name)
        if verb == "watch":
            with self.lab._count_lock:
                self.lab.watches += 1
            try:
                self._watch(ns, name, q)
            finally:
                with self.lab._count_lock:
                    self.lab.watches -= 1
            return 200
        code, doc = self._lease_call(verb, ns, name, q, body)
        self._json(code, doc)
        return code

    def _endpoint_slices(
        self, user: str, ns: str | None, name: str | None, q: dict[str, list[str]]
    ) -> int:
        """get and list (labelSelector kubernetes.io/service-name=...) of EndpointSlices, for any
        user with read rights, as kubeadm's admin and the system:discovery roles have."""
        allowed = next((v for u, v in self.lab.tokens.values() if u == user), frozenset())
        if "get" not in allowed:
            where = f' in the namespace "{ns}"' if ns else " at the cluster scope"
            msg = (
                f'endpointslices.discovery.k8s.io is forbidden: User "{user}" cannot '
                f'{"get" if name else "list"} resource "endpointslices" in API group '
                f'"discovery.k8s.io"{where}'
            )
            raise ApiError(403, "Forbidden", msg)
        store = self.lab.store
        with store.cond:
            slices = {k: copy.deepcopy(v) for k, v in store.endpoint_slices.items()}
            rv = store.rv
        if name is not None:
            assert ns is not None
            obj = slices.get((ns, name))
            if obj is None:
                msg = f'endpointslices.discovery.k8s.io "{name}" not found'
                raise ApiError(404, "NotFound", msg, {"name": name, "kind": "endpointslices"})
            self._json(200, obj)
            return 200
        sel = q.get("labelSelector", [""])[0]
        want = dict(p.split("=", 1) for p in sel.replace("==", "=").split(",") if "=" in p)
        items = [
            o
            for (ons, _), o in sorted(slices.items())
            if (ns is None or ons == ns)
            and all((o["metadata"].get("labels") or {}).get(k) == v for k, v in want.items())
        ]
        self._json(
            200,
            {
                "kind": "EndpointSliceList",
                "apiVersion": "discovery.k8s.io/v1",
                "metadata": {"resourceVersion": str(rv)},
                "items": items,
            },
        )
        return 200

    def _verb(self, method: str, name: str | None, q: dict[str, list[str]]) -> str:
        if method == "GET":
            if _go_bool(q.get("watch", ["false"])[0]):
                return "watch"
            return "get" if name else "list"
        verbs = {("POST", False): "create", ("PUT", True): "update", ("DELETE", True): "delete"}
        verb = verbs.get((method, bool(name)))
        if verb is None:
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported here")
        return verb

    def _authorize(self, user: str, verb: str, ns: str | None, name: str | None) -> None:
        allowed = next((v for u, v in self.lab.tokens.values() if u == user), frozenset())
        if verb in allowed:
            return
        where = f' in the namespace "{ns}"' if ns else " at the cluster scope"
        what = f'leases.{GROUP} "{name}"' if name else f"leases.{GROUP}"
        msg = (
            f'{what} is forbidden: User "{user}" cannot {verb} resource "leases" in API group '
            f'"{GROUP}"{where}'
        )
        raise ApiError(403, "Forbidden", msg, _lease_details(name or ""))

    def _lease_call(
        self, verb: str, ns: str | None, name: str | None, q: dict[str, list[str]], body: bytes
    ) -> tuple[int, dict[str, Any]]:
        store = self.lab.store
        if verb == "list":
            sel = _field_selector(q)
            items, rv = store.items(ns, sel or None)
            return 200, {
                "kind": "LeaseList",
                "apiVersion": GROUP_VERSION,
                "metadata": {"resourceVersion": str(rv)},
                "items": items,
            }
        if ns is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if verb == "get":
            assert name is not None
            return 200, store.get(ns, name)
        if verb == "delete":
            assert name is not None
            store.delete(ns, name)
            return 200, {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": _lease_details(name),
            }
        obj = _parse_lease(body, ns, name)
        if verb == "create":
            return 201, store.create(ns, obj)
        assert name is not None
        return 200, store.update(ns, name, obj)

    def _watch(self, ns: str | None, name: str | None, q: dict[str, list[str]]) -> None:
        store = self.lab.store
        only = name or _field_selector(q)
        bookmarks = _go_bool(q.get("allowWatchBookmarks", ["false"])[0])
        timeout = float(q.get("timeoutSeconds", ["1800"])[0])
        end = time.monotonic() + timeout
        raw_rv = q.get("resourceVersion", [""])[0]

        def matches(obj: dict[str, Any]) -> bool:
            meta = obj["metadata"]
            return (ns is None or meta.get("namespace") == ns) and (
                not only or meta.get("name") == only
            )

        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        with store.cond:
            if raw_rv in ("", "0"):
                # "Start at most recent": the current state as ADDED events first.
                items, cursor = store.items(ns, only or None)
                pending: list[dict[str, Any]] = [{"type": "ADDED", "object": o} for o in items]
            else:
                cursor = int(raw_rv)
                pending = []
        for ev in pending:
            self._chunk(ev)
        next_bookmark = time.monotonic() + self.lab.bookmark_interval
        while not self.server.stopping and time.monotonic() < end:
            with store.cond:
                try:
                    new = store.since(cursor)
                    if not new:
                        store.cond.wait(max(0.0, min(end, next_bookmark) - time.monotonic()))
                        new = store.since(cursor)
                except ApiError as gone:
                    self._chunk({"type": "ERROR", "object": gone.status()})
                    break
            while self._blackholed() and not self.server.stopping and time.monotonic() < end:
                time.sleep(0.02)  # events queue up behind a partition
            out: list[dict[str, Any]] = []
            for e in new:
                cursor = e.rv
                if matches(e.obj):
                    out.append({"type": e.type, "object": copy.deepcopy(e.obj)})
            if not new and bookmarks and time.monotonic() >= next_bookmark:
                meta = {"resourceVersion": str(cursor)}
                out.append(
                    {
                        "type": "BOOKMARK",
                        "object": {"kind": "Lease", "apiVersion": GROUP_VERSION, "metadata": meta},
                    }
                )
                next_bookmark = time.monotonic() + self.lab.bookmark_interval
            for ev in out:
                self._chunk(ev)
        if not self.server.stopping:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        self.close_connection = True

    def _chunk(self, event: dict[str, Any]) -> None:
        data = json.dumps(event).encode() + b"\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def _go_bool(s: str) -> bool:
    """Query booleans as the apiserver parses them (Go's strconv.ParseBool)."""
    if s in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if s in ("0", "f", "F", "FALSE", "false", "False", ""):
        return False
    raise ApiError(400, "BadRequest", f"invalid boolean value {s!r}")


def _field_selector(q: dict[str, list[str]]) -> str | None:
    sel = q.get("fieldSelector", [""])[0]
    if not sel:
        return None
    m = re.fullmatch(r"metadata\.name==?([a-z0-9.-]+)", sel)
    if m is None:
        raise ApiError(
            400, "BadRequest", f'"{sel}" is not a known field selector: only metadata.name'
        )
    return m.group(1)


def _parse_lease(body: bytes, ns: str, url_name: str | None) -> dict[str, Any]:
    """The body as a Lease, checked as the apiserver's validation does."""
    try:
        obj = json.loads(body)
    except ValueError as e:
        raise ApiError(400, "BadRequest", f"the body is not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ApiError(400, "BadRequest", "the body is not an object")
    if obj.get("kind", "Lease") != "Lease" or obj.get("apiVersion", GROUP_VERSION) != GROUP_VERSION:
        raise ApiError(400, "BadRequest", "the body is not a coordination.k8s.io/v1 Lease")
    meta = obj.get("metadata") or {}
    name = meta.get("name") or url_name or ""
    if url_name and name != url_name:
        raise _invalid(name, "metadata.name", name, "field is immutable")
    if not _DNS_SUBDOMAIN.match(name) or len(name) > 253:
        raise _invalid(name, "metadata.name", name, "a lowercase RFC 1123 subdomain is required")
    if meta.get("namespace") not in (None, "", ns):
        msg = (
            "the namespace of the provided object does not match the namespace sent on the request"
        )
        raise ApiError(400, "BadRequest", msg)
    spec_in = obj.get("spec") or {}
    spec: dict[str, Any] = {}
    for key in (
        "holderIdentity",
        "leaseDurationSeconds",
        "acquireTime",
        "renewTime",
        "leaseTransitions",
        "preferredHolder",
        "strategy",
    ):
        if spec_in.get(key) is not None:
            spec[key] = spec_in[key]
    for key in ("holderIdentity", "preferredHolder", "strategy"):
        if key in spec and not isinstance(spec[key], str):
            raise _invalid(name, f"spec.{key}", spec[key], "must be a string")
    for key in ("acquireTime", "renewTime"):
        if key in spec and not (isinstance(spec[key], str) and _MICROTIME.match(spec[key])):
            why = 'must be RFC 3339 with microseconds, e.g. "2006-01-02T15:04:05.000000Z"'
            raise _invalid(name, f"spec.{key}", spec[key], why)
    dur = spec.get("leaseDurationSeconds")
    if dur is not None and (not isinstance(dur, int) or isinstance(dur, bool) or dur <= 0):
        raise _invalid(name, "spec.leaseDurationSeconds", dur, "must be greater than 0")
    tr = spec.get("leaseTransitions")
    if tr is not None and (not isinstance(tr, int) or isinstance(tr, bool) or tr < 0):
        raise _invalid(name, "spec.leaseTransitions", tr, "must be greater than or equal to 0")
    out_meta: dict[str, Any] = {"name": name}
    for key in ("labels", "annotations", "resourceVersion"):
        if meta.get(key):
            out_meta[key] = meta[key]
    return {"apiVersion": GROUP_VERSION, "kind": "Lease", "metadata": out_meta, "spec": spec}


_LEASE_RESOURCE = {
    "name": "leases",
    "singularName": "lease",
    "namespaced": True,
    "kind": "Lease",
    "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
    "storageVersionHash": "gqkMMb/YqFM=",
}
_GROUP = {
    "name": GROUP,
    "versions": [{"groupVersion": GROUP_VERSION, "version": VERSION}],
    "preferredVersion": {"groupVersion": GROUP_VERSION, "version": VERSION},
}
_DISCOVERY_GROUP = {
    "name": "discovery.k8s.io",
    "versions": [{"groupVersion": "discovery.k8s.io/v1", "version": "v1"}],
    "preferredVersion": {"groupVersion": "discovery.k8s.io/v1", "version": "v1"},
}
_SLICE_RESOURCE = {
    "name": "endpointslices",
    "singularName": "endpointslice",
    "namespaced": True,
    "kind": "EndpointSlice",
    "verbs": ["get", "list"],
}
_DISCOVERY: dict[str, dict[str, Any]] = {
    "/version": {
        "major": "1",
        "minor": "29",
        "gitVersion": "v1.29.0-kubevipd-lab",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.21.5",
        "compiler": "gc",
        "platform": "linux/amd64",
    },
    "/api": {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    },
    "/api/v1": {"kind": "APIResourceList", "groupVersion": "v1", "resources": []},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_GROUP, _DISCOVERY_GROUP]},
    f"/apis/{GROUP}": {"kind": "APIGroup", "apiVersion": "v1", **_GROUP},
    "/apis/discovery.k8s.io": {"kind": "APIGroup", "apiVersion": "v1", **_DISCOVERY_GROUP},
    "/apis/discovery.k8s.io/v1": {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "discovery.k8s.io/v1",
        "resources": [_SLICE_RESOURCE],
    },
    LEASES: {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": GROUP_VERSION,
        "resources": [_LEASE_RESOURCE],
    },
}


def standard_tokens() -> dict[str, tuple[str, frozenset[str]]]:
    """An admin token (all lease verbs), a read-only one and one with no rights at all."""
    return {
        "lab-admin-token": ("kubernetes-admin", ALL_VERBS),
        "lab-viewer-token": ("viewer", READ_VERBS),
        "lab-nobody-token": ("nobody", frozenset()),
    }


def node_tokens(names: list[str]) -> dict[str, tuple[str, frozenset[str]]]:
    """One token a node, so a test can partition one node's user from the apiserver."""
    return {f"lab-{n}-token": (f"system:node:{n}", ALL_VERBS) for n in names}


def kubernetes_endpoint_slice(addresses: list[str], port: int) -> dict[str, Any]:
    """The ``default/kubernetes`` EndpointSlice the apiservers keep: one endpoint each."""
    family = "IPv6" if addresses and ":" in addresses[0] else "IPv4"
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": {
                "kubernetes.io/service-name": "kubernetes",
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
        },
        "addressType": family,
        "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    }
