"""BGP mode without routers: the term's MED, the routes, ExaBGP's config (checked by the real
ExaBGP when it is installed), its news, its supervision, and what the Lease machine does with
the path the sessions give. The routers' side is tests/integration/test_bgp.py."""

from __future__ import annotations

import ipaddress
import itertools
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from test_machine import ANNOUNCE, Sim, leader

from kubevipd.announce import exabgp as exabgp_mod
from kubevipd.announce.bgp import BgpAnnouncer, describe_peers, med_for_term, routes_for
from kubevipd.announce.bgp_plan import PeerPlan, Plan, PlanError, resolve
from kubevipd.announce.exabgp import (
    SEND_TIMEOUT,
    ExaBgp,
    PeerState,
    Route,
    exabgp_command,
    render_config,
)
from kubevipd.config import load_text
from kubevipd.election.base import takeover_request
from kubevipd.events import Announce, Observed, PathChanged, RemoveVip, Role, Write
from kubevipd.vip.model import Vip

ip = ipaddress.ip_address
V4 = Vip(ip("10.9.9.75"), 32)
V6 = Vip(ip("fd00:9::75"), 128)


def plan(password: str | None = None) -> Plan:
    return Plan(
        local_as=65001,
        router_id=ipaddress.IPv4Address("10.0.0.11"),
        hold_time=9,
        peers=(
            PeerPlan(ip("10.0.0.2"), 65000, 179, ip("10.0.0.11"), ("ipv4-unicast",),
                     {4: ip("10.0.0.11"), 6: ip("fd00::11")}, None, password),
            PeerPlan(ip("fd00::2"), 65000, 1790, ip("fd00::11"), ("ipv4-unicast", "ipv6-unicast"),
                     {4: ip("10.0.0.11"), 6: ip("fd00::11")}, 255),
        ),
    )  # fmt: skip


# ------------------------------------------------------------------ routes


def test_every_later_term_has_a_lower_med_and_all_nodes_mode_sends_none() -> None:
    meds = [med_for_term(t) for t in (0, 1, 2, 1000, 2**31 - 1)]
    assert all(a is not None and b is not None and a > b for a, b in itertools.pairwise(meds))
    assert all(m is not None and 0 <= m < 2**32 for m in meds)
    assert med_for_term(None) is None


def test_routes_carry_an_explicit_next_hop_per_family_and_only_the_peers_families() -> None:
    got = routes_for(plan(), [V4, V6], term=3)
    med = med_for_term(3)
    assert got == [
        Route("10.0.0.2", "10.9.9.75/32", "10.0.0.11", med),  # no ipv6-unicast on this one
        Route("fd00::2", "10.9.9.75/32", "10.0.0.11", med),
        Route("fd00::2", "fd00:9::75/128", "fd00::11", med),
    ]
    # Withdrawals name the next hop too (exabgp#1153), and never a MED.
    assert got[2].withdraw() == "neighbor fd00::2 withdraw route fd00:9::75/128 next-hop fd00::11"
    assert got[0].announce().endswith(f"next-hop 10.0.0.11 med {med}")
    assert "med" not in routes_for(plan(), [V4], None)[0].announce()


def test_the_config_has_no_password_in_clear_and_the_real_exabgp_accepts_it(
    tmp_path: Path,
) -> None:
    text = render_config(plan('pa ss"word'), tmp_path / "exabgp.sock")
    assert 'pa ss"word' not in text and "md5-base64 true;" in text
    assert "connect 1790;" in text and "outgoing-ttl 255;" in text and "hold-time 9;" in text
    assert "graceful-restart" not in text and "next-hop self" not in text
    if exabgp_command() is None:
        pytest.skip("exabgp is not installed (./dev.sh installs it)")
    conf = tmp_path / "exabgp.conf"
    conf.write_text(text)
    r = subprocess.run(
        [str(exabgp_command()), "--test", str(conf)],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "exabgp_api_cli": "false"},
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_peer_without_a_tcp_connection_and_a_password_gets_the_hint() -> None:
    p = plan("secret")
    text = describe_peers(p, {"10.0.0.2": PeerState(), "fd00::2": PeerState("up")})
    assert text.startswith("10.0.0.2 (AS 65000) connecting (no TCP connection; a TCP MD5")
    assert text.endswith("fd00::2 port 1790 (AS 65000) up")
    assert "secret" not in text


