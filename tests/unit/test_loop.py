"""The main loop (kubevipd/daemon.py) with fakes for every part: no namespaces, no apiserver.

What is checked is what the loop itself does with a policy's actions: a failed action drops
the rest of its batch, nothing is announced that is not on the interface, the status reports
what the interface shows, a reload that cannot resolve keeps the running config, and the
threads that gather news survive an exception.
"""

from __future__ import annotations

import logging
import queue
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, replace
from ipaddress import ip_address
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from kubevipd import cleanup, metrics
from kubevipd import status as status_file
from kubevipd.announce.base import AnnounceError, AnnounceTiming
from kubevipd.config import load_text
from kubevipd.daemon import Daemon
from kubevipd.effects import FromLink
from kubevipd.election.base import LeaderRecord, release_record
from kubevipd.events import (
    AddVip,
    Announce,
    Announced,
    AnnounceFailed,
    Decision,
    HealthChanged,
    LinkChanged,
    RemoveVip,
    Role,
    Stop,
    VipAdded,
    VipAddFailed,
    VipChanged,
    VipMissing,
    VipStray,
    Write,
    WriteDone,
)
from kubevipd.journal import JournalFormatter
from kubevipd.notify import watchdog_fence_warning
from kubevipd.parts import Parts, build_all_nodes_policy
from kubevipd.supervise import supervise
from kubevipd.vip.netlink import InterfaceError, Vip


class FakeLink:
    def __init__(self, ifname: str, vips: list[Vip]) -> None:
        self.ifname, self.vips, self.index = ifname, vips, 7
        self.up: list[Vip] = []
        self.refuse_add = self.refuse_remove = False
        self.lifetimes: list[int | None] = []  # the kernel lifetime of each add

    def mac(self) -> str:
        return "02:00:00:00:00:01"

    def carrier(self) -> bool:
        return True

    def present(self) -> list[Vip]:
        return list(self.up)

    def add(self, lifetime: int | None = None) -> None:
        self.lifetimes.append(lifetime)
        if self.refuse_add:
            raise InterfaceError("cannot add 192.0.2.75/32 to eth0: Operation not permitted")
        self.up = list(self.vips)

    def remove(self) -> None:
        if self.refuse_remove:
            raise InterfaceError("cannot remove 192.0.2.75/32 from eth0: busy")
        self.up = []

    def close(self) -> None:
        pass


class FakeAnnouncer:
    timing = AnnounceTiming(burst=(0.0, 0.25), refresh=3.0)
    slow = False

    def __init__(
        self, cfg: object, ifname: str, link: object, vips: list[Vip], env: object = None
    ) -> None:
        self.sent = 0
        self.withdrawn = 0
        self.link = link
        self.up_at_withdraw: list[int] = []  # VIP addresses on the link at each withdraw
        self.vips = vips
        self.threads: list[str] = []
        self.terms: list[int | None] = []
        self.fail: str | None = None

    def announce(self, term: int | None = None) -> int:
        self.terms.append(term)
        self.threads.append(threading.current_thread().name)
        if self.fail:
            raise AnnounceError(self.fail)
        self.sent += 1
        return 2

    def withdraw(self) -> None:
        self.withdrawn += 1
        self.up_at_withdraw.append(len(self.link.up))  # type: ignore[attr-defined]

    def set_vips(self, vips: list[Vip]) -> None:
        self.vips = vips

    def close(self) -> None:
        self.closed = True

    closed = False


class FakeMonitor:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class FakeElection:
    def __init__(self, spec: Any, identity: str) -> None:
        self.writes: list[Write] = []
        self.ca_file = None

    def describe(self) -> str:
        return "Lease kube-system/plndr-cp-lock at https://127.0.0.1:6443"

    def write(self, op: str, record: LeaderRecord, timeout: float) -> Any:
        raise AssertionError("the test checks submissions, not answers")

    def close(self) -> None:
        pass


@pytest.fixture
def loop(tmp_path: Path) -> Daemon:
    cfg = load_text("node_name: n1\ninterface: eth0\nvip: {address: 192.0.2.75}\n").config
    r = Daemon(
        cfg,
        str(tmp_path / "kubevip.yaml"),
        tmp_path / "run",
        Parts(link=FakeLink, announcer=FakeAnnouncer, monitor=FakeMonitor),  # type: ignore[arg-type]
    )
    r.election = r.effects.election = FakeElection(None, "n1")  # type: ignore[assignment]
    submitted: list[Write] = []
    r.effects.writer.submit = lambda fn, election, a, sent: submitted.append(a)  # type: ignore[method-assign, assignment]
    r.submitted = submitted  # type: ignore[attr-defined]
    return r


def queued(r: Daemon) -> list[object]:
    out = []
    while True:
        try:
            out.append(r.q.get_nowait())
        except queue.Empty:
            return out


def run_batch(r: Daemon, actions: list[object]) -> None:
    r.policy.handle = lambda *_: Decision(actions)  # type: ignore[method-assign, assignment, arg-type]
    r._step(None)


def test_a_vip_netlink_refused_is_never_announced(loop: Daemon) -> None:
    link: FakeLink = loop.attached.link  # type: ignore[assignment]
    link.refuse_add = True
    run_batch(loop, [AddVip(), Announce()])
    assert loop.attached.announcer.sent == 0  # type: ignore[union-attr]
    assert [type(e) for e in queued(loop)] == [VipAddFailed]


def test_no_release_goes_out_while_a_vip_we_could_not_remove_may_be_up(loop: Daemon) -> None:
    link: FakeLink = loop.attached.link  # type: ignore[assignment]
    link.up, link.refuse_remove = list(link.vips), True
    record = LeaderRecord(holder="n1", lease_duration_s=5, version="3")
    release = Write("release", release_record(record, 0.0), 1.0)
    run_batch(loop, [RemoveVip(), release])
    assert loop.submitted == []  # type: ignore[attr-defined]
    stray, done, *seen = queued(loop)
    assert isinstance(stray, VipStray) and stray.failed  # the machine tries again
    assert isinstance(done, WriteDone)
    assert done.op == "release" and not done.result.ok  # the machine still hears of it
    assert all(isinstance(e, VipStray) for e in seen)  # and the status saw it still up


