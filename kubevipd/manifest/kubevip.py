"""kube-vip's vocabulary: env var names, value formats and defaults, shared by render and import.

Keeping both directions on one table is what makes import(render(c)) == c hold.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

IMAGE_REPO = "ghcr.io/kube-vip/kube-vip"
IMAGE_TAG = "v1.2.3"  # pinned: a manifest must not change under the operator's feet
NAMESPACE = "kube-system"  # where kube-vip's pod / DaemonSet / ServiceAccount live
SERVICE_ACCOUNT = "kube-vip"
POD_NAME = "kube-vip"
DAEMONSET_NAME = "kube-vip-ds"
KUBECONFIG_MOUNT = "/etc/kubernetes/admin.conf"  # kube-vip reads this fixed path
SECRET_NAME = "kube-vip-secrets"  # the Secret a DaemonSet reads passwords and tokens from
METAL_TOKEN_ENV = "PACKET_AUTH_TOKEN"
ARP_RATE_DEFAULT_MS = 3000  # kube-vip's gratuitous ARP period when vip_arpRate is unset
DNS_REFRESH_MS = 3000  # kubevipd's default; kube-vip has no setting for it
CONFIG_DIR = "/etc/kubevip"  # where import-manifest tells the operator to put secrets

# logrus levels as kube-vip's vip_loglevel takes them
LOG_LEVELS = {"error": 2, "warning": 3, "info": 4, "debug": 5}


def peer_password_env(index: int) -> str:
    """Env var that carries peer ``index``'s password into bgp_peers by $(VAR) expansion."""
    return f"KUBEVIPD_BGP_PEER{index}_PASSWORD"


def secret_key_for_path(path: str) -> str:
    """Key in kube-vip-secrets for a secret the config reads from ``path`` (its file name)."""
    return re.sub(r"[^-._A-Za-z0-9]", "-", path.rstrip("/").rsplit("/", 1)[-1])


# kube-vip's BGP timers when bgp_hold_time / bgp_keepalive_interval are unset (its flags'
# defaults, cmd/kube-vip.go), in seconds: kubevipd's defaults are the same.
BGP_HOLD_TIME_DEFAULT_S = 30
BGP_KEEPALIVE_DEFAULT_S = 10
# What Go's strconv.ParseBool reads (kube-vip parses the multihop field with it); "" is unset.
GO_BOOLS = {
    "": False,
    **dict.fromkeys(("1", "t", "T", "true", "TRUE", "True"), True),
    **dict.fromkeys(("0", "f", "F", "false", "FALSE", "False"), False),
}
# GoBGP's TTL for every peer kube-vip marks multihop (pkg/bgp/peers.go: MultihopTtl: 50).
KUBE_VIP_MULTIHOP_TTL = 50
BGP_PORT = 179


@dataclass(frozen=True)
class PeerString:
    """One entry of kube-vip's bgp_peers: ``address:as:password:multihop[:port[:...]]``.

    kube-vip parses the port (the fifth field, default 179) but always dials 179. The fields
    after it (MP-BGP next-hop options, BFD) are kept in ``rest`` only to be reported.
    """

    address: str
    asn: int
    password: str
    multihop: bool
    port: int = BGP_PORT
    rest: tuple[str, ...] = ()

    def format(self) -> str:
        addr = ipaddress.ip_address(self.address)
        host = f"[{addr}]" if addr.version == 6 else str(addr)
        text = f"{host}:{self.asn}:{self.password}:{str(self.multihop).lower()}"
        return text if self.port == BGP_PORT else f"{text}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> PeerString:
        """Parse one bgp_peers entry; IPv6 addresses are written in brackets."""
        text = text.strip()
        if text.startswith("["):
            host, sep, rest = text[1:].partition("]")
            if not sep:
                # not the entry itself: its third field is a password
                raise ValueError("unclosed '[' in the IPv6 address of a BGP peer")
            parts = [host, *rest.lstrip(":").split(":")]
        else:
            parts = text.split(":")
        if len(parts) < 2:
            raise ValueError(f"BGP peer {text!r} is not address:as[:password[:multihop]]")
        ipaddress.ip_address(parts[0])
        # Past the AS comes the password: no field after it is ever echoed, for a ':' in the
        # password shifts it into them.
        hint = "(a ':' in the password splits the entry: kube-vip cannot carry one either)"
        try:
            asn = int(parts[1])
        except ValueError:
            raise ValueError(f"BGP peer {parts[0]}: the AS is not a number") from None
        password = parts[2] if len(parts) > 2 else ""
        flag = parts[3] if len(parts) > 3 else ""
        if flag not in GO_BOOLS:
            raise ValueError(f"BGP peer {parts[0]}: the multihop field is not true or false {hint}")
        multihop = GO_BOOLS[flag] if flag else False
        try:
            port = int(parts[4]) if len(parts) > 4 and parts[4] else BGP_PORT
        except ValueError:
            raise ValueError(f"BGP peer {parts[0]}: the port is not a number {hint}") from None
        if not 1 <= port <= 65535:
            raise ValueError(f"BGP peer {parts[0]}: port {port} is out of range (1 to 65535)")
        options = tuple(p for p in parts[5:] if p)
        return cls(parts[0], asn, password, multihop, port, options)


