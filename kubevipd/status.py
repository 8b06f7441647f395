"""The daemon's state for ``kubevipd status``: a small JSON file under /run/kubevipd/.

The daemon replaces the file atomically; ``status`` reads it and checks the writer still runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

DEFAULT_RUN_DIR = Path("/run/kubevipd")
RUN_DIR_ENV = "KUBEVIPD_RUN_DIR"
FILE = "status.json"


def run_dir(override: str | None = None) -> Path:
    return Path(override or os.environ.get(RUN_DIR_ENV) or DEFAULT_RUN_DIR)


def write(directory: Path, state: dict[str, Any]) -> None:
    """Mode 0644 whatever the umask (the unit's is 0077): it holds no secret, and ``kubevipd
    status`` should work for any user who may look at the service."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    tmp.chmod(0o644)
    os.replace(tmp, directory / FILE)


BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def _boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


def deadline_fields(deadline: float | None) -> dict[str, Any]:
    """The leader's renew deadline on the monotonic clock, which is shared by every process of
    one boot (and only of one boot: hence the boot id)."""
    return {"held_until_monotonic": deadline, "boot_id": _boot_id()}


def held_until(directory: Path) -> float | None:
    """The deadline of the run that wrote the file, if it led on this boot: a VIP it left
    behind may stay until then, and not a moment longer (kubevipd.machine)."""
    try:
        state = json.loads((directory / FILE).read_text())
        deadline = state.get("held_until_monotonic")
        if deadline is None or not state.get("boot_id") or state["boot_id"] != _boot_id():
            return None
        return float(deadline)
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def recorded_vip(directory: Path) -> tuple[list[str], str] | None:
    """The VIP (``address/prefix`` each) and the interface the last run held it on, as it
    recorded them: after a reload moved the VIP, the config file names another one."""
    try:
        state = json.loads((directory / FILE).read_text())
        cidrs, ifname = state["vip_cidr"], state["interface"]
        if isinstance(cidrs, list) and cidrs and isinstance(ifname, str) and ifname:
            return [str(c) for c in cidrs], ifname
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def remove(directory: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (directory / FILE).unlink()


def read(directory: Path) -> dict[str, Any] | None:
    """The last state written, with ``running`` set from whether its pid is alive."""
    try:
        state: dict[str, Any] = json.loads((directory / FILE).read_text())
    except FileNotFoundError:
        return None
    pid = int(state.get("pid", 0))
    running = False
    if pid > 0:
        try:
            os.kill(pid, 0)
            running = True
        except ProcessLookupError:
            running = False
        except PermissionError:
            running = True
    state["running"] = running
    return state


def _ago(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def format_text(state: dict[str, Any]) -> str:
    now = time.time()
    renew = f"{_ago(now - state['last_renew'])} ago" if state.get("last_renew") else "-"
    lines = [
        f"role:         {state['role']}{'' if state['running'] else ' (daemon not running)'}",
        f"node:         {state['node']}",
        f"holder:       {state.get('holder') or '-'}",
        f"VIP:          {', '.join(state['vip'])} on {state['interface']}"
        f" ({'present' if state.get('vip_present') else 'absent'} here)",
        f"lease:        {state['lease']}",
        f"in role for:  {_ago(now - state['role_since'])}",
        f"last renew:   {renew}",
        f"transitions:  {state['transitions']}",
        f"health:       {state.get('health', '-')}",
    ]
    for peer, peer_state in sorted((state.get("bgp_peers") or {}).items()):
        lines.append(f"BGP peer:     {peer} {peer_state}")
    if state.get("last_error"):
        lines.append(f"last error:   {state['last_error']}")
    return "\n".join(lines)
