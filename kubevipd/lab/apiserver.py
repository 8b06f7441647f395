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

This module is what tests, the demo and the bench use: :class:`LabApiServer` (start, stop,
restart), its :class:`Faults`, and the token and EndpointSlice helpers. The parts behind it:

- ``kubevipd.lab.store``: the store (etcd), Lease validation, :class:`ApiError`;
- ``kubevipd.lab.resources``: what each API call does (verbs, RBAC, Lease and EndpointSlice);
- ``kubevipd.lab.discovery``: the discovery documents;
- ``kubevipd.lab.http_api``: the HTTPS listener and handler (auth, faults, routing, watches).
"""

from __future__ import annotations

import ssl
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from kubevipd.lab.http_api import LabHTTPServer, LabRequestHandler
from kubevipd.lab.pki import Pki
from kubevipd.lab.store import ApiError, LeaseStore

__all__ = [
    "ALL_VERBS",
    "READ_VERBS",
    "ApiError",
    "Faults",
    "LabApiServer",
    "LeaseStore",
    "kubernetes_endpoint_slice",
    "node_tokens",
    "standard_tokens",
]

READ_VERBS = frozenset({"get", "list", "watch"})
ALL_VERBS = frozenset({"get", "list", "watch", "create", "update", "delete"})


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
        self._httpd: LabHTTPServer | None = None
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

        def bind() -> LabHTTPServer:
            return LabHTTPServer((host, port), LabRequestHandler, self, ctx)

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
