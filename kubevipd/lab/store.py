"""The lab's etcd: Leases with a global resourceVersion and a bounded event history.

:class:`LeaseStore` holds what every lab apiserver serves; several servers may share one, as
kubeadm's control-plane nodes share one etcd (``kubevipd.lab.topology``). It gives the
apiserver's storage semantics: optimistic concurrency (409 on a stale resourceVersion and on
create-if-exists), no-op updates that keep the version, and 410 Gone for a watch older than the
compacted history. :func:`parse_lease` checks a request body as the apiserver's validation does
(strict MicroTime, names, durations: 400 or 422). :class:`ApiError` is the Kubernetes Status
every layer raises; the HTTP handler (``kubevipd.lab.http_api``) turns it into the answer.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
import threading
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

GROUP = "coordination.k8s.io"
VERSION = "v1"
GROUP_VERSION = f"{GROUP}/{VERSION}"
LEASES = f"/apis/{GROUP_VERSION}"
_MICROTIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class ApiError(Exception):
    """A Kubernetes Status response."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            doc["details"] = self.details
        return doc


def _now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def lease_details(name: str) -> dict[str, Any]:
    """The ``details`` of a Status about the Lease ``name``."""
    return {"name": name, "group": GROUP, "kind": "leases"}


def _not_found(name: str) -> ApiError:
    msg = f'leases.{GROUP} "{name}" not found'
    return ApiError(404, "NotFound", msg, lease_details(name))


def _invalid(name: str, field_: str, value: Any, why: str) -> ApiError:
    msg = f'Lease.{GROUP} "{name}" is invalid: {field_}: Invalid value: {json.dumps(value)}: {why}'
    details = lease_details(name) | {
        "kind": "Lease",
        "causes": [{"reason": "FieldValueInvalid", "message": why, "field": field_}],
    }
    return ApiError(422, "Invalid", msg, details)


@dataclass
class Event:
    """One entry of the watch history: ADDED, MODIFIED or DELETED, at resourceVersion ``rv``."""

    rv: int
    type: str
    obj: dict[str, Any]


