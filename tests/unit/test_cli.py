"""The command line as an operator uses it: the installed `kubevipd` script, exit codes, stderr."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "etc" / "kubevip.yaml.example"
KUBEVIPD = shutil.which("kubevipd", path=str(Path(sys.executable).parent)) or "kubevipd"


def kubevipd(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "KUBEVIPD_CONFIG"}
    full_env.update(env or {})
    return subprocess.run(
        [KUBEVIPD, *args],
        capture_output=True,
        text=True,
        env=full_env,
        input=stdin,
        timeout=60,
        check=False,
    )


def test_version() -> None:
    from kubevipd import __version__

    r = kubevipd("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"kubevipd {__version__}"


@pytest.mark.parametrize(
    "command", ["run", "check-config", "render-manifest", "import-manifest", "schema"]
)
def test_help_on_every_command(command: str) -> None:
    r = kubevipd(command, "--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: kubevipd " + command)


def test_check_config_ok_prints_only_path_ok() -> None:
    r = kubevipd("check-config", str(EXAMPLE))
    assert (r.returncode, r.stdout, r.stderr) == (0, f"{EXAMPLE}: ok\n", "")


def test_check_config_takes_the_path_from_the_environment() -> None:
    r = kubevipd("check-config", env={"KUBEVIPD_CONFIG": str(EXAMPLE)})
    assert (r.returncode, r.stdout) == (0, f"{EXAMPLE}: ok\n")


def test_check_config_errors_exit_2_one_line_each(tmp_path: Path) -> None:
    f = tmp_path / "kubevip.yaml"
    f.write_text("vip:\n  address: 10.0.0.300\nelection:\n  lease_duration: 1s\nfoo: 1\n")
    r = kubevipd("check-config", str(f))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines() == [
        f"{f}:2:12: vip.address: must be an IP address, or a list of one IPv4 and one IPv6 address",
        f"{f}:4:19: election.lease_duration: lease_duration (1s) must be longer than "
        "renew_deadline (3s), or two nodes could both believe they lead",
        f"{f}:5:1: foo: unknown key",
    ]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "no such file"),
        ("", "the file is empty"),
        ("vip: [\n", "YAML syntax"),
        ("- a\n", "expected a mapping"),
    ],
)
def test_bad_files_never_give_a_traceback(
    tmp_path: Path, content: str | None, fragment: str
) -> None:
    f = tmp_path / "kubevip.yaml"
    if content is not None:
        f.write_text(content)
    for cmd in (
        ["check-config", str(f)],
        ["run", "--config", str(f)],
        ["render-manifest", "--config", str(f)],
    ):
        r = kubevipd(*cmd)
        assert r.returncode == 2, cmd
        assert "Traceback" not in r.stderr and fragment in r.stderr
        assert len(r.stderr.splitlines()) == 1


def test_permission_error_message(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubevipd.config import ConfigError, load

    def deny(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", deny)
    with pytest.raises(ConfigError) as raised:
        load("/etc/kubevip.yaml")
    assert str(raised.value) == (
        "/etc/kubevip.yaml: cannot read: permission denied (the daemon runs as the user "
        "kubevipd: make the file readable by it, e.g. mode 0644, or 0640 with group kubevipd)"
    )


def test_run_with_a_bad_config_exits_2_before_touching_anything(tmp_path: Path) -> None:
    bad = tmp_path / "kubevip.yaml"
    bad.write_text("vip:\n  address: 192.168.0.75\nelection:\n  lease_duration: 1s\n")
    r = kubevipd("run", "--config", str(bad), "--run-dir", str(tmp_path / "run"))
    assert r.returncode == 2
    assert r.stderr.startswith(f"{bad}:4:19: election.lease_duration:")
    assert "Traceback" not in r.stderr and not (tmp_path / "run").exists()


def test_check_config_and_run_refuse_an_election_server_at_the_vip(tmp_path: Path) -> None:
    kc = tmp_path / "admin.conf"
    kc.write_text("apiVersion: v1\nkind: Config\nclusters: []\n")
    f = tmp_path / "kubevip.yaml"
    f.write_text(
        f"vip:\n  address: 192.168.0.75\nelection:\n  kubeconfig: {kc}\n"
        "  server: https://192.168.0.75:6443\n"
    )
    line = (
        f"{f}:5:11: election.server: https://192.168.0.75:6443 is the VIP, which nobody holds "
        "at bootstrap or after a crash: the election must reach this node's own apiserver; "
        "remove election.server (default https://127.0.0.1:6443) or name a local address"
    )
    r = kubevipd("check-config", str(f))
    assert (r.returncode, r.stdout, r.stderr.splitlines()) == (2, "", [line])
    r = kubevipd("run", "--config", str(f), "--run-dir", str(tmp_path / "run"))
    assert (r.returncode, r.stderr.splitlines()) == (2, [line])
    assert not (tmp_path / "run").exists()


def _run_config(tmp_path: Path, extra: str) -> Path:
    kc = tmp_path / "admin.conf"
    kc.write_text("apiVersion: v1\nkind: Config\nclusters: []\n")
    path = tmp_path / "kubevip.yaml"
    path.write_text(f"vip:\n  address: 192.0.2.75\nelection:\n  kubeconfig: {kc}\n{extra}")
    return path


def test_run_waits_for_a_missing_interface_then_exits_1_for_systemd_to_retry(
    tmp_path: Path,
) -> None:
    """At boot the interface may come after us: waited for (20s; here 0.5s), then status 1,
    which the unit restarts; never 2, which it does not (RestartPreventExitStatus=2)."""
    cfg = _run_config(tmp_path, "interface: kvd-no-such0\n")
    r = kubevipd(
        "run", "--config", str(cfg), "--run-dir", str(tmp_path / "run"),
        env={"KUBEVIPD_INTERFACE_WAIT": "0.5"},
    )  # fmt: skip
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in r.stderr
    assert lines[0].endswith("interface kvd-no-such0 does not exist; waiting up to 0.5s for it")
    assert lines[1].endswith(
        "interface kvd-no-such0 does not exist; exiting so that systemd starts kubevipd again"
    )


BGP = (
    "announce:\n  mode: bgp\n  bgp:\n    router_id: 192.0.2.1\n"
    "    local_as: 65000\n    peers: [{address: 192.0.2.2, as: 65001}]\n"
)
METAL = (
    "announce:\n  mode: metal\n  metal:\n    project_id: 7a5b2b1e-0c2e-4b4e-9a52-1d3f0e6f8a11\n"
    "    token_file: /etc/kubevip/metal.token\n"
)
NOT_YET = "is not supported by this version of kubevipd yet"


def test_run_refuses_modes_this_version_does_not_have(tmp_path: Path) -> None:
    cfg = _run_config(tmp_path, "interface: lo\n" + METAL)
    r = kubevipd("run", "--config", str(cfg), "--run-dir", str(tmp_path / "run"))
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        f"{cfg}:7:9: announce.mode: metal {NOT_YET} (it runs arp and bgp)"
    ]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("text", "lines"),
    [
        (
            "vip:\n  address: 192.0.2.75\n" + METAL,
            ["4:9: announce.mode: metal " + NOT_YET + " (it runs arp and bgp)"],
        ),
        (
            "vip:\n  dns:\n    name: cp.example.com\n",
            ["2:3: vip.dns: a VIP from DNS " + NOT_YET + " (set vip.address)"],
        ),
        (
            "vip:\n  dhcp: {hostname: cp-vip}\n" + BGP,
            ["2:3: vip.dhcp: a VIP from DHCP " + NOT_YET + " (set vip.address)"],
        ),
    ],
    ids=["metal", "dns", "dhcp with bgp"],
)
def test_check_config_says_what_this_version_does_not_run(
    tmp_path: Path, text: str, lines: list[str]
) -> None:
    """A config kube-vip runs but this daemon does not: check-config and run say so, one line
    each at its position, exit 2; render-manifest still renders it."""
    f = tmp_path / "kubevip.yaml"
    f.write_text(text)
    r = kubevipd("check-config", str(f))
    assert (r.returncode, r.stdout, r.stderr.splitlines()) == (2, "", [f"{f}:{x}" for x in lines])
    from kubevipd.cli import main

    assert main(["run", "--config", str(f), "--run-dir", str(tmp_path / "run")]) == 2
    assert not (tmp_path / "run").exists()
    r = kubevipd("render-manifest", "--config", str(f), "--kind", "daemonset")
    assert r.returncode == 0 and "kind: DaemonSet" in r.stdout, r.stderr


def test_check_config_and_the_daemon_refuse_the_same_configs() -> None:
    """check-config's reasons and the daemon's own check (which a reload runs too) cannot drift:
    both come from config.model.not_supported_yet."""
    from kubevipd.config import load_text
    from kubevipd.config.loader import cannot_run
    from kubevipd.resolve import RunError, check_supported

    vip = "vip: {address: 192.0.2.75}\n"
    texts = [
        vip,
        vip + BGP,
        vip + METAL,
        "vip: {dns: {name: cp.example.com}}\n",
        "vip: {dhcp: {hostname: cp-vip}}\n",
        "vip: {address: [192.0.2.75, 'fd00::75']}\n",
    ]
    for text in texts:
        loaded = load_text(text, "k.yaml")
        try:
            check_supported(loaded.config)
            refused = False
        except RunError:
            refused = True
        assert refused == bool(cannot_run(loaded)), text


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (raw sockets)")
def test_run_with_a_kubeconfig_it_cannot_use_yet_waits_for_it(tmp_path: Path) -> None:
    """A kubeconfig caught mid-write by kubeadm can heal by itself: the daemon says so once
    and waits (it used to exit 2, which the unit never restarts); SIGTERM still ends it."""
    import selectors
    import signal
    import time

    cfg = _run_config(tmp_path, "interface: lo\nhealth:\n  enabled: false\n")
    env = {k: v for k, v in os.environ.items() if k != "KUBEVIPD_CONFIG"}
    p = subprocess.Popen(
        [KUBEVIPD, "run", "--config", str(cfg), "--run-dir", str(tmp_path / "run")],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert p.stderr is not None
    seen = ""
    sel = selectors.DefaultSelector()
    sel.register(p.stderr, selectors.EVENT_READ)
    end = time.monotonic() + 30
    while "waiting for it to become usable" not in seen and time.monotonic() < end:
        if sel.select(timeout=1.0):
            line = p.stderr.readline()
            if not line:
                break
            seen += line
    assert "cannot use kubeconfig" in seen and "waiting for it to become usable" in seen, seen
    assert p.poll() is None  # still running
    p.send_signal(signal.SIGTERM)
    out = p.stderr.read()
    assert p.wait(30) == 0, seen + out
    assert (seen + out).count("cannot use kubeconfig") == 1 and "Traceback" not in seen + out


def test_status_without_a_daemon_exits_3(tmp_path: Path) -> None:
    r = kubevipd("status", "--run-dir", str(tmp_path))
    assert r.returncode == 3 and "not running" in r.stderr
    r = kubevipd("status", "--json", "--run-dir", str(tmp_path))
    assert r.returncode == 3 and json.loads(r.stdout) == {"running": False}


def test_status_of_a_stale_file_says_not_running(tmp_path: Path) -> None:
    from kubevipd import status

    status.write(
        tmp_path,
        {
            "pid": 2**22 + 12345,  # above pid_max: never a live process
            "node": "cp1",
            "role": "leader",
            "holder": "cp1",
            "vip": ["192.0.2.75"],
            "interface": "eth0",
            "vip_present": True,
            "lease": "kube-system/plndr-cp-lock",
            "role_since": 0,
            "last_renew": None,
            "transitions": 2,
            "health": "healthy",
            "last_error": "",
        },
    )
    r = kubevipd("status", "--run-dir", str(tmp_path))
    assert r.returncode == 3 and "daemon not running" in r.stdout
    assert "192.0.2.75 on eth0" in r.stdout


def test_the_status_file_is_readable_by_anyone_whatever_the_umask(tmp_path: Path) -> None:
    from kubevipd import status

    old = os.umask(0o077)  # the unit's
    try:
        status.write(tmp_path, {"pid": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "status.json").stat().st_mode & 0o777 == 0o644


def test_schema_prints_the_shipped_schema() -> None:
    r = kubevipd("schema")
    assert r.returncode == 0
    shipped = json.loads((ROOT / "kubevipd" / "config" / "schema.json").read_text())
    assert json.loads(r.stdout) == shipped


def test_check_config_does_not_import_the_kubernetes_client() -> None:
    code = (
        "import sys; from kubevipd.cli import main; rc = main(['check-config', sys.argv[1]]);"
        "bad = [m for m in ('kubernetes', 'pyroute2', 'scapy') if m in sys.modules];"
        "print(bad); raise SystemExit(rc)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0 and r.stdout.splitlines()[-1] == "[]"


def test_render_then_import_through_the_cli(tmp_path: Path) -> None:
    r = kubevipd("render-manifest", "--config", str(EXAMPLE))
    assert r.returncode == 0 and "kind: Pod" in r.stdout
    manifest = tmp_path / "vip.yaml"
    manifest.write_text(r.stdout)
    r2 = kubevipd("import-manifest", str(manifest))
    assert r2.returncode == 0, r2.stderr
    back = tmp_path / "kubevip.yaml"
    back.write_text(r2.stdout)
    from kubevipd.config import load

    assert load(back).config == load(EXAMPLE).config


def test_import_from_stdin_and_bad_input() -> None:
    r = kubevipd("import-manifest", "-", stdin="kind: ConfigMap\n")
    assert r.returncode == 1 and "no Pod or DaemonSet with a kube-vip container" in r.stderr
    r = kubevipd("import-manifest", "/nonexistent/vip.yaml")
    assert r.returncode == 1 and "cannot read" in r.stderr and "Traceback" not in r.stderr


def test_copy_kubeconfig_copies_into_the_directory_from_the_environment(tmp_path: Path) -> None:
    admin = tmp_path / "admin.conf"
    admin.write_text("kubeconfig")
    conf = tmp_path / "kubevip.yaml"
    conf.write_text(f"vip: {{address: 192.0.2.75}}\nelection: {{kubeconfig: {admin}}}\n")
    copies = tmp_path / "copies"
    copies.mkdir()
    r = kubevipd(
        "copy-kubeconfig", "--config", str(conf), env={"KUBEVIPD_KUBECONFIG_DIR": str(copies)}
    )
    assert r.returncode == 0, r.stderr
    assert (copies / "admin.conf").read_text() == "kubeconfig"
    assert f"copied {admin} to {copies / 'admin.conf'}" in r.stderr
    conf.write_text("vip: {address: 192.0.2.75}\nelection: {lease_duration: 1s}\n")
    assert kubevipd("copy-kubeconfig", "--config", str(conf), "--to", str(copies)).returncode == 2
