"""What the daemon tells the world about itself: systemd's STATUS=, the metrics, the status file.

The status file (kubevipd/status.py) also records the VIP the daemon runs with and on which
interface, so that ``kubevipd cleanup`` removes that one after a crash, even when a reload had
moved it away from what the config file says now. Presence is what netlink shows, never what
the policy believes.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kubevipd import status as status_file
from kubevipd.effects import Effects
from kubevipd.events import Role, VipStray
from kubevipd.metrics import Metrics
from kubevipd.notify import Notifier
from kubevipd.policy import Policy
from kubevipd.vip.model import Vip

log = logging.getLogger("kubevipd")


class Reporter:
    def __init__(
        self,
        identity: str,
        lease: str,
        run_dir: Path,
        notifier: Notifier,
        metrics: Metrics,
        put: Callable[[object], None],
    ) -> None:
        self.identity = identity
        self.lease = lease  # namespace/name
        self.run_dir = run_dir
        self.notifier = notifier
        self.metrics = metrics
        self.put = put
        self._published: tuple[Any, ...] = ()
        self._published_at = 0.0
        self._counted_transitions = 0
        # The announcer's path (BGP sessions), as its last PathChanged said; {} for none.
        self.peers: dict[str, str] = {}
        self.path_text = ""

    def path(self, detail: str, peers: dict[str, str]) -> None:
        """A PathChanged: each BGP peer's state, for the status, STATUS= and the metrics."""
        self.path_text = detail
        for peer in set(self.peers) - set(peers):
            self.metrics.bgp_peer_up.remove(peer)
        self.peers = dict(peers)
        for peer, state in peers.items():
            self.metrics.bgp_peer_up.labels(peer).set(1 if state == "up" else 0)
        # The next publish() sees the text in its key, and says it in STATUS= too.

    def status_line(self, p: Policy, vip_text: str, waiting_for: str | None) -> str:
        holder = p.status().holder
        lease_name = self.lease.split("/", 1)[-1]
        path = f"; {self.path_text}" if self.path_text else ""
        if p.role is Role.LEADER:
            return f"leader of {lease_name}, {vip_text}{path}"
        if p.role is Role.FOLLOWER:
            return f"follower; leader is {holder or 'nobody'}{path}"
        if waiting_for is not None:
            return f"starting: waiting for {waiting_for}"
        return f"{p.role.value}{path}"

    def force(self) -> None:
        """The next publish() writes, whatever changed (after a reload, a VIP move)."""
        self._published = ()

    def publish(
        self,
        p: Policy,
        vips: Sequence[Vip],
        ifname: str,
        effects: Effects,
        health_text: str,
        status_line: Callable[[], str],
    ) -> None:
        st = p.status()
        # The deadline is in the key: a restart after a crash may keep the VIP only until the
        # deadline written here (status.held_until), so it must never lag behind a renewal
        # that shortened it; a renewal that lengthened it may lag (that is only conservative).
        # The VIP and interface are in it too: cleanup must remove what we run with.
        key = (p.role, st.holder, p.holds_vip, p.transitions, st.held_until, tuple(vips), ifname,
               self.path_text)  # fmt: skip
        now = time.monotonic()
        if key == self._published and now - self._published_at < 1.0:
            return
        if key[:3] != self._published[:3] or key[-1:] != self._published[-1:]:
            self.notifier.status(status_line())
        if p.transitions > self._counted_transitions:
            self.metrics.transitions.labels(p.role.value).inc(
                p.transitions - self._counted_transitions
            )
            self._counted_transitions = p.transitions
        self._published, self._published_at = key, now
        self.metrics.leader.set(1 if p.role is Role.LEADER else 0)
        on_interface = effects.vips_on_interface()
        present = bool(vips) and on_interface == len(vips)  # none known yet: none present
        self.metrics.vip_present.set(1 if present else 0)
        if on_interface and not p.holds_vip:
            # A backstop: a follower must not keep a VIP, whoever put it there.
            self.put(VipStray(f"netlink shows {on_interface} of its addresses on {ifname}"))
        wall_now = time.time()
        state = {
            "pid": os.getpid(),
            "node": self.identity,
            "role": p.role.value,
            "holder": st.holder,
            "vip": [str(v) for v in vips],
            "vip_cidr": [v.cidr for v in vips],  # what cleanup removes
            "interface": ifname,
            "vip_present": present,  # what netlink shows, not what the policy believes
            "lease": self.lease,
            "role_since": wall_now - (now - p.role_since),
            "last_renew": wall_now - (now - st.last_renew) if st.last_renew else None,
            "transitions": p.transitions,
            "health": health_text,
            "bgp_peers": self.peers,
            "last_error": st.last_error,
            "updated": wall_now,
            **status_file.deadline_fields(st.held_until),
        }
        try:
            status_file.write(self.run_dir, state)
        except OSError as e:
            log.debug("cannot write status to %s: %s", self.run_dir, e)
