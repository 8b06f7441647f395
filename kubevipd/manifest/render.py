"""Render the kube-vip static pod, DaemonSet or RBAC that is equivalent to a kubevipd config.

The output is what ``kube-vip manifest pod|daemonset|rbac`` prints for the same settings. A setting
kube-vip cannot express is a ManifestError naming it, never a silent drop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from kubevipd.config.model import Config, Duration, SecretRef, vip_families
from kubevipd.manifest import kubevip as kv

Kind = Literal["pod", "daemonset", "rbac"]
Doc = dict[str, Any]


class ManifestError(Exception):
    """A setting that the manifest cannot express; ``field`` is the config key."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class RenderOptions:
    kind: Kind = "pod"
    image: str = f"{kv.IMAGE_REPO}:{kv.IMAGE_TAG}"
    in_cluster: bool = False
    include_secrets: bool = False


@dataclass
class Rendered:
    documents: list[Doc]
    notes: list[str] = field(default_factory=list)  # for stderr: what the operator must know


def image_ref(value: str | None) -> str:
    """``--image`` takes a full image reference or just a tag of kube-vip's image."""
    if not value:
        return f"{kv.IMAGE_REPO}:{kv.IMAGE_TAG}"
    return value if "/" in value else f"{kv.IMAGE_REPO}:{value}"


def render(config: Config, options: RenderOptions) -> Rendered:
    out = Rendered([])
    if options.kind == "rbac":
        out.documents = _rbac(config)
        return out
    env = _Env(config, options, out.notes).build()
    pod_spec = _pod_spec(config, options, env)
    if options.kind == "pod":
        out.documents = [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": kv.POD_NAME, "namespace": kv.NAMESPACE},
                "spec": pod_spec,
            }
        ]
    else:
        out.documents = [_daemonset(options.image, pod_spec)]
    return out


# --------------------------------------------------------------------------- env