# Settings kube-vip has and kubevipd does not, with why: listed, never silently dropped.
UNSUPPORTED = {
    "svc_enable": "Service load-balancing is not part of kubevipd (control-plane VIP only)",
    "svc_election": "Service load-balancing is not part of kubevipd",
    "svc_leasename": "Service load-balancing is not part of kubevipd",
    "svc_namespace": "Service load-balancing is not part of kubevipd",
    "vip_servicesinterface": "Service load-balancing is not part of kubevipd",
    "lb_enable": "kubevipd has no IPVS load-balancer (the VIP fronts one apiserver)",
    "lb_port": "kubevipd has no IPVS load-balancer",
    "lb_fwdmethod": "kubevipd has no IPVS load-balancer",
    "lb_class_only": "Service load-balancing is not part of kubevipd",
    "lb_class_name": "Service load-balancing is not part of kubevipd",
    "enable_service_security": "Service load-balancing is not part of kubevipd",
    "egress_podcidr": "egress is not part of kubevipd",
    "egress_servicecidr": "egress is not part of kubevipd",
    "egress_withnftables": "egress is not part of kubevipd",
    "vip_wireguard": "wireguard mode is not supported",
    "vip_routingtable": "routing-table mode is not supported",
    "vip_routingtableid": "routing-table mode is not supported",
    "vip_routingtabletype": "routing-table mode is not supported",
    "vip_startleader": "raft mode is gone; kubevipd always elects through a Lease",
    "vip_singlenode": "raft mode is gone; kubevipd always elects through a Lease",
    "vip_addpeerstolb": "raft mode is gone",
    "vip_localpeer": "raft mode is gone",
    "vip_peers": "raft mode is gone",
    "vip_leaseannotations": "kubevipd does not annotate the Lease",
    "annotation": "node-annotation BGP settings are not supported",
    "provider_config": "a Metal provider_config file is not read; set announce.metal instead",
    "vip_packetproject": "kubevipd needs the project UUID (vip_packetprojectid), not its name",
    "cp_detect": (
        "not needed: kubevipd always elects through this node's own apiserver "
        "(https://127.0.0.1:<port>, verified as kubernetes), never through the VIP nor the "
        "kubeconfig's server"
    ),
    "vip_interfacelo_global": "not needed: kubevipd adds the VIP to the configured interface",
}
# The env vars the importer reads and carries over (or notes, for a secret).
KNOWN = {
    "vip_arp",
    "port",
    "vip_nodename",
    "vip_interface",
    "vip_subnet",
    "vip_cidr",
    "dns_mode",
    "cp_enable",
    "cp_namespace",
    "vip_ddns",
    "vip_leaderelection",
    "vip_leasename",
    "vip_leaseduration",
    "vip_renewdeadline",
    "vip_retryperiod",
    "vip_arpRate",
    "vip_packet",
    "vip_packetprojectid",
    METAL_TOKEN_ENV,
    "bgp_enable",
    "bgp_routerid",
    "bgp_as",
    "bgp_peers",
    "bgp_peeraddress",
    "bgp_peeras",
    "bgp_peerpass",
    "bgp_multihop",
    "bgp_routerinterface",
    "bgp_sourceif",
    "bgp_sourceip",
    "bgp_hold_time",
    "bgp_keepalive_interval",
    "address",
    "vip_address",
    "vip_loglevel",
    "prometheus_server",
}