class FakeNetlink:
    """What bgp_plan reads of the kernel: the route to a peer and an interface's addresses."""

    def __init__(self, addresses: dict[int, list[str]]) -> None:
        self.addresses = addresses  # family -> the addresses of eth0 (index 2)

    def route(self, cmd: str, dst: str, family: int) -> list[Any]:
        return [Attrs({"RTA_OIF": 2, "RTA_PREFSRC": self.addresses[family][0]})]

    def get_addr(self, index: int, family: int) -> list[Any]:
        return [Attrs({"IFA_ADDRESS": a}) for a in self.addresses.get(family, [])]

    def link_lookup(self, ifname: str) -> list[int]:
        return [2]


class Attrs(dict):  # type: ignore[type-arg]
    def get_attr(self, name: str) -> Any:
        return self[name]


def bgp_spec(families: str = "") -> Any:
    return load_text(
        "vip: {address: [10.9.9.75, 'fd00:9::75']}\nannounce:\n  mode: bgp\n  bgp:\n"
        "    router_id: 10.0.0.11\n    local_as: 65001\n"
        f"    peers: [{{address: 10.0.0.2, as: 65000{families}}}]\n"
    ).config.announce.bgp


def test_a_peer_gets_next_hops_only_for_the_families_it_carries() -> None:
    """Review: a dual-stack VIP and an IPv4 session listing only ipv4-unicast needed an IPv6
    address for a next hop it never announces, and the error told to do what was done."""
    v4_only = FakeNetlink({socket.AF_INET: ["10.0.0.11"]})
    got = resolve(bgp_spec(", families: [ipv4-unicast]"), [V4, V6], v4_only)  # type: ignore[arg-type]
    assert got.peers[0].next_hops == {4: ip("10.0.0.11")}
    with pytest.raises(PlanError, match="needs a global IPv6 address for the next hop"):
        resolve(bgp_spec(), [V4, V6], v4_only)  # type: ignore[arg-type]
    both = FakeNetlink({socket.AF_INET: ["10.0.0.11"], socket.AF_INET6: ["fd00::11"]})
    got = resolve(bgp_spec(), [V4, V6], both)  # type: ignore[arg-type]
    assert got.peers[0].next_hops == {4: ip("10.0.0.11"), 6: ip("fd00::11")}


# ------------------------------------------------------------------ the ExaBGP child

FAKE_EXABGP = """\
#!{python}
# A stand-in for exabgp: starts the relay from the config, as ExaBGP does, tells of a
# session, records every command and acks it; exits at once when told to by the test.
import json, subprocess, sys, os
conf = open(sys.argv[1]).read()
run = conf.split("run ", 1)[1].split(";", 1)[0].split()
if os.path.exists(os.path.join(os.path.dirname(sys.argv[1]), "die")):
    sys.exit(3)
relay = subprocess.Popen(run, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
state = {{"type": "state", "neighbor": {{"address": {{"local": "10.0.0.11", "peer": "10.0.0.2"}},
         "state": "up"}}}}
relay.stdin.write((json.dumps(state) + "\\n").encode()); relay.stdin.flush()
log = open(os.path.join(os.path.dirname(sys.argv[1]), "commands"), "a")
for line in relay.stdout:
    log.write(line.decode()); log.flush()
    relay.stdin.write(b"done\\n"); relay.stdin.flush()
"""