class _Env:
    """kube-vip's env list, in the order kube-vip's own generator writes it."""

    def __init__(self, config: Config, options: RenderOptions, notes: list[str]) -> None:
        self.c = config
        self.o = options
        self.notes = notes
        self.env: list[Doc] = []

    def add(self, name: str, value: str) -> None:
        self.env.append({"name": name, "value": value})

    def build(self) -> list[Doc]:
        c = self.c
        if c.election.server is not None:
            raise ManifestError(
                "election.server",
                "kube-vip cannot be pointed at an apiserver URL: with a kubeconfig it uses the "
                f"local apiserver (https://kubernetes:{c.vip.port}, a host alias of 127.0.0.1), "
                "in-cluster the kubernetes Service. Remove election.server to render (kubevipd "
                f"then uses the local apiserver too, https://127.0.0.1:{c.vip.port})",
            )
        self.add("vip_arp", "true" if c.announce.mode == "arp" else "false")
        self.add("port", str(c.vip.port))
        self._node_name()
        if c.interface is not None:
            self.add("vip_interface", c.interface)
        if c.vip.prefix_lengths is not None:
            self.add("vip_subnet", ",".join(str(p) for p in c.vip.prefix_lengths))
        if c.vip.dns is not None:
            if c.vip.dns.refresh != kv.DNS_REFRESH_MS:
                raise ManifestError(
                    "vip.dns.refresh",
                    f"kube-vip has no setting for the DNS refresh interval ({c.vip.dns.refresh}); "
                    f"remove it (default {Duration(kv.DNS_REFRESH_MS)}) to render",
                )
            self.add("dns_mode", c.vip.dns.family)
        self.add("cp_enable", "true")
        self.add("cp_namespace", c.election.namespace)
        if c.vip.dhcp is not None:
            self.add("vip_ddns", "true")
        # backend none: kube-vip's BGP without leader election announces from every node. The
        # Lease settings stay, unused by kube-vip then, so that an import gives them back.
        self.add("vip_leaderelection", "false" if c.election.backend == "none" else "true")
        self.add("vip_leasename", c.election.lease_name)
        for key in ("lease_duration", "renew_deadline", "retry_period"):
            self.add(f"vip_{key.replace('_', '')}", self._whole_seconds(key))
        if c.announce.arp is not None and c.announce.arp.refresh != kv.ARP_RATE_DEFAULT_MS:
            self.add("vip_arpRate", str(int(c.announce.arp.refresh)))
        if c.announce.metal is not None:
            self.add("vip_packet", "true")
            self.add("vip_packetprojectid", c.announce.metal.project_id)
            self._secret(kv.METAL_TOKEN_ENV, c.announce.metal.token, "announce.metal.token")
        if c.announce.bgp is not None:
            self._bgp()
        self.add("address", self._address())
        if c.metrics is not None:
            self.add("prometheus_server", c.metrics.listen)
        else:
            self.notes.append(
                "note: kube-vip always serves Prometheus metrics (default :2112); this config has "
                "no metrics section"
            )
        if c.health.enabled:
            self.notes.append(
                "note: kube-vip has no health gate on the local apiserver in ARP mode; the "
                "health section is not carried over"
            )
        if c.log_level != "info":
            self.add("vip_loglevel", str(kv.LOG_LEVELS[c.log_level]))
        return self.env

    def _node_name(self) -> None:
        if self.c.node_name is None:
            self.env.append(
                {"name": "vip_nodename", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
            )
        elif self.o.kind == "daemonset":
            raise ManifestError(
                "node_name",
                "a DaemonSet runs on every node, so one fixed node name would make all of them the "
                "same Lease holder; remove node_name (kube-vip then takes spec.nodeName)",
            )
        else:
            self.add("vip_nodename", self.c.node_name)

    def _whole_seconds(self, key: str) -> str:
        value: Duration = getattr(self.c.election, key)
        if value % 1000:
            raise ManifestError(
                f"election.{key}", f"kube-vip takes whole seconds; {value} cannot be expressed"
            )
        return str(value // 1000)

    def _address(self) -> str:
        v = self.c.vip
        if v.dns is not None:
            return v.dns.name
        if v.dhcp is not None:
            return v.dhcp.hostname
        return ",".join(str(a) for a in v.addresses)

    def _bgp(self) -> None:
        bgp = self.c.announce.bgp
        assert bgp is not None
        self.add("bgp_enable", "true")
        if bgp.router_id is not None:
            self.add("bgp_routerid", str(bgp.router_id))
        else:
            assert bgp.router_interface is not None
            self.add("bgp_routerinterface", bgp.router_interface)
        self.add("bgp_as", str(bgp.local_as))
        if bgp.source_interface is not None:
            self.add("bgp_sourceif", bgp.source_interface)
        if bgp.source_address is not None:
            self.add("bgp_sourceip", str(bgp.source_address))
        default_families = vip_families(self.c.vip)
        peers = []
        for i, peer in enumerate(bgp.peers):
            where = f"announce.bgp.peers[{i}]"
            if peer.families != default_families:
                raise ManifestError(
                    f"{where}.families",
                    "kube-vip has no setting for a peer's address families (it announces the "
                    "VIP's); remove families to render",
                )
            if peer.multihop_ttl is not None and peer.multihop_ttl != kv.KUBE_VIP_MULTIHOP_TTL:
                self.notes.append(
                    f"note: {where}.multihop: kube-vip sends every multihop session with TTL "
                    f"{kv.KUBE_VIP_MULTIHOP_TTL}, not {peer.multihop_ttl}"
                )
            if peer.port != kv.BGP_PORT:
                self.notes.append(
                    f"note: {where}.port: kube-vip parses the port in bgp_peers but always "
                    f"connects to {kv.BGP_PORT}, not {peer.port}"
                )
            password = ""
            if peer.password is not None:
                inline = self._inline_secret(peer.password, f"{where}.password")
                if inline is None:
                    # kube-vip has one string for all peers: splice the Secret in by $(VAR).
                    var = kv.peer_password_env(i)
                    self._secret_ref(var, peer.password, f"{where}.password")
                    password = f"$({var})"
                elif any(ch in inline for ch in ":,"):
                    raise ManifestError(
                        f"{where}.password",
                        "kube-vip's bgp_peers cannot carry a password with ':' or ','",
                    )
                else:
                    password = inline
            peers.append(
                kv.PeerString(str(peer.address), peer.asn, password, peer.multihop, peer.port)
            )
        self.add("bgp_peers", ",".join(p.format() for p in peers))
        # kube-vip reads its timers in whole seconds; the loader allows nothing else.
        if bgp.hold_time != kv.BGP_HOLD_TIME_DEFAULT_S * 1000:
            self.add("bgp_hold_time", str(bgp.hold_time // 1000))
        if bgp.keepalive != kv.BGP_KEEPALIVE_DEFAULT_S * 1000:
            self.add("bgp_keepalive_interval", str(bgp.keepalive // 1000))

    def _secret(self, name: str, ref: SecretRef, where: str) -> None:
        inline = self._inline_secret(ref, where)
        if inline is None:
            self._secret_ref(name, ref, where)
        else:
            self.add(name, inline)

    def _inline_secret(self, ref: SecretRef, where: str) -> str | None:
        """The secret's value if it is to be written inline; None if a Secret must carry it."""
        if self.o.include_secrets:
            from kubevipd.config.secrets import read_secret

            return read_secret(ref)
        if self.o.kind == "pod":
            raise ManifestError(
                where,
                "a static pod cannot reference a Secret, and kube-vip reads this only from its "
                "environment: render with --kind daemonset (which reads it from the Secret "
                f"{kv.SECRET_NAME}), or with --include-secrets to write it into the manifest "
                "(then keep that file mode 0600)",
            )
        return None

    def _secret_ref(self, name: str, ref: SecretRef, where: str) -> None:
        key = kv.secret_key_for_path(ref.value) if ref.kind != "inline" else name.lower()
        self.env.append(
            {"name": name, "valueFrom": {"secretKeyRef": {"name": kv.SECRET_NAME, "key": key}}}
        )
        if ref.kind == "file":
            source = f"={ref.value}"
        elif ref.kind == "credential":
            source = f"=$CREDENTIALS_DIRECTORY/{ref.value}"
        else:
            source = "=FILE-HOLDING-THE-SECRET"
        self.notes.append(
            f"note: {where} is read from Secret {kv.NAMESPACE}/{kv.SECRET_NAME} key {key}; create "
            f"it with: kubectl -n {kv.NAMESPACE} create secret generic {kv.SECRET_NAME} "
            f"--from-file={key}{source}"
        )


# --------------------------------------------------------------------------- objects


def _pod_spec(config: Config, options: RenderOptions, env: list[Doc]) -> Doc:
    container: Doc = {
        "name": "kube-vip",
        "image": options.image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["manager"],
        "env": env,
        "resources": {},
        "securityContext": {
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
        },
    }
    spec: Doc = {"containers": [container], "hostNetwork": True}
    if options.in_cluster:
        spec["serviceAccountName"] = kv.SERVICE_ACCOUNT
    else:
        container["volumeMounts"] = [{"name": "kubeconfig", "mountPath": kv.KUBECONFIG_MOUNT}]
        spec["hostAliases"] = [{"ip": "127.0.0.1", "hostnames": ["kubernetes"]}]
        spec["volumes"] = [
            {"name": "kubeconfig", "hostPath": {"path": str(config.election.kubeconfig)}}
        ]
    return spec


def _daemonset(image: str, pod_spec: Doc) -> Doc:
    version = image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else "latest"
    labels = {"app.kubernetes.io/name": kv.DAEMONSET_NAME, "app.kubernetes.io/version": version}
    spec = dict(pod_spec)
    spec["tolerations"] = [
        {"effect": "NoSchedule", "operator": "Exists"},
        {"effect": "NoExecute", "operator": "Exists"},
    ]
    spec["affinity"] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": key, "operator": "Exists"}]}
                    for key in (
                        "node-role.kubernetes.io/master",
                        "node-role.kubernetes.io/control-plane",
                    )
                ]
            }
        }
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": kv.DAEMONSET_NAME, "namespace": kv.NAMESPACE, "labels": labels},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": kv.DAEMONSET_NAME}},
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
    }


