"""The lab's control plane as kubevipd sees it: the apiservers, their PKI, the kubeconfigs.

Every node runs its own apiserver on :data:`API_PORT`, all in front of one store (etcd). This
module holds what kubeadm decides about them: the names in the apiservers' certificate
(:func:`make_apiserver_pki`), the control-plane endpoint (the VIP) that every kubeconfig names
(:meth:`ControlPlane.kubeconfig`), and the faults injected into the apiservers (cut from the
store, all of them down), plus what they have served. :class:`ControlPlane` is a part of
:class:`kubevipd.lab.topology.Lab`, which builds the namespaces the apiservers listen in.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from kubevipd.lab.pki import Pki, make_pki, write_kubeconfig

if TYPE_CHECKING:
    from kubevipd.lab.nodes import Node

API_PORT = 6443
# The names kubeadm puts in the apiserver's certificate, besides the node's own name and IPs.
KUBEADM_NAMES = (
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
SERVICE_IP = "10.96.0.1"  # the first address of kubeadm's default Service CIDR
MAX_NODES = 10  # node addresses .11 to .20, all in the apiservers' certificate


def make_apiserver_pki(
    directory: Path,
    subnet: str,
    prefix6: str,
    vip: str,
    names: Sequence[str],
    vip6: str | None = None,
) -> Pki:
    """One certificate for every node's apiserver, with kubeadm's names: each node's IPs,
    the control-plane endpoint (the VIP), the Service IP; never 127.0.0.1.

    Node addresses are ``.11`` on, IPv4 and IPv6, with room for nodes added later
    (``Lab.add_node``): ``.11`` to ``.20``. The IPv6 VIP is ``.75`` of ``prefix6`` unless
    ``vip6`` says (the BGP shape's VIPs are off the node subnets).
    """
    spare = range(max(len(names), MAX_NODES))
    sans_ip = [*(f"{subnet}.{11 + i}" for i in spare), *(f"{prefix6}{11 + i}" for i in spare)]
    sans_ip += [vip, vip6 or f"{prefix6}75"]
    return make_pki(directory, [*sans_ip, SERVICE_IP], (*KUBEADM_NAMES, *names), loopback=False)


class ControlPlane:
    """The apiserver side of a lab: kubeconfigs naming the VIP, faults, served requests."""

    # Set by the lab (a dataclass) that this is a part of.
    workdir: Path
    nodes: list[Node]
    pki: Pki
    vip: str

    def kubeconfig(self, name: str, token: str, user: str = "lab") -> Path:
        """A kubeconfig as kubeadm writes ``admin.conf``: its server is the VIP."""
        return write_kubeconfig(
            self.workdir / f"{name}.kubeconfig", self.vip_url, self.pki, token, user=user
        )

    @property
    def vip_url(self) -> str:
        """The control-plane endpoint, as kubeadm's kubeconfigs and every client name it."""
        return f"https://{self.vip}:{API_PORT}"

    # faults -----------------------------------------------------------------

    def cut_from_store(self, node: Node, cut: bool = True) -> None:
        """The node's apiserver stays up but loses etcd: calls hang, /readyz fails."""
        node.api.faults.store_cut = cut

    def stop_apiservers(self) -> None:
        """Every apiserver down at once (an etcd outage looks the same to kubevipd)."""
        for n in self.nodes:
            n.api.stop()

    def start_apiservers(self) -> None:
        for n in self.nodes:
            if not n.api.running:
                n.api.restart()

    # observation ------------------------------------------------------------

    def requests(self) -> list[tuple[str, str, str, int]]:
        """Every request any node's apiserver has served, recent ones last per node."""
        return [r for n in self.nodes for r in n.api.requests]

    @property
    def request_count(self) -> int:
        return sum(n.api.request_count for n in self.nodes)
