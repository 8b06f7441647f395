"""The API discovery documents a lab apiserver serves, as a kube-apiserver 1.29 would.

Clients such as kubectl read these before their first call, to map ``leases`` and
``endpointslices`` to their groups and versions. Only the two groups the lab serves are listed
(coordination.k8s.io/v1 Leases, discovery.k8s.io/v1 EndpointSlices). The HTTP handler
(``kubevipd.lab.http_api``) answers a GET of any path in :data:`DISCOVERY`.
"""

from __future__ import annotations

from typing import Any

from kubevipd.lab.store import GROUP, GROUP_VERSION, LEASES, VERSION

_LEASE_RESOURCE = {
    "name": "leases",
    "singularName": "lease",
    "namespaced": True,
    "kind": "Lease",
    "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
    "storageVersionHash": "gqkMMb/YqFM=",
}
_GROUP = {
    "name": GROUP,
    "versions": [{"groupVersion": GROUP_VERSION, "version": VERSION}],
    "preferredVersion": {"groupVersion": GROUP_VERSION, "version": VERSION},
}
_DISCOVERY_GROUP = {
    "name": "discovery.k8s.io",
    "versions": [{"groupVersion": "discovery.k8s.io/v1", "version": "v1"}],
    "preferredVersion": {"groupVersion": "discovery.k8s.io/v1", "version": "v1"},
}
_SLICE_RESOURCE = {
    "name": "endpointslices",
    "singularName": "endpointslice",
    "namespaced": True,
    "kind": "EndpointSlice",
    "verbs": ["get", "list"],
}
DISCOVERY: dict[str, dict[str, Any]] = {
    "/version": {
        "major": "1",
        "minor": "29",
        "gitVersion": "v1.29.0-kubevipd-lab",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.21.5",
        "compiler": "gc",
        "platform": "linux/amd64",
    },
    "/api": {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    },
    "/api/v1": {"kind": "APIResourceList", "groupVersion": "v1", "resources": []},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_GROUP, _DISCOVERY_GROUP]},
    f"/apis/{GROUP}": {"kind": "APIGroup", "apiVersion": "v1", **_GROUP},
    "/apis/discovery.k8s.io": {"kind": "APIGroup", "apiVersion": "v1", **_DISCOVERY_GROUP},
    "/apis/discovery.k8s.io/v1": {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "discovery.k8s.io/v1",
        "resources": [_SLICE_RESOURCE],
    },
    LEASES: {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": GROUP_VERSION,
        "resources": [_LEASE_RESOURCE],
    },
}