def _rbac(config: Config) -> list[Doc]:
    """ServiceAccount, a Role on Leases in the lease namespace only, and its RoleBinding.

    kube-vip's control plane needs nothing else: client-go's LeaseLock gets, creates and updates
    the Lease, and kube-vip watches it. The Secret a DaemonSet reads is resolved by the kubelet.
    """
    ns = config.election.namespace
    role = "kube-vip-lease"
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": kv.SERVICE_ACCOUNT, "namespace": kv.NAMESPACE},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": role, "namespace": ns},
            "rules": [
                {
                    "apiGroups": ["coordination.k8s.io"],
                    "resources": ["leases"],
                    "verbs": ["get", "list", "watch", "create", "update"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": role, "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
            "subjects": [
                {"kind": "ServiceAccount", "name": kv.SERVICE_ACCOUNT, "namespace": kv.NAMESPACE}
            ],
        },
    ]


def dump(documents: list[Doc]) -> str:
    """YAML text of the documents, separated by ``---`` as kubectl expects."""
    import io

    from ruamel.yaml import YAML
    from ruamel.yaml.nodes import ScalarNode

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    resolver = yaml.resolver

    def represent_str(representer: Any, value: str) -> Any:
        # Double quotes where a plain scalar would read as a bool or number, as Go's yaml does.
        tag = resolver.resolve(ScalarNode, value, (True, False))
        style = '"' if tag != "tag:yaml.org,2002:str" else None
        return representer.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    yaml.representer.add_representer(str, represent_str)
    yaml.representer.ignore_aliases = lambda data: True  # no &id001 anchors in manifests
    parts = []
    for doc in documents:
        buf = io.StringIO()
        yaml.dump(doc, buf)
        parts.append(buf.getvalue())
    return "---\n".join(parts)
