"""Prometheus metrics on ``metrics.listen`` (a registry of our own: no process-wide globals)."""

from __future__ import annotations

import logging
import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from kubevipd.supervise import supervise

log = logging.getLogger("kubevipd")


class MetricsError(Exception):
    pass


RETRY_S = 5.0  # between two tries to listen on metrics.listen


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.serving = False
        r = self.registry
        self.leader = Gauge("kubevipd_leader", "1 while this node holds the lease", registry=r)
        self.vip_present = Gauge(
            "kubevipd_vip_present", "1 while the VIP is on this node's interface", registry=r
        )
        self.transitions = Counter(
            "kubevipd_transitions", "State machine transitions", ["to"], registry=r
        )
        self.renew_latency = Histogram(
            "kubevipd_lease_write_seconds",
            "Latency of lease writes (acquire, renew, release)",
            ["op"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )
        self.api_errors = Counter(
            "kubevipd_api_errors", "Failed lease API calls by kind", ["kind"], registry=r
        )
        self.announcements = Counter(
            "kubevipd_announcements",
            "Announcements sent (gratuitous ARP / unsolicited NA frames, BGP route commands)",
            registry=r,
        )
        self.bgp_peer_up = Gauge(
            "kubevipd_bgp_peer_up",
            "1 while the BGP session to the peer is established",
            ["peer"],
            registry=r,
        )
        self.vip_add_failures = Counter(
            "kubevipd_vip_add_failures",
            "Times netlink refused the VIP (each one hands the lease over)",
            registry=r,
        )

    def serve(self, listen: str) -> None:
        host, port = split_listen(listen)
        try:
            start_http_server(port, addr=host, registry=self.registry)
        except OSError as e:
            raise MetricsError(f"cannot serve metrics on {listen}: {e.strerror or e}") from None
        self.serving = True

    def serve_or_retry(self, listen: str, stop: threading.Event) -> None:
        """Metrics are not worth a VIP: a port still taken (the old daemon's socket, another
        exporter) or an address not up yet can heal, so the daemon runs on and this tries again
        every RETRY_S seconds, on a thread of its own, until ``stop`` is set."""
        try:
            self.serve(listen)
            return
        except MetricsError as e:
            log.warning("%s; the VIP is served meanwhile, trying again every %gs", e, RETRY_S)

        def retry() -> None:
            while not stop.wait(RETRY_S):
                try:
                    self.serve(listen)
                except MetricsError as e:
                    log.debug("%s", e)
                    continue
                log.info("serving metrics on %s", listen)
                return

        supervise("metrics", retry, lambda: stop.is_set() or self.serving)
