#!/usr/bin/env python3
"""The kube-vip-like baseline: a polling Lease elector, run on one lab node by bench/failover.py.

The election loop is the ``kubernetes`` package's own ``kubernetes.leaderelection`` (what a
Python operator gets from the official client), not kubevipd's. That module ships only a
ConfigMap lock, so :class:`LeaseLock` gives it a ``coordination.k8s.io/v1`` Lease with the
module's get/create/update interface. Where the module differs from client-go, the lock and the
loop below make it behave like client-go as kube-vip configures it:

- a released Lease (empty holder) is free at once, as in client-go (the module alone would wait
  a full lease duration);
- every API call is bounded and not retried, as client-go's are;
- SIGTERM stops the election, releases the Lease and then drops the VIP (client-go's
  ``ReleaseOnCancel``, which kube-vip sets, cancels the renewals and releases before
  ``OnStoppedLeading`` runs). The election runs in a thread and the main thread takes SIGTERM
  with ``sigwait``: a handler that made API calls deadlocked when the signal landed while the
  main thread held urllib3's connection-pool lock (a bench stop that never ended);
- after losing the Lease the node drops the VIP and campaigns again.

Followers poll the Lease every retry period (the module has no watch). The VIP is added and
announced with kubevipd's own netlink and ARP code, so the comparison is about the election.

Like kube-vip on a kubeadm node, it takes its credentials from the node's kubeconfig (whose
server is the VIP, as kubeadm writes admin.conf) but talks to the node's own apiserver:
kube-vip rewrites the API host to ``kubernetes:6443``, a host alias for 127.0.0.1, because the
certificate names ``kubernetes`` and not 127.0.0.1. Here: ``--server https://127.0.0.1:6443
--tls-server-name kubernetes``. When that apiserver dies or loses etcd, the leader's renewals
fail until the renew deadline, and the followers take the Lease when it expires (client-go's
release after a lost renewal goes to the same dead apiserver, so it changes nothing).

    ip netns exec NS python bench/polling_elector.py --kubeconfig K --identity n1 \
        --server https://127.0.0.1:6443 --tls-server-name kubernetes \
        --interface eth0 --vip 10.0.0.100 --ready-file /run/x/ready
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import urllib3  # noqa: E402
from kubernetes import client, config  # noqa: E402
from kubernetes.client.rest import ApiException  # noqa: E402
from kubernetes.leaderelection import electionconfig, leaderelection  # noqa: E402
from kubernetes.leaderelection.leaderelectionrecord import LeaderElectionRecord  # noqa: E402

from kubevipd.announce.arp import ArpAnnouncer  # noqa: E402
from kubevipd.election.lease import microtime  # noqa: E402
from kubevipd.vip.netlink import Vip, VipLink  # noqa: E402

log = logging.getLogger("polling-elector")
CALL_TIMEOUT = (1.0, 1.0)  # connect, read: a call never outlives the renew deadline (2s)


class _NetError:
    """What the module expects from a failed get: an object with a JSON ``body`` and a code."""

    def __init__(self, e: Exception) -> None:
        self.body = json.dumps({"code": 0})
        self.reason = str(e)


def _to_module_time(s: str | None) -> str | None:
    """MicroTime -> the module's own format (str of a naive local datetime)."""
    if not s:
        return None
    t = dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    return str(t.astimezone().replace(tzinfo=None))


def _to_microtime(s: str) -> str:
    """The module's time string (naive local time) -> MicroTime, as kubevipd writes it."""
    return microtime(dt.datetime.fromisoformat(s))  # astimezone() takes naive as local


