"""The lab apiserver's HTTPS side: the listener, the request handler, routing and watches.

:class:`LabHTTPServer` accepts TLS connections (IPv4 and IPv6 on one socket, as a real
apiserver bound to all addresses) and keeps them so that ``LabApiServer.stop`` can cut every one,
as a stopped apiserver does. :class:`LabRequestHandler` serves one connection: bearer-token
authentication (401), the anonymous health paths (``/readyz`` fails for a server cut from its
store), the discovery documents, the faults of ``LabApiServer.faults`` (latency, 5xx or 429,
dropped connections, partitions), and chunked watch streams with bookmarks. What a Lease or
EndpointSlice call means is ``kubevipd.lab.resources``; the state is ``kubevipd.lab.store``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import socket
import socketserver
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from kubevipd.lab.discovery import DISCOVERY
from kubevipd.lab.resources import (
    authorize,
    endpoint_slices,
    field_selector,
    go_bool,
    lease_call,
    request_verb,
)
from kubevipd.lab.store import GROUP_VERSION, ApiError

if TYPE_CHECKING:
    from kubevipd.lab.apiserver import LabApiServer

_LEASE_PATH = re.compile(
    r"^/apis/coordination\.k8s\.io/v1/(?:namespaces/([^/]+)/)?leases(?:/([^/]+))?$"
)
_SLICE_PATH = re.compile(
    r"^/apis/discovery\.k8s\.io/v1/(?:namespaces/([^/]+)/)?endpointslices(?:/([^/]+))?$"
)
# What a server needs its store for: these hang while it is cut from it.
_STORE_PATHS = ("/apis/coordination.k8s.io/v1/", "/apis/discovery.k8s.io/v1/")


def _injected(code: int) -> ApiError:
    if code == 429:
        return ApiError(429, "TooManyRequests", "Too many requests, please try again later.")
    return ApiError(code, "InternalError", "Internal error occurred: injected fault")


class LabHTTPServer(ThreadingHTTPServer):
    """The listener of one LabApiServer: TLS, and every live connection kept for ``close_all``."""

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


class LabRequestHandler(BaseHTTPRequestHandler):
    """One client connection to a LabApiServer (HTTP/1.1, keep-alive)."""

    protocol_version = "HTTP/1.1"
    server: LabHTTPServer
    timeout = 120
    _answer_delay = 0.0
    _recorded = False

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
        self._recorded = False
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
            self._record(code)

    def _record(self, code: int) -> None:
        """Log the request once, before its answer's bytes leave: a test that reads
        ``requests`` after its client got the answer must find it there."""
        if self._recorded:
            return
        self._recorded = True
        self.lab.requests.append((self._user() or "-", self.command, self.path, code))
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
        self._record(code)
        self.wfile.write(data)

    def _text(self, code: int, text: str) -> None:
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self._record(code)
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
        if method == "GET" and path in DISCOVERY:
            self._json(200, DISCOVERY[path])
            return 200
        es = _SLICE_PATH.match(path)
        if es is not None and method == "GET":
            lab = self.lab
            doc = endpoint_slices(lab.tokens, lab.store, user, es.group(1), es.group(2), q)
            self._json(200, doc)
            return 200
        m = _LEASE_PATH.match(path)
        if m is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        ns, name = m.group(1), m.group(2)
        verb = request_verb(method, name, q)
        authorize(self.lab.tokens, user, verb, ns, name)
        if verb == "watch":
            with self.lab._count_lock:
                self.lab.watches += 1
            try:
                self._watch(ns, name, q)
            finally:
                with self.lab._count_lock:
                    self.lab.watches -= 1
            return 200
        code, doc = lease_call(self.lab.store, verb, ns, name, q, body)
        self._json(code, doc)
        return code

    # watch ----------------------------------------------------------------

    def _watch(self, ns: str | None, name: str | None, q: dict[str, list[str]]) -> None:
        """A chunked stream of watch events from the store, with bookmarks, until the timeout,
        410 Gone, or the server stopping; a partition holds the events back."""
        store = self.lab.store
        only = name or field_selector(q)
        bookmarks = go_bool(q.get("allowWatchBookmarks", ["false"])[0])
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
