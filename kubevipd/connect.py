"""Getting a Lease client (or, with no election, the apiserver's CA) once the kubeconfig
exists and can be used.

On the first control-plane node the daemon starts before ``kubeadm init`` writes the
kubeconfig, and kubeadm rewrites it while the node joins: waiting for it is normal, not an
error. The main loop asks every second; each distinct reason for waiting is logged once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from kubevipd.config.model import Config, ElectionSpec
from kubevipd.election.base import Election, Observer
from kubevipd.election.lease import ElectionSetupError
from kubevipd.resolve import election_spec
from kubevipd.supervise import supervise

log = logging.getLogger("kubevipd")
T = TypeVar("T")


class ElectionConnector:
    def __init__(
        self,
        make: Callable[[ElectionSpec, str], Election],
        identity: str,
        ca_of: Callable[[Path, Path], str | None],
    ) -> None:
        self.make = make
        self.identity = identity
        self.ca_of = ca_of
        self._waiting_for_file = False
        self._last_error = ""

    def _from_kubeconfig(self, cfg: Config, use: Callable[[ElectionSpec], T]) -> T | None:
        """``use(spec)``, or None while the kubeconfig is missing or not usable yet (caught
        mid-write, or rewritten by kubeadm): each distinct reason to wait is logged once."""
        spec = election_spec(cfg)
        if not spec.kubeconfig.exists():
            if not self._waiting_for_file:  # said again if it goes away once more
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
        self._waiting_for_file = False
        try:
            out = use(spec)
        except ElectionSetupError as e:
            if str(e) != self._last_error:
                log.warning("%s; waiting for it to become usable", e)
                self._last_error = str(e)
            return None
        self._last_error = ""
        return out

    def health_ca(self, cfg: Config) -> str | None:
        """A node that runs no election (all-nodes mode) still checks its apiserver over TLS:
        the PEM of the CA comes from the same kubeconfig, and nothing else is read from it.
        None while it is missing or not usable (logged as for the election); "" when it names
        no CA (the system's)."""
        wanted = cfg.election.kubeconfig

        def ca(spec: ElectionSpec) -> str:
            # A relative CA path is the original's directory's, the copy read under the unit
            # being elsewhere.
            pem = self.ca_of(spec.kubeconfig, wanted.parent) or ""
            where = f"{wanted}" + (
                f" (read at {spec.kubeconfig})" if spec.kubeconfig != wanted else ""
            )
            if pem:
                log.info("health check trusts the CA of kubeconfig %s", where)
            else:
                log.info("kubeconfig %s names no CA: health check trusts the system's", where)
            return pem

        pem = self._from_kubeconfig(cfg, ca)
        return pem

    def connect(self, cfg: Config, vip_text: str) -> Election | None:
        """The client, or None while the kubeconfig is missing or not usable yet."""
        election = self._from_kubeconfig(cfg, lambda spec: self.make(spec, self.identity))
        if election is None:
            return None
        t = cfg.election
        log.info(
            "kubevipd on node %s: %s, lease %s (%s/%s/%s)",
            self.identity,
            vip_text,
            election.describe(),
            t.lease_duration,
            t.renew_deadline,
            t.retry_period,
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
