"""The health gate: is the local apiserver ready?

One thread checks ``health.url`` every ``period`` and reports a change only after
``failure_threshold`` failures or ``success_threshold`` successes in a row, so one slow answer
does not move the VIP. Proxies from the environment are ignored: the check is always local.
"""

from __future__ import annotations

import http.client
import ipaddress
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from kubevipd.config.model import HealthSpec
from kubevipd.supervise import supervise

log = logging.getLogger("kubevipd.health")


KUBEADM_NAME = "kubernetes"


def tls_name(url: str, configured: str | None = None) -> str | None:
    """The name to verify a certificate against when it differs from the URL's host.

    kubeadm's apiserver certificate names ``kubernetes`` but not 127.0.0.1 (kube-vip reaches
    the local apiserver as https://kubernetes:6443 through a host alias for the same reason).
    """
    if configured:
        return configured
    host = urlsplit(url).hostname or ""
    try:
        return KUBEADM_NAME if ipaddress.ip_address(host).is_loopback else None
    except ValueError:
        return None


class _NamedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to an address, verifying the certificate against another name."""

    def __init__(self, *args: Any, server_name: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._server_name = server_name

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self._server_name)  # type: ignore[attr-defined]


def check_once(
    url: str, timeout: float, ctx: ssl.SSLContext | None, server_name: str | None = None
) -> tuple[bool, str]:
    """One readiness check: (healthy, a short reason)."""
    u = urlsplit(url)
    host = u.hostname or "127.0.0.1"
    path = (u.path or "/") + (f"?{u.query}" if u.query else "")
    conn: http.client.HTTPConnection
    if u.scheme == "https" and server_name:
        conn = _NamedHTTPSConnection(
            host, u.port or 443, timeout=timeout, context=ctx, server_name=server_name
        )
    elif u.scheme == "https":
        conn = http.client.HTTPSConnection(host, u.port or 443, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection(host, u.port or 80, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Accept": "text/plain"})
        resp = conn.getresponse()
        body = resp.read(512).decode("utf-8", "replace").strip().splitlines()
        if 200 <= resp.status < 300:
            return True, f"{url}: HTTP {resp.status}"
        first_bad = next((line for line in body if line.startswith("[-]")), body[0] if body else "")
        return False, f"{url}: HTTP {resp.status} {first_bad}".rstrip()
    except (OSError, http.client.HTTPException) as e:
        return False, f"{url}: {e or type(e).__name__}"
    finally:
        conn.close()


def ssl_context(ca_file: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca_file)
    return ctx


class HealthChecker:
    """Calls ``report(healthy, reason)`` from its own thread whenever the verdict changes."""

    def __init__(
        self,
        spec: HealthSpec,
        ca_file: str | None,
        report: Callable[[bool, str], None],
        check: Callable[[str, float, ssl.SSLContext | None, str | None], tuple[bool, str]] = (
            check_once
        ),
    ) -> None:
        self.spec = spec
        ca = str(spec.ca_file) if spec.ca_file else ca_file
        self._ctx = ssl_context(ca) if spec.url.startswith("https") else None
        self._report = report
        self._check = check
        self._server_name = tls_name(spec.url, spec.tls_server_name)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.verdict: bool | None = None

    def start(self) -> None:
        # Supervised: a checker that died would freeze the last verdict for good.
        self._thread = supervise("health", self._run, self._stop.is_set, self._stop.wait)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.spec.timeout.seconds + 1)

    def _run(self) -> None:
        ok_streak = bad_streak = 0
        period = self.spec.period.seconds
        next_at = time.monotonic()
        while not self._stop.is_set():
            ok, reason = self._check(
                self.spec.url, self.spec.timeout.seconds, self._ctx, self._server_name
            )
            if ok:
                ok_streak, bad_streak = ok_streak + 1, 0
                if self.verdict is not True and ok_streak >= self.spec.success_threshold:
                    self.verdict = True
                    self._report(True, reason)
            else:
                ok_streak, bad_streak = 0, bad_streak + 1
                if self.verdict is not False and bad_streak >= self.spec.failure_threshold:
                    self.verdict = False
                    self._report(False, reason)
                elif self.verdict is not False:
                    log.debug(
                        "health check failed (%d/%d): %s",
                        bad_streak,
                        self.spec.failure_threshold,
                        reason,
                    )
            next_at += period
            self._stop.wait(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at, time.monotonic() - period)
