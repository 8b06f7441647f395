"""kubevipd's Lease backend (kubernetes client) against the lab API server."""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from pathlib import Path

import pytest

from kubevipd.config.model import ElectionSpec
from kubevipd.election import client as lease_mod
from kubevipd.election.base import LeaderRecord, acquire_record, release_record
from kubevipd.election.lease import ElectionSetupError, LeaseElection
from kubevipd.lab.apiserver import ALL_VERBS, LabApiServer

from .conftest import KubeconfigFactory

MICRO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def election(kc: Path, ident: str = "n1") -> LeaseElection:
    return LeaseElection(ElectionSpec(kubeconfig=kc), ident)


def stored(api: LabApiServer) -> dict[str, object]:
    return api.store.get("kube-system", "plndr-cp-lock")


def test_writes_follow_client_go_field_for_field(
    api: LabApiServer, kubeconfig: KubeconfigFactory
) -> None:
    e = election(kubeconfig())
    first = e.write("acquire", acquire_record(None, "n1", 5, time.time(), False), 2.0)
    assert first.ok and first.record is not None and first.record.version
    spec = stored(api)["spec"]
    assert isinstance(spec, dict)
    assert spec["holderIdentity"] == "n1" and spec["leaseDurationSeconds"] == 5
    assert spec["leaseTransitions"] == 0
    assert MICRO.match(spec["acquireTime"]) and MICRO.match(spec["renewTime"])
    renewed = e.write("renew", acquire_record(first.record, "n1", 5, time.time() + 1, False), 2.0)
    assert renewed.ok and renewed.record is not None
    assert renewed.record.acquire_time == first.record.acquire_time
    released = e.write("release", release_record(renewed.record, time.time()), 2.0)
    assert released.ok and released.record is not None
    spec = stored(api)["spec"]
    assert isinstance(spec, dict)
    assert spec["holderIdentity"] == "" and spec["leaseDurationSeconds"] == 1


def test_annotations_and_labels_of_others_survive_a_renewal(
    api: LabApiServer, kubeconfig: KubeconfigFactory
) -> None:
    e = election(kubeconfig())
    r = e.write("acquire", acquire_record(None, "n1", 5, time.time(), False), 2.0).record
    assert r is not None
    obj = stored(api)
    meta = obj["metadata"]
    assert isinstance(meta, dict)
    meta["labels"] = {"team": "platform"}
    meta["annotations"] = {"example.com/owner": "ops"}
    api.store.update("kube-system", "plndr-cp-lock", obj)
    fresh = e.read(2.0).record
    assert fresh is not None and fresh.annotations == {"example.com/owner": "ops"}
    out = e.write("renew", acquire_record(fresh, "n1", 5, time.time(), False), 2.0)
    assert out.ok
    meta = stored(api)["metadata"]
    assert isinstance(meta, dict)
    assert meta["labels"] == {"team": "platform"}
    assert meta["annotations"] == {"example.com/owner": "ops"}


def test_a_lost_race_returns_the_winners_record(kubeconfig: KubeconfigFactory) -> None:
    a, b = election(kubeconfig(), "a"), election(kubeconfig(), "b")
    base = a.write("acquire", acquire_record(None, "a", 5, time.time(), False), 2.0).record
    assert base is not None
    won = b.write("acquire", acquire_record(base, "b", 5, time.time(), False), 2.0)
    lost = a.write("renew", acquire_record(base, "a", 5, time.time(), False), 2.0)
    assert won.ok and not lost.ok and lost.conflict
    assert lost.record is not None and lost.record.holder == "b"
    create_again = a.write("acquire", acquire_record(None, "a", 5, time.time(), False), 2.0)
    assert create_again.conflict and create_again.record is not None


def test_a_timed_out_write_that_went_through_is_read_back(
    api: LabApiServer, kubeconfig: KubeconfigFactory
) -> None:
    e = election(kubeconfig())
    api.faults.latency, api.faults.delay_next = 0.6, 1
    began = time.monotonic()
    out = e.write("acquire", acquire_record(None, "n1", 5, time.time(), False), 0.5)
    assert out.ok and out.record is not None and out.record.holder == "n1"
    assert time.monotonic() - began < 1.5


