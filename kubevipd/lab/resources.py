"""What each API call does, apart from HTTP: the verb, the RBAC check, and the call on the store.

The lab apiserver's HTTP handler (``kubevipd.lab.http_api``) parses the path and the query and
hands them here; these functions answer with a status code and a document or raise
:class:`~kubevipd.lab.store.ApiError`, as the apiserver's REST storage does. Kept apart from the
handler so the API's semantics (Lease get, list, create, update, delete; EndpointSlice get and
list; who may do what) read in one place, without the sockets, the faults and the streaming.
Watches, which are streams, stay in the handler.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from kubevipd.lab.store import (
    GROUP,
    GROUP_VERSION,
    ApiError,
    LeaseStore,
    lease_details,
    parse_lease,
)

# token -> (user, verbs allowed), as LabApiServer.tokens holds them.
Tokens = dict[str, tuple[str, frozenset[str]]]


def go_bool(s: str) -> bool:
    """Query booleans as the apiserver parses them (Go's strconv.ParseBool)."""
    if s in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if s in ("0", "f", "F", "FALSE", "false", "False", ""):
        return False
    raise ApiError(400, "BadRequest", f"invalid boolean value {s!r}")


def field_selector(q: dict[str, list[str]]) -> str | None:
    """The name of a ``metadata.name`` field selector, the only one the lab knows."""
    sel = q.get("fieldSelector", [""])[0]
    if not sel:
        return None
    m = re.fullmatch(r"metadata\.name==?([a-z0-9.-]+)", sel)
    if m is None:
        raise ApiError(
            400, "BadRequest", f'"{sel}" is not a known field selector: only metadata.name'
        )
    return m.group(1)


def request_verb(method: str, name: str | None, q: dict[str, list[str]]) -> str:
    """The RBAC verb of a Lease request: get, list, watch, create, update or delete."""
    if method == "GET":
        if go_bool(q.get("watch", ["false"])[0]):
            return "watch"
        return "get" if name else "list"
    verbs = {("POST", False): "create", ("PUT", True): "update", ("DELETE", True): "delete"}
    verb = verbs.get((method, bool(name)))
    if verb is None:
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported here")
    return verb


def authorize(tokens: Tokens, user: str, verb: str, ns: str | None, name: str | None) -> None:
    """Raise the apiserver's 403 unless ``user`` may ``verb`` Leases."""
    allowed = next((v for u, v in tokens.values() if u == user), frozenset())
    if verb in allowed:
        return
    where = f' in the namespace "{ns}"' if ns else " at the cluster scope"
    what = f'leases.{GROUP} "{name}"' if name else f"leases.{GROUP}"
    msg = (
        f'{what} is forbidden: User "{user}" cannot {verb} resource "leases" in API group '
        f'"{GROUP}"{where}'
    )
    raise ApiError(403, "Forbidden", msg, lease_details(name or ""))


def lease_call(
    store: LeaseStore,
    verb: str,
    ns: str | None,
    name: str | None,
    q: dict[str, list[str]],
    body: bytes,
) -> tuple[int, dict[str, Any]]:
    """A Lease get, list, create, update or delete on ``store``: the status code and the body."""
    if verb == "list":
        sel = field_selector(q)
        items, rv = store.items(ns, sel or None)
        return 200, {
            "kind": "LeaseList",
            "apiVersion": GROUP_VERSION,
            "metadata": {"resourceVersion": str(rv)},
            "items": items,
        }
    if ns is None:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    if verb == "get":
        assert name is not None
        return 200, store.get(ns, name)
    if verb == "delete":
        assert name is not None
        store.delete(ns, name)
        return 200, {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": lease_details(name),
        }
    obj = parse_lease(body, ns, name)
    if verb == "create":
        return 201, store.create(ns, obj)
    assert name is not None
    return 200, store.update(ns, name, obj)


def endpoint_slices(
    tokens: Tokens,
    store: LeaseStore,
    user: str,
    ns: str | None,
    name: str | None,
    q: dict[str, list[str]],
) -> dict[str, Any]:
    """get and list (labelSelector kubernetes.io/service-name=...) of EndpointSlices, for any
    user with read rights, as kubeadm's admin and the system:discovery roles have. The answer
    is always 200 with this document."""
    allowed = next((v for u, v in tokens.values() if u == user), frozenset())
    if "get" not in allowed:
        where = f' in the namespace "{ns}"' if ns else " at the cluster scope"
        msg = (
            f'endpointslices.discovery.k8s.io is forbidden: User "{user}" cannot '
            f'{"get" if name else "list"} resource "endpointslices" in API group '
            f'"discovery.k8s.io"{where}'
        )
        raise ApiError(403, "Forbidden", msg)
    with store.cond:
        slices = {k: copy.deepcopy(v) for k, v in store.endpoint_slices.items()}
        rv = store.rv
    if name is not None:
        assert ns is not None
        obj = slices.get((ns, name))
        if obj is None:
            msg = f'endpointslices.discovery.k8s.io "{name}" not found'
            raise ApiError(404, "NotFound", msg, {"name": name, "kind": "endpointslices"})
        return obj
    sel = q.get("labelSelector", [""])[0]
    want = dict(p.split("=", 1) for p in sel.replace("==", "=").split(",") if "=" in p)
    items = [
        o
        for (ons, _), o in sorted(slices.items())
        if (ns is None or ons == ns)
        and all((o["metadata"].get("labels") or {}).get(k) == v for k, v in want.items())
    ]
    return {
        "kind": "EndpointSliceList",
        "apiVersion": "discovery.k8s.io/v1",
        "metadata": {"resourceVersion": str(rv)},
        "items": items,
    }
