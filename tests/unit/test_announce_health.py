"""Announcement frames, the health checker's thresholds, the notify protocol, status text."""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import time
from pathlib import Path

import pytest
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6
from scapy.layers.l2 import ARP, Ether

from kubevipd.announce.arp import frames
from kubevipd.config.model import Duration, HealthSpec
from kubevipd.health import HealthChecker
from kubevipd.notify import Notifier
from kubevipd.vip.model import Vip

MAC = "02:00:00:00:00:0b"


def test_ipv4_gratuitous_arp_in_request_and_reply_form() -> None:
    req, rep = (Ether(f) for f in frames(MAC, [Vip(ipaddress.ip_address("192.0.2.75"), 32)]))
    for f in (req, rep):
        assert f.dst == "ff:ff:ff:ff:ff:ff" and f.src == MAC
        assert f[ARP].psrc == f[ARP].pdst == "192.0.2.75" and f[ARP].hwsrc == MAC
    assert req[ARP].op == 1 and rep[ARP].op == 2


def test_ipv6_unsolicited_neighbour_advertisement_overrides() -> None:
    (raw,) = frames(MAC, [Vip(ipaddress.ip_address("fd00::75"), 128)])
    f = Ether(raw)
    assert f.dst == "33:33:00:00:00:01"
    assert f[IPv6].dst == "ff02::1" and f[IPv6].hlim == 255 and f[IPv6].src == "fd00::75"
    na = f[ICMPv6ND_NA]
    assert na.tgt == "fd00::75" and na.O == 1 and na.S == 0 and na.R == 0
    assert f[ICMPv6NDOptDstLLAddr].lladdr == MAC
    # The checksum scapy computed is right: rebuilding without it gives the same bytes.
    del na.cksum
    assert bytes(Ether(bytes(f))) == raw


def test_dual_stack_sends_three_frames() -> None:
    vips = [Vip(ipaddress.ip_address("192.0.2.75"), 32), Vip(ipaddress.ip_address("fd00::75"), 128)]
    assert len(frames(MAC, vips)) == 3


def _run_checker(results: list[bool], spec: HealthSpec) -> list[tuple[bool, str]]:
    seen: list[tuple[bool, str]] = []
    done = threading.Event()
    it = iter(results)

    def check(url: str, timeout: float, ctx: object, name: object) -> tuple[bool, str]:
        try:
            return next(it), "x"
        except StopIteration:
            done.set()
            return True, "x"

    hc = HealthChecker(spec, None, lambda ok, why: seen.append((ok, why)), check)
    hc.start()
    assert done.wait(5)
    hc.stop()
    return seen


def test_health_changes_only_after_the_thresholds() -> None:
    spec = HealthSpec(
        url="http://127.0.0.1:9/readyz",
        period=Duration(10),
        timeout=Duration(10),
        failure_threshold=3,
        success_threshold=2,
    )
    seen = _run_checker([True, True, False, False, True, False, False, False, True, True], spec)
    assert [ok for ok, _ in seen] == [True, False, True]


def test_notify_speaks_the_protocol_on_notify_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    n = Notifier()
    assert n.watchdog_interval == 2.0 and n.max_sleep() == 0.5
    n.ready("follower")
    assert sock.recv(4096) == b"READY=1\nSTATUS=follower"
    now = time.monotonic()
    n.watchdog(now)
    assert sock.recv(4096) == b"WATCHDOG=1"
    n.watchdog(now + 0.5)  # not due yet: half the interval
    n.stopping("stopping")
    assert sock.recv(4096) == b"STOPPING=1\nSTATUS=stopping"
    n.reloading()
    assert sock.recv(4096).startswith(b"RELOADING=1\nMONOTONIC_USEC=")
    sock.close()


def test_watchdog_meant_for_another_pid_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert Notifier().watchdog_interval is None
