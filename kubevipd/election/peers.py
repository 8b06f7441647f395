"""The other control-plane apiservers: where a leader releases the Lease when its own is down.

kubevipd reads and writes the Lease at this node's own apiserver (127.0.0.1), never through the
VIP. When that apiserver dies, the leader drops the VIP, but its release could reach nobody and
the followers would wait for the lease to expire (about 12 s with kube-vip's 15s/10s/2s). So the
release also goes to the other apiservers, which every apiserver lists in the ``kubernetes``
EndpointSlice of the ``default`` namespace (its endpoint reconciler keeps it). The list is read
through the local apiserver while it works, and kept for when it does not.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Mapping
from typing import Any

# The EndpointSlice every apiserver keeps up to date with the cluster's apiservers.
SLICE_NAMESPACE = "default"
SLICE_NAME = "kubernetes"
REFRESH_S = 30.0  # how often the list is read again (apiservers come and go rarely)
RETRY_S = 5.0  # after a failed read


def apiserver_urls(slice_doc: Mapping[str, Any]) -> list[str]:
    """``https://ADDRESS:PORT`` of every endpoint not marked unready, in the slice's order."""
    ports = slice_doc.get("ports") or []
    port = next((p.get("port") for p in ports if p.get("name") == "https"), None)
    if port is None and ports:
        port = ports[0].get("port")
    port = int(port or 6443)
    out: list[str] = []
    for ep in slice_doc.get("endpoints") or []:
        if (ep.get("conditions") or {}).get("ready") is False:
            continue
        for addr in ep.get("addresses") or []:
            try:
                ip = ipaddress.ip_address(addr)
            except ValueError:
                continue
            url = f"https://[{ip}]:{port}" if ip.version == 6 else f"https://{ip}:{port}"
            if url not in out:
                out.append(url)
    return out


def is_local_address(address: str) -> bool:
    """True when ``address`` is assigned on this host: binding to it works only then.

    The local apiserver is the one that failed; a release sent to it again would only wait.
    """
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return False
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s, contextlib.suppress(OSError):
        # IP_FREEBIND off (the default): EADDRNOTAVAIL for anything not on this host.
        s.bind((str(ip), 0))
        return True
    return False


def remote_apiserver_urls(slice_doc: Mapping[str, Any]) -> list[str]:
    """The apiservers of the other nodes (none whose address is on this host)."""
    out = []
    for url in apiserver_urls(slice_doc):
        host = url.split("//", 1)[1].rsplit(":", 1)[0]
        if not is_local_address(host):
            out.append(url)
    return out