class LeaseLock:
    """A Lease with the interface of ``kubernetes.leaderelection.resourcelock.ConfigMapLock``."""

    def __init__(self, name: str, namespace: str, identity: str, api: client.CoordinationV1Api):
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.api = api
        self._lease: dict[str, Any] | None = None  # as last read: its version guards updates
        # The election thread's calls and release() go one at a time; once released, the
        # election can neither renew nor take the Lease again.
        self._calls = threading.Lock()
        self._released = False

    def get(self, name: str, namespace: str) -> tuple[bool, Any]:
        with self._calls:
            return self._get(name, namespace)

    def _get(self, name: str, namespace: str) -> tuple[bool, Any]:
        try:
            resp = self.api.read_namespaced_lease(
                name, namespace, _request_timeout=CALL_TIMEOUT, _preload_content=False
            )
        except ApiException as e:
            return False, e
        except (urllib3.exceptions.HTTPError, OSError) as e:
            return False, _NetError(e)
        self._lease = json.loads(resp.data)
        spec = self._lease.get("spec") or {}
        holder = spec.get("holderIdentity") or None  # released: free at once, as in client-go
        if holder is None:
            return True, LeaderElectionRecord(None, None, None, None)
        return True, LeaderElectionRecord(
            holder,
            str(spec.get("leaseDurationSeconds")),
            _to_module_time(spec.get("acquireTime")),
            _to_module_time(spec.get("renewTime")),
        )

    def _body(self, record: LeaderElectionRecord) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        old_spec: dict[str, Any] = {}
        if self._lease is not None:
            meta["resourceVersion"] = self._lease["metadata"]["resourceVersion"]
            old_spec = self._lease.get("spec") or {}
        transitions = int(old_spec.get("leaseTransitions") or 0)
        if record.holder_identity and old_spec.get("holderIdentity") != record.holder_identity:
            transitions += 1 if old_spec.get("holderIdentity") else 0
        spec = {
            "holderIdentity": record.holder_identity or "",
            "leaseDurationSeconds": int(float(record.lease_duration)),
            "acquireTime": _to_microtime(record.acquire_time),
            "renewTime": _to_microtime(record.renew_time),
            "leaseTransitions": transitions,
        }
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
                "spec": spec}  # fmt: skip

    def create(self, name: str, namespace: str, election_record: LeaderElectionRecord) -> bool:
        self._lease = None
        return self._write(
            lambda body: self.api.create_namespaced_lease(
                namespace, body, _request_timeout=CALL_TIMEOUT, _preload_content=False
            ),
            election_record,
        )

    def update(self, name: str, namespace: str, updated_record: LeaderElectionRecord) -> bool:
        return self._write(self._replace, updated_record)

    def _replace(self, body: dict[str, Any]) -> Any:
        return self.api.replace_namespaced_lease(
            self.name, self.namespace, body, _request_timeout=CALL_TIMEOUT, _preload_content=False
        )

    def _write(self, call: Any, record: LeaderElectionRecord) -> bool:
        with self._calls:
            if self._released:
                return False
            return self._send(call, record)

    def _send(self, call: Any, record: LeaderElectionRecord) -> bool:
        try:
            resp = call(self._body(record))
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as e:
            log.info("write failed: %s", getattr(e, "status", e))
            return False
        self._lease = json.loads(resp.data)
        return True

    def release(self) -> None:
        """client-go's release: it reads the Lease first (a SIGTERM can land while a renewal is
        on the wire, leaving an older resourceVersion here), then writes an empty holder,
        leaseDurationSeconds 1, transitions kept. The election writes nothing after it."""
        with self._calls:
            self._released = True
            ok, record = self._get(self.name, self.namespace)
            if not ok or getattr(record, "holder_identity", None) != self.identity:
                return
            now = str(dt.datetime.now())
            self._send(self._replace, LeaderElectionRecord("", "1", now, now))


class VipHolder:
    def __init__(self, ifname: str, vip: str) -> None:
        address = ipaddress.ip_address(vip)
        self.link = VipLink(ifname, [Vip(address, 32 if address.version == 4 else 128)])
        self.arp = ArpAnnouncer(ifname, self.link.mac(), self.link.vips)
        self.lock = threading.Lock()
        self.leading = False
        self.closed = False  # after close(), a late start() adds nothing

    def start(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.leading = True
            self.link.add()
            self.arp.announce()
        log.info("took the VIP")

    def stop(self) -> None:
        with self.lock:
            if not self.leading:
                return
            self.leading = False
            self.link.remove()
        log.info("dropped the VIP")

    def close(self) -> None:
        with self.lock:
            self.closed = True
        self.stop()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--kubeconfig", required=True, help="credentials and CA (and the server, alone)"
    )
    ap.add_argument("--server", help="the apiserver to talk to instead of the kubeconfig's")
    ap.add_argument("--tls-server-name", help="the name to verify its certificate against")
    ap.add_argument("--identity", required=True)
    ap.add_argument("--interface", required=True)
    ap.add_argument("--vip", required=True)
    ap.add_argument("--ready-file", required=True)
    ap.add_argument("--namespace", default="kube-system")
    ap.add_argument("--lease", default="plndr-cp-lock")
    ap.add_argument("--lease-duration", type=int, default=3)
    ap.add_argument("--renew-deadline", type=int, default=2)
    ap.add_argument("--retry-period", type=int, default=1)  # the module's minimum
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", force=True)

    cfg = client.Configuration()
    config.load_kube_config(config_file=args.kubeconfig, client_configuration=cfg)
    if args.server:
        cfg.host = args.server.rstrip("/")
    if args.tls_server_name:
        cfg.assert_hostname = args.tls_server_name  # urllib3 checks the certificate against it
    cfg.retries = False
    hook = cfg.refresh_api_key_hook
    if hook is not None:  # kubernetes >= 26 sets the kubeconfig's host again on every call
        host, name = cfg.host, cfg.assert_hostname

        def keep_ours(c: client.Configuration) -> None:
            hook(c)  # it also puts itself back as the hook: put ours back after it
            c.host, c.assert_hostname = host, name
            c.refresh_api_key_hook = keep_ours

        cfg.refresh_api_key_hook = keep_ours
    api = client.CoordinationV1Api(client.ApiClient(cfg))
    lock = LeaseLock(args.lease, args.namespace, args.identity, api)
    vip = VipHolder(args.interface, args.vip)

    election = electionconfig.Config(
        lock,
        lease_duration=args.lease_duration,
        renew_deadline=args.renew_deadline,
        retry_period=args.retry_period,
        onstarted_leading=vip.start,
        onstopped_leading=vip.stop,
    )

    def campaign() -> None:
        try:
            while True:  # bounded by the process's life: main() returns after SIGTERM
                leaderelection.LeaderElection(election).run()
                time.sleep(args.retry_period)
        except BaseException:
            log.exception("the election failed; stopping")
            os.kill(os.getpid(), signal.SIGTERM)  # a live process must campaign, or exit

    # Blocked before any thread exists, so every thread inherits the mask and SIGTERM reaches
    # only the sigwait below: no handler runs in the middle of an API call.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    threading.Thread(target=campaign, name="election", daemon=True).start()
    Path(args.ready_file).touch()
    signal.sigwait({signal.SIGTERM})
    try:
        lock.release()
    finally:
        vip.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
