"""A lab node and the kubevipd daemon run on it: its config, its process, its log.

:class:`Node` is what the lab knows of one control-plane node: its namespace, addresses and
bridge port, its apiserver, and the daemon started on it. :class:`Daemons` writes a node's
config (the README's smallest, plus the lab's short timings), starts the daemon "on" the node
(its namespace and host name), signals it, waits for it to exit, reads its log, and kills every
daemon when the lab is destroyed. It is a part of :class:`kubevipd.lab.topology.Lab`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kubevipd.lab.apiserver import LabApiServer
from kubevipd.lab.control_plane import API_PORT, ControlPlane


@dataclass
class Node:
    name: str
    netns: str
    ip: str
    bridge_port: str  # the veth end on the bridge: set it down to cut the node's link
    api: LabApiServer  # this node's own apiserver (0.0.0.0:6443 and [::]:6443 in its namespace)
    mac: str = ""
    link_cut: bool = False
    proc: subprocess.Popen[bytes] | None = None
    config: Path | None = None
    run_dir: Path | None = None
    log: Path | None = None
    ip6: str = ""  # its address in the lab's IPv6 /64 ("" for a node someone else wired)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def api_url(self) -> str:
        """The node's apiserver as other nodes reach it (its advertise address)."""
        return f"https://{self.ip}:{API_PORT}"


class Daemons(ControlPlane):
    """The daemons run on the lab's nodes. Their configs name the control plane's kubeconfig,
    hence the base class."""

    # Set by the lab (a dataclass) that this is a part of.
    command: list[str]
    _log_files: list[Any]

    def write_config(self, node: Node, **overrides: Any) -> Path:
        """The README's smallest config (interface, VIP, kubeconfig) plus the lab's timings.

        No ``election.server`` and no health URL: the daemon must find its own apiserver at
        127.0.0.1:6443 by itself, and its name is the namespace's host name, as on a real node.
        """
        kubeconfig = self.kubeconfig(
            node.name, f"lab-{node.name}-token", f"system:node:{node.name}"
        )
        doc: dict[str, Any] = {
            "interface": "eth0",
            "vip": {"address": self.vip},
            "election": {
                "kubeconfig": str(kubeconfig),
                # The lab's timings, shorter than the shipped 5s/3s/1s to keep the tests quick.
                "lease_duration": "3s",
                "renew_deadline": "2s",
                "retry_period": "500ms",
            },
            "health": {
                "period": "200ms",
                "timeout": "200ms",
                "failure_threshold": 2,
                "link_down_grace": "500ms",
            },
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(doc.get(key), dict):
                doc[key] = {**doc[key], **value}
            else:
                doc[key] = value
        path = self.workdir / f"{node.name}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        node.config = path
        return path

    def start(self, node: Node, env: dict[str, str] | None = None, **overrides: Any) -> None:
        if node.config is None or overrides:
            self.write_config(node, **overrides)
        node.run_dir = self.workdir / f"{node.name}.run"
        node.log = self.workdir / f"{node.name}.log"
        log = node.log.open("ab")
        self._log_files.append(log)
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        full_env.pop("NOTIFY_SOCKET", None)
        full_env.update(env or {})
        node.proc = subprocess.Popen(
            [*self.node_exec(node), *self.command, "run",
             "--config", str(node.config), "--run-dir", str(node.run_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
        )  # fmt: skip

    def node_exec(self, node: Node) -> list[str]:
        """Run a command "on" the node: in its network namespace, with its host name (a UTS
        namespace of its own) and an /etc/hosts that names it, as a real node's does (a mount
        namespace of its own; ExaBGP looks its FQDN up at start, which takes seconds where the
        name resolves nowhere). Every step execs, so the command keeps the process's PID."""
        hosts = self.workdir / f"{node.name}.hosts"
        if not hosts.exists():
            hosts.write_text(f"127.0.0.1 localhost\n::1 localhost\n{node.ip} {node.name}\n")
        return ["ip", "netns", "exec", node.netns, "unshare", "--uts", "--mount", "--",
                "sh", "-c", 'hostname "$0" && mount --bind "$1" /etc/hosts && shift && exec "$@"',
                node.name, str(hosts)]  # fmt: skip

    def ready(self, node: Node) -> bool:
        """The daemon's main loop runs: it has written its status file."""
        return node.run_dir is not None and (node.run_dir / "status.json").exists()

    def signal(self, node: Node, sig: signal.Signals) -> None:
        if node.running:
            assert node.proc is not None
            node.proc.send_signal(sig)

    def wait_exit(self, node: Node, timeout: float = 10) -> int | None:
        if node.proc is None:
            return None
        try:
            return node.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    @staticmethod
    def process_tree(node: Node) -> list[int]:
        """The node's daemon and every process under it (BGP mode: its ExaBGP and the relay),
        for a test that freezes or kills the whole node."""
        if node.proc is None:
            return []
        out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True)
        children: dict[int, list[int]] = {}
        for line in out.stdout.splitlines():
            pid, ppid = (int(x) for x in line.split())
            children.setdefault(ppid, []).append(pid)
        found, todo = [], [node.proc.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo += children.get(pid, [])
        return found

    def log_text(self, node: Node) -> str:
        return node.log.read_text(errors="replace") if node.log and node.log.exists() else ""

    def _kill_daemons(self) -> None:
        """Every daemon still running killed (and waited for), every log file closed."""
        for n in self.nodes:
            if n.running:
                assert n.proc is not None
                n.proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    n.proc.wait(5)
        for f in self._log_files:
            f.close()
