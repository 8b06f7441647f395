"""The ``kubevipd`` command line.

Each command imports only what it needs: check-config must stay fast and must not pay for the
Kubernetes client. Exit status: 0 success, 1 failure at run time, 2 bad config or bad usage.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from kubevipd import __version__, exitcodes

if TYPE_CHECKING:
    from kubevipd.config import Loaded
    from kubevipd.config.model import Config

CONFIG_ENV = "KUBEVIPD_CONFIG"
DEFAULT_CONFIG = "/etc/kubevip.yaml"


def _default_config() -> str:
    return os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        "-c",
        metavar="PATH",
        default=None,
        help=f"config file (default: ${CONFIG_ENV} or {DEFAULT_CONFIG})",
    )


def _add_run_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--run-dir",
        metavar="DIR",
        default=None,
        help="where the daemon keeps its status (default: $KUBEVIPD_RUN_DIR or /run/kubevipd)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubevipd",
        description="Keeps a Kubernetes control-plane virtual IP on exactly one healthy node.",
    )
    parser.add_argument("--version", action="version", version=f"kubevipd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "run",
        help="run the daemon",
        description="Run the daemon in the foreground (systemd starts it this way). Exit status: "
        "0 after a clean stop, 2 for a bad config or bad input at run time, 1 otherwise.",
    )
    _add_config(p)
    _add_run_dir(p)

    p = sub.add_parser(
        "cleanup",
        help="remove this node's VIP and release its lease (systemd's ExecStopPost)",
        description="Remove the VIP from this node and, if this node still holds the Lease, "
        "release it so a follower takes over at once. systemd runs it after the daemon exits "
        "(ExecStopPost), so a daemon that died holding the VIP never leaves two holders. Safe "
        "to run at any time the daemon is not running; exit status 0 unless the config is bad.",
    )
    _add_config(p)
    _add_run_dir(p)

    p = sub.add_parser(
        "copy-kubeconfig",
        help="copy the root-only kubeconfig for the non-root daemon (kubevipd-kubeconfig.service)",
        description="Copy election.kubeconfig (and, next to an admin.conf, kubeadm's "
        "super-admin.conf) into DIR, readable by DIR's group only, replacing each copy at once; "
        "remove copies whose file is gone. kubevipd-kubeconfig.service runs it as root before "
        "the daemon starts and whenever the files change. Exit status 0 also when a file does "
        "not exist yet, 2 for a bad config, 1 when a copy cannot be written.",
    )
    _add_config(p)
    p.add_argument(
        "--to",
        metavar="DIR",
        help="where the copies go (default: $KUBEVIPD_KUBECONFIG_DIR or /run/kubevipd-kubeconfig)",
    )

    p = sub.add_parser(
        "status",
        help="show the daemon's role, holder and VIP",
        description="Show what the running daemon reports: role, holder, VIP, interface, time in "
        "role, last renew, transitions. Exit status 0 while it runs, 3 when it does not.",
    )
    _add_run_dir(p)
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser(
        "demo",
        help="run the failover demo in a lab of network namespaces (root)",
        description="Build a three-node lab of network namespaces on this machine, shaped like "
        "a kubeadm control plane (each node runs its own lab apiserver on 6443, one store "
        "stands for etcd, every kubeconfig names the VIP), run three kubevipd daemons, ping the "
        "VIP and GET https://VIP:6443/readyz from a client namespace, stop the leader, stop the "
        "next leader's apiserver, then kill the next one, and print each measured outage. "
        "Everything it makes is removed at the end, also on Ctrl-C.",
    )
    p.add_argument(
        "--nodes",
        type=int,
        default=3,
        choices=range(2, 6),
        metavar="N",
        help="number of nodes (2 to 5, default 3)",
    )
    p.add_argument("--keep-logs", metavar="DIR", help="copy the daemons' logs to DIR")

    p = sub.add_parser(
        "check-config",
        help="validate a config file",
        description="Validate a config file for this version of the daemon. Prints 'PATH: ok' "
        "and exits 0, or prints every error as FILE:LINE:COLUMN: field: message and exits 2; "
        "what this version cannot run yet (bgp, metal, a VIP from dns or dhcp) is such an error.",
    )
    p.add_argument(
        "path", nargs="?", metavar="PATH", help=f"default: ${CONFIG_ENV} or {DEFAULT_CONFIG}"
    )

    p = sub.add_parser(
        "render-manifest",
        help="print the equivalent kube-vip static pod, DaemonSet or RBAC",
        description="Print the kube-vip manifest equivalent to the config: what `kube-vip "
        "manifest pod|daemonset|rbac` prints for the same settings.",
    )
    _add_config(p)
    p.add_argument(
        "--kind",
        choices=("pod", "daemonset", "rbac"),
        default="pod",
        help="static pod (default), DaemonSet, or RBAC for the DaemonSet",
    )
    p.add_argument(
        "--image",
        metavar="IMAGE",
        help="kube-vip image, or only its tag (default: a pinned release)",
    )
    p.add_argument(
        "--in-cluster",
        action="store_true",
        help="use a ServiceAccount instead of the host's kubeconfig",
    )
    p.add_argument(
        "--include-secrets",
        action="store_true",
        help="write BGP passwords and the Metal token into the manifest (a static pod "
        "cannot read a Secret); keep the output mode 0600",
    )

    p = sub.add_parser(
        "import-manifest",
        help="convert a kube-vip manifest into kubevip.yaml",
        description="Read a kube-vip static pod or DaemonSet manifest and print the equivalent "
        "kubevip.yaml; what cannot be carried over is listed on stderr.",
    )
    p.add_argument("file", metavar="FILE", help="the manifest ('-' for standard input)")

    sub.add_parser(
        "schema",
        help="print the config's JSON Schema",
        description="Print the JSON Schema of kubevip.yaml.",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {
        "run": cmd_run,
        "status": cmd_status,
        "cleanup": cmd_cleanup,
        "copy-kubeconfig": cmd_copy_kubeconfig,
        "demo": cmd_demo,
        "check-config": cmd_check_config,
        "render-manifest": cmd_render_manifest,
        "import-manifest": cmd_import_manifest,
        "schema": cmd_schema,
    }[args.command]
    try:
        return handler(args)
    except KeyboardInterrupt:
        return exitcodes.INTERRUPTED
    except BrokenPipeError:
        # `kubevipd schema | head`: not an error worth a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return exitcodes.FAILURE


def _load(path: str, to_run: bool = False) -> Loaded | None:
    """Load and validate; print diagnostics to stderr; None when the config has errors.

    ``to_run`` (check-config, run): also None when this version of the daemon cannot run the
    config (bgp, metal, a VIP from dns or dhcp), each reason one line at its position, as
    kubevipd.config.loader.cannot_run() gives them. render-manifest and import-manifest take
    such a config: kube-vip runs it.
    """
    from kubevipd.config import ConfigError, load
    from kubevipd.config.loader import cannot_run

    try:
        loaded = load(path)
    except ConfigError as e:
        for d in e.diagnostics:
            print(d, file=sys.stderr)
        return None
    refused = cannot_run(loaded) if to_run else ()
    for d in sorted([*loaded.warnings, *refused], key=lambda d: (d.line or 0, d.column or 0)):
        print(d, file=sys.stderr)
    return None if refused else loaded


def cmd_check_config(args: argparse.Namespace) -> int:
    path = args.path or _default_config()
    if _load(path, to_run=True) is None:
        return exitcodes.CONFIG
    print(f"{path}: ok")
    return exitcodes.OK


def cmd_run(args: argparse.Namespace) -> int:
    import signal

    # Importing the daemon's libraries takes a second; a stop asked for meanwhile is kept.
    early: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: early.append(signum))
    path = args.config or _default_config()
    loaded = _load(path, to_run=True)
    if loaded is None:
        return exitcodes.CONFIG
    from kubevipd.daemon import run
    from kubevipd.status import run_dir

    return run(path, loaded.config, run_dir(args.run_dir), early)


def _helper_config(args: argparse.Namespace) -> Config | None:
    """The config for a short helper that systemd runs (cleanup, copy-kubeconfig); its log
    lines go to the journal as they are."""
    loaded = _load(args.config or _default_config())
    if loaded is None:
        return None
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return loaded.config


def cmd_cleanup(args: argparse.Namespace) -> int:
    cfg = _helper_config(args)
    if cfg is None:
        return exitcodes.CONFIG
    from kubevipd.cleanup import cleanup
    from kubevipd.status import run_dir

    return cleanup(cfg, run_dir(args.run_dir))


def cmd_copy_kubeconfig(args: argparse.Namespace) -> int:
    cfg = _helper_config(args)
    if cfg is None:
        return exitcodes.CONFIG
    from kubevipd import kubeconfig_copy

    dest = (
        args.to
        or os.environ.get(kubeconfig_copy.KUBECONFIG_DIR_ENV)
        or str(kubeconfig_copy.DEFAULT_DIR)
    )
    return kubeconfig_copy.run(cfg, Path(dest))


def cmd_status(args: argparse.Namespace) -> int:
    import json

    from kubevipd.status import format_text, read, run_dir

    directory = run_dir(args.run_dir)
    state = read(directory)
    if state is None:
        if args.json:
            print(json.dumps({"running": False}))
        else:
            print(f"kubevipd is not running (no status in {directory})", file=sys.stderr)
        return exitcodes.NOT_RUNNING
    if args.json:
        print(json.dumps(state, indent=2, sort_keys=True))
    else:
        print(format_text(state))
    return exitcodes.OK if state["running"] else exitcodes.NOT_RUNNING


def cmd_demo(args: argparse.Namespace) -> int:
    from kubevipd.lab.demo import main as demo_main

    rc: int = demo_main(args.nodes, args.keep_logs)
    return rc


def cmd_render_manifest(args: argparse.Namespace) -> int:
    from kubevipd.config.secrets import SecretError
    from kubevipd.manifest import ManifestError, RenderOptions, dump, image_ref, render

    path = args.config or _default_config()
    loaded = _load(path)
    if loaded is None:
        return exitcodes.CONFIG
    options = RenderOptions(
        kind=args.kind,
        image=image_ref(args.image),
        in_cluster=args.in_cluster,
        include_secrets=args.include_secrets,
    )
    try:
        rendered = render(loaded.config, options)
    except ManifestError as e:
        print(f"{path}: {e.field}: cannot be rendered for kube-vip: {e.message}", file=sys.stderr)
        return exitcodes.CONFIG
    except SecretError as e:
        print(f"{path}: {e}", file=sys.stderr)
        return exitcodes.FAILURE
    for note in rendered.notes:
        print(note, file=sys.stderr)
    sys.stdout.write(dump(rendered.documents))
    return exitcodes.OK


def cmd_import_manifest(args: argparse.Namespace) -> int:
    from kubevipd.config import ConfigError, load_text
    from kubevipd.manifest import ManifestImportError, import_manifest, to_yaml

    name = args.file
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else "not UTF-8 text"
        print(f"{name}: cannot read: {reason}", file=sys.stderr)
        return exitcodes.FAILURE
    try:
        imported = import_manifest(text)
    except ManifestImportError as e:
        print(f"{name}: {e}", file=sys.stderr)
        return exitcodes.FAILURE
    except ValueError as e:
        print(f"{name}: a kube-vip setting has a value kubevipd cannot read: {e}", file=sys.stderr)
        return exitcodes.FAILURE
    output = to_yaml(imported.config)
    sys.stdout.write(output)
    for note in imported.notes:
        print(f"{name}: {note}", file=sys.stderr)
    try:
        load_text(output, "<imported>")
    except ConfigError as e:
        print(
            f"{name}: the imported config needs edits before kubevipd can use it:", file=sys.stderr
        )
        for d in e.diagnostics:
            print(f"  {d}", file=sys.stderr)
        return exitcodes.FAILURE
    return exitcodes.OK


def cmd_schema(args: argparse.Namespace) -> int:
    import json

    from kubevipd.config.loader import schema

    print(json.dumps(schema(), indent=2))
    return exitcodes.OK


if __name__ == "__main__":
    raise SystemExit(main())
