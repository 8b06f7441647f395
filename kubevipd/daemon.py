"""``kubevipd run``: wires the backends to the state machine and runs the one main loop.

Threads only gather news (lease watch, netlink monitor, health checks, lease writes) and put it on
one queue; the main loop feeds it to the Machine (kubevipd/machine.py) and carries out its actions.
Nothing here decides anything, and the daemon never sees a backend's internals.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar

from kubevipd import status as status_file
from kubevipd.announce.arp import ArpAnnouncer
from kubevipd.config import ConfigError, load
from kubevipd.config.model import Config, ElectionSpec, HealthSpec
from kubevipd.election.base import WriteResult
from kubevipd.election.lease import ElectionSetupError, LeaseElection
from kubevipd.health import HealthChecker
from kubevipd.machine import (
    Action,
    AddVip,
    Announce,
    Event,
    HealthChanged,
    LinkChanged,
    Machine,
    Observed,
    RemoveVip,
    Role,
    Stop,
    Timings,
    VipAddFailed,
    VipMissing,
    VipStray,
    Write,
    WriteDone,
)
from kubevipd.metrics import Metrics, MetricsError
from kubevipd.notify import Notifier, watchdog_fence_warning
from kubevipd.resolve import (
    RunError,
    check_server_is_not_the_vip,
    check_supported,
    election_spec,
    resolve_identity,
    resolve_interface,
    resolve_vips,
)
from kubevipd.supervise import supervise
from kubevipd.vip.netlink import InterfaceError, Monitor, Vip, VipLink

log = logging.getLogger("kubevipd")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2


INTERFACE_WAIT_S = 20.0  # within the unit's TimeoutStartSec=30s
METRICS_RETRY_S = 5.0  # between two tries to listen on metrics.listen


class InterfaceMissing(RunError):
    """The interface is not there (yet): transient at start, so exit status 1, not 2."""


@dataclass(frozen=True)
class Reload:
    pass


@dataclass(frozen=True)
class FromLink:
    """News from one interface's monitor; dropped once a reload has replaced that monitor."""

    generation: int
    event: Event


Item = Event | Reload | FromLink


# ------------------------------------------------------------------ logging