def test_a_write_into_a_partition_times_out_within_its_budget(
    api: LabApiServer, kubeconfig: KubeconfigFactory
) -> None:
    e = election(kubeconfig())
    api.faults.cut("kubernetes-admin")
    began = time.monotonic()
    out = e.write("acquire", acquire_record(None, "n1", 5, time.time(), False), 0.4)
    spent = time.monotonic() - began
    api.faults.heal()
    assert not out.ok and out.error_kind == "timeout"
    assert out.error == "no answer within 0.4s"
    assert spent < 1.2  # the write and its read-back, each bounded; no urllib3 retries


def test_error_kinds(api: LabApiServer, kubeconfig: KubeconfigFactory) -> None:
    nobody = election(kubeconfig("lab-nobody-token"))
    out = nobody.write("acquire", acquire_record(None, "n1", 5, time.time(), False), 2.0)
    assert out.error_kind == "forbidden" and "cannot create" in out.error
    api.faults.fail_next = 1
    out = election(kubeconfig()).read(2.0)
    assert out.error_kind == "server" and out.error.startswith("HTTP 500")
    api.stop()
    out = election(kubeconfig()).read(1.0)
    assert out.error_kind == "network" and out.error.startswith("cannot reach the apiserver")


def test_a_malformed_kubeconfig_is_a_setup_error(tmp_path: Path) -> None:
    bad = tmp_path / "kc"
    bad.write_text("apiVersion: v1\nkind: Config\nclusters: []\n")
    with pytest.raises(ElectionSetupError, match="cannot use kubeconfig"):
        election(bad)


