"""The lab Lease API server, driven by clients no one here wrote: the ``kubernetes`` library and
Debian's kubectl. It must behave as a kube-apiserver does for everything kubevipd relies on."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.watch.watch import iter_resp_lines

from kubevipd.lab.apiserver import LabApiServer

from .conftest import KubeconfigFactory, kubectl

NS = "kube-system"
NAME = "plndr-cp-lock"
T0 = "2026-11-25T10:00:00.000000Z"


def lease_api(kubeconfig: Path) -> k8s.CoordinationV1Api:
    cfg = k8s.Configuration()
    k8s_config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    cfg.retries = False
    return k8s.CoordinationV1Api(k8s.ApiClient(cfg))


def body(holder: str = "n1", rv: str | None = None, renew: str = T0) -> dict[str, object]:
    meta: dict[str, object] = {"name": NAME, "namespace": NS}
    if rv:
        meta["resourceVersion"] = rv
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": meta,
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": 5,
            "acquireTime": T0,
            "renewTime": renew,
            "leaseTransitions": 0,
        },
    }


def status_of(fn: object) -> int:
    with pytest.raises(k8s.ApiException) as e:
        fn()  # type: ignore[operator]
    return int(e.value.status)


# ------------------------------------------------------------------ auth


def test_no_token_is_401_unknown_token_is_401(
    api: LabApiServer, kubeconfig: KubeconfigFactory
) -> None:
    anon = lease_api(kubeconfig("no-such-token"))
    assert status_of(lambda: anon.read_namespaced_lease(NAME, NS)) == 401
    import http.client
    import ssl

    ctx = ssl.create_default_context(cafile=str(api.pki.ca_cert))
    conn = http.client.HTTPSConnection("127.0.0.1", api.port, context=ctx, timeout=5)
    conn.request("GET", f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases")
    resp = conn.getresponse()
    doc = json.loads(resp.read())
    assert resp.status == 401 and doc["kind"] == "Status" and doc["reason"] == "Unauthorized"


def test_a_token_without_rights_is_403_with_the_apiservers_message(
    api: LabApiServer, kubeconfig: KubeconfigFactory
) -> None:
    nobody = lease_api(kubeconfig("lab-nobody-token"))
    with pytest.raises(k8s.ApiException) as e:
        nobody.read_namespaced_lease(NAME, NS)
    assert e.value.status == 403
    msg = json.loads(e.value.body)["message"]
    assert msg == (
        'leases.coordination.k8s.io "plndr-cp-lock" is forbidden: User "nobody" cannot get '
        'resource "leases" in API group "coordination.k8s.io" in the namespace "kube-system"'
    )
    viewer = lease_api(kubeconfig("lab-viewer-token"))
    assert status_of(lambda: viewer.read_namespaced_lease(NAME, NS)) == 404
    assert status_of(lambda: viewer.create_namespaced_lease(NS, body())) == 403


# ------------------------------------------------------------------ CRUD and concurrency


def test_create_conflicts_and_resource_versions(kubeconfig: KubeconfigFactory) -> None:
    api = lease_api(kubeconfig())
    created = api.create_namespaced_lease(NS, body())
    rv = created.metadata.resource_version
    assert created.spec.holder_identity == "n1" and created.metadata.uid
    assert status_of(lambda: api.create_namespaced_lease(NS, body())) == 409
    updated = api.replace_namespaced_lease(NAME, NS, body("n2", rv=rv))
    assert int(updated.metadata.resource_version) > int(rv)
    # A stale resourceVersion is a lost race: 409 Conflict.
    with pytest.raises(k8s.ApiException) as e:
        api.replace_namespaced_lease(NAME, NS, body("n3", rv=rv))
    assert e.value.status == 409 and json.loads(e.value.body)["reason"] == "Conflict"
    # An update that changes nothing keeps the resourceVersion, as the apiserver does.
    same = api.replace_namespaced_lease(NAME, NS, body("n2", rv=updated.metadata.resource_version))
    assert same.metadata.resource_version == updated.metadata.resource_version
    api.delete_namespaced_lease(NAME, NS)
    assert status_of(lambda: api.read_namespaced_lease(NAME, NS)) == 404
    assert status_of(lambda: api.replace_namespaced_lease(NAME, NS, body("n2"))) == 404


def test_microtime_must_have_six_fractional_digits(kubeconfig: KubeconfigFactory) -> None:
    api = lease_api(kubeconfig())
    with pytest.raises(k8s.ApiException) as e:
        api.create_namespaced_lease(NS, body(renew="2026-11-25T10:00:00Z"))
    assert e.value.status == 422
    assert json.loads(e.value.body)["details"]["causes"][0]["field"] == "spec.renewTime"


# ------------------------------------------------------------------ list and watch


def _watch(api: k8s.CoordinationV1Api, rv: str, seconds: int = 5) -> list[dict[str, object]]:
    resp = api.list_namespaced_lease(
        NS,
        field_selector=f"metadata.name={NAME}",
        watch=True,
        resource_version=rv,
        allow_watch_bookmarks=True,
        timeout_seconds=seconds,
        _preload_content=False,
        _request_timeout=(2, seconds + 5),
    )
    return [json.loads(line) for line in iter_resp_lines(resp)]


def test_watch_delivers_changes_in_order_with_bookmarks(kubeconfig: KubeconfigFactory) -> None:
    api = lease_api(kubeconfig())
    start = api.list_namespaced_lease(NS).metadata.resource_version
    events: list[dict[str, object]] = []
    t = threading.Thread(target=lambda: events.extend(_watch(api, start, seconds=2)))
    t.start()
    rv = api.create_namespaced_lease(NS, body()).metadata.resource_version
    rv = api.replace_namespaced_lease(NAME, NS, body("n2", rv=rv)).metadata.resource_version
    api.delete_namespaced_lease(NAME, NS)
    t.join(10)
    kinds = [e["type"] for e in events if e["type"] != "BOOKMARK"]
    assert kinds == ["ADDED", "MODIFIED", "DELETED"]
    assert any(e["type"] == "BOOKMARK" for e in events)
    holders = [e["object"]["spec"]["holderIdentity"] for e in events if e["type"] != "BOOKMARK"]  # type: ignore[index]
    assert holders == ["n1", "n2", "n2"]


def test_a_watch_from_a_compacted_version_gets_410_gone(
    api: LabApiServer, kubeconfig: KubeconfigFactory
) -> None:
    client = lease_api(kubeconfig())
    old = client.create_namespaced_lease(NS, body()).metadata.resource_version
    client.replace_namespaced_lease(NAME, NS, body("n2", rv=old))
    api.store.compact()
    events = _watch(client, str(int(old) - 1), seconds=1)
    assert events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410  # type: ignore[index]
    assert events[0]["object"]["reason"] == "Expired"  # type: ignore[index]


# ------------------------------------------------------------------ kubectl


def test_kubectl_reads_the_lease(kubeconfig: KubeconfigFactory) -> None:
    api = lease_api(kubeconfig())
    api.create_namespaced_lease(NS, body("cp1"))
    kc = str(kubeconfig())
    out = subprocess.run(
        [kubectl(), "--kubeconfig", kc, "get", "lease", "-n", NS, NAME, "-o", "yaml"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    doc = yaml.safe_load(out.stdout)
    assert doc["kind"] == "Lease" and doc["apiVersion"] == "coordination.k8s.io/v1"
    assert doc["spec"]["holderIdentity"] == "cp1"
    assert doc["spec"]["renewTime"] == T0
    listing = subprocess.run(
        [kubectl(), "--kubeconfig", kc, "get", "leases", "-n", NS],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listing.returncode == 0 and NAME in listing.stdout, listing.stderr
    denied = subprocess.run(
        [kubectl(), "--kubeconfig", str(kubeconfig("lab-nobody-token")), "get", "lease",
         "-n", NS, NAME],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()


# ------------------------------------------------------------------ faults


def test_injected_faults(api: LabApiServer, kubeconfig: KubeconfigFactory) -> None:
    client = lease_api(kubeconfig())
    api.faults.fail_next = 1
    assert status_of(lambda: client.read_namespaced_lease(NAME, NS)) == 500
    assert status_of(lambda: client.read_namespaced_lease(NAME, NS)) == 404
    api.faults.drop_next = 1
    with pytest.raises(Exception) as dropped:
        client.read_namespaced_lease(NAME, NS)
    assert not isinstance(dropped.value, k8s.ApiException)
    api.faults.latency = 0.5
    began = time.monotonic()
    with pytest.raises(Exception) as slow:
        client.read_namespaced_lease(NAME, NS, _request_timeout=(0.2, 0.2))
    assert "timed out" in str(slow.value).lower() and time.monotonic() - began < 0.45
    api.faults.latency = 0.0
    api.faults.cut("kubernetes-admin")  # a partition of one client: nothing comes back
    with pytest.raises(Exception) as cut:
        client.read_namespaced_lease(NAME, NS, _request_timeout=(0.3, 0.3))
    assert "timed out" in str(cut.value).lower()
    other = lease_api(kubeconfig("lab-n1-token"))
    assert status_of(lambda: other.read_namespaced_lease(NAME, NS)) == 404
    api.faults.heal()
    assert status_of(lambda: client.read_namespaced_lease(NAME, NS)) == 404


def test_readyz_is_anonymous_and_per_client(api: LabApiServer) -> None:
    from kubevipd.health import check_once, ssl_context

    ctx = ssl_context(str(api.pki.ca_cert))
    ok, why = check_once(f"{api.url}/readyz", 2.0, ctx)
    assert ok and "HTTP 200" in why
    api.faults.not_ready.add("127.0.0.1")
    ok, why = check_once(f"{api.url}/readyz", 2.0, ctx)
    assert not ok and "HTTP 500" in why and "etcd" in why