def test_a_follower_with_the_vip_on_its_interface_removes_it(loop: Daemon) -> None:
    """Whoever put it there (a removal that failed, a person, another tool): a follower must
    not keep it. The machine hears of it and removes it; the leader's VIP is left alone."""
    loop.policy.role, loop.policy.holds_vip = Role.FOLLOWER, False
    loop.attached.link.up = list(loop.vips)  # type: ignore[union-attr]
    loop.reporter.force()
    loop._publish()
    (news,) = queued(loop)
    assert isinstance(news, VipStray) and not news.failed
    loop._step(news)
    assert loop.attached.link.up == []  # type: ignore[union-attr]
    loop.policy.role, loop.policy.holds_vip = Role.LEADER, True
    loop.attached.link.up = list(loop.vips)  # type: ignore[union-attr]
    loop.reporter.force()
    loop._publish()
    assert queued(loop) == []


def test_an_announcement_checks_the_vip_is_on_the_interface(loop: Daemon) -> None:
    """A monitor that went deaf (pyroute2 0.9) must not leave a leader announcing an address
    it does not hold: the announcement itself looks, and the VIP is restored."""
    run_batch(loop, [Announce()])
    assert loop.attached.announcer.sent == 0  # type: ignore[union-attr]
    (news,) = queued(loop)
    assert isinstance(news, FromLink) and isinstance(news.event, VipMissing)
    loop.attached.link.up = list(loop.vips)  # type: ignore[union-attr]
    run_batch(loop, [Announce()])
    assert loop.attached.announcer.sent == 1  # type: ignore[union-attr]


def test_status_and_metrics_report_what_the_interface_shows(loop: Daemon) -> None:
    loop.policy.holds_vip = True  # what the machine believes
    loop.reporter.force()
    loop._publish()
    state = status_file.read(loop.run_dir)
    assert state is not None and state["vip_present"] is False
    assert loop.metrics.registry.get_sample_value("kubevipd_vip_present") == 0
    loop.attached.link.up = list(loop.vips)  # type: ignore[union-attr]
    loop.reporter.force()
    loop._publish()
    state = status_file.read(loop.run_dir)
    assert state is not None and state["vip_present"] is True


