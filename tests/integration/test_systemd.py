"""The .deb under a real systemd (PID 1 in private namespaces), next to two plain daemons.

The container is a third lab node ("sd"): its network namespace is wired to the lab bridge,
the package is installed inside (into the container's RAM overlay), and systemctl drives it as
an operator would. Every node is sampled every 10 ms: never two holders, also while the
daemon under systemd is frozen and killed by the watchdog.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from kubevipd.lab.probes import HolderSampler
from kubevipd.lab.topology import Lab, Node

from .conftest import UNIT_CAPS, assert_api_via_vip, capability_sets, require_root
from .systemd_pid1 import SystemdContainer, Unavailable

pytestmark = pytest.mark.root
UNIT = "kubevipd"
COPIER = "kubevipd-kubeconfig"
# The shipped defaults (5s/3s/1s): the unit's watchdog is sized for them.
ELECTION = {"lease_duration": "5s", "renew_deadline": "3s", "retry_period": "1s"}

PACKAGE = "/usr/lib/python3/dist-packages/kubevipd"


def caps_under_the_units_sandbox(c: SystemdContainer, argv: list[str]) -> dict[str, int]:
    """The capability sets of ``argv`` (a command that prints /proc/self/status) run as a
    oneshot copy of the installed unit: its [Service] settings, user and sandbox, as they are."""
    unit = c.run("cat", c.prop(UNIT, "FragmentPath")).stdout
    service = unit[unit.index("[Service]") : unit.index("[Install]")]
    for key in ("Type", "ExecStart", "ExecReload", "ExecStopPost", "WatchdogSec", "Restart"):
        service = "\n".join(ln for ln in service.splitlines() if not ln.startswith(f"{key}="))
    name = "kubevipd-capcheck"
    c.write(
        f"/run/systemd/system/{name}.service",
        f"[Unit]\nDescription=the unit's sandbox, for a test\n\n{service}\n"
        f"Type=oneshot\nExecStart={' '.join(argv)}\n"
        f"StandardOutput=truncate:/run/{name}.out\n",
    )
    c.systemctl("daemon-reload")
    try:
        started = c.systemctl("start", name, check=False)  # a oneshot: returns when done
        assert started.returncode == 0, started.stderr + c.journal(name)
        out = c.run("cat", f"/run/{name}.out").stdout
    finally:
        c.run("rm", "-f", f"/run/systemd/system/{name}.service", f"/run/{name}.out")
        c.systemctl("daemon-reload")
    return capability_sets(out)


class States:
    """Every ActiveState/SubState the unit passes through, polled every 20 ms."""

    def __init__(self, c: SystemdContainer) -> None:
        self.c = c
        self.seen: list[str] = []
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._t = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> States:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            r = self.c.systemctl("show", "-P", "ActiveState", UNIT, check=False).stdout.strip()
            if r and (not self.seen or self.seen[-1] != r):
                with self._changed:
                    self.seen.append(r)
                    self._changed.notify_all()
            self._stop.wait(0.02)

    def reach(self, state: str, timeout: float) -> bool:
        """Wait (bounded) until the poller has recorded ``state`` as the latest."""
        with self._changed:
            return self._changed.wait_for(lambda: self.seen[-1:] == [state], timeout)


@pytest.fixture
def setup(built_deb: Path, tmp_path: Path) -> Iterator[tuple[Lab, SystemdContainer, Node, str]]:
    require_root()
    lab = Lab.create(2)
    try:
        try:
            c = SystemdContainer(tmp_path, f"kvl-{lab.uid}-sd")
            c.start()
        except Unavailable as e:
            pytest.skip(f"no systemd in namespaces here: {e}")
        try:
            node = lab.add_node("sd", c.netns_name, f"{lab.subnet}.14")
            br = lab.bridge_ns
            for args in (
                ["-n", br, "link", "add", "name", node.bridge_port, "type", "veth", "peer",
                 "name", "eth0", "netns", node.netns],
                ["-n", br, "link", "set", node.bridge_port, "master", "br0", "up"],
                ["-n", node.netns, "addr", "add", f"{node.ip}/24", "dev", "eth0"],
                ["-n", node.netns, "link", "set", "eth0", "up"],
                ["-n", node.netns, "link", "set", "lo", "up"],
            ):  # fmt: skip
                subprocess.run(["ip", *args], check=True, capture_output=True)
            node.mac = lab.mac_of(node.netns)
            # This machine is a container image whose policy-rc.d forbids maintainer scripts
            # to touch services; a real node has none (removed in the container's RAM only).
            c.run("rm", "-f", "/usr/sbin/policy-rc.d")
            c.write("/root/kubevipd.deb", built_deb.read_bytes())
            c.run("dpkg", "-i", "/root/kubevipd.deb", timeout=300)
            for n in lab.nodes[:2]:
                lab.write_config(n, election=ELECTION)
            doc = yaml.safe_load(lab.write_config(node, election=ELECTION).read_text())
            # kubeadm writes admin.conf (root, 0600) after kubevipd started: the test does too.
            kubeconfig = Path(doc["election"]["kubeconfig"]).read_text()
            doc["election"]["kubeconfig"] = "/etc/kubernetes/admin.conf"
            c.write("/etc/kubevip.yaml", yaml.safe_dump(doc))
            yield lab, c, node, kubeconfig
        finally:
            c.stop()
    finally:
        lab.destroy()


def test_the_package_under_systemd(setup: tuple[Lab, SystemdContainer, Node, str]) -> None:
    lab, c, sd, kubeconfig = setup
    n1, n2 = lab.nodes[0], lab.nodes[1]
    assert c.systemctl("is-enabled", UNIT, check=False).stdout.strip() == "disabled"
    assert c.prop(UNIT, "ActiveState") == "inactive"  # apt/dpkg install starts nothing
    assert c.run("id", "-u", "kubevipd").stdout.strip() != "0"  # the package made its user

    # enable --now blocks until READY=1: activating first, then active. As before `kubeadm
    # init`, there is no kubeconfig yet: the daemon waits for it.
    with States(c) as states:
        c.systemctl("enable", "--now", UNIT)
        assert c.prop(UNIT, "ActiveState") == "active"
        assert states.reach("active", 5), states.seen
    assert "activating" in states.seen and states.seen[-1] == "active", states.seen
    assert states.seen.index("activating") < states.seen.index("active")
    assert "waiting for /etc/kubernetes/admin.conf" in c.prop(UNIT, "StatusText")
    assert lab.holders() == []

    # The daemon is not root, and gets the root-only kubeconfig the moment it is written.
    main = c.prop(UNIT, "MainPID")
    assert c.run("stat", "-c", "%U", f"/proc/{main}").stdout.strip() == "kubevipd"
    c.write("/etc/kubernetes/admin.conf", kubeconfig, mode="0600")
    assert lab.wait_for(lambda: lab.holders() == ["sd"], 10), c.journal(UNIT) + c.journal(COPIER)
    copy = c.run("stat", "-c", "%a %U %G", "/run/kubevipd-kubeconfig/admin.conf").stdout
    assert copy.split() == ["440", "root", "kubevipd"]
    assert "copied /etc/kubernetes/admin.conf" in c.journal(COPIER)
    assert lab.wait_for(lambda: c.prop(UNIT, "StatusText").startswith("leader of"), 5)
    sd_identity = c.run("hostname").stdout.strip()  # the node's name, as on a real node
    assert_api_via_vip(lab, sd, sd_identity)
    status = c.run("kubevipd", "status").stdout
    assert "role:         leader" in status and "present here" in status

    def hand_back_to_sd() -> None:
        """n1 leads: stop it so sd takes over, then start n1 again as a follower."""
        lab.signal(n1, signal.SIGTERM)
        assert lab.wait_exit(n1, 10) == 0
        assert lab.wait_for(lambda: lab.holders() == ["sd"], 10), c.journal(UNIT)
        lab.start(n1)
        assert lab.wait_for(lambda: lab.ready(n1), 20)

    with HolderSampler(lab) as sampler:
        for n in (n1, n2):
            lab.start(n)
        assert lab.wait_for(lambda: lab.ready(n1) and lab.ready(n2), 20)

        # systemctl reload applies a changed config: the leader moves the VIP, and back.
        doc = yaml.safe_load(c.run("cat", "/etc/kubevip.yaml").stdout)
        moved = lab.vip.rsplit(".", 1)[0] + ".76"
        c.write("/etc/kubevip.yaml", yaml.safe_dump({**doc, "vip": {"address": moved}}))
        c.systemctl("reload", UNIT)
        ipr = lab.ipr(sd.netns)

        def sd_addrs() -> set[str]:
            return {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(family=2)}

        assert lab.wait_for(lambda: moved in sd_addrs() and lab.vip not in sd_addrs(), 5)
        c.write("/etc/kubevip.yaml", yaml.safe_dump(doc))
        c.systemctl("reload", UNIT)
        assert lab.wait_for(lambda: lab.vip in sd_addrs() and moved not in sd_addrs(), 5)
        assert "reloaded /etc/kubevip.yaml" in c.journal(UNIT)
        assert c.prop(UNIT, "ActiveState") == "active"

        # systemctl stop hands the VIP over at once: systemctl's own start in the container and
        # systemd's SIGTERM, then the bench's graceful hand-over (median about 40 ms).
        # (--no-block: systemctl itself also waits for ExecStopPost, which runs after it.)
        t0 = time.monotonic()
        c.systemctl("stop", "--no-block", UNIT)
        assert lab.wait_for(lambda: lab.holders() in (["n1"], ["n2"]), 1.0, 0.002), lab.holders()
        handover = time.monotonic() - t0
        assert handover < 0.5, f"hand-over took {handover:.3f}s"
        assert_api_via_vip(lab, lab.node(lab.holders()[0]))
        assert lab.wait_for(lambda: c.prop(UNIT, "ActiveState") == "inactive", 10)
        assert c.prop(UNIT, "Result") == "success"

        # Make sd the leader again: start it, then stop both plain daemons; restart one of them.
        c.systemctl("start", UNIT)
        for n in (n1, n2):
            lab.signal(n, signal.SIGTERM)
            assert lab.wait_exit(n, 10) == 0
        assert lab.wait_for(lambda: lab.holders() == ["sd"], 10), c.journal(UNIT)
        lab.start(n1)
        assert lab.wait_for(lambda: lab.ready(n1), 20)

        # A frozen daemon is killed by the watchdog, ExecStopPost removes its VIP before the
        # lease expires on n1, and systemd restarts it.
        restarts = int(c.prop(UNIT, "NRestarts"))
        main = c.prop(UNIT, "MainPID")
        c.run("kill", "-STOP", main)
        assert lab.wait_for(lambda: int(c.prop(UNIT, "NRestarts")) > restarts, 20, 0.1)
        assert lab.wait_for(lambda: lab.holders() == ["n1"], 10), c.journal(UNIT)
        journal = c.journal(UNIT)
        assert "Watchdog timeout" in journal, journal
        assert lab.wait_for(lambda: c.prop(UNIT, "ActiveState") == "active", 20)
        assert c.prop(UNIT, "MainPID") != main

        # An upgrade (dpkg configures the package again) restarts the running daemon, and that
        # restart is a hand-over: n1 takes the VIP at once; never two holders.
        assert lab.holders() == ["n1"]
        hand_back_to_sd()
        main = c.prop(UNIT, "MainPID")
        c.run("dpkg", "-i", "/root/kubevipd.deb", timeout=300)
        assert lab.wait_for(lambda: lab.holders() == ["n1"], 5), c.journal(UNIT)
        assert lab.wait_for(lambda: c.prop(UNIT, "ActiveState") == "active", 20)
        assert c.prop(UNIT, "MainPID") != main
        assert c.systemctl("is-enabled", UNIT).stdout.strip() == "enabled"

        # A crash (SIGKILL) of the leader under systemd leaves no VIP behind (ExecStopPost).
        hand_back_to_sd()
        main = c.prop(UNIT, "MainPID")
        t1 = time.monotonic()
        c.run("kill", "-KILL", main)
        assert lab.wait_for(lambda: lab.holders() == ["n1"], 5), c.journal(UNIT)
        assert time.monotonic() - t1 < 4.0  # released by the cleanup, not left to expire (5s)
        assert_api_via_vip(lab, n1)
        assert "cleanup: removed" in c.journal(UNIT)
        assert lab.wait_for(lambda: c.prop(UNIT, "ActiveState") == "active", 20)
        c.systemctl("stop", UNIT)
    assert sampler.max_holders <= 1, sampler.double[:5]

    # ExaBGP starts through kubevipd's shim, which clears the unit's ambient capabilities:
    # it must work inside the unit's own sandbox (its seccomp filter, MemoryDenyWriteExecute).
    caps = caps_under_the_units_sandbox(c, ["/bin/cat", "/proc/self/status"])
    assert caps == {"CapEff": UNIT_CAPS, "CapPrm": UNIT_CAPS, "CapAmb": UNIT_CAPS}  # inherited
    shim = ["/usr/bin/python3", "-I", f"{PACKAGE}/announce/dropcaps.py"]
    caps = caps_under_the_units_sandbox(c, [*shim, "/bin/cat", "/proc/self/status"])
    assert caps == {"CapEff": 0, "CapPrm": 0, "CapAmb": 0}

    # Removing the package stops the kubeconfig watcher and deletes the copies.
    assert c.prop(f"{COPIER}.path", "ActiveState") == "active"
    c.run("dpkg", "-r", "kubevipd", timeout=300)
    assert c.prop(f"{COPIER}.path", "ActiveState") == "inactive"
    assert c.run("test", "-e", "/run/kubevipd-kubeconfig", check=False).returncode == 1
