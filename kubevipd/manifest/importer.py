"""Read a kube-vip static pod or DaemonSet manifest (kube-vip 0.3 and later) and write kubevip.yaml.

Migration must be honest: every setting that cannot be carried over is listed as a note, and no
secret from the manifest is ever copied to the output; the notes say which file to put it in.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubevipd.config.model import Duration
from kubevipd.manifest import kubevip as kv
from kubevipd.manifest.import_bgp import BgpImport, Doc

_LEASE_NAME_BEFORE_0_4 = "plndr-cp-lock"


class ManifestImportError(Exception):
    """The file holds no kube-vip manifest kubevipd can read."""


@dataclass
class Imported:
    config: Doc  # a kubevip.yaml document, keys in the schema's order
    notes: list[str] = field(default_factory=list)


def import_manifest(text: str) -> Imported:
    """Convert the first kube-vip Pod or DaemonSet in ``text`` (YAML, one or more documents)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        docs = [d for d in YAML(typ="safe", pure=True).load_all(text) if d is not None]
    except YAMLError as e:
        raise ManifestImportError(f"not valid YAML: {str(e).splitlines()[0]}") from None
    for doc in docs:
        pod = _pod_spec(doc)
        if pod is None:
            continue
        container = _kube_vip_container(pod)
        if container is not None:
            return _Importer(pod, container).run()
    raise ManifestImportError("no Pod or DaemonSet with a kube-vip container found")


def _pod_spec(doc: Any) -> Mapping[str, Any] | None:
    if not isinstance(doc, Mapping):
        return None
    if doc.get("kind") == "Pod":
        spec = doc.get("spec")
    elif doc.get("kind") in ("DaemonSet", "Deployment"):
        spec = (doc.get("spec") or {}).get("template", {}).get("spec")
    else:
        return None
    return spec if isinstance(spec, Mapping) else None


