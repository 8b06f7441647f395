"""Getting a Lease client once the kubeconfig exists and can be used.

On the first control-plane node the daemon starts before ``kubeadm init`` writes the
kubeconfig, and kubeadm rewrites it while the node joins: waiting for it is normal, not an
error. The main loop asks every second; each distinct reason for waiting is logged once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from kubevipd.config.model import Config, ElectionSpec
from kubevipd.election.base import Election, Observer
from kubevipd.election.lease import ElectionSetupError
from kubevipd.resolve import election_spec
from kubevipd.supervise import supervise

log = logging.getLogger("kubevipd")


class ElectionConnector:
    def __init__(self, make: Callable[[ElectionSpec, str], Election], identity: str) -> None:
        self.make = make
        self.identity = identity
        self._waiting_for_file = False
        self._last_error = ""

    def connect(self, cfg: Config, vip_text: str) -> Election | None:
        """The client, or None while the kubeconfig is missing or not usable yet."""
        spec = election_spec(cfg)
        if not spec.kubeconfig.exists():
            if not self._waiting_for_file:
                wanted = cfg.election.kubeconfig
                copy = (
                    f"; kubevipd-kubeconfig.service copies it to {spec.kubeconfig}"
                    if spec.kubeconfig != wanted
                    else ""
                )
                log.warning(
                    "waiting for kubeconfig %s to exist (kubeadm init writes it%s)", wanted, copy
                )
                self._waiting_for_file = True
            return None
        try:
            election = self.make(spec, self.identity)
        except ElectionSetupError as e:
            # Caught mid-write, or not usable yet (kubeadm rewrites it): wait, as for a missing
            # one. Logged once per distinct reason.
            if str(e) != self._last_error:
                log.warning("%s; waiting for it to become usable", e)
                self._last_error = str(e)
            return None
        self._last_error = ""
        log.info(
            "kubevipd on node %s: %s, lease %s (%s/%s/%s)",
            self.identity,
            vip_text,
            election.describe(),
            spec.lease_duration,
            spec.renew_deadline,
            spec.retry_period,
        )
        return election

    def start(
        self, cfg: Config, vip_text: str, observe: Observer, stopped: Callable[[], bool]
    ) -> Election | None:
        """``connect``, then the client's threads, each supervised: the watch of the lock
        (every new record to ``observe``), and the refresh of the other apiservers, where a
        release goes when ours is down (election/peers.py). Both end once ``stopped()``."""
        election = self.connect(cfg, vip_text)
        if election is None:
            return None
        supervise("lease-watch", lambda: election.watch(observe, stopped), stopped)
        supervise("apiservers", lambda: election.run_peer_refresh(stopped), stopped)
        return election