@pytest.fixture
def fake_exabgp(tmp_path: Path) -> Path:
    path = tmp_path / "fake-exabgp"
    path.write_text(FAKE_EXABGP.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def wait_until(predicate: object, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_the_child_gets_a_private_config_reports_sessions_and_takes_the_routes(
    tmp_path: Path, fake_exabgp: Path
) -> None:
    run = tmp_path / "run"
    seen: list[dict[str, PeerState]] = []
    ex = ExaBgp(plan("secret"), run, seen.append, command=str(fake_exabgp))
    try:
        assert stat.S_IMODE((run / "exabgp.conf").stat().st_mode) == 0o600
        assert "secret" not in (run / "exabgp.conf").read_text()
        route = Route("10.0.0.2", "10.9.9.75/32", "10.0.0.11", 7)
        assert ex.set_routes([route]) == 0  # no ExaBGP yet: it gets them when it connects
        ex.start()
        assert wait_until(lambda: seen and seen[-1]["10.0.0.2"].up)
        commands = run / "commands"
        assert wait_until(lambda: commands.exists() and route.announce() in commands.read_text())
        assert ex.set_routes([route]) == 0  # nothing new: nothing sent
        assert ex.set_routes([]) == 1
        assert wait_until(lambda: route.withdraw() in commands.read_text())
    finally:
        ex.stop()
    assert not (run / "exabgp.sock").exists()


RECORDING_SHIM = """\
import os, sys
with open(os.path.join(os.path.dirname(sys.argv[0]), "shim-argv"), "w") as f:
    f.write("\\n".join(sys.argv[1:]))
os.execvp(sys.argv[1], sys.argv[1:])
"""


def test_exabgp_is_started_through_the_shim_that_drops_capabilities(
    tmp_path: Path, fake_exabgp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The supervisor's child goes through exabgp.DROPCAPS (what the shim does is proven in
    tests/integration/test_dropcaps.py and under the unit in test_systemd)."""
    shim = tmp_path / "shim.py"
    shim.write_text(RECORDING_SHIM)
    monkeypatch.setattr(exabgp_mod, "DROPCAPS", shim)
    run = tmp_path / "run"
    seen: list[dict[str, PeerState]] = []
    ex = ExaBgp(plan(), run, seen.append, command=str(fake_exabgp))
    try:
        ex.start()
        assert wait_until(lambda: seen and seen[-1]["10.0.0.2"].up)  # it went on to ExaBGP
    finally:
        ex.stop()
    assert (tmp_path / "shim-argv").read_text().split("\n") == [
        str(fake_exabgp),
        str(run / "exabgp.conf"),
    ]


def test_commands_long_after_the_first_still_reach_exabgp_and_so_does_its_news(
    tmp_path: Path, fake_exabgp: Path
) -> None:
    """Review of issue 14: the send timeout was set on the socket the reader blocks on, so
    the reader timed out 0.5 s after the first command and the connection was dropped: no
    withdrawal reached ExaBGP after that, and no news came back."""
    run = tmp_path / "run"
    seen: list[dict[str, PeerState]] = []
    ex = ExaBgp(plan(), run, seen.append, command=str(fake_exabgp))
    ex.start()
    try:
        assert wait_until(lambda: ex._conn is not None and seen and seen[-1]["10.0.0.2"].up)
        route = Route("10.0.0.2", "10.9.9.75/32", "10.0.0.11", 9)
        assert ex.set_routes([route]) == 1
        commands = run / "commands"
        assert wait_until(lambda: commands.exists() and route.announce() in commands.read_text())
        time.sleep(SEND_TIMEOUT * 2)  # the scenario itself: time passes between commands
        assert ex._conn is not None
        assert ex.set_routes([]) == 1
        assert wait_until(lambda: route.withdraw() in commands.read_text())
        assert wait_until(lambda: ex._unacked == 0)  # its acks still arrive: the reader lives
    finally:
        ex.stop()


def test_a_child_that_dies_is_started_again_with_back_off_and_gets_the_routes_again(
    tmp_path: Path, fake_exabgp: Path
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "die").touch()  # the first children exit at once
    ex = ExaBgp(plan(), run, lambda _: None, command=str(fake_exabgp))
    route = Route("10.0.0.2", "10.9.9.75/32", "10.0.0.11", None)
    ex.set_routes([route])
    t0 = time.monotonic()
    ex.start()
    try:
        assert wait_until(lambda: ex.starts >= 2)
        assert time.monotonic() - t0 >= 0.5  # the first back-off
        (run / "die").unlink()
        commands = run / "commands"
        assert wait_until(lambda: commands.exists() and route.announce() in commands.read_text())
    finally:
        ex.stop()


def test_the_relay_ends_exabgp_when_kubevipd_is_gone(tmp_path: Path, fake_exabgp: Path) -> None:
    """ExaBGP 4.2 goes on announcing when its helper dies: the relay must end it."""
    run = tmp_path / "run"
    ex = ExaBgp(plan(), run, lambda _: None, command=str(fake_exabgp))
    ex.start()
    try:
        assert wait_until(lambda: ex._proc is not None and ex._conn is not None)
        proc = ex._proc
        assert proc is not None
        with ex._lock:
            assert ex._conn is not None
            ex._conn.shutdown(socket.SHUT_RDWR)  # as a killed kubevipd's socket closes
        assert proc.wait(10) is not None
    finally:
        ex.stop()


class FakeSpeaker:
    def __init__(self, plan: Plan, run_dir: Path, on_peers: object) -> None:
        self.peers = {str(p.address): PeerState() for p in plan.peers}
        self.on_peers = on_peers
        self.routes: list[list[Route]] = []
        self.stopped = False

    def start(self) -> None:
        pass

    def set_routes(self, routes: list[Route]) -> int:
        self.routes.append(list(routes))
        return len(routes)

    def stop(self) -> None:
        self.stopped = True


def test_the_announcer_reports_its_path_first_from_its_constructor(tmp_path: Path) -> None:
    said: list[tuple[bool, str, dict[str, str]]] = []
    speakers: list[FakeSpeaker] = []

    def make(*a: object) -> FakeSpeaker:
        speakers.append(FakeSpeaker(*a))  # type: ignore[arg-type]
        return speakers[-1]

    a = BgpAnnouncer(plan(), [V4], tmp_path, lambda *x: said.append(x), speaker=make)  # type: ignore[arg-type]
    assert said[0][0] is False and said[0][1].startswith("no BGP session is established: ")
    sp = speakers[0]
    up = {k: PeerState("up") for k in sp.peers}
    sp.on_peers(up)  # type: ignore[operator]
    assert said[-1][0] is True and said[-1][2] == {"10.0.0.2": "up", "fd00::2": "up"}
    assert a.announce(term=5) == 2 and {r.med for r in sp.routes[-1]} == {med_for_term(5)}
    a.set_vips([V4, V6])
    a.withdraw()
    assert sp.routes[-1] == []
    a.close()
    assert sp.stopped


# ------------------------------------------------------------------ the Lease machine


def path(ok: bool) -> PathChanged:
    return PathChanged(ok, "no BGP session is established: 10.0.0.2 (AS 65000) connecting")


def lead_for(s: Sim, seconds: float, step: float = 0.1) -> list[object]:
    """Time passes and every renewal succeeds: only the path can end the leadership."""
    out: list[object] = []
    for _ in range(round(seconds / step)):
        got = s.tick(step)
        out += got
        for w in [a for a in got if isinstance(a, Write) and a.op == "renew"]:
            s.complete(w)
    return out


def test_a_leader_announces_with_its_terms_leasetransitions() -> None:
    s, _ = leader()
    assert s.m.observed is not None
    out = s.ev(path(True))
    s.m.announcements.start(s.now, s.m.announce_timing)
    out = s.tick(0.01)
    terms = [a.term for a in out if isinstance(a, Announce)]
    assert terms and set(terms) == {s.m.observed.transitions}


def test_a_leader_without_a_session_for_the_grace_renews_degraded_and_hands_over_on_request() -> (
    None
):
    """No session on any peer for the grace: the leader keeps the VIP but marks the Lease
    degraded, and hands over as soon as a node that can announce asks (it never just
    releases: with every node's sessions down at once, nobody would hold the VIP)."""
    s, _ = leader()
    s.ev(path(False))
    out = lead_for(s, s.m.t.path_grace - 0.1)
    renewals = [a for a in out if isinstance(a, Write) and a.op == "renew"]
    assert renewals and not any(w.record.degraded for w in renewals)
    assert not any("cannot be announced" in x for x in s.said)
    out = lead_for(s, 1.5)
    assert s.m.role is Role.LEADER and RemoveVip() not in out
    renewals = [a for a in out if isinstance(a, Write) and a.op == "renew"]
    assert renewals and renewals[-1].record.degraded
    warned = [x for x in s.said if "the VIP cannot be announced for" in x]
    assert len(warned) == 1 and "10.0.0.2 (AS 65000) connecting" in warned[0]
    assert s.m.observed is not None and s.m.observed.degraded
    asked = replace(
        takeover_request(s.m.observed, "n2"), version=str(int(s.m.observed.version) + 1)
    )
    out = s.ev(Observed(asked))
    assert RemoveVip() in out and s.write_of(out).op == "release"
    assert any("healthy node n2 asked to take over" in x for x in s.said)
    lead_for(s, 5.0)
    assert len([x for x in s.said if "the VIP cannot be announced for" in x]) == 1


def test_a_degraded_leader_whose_sessions_come_back_renews_fit_again() -> None:
    s, _ = leader()
    s.ev(path(False))
    lead_for(s, s.m.t.path_grace + 1.5)
    assert s.m.observed is not None and s.m.observed.degraded
    s.ev(path(True))
    out = lead_for(s, 1.5)
    renewals = [a for a in out if isinstance(a, Write) and a.op == "renew"]
    assert renewals and not renewals[-1].record.degraded and s.m.role is Role.LEADER
    assert any("the VIP can be announced again" in x for x in s.said)


def test_a_session_back_within_the_grace_changes_nothing() -> None:
    s, _ = leader()
    s.ev(path(False))
    lead_for(s, 1.0)
    s.ev(path(True))
    out = lead_for(s, 5.0)
    assert s.m.role is Role.LEADER and RemoveVip() not in out
    assert not any("cannot be announced" in x for x in s.said)


def test_a_follower_without_a_session_leaves_the_lease_to_a_node_with_one() -> None:
    """Unfit, like an unhealthy apiserver: it waits a lease duration more before it campaigns,
    and then campaigns degraded, saying why."""
    s = Sim("n2")
    s.healthy()
    s.ev(path(False))
    s.tick(s.m.t.path_grace + 0.1)
    out = s.ev(Observed(None))
    assert not any(isinstance(a, Write) for a in out)
    out = s.tick(s.m.t.lease_duration + 0.1)
    w = s.write_of(out)
    assert w.op == "acquire" and w.record.degraded
    assert any("campaigning although the VIP cannot be announced" in x for x in s.said)
    assert ANNOUNCE not in out


def test_the_peers_states_reach_the_status_and_metrics(tmp_path: Path) -> None:
    from kubevipd.metrics import Metrics
    from kubevipd.report import Reporter

    m = Metrics()
    r = Reporter("n1", "kube-system/plndr-cp-lock", tmp_path, None, m, lambda _: None)  # type: ignore[arg-type]
    r.path("BGP peers: 10.0.0.2 up", {"10.0.0.2": "up", "10.0.0.3": "connecting"})
    assert m.registry.get_sample_value("kubevipd_bgp_peer_up", {"peer": "10.0.0.2"}) == 1
    assert m.registry.get_sample_value("kubevipd_bgp_peer_up", {"peer": "10.0.0.3"}) == 0
    r.path("BGP peers: 10.0.0.2 up", {"10.0.0.2": "up"})
    assert m.registry.get_sample_value("kubevipd_bgp_peer_up", {"peer": "10.0.0.3"}) is None
    assert r.path_text == "BGP peers: 10.0.0.2 up"
    lead, _ = leader()
    line = r.status_line(lead.m, "VIP 10.9.9.75 on lo", None)  # systemd's STATUS=
    assert line == "leader of plndr-cp-lock, VIP 10.9.9.75 on lo; BGP peers: 10.0.0.2 up"


def test_nothing_here_needs_threads_left_behind() -> None:
    """The fixtures above stop what they start: no ExaBGP thread outlives its test."""

    def left() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith("exabgp")]

    assert wait_until(lambda: not left(), 5), left()