def _kube_vip_container(spec: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for c in spec.get("containers") or []:
        image = str(c.get("image", ""))
        if "kube-vip" in image or "kube-vip" in str(c.get("name", "")):
            return c  # type: ignore[no-any-return]
    return None


class _Importer(BgpImport):
    def __init__(self, pod: Mapping[str, Any], container: Mapping[str, Any]) -> None:
        self.pod = pod
        self.container = container
        self.notes: list[str] = []
        self.env: dict[str, str] = {}
        self.refs: dict[str, Mapping[str, Any]] = {}
        for item in container.get("env") or []:
            name = str(item.get("name"))
            if "value" in item or "valueFrom" not in item:
                self.env[name] = "" if item.get("value") is None else str(item["value"])
            else:
                self.refs[name] = item["valueFrom"]

    def note(self, text: str) -> None:
        self.notes.append(text)

    def flag(self, name: str) -> bool:
        return self.env.get(name, "").strip().lower() in ("true", "1", "t", "yes")

    def run(self) -> Imported:
        for name in sorted(set(self.env) | set(self.refs)):
            reason = kv.UNSUPPORTED.get(name)
            if reason:
                self.note(f"{name}: not carried over: {reason}")
            elif name not in kv.KNOWN and not name.startswith("KUBEVIPD_"):
                self.note(f"{name}: unknown kube-vip setting, not carried over")
        out: Doc = {}
        nodename = self.env.get("vip_nodename")
        if nodename:
            out["node_name"] = nodename
        if self.env.get("vip_interface"):
            out["interface"] = self.env["vip_interface"]
        out["vip"] = self._vip()
        out["election"] = self._election()
        out["announce"] = self._announce()
        if self.env.get("prometheus_server"):
            out["metrics"] = {"listen": self.env["prometheus_server"]}
        else:
            self.note(
                "prometheus_server: kube-vip served metrics on :2112 by default; kubevipd "
                "serves none unless metrics.listen is set"
            )
        level = self.env.get("vip_loglevel")
        if level:
            out["log"] = {"level": _log_level(int(level))}
        return Imported(out, self.notes)

    # vip ------------------------------------------------------------------

    def _vip(self) -> Doc:
        raw = self.env.get("address") or self.env.get("vip_address") or ""
        if "vip_address" in self.env and "address" not in self.env:
            self.note("vip_address: read as address (kube-vip renamed it)")
        items = [a.strip() for a in raw.split(",") if a.strip()]
        if not items:
            raise ManifestImportError("the manifest sets no VIP (neither address nor vip_address)")
        vip: Doc = {}
        if all(_is_ip(a) for a in items):
            vip["address"] = items[0] if len(items) == 1 else items
        elif self.flag("vip_ddns"):
            vip["dhcp"] = {"hostname": items[0]}
        else:
            dns: Doc = {"name": items[0]}
            mode = self.env.get("dns_mode", "first")
            if mode != "first":
                dns["family"] = mode
            vip["dns"] = dns
        subnet = self.env.get("vip_subnet") or self.env.get("vip_cidr")
        if subnet:
            if "vip_cidr" in self.env and "vip_subnet" not in self.env:
                self.note(
                    "vip_cidr: read as the VIP's prefix length (kube-vip renamed it vip_subnet)"
                )
            lengths = [int(p) for p in subnet.split(",") if p.strip()]
            if "dns" in vip and vip["dns"].get("family", "first") == "first":
                self.note(
                    f"vip_subnet {subnet}: dropped; with dns_mode first the prefix length "
                    "follows the family of the answer (32 or 128)"
                )
            elif lengths:
                vip["prefix_length"] = lengths[0] if len(lengths) == 1 else lengths
        if self.env.get("port"):
            vip["port"] = int(self.env["port"])
        return vip

    # election -------------------------------------------------------------

    def _bgp_mode(self) -> bool:
        return self.flag("bgp_enable") and not self.flag("vip_packet")

    def _election(self) -> Doc:
        e: Doc = {}
        # kube-vip elects only with vip_leaderelection true (its flag's default is false): in
        # BGP mode without it, every node announces the VIP, which is backend none.
        all_nodes = self._bgp_mode() and not self.flag("vip_leaderelection")
        if all_nodes:
            e["backend"] = "none"
            why = "is false" if "vip_leaderelection" in self.env else "is not set"
            self.note(
                f"vip_leaderelection {why}: kube-vip announced the VIP over BGP from every node "
                "(ECMP) without leader election; imported as election.backend none"
            )
        elif "vip_leaderelection" in self.env and not self.flag("vip_leaderelection"):
            self.note(
                "vip_leaderelection: kube-vip ran without leader election; outside BGP mode "
                "kubevipd always elects through a Lease (election.backend none is for BGP only)"
            )
        e["kubeconfig"] = self._kubeconfig()
        if self.env.get("cp_namespace"):
            e["namespace"] = self.env["cp_namespace"]
        if self.env.get("vip_leasename"):
            e["lease_name"] = self.env["vip_leasename"]
        elif all_nodes:
            pass  # no Lease: its name does not matter
        else:
            e["lease_name"] = _LEASE_NAME_BEFORE_0_4
            self.note(
                f"vip_leasename: not set; kube-vip before 0.4 used a fixed Lease name "
                f"({_LEASE_NAME_BEFORE_0_4}; 'plunder-lock' before 0.2): check with "
                "`kubectl -n kube-system get leases` and set election.lease_name to the "
                "one your kube-vip holds"
            )
        for key in ("lease_duration", "renew_deadline", "retry_period"):
            value = self.env.get(f"vip_{key.replace('_', '')}")
            if value:
                e[key] = str(Duration(int(value) * 1000))
        return e

    def _kubeconfig(self) -> str:
        mounts = {
            m.get("name"): m.get("mountPath") for m in self.container.get("volumeMounts") or []
        }
        for vol in self.pod.get("volumes") or []:
            path = (vol.get("hostPath") or {}).get("path")
            if path and mounts.get(vol.get("name")) == kv.KUBECONFIG_MOUNT:
                if str(path).endswith("/super-admin.conf"):
                    self.note(
                        "kubeconfig: the manifest mounts super-admin.conf (kubeadm >= 1.29 "
                        "during init); kubevipd uses admin.conf and falls back to "
                        "super-admin.conf by itself while admin.conf has no rights yet"
                    )
                    return kv.KUBECONFIG_MOUNT
                return str(path)
        account = self.pod.get("serviceAccountName")
        if account:
            self.note(
                f"kubeconfig: kube-vip ran in-cluster as ServiceAccount {account}; "
                f"kubevipd runs on the host and reads {kv.KUBECONFIG_MOUNT} (on k3s: "
                "/etc/rancher/k3s/k3s.yaml), for credentials and CA only: it talks to this "
                "node's own apiserver. A restricted kubeconfig needs get, list, watch, create "
                "and update on leases in the Lease's namespace, and get on endpointslices "
                "(discovery.k8s.io) in default"
            )
        return kv.KUBECONFIG_MOUNT

    # announce -------------------------------------------------------------

    def _announce(self) -> Doc:
        if self._bgp_mode():
            return {"mode": "bgp", "bgp": self._bgp()}
        if self.flag("vip_packet"):
            if self.flag("bgp_enable"):
                self.note(
                    "bgp_enable with vip_packet: Equinix Metal BGP is not supported; "
                    "imported as a Metal Elastic IP (announce.mode metal)"
                )
            return {"mode": "metal", "metal": self._metal()}
        if not self.flag("vip_arp"):
            self.note(
                "vip_arp: kube-vip announced nothing kubevipd supports (no ARP, BGP or "
                "Metal); imported as announce.mode arp"
            )
        arp: Doc = {}
        rate = self.env.get("vip_arpRate")
        if rate and int(rate) != kv.ARP_RATE_DEFAULT_MS:
            arp["refresh"] = str(Duration(int(rate)))
        return {"mode": "arp", "arp": arp} if arp else {"mode": "arp"}

    def _metal(self) -> Doc:
        metal: Doc = {}
        project = self.env.get("vip_packetprojectid")
        metal["project_id"] = project or "REPLACE-WITH-PROJECT-UUID"
        if not project:
            self.note(
                "vip_packetprojectid: not set; put the Equinix Metal project's UUID in "
                "announce.metal.project_id"
            )
        if kv.METAL_TOKEN_ENV in self.refs:
            metal["token_file"] = self._from_secret_ref(kv.METAL_TOKEN_ENV, "announce.metal.token")
        else:
            path = f"{kv.CONFIG_DIR}/metal.token"
            where = "is in the manifest" if self.env.get(kv.METAL_TOKEN_ENV) else "is not set"
            self.note(
                f"{kv.METAL_TOKEN_ENV}: the Metal API token {where}; write it into {path} "
                "(mode 0600): it is not copied to the output"
            )
            metal["token_file"] = path
        return metal

    def _from_secret_ref(self, var: str, where: str) -> str:
        ref = self.refs[var].get("secretKeyRef") or {}
        key = str(ref.get("key", var.lower()))
        path = f"{kv.CONFIG_DIR}/{key}"
        self.note(
            f"{where}: kube-vip read it from Secret {ref.get('name')} key {key}; write it "
            f"into {path} (mode 0600)"
        )
        return path


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _log_level(level: int) -> str:
    if level >= 5:
        return "debug"
    if level == 4:
        return "info"
    return "warning" if level == 3 else "error"


def to_yaml(config: Doc) -> str:
    """kubevip.yaml text for an imported config (block style, keys in schema order)."""
    import io

    from ruamel.yaml import YAML

    yaml = YAML(typ="rt")
    yaml.default_flow_style = False
    buf = io.StringIO()
    yaml.dump(config, buf)
    return buf.getvalue()