class LeaseStore:
    """Leases with a global resourceVersion and a bounded event history, as etcd gives."""

    def __init__(self, history: int = 1000) -> None:
        self.cond = threading.Condition()
        self.rv = 1
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: deque[Event] = deque(maxlen=history)
        # Oldest resourceVersion a watch may still start from (older: 410 Gone).
        self.compacted = 1
        # discovery.k8s.io/v1 EndpointSlices by (namespace, name): read-only for clients; the
        # lab writes the ``kubernetes`` one, as the apiservers' endpoint reconciler does.
        self.endpoint_slices: dict[tuple[str, str], dict[str, Any]] = {}

    def set_endpoint_slice(self, ns: str, name: str, obj: dict[str, Any]) -> None:
        with self.cond:
            self.rv += 1
            meta = obj.setdefault("metadata", {})
            meta.update(name=name, namespace=ns, resourceVersion=str(self.rv))
            self.endpoint_slices[(ns, name)] = copy.deepcopy(obj)

    def _commit(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        if self.events.maxlen is not None and len(self.events) == self.events.maxlen:
            self.compacted = self.events[0].rv
        self.events.append(Event(self.rv, kind, copy.deepcopy(obj)))
        self.cond.notify_all()
        return copy.deepcopy(obj)

    def compact(self) -> None:
        """Forget the event history, as an etcd compaction does: older watches get 410."""
        with self.cond:
            self.events.clear()
            self.compacted = self.rv

    def get(self, ns: str, name: str) -> dict[str, Any]:
        with self.cond:
            obj = self.objects.get((ns, name))
            if obj is None:
                raise _not_found(name)
            return copy.deepcopy(obj)

    def items(self, ns: str | None, name: str | None) -> tuple[list[dict[str, Any]], int]:
        with self.cond:
            items = [
                copy.deepcopy(o)
                for (ons, oname), o in sorted(self.objects.items())
                if (ns is None or ons == ns) and (name is None or oname == name)
            ]
            return items, self.rv

    def create(self, ns: str, obj: dict[str, Any]) -> dict[str, Any]:
        name = obj["metadata"]["name"]
        with self.cond:
            if (ns, name) in self.objects:
                msg = f'leases.{GROUP} "{name}" already exists'
                raise ApiError(409, "AlreadyExists", msg, lease_details(name))
            meta = obj["metadata"]
            meta.update(namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=_now_rfc3339())
            meta.pop("resourceVersion", None)
            out = self._commit("ADDED", obj)
            self.objects[(ns, name)] = copy.deepcopy(out)
            return out

    def update(self, ns: str, name: str, obj: dict[str, Any]) -> dict[str, Any]:
        with self.cond:
            old = self.objects.get((ns, name))
            if old is None:
                raise _not_found(name)
            want = obj["metadata"].get("resourceVersion")
            if want and want != old["metadata"]["resourceVersion"]:
                msg = (
                    f'Operation cannot be fulfilled on leases.{GROUP} "{name}": the object has '
                    "been modified; please apply your changes to the latest version and try again"
                )
                raise ApiError(409, "Conflict", msg, lease_details(name))
            new = copy.deepcopy(old)
            new["spec"] = obj.get("spec", {})
            for key in ("labels", "annotations"):
                if key in obj["metadata"]:
                    new["metadata"][key] = obj["metadata"][key]
                else:
                    new["metadata"].pop(key, None)
            if new == old:
                return copy.deepcopy(old)  # a no-op update keeps the resourceVersion
            out = self._commit("MODIFIED", new)
            self.objects[(ns, name)] = copy.deepcopy(out)
            return out

    def delete(self, ns: str, name: str) -> dict[str, Any]:
        with self.cond:
            old = self.objects.pop((ns, name), None)
            if old is None:
                raise _not_found(name)
            return self._commit("DELETED", old)

    def since(self, rv: int) -> list[Event]:
        """Events after ``rv``; caller holds ``cond``. Raises 410 when history is gone."""
        if rv < self.compacted:
            msg = f"too old resource version: {rv} ({self.compacted})"
            raise ApiError(410, "Expired", msg)
        return [e for e in self.events if e.rv > rv]


def parse_lease(body: bytes, ns: str, url_name: str | None) -> dict[str, Any]:
    """The body as a Lease, checked as the apiserver's validation does."""
    try:
        obj = json.loads(body)
    except ValueError as e:
        raise ApiError(400, "BadRequest", f"the body is not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ApiError(400, "BadRequest", "the body is not an object")
    if obj.get("kind", "Lease") != "Lease" or obj.get("apiVersion", GROUP_VERSION) != GROUP_VERSION:
        raise ApiError(400, "BadRequest", "the body is not a coordination.k8s.io/v1 Lease")
    meta = obj.get("metadata") or {}
    name = meta.get("name") or url_name or ""
    if url_name and name != url_name:
        raise _invalid(name, "metadata.name", name, "field is immutable")
    if not _DNS_SUBDOMAIN.match(name) or len(name) > 253:
        raise _invalid(name, "metadata.name", name, "a lowercase RFC 1123 subdomain is required")
    if meta.get("namespace") not in (None, "", ns):
        msg = (
            "the namespace of the provided object does not match the namespace sent on the request"
        )
        raise ApiError(400, "BadRequest", msg)
    spec_in = obj.get("spec") or {}
    spec: dict[str, Any] = {}
    for key in (
        "holderIdentity",
        "leaseDurationSeconds",
        "acquireTime",
        "renewTime",
        "leaseTransitions",
        "preferredHolder",
        "strategy",
    ):
        if spec_in.get(key) is not None:
            spec[key] = spec_in[key]
    for key in ("holderIdentity", "preferredHolder", "strategy"):
        if key in spec and not isinstance(spec[key], str):
            raise _invalid(name, f"spec.{key}", spec[key], "must be a string")
    for key in ("acquireTime", "renewTime"):
        if key in spec and not (isinstance(spec[key], str) and _MICROTIME.match(spec[key])):
            why = 'must be RFC 3339 with microseconds, e.g. "2006-01-02T15:04:05.000000Z"'
            raise _invalid(name, f"spec.{key}", spec[key], why)
    dur = spec.get("leaseDurationSeconds")
    if dur is not None and (not isinstance(dur, int) or isinstance(dur, bool) or dur <= 0):
        raise _invalid(name, "spec.leaseDurationSeconds", dur, "must be greater than 0")
    tr = spec.get("leaseTransitions")
    if tr is not None and (not isinstance(tr, int) or isinstance(tr, bool) or tr < 0):
        raise _invalid(name, "spec.leaseTransitions", tr, "must be greater than or equal to 0")
    out_meta: dict[str, Any] = {"name": name}
    for key in ("labels", "annotations", "resourceVersion"):
        if meta.get(key):
            out_meta[key] = meta[key]
    return {"apiVersion": GROUP_VERSION, "kind": "Lease", "metadata": out_meta, "spec": spec}
