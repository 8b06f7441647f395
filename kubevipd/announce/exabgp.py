"""ExaBGP as kubevipd's supervised child: its config, its process, its API, its news.

kubevipd never speaks BGP itself. It writes ExaBGP's config under its runtime directory (mode
0600: it carries the TCP MD5 passwords, base64-encoded, which no command line, environment,
log line, status or metric ever shows), starts ``exabgp`` with the settings below, and talks
to it through the process API: ExaBGP runs kubevipd's relay (exabgp_relay.py), which joins
that API to a Unix socket kubevipd listens on. What kubevipd wants announced is kept here
(``set_routes``) and sent again to every new ExaBGP, so a restarted child announces what its
predecessor did. ExaBGP's ``neighbor-changes`` news gives each peer's session state.

ExaBGP 4.2's traps, and what is done about each:

- it blocks when its helper stops reading: the relay and the reader here drain it at all
  times, on threads of their own;
- it goes on announcing when its helper dies, and sends no withdraws when it ends: the relay
  ends ExaBGP when kubevipd's end closes, and kubevipd withdraws before it stops the child
  (closing the sessions withdraws the rest at the routers);
- ``next-hop self`` may be dropped (exabgp#1153): every route carries an explicit next hop,
  withdrawals too;
- a bare ``graceful-restart`` makes peers keep a stale route for the whole hold time: never
  configured;
- started as root, it switches to another user (``nobody``, or what the host's exabgp.env
  names) once its helpers run, and by default it listens on nothing: it is told to switch to
  kubevipd's own user (a no-op under the unit, which runs kubevipd unprivileged), and it only
  connects out, as kube-vip's GoBGP does.

If ExaBGP exits, it is started again after 0.5 s, doubling up to 30 s while it keeps dying.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import pwd
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kubevipd.announce.bgp_plan import PeerPlan, Plan

log = logging.getLogger("kubevipd")

EXABGP = "exabgp"  # found on PATH, else /usr/sbin/exabgp (Debian's)
RELAY = Path(__file__).with_name("exabgp_relay.py")
DROPCAPS = Path(__file__).with_name("dropcaps.py")  # ExaBGP runs without our capabilities
RESTART_FIRST, RESTART_MAX = 0.5, 30.0
STABLE_S = 60.0  # a child that ran this long starts the back-off afresh
ACK_WAIT = 0.3  # at stop, for ExaBGP to take the last commands (a withdrawal)
PEER_WARN_S = 5.0  # a session not up for this long gets one warning line
SEND_TIMEOUT = 0.5  # a command ExaBGP cannot take within this is a failed announcement

# ExaBGP's settings, as environment variables (they override /etc/exabgp/exabgp.env, which
# belongs to the host's own exabgp service): no daemonising, no privilege drop, no named
# pipes for its CLI, no respawning of the relay (a new child is kubevipd's to start), JSON.
ENV = {
    "exabgp_daemon_daemonize": "false",
    "exabgp_daemon_drop": "false",
    "exabgp_daemon_pid": "",
    "exabgp_api_cli": "false",
    "exabgp_api_ack": "true",
    "exabgp_api_respawn": "false",
    "exabgp_api_encoder": "json",
    "exabgp_log_destination": "stdout",
    "exabgp_log_level": "WARNING",
    "exabgp_log_configuration": "false",
    "exabgp_log_parser": "false",
    "exabgp_tcp_bind": "",
}


def exabgp_command() -> str | None:
    return shutil.which(EXABGP) or shutil.which(EXABGP, path="/usr/sbin:/usr/local/sbin")


def exabgp_argv(command: str, *args: str) -> list[str]:
    """ExaBGP's command line: through the shim that clears kubevipd's ambient capabilities."""
    return [sys.executable, "-I", str(DROPCAPS), command, *args]


@dataclass(frozen=True)
class Route:
    """One prefix announced to one peer, with its explicit next hop and MED (None: none)."""

    peer: str
    prefix: str
    next_hop: str
    med: int | None = None

    def announce(self) -> str:
        med = f" med {self.med}" if self.med is not None else ""
        return f"neighbor {self.peer} announce route {self.prefix} next-hop {self.next_hop}{med}"

    def withdraw(self) -> str:
        return f"neighbor {self.peer} withdraw route {self.prefix} next-hop {self.next_hop}"


def render_config(plan: Plan, socket_path: Path) -> str:
    """ExaBGP 4.2's configuration for the plan's sessions."""
    relay = f"{sys.executable} {RELAY} {socket_path}"
    lines = [
        "process kubevipd {",
        f"    run {relay};",
        "    encoder json;",
        "}",
    ]
    for p in plan.peers:
        lines += [
            f"neighbor {p.address} {{",
            f"    router-id {plan.router_id};",
            f"    local-address {p.local_address};",
            f"    local-as {plan.local_as};",
            f"    peer-as {p.asn};",
            f"    hold-time {plan.hold_time};",
        ]
        if p.port != 179:
            lines.append(f"    connect {p.port};")
        if p.multihop_ttl is not None:
            lines.append(f"    outgoing-ttl {p.multihop_ttl};")
        if p.password is not None:
            encoded = base64.b64encode(p.password.encode()).decode()
            lines += ["    md5-base64 true;", f"    md5-password {encoded};"]
        lines.append("    family {")
        lines += [f"        {f.replace('-', ' ')};" for f in p.families]
        lines += [
            "    }",
            "    api {",
            "        processes [ kubevipd ];",
            "        neighbor-changes;",
            "    }",
            "}",
        ]
    return "\n".join(lines) + "\n"


@dataclass
class PeerState:
    """One session as ExaBGP last told: ``connecting`` (no TCP yet), ``connected`` (TCP, no
    OPEN exchanged yet), ``up`` (established) or ``down`` (with ExaBGP's reason)."""

    state: str = "connecting"
    reason: str = ""
    since: float = 0.0

    @property
    def up(self) -> bool:
        return self.state == "up"


def peer_detail(p: PeerPlan, st: PeerState | None) -> str:
    """ "10.0.0.1 (AS 65000) connecting (no TCP connection; ...)": one peer, for an operator."""
    state = st.state if st else "unknown"
    why = st.reason if st and not st.up else ""
    if state == "connecting" and not why:
        # A wrong TCP MD5 password is silent everywhere: the router drops the SYNs.
        why = "no TCP connection"
        if p.password is not None:
            why += "; a TCP MD5 password is set: check it is the router's"
    return f"{p.name} {state}" + (f" ({why})" if why else "")


class ExaBgp:
    """One supervised ExaBGP child for the plan's sessions (see the module docstring).

    ``on_peers`` is called (from a thread of this object) with every peer's state whenever one
    changes, and never after ``stop()`` returned.
    """

    def __init__(
        self,
        plan: Plan,
        run_dir: Path,
        on_peers: Callable[[dict[str, PeerState]], None],
        command: str | None = None,
    ) -> None:
        self.plan = plan
        self.run_dir = run_dir
        self._on_peers = on_peers
        self._command = command or exabgp_command() or EXABGP
        self._lock = threading.Lock()
        self._acked = threading.Condition(self._lock)
        self._news_lock = threading.Lock()  # held while on_peers runs
        self._unacked = 0  # commands ExaBGP has not answered yet ("done" or "error")
        self._routes: tuple[Route, ...] = ()
        self._conn: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._secrets = [p.password for p in plan.peers if p.password]
        self._secrets += [base64.b64encode(s.encode()).decode() for s in list(self._secrets)]
        now = time.monotonic()
        self.peers: dict[str, PeerState] = {
            str(p.address): PeerState(since=now) for p in plan.peers
        }
        self._by_address = {str(p.address): p for p in plan.peers}
        self.starts = 0  # children started, for the status and the tests
        run_dir.mkdir(parents=True, exist_ok=True)
        self.socket_path = run_dir / "exabgp.sock"
        self.config_path = run_dir / "exabgp.conf"
        self._remove_files()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o077)
        try:
            self._listener.bind(str(self.socket_path))
            fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(render_config(plan, self.socket_path))
        finally:
            os.umask(old)
        self._listener.listen(2)
        self._thread = threading.Thread(target=self._supervise, name="exabgp", daemon=True)

    def start(self) -> None:
        self._thread.start()
        threading.Thread(target=self._accept, name="exabgp-api", daemon=True).start()
        threading.Thread(target=self._watch_peers, name="exabgp-peers", daemon=True).start()

    def _watch_peers(self) -> None:
        """One warning for a session that has not been up for PEER_WARN_S (a wrong password, a
        router not configured for this node), per episode; the news of a session coming up or
        going down is logged as it comes (``_set``)."""
        warned: set[str] = set()
        while not self._stopping.wait(1.0):
            now = time.monotonic()
            for p in self.plan.peers:
                addr = str(p.address)
                with self._lock:
                    st = self.peers[addr]
                if st.up:
                    warned.discard(addr)
                elif addr not in warned and now - st.since >= PEER_WARN_S:
                    warned.add(addr)
                    log.warning(
                        "BGP peer %s: no session for %gs",
                        peer_detail(p, st),
                        round(now - st.since),
                    )

    # what kubevipd wants announced ------------------------------------------------

    def set_routes(self, routes: Sequence[Route]) -> int:
        """Announce exactly ``routes`` from now on: withdraw what is no longer wanted, announce
        what is new. Returns how many commands went to ExaBGP (0: nothing changed, or no
        ExaBGP to take them yet: the next one gets the whole set when its relay connects).
        Raises OSError when a running ExaBGP did not take them within SEND_TIMEOUT: its
        connection is then closed, which ends that ExaBGP (the relay sees to it), and the one
        started next gets the whole set; a half-written line never reaches a live child."""
        with self._lock:
            old, self._routes = self._routes, tuple(routes)
            new, before = set(self._routes), set(old)
            lines = [r.withdraw() for r in old if r not in new]
            lines += [r.announce() for r in self._routes if r not in before]
            if not lines or self._conn is None:
                return 0
            try:
                self._send(lines)
            except OSError:
                self._drop_connection()
                raise
            return len(lines)

    def _send(self, lines: list[str]) -> None:
        """Write without blocking past SEND_TIMEOUT. The socket itself stays blocking, with
        no timeout: its reader waits on it for ExaBGP's news at the same time."""
        assert self._conn is not None
        view = memoryview("".join(line + "\n" for line in lines).encode())
        deadline = time.monotonic() + SEND_TIMEOUT
        while view:
            try:
                view = view[self._conn.send(view, socket.MSG_DONTWAIT) :]
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"ExaBGP took no command for {SEND_TIMEOUT:g}s") from None
                select.select([], [self._conn], [], left)
        self._unacked += len(lines)
        for line in lines:
            log.debug("exabgp <- %s", line)

    def _remove_files(self) -> None:
        """The socket and the config (it has the passwords): a predecessor's, or ours at stop."""
        for path in (self.socket_path, self.config_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _drop_connection(self) -> None:
        """Under the lock: close the API connection (the relay then ends ExaBGP)."""
        conn, self._conn = self._conn, None
        self._unacked = 0
        self._acked.notify_all()
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)  # the reader's makefile() keeps the fd open
            with contextlib.suppress(OSError):
                conn.close()

    # the child --------------------------------------------------------------------

    def _supervise(self) -> None:
        delay = RESTART_FIRST
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                proc = self._spawn()
            except OSError as e:
                log.error("cannot start ExaBGP (%s): %s", self._command, e)
            else:
                code = proc.wait()
                if self._stopping.is_set():
                    return
                log.error(
                    "ExaBGP exited (status %s); its BGP sessions are down; starting it again "
                    "in %gs",
                    code,
                    delay,
                )
                self._set_all("connecting", "ExaBGP is being restarted")
            if time.monotonic() - started >= STABLE_S:
                delay = RESTART_FIRST
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, RESTART_MAX)

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("exabgp")}
        for ours in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "CREDENTIALS_DIRECTORY"):
            env.pop(ours, None)  # systemd's, for kubevipd alone
        env.update(ENV)
        # ExaBGP started as root always switches to this user once its helpers run (and to
        # /etc/exabgp/exabgp.env's or nobody by default): kubevipd's own, so that nothing
        # changes hands (the config and the socket are kubevipd's, mode 0600).
        env["exabgp_daemon_user"] = pwd.getpwuid(os.getuid()).pw_name
        proc = subprocess.Popen(
            exabgp_argv(self._command, str(self.config_path)),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(self.run_dir),
        )
        with self._lock:
            self._proc = proc
            late = self._stopping.is_set()
        if late:  # stop() ran meanwhile and could not see this one
            proc.terminate()
        self.starts += 1
        assert proc.stdout is not None
        threading.Thread(
            target=self._pump_log, args=(proc.stdout,), name="exabgp-log", daemon=True
        ).start()
        log.info("started ExaBGP (pid %d) for %d BGP peer(s)", proc.pid, len(self.plan.peers))
        return proc

    def _scrub(self, text: str) -> str:
        for s in self._secrets:
            text = text.replace(s, "<password>")
        return text

    def _pump_log(self, stream: object) -> None:
        """ExaBGP's own log (warnings and errors only) into ours, drained at all times."""
        for raw in stream:  # type: ignore[attr-defined]
            line = self._scrub(raw.decode(errors="replace").rstrip())
            if line:
                log.warning("exabgp: %s", line)

    # its API ----------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._drop_connection()  # a predecessor's, if its end is not noticed yet
                self._conn = conn
                replay = [r.announce() for r in self._routes]
                try:
                    if replay:
                        self._send(replay)
                except OSError as e:
                    # As in set_routes: no half-written line stays with a live child; this
                    # one ends, and the next one gets the whole set.
                    log.error("cannot give the VIP's routes to the new ExaBGP: %s", e)
                    self._drop_connection()
                    continue
            threading.Thread(
                target=self._read, args=(conn,), name="exabgp-news", daemon=True
            ).start()

    def _read(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn.makefile("rb") as lines:
            for raw in lines:
                self._news(raw.decode(errors="replace").strip())
        with self._lock:
            if self._conn is conn:  # not replaced meanwhile: ExaBGP's end of it closed
                self._drop_connection()

    def _news(self, line: str) -> None:
        if line in ("done", "error"):
            if line == "error":
                log.error("ExaBGP refused a command (see its lines above)")
            with self._lock:
                self._unacked = max(0, self._unacked - 1)
                self._acked.notify_all()
            return
        if not line:
            return
        try:
            msg = json.loads(line)
        except ValueError:
            log.debug("exabgp: %s", self._scrub(line))
            return
        if msg.get("type") != "state":
            return
        nb = msg.get("neighbor") or {}
        peer = (nb.get("address") or {}).get("peer")
        state = str(nb.get("state") or "")
        if peer is None or state not in ("up", "connected", "down"):
            return
        self._set(str(peer), state, self._scrub(str(nb.get("reason") or "")))

    def _set(self, peer: str, state: str, reason: str) -> None:
        with self._lock:
            old = self.peers.get(peer)
            if old is None or (old.state == state and old.reason == reason):
                return
            # "connected" (TCP up, OPEN not yet answered) still counts as not up since before.
            since = old.since if state != "up" and not old.up else time.monotonic()
            self.peers[peer] = PeerState(state, reason, since)
            snapshot = dict(self.peers)
        with self._news_lock:
            if self._stopping.is_set():
                return
            plan = self._by_address.get(peer)
            name = plan.name if plan else peer
            if state == "up":
                log.info("BGP session to %s established", name)
            elif old.up:
                log.warning("BGP session to %s down%s", name, f" ({reason})" if reason else "")
            self._on_peers(snapshot)

    def _set_all(self, state: str, reason: str) -> None:
        for peer in list(self.peers):
            self._set(peer, state, reason)

    # the end ----------------------------------------------------------------------

    def stop(self, within: float = 1.0) -> None:
        """End the child: SIGTERM (its sessions close with a Cease, which withdraws at the
        routers whatever is left), SIGKILL after ``within`` seconds. Commands sent and not
        answered yet (a withdrawal) are waited for first, briefly: a withdrawn route is gone at
        once, whereas a closed session leaves the routers to notice."""
        with self._lock:
            self._acked.wait_for(lambda: self._unacked == 0 or self._conn is None, ACK_WAIT)
            self._stopping.set()  # under the lock: a child spawned from now on ends itself
            proc = self._proc
            self._drop_connection()
        with self._news_lock:
            pass  # a report already under way is over: none comes after this returns
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept(): close() does not
        with contextlib.suppress(OSError):
            self._listener.close()
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(within)
            except subprocess.TimeoutExpired:
                log.warning("ExaBGP did not end within %gs of SIGTERM; killing it", within)
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(1.0)
        self._remove_files()