def test_a_reload_without_a_default_route_keeps_the_running_config(
    loop: Daemon, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    Path(loop.config_path).write_text("vip: {address: 192.0.2.76}\n")  # no interface: route
    monkeypatch.setattr("kubevipd.resolve.default_route_interface", lambda: None)
    old_vips = loop.vips
    loop._reload()  # it used to raise out of the main loop: exit status 2
    assert loop.vips == old_vips
    assert "no default route" in caplog.text and "keeping the running config" in caplog.text


def test_a_thread_that_dies_is_logged_once_with_its_traceback_and_started_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs: list[int] = []
    done = threading.Event()

    def work() -> None:
        runs.append(1)
        if len(runs) >= 3:
            done.set()
            return
        raise ValueError("watch error: unexpected")

    pauses: list[float] = []

    def pause(s: float) -> bool:
        pauses.append(s)
        return done.is_set()

    with caplog.at_level(logging.DEBUG, logger="kubevipd"):
        t = supervise("lease-watch", work, done.is_set, pause)
        t.join(5)
    assert not t.is_alive() and len(runs) == 3
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # the same failure again is not logged again
    text = errors[0].getMessage()
    assert "thread lease-watch died (ValueError: watch error: unexpected)" in text
    assert "Traceback (most recent call last)" in text and "in work" in text


def test_the_journal_gets_the_traceback_every_line_with_its_priority() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        rec = logging.LogRecord(
            "kubevipd", logging.DEBUG, __file__, 1, "details", None, sys.exc_info()
        )
    lines = JournalFormatter().format(rec).splitlines()
    assert lines[0] == "<7>details" and len(lines) > 2
    assert all(line.startswith("<7>") for line in lines)
    assert any("RuntimeError: boom" in line for line in lines)


@pytest.mark.parametrize(
    ("watchdog", "lease", "retry", "warned"),
    [(2.0, 5.0, 1.0, False), (2.0, 3.0, 0.5, True), (None, 1.0, 0.2, False), (2.0, 4.5, 1.0, True)],
)
def test_a_lease_too_short_for_the_watchdog_to_fence_a_frozen_leader_is_one_line(
    watchdog: float | None, lease: float, retry: float, warned: bool
) -> None:
    text = watchdog_fence_warning(watchdog, lease, retry)
    assert (text is not None) == warned
    if text:
        assert (
            "\n" not in text and "WatchdogSec=2s" in text and f"lease_duration {lease:g}s" in text
        )


def test_a_vip_moved_to_an_interface_that_is_not_there_stays_where_it_was(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    made: list[FakeLink] = []

    def link(ifname: str, vips: list[Vip]) -> FakeLink:
        if ifname == "eth9":
            raise InterfaceError("interface eth9 does not exist")
        made.append(FakeLink(ifname, vips))
        return made[-1]

    cfg = load_text("node_name: n1\ninterface: eth0\nvip: {address: 192.0.2.75}\n").config
    parts = Parts(link=link, announcer=FakeAnnouncer, monitor=FakeMonitor)  # type: ignore[arg-type]
    r = Daemon(cfg, str(tmp_path / "kubevip.yaml"), tmp_path / "run", parts)
    m = r.policy
    m.role, m.holds_vip = Role.LEADER, True  # type: ignore[misc]
    m.deadline = m.next_renew = time.monotonic() + 60  # type: ignore[attr-defined]
    m.takeover_after = time.monotonic() + 65  # type: ignore[attr-defined]
    m.observed = LeaderRecord(holder="n1", lease_duration_s=5, version="3")  # type: ignore[attr-defined]
    made[-1].up = list(made[-1].vips)
    r._move_vip(r.vips, "eth9")
    assert r.ifname == "eth0" and r.attached is not None and r.attached.link is made[-1]
    assert made[-1].present() == r.vips
    assert "interface eth9 does not exist; keeping VIP 192.0.2.75 on eth0" in caplog.text


def test_a_hand_over_that_does_not_finish_in_time_still_removes_the_vip(
    loop: Daemon, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGTERM while the apiservers never answer: the release hangs; the loop gives up after
    twice the API timeout plus a second, removes the VIP and exits 0."""
    import time

    from kubevipd.events import Role, Stop

    link: FakeLink = loop.attached.link  # type: ignore[assignment]
    link.up = list(link.vips)
    loop.policy.role, loop.policy.holds_vip = Role.LEADER, True
    loop.policy.observed = LeaderRecord(holder="n1", lease_duration_s=5, version="3")
    loop.policy.deadline = time.monotonic() + 60
    loop.policy.next_renew = time.monotonic() + 60
    loop._connect_election = lambda: None  # type: ignore[method-assign]
    loop.q.put(Stop("SIGTERM"))
    t0 = time.monotonic()
    assert loop.run() == 0
    took = time.monotonic() - t0
    limit = loop.policy.t.api_timeout * 2 + 1.0
    assert limit - 0.1 < took < limit + 1.0, took
    assert link.up == [] and "hand-over did not finish in time" in caplog.text
    assert [w.op for w in loop.submitted] == ["release"]  # type: ignore[attr-defined]


def test_no_default_route_at_start_is_waited_for_then_exit_1_not_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's kubeadm config sets no interface: at boot the default route may come late."""
    from kubevipd.daemon import InterfaceMissing, run

    monkeypatch.setattr("kubevipd.resolve.default_route_interface", lambda: None)
    monkeypatch.setenv("KUBEVIPD_INTERFACE_WAIT", "0.3")
    cfg = load_text("node_name: n1\nvip: {address: 192.0.2.75}\n").config
    with pytest.raises(InterfaceMissing, match="no default route"):
        Daemon(cfg, str(tmp_path / "k.yaml"), tmp_path / "run", Parts(link=FakeLink))  # type: ignore[arg-type]
    assert run(str(tmp_path / "k.yaml"), cfg, tmp_path / "run") == 1


def test_metrics_on_a_taken_port_are_tried_again_while_the_daemon_runs(
    loop: Daemon, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A port still taken can heal: not exit status 2 (never restarted) but a warning, the VIP
    served meanwhile, and metrics once the port is free."""
    monkeypatch.setattr(metrics, "RETRY_S", 0.05)
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    listen = f"127.0.0.1:{blocker.getsockname()[1]}"
    try:
        loop.metrics.serve_or_retry(listen, loop._metrics_stop)  # returns: the loop goes on
        assert not loop.metrics.serving
        assert f"cannot serve metrics on {listen}" in caplog.text
    finally:
        blocker.close()
    end = time.monotonic() + 5
    while not loop.metrics.serving and time.monotonic() < end:
        time.sleep(0.01)
    with urllib.request.urlopen(f"http://{listen}/metrics", timeout=5) as r:
        assert b"kubevipd_vip_present" in r.read()
    loop._metrics_stop.set()


# ------------------------------------------------------------------ the seams, with fakes


class FakeSource:
    """A VIP source that moves the VIP by itself (as a DNS name will)."""

    def __init__(self, cfg: object) -> None:
        self.vips: tuple[Vip, ...] = (Vip(ip_address("192.0.2.75"), 32),)
        self.emit: Any = None
        self.roles: list[bool] = []

    def current(self) -> tuple[Vip, ...]:
        return self.vips

    def start(self, emit: Any) -> None:
        self.emit = emit

    def on_role(self, leading: bool) -> None:
        self.roles.append(leading)

    def reload(self, cfg: object) -> tuple[Vip, ...]:
        return self.vips

    def stop(self) -> None:
        pass


def seams(tmp_path: Path, more: str = "", **parts: Any) -> Daemon:
    cfg = load_text("node_name: n1\ninterface: eth0\nvip: {address: 192.0.2.75}\n" + more).config
    every = {"link": FakeLink, "announcer": FakeAnnouncer, "monitor": FakeMonitor, **parts}
    return Daemon(cfg, str(tmp_path / "kubevip.yaml"), tmp_path / "run", Parts(**every))


def test_any_policy_runs_the_loop_and_the_loop_logs_what_it_says(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The all-nodes policy (hold while healthy, never write) in the loop the Lease machine
    runs in: nothing in the loop names either."""
    r = seams(tmp_path, policy=build_all_nodes_policy, vip_source=FakeSource)
    assert r.attached is not None
    link: FakeLink = r.attached.link  # type: ignore[assignment]
    announcer: FakeAnnouncer = r.attached.announcer  # type: ignore[assignment]
    with caplog.at_level(logging.INFO, logger="kubevipd.machine"):
        r.dispatch(HealthChanged(True))
    assert link.up == r.vips and announcer.sent == 1  # its burst starts at once
    assert "leader: healthy: every healthy node holds the VIP" in caplog.text
    assert r.source.roles == [True]  # type: ignore[attr-defined]
    r.dispatch(HealthChanged(False))
    assert link.up == [] and r.policy.role is Role.FOLLOWER
    assert r.source.roles == [True, False]  # type: ignore[attr-defined]
    gen = r.effects.generation
    assert queued(r) == [VipAdded(), FromLink(gen, Announced(2))]  # each outcome reported


def test_a_vip_source_that_moves_the_vip_takes_the_one_path_and_cleanup_follows_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = seams(tmp_path, policy=build_all_nodes_policy, vip_source=FakeSource)
    r.source.start(r.put)
    r.dispatch(HealthChanged(True))
    moved = (Vip(ip_address("192.0.2.76"), 32),)
    r.source.emit(VipChanged(moved, "eth1"))  # type: ignore[attr-defined]
    (item,) = [e for e in queued(r) if isinstance(e, VipChanged)]
    r.dispatch(item)
    assert r.attached is not None
    link: FakeLink = r.attached.link  # type: ignore[assignment]
    assert (link.ifname, link.up) == ("eth1", list(moved))  # held there, by the leader
    state = status_file.read(r.run_dir)
    assert state is not None and (state["vip_cidr"], state["interface"]) == (
        ["192.0.2.76/32"],
        "eth1",
    )
    # A crash now: cleanup removes what the daemon held, not what the config file names.
    removed: list[tuple[str, list[Vip]]] = []

    class Left(FakeLink):
        def __init__(self, ifname: str, vips: list[Vip]) -> None:
            super().__init__(ifname, vips)
            self.up = list(vips)
            removed.append((ifname, vips))

    monkeypatch.setattr(cleanup, "VipLink", Left)
    # Not this host's kubeconfig: the lease step is not what is tested here.
    absent = SimpleNamespace(kubeconfig=tmp_path / "no-admin.conf")
    monkeypatch.setattr(cleanup, "election_spec", lambda cfg: absent)
    assert cleanup.cleanup(r.cfg, r.run_dir) == 0
    assert removed == [("eth1", list(moved))]


def next_of(r: Daemon, kind: type) -> object:
    """The next queued item of that kind, waiting for it (bounded): other threads queue too."""
    end = time.monotonic() + 5
    while time.monotonic() < end:
        item = r.q.get(timeout=max(0.0, end - time.monotonic()))
        if isinstance(item, kind):
            return item
    raise AssertionError(f"no {kind.__name__} within 5s")


def test_a_slow_announcer_runs_off_the_loop_and_reports_its_outcome(loop: Daemon) -> None:
    assert loop.attached is not None
    announcer: FakeAnnouncer = loop.attached.announcer  # type: ignore[assignment]
    announcer.slow = True  # type: ignore[misc]
    loop.attached.link.up = list(loop.vips)  # type: ignore[attr-defined]
    loop.policy.role, loop.policy.holds_vip = Role.LEADER, True
    run_batch(loop, [Announce()])
    gen = loop.effects.generation
    assert next_of(loop, FromLink) == FromLink(gen, Announced(2))
    assert announcer.threads and announcer.threads[0] != threading.current_thread().name
    announcer.fail = "cannot reach the API: timed out"
    run_batch(loop, [Announce()])
    failed = next_of(loop, FromLink)
    assert failed == FromLink(gen, AnnounceFailed("cannot reach the API: timed out"))


def test_a_vip_that_cannot_be_removed_at_exit_is_not_a_clean_exit_and_cleanup_keeps_the_lease(
    loop: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review of issue 12: exit 0 after a failed removal left systemd nothing to retry, and
    cleanup then released the lease: a follower took the VIP while it was still up here."""
    assert loop.attached is not None
    link: FakeLink = loop.attached.link  # type: ignore[assignment]
    link.up, link.refuse_remove = list(link.vips), True
    loop.policy.t = replace(loop.policy.t, renew_deadline=0.3)
    loop.reporter.force()
    loop._publish()  # the status file names the VIP
    assert loop._shutdown() is False
    assert status_file.read(loop.run_dir) is not None  # cleanup needs to know which VIP

    class Stuck(FakeLink):
        def __init__(self, ifname: str, vips: list[Vip]) -> None:
            super().__init__(ifname, vips)
            self.up, self.refuse_remove = list(vips), True

    released: list[str] = []
    monkeypatch.setattr(cleanup, "VipLink", Stuck)
    monkeypatch.setattr(cleanup, "election_spec", lambda cfg: released.append("read") or None)
    assert cleanup.cleanup(loop.cfg, loop.run_dir) == 1
    assert released == []  # it never got as far as the lease


def test_the_loop_runs_the_lease_watch_supervised(tmp_path: Path) -> None:
    """A watch that raises what it does not expect is started again, not left dead."""
    calls: list[int] = []
    again = threading.Event()

    class Watching(FakeElection):
        def watch(self, observe: Any, stopped: Any) -> None:
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("a message the watch did not expect")
            again.set()

        def run_peer_refresh(self, stopped: Any) -> None:
            pass

    kubeconfig = tmp_path / "admin.conf"
    kubeconfig.write_text("apiVersion: v1\n")
    r = seams(tmp_path, election=Watching)
    r.cfg = load_text(
        f"node_name: n1\ninterface: eth0\nvip: {{address: 192.0.2.75}}\n"
        f"election: {{kubeconfig: {kubeconfig}}}\nhealth: {{enabled: false}}\n"
    ).config
    r._connect_election()
    try:
        assert again.wait(5), calls  # started again after supervise's pause
    finally:
        r.stopping = True


class FakePolicy:
    """A policy that says what the test scripts: the loop must carry out and log any policy's
    decisions, and stop when it says STOPPED, knowing nothing else of it."""

    uses_election = False

    def __init__(self, cfg: object, start: Any) -> None:
        self.t = start.timings
        self.role, self.role_since, self.transitions = Role.STARTING, start.now, 0
        self.holds_vip, self.link_up, self.vip_text = False, True, start.vip_text
        self.announce_timing = start.announce_timing
        self.script: list[Decision] = []
        self.heard: list[object] = []

    def handle(self, event: object, now: float, wall: float) -> Decision:
        self.heard.append(event)
        if isinstance(event, Stop | VipAdded):  # VipAdded: the script's end
            self.role = Role.STOPPED
        return self.script.pop(0) if self.script else Decision()

    def next_wakeup(self) -> float | None:
        return None

    def status(self) -> Any:
        from kubevipd.policy import PolicyStatus

        return PolicyStatus("n1" if self.holds_vip else "", None, "", None)

    def set_timings(self, t: Any) -> None:
        self.t = t


def test_a_fake_policy_drives_the_loop_from_start_to_stop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    r = seams(tmp_path, policy=FakePolicy, vip_source=FakeSource)
    p: FakePolicy = r.policy  # type: ignore[assignment]
    p.script = [Decision([AddVip(), Announce()], ((logging.INFO, "scripted: take it"),))]
    link: FakeLink = r.attached.link  # type: ignore[union-attr,assignment]
    with caplog.at_level(logging.INFO, logger="kubevipd.machine"):
        assert r.run() == 0  # stops when the policy says STOPPED
    assert "scripted: take it" in caplog.text
    assert p.heard[0] is None  # the first turn: time only
    assert isinstance(p.heard[-1], VipAdded)  # the outcome of its AddVip came back as an event
    assert link.lifetimes == [None] and link.up == []  # carried out, then removed at exit


def test_a_policy_without_an_election_runs_no_lease_client_and_health_still_decides(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Review of issue 13: the loop connected the Lease client, its watch, and the watchdog's
    fence warning for any policy. A policy that does not elect (all nodes) gets none of it,
    and its health check still starts (with health.ca_file set, the kubeconfig is not read)."""

    def no_election(spec: Any, identity: str) -> Any:
        raise AssertionError("an election backend was made for a policy that does not elect")

    def no_kubeconfig(path: Path, relative_to: Path) -> str | None:
        raise AssertionError("the kubeconfig was read for a CA that health.ca_file names")

    r: Daemon | None = None

    class Health:
        def __init__(self, spec: Any, ca: str | None, report: Any) -> None:
            self.report = report

        def start(self) -> None:
            self.report(True, "200 from /livez")
            assert r is not None
            r.q.put(Stop("test"))  # after the health news: the loop acts on it, then stops

        def stop(self) -> None:
            pass

    r = seams(
        tmp_path,
        f"health: {{ca_file: {tmp_path / 'ca.crt'}}}\n",
        policy=build_all_nodes_policy,
        vip_source=FakeSource,
        election=no_election,
        health=Health,
        kubeconfig_ca=no_kubeconfig,
    )
    r.notifier.watchdog_interval = 10.0  # far too slow for any lease: no warning all the same
    link: FakeLink = r.attached.link  # type: ignore[union-attr,assignment]
    with caplog.at_level(logging.INFO):
        assert r.run() == 0
    assert link.lifetimes == [None]  # held while healthy (then removed at exit)
    assert r.election is None
    assert "kubeconfig" not in caplog.text and "watchdog" not in caplog.text.lower()


PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
ALL_NODES = (
    "announce: {mode: bgp, bgp: {local_as: 65001, router_id: 192.0.2.11,"
    " peers: [{address: 192.0.2.1, as: 65000}]}}\n"
    "election: {backend: none, kubeconfig: %s}\n"
)


class RecordedHealth:
    """A health checker that records the CA file each one was made with."""

    made: ClassVar[list[str | None]]
    started: Any = None  # called at start, e.g. to stop the loop

    def __init__(self, spec: Any, ca: str | None, report: Any) -> None:
        self.made.append(ca)

    def start(self) -> None:
        if self.started is not None:
            self.started()

    def stop(self) -> None:
        pass


@dataclass
class AllNodesLoop:
    """A loop with the all-nodes policy, its kubeconfig, and the health checkers it made."""

    daemon: Daemon
    health: type[RecordedHealth]
    kubeconfig: Path
    config: str  # its config file's text, for a reload

    def reload(self, more: str = "") -> None:
        self.daemon._apply(load_text(self.config + more).config)


@pytest.fixture
def all_nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., AllNodesLoop]:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.delenv("KUBEVIPD_KUBECONFIG_DIR", raising=False)
    kc = tmp_path / "admin.conf"

    def make(
        ca_of: Callable[[Path, Path], str | None] = lambda path, base: PEM, more: str = ""
    ) -> AllNodesLoop:
        class Health(RecordedHealth):
            made: ClassVar[list[str | None]] = []

        text = "node_name: n1\ninterface: eth0\nvip: {address: 192.0.2.75}\n" + ALL_NODES % kc
        r = seams(
            tmp_path,
            ALL_NODES % kc + more,
            policy=build_all_nodes_policy,
            vip_source=FakeSource,
            health=Health,
            kubeconfig_ca=ca_of,
        )
        return AllNodesLoop(r, Health, kc, text)

    return make


def test_with_no_election_the_health_check_waits_for_the_kubeconfigs_ca(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, all_nodes: Callable[..., AllNodesLoop]
) -> None:
    """health.ca_file defaults to the election kubeconfig's CA, in all-nodes mode too (it used
    to check against the system's CAs there: never healthy on kubeadm's certificate). Until
    kubeadm writes the kubeconfig no check runs, the status says what is awaited, and the
    loop looks again (every second at most) without a restart."""
    kc = tmp_path / "admin.conf"
    loop = all_nodes(lambda path, base: PEM if (path, base) == (kc, tmp_path) else None)
    r, Health = loop.daemon, loop.health
    Health.started = staticmethod(lambda: r.q.put(Stop("test")))
    statuses: list[str] = []
    ready = threading.Event()

    def on_ready(status: str) -> None:
        statuses.append(status)
        ready.set()

    r.notifier.ready = on_ready  # type: ignore[method-assign]
    seen: dict[str, Any] = {}

    def kubeadm() -> None:
        """Writes the kubeconfig once the daemon is up (a Stop bounds the test)."""
        ready.wait(5)
        seen.update(waited=r._health_waits_for_ca, made=list(Health.made))
        kc.write_text("written by kubeadm init")
        time.sleep(5)
        r.q.put(Stop("the test's time is up"))

    threading.Thread(target=kubeadm, daemon=True).start()
    with caplog.at_level(logging.INFO, logger="kubevipd"):
        result = r.run()
    assert seen == {"waited": True, "made": []}  # nothing checked with the system's CAs
    assert statuses == [f"starting: waiting for {kc}"]
    ca = r.run_dir / "apiserver-ca.crt"
    assert result == 0 and Health.made == [str(ca)] and ca.read_text() == PEM
    assert "the test's time is up" not in caplog.text
    assert caplog.text.count(f"waiting for kubeconfig {kc} to exist") == 1
    assert f"health check trusts the CA of kubeconfig {kc}" in caplog.text


def test_with_no_election_a_reload_restarts_the_check_with_the_ca_read_at_start(
    tmp_path: Path, all_nodes: Callable[..., AllNodesLoop]
) -> None:
    """Review: a reload that changed health stopped the check and read the kubeconfig again;
    caught missing or mid-write (kubeadm rewrites it), no check ran while the policy still
    believed the last verdict, healthy: the VIP announced unchecked. The CA is read once, as
    the election client reads its kubeconfig once; health.ca_file set on reload wins."""
    reads: list[Path] = []

    def ca_of(path: Path, relative_to: Path) -> str:
        reads.append(path)
        return PEM

    loop = all_nodes(ca_of)
    r, Health, kc = loop.daemon, loop.health, loop.kubeconfig
    kc.write_text("written by kubeadm init")
    r._start_health()
    ca = str(r.run_dir / "apiserver-ca.crt")
    assert Health.made == [ca] and reads == [kc]
    kc.unlink()  # kubeadm rewriting it
    loop.reload("health: {failure_threshold: 5}\n")
    assert Health.made == [ca, ca] and reads == [kc] and not r._health_waits_for_ca
    loop.reload(f"health: {{ca_file: {tmp_path / 'ca.crt'}}}\n")
    assert Health.made == [ca, ca, None]  # the checker takes health.ca_file from its spec
    assert queued(r) == []


def test_with_no_election_a_reload_that_drops_ca_file_tells_the_policy_it_is_not_healthy(
    tmp_path: Path, all_nodes: Callable[..., AllNodesLoop]
) -> None:
    """Review: started with health.ca_file, a reload that removed it while the kubeconfig was
    missing stopped the check and left the policy with its last verdict, healthy: the VIP held
    and announced, unchecked. Waiting for the CA is not healthy (said once, not every turn)."""
    loop = all_nodes(more=f"health: {{ca_file: {tmp_path / 'ca.crt'}}}\n")
    r, Health, kc = loop.daemon, loop.health, loop.kubeconfig
    r._start_health()
    r.dispatch(HealthChanged(True, "HTTP 200"))
    assert r.policy.holds_vip and Health.made == [None]
    loop.reload()  # health.ca_file gone; the kubeconfig is not there
    assert r._health_waits_for_ca and Health.made == [None]
    for item in queued(r):
        r.dispatch(item)
    assert not r.policy.holds_vip and r.policy.role is Role.FOLLOWER
    r._start_health()  # the loop's next turn, still waiting: nothing more to say
    assert queued(r) == [] and r._health_waits_for_ca
    kc.write_text("written by kubeadm init")
    r._start_health()
    assert Health.made == [None, str(r.run_dir / "apiserver-ca.crt")]


def test_a_vip_moved_while_following_leaves_no_stray_copy_on_the_old_interface(
    loop: Daemon,
) -> None:
    """Review of issue 13: a follower moved the VIP without removing it from the old
    interface; a stray copy there (a removal refused before) stayed, and no one watched it."""
    assert loop.attached is not None and not loop.policy.holds_vip
    old: FakeLink = loop.attached.link  # type: ignore[assignment]
    old.up = list(old.vips)  # a stray copy, e.g. left by a removal netlink refused earlier
    old.refuse_remove = True
    moved = (Vip(ip_address("192.0.2.76"), 32),)
    loop.dispatch(VipChanged(moved, "eth1"))
    assert loop.attached.link is old and loop.vips == old.vips  # not moved while it is there
    old.refuse_remove = False
    loop.dispatch(VipChanged(moved, "eth1"))
    assert old.up == []
    new: FakeLink = loop.attached.link  # type: ignore[assignment]
    assert (new.ifname, new.up, loop.vips) == ("eth1", [], list(moved))  # a follower: not held


def test_a_vip_moved_on_the_same_interface_keeps_its_announcer_and_tells_it(
    loop: Daemon,
) -> None:
    """Review of issue 13: Announcer.set_vips was never called; every move built a new
    announcer (for BGP: a new speaker, every session dropped). Same interface: kept and told;
    another interface: a new one, and the old one closed."""
    assert loop.attached is not None
    first: FakeAnnouncer = loop.attached.announcer  # type: ignore[assignment]
    moved = (Vip(ip_address("192.0.2.76"), 32),)
    loop.dispatch(VipChanged(moved, "eth0"))
    assert loop.attached.announcer is first and list(first.vips) == list(moved)
    assert not first.closed
    loop.dispatch(VipChanged(moved, "eth1"))
    assert loop.attached.announcer is not first and first.closed


def test_a_vip_known_only_later_is_held_as_nothing_then_put_on_when_the_source_says(
    tmp_path: Path,
) -> None:
    """Ready for DHCP: a source whose current() is None at start (the address comes once this
    node leads) no longer stops the daemon. Leading before it is known adds and announces
    nothing, and asks for no restore; its VipChanged then takes the one path."""

    class Later(FakeSource):
        def current(self) -> tuple[Vip, ...] | None:  # type: ignore[override]
            return None

    r = seams(tmp_path, policy=build_all_nodes_policy, vip_source=Later)
    assert r.vips == [] and "not known yet" in r._vip_text()
    r.dispatch(HealthChanged(True))
    assert r.source.roles == [True]  # type: ignore[attr-defined]
    announcer: FakeAnnouncer = r.attached.announcer  # type: ignore[union-attr,assignment]
    assert announcer.sent == 0
    assert [type(e) for e in queued(r)] == [VipAdded]  # no VipMissing: nothing was missing
    got = (Vip(ip_address("192.0.2.80"), 32),)
    r.dispatch(VipChanged(got, "eth0"))
    link: FakeLink = r.attached.link  # type: ignore[union-attr,assignment]
    assert link.up == list(got) and announcer.sent == 1 and list(announcer.vips) == list(got)


def test_a_vip_still_held_at_exit_is_withdrawn_then_removed(loop: Daemon) -> None:
    """Review of issue 13: the exit path removed the VIP but never told the announcer (a BGP
    route would outlive the daemon). Issue 14: the route goes first, while the address still
    answers the traffic it brings."""
    assert loop.attached is not None
    announcer: FakeAnnouncer = loop.attached.announcer  # type: ignore[assignment]
    link: FakeLink = loop.attached.link  # type: ignore[assignment]
    link.up = list(loop.vips)
    loop.policy.role, loop.policy.holds_vip = Role.LEADER, True
    assert loop._shutdown() is True
    assert announcer.withdrawn == 1 and announcer.closed
    assert announcer.up_at_withdraw == [len(loop.vips)] and link.up == []


def test_a_removal_withdraws_first_and_a_release_after_it_goes_out_with_the_vip_off(
    loop: Daemon,
) -> None:
    """The step-down batch (RemoveVip, then the release Write): withdraw, remove, release."""
    assert loop.attached is not None
    announcer: FakeAnnouncer = loop.attached.announcer  # type: ignore[assignment]
    link: FakeLink = loop.attached.link  # type: ignore[assignment]
    link.up = list(loop.vips)
    seen: list[tuple[str, int]] = []  # each write submitted, with the VIP addresses up then
    loop.effects.writer.submit = lambda fn, election, a, sent: seen.append((a.op, len(link.up)))  # type: ignore[method-assign, assignment]
    loop.effects.carry_out([RemoveVip(), Write("release", LeaderRecord(holder=""), 1.0)])
    assert announcer.up_at_withdraw == [len(loop.vips)] and link.up == []
    assert seen == [("release", 0)]


def test_an_announcer_that_raises_what_it_should_not_is_a_failed_announcement(
    loop: Daemon,
) -> None:
    """On the loop's own thread an unexpected exception used to end the daemon over an
    announcement; it is reported as AnnounceFailed like any other failure."""
    assert loop.attached is not None
    announcer: FakeAnnouncer = loop.attached.announcer  # type: ignore[assignment]

    def broken(term: int | None = None) -> int:
        raise RuntimeError("scapy: no such device")

    announcer.announce = broken  # type: ignore[method-assign]
    loop.attached.link.up = list(loop.vips)  # type: ignore[attr-defined]
    loop.policy.role, loop.policy.holds_vip = Role.LEADER, True
    run_batch(loop, [Announce()])
    (out,) = [e for e in queued(loop) if isinstance(e, FromLink)]
    assert isinstance(out.event, AnnounceFailed) and "RuntimeError" in out.event.error


def test_a_reload_to_a_lease_too_short_for_the_watchdog_says_so(
    loop: Daemon, caplog: pytest.LogCaptureFixture
) -> None:
    """Review of issue 13: the watchdog's fence was checked at start only; a reload to a
    shorter lease could leave a frozen leader unfenced without a word."""
    loop.notifier.watchdog_interval = 2.0
    Path(loop.config_path).write_text(
        "node_name: n1\ninterface: eth0\nvip: {address: 192.0.2.75}\n"
        "election: {lease_duration: 3s, renew_deadline: 2s, retry_period: 500ms}\n"
    )
    with caplog.at_level(logging.WARNING):
        loop._reload()
    assert "too short for systemd's watchdog" in caplog.text
    assert loop.policy.t.lease_duration == 3.0


# ------------------------------------------------- the second review of issue 13


def test_no_carrier_at_start_is_news_the_policy_hears(tmp_path: Path) -> None:
    """The loop used to set policy.link_up itself: the Lease machine never started its grace,
    and a leader on a dead link kept the VIP for good. Now the policy hears it as an event."""

    class Dead(FakeLink):
        def carrier(self) -> bool:
            return False

    r = seams(tmp_path, policy=FakePolicy, vip_source=FakeSource, link=Dead)
    p: FakePolicy = r.policy  # type: ignore[assignment]
    r.q.put(Stop("test"))
    assert r.run() == 0
    assert p.heard[:2] == [None, LinkChanged(False)]


def test_a_slow_announcer_hears_of_a_move_after_the_old_vips_withdrawal(loop: Daemon) -> None:
    """Review: set_vips ran on the loop while the worker could still be in a call, and a
    withdrawal queued for the old VIP would then withdraw the new one."""
    assert loop.attached is not None
    announcer: FakeAnnouncer = loop.attached.announcer  # type: ignore[assignment]
    announcer.slow = True  # type: ignore[misc]
    calls: list[str] = []
    announcer.withdraw = lambda: calls.append(f"withdraw {announcer.vips[0]}")  # type: ignore[method-assign]
    announcer.set_vips = lambda vips: calls.append(f"set_vips {vips[0]}")  # type: ignore[method-assign, assignment]
    loop.attached.link.up = list(loop.vips)  # type: ignore[attr-defined]
    loop.policy.role, loop.policy.holds_vip = Role.LEADER, True
    loop.dispatch(VipChanged((Vip(ip_address("192.0.2.76"), 32),), "eth0"))
    loop.effects.slow.close(5.0)  # drained, in order
    assert calls[:2] == ["withdraw 192.0.2.75", "set_vips 192.0.2.76"]


def test_an_unchanged_answer_from_a_source_is_no_blip(loop: Daemon) -> None:
    assert loop.attached is not None
    link: FakeLink = loop.attached.link  # type: ignore[assignment]
    link.up = list(loop.vips)
    loop.policy.role, loop.policy.holds_vip = Role.LEADER, True
    loop.dispatch(VipChanged(tuple(loop.vips), "eth0"))
    assert loop.attached.link is link and link.up == loop.vips


def test_a_source_gives_up_leading_only_once_the_vip_is_off(tmp_path: Path) -> None:
    """Review: on_role(False) came even when netlink refused the removal; a DHCP source would
    have given back an address still up here."""
    r = seams(tmp_path, policy=build_all_nodes_policy, vip_source=FakeSource)
    link: FakeLink = r.attached.link  # type: ignore[union-attr,assignment]
    r.dispatch(HealthChanged(True))
    link.refuse_remove = True
    r.dispatch(HealthChanged(False))
    assert link.up == r.vips and r.source.roles == [True]  # type: ignore[attr-defined]
    link.refuse_remove = False
    for _ in range(5):  # the policy retries the removal it was refused (bounded)
        stray = [e for e in queued(r) if isinstance(e, VipStray)]
        r.dispatch(stray[0] if stray else None)
        if not link.up:
            break
    assert link.up == [] and r.source.roles == [True, False]  # type: ignore[attr-defined]


def test_an_add_dropped_after_a_failure_is_answered(loop: Daemon) -> None:
    """Review: the policy contract promises an answer to every AddVip; a dropped one got none."""
    assert loop.attached is not None
    loop.attached.link.refuse_remove = True  # type: ignore[attr-defined]
    run_batch(loop, [RemoveVip(), AddVip()])
    assert VipAddFailed("not done: RemoveVip failed") in queued(loop)


def test_a_failed_withdrawal_is_logged_not_sent_to_the_policy_as_an_announcement(
    loop: Daemon, caplog: pytest.LogCaptureFixture
) -> None:
    assert loop.attached is not None
    announcer: FakeAnnouncer = loop.attached.announcer  # type: ignore[assignment]

    def refused() -> None:
        raise AnnounceError("BGP peer 192.0.2.1 is down")

    announcer.withdraw = refused  # type: ignore[method-assign]
    run_batch(loop, [RemoveVip()])
    assert not [e for e in queued(loop) if isinstance(e, FromLink)]
    assert "withdrawal failed: BGP peer 192.0.2.1 is down" in caplog.text


def test_a_hung_slow_announcer_does_not_grow_a_backlog(loop: Daemon) -> None:
    assert loop.attached is not None
    announcer: FakeAnnouncer = loop.attached.announcer  # type: ignore[assignment]
    announcer.slow = True  # type: ignore[misc]
    release, started = threading.Event(), threading.Event()
    count: list[int] = []

    def hung(term: int | None = None) -> int:
        count.append(1)
        started.set()
        release.wait(5)
        return 2

    announcer.announce = hung  # type: ignore[method-assign]
    loop.attached.link.up = list(loop.vips)  # type: ignore[attr-defined]
    loop.policy.role, loop.policy.holds_vip = Role.LEADER, True
    run_batch(loop, [Announce()])
    assert started.wait(5)
    for _ in range(5):
        run_batch(loop, [Announce()])  # the refresh comes due again and again meanwhile
    release.set()
    loop.effects.slow.close(5.0)
    assert len(count) == 2  # the hung one, and one more: not six


def test_with_no_election_a_ca_that_cannot_be_kept_is_said_once_and_waited_for(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, all_nodes: Callable[..., AllNodesLoop]
) -> None:
    """The kubeconfig is read once, whatever the run dir does: a write that fails is tried
    again each turn, with one error line, and the status names it (third review: the
    kubeconfig was read again each turn, with an INFO line each second)."""
    reads: list[Path] = []
    loop = all_nodes(lambda path, base: reads.append(path) or PEM)
    r, Health = loop.daemon, loop.health
    loop.kubeconfig.write_text("written by kubeadm init")
    r.run_dir = tmp_path / "not-a-dir"
    r.run_dir.write_text("")
    with caplog.at_level(logging.INFO, logger="kubevipd"):
        r._start_health()
        r._start_health()
    assert Health.made == [] and r._health_waits_for_ca and len(reads) == 1
    assert caplog.text.count("cannot keep the apiserver's CA for the health check") == 1
    assert caplog.text.count("health check trusts the CA") == 1
    assert r.health_text.startswith("cannot keep the apiserver's CA")
    assert [type(e) for e in queued(r)] == [HealthChanged]  # not healthy, said once
    r.run_dir.unlink()
    r._start_health()
    assert Health.made == [str(r.run_dir / "apiserver-ca.crt")] and len(reads) == 1


def test_a_health_checker_that_cannot_be_made_is_waited_for_not_a_crash(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, all_nodes: Callable[..., AllNodesLoop]
) -> None:
    """Third review: the checker loads its CA when it is made; a file ssl refused (or gone
    since it was written) raised out of the loop and ended the daemon, at start in a
    restart loop. It is said once, the node is not healthy, and each turn tries again."""
    loop = all_nodes()
    r = loop.daemon
    loop.kubeconfig.write_text("written by kubeadm init")
    made: list[str | None] = []

    def health(spec: Any, ca: str | None, report: Any) -> RecordedHealth:
        made.append(ca)
        if len(made) < 3:
            raise ssl.SSLError(9, "[X509] PEM lib (_ssl.c:3917)")
        return loop.health(spec, ca, report)

    r.parts = replace(r.parts, health=health)
    with caplog.at_level(logging.ERROR, logger="kubevipd"):
        r._start_health()
        r._start_health()
    assert r.health is None and r._health_waits_for_ca
    assert caplog.text.count("cannot load the health check's CA") == 1
    assert [type(e) for e in queued(r)] == [HealthChanged]
    r._start_health()
    assert r.health is not None and not r._health_waits_for_ca
    ca = str(r.run_dir / "apiserver-ca.crt")
    assert made == [ca, ca, ca]


def test_a_verdict_of_a_health_checker_stopped_since_is_dropped(
    all_nodes: Callable[..., AllNodesLoop],
) -> None:
    """Third review: a check under way when a reload stopped its checker could report after
    the wait's 'not healthy' and leave the policy holding, with no check running."""
    loop = all_nodes()
    r = loop.daemon
    loop.kubeconfig.write_text("written by kubeadm init")
    reports: list[Any] = []

    def health(spec: Any, ca: str | None, report: Any) -> RecordedHealth:
        reports.append(report)
        return loop.health(spec, ca, report)

    r.parts = replace(r.parts, health=health)
    r._start_health()
    r._start_health()  # a reload
    reports[0](True, "HTTP 200, late")
    assert queued(r) == []
    reports[1](True, "HTTP 200")
    assert queued(r) == [HealthChanged(True, "HTTP 200")]