class _JournalFormatter(logging.Formatter):
    """``<N>message``: journald reads the syslog priority from the prefix."""

    PRIO: ClassVar[dict[int, int]] = {
        logging.DEBUG: 7,
        logging.INFO: 6,
        logging.WARNING: 4,
        logging.ERROR: 3,
    }

    def format(self, record: logging.LogRecord) -> str:
        """Every line gets the prefix: journald splits on newlines, so a traceback's lines
        would otherwise land at the default priority."""
        prio = self.PRIO.get(record.levelno, 2 if record.levelno > logging.ERROR else 6)
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines())


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s.%(msecs)03d %(levelname)s %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("urllib3", "kubernetes", "scapy"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# ------------------------------------------------------------------ resolution


def timings(cfg: Config) -> Timings:
    e = cfg.election
    return Timings(
        lease_duration=e.lease_duration.seconds,
        renew_deadline=e.renew_deadline.seconds,
        retry_period=e.retry_period.seconds,
        link_down_grace=cfg.health.link_down_grace.seconds,
        announce_refresh=cfg.announce.arp.refresh.seconds if cfg.announce.arp else 3.0,
        health_gate=cfg.health.enabled,
    )


# ------------------------------------------------------------------ the main loop


@dataclass(frozen=True)
class Parts:
    """What the loop builds to reach the world, each by an explicit factory: the real ones by
    default, fakes in tests/unit/test_loop.py (no namespaces, no apiserver)."""

    link: Callable[[str, list[Vip]], VipLink] = VipLink
    announcer: Callable[[str, str, list[Vip]], ArpAnnouncer] = ArpAnnouncer
    monitor: Callable[..., Monitor] = Monitor
    election: Callable[[ElectionSpec, str], LeaseElection] = LeaseElection
    health: Callable[[HealthSpec, str | None, Callable[[bool, str], None]], HealthChecker] = (
        HealthChecker
    )


class Daemon:
    def __init__(
        self, cfg: Config, config_path: str, run_dir: Path, parts: Parts | None = None
    ) -> None:
        check_supported(cfg)
        self.parts = parts or Parts()
        self.cfg = cfg
        self.config_path = config_path
        self.run_dir = run_dir
        self.q: queue.SimpleQueue[Item] = queue.SimpleQueue()
        self.identity = resolve_identity(cfg)
        self.vips = resolve_vips(cfg)
        check_server_is_not_the_vip(cfg, self.vips)
        self.ifname = cfg.interface or ""  # resolved in _wait_for_interface
        self.notifier = Notifier()
        self.metrics = Metrics()
        self.link: VipLink | None = None
        self.announcer: ArpAnnouncer | None = None
        self.monitor: Monitor | None = None
        self.election: LeaseElection | None = None
        self.health: HealthChecker | None = None
        self.watch_thread: threading.Thread | None = None
        # Up to three at once: a release goes out beside a renewal hung on a dying apiserver.
        self.writer = ThreadPoolExecutor(max_workers=3, thread_name_prefix="lease-write")
        self.stopping = False
        self._metrics_stop = threading.Event()  # set at shutdown: the metrics retry ends
        self.health_text = "disabled" if not cfg.health.enabled else "unknown"
        self._published: tuple[Any, ...] = ()
        self._published_at = 0.0
        self._counted_transitions = 0
        self._waiting_for_kubeconfig = False
        self._kubeconfig_error = ""
        self._waiting_for_interface = False
        self.link_generation = 0
        self._wait_for_interface()
        now = time.monotonic()
        self.machine = Machine(
            identity=self.identity,
            t=timings(cfg),
            now=now,
            wall=time.time(),
            vip_at_start=bool(self.link and self.link.present()),
            inherited_deadline=status_file.held_until(run_dir),
            lease_name=cfg.election.lease_name,
            vip_text=self._vip_text(),
        )
        assert self.link is not None
        self.machine.link_up = self.link.carrier()

    # setup ------------------------------------------------------------------

    def _vip_text(self) -> str:
        return f"VIP {', '.join(str(v) for v in self.vips)} on {self.ifname}"

    def _wait_for_interface(self) -> None:
        """At boot the interface may come up after us (a bond, a VLAN, a late driver): wait for
        it, within systemd's start timeout, then exit 1 so that systemd tries again. A missing
        interface can heal by itself, so it is never exit status 2."""
        wait = float(os.environ.get("KUBEVIPD_INTERFACE_WAIT", INTERFACE_WAIT_S))  # tests: 0.5
        end = time.monotonic() + wait
        while True:
            try:
                try:
                    # No interface set: the default route's, which may come up after us too.
                    self.ifname = resolve_interface(self.cfg)
                except RunError as e:
                    raise InterfaceMissing(str(e)) from None
                self._attach_link()
                return
            except InterfaceMissing as e:
                if time.monotonic() >= end:
                    raise
                if not self._waiting_for_interface:
                    log.warning("%s; waiting up to %gs for it", e, wait)
                    self._waiting_for_interface = True
                time.sleep(0.5)

    def _attach_link(self) -> None:
        try:
            self.link = self.parts.link(self.ifname, self.vips)
        except InterfaceError as e:
            raise InterfaceMissing(str(e)) from None
        self.announcer = self.parts.announcer(self.ifname, self.link.mac(), self.vips)
        self.link_generation += 1
        gen = self.link_generation
        self.monitor = self.parts.monitor(
            self.link.index,
            self.vips,
            on_link=lambda up: self.q.put(FromLink(gen, LinkChanged(up))),
            on_vip_gone=lambda: self.q.put(FromLink(gen, VipMissing())),
        )
        self.monitor.start()

    def _detach_link(self) -> None:
        if self.monitor is not None:
            self.monitor.stop()
        if self.announcer is not None:
            self.announcer.close()
        if self.link is not None:
            self.link.close()
        self.monitor = self.announcer = self.link = None

    def _connect_election(self) -> None:
        """Create the Lease client once the kubeconfig exists (kubeadm init writes it)."""
        spec = election_spec(self.cfg)
        if not spec.kubeconfig.exists():
            if not self._waiting_for_kubeconfig:
                wanted = self.cfg.election.kubeconfig
                copy = (
                    f"; kubevipd-kubeconfig.service copies it to {spec.kubeconfig}"
                    if spec.kubeconfig != wanted
                    else ""
                )
                log.warning(
                    "waiting for kubeconfig %s to exist (kubeadm init writes it%s)", wanted, copy
                )
                self._waiting_for_kubeconfig = True
            return
        try:
            self.election = self.parts.election(spec, self.identity)
        except ElectionSetupError as e:
            # Caught mid-write, or not usable yet (kubeadm rewrites it): wait, as for a missing
            # one; the loop tries again every second. Logged once per distinct reason.
            if str(e) != self._kubeconfig_error:
                log.warning("%s; waiting for it to become usable", e)
                self._kubeconfig_error = str(e)
            return
        self._kubeconfig_error = ""
        log.info(
            "kubevipd on node %s: %s, lease %s (%s/%s/%s)",
            self.identity,
            self._vip_text(),
            self.election.describe(),
            spec.lease_duration,
            spec.renew_deadline,
            spec.retry_period,
        )
        election = self.election

        def stopped() -> bool:
            return self.stopping

        def watch() -> None:
            election.watch(lambda r: self.q.put(Observed(r)), stopped)

        self.watch_thread = supervise("lease-watch", watch, stopped)
        # The other apiservers, where a release goes when ours is down (election/peers.py).
        supervise("apiservers", lambda: election.run_peer_refresh(stopped), stopped)
        self._start_health()

    def _start_health(self) -> None:
        if self.health is not None:
            self.health.stop()
            self.health = None
        if not self.cfg.health.enabled:
            self.health_text = "disabled"
            return
        ca = self.election.ca_file if self.election else None
        self.health = self.parts.health(self.cfg.health, ca, self._on_health)
        self.health.start()

    def _on_health(self, healthy: bool, reason: str) -> None:
        self.health_text = f"{'healthy' if healthy else 'unhealthy'} ({reason})"
        self.q.put(HealthChanged(healthy, reason))

    # the loop ---------------------------------------------------------------

    def run(self, early_signals: list[int] | None = None) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_stop_signal)
        signal.signal(signal.SIGHUP, lambda *_: self.q.put(Reload()))
        for signum in early_signals or []:
            self.q.put(Stop(signal.Signals(signum).name))
        if self.cfg.metrics is not None:
            self._serve_metrics(self.cfg.metrics.listen)
        fence = watchdog_fence_warning(
            self.notifier.watchdog_interval,
            self.machine.t.lease_duration,
            self.machine.t.retry_period,
        )
        if fence:
            log.warning("%s", fence)
        self._connect_election()
        self.notifier.ready(self._status_line())
        stop_by: float | None = None
        try:
            self._step(None)
            while self.machine.role is not Role.STOPPED:
                now = time.monotonic()
                if self.election is None and not self.stopping:
                    self._connect_election()
                wake = self.machine.next_wakeup()
                timeout = self.notifier.max_sleep()  # at most 1s: also retries the kubeconfig
                if wake is not None:
                    timeout = min(timeout, max(0.0, wake - now))
                if stop_by is not None:
                    timeout = min(timeout, max(0.0, stop_by - now))
                try:
                    item: Item | None = self.q.get(timeout=timeout)
                except queue.Empty:
                    item = None
                if isinstance(item, Reload):
                    self._reload()
                    continue
                if isinstance(item, FromLink):
                    if item.generation != self.link_generation:
                        continue  # about the interface or VIP a reload replaced
                    item = item.event
                if isinstance(item, Stop) and stop_by is None:
                    self.stopping = True
                    self.notifier.stopping("stopping: handing the VIP over")
                    stop_by = time.monotonic() + self.machine.t.api_timeout * 2 + 1.0
                self._step(item)
                self.notifier.watchdog(time.monotonic())
                if stop_by is not None and time.monotonic() >= stop_by:
                    log.warning("hand-over did not finish in time; removing the VIP and exiting")
                    break
            return EXIT_OK
        finally:
            self._shutdown()

    def _serve_metrics(self, listen: str) -> None:
        """Metrics are not worth a VIP: a port still taken (the old daemon's socket, another
        exporter) or an address not up yet can heal, so the daemon runs and tries again every
        few seconds instead of exiting."""
        try:
            self.metrics.serve(listen)
            return
        except MetricsError as e:
            log.warning(
                "%s; the VIP is served meanwhile, trying again every %gs", e, METRICS_RETRY_S
            )

        def retry() -> None:
            while not self.stopping:
                if self._metrics_stop.wait(METRICS_RETRY_S) or self.stopping:
                    return
                try:
                    self.metrics.serve(listen)
                except MetricsError as e:
                    log.debug("%s", e)
                    continue
                log.info("serving metrics on %s", listen)
                return

        supervise("metrics", retry, lambda: self.stopping or self.metrics.serving)

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        self.q.put(Stop(signal.Signals(signum).name))

    def _step(self, item: Event | None) -> None:
        actions = self.machine.handle(item, time.monotonic(), time.time())
        for i, a in enumerate(actions):
            if not self._do(a):
                self._drop(actions[i + 1 :], f"{type(a).__name__} failed")
                break
        self._publish()

    def _drop(self, rest: list[Action], why: str) -> None:
        """The rest of a batch after a failed action is not carried out: no announcement of a
        VIP netlink refused, no release while a VIP we could not remove may still be up. The
        machine still hears of every write it expects an answer to."""
        for a in rest:
            log.debug("not done, %s: %s", why, type(a).__name__)
            if isinstance(a, Write):
                failed = WriteResult(ok=False, error=f"not sent: {why}", error_kind="other")
                self.q.put(WriteDone(a.op, failed, time.monotonic()))

    def _do(self, a: Action) -> bool:
        """Carry out one action; False when it failed (the rest of the batch is dropped)."""
        assert self.link is not None and self.announcer is not None
        if isinstance(a, Write):
            election = self.election
            if election is None:  # cannot happen (no news without a client), yet must answer
                failed = WriteResult(ok=False, error="no Lease client yet", error_kind="other")
                self.q.put(WriteDone(a.op, failed, time.monotonic()))
                return False
            sent_at = time.monotonic()
            self.writer.submit(self._write, election, a, sent_at)
        elif isinstance(a, AddVip):
            try:
                self.link.add()
            except InterfaceError as e:
                self._vip_add_failed(e)
                return False
        elif isinstance(a, RemoveVip):
            try:
                self.link.remove()
            except InterfaceError as e:
                log.error("%s", e)
                self.q.put(VipStray(f"could not remove it: {e}", failed=True))
                return False
        elif isinstance(a, Announce):
            # A backstop for a netlink monitor that went deaf: announce only what is held.
            if not self._vip_on_interface():
                log.warning("the VIP is not on %s at announcement time; restoring it", self.ifname)
                self.q.put(FromLink(self.link_generation, VipMissing()))
                return False
            self.metrics.announcements.inc(self.announcer.announce())
        return True

    def _vip_add_failed(self, e: InterfaceError) -> None:
        """Netlink refused the VIP: the machine hands the lease over (VipAddFailed)."""
        log.error("%s", e)
        self.metrics.vip_add_failures.inc()
        self.q.put(VipAddFailed(str(e)))

    def _write(self, election: LeaseElection, a: Write, sent_at: float) -> None:
        try:
            result = election.write(a.op, a.record, a.timeout)
        except Exception as e:  # a write must always report back
            log.debug("lease write raised", exc_info=True)
            result = WriteResult(ok=False, error=str(e) or type(e).__name__, error_kind="other")
        self.metrics.renew_latency.labels(a.op).observe(time.monotonic() - sent_at)
        if result.error_kind is not None:
            self.metrics.api_errors.labels(result.error_kind).inc()
        self.q.put(WriteDone(a.op, result, sent_at))

    # reporting --------------------------------------------------------------

    def _status_line(self) -> str:
        m = self.machine
        holder = m.observed.holder if m.observed else ""
        if m.role is Role.LEADER:
            return f"leader of {self.cfg.election.lease_name}, {self._vip_text()}"
        if m.role is Role.FOLLOWER:
            return f"follower; leader is {holder or 'nobody'}"
        if self.election is None:
            return f"starting: waiting for {self.cfg.election.kubeconfig}"
        return str(m.role.value)

    def _publish(self) -> None:
        m = self.machine
        holder = m.observed.holder if m.observed else ""
        # The deadline is in the key: a restart after a crash may keep the VIP only until the
        # deadline written here (status.held_until), so it must never lag behind a renewal
        # that shortened it; a renewal that lengthened it may lag (that is only conservative).
        key = (m.role, holder, m.holds_vip, m.transitions, m.deadline)
        now = time.monotonic()
        if key == self._published and now - self._published_at < 1.0:
            return
        if key[:3] != self._published[:3]:
            self.notifier.status(self._status_line())
        if m.transitions > self._counted_transitions:
            self.metrics.transitions.labels(m.role.value).inc(
                m.transitions - self._counted_transitions
            )
            self._counted_transitions = m.transitions
        self._published, self._published_at = key, now
        self.metrics.leader.set(1 if m.role is Role.LEADER else 0)
        on_interface = self._vips_on_interface()
        present = on_interface == len(self.vips)
        self.metrics.vip_present.set(1 if present else 0)
        if on_interface and not m.holds_vip:
            # A backstop: a follower must not keep a VIP, whoever put it there.
            self.q.put(VipStray(f"netlink shows {on_interface} of its addresses on {self.ifname}"))
        wall_now = time.time()
        state = {
            "pid": os.getpid(),
            "node": self.identity,
            "role": m.role.value,
            "holder": holder,
            "vip": [str(v) for v in self.vips],
            "interface": self.ifname,
            "vip_present": present,  # what netlink shows, not what the machine believes
            "lease": f"{self.cfg.election.namespace}/{self.cfg.election.lease_name}",
            "role_since": wall_now - (now - m.role_since),
            "last_renew": wall_now - (now - m.last_renew_ok) if m.last_renew_ok else None,
            "transitions": m.transitions,
            "health": self.health_text,
            "last_error": m.last_error,
            "updated": wall_now,
            **status_file.deadline_fields(
                m.deadline if m.role is Role.LEADER and m.holds_vip else None
            ),
        }
        try:
            status_file.write(self.run_dir, state)
        except OSError as e:
            log.debug("cannot write status to %s: %s", self.run_dir, e)

    def _vip_on_interface(self) -> bool:
        """Every VIP address is on the interface now, as netlink says."""
        return self._vips_on_interface() == len(self.vips)

    def _vips_on_interface(self) -> int:
        """How many of the VIP's addresses are on the interface now, as netlink says."""
        if self.link is None:
            return 0
        try:
            return len(self.link.present())
        except (InterfaceError, OSError) as e:
            log.debug("cannot read the addresses of %s: %s", self.ifname, e)
            return 0

    # reload -----------------------------------------------------------------

    def _reload(self) -> None:
        self.notifier.reloading()
        log.info("reloading %s", self.config_path)
        try:
            new = load(self.config_path).config
        except ConfigError as e:
            for d in e.diagnostics:
                log.error("%s", d)
            log.error("the new config is invalid; keeping the running one")
            self.notifier.ready(self._status_line())
            return
        old = self.cfg
        # The timings apply from the next decision (the leader's from its next renewal, which
        # also writes the new lease duration for the followers); who we are and which Lease we
        # use through which kubeconfig need a new connection: that is a restart (a hand-over).
        kept = replace(
            old.election,
            lease_duration=new.election.lease_duration,
            renew_deadline=new.election.renew_deadline,
            retry_period=new.election.retry_period,
        )
        if new.election != kept or new.node_name != old.node_name:
            log.warning(
                "node_name or the election's lease, namespace, kubeconfig or server changed: "
                "they take effect after a restart (systemctl restart kubevipd hands over)"
            )
            new = replace(new, election=kept, node_name=old.node_name)
        try:
            check_supported(new)
            new_vips = resolve_vips(new)
            new_ifname = resolve_interface(new)  # e.g. no default route just now
        except RunError as e:
            log.error("%s; keeping the running config", e)
            self.notifier.ready(self._status_line())
            return
        if new_vips != self.vips or new_ifname != self.ifname:
            self._move_vip(new_vips, new_ifname)
        self.cfg = new
        self.machine.set_timings(timings(new))
        if new.health != old.health:
            self._start_health()
        logging.getLogger().setLevel(new.log_level.upper())
        if new.metrics != old.metrics:
            log.warning("metrics.listen changed: it takes effect after a restart")
        log.info("reloaded %s", self.config_path)
        self.notifier.ready(self._status_line())
        self._publish()

    def _move_vip(self, vips: list[Vip], ifname: str) -> None:
        """Swap the VIP in place: only the leader holds one, so there is never a second holder."""
        holding = self.machine.holds_vip
        old_text = self._vip_text()
        if holding and self.link is not None:
            self.link.remove()
        self._detach_link()
        old = (self.vips, self.ifname)
        self.vips, self.ifname = vips, ifname
        try:
            self._attach_link()
        except RunError as e:
            log.error("%s; keeping %s", e, old_text)
            self.vips, self.ifname = old
            self._attach_link()
        assert self.link is not None
        self.machine.vip_text = self._vip_text()
        self.machine.link_up = self.link.carrier()
        log.info("VIP changed from %s to %s", old_text, self._vip_text())
        if holding:
            try:
                self.link.add()
            except InterfaceError as e:
                self._vip_add_failed(e)
                return
            self.machine.restart_announcing()

    # shutdown ---------------------------------------------------------------

    def _shutdown(self) -> None:
        self.stopping = True
        self._metrics_stop.set()
        if self.link is not None:
            try:
                self.link.remove()  # never leave a VIP behind, whatever happened
            except InterfaceError as e:
                log.error("%s", e)
        self.machine.holds_vip = False
        if self.health is not None:
            self.health.stop()
        if self.election is not None:
            self.election.close()
        self.writer.shutdown(wait=False, cancel_futures=True)
        self._detach_link()
        status_file.remove(self.run_dir)


def run(
    config_path: str, cfg: Config, run_dir: Path, early_signals: list[int] | None = None
) -> int:
    """Entry point of ``kubevipd run`` for a config already loaded; returns the exit status."""
    setup_logging(cfg.log_level)
    if early_signals:
        log.info("stopped before start (%s)", signal.Signals(early_signals[0]).name)
        return EXIT_OK
    try:
        return Daemon(cfg, config_path, run_dir).run(early_signals)
    except InterfaceMissing as e:
        log.error("%s; exiting so that systemd starts kubevipd again", e)
        return EXIT_FAILURE
    except RunError as e:
        log.error("%s", e)
        return EXIT_CONFIG
    except PermissionError as e:
        # Capabilities can be granted without touching the config: not exit status 2, which
        # the unit never restarts.
        log.error("%s: kubevipd needs CAP_NET_ADMIN and CAP_NET_RAW", e)
        log.debug("details", exc_info=True)
        return EXIT_FAILURE
    except Exception as e:
        log.error("unexpected error, exiting: %s: %s", type(e).__name__, e)
        log.debug("details", exc_info=True)
        return EXIT_FAILURE