def test_super_admin_conf_is_used_while_admin_conf_has_no_rights(
    api: LabApiServer,
    kubeconfig: KubeconfigFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin = kubeconfig("lab-nobody-token", name="admin.conf")
    kubeconfig("lab-admin-token", name="super-admin.conf")
    e = election(admin)
    caplog.set_level(logging.INFO, "kubevipd.election")
    out = e.write("acquire", acquire_record(None, "n1", 5, time.time(), False), 2.0)
    assert out.ok and e.kubeconfig_in_use.name == "super-admin.conf"
    assert any("using" in r.message and "super-admin.conf" in r.message for r in caplog.records)
    # kubeadm init finishes: admin.conf gets its rights; the next call after the retry
    # interval goes back to it.
    api.tokens["lab-nobody-token"] = ("nobody", ALL_VERBS)
    monkeypatch.setattr(lease_mod, "ADMIN_RETRY_S", 0.0)
    e._next_primary_try = 0.0
    assert e.read(2.0).ok
    assert e.kubeconfig_in_use.name == "admin.conf"
    assert any("works now" in r.message for r in caplog.records)


def test_a_rewritten_kubeconfig_is_loaded_again(
    api: LabApiServer, kubeconfig: KubeconfigFactory, caplog: pytest.LogCaptureFixture
) -> None:
    kc = kubeconfig("lab-n1-token", name="kubevip.conf")
    e = election(kc)
    caplog.set_level(logging.INFO, "kubevipd.election")
    assert e.read(2.0).ok
    # `kubeadm certs renew`: the file gets a new credential and the old one stops working.
    assert kubeconfig("lab-n2-token", name="kubevip.conf") == kc
    del api.tokens["lab-n1-token"]
    out = e.write("acquire", acquire_record(None, "n1", 5, time.time(), False), 2.0)
    assert out.ok, out.error
    assert any("changed; loaded it again" in r.message for r in caplog.records)
    # A file caught half-written is not used; the working client stays.
    kc.write_text("apiVersion: v1\nkind: Config\n")
    assert e.read(2.0).ok


def test_no_fallback_for_other_kubeconfigs(kubeconfig: KubeconfigFactory) -> None:
    kubeconfig("lab-admin-token", name="super-admin.conf")
    e = election(kubeconfig("lab-nobody-token", name="kubevip.conf"))
    assert e.read(2.0).error_kind == "forbidden"


def test_watch_follows_changes_and_recovers_from_a_restart_with_compaction(
    api: LabApiServer, kubeconfig: KubeconfigFactory
) -> None:
    writer = election(kubeconfig(), "n1")
    watcher = election(kubeconfig("lab-viewer-token"), "n2")
    seen: list[LeaderRecord | None] = []
    changed = threading.Condition()

    def observe(r: LeaderRecord | None) -> None:
        with changed:
            seen.append(r)
            changed.notify_all()

    def wait_for(pred: object, timeout: float = 10.0) -> bool:
        with changed:
            return changed.wait_for(lambda: pred(seen[-1] if seen else "none"), timeout)  # type: ignore[operator]

    stop = threading.Event()
    t = threading.Thread(target=watcher.watch, args=(observe, stop.is_set), daemon=True)
    t.start()
    try:
        assert wait_for(lambda r: r is None)  # the initial list: no lease yet
        rec = writer.write("acquire", acquire_record(None, "n1", 5, time.time(), False), 2.0)
        assert rec.record is not None
        began = time.monotonic()
        assert wait_for(lambda r: r is not None and r.holder == "n1")
        assert time.monotonic() - began < 1.0  # pushed by the watch, not polled
        api.stop()
        r2 = writer.write("renew", acquire_record(rec.record, "n1", 5, time.time(), False), 0.5)
        assert not r2.ok
        api.store.update(
            "kube-system",
            "plndr-cp-lock",
            {"metadata": {"name": "plndr-cp-lock"}, "spec": {"holderIdentity": "n9"}},
        )
        api.store.compact()  # the watcher's resourceVersion is gone: 410, then a relist
        api.restart()
        assert wait_for(lambda r: r is not None and r.holder == "n9", timeout=15)
        assert any(
            m == "GET" and "watch" not in p and "fieldSelector" in p for _, m, p, _ in api.requests
        )
    finally:
        began = time.monotonic()
        watcher.close()  # must not wait for the stream another thread is reading
        assert time.monotonic() - began < 1.0
        stop.set()
        t.join(5)
        assert not t.is_alive()


def test_the_server_setting_overrides_the_kubeconfigs_address(
    api: LabApiServer, pki: object, tmp_path: Path
) -> None:
    from kubevipd.lab.pki import Pki, write_kubeconfig

    assert isinstance(pki, Pki)
    kc = write_kubeconfig(tmp_path / "kc", "https://127.0.0.1:1", pki, "lab-admin-token")
    assert election(kc).read(1.0).error_kind == "network"
    e = LeaseElection(ElectionSpec(kubeconfig=kc, server=api.url), "n1")
    assert e.read(2.0).ok and api.url in e.describe()


def test_loopback_urls_verify_kubeadms_certificate_name(tmp_path: Path) -> None:
    """kubeadm's apiserver certificate names "kubernetes" but not 127.0.0.1: the health check
    and a loopback server must verify that name, not the address."""
    from kubevipd.health import check_once, ssl_context, tls_name
    from kubevipd.lab.apiserver import standard_tokens
    from kubevipd.lab.pki import make_pki, write_kubeconfig

    pki = make_pki(tmp_path / "pki", [], loopback=False)
    server = LabApiServer(pki, standard_tokens())
    server.start("127.0.0.1", 0)
    try:
        url = f"{server.url}/readyz"
        ctx = ssl_context(str(pki.ca_cert))
        ok, why = check_once(url, 2.0, ctx)
        assert not ok and "certificate" in why.lower()  # what a plain client gets
        assert tls_name(url) == "kubernetes"
        assert check_once(url, 2.0, ctx, tls_name(url)) == (True, f"{url}: HTTP 200")
        assert tls_name("https://10.0.0.1:6443/readyz") is None
        assert tls_name("https://127.0.0.1:6443/readyz", "cp.example") == "cp.example"
        kc = write_kubeconfig(tmp_path / "kc", server.url, pki, "lab-admin-token")
        assert election(kc).read(2.0).ok
    finally:
        server.stop()


def _blocked_in_a_read(t: threading.Thread, timeout: float) -> bool:
    """Wait (bounded) until thread ``t`` sits in a socket read, as its Python stack shows."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        frame = sys._current_frames().get(t.ident or -1)
        names = set()
        while frame is not None:
            names.add(frame.f_code.co_name)
            frame = frame.f_back
        if names & {"readinto", "recv_into", "recv"}:
            return True
        time.sleep(0.01)
    return False


def test_close_ends_a_watch_blocked_in_a_read(
    api: LabApiServer, kubeconfig: KubeconfigFactory
) -> None:
    """close() from another thread while the watch waits for events: returns at once, and the
    watch thread ends (closing the response instead can wait on the reader for good)."""
    e = election(kubeconfig())
    stop = threading.Event()
    t = threading.Thread(target=e.watch, args=(lambda r: None, stop.is_set), daemon=True)
    t.start()
    end = time.monotonic() + 10
    while api.watches < 1 and time.monotonic() < end:
        time.sleep(0.01)
    assert api.watches == 1
    assert _blocked_in_a_read(t, 5.0)  # the reader now waits for the next event
    began = time.monotonic()
    e.close()
    assert time.monotonic() - began < 1.0
    t.join(5)
    assert not t.is_alive()


# ------------------------------------------------------------------ the other apiservers


def test_a_release_goes_through_another_apiserver_when_ours_is_down(
    api: LabApiServer, kubeconfig: KubeconfigFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kubeadm's topology on loopback: "our" apiserver on 127.0.0.1, another node's on
    127.0.0.2, one store. The other is found in the kubernetes EndpointSlice; once ours is
    stopped, a release still lands, through it."""
    from kubevipd.election import peers
    from kubevipd.lab.apiserver import kubernetes_endpoint_slice

    other = LabApiServer(api.pki, api.tokens, store=api.store)
    other.start("127.0.0.2", api.port)
    try:
        api.store.set_endpoint_slice(
            "default", "kubernetes", kubernetes_endpoint_slice(["127.0.0.1", "127.0.0.2"], api.port)
        )
        # The whole of 127/8 is on lo: pretend only 127.0.0.1 is this host's.
        monkeypatch.setattr(peers, "is_local_address", lambda a: a == "127.0.0.1")
        e = election(kubeconfig())
        r = e.write("acquire", acquire_record(None, "n1", 5, time.time(), False), 2.0).record
        assert r is not None
        assert e.refresh_peers()
        api.stop()
        t0 = time.monotonic()
        out = e.write("release", release_record(r, time.time()), 1.0)
        assert out.ok, out.error
        assert time.monotonic() - t0 < 0.5  # no waiting for the dead one first
        assert other.store.get("kube-system", "plndr-cp-lock")["spec"]["holderIdentity"] == ""
        # Renewals never take that path: a leader whose apiserver is down must hand over.
        renew = e.write("renew", acquire_record(r, "n1", 5, time.time(), False), 1.0)
        assert not renew.ok and renew.error_kind == "network"
        e.close()
    finally:
        other.stop()


def test_without_the_endpointslice_a_release_needs_our_apiserver(
    api: LabApiServer, kubeconfig: KubeconfigFactory, caplog: pytest.LogCaptureFixture
) -> None:
    e = election(kubeconfig())
    r = e.write("acquire", acquire_record(None, "n1", 5, time.time(), False), 2.0).record
    assert r is not None
    with caplog.at_level(logging.WARNING, logger="kubevipd.election"):
        assert not e.refresh_peers()
    assert "cannot read the other apiservers (EndpointSlice default/kubernetes)" in caplog.text
    assert "followers wait for the lease to expire" in caplog.text
    api.stop()
    out = e.write("release", release_record(r, time.time()), 1.0)
    assert not out.ok
    e.close()


def test_the_local_apiserver_is_dropped_from_the_list_of_others() -> None:
    from kubevipd.election import peers

    doc = {
        "endpoints": [
            {"addresses": ["127.0.0.1"], "conditions": {"ready": True}},
            {"addresses": ["192.0.2.12"], "conditions": {"ready": True}},
            {"addresses": ["192.0.2.13"], "conditions": {"ready": False}},
            {"addresses": ["2001:db8::14"]},
            {"addresses": ["not-an-ip"]},
        ],
        "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}],
    }
    assert peers.apiserver_urls(doc) == [
        "https://127.0.0.1:6443",
        "https://192.0.2.12:6443",
        "https://[2001:db8::14]:6443",
    ]
    assert peers.remote_apiserver_urls(doc) == [
        "https://192.0.2.12:6443",
        "https://[2001:db8::14]:6443",
    ]


def test_a_peer_that_raises_does_not_spoil_the_release(
    api: LabApiServer, kubeconfig: KubeconfigFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One apiserver answers garbage (the write raises); ours still takes the release."""
    e = election(kubeconfig())
    r = e.write("acquire", acquire_record(None, "n1", 5, time.time(), False), 2.0).record
    assert r is not None

    class Broken:
        api = None  # every call through it raises

        def close(self) -> None:
            pass

    monkeypatch.setattr(e, "_peers", {"https://192.0.2.12:6443": Broken()})
    out = e.write("release", release_record(r, time.time()), 1.0)
    assert out.ok, out.error
    assert stored(api)["spec"]["holderIdentity"] == ""  # type: ignore[index]
    e.close()
