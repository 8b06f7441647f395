"""The daemon's main loop: one thread owns all state; everything else only queues events.

Threads (the Lease watch, the apiserver list, the netlink monitor, the health checker, lease
writes, a slow announcer) put events on one queue. The loop hands each to the policy
(kubevipd/policy.py; the Lease state machine, kubevipd/machine.py), logs what the Decision
says, carries out its actions in order (kubevipd/effects.py, each fallible one reporting its
outcome as another event), and publishes the result (kubevipd/report.py). A moving VIP takes
one path, ``_move_vip``. Parts come from factories (kubevipd/parts.py): no backend named here.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from kubevipd import exitcodes
from kubevipd import status as status_file
from kubevipd.announce.base import Announcer, AnnouncerEnv
from kubevipd.attached import Attached, InterfaceMissing, attach_when_there
from kubevipd.config.model import Config
from kubevipd.connect import ElectionConnector
from kubevipd.effects import Effects, FromLink
from kubevipd.election.base import Election
from kubevipd.events import (
    Decision,
    Event,
    HealthChanged,
    LinkChanged,
    Observed,
    PathChanged,
    Role,
    Stop,
    VipChanged,
    VipMoved,
)
from kubevipd.journal import setup_logging
from kubevipd.metrics import Metrics
from kubevipd.notify import Notifier, watchdog_fence_warning
from kubevipd.parts import Health, Parts, PolicyStart, timings
from kubevipd.policy import Policy
from kubevipd.reload import Reload, read_reload
from kubevipd.report import Reporter
from kubevipd.resolve import (
    RunError,
    check_server_is_not_the_vip,
    check_supported,
    resolve_identity,
    resolve_interface,
)
from kubevipd.vip.model import Vip
from kubevipd.vip.netlink import InterfaceError
from kubevipd.vip.source import RoleNotice

log = logging.getLogger("kubevipd")
decisions = logging.getLogger("kubevipd.machine")  # what the policy says, under its own name

INTERFACE_WAIT_S = 20.0  # within the unit's TimeoutStartSec=30s
HEALTH_CA_FILE = "apiserver-ca.crt"  # no election: the kubeconfig's CA, for the health check


Item = Event | Reload | FromLink | VipChanged


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
        self.put: Callable[[object], None] = self.q.put  # type: ignore[assignment]
        self.identity = resolve_identity(cfg)
        self.source = self.parts.vip_source(cfg)
        self.roles = RoleNotice(self.source)
        # None: known only later (DHCP, once leading): attached with no address until the
        # source's VipChanged; holding "it" meanwhile adds and announces nothing.
        self.vips: list[Vip] = list(self.source.current() or ())
        check_server_is_not_the_vip(cfg, self.vips)
        self.ifname = cfg.interface or ""  # resolved in _wait_for_interface
        self.notifier = Notifier()
        self.metrics = Metrics()
        self.effects = Effects(self.put, self.metrics)
        self.reporter = Reporter(
            self.identity,
            f"{cfg.election.namespace}/{cfg.election.lease_name}",
            run_dir,
            self.notifier,
            self.metrics,
            self.put,
        )
        self.connector = ElectionConnector(
            self.parts.election, self.identity, self.parts.kubeconfig_ca
        )
        self.attached: Attached | None = None
        self.election: Election | None = None
        self.health: Health | None = None
        self.stopping = False
        self._metrics_stop = threading.Event()  # set at shutdown: the metrics retry ends
        self.health_text = "disabled" if not cfg.health.enabled else "unknown"
        self._health_waits_for_ca = False  # no election, and the kubeconfig is not there yet
        self._kubeconfig_pem: str | None = None  # no election: the kubeconfig's CA, once read
        self._health_error = ""
        self._health_gen = 0  # which checker's reports count
        self._wait_for_interface()
        assert self.attached is not None
        self.policy: Policy = self.parts.policy(
            cfg,
            PolicyStart(
                identity=self.identity,
                timings=timings(cfg),
                now=time.monotonic(),
                wall=time.time(),
                vip_at_start=bool(self.attached.link.present()),
                inherited_deadline=status_file.held_until(run_dir),
                vip_text=self._vip_text(),
                announce_timing=self.attached.announcer.timing,
            ),
        )

    # setup ------------------------------------------------------------------

    def _vip_text(self) -> str:
        if not self.vips:
            return f"VIP (not known yet) on {self.ifname}"
        return f"VIP {', '.join(str(v) for v in self.vips)} on {self.ifname}"

    def _wait_for_interface(self) -> None:
        wait = float(os.environ.get("KUBEVIPD_INTERFACE_WAIT", INTERFACE_WAIT_S))  # tests: 0.5
        self.attached, self.ifname = attach_when_there(
            self.parts, self.cfg, self.vips, self.effects, self.put, wait, self._announcer_env()
        )

    def _announcer_env(self) -> AnnouncerEnv:
        """Where an announcer keeps its files, and how its path's news reaches the loop (as
        an event, like everything else: the policy decides what a lost path means)."""

        def on_path(ok: bool, detail: str, peers: dict[str, str]) -> None:
            self.put(PathChanged(ok, detail, tuple(sorted(peers.items()))))

        return AnnouncerEnv(self.run_dir, on_path)

    def _attach_link(self, announcer: Announcer | None = None) -> None:
        self.attached = Attached(
            self.parts,
            self.cfg,
            self.ifname,
            self.vips,
            self.effects,
            self.put,
            announcer,
            self._announcer_env(),
        )

    def _detach_link(self, keep_announcer: bool = False) -> None:
        if self.attached is not None:
            self.attached.detach(self.effects, keep_announcer)
        self.attached = None

    def _connect_election(self) -> None:
        """Create the Lease client once the kubeconfig exists (kubeadm init writes it)."""
        self.election = self.connector.start(
            self.cfg, self._vip_text(), lambda r: self.q.put(Observed(r)), lambda: self.stopping
        )
        if self.election is not None:
            self.effects.election = self.election
            self._start_health()

    def _start_health(self) -> None:
        self._health_gen += 1  # first: a late report of the checker stopped here is dropped
        if self.health is not None:
            self.health.stop()
            self.health = None
        was_waiting, self._health_waits_for_ca = self._health_waits_for_ca, False
        if not self.cfg.health.enabled:
            self.health_text = "disabled"
            return
        ca = self.election.ca_file if self.election else None
        why: str | None = None
        if self._health_ca_from_kubeconfig():
            ca, why = self._kubeconfig_ca_file()
        if why is None:
            gen = self._health_gen
            try:
                self.health = self.parts.health(
                    self.cfg.health, ca or None, lambda ok, r: self._on_health(ok, r, gen)
                )
            except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
                why = f"cannot load the health check's CA ({e})"
                self._say_once(why)
            else:
                self.health.start()
                return
        # Not checked against the system's CAs meanwhile: not healthy. The loop tries again.
        self._health_waits_for_ca = True
        self.health_text = why
        if not was_waiting:  # once: the loop calls again each turn while it waits
            # The policy may hold the verdict of a check just stopped (a reload that dropped
            # health.ca_file): unchecked is not healthy.
            self.q.put(HealthChanged(False, why))

    def _health_ca_from_kubeconfig(self) -> bool:
        """No election client gives the CA of the election kubeconfig, which health.ca_file
        defaults to: it is read for the check of an https URL."""
        h = self.cfg.health
        return not self.policy.uses_election and h.ca_file is None and h.url.startswith("https")

    def _kubeconfig_ca_file(self) -> tuple[str | None, str | None]:
        """The kubeconfig's CA in a file of the run dir ("": the system's CAs), or None and
        what is waited for. Read once, as the election client reads its kubeconfig once: a
        reload that restarts the check never waits for (nor drops the check over) a
        kubeconfig being rewritten. Written at each (re)start of the check, which is rare:
        a file gone since, or refused, is put back."""
        if self._kubeconfig_pem is None:
            self._kubeconfig_pem = self.connector.health_ca(self.cfg)
            if self._kubeconfig_pem is None:
                return None, f"waiting for kubeconfig {self.cfg.election.kubeconfig}"
        if not self._kubeconfig_pem:
            return "", None
        path = self.run_dir / HEALTH_CA_FILE
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(self._kubeconfig_pem)  # certificates only: public
        except OSError as e:
            why = f"cannot keep the apiserver's CA for the health check: {e}"
            self._say_once(why)
            return None, why
        return str(path), None

    def _say_once(self, error: str) -> None:
        """An error the loop meets again on each try: logged when it is new."""
        if error != self._health_error:
            log.error("%s", error)
            self._health_error = error

    def _on_health(self, healthy: bool, reason: str, gen: int) -> None:
        if gen != self._health_gen:
            return  # from a checker stopped since: its verdict is not the running one's
        self.health_text = f"{'healthy' if healthy else 'unhealthy'} ({reason})"
        self.q.put(HealthChanged(healthy, reason))

    # the loop ---------------------------------------------------------------

    def run(self, early_signals: list[int] | None = None) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, _: self.q.put(Stop(signal.Signals(signum).name)))
        signal.signal(signal.SIGHUP, lambda *_: self.q.put(Reload()))
        for signum in early_signals or []:
            self.q.put(Stop(signal.Signals(signum).name))
        if self.cfg.metrics is not None:
            self.metrics.serve_or_retry(self.cfg.metrics.listen, self._metrics_stop)
        elects = self.policy.uses_election
        self._warn_if_the_watchdog_cannot_fence()
        self.source.start(self.put)
        if elects:
            self._connect_election()
        else:  # no lock to wait for: only health decides
            self._start_health()
        self.notifier.ready(self._status_line())
        stop_by: float | None = None
        try:
            self._step(None)
            assert self.attached is not None
            if not self.attached.link.carrier():  # a policy starts believing it has carrier
                self._step(LinkChanged(False))
            while self.policy.role is not Role.STOPPED:
                now = time.monotonic()
                if elects and self.election is None and not self.stopping:
                    self._connect_election()
                elif self._health_waits_for_ca and not self.stopping:
                    self._start_health()
                wake = self.policy.next_wakeup()
                timeout = self.notifier.max_sleep()  # at most 1s: also retries the kubeconfig
                if wake is not None:
                    timeout = min(timeout, max(0.0, wake - now))
                if stop_by is not None:
                    timeout = min(timeout, max(0.0, stop_by - now))
                try:
                    item: Item | None = self.q.get(timeout=timeout)
                except queue.Empty:
                    item = None
                if isinstance(item, Stop) and stop_by is None:
                    self.stopping = True
                    self.notifier.stopping("stopping: handing the VIP over")
                    stop_by = time.monotonic() + self.policy.t.api_timeout * 2 + 1.0
                self.dispatch(item)
                self.notifier.watchdog(time.monotonic())
                if stop_by is not None and time.monotonic() >= stop_by:
                    log.warning("hand-over did not finish in time; removing the VIP and exiting")
                    break
            status = exitcodes.OK
        finally:
            removed = self._shutdown()
        # A VIP we could not remove: not a clean exit. systemd restarts us (status 1), and
        # ExecStopPost's cleanup tries again and leaves the lease alone while it is up.
        return status if removed else exitcodes.FAILURE

    def _warn_if_the_watchdog_cannot_fence(self) -> None:
        """At start and after a reload's new timings: one line when the watchdog is too slow."""
        t, interval = self.policy.t, self.notifier.watchdog_interval
        fence = watchdog_fence_warning(interval, t.lease_duration, t.retry_period)
        if fence and self.policy.uses_election:
            log.warning("%s", fence)

    def dispatch(self, item: Item | None) -> None:
        """One turn of the loop for one item off the queue (None: only time passed)."""
        if isinstance(item, Reload):
            self._reload()
        elif isinstance(item, VipChanged):
            self._move_vip(list(item.vips), item.interface)
        elif isinstance(item, FromLink):
            if item.generation == self.effects.generation:  # else about a replaced interface
                self._step(item.event)
        else:
            if isinstance(item, PathChanged):
                self.reporter.path(item.detail, dict(item.peers))
            self._step(item)

    def _step(self, item: Event | None) -> None:
        decision = self.policy.handle(item, time.monotonic(), time.time())
        self._log(decision)
        self.effects.carry_out(decision.actions)
        self.roles.update(self.policy.role is Role.LEADER, self._vip_off)
        self._publish()

    def _vip_off(self) -> bool:
        return self.effects.vips_on_interface() == 0

    @staticmethod
    def _log(decision: Decision) -> None:
        for level, sentence in decision.said:
            decisions.log(level, "%s", sentence)

    # reporting --------------------------------------------------------------

    def _status_line(self) -> str:
        waiting = None
        if (self.policy.uses_election and self.election is None) or self._health_waits_for_ca:
            waiting = str(self.cfg.election.kubeconfig)
        return self.reporter.status_line(self.policy, self._vip_text(), waiting)

    def _publish(self) -> None:
        self.reporter.publish(
            self.policy,
            self.vips,
            self.ifname,
            self.effects,
            self.health_text,
            self._status_line,
        )

    # reload and a VIP that moves --------------------------------------------

    def _reload(self) -> None:
        self.notifier.reloading()
        log.info("reloading %s", self.config_path)
        new = read_reload(self.config_path, self.cfg)
        if new is not None:
            self._apply(new)
        self.notifier.ready(self._status_line())

    def _apply(self, new: Config) -> None:
        old = self.cfg
        try:
            new_ifname = resolve_interface(new)  # first: e.g. no default route just now
            named = self.source.reload(new)  # None: its VipChanged will say
        except RunError as e:
            log.error("%s; keeping the running config", e)
            return
        self.cfg = new
        self._move_vip(self.vips if named is None else list(named), new_ifname)
        self.policy.set_timings(timings(new))
        self._warn_if_the_watchdog_cannot_fence()
        if new.health != old.health:
            self._start_health()
        logging.getLogger().setLevel(new.log_level.upper())
        log.info("reloaded %s", self.config_path)
        self.reporter.force()
        self._publish()

    def _move_vip(self, vips: list[Vip], ifname: str) -> None:
        """The one path a VIP moves on at run time, whatever moved it (a reload today; a DNS
        name or a DHCP lease later). Swapped in place: only the leader holds one, so there is
        never a second holder."""
        if (vips, ifname) == (self.vips, self.ifname):
            return  # an answer that did not change: no blip
        old_text = self._vip_text()
        assert self.attached is not None
        # Off the old interface first, held or not: a stray copy (a removal refused before,
        # another run's) would stay there unwatched once the status refresh looks at the new
        # one. Until it is off, the VIP does not move (an error says so): the next reload, or
        # the source's next change, tries again.
        try:
            self.attached.link.remove()
        except InterfaceError as e:
            log.error("%s; keeping %s", e, old_text)
            return
        if self.policy.holds_vip:
            self.effects.withdraw()  # the old address, before a kept announcer hears the new
        # Same interface: the announcer stays, told the new VIP (set_vips), so a BGP speaker
        # keeps its sessions; another interface gets one of its own.
        kept = self.attached.announcer if ifname == self.ifname else None
        self._detach_link(keep_announcer=kept is not None)
        old = (self.vips, self.ifname)
        self.vips, self.ifname = vips, ifname
        try:
            self._attach_link(kept)
            log.info("VIP changed from %s to %s", old_text, self._vip_text())
        except RunError as e:
            log.error("%s; keeping %s", e, old_text)
            self.vips, self.ifname = old
            self._attach_link(kept)  # and the policy puts it back on below
        assert self.attached is not None
        link = self.attached.link
        self.policy.vip_text = self._vip_text()
        self.reporter.force()
        self._publish()  # first: a crash from here on leaves cleanup the new VIP to remove
        # The policy puts it on (with the kernel lifetime it would get now), then hears the new
        # link's carrier through its own rule (its grace, its hand-over).
        self._step(VipMoved())
        self._step(LinkChanged(link.carrier()))

    # shutdown ---------------------------------------------------------------

    def _shutdown(self) -> bool:
        """Never leave a VIP behind, whatever happened; False when it may still be there."""
        self.stopping = True
        self._metrics_stop.set()
        att = self.attached
        if att is not None and self.policy.holds_vip:
            self.effects.withdraw()  # the route before the address; a slow one drained below
        removed = att is None or att.remove_for_good(within=self.policy.t.renew_deadline)
        self.policy.holds_vip = False
        self.roles.update(False, lambda: removed)  # the VIP is off: a source may let it go
        if self.health is not None:
            self.health.stop()
        if self.election is not None:
            self.election.close()
        self.effects.close()
        self.source.stop()
        self._detach_link()
        if removed:
            status_file.remove(self.run_dir)  # else cleanup needs it: which VIP, on which link
        return removed


def run(
    config_path: str, cfg: Config, run_dir: Path, early_signals: list[int] | None = None
) -> int:
    """Entry point of ``kubevipd run`` for a config already loaded; returns the exit status."""
    setup_logging(cfg.log_level)
    if early_signals:
        log.info("stopped before start (%s)", signal.Signals(early_signals[0]).name)
        return exitcodes.OK
    try:
        return Daemon(cfg, config_path, run_dir).run(early_signals)
    except InterfaceMissing as e:
        log.error("%s; exiting so that systemd starts kubevipd again", e)
        return exitcodes.FAILURE
    except RunError as e:
        log.error("%s", e)
        return exitcodes.CONFIG
    except PermissionError as e:
        # Capabilities can be granted without touching the config: not exit status 2, which
        # the unit never restarts.
        log.error("%s: kubevipd needs CAP_NET_ADMIN and CAP_NET_RAW", e)
        log.debug("details", exc_info=True)
        return exitcodes.FAILURE
    except Exception as e:
        log.error("unexpected error, exiting: %s: %s", type(e).__name__, e)
        log.debug("details", exc_info=True)
        return exitcodes.FAILURE
