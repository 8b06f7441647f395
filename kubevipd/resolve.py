"""From the config to what runs on this host: identity, interface, VIP addresses, kubeconfig.

Kept free of heavy imports, so ``kubevipd cleanup`` (run by systemd right after a crash) can
remove the VIP without first loading the Kubernetes client or scapy.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

from kubevipd.config.model import (
    Config,
    ElectionSpec,
    default_election_server,
    not_supported_yet,
)
from kubevipd.kubeconfig_copy import KUBECONFIG_DIR_ENV
from kubevipd.vip.model import Vip
from kubevipd.vip.netlink import default_route_interface


class RunError(Exception):
    """Bad input found at run time: one clear line, exit status 2."""


def check_supported(cfg: Config) -> None:
    """Refuse what the daemon cannot do yet (the config schema already accepts it), in the
    words ``check-config`` uses: both ask config.model.not_supported_yet."""
    found = not_supported_yet(cfg)
    if found:
        raise RunError("; ".join(f"{'.'.join(path)}: {msg}" for path, msg in found))


def resolve_vips(cfg: Config) -> list[Vip]:
    if cfg.vip.dns is not None or cfg.vip.dhcp is not None:
        raise RunError(
            "vip.dns and vip.dhcp are not supported by this version of the daemon yet; "
            "set vip.address"
        )
    out = []
    for i, addr in enumerate(cfg.vip.addresses):
        if cfg.vip.prefix_lengths is not None:
            plen = cfg.vip.prefix_lengths[i]
        else:
            plen = 32 if addr.version == 4 else 128
        out.append(Vip(addr, plen))
    return out


def resolve_identity(cfg: Config) -> str:
    return cfg.node_name or socket.gethostname().split(".")[0].lower()


def resolve_interface(cfg: Config) -> str:
    """``interface`` (in BGP mode the loader makes it ``lo`` when unset: a routed VIP needs no
    segment), else the default route's, as kube-vip picks one."""
    if cfg.interface:
        return cfg.interface
    found = default_route_interface()
    if found is None:
        raise RunError("interface is not set and there is no default route to pick one from")
    return found


KUBECONFIG_CREDENTIAL = "kubeconfig"


def check_server_is_not_the_vip(cfg: Config, vips: list[Vip], timeout: float = 2.0) -> None:
    """The loader refuses an ``election.server`` that *is* the VIP; a name can still resolve to
    it (kubeadm's docs suggest a DNS name as the control-plane endpoint, which an operator may
    copy from admin.conf). Looked up once at start, bounded; a name that does not resolve now
    is left to the connection errors, which say so and retry."""
    server = cfg.election.server
    host = urlsplit(server).hostname if server else None
    if not host:
        return
    try:
        ipaddress.ip_address(host)
        return  # an address: the loader compared it already
    except ValueError:
        pass
    import concurrent.futures

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    job = pool.submit(socket.getaddrinfo, host, None)
    pool.shutdown(wait=False)
    try:
        found = {ipaddress.ip_address(a[4][0]) for a in job.result(timeout)}
    except (OSError, UnicodeError, concurrent.futures.TimeoutError, ValueError):
        return
    hit = sorted(str(v.address) for v in vips if v.address in found)
    if hit:
        raise RunError(
            f"election.server {host} resolves to the VIP ({', '.join(hit)}), which nobody holds "
            "at bootstrap or after a crash: remove election.server (default "
            f"{default_election_server(cfg.vip.port)}) or name this node's own apiserver"
        )


def election_spec(cfg: Config) -> ElectionSpec:
    """The election settings as the daemon uses them: the server it talks to (the configured
    ``election.server``, else this node's own apiserver) and the kubeconfig it can read.

    The kubeconfig, in order: systemd's credential (``LoadCredential=kubeconfig:PATH``), then
    the copy that kubevipd-kubeconfig.service keeps in ``$KUBEVIPD_KUBECONFIG_DIR`` for the
    non-root daemon (same file name, so the super-admin.conf fallback is found there too), then
    the configured file itself. It supplies credentials and the CA, never the address.
    """
    # kubevipd.health.tls_name verifies 127.0.0.1 against "kubernetes", the name kubeadm's and
    # k3s's certificates carry; kube-vip reaches the same apiserver as https://kubernetes:6443.
    server = cfg.election.server or default_election_server(cfg.vip.port)
    spec = replace(cfg.election, server=server)
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if directory:
        cred = Path(directory) / KUBECONFIG_CREDENTIAL
        if cred.is_file():
            return replace(spec, kubeconfig=cred)
    copies = os.environ.get(KUBECONFIG_DIR_ENV)
    if copies:
        return replace(spec, kubeconfig=Path(copies) / spec.kubeconfig.name)
    return spec
