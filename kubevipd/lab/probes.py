"""What the lab watches from outside the daemons: who holds the VIP, and what a client sees.

Each probe runs in threads of its own and only records; a test or the bench reads the record
afterwards. ``HolderSampler`` looks at every node's addresses, ``Pinger`` sends ICMP echoes to
the VIP from the client, and ``ApiProber`` GETs ``https://VIP:6443/readyz`` from the client, as
kubectl reaches the API through the VIP.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from kubevipd.lab.netns import NetnsIPRoute, enter_netns, run_in_netns

if TYPE_CHECKING:
    from kubevipd.lab.topology import Lab


class HolderSampler:
    """Samples which nodes hold the VIP every ``interval`` from a thread; records every change."""

    def __init__(self, lab: Lab, interval: float = 0.01) -> None:
        self.lab = lab
        self.interval = interval
        self.samples = 0
        self.max_holders = 0
        self.double: list[tuple[float, list[str]]] = []
        self.changes: list[tuple[float, tuple[str, ...]]] = []
        self.excused: list[tuple[float, list[str]]] = []  # two holders a test made on purpose
        self._excusing = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="holder-sampler", daemon=True)
        # Sockets of its own: one pyroute2 socket must not serve two threads' dumps at once.
        self._iprs = {n.netns: NetnsIPRoute(n.netns) for n in lab.nodes}

    def __enter__(self) -> HolderSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for ipr in self._iprs.values():
            ipr.close()

    def _run(self) -> None:
        last: tuple[str, ...] | None = None
        while not self._stop.is_set():
            t = time.monotonic()
            holders = self.lab.holders(self._iprs)
            self.samples += 1
            if self._excusing:
                if len(holders) > 1:
                    self.excused.append((t, holders))
            else:
                self.max_holders = max(self.max_holders, len(holders))
                if len(holders) > 1:
                    self.double.append((t, holders))
            if tuple(holders) != last:
                last = tuple(holders)
                self.changes.append((t, last))
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - t)))

    @contextlib.contextmanager
    def excuse_two_holders(self) -> Iterator[None]:
        """While a test puts the VIP on a second node itself (``ip addr add`` by hand), two
        holders are recorded in ``excused``, not as a failure of the daemons."""
        self._excusing = True
        try:
            yield
        finally:
            # The sample under way may still see the test's doing: two more, then count again.
            seen, end = self.samples, time.monotonic() + 1.0
            while self.samples < seen + 2 and time.monotonic() < end:
                self._stop.wait(self.interval)
            self._excusing = False

    def holder(self) -> str | None:
        return self.changes[-1][1][0] if self.changes and self.changes[-1][1] else None


class Replies:
    """When a probe got its answers, and the outages between them."""

    def __init__(self) -> None:
        self.replies: list[float] = []

    def replies_after(self, t: float) -> list[float]:
        return [r for r in self.replies if r > t]

    def outage_between(self, t0: float, t1: float) -> float:
        return longest_gap(self.replies, t0, t1)

    def outage_around(self, t: float, window: float = 30.0) -> float:
        """The longest gap between replies in [t - 1s, t + window] (seconds)."""
        return self.outage_between(t - 1.0, t + window)


class Pinger(Replies):
    """ICMP echo to the VIP from the client namespace every ``interval``; records replies."""

    def __init__(self, lab: Lab, interval: float = 0.01) -> None:
        super().__init__()
        self.target = lab.vip
        self.interval = interval
        self.ident = os.getpid() & 0xFFFF
        self.sent = 0
        self._sock = run_in_netns(
            lab.client_ns,
            lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
        )
        self._sock.settimeout(0.1)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._send_loop, name="ping-send", daemon=True),
            threading.Thread(target=self._recv_loop, name="ping-recv", daemon=True),
        ]

    def __enter__(self) -> Pinger:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(2)
        self._sock.close()

    @staticmethod
    def _checksum(data: bytes) -> int:
        if len(data) % 2:
            data += b"\0"
        s = sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
        s = (s >> 16) + (s & 0xFFFF)
        s += s >> 16
        return ~s & 0xFFFF

    def _send_loop(self) -> None:
        seq = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            seq = (seq + 1) & 0xFFFF
            hdr = bytes([8, 0, 0, 0]) + self.ident.to_bytes(2, "big") + seq.to_bytes(2, "big")
            payload = b"kubevipd-lab"
            csum = self._checksum(hdr + payload)
            pkt = hdr[:2] + csum.to_bytes(2, "big") + hdr[4:] + payload
            with contextlib.suppress(OSError):
                self._sock.sendto(pkt, (self.target, 0))
                self.sent += 1
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _recv_loop(self) -> None:
        while not self._stop.is_set():
            try:
                data, (src, _) = self._sock.recvfrom(2048)
            except (TimeoutError, OSError):
                continue
            ihl = (data[0] & 0x0F) * 4
            icmp = data[ihl:]
            is_reply = src == self.target and len(icmp) >= 8 and icmp[0] == 0
            if is_reply and int.from_bytes(icmp[4:6], "big") == self.ident:
                self.replies.append(time.monotonic())


def longest_gap(times: list[float], t0: float, t1: float) -> float:
    """The longest gap between successes within [t0, t1] (seconds); inf with fewer than two."""
    rs = [r for r in times if t0 <= r <= t1]
    if len(rs) < 2:
        return float("inf")
    return max(b - a for a, b in itertools.pairwise(rs))


class ApiProber(Replies):
    """``GET https://VIP:6443/readyz`` from the client every ``interval``, on a new connection
    each time, as a client that reconnects does; records when an answer 200 came back.

    The outage it sees is what kubectl sees: the VIP must be held *and* the apiserver behind it
    must answer. The certificate is verified against the VIP, which kubeadm's carries.
    """

    def __init__(self, lab: Lab, interval: float = 0.01, timeout: float = 0.15) -> None:
        super().__init__()
        self.lab = lab
        self.interval = interval
        self.timeout = timeout
        self.sent = 0
        self._ctx = ssl.create_default_context(cafile=str(lab.pki.ca_cert))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="api-probe", daemon=True)

    def __enter__(self) -> ApiProber:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)

    def _once(self) -> bool:
        conn = http.client.HTTPSConnection(
            self.lab.vip, 6443, timeout=self.timeout, context=self._ctx
        )
        try:
            conn.request("GET", "/readyz")
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def _run(self) -> None:
        enter_netns(self.lab.client_ns)  # this thread only: its sockets are the client's
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.sent += 1
            if self._once():
                self.replies.append(time.monotonic())
            next_at = max(next_at + self.interval, time.monotonic() - self.interval)
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    @property
    def ok(self) -> list[float]:
        """When an answer 200 came back."""
        return self.replies
