"""A Lease object (coordination.k8s.io/v1, as JSON) to a LeaderRecord and back, free of any I/O.

Kept apart from the client code so the field mapping can be read, and used, without the
``kubernetes`` package: what goes into the Lease is client-go's (see election.base), how it is
spelt is the apiserver's (MicroTime with exactly six fractional digits), and metadata kubevipd
does not own is carried over on every write.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from kubevipd.election.base import LeaderRecord


def microtime(t: dt.datetime) -> str:
    """MicroTime as the apiserver requires it: exactly six fractional digits and a zone."""
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(s: Any) -> dt.datetime | None:
    if not isinstance(s, str) or not s:
        return None
    try:
        return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None


def record_from_lease(obj: dict[str, Any]) -> LeaderRecord:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    return LeaderRecord(
        holder=spec.get("holderIdentity") or "",
        lease_duration_s=int(spec.get("leaseDurationSeconds") or 0),
        acquire_time=_parse_time(spec.get("acquireTime")),
        renew_time=_parse_time(spec.get("renewTime")),
        transitions=int(spec.get("leaseTransitions") or 0),
        annotations=dict(meta.get("annotations") or {}),
        version=str(meta.get("resourceVersion") or ""),
    )


def lease_from_record(
    r: LeaderRecord, namespace: str, name: str, base_meta: dict[str, Any] | None
) -> dict[str, Any]:
    """The Lease body; metadata we do not own (labels, owners) is carried over as client-go does."""
    meta: dict[str, Any] = {
        k: v
        for k, v in (base_meta or {}).items()
        if k in ("labels", "ownerReferences", "finalizers")
    }
    meta.update(name=name, namespace=namespace)
    if r.annotations:
        meta["annotations"] = dict(r.annotations)
    if r.version:
        meta["resourceVersion"] = r.version
    spec: dict[str, Any] = {
        "holderIdentity": r.holder,
        "leaseDurationSeconds": r.lease_duration_s,
        "leaseTransitions": r.transitions,
    }
    if r.acquire_time is not None:
        spec["acquireTime"] = microtime(r.acquire_time)
    if r.renew_time is not None:
        spec["renewTime"] = microtime(r.renew_time)
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}
