"""ExaBGP runs without kubevipd's ambient capabilities (kubevipd/announce/dropcaps.py).

The unit runs kubevipd as its own user with CAP_NET_ADMIN and CAP_NET_RAW as ambient
capabilities. setpriv gives a process just that (a non-root user, the two capabilities ambient),
and the tests read what its child ends up with, through the shim and without it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubevipd.announce import exabgp

from .conftest import UNIT_CAPS, capability_sets, require_root


@pytest.fixture
def shim() -> Iterator[Path]:
    """The shim where the unprivileged user can read it (the checkout may be root's alone)."""
    require_root()
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux)")
    d = Path(tempfile.mkdtemp(prefix="kubevipd-dropcaps-"))
    try:
        d.chmod(0o755)
        path = d / "dropcaps.py"
        shutil.copy(exabgp.DROPCAPS, path)
        path.chmod(0o644)
        assert path.read_bytes() == exabgp.DROPCAPS.read_bytes()
        yield path
    finally:
        shutil.rmtree(d)


STATUS = ["cat", "/proc/self/status"]


def caps_of(argv: list[str]) -> dict[str, int]:
    """The capability sets ``argv`` (which ends in ``cat /proc/self/status``) ends up with when
    a process shaped as kubevipd under its unit starts it: a user that is not root, with the
    unit's two capabilities ambient."""
    out = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         "--inh-caps=+net_admin,+net_raw", "--ambient-caps=+net_admin,+net_raw", "--", *argv],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return capability_sets(out.stdout)


def test_without_the_shim_a_child_inherits_the_units_capabilities(shim: Path) -> None:
    """What the shim is for: the unit's two capabilities reach any child across exec."""
    assert caps_of(STATUS) == {"CapEff": UNIT_CAPS, "CapPrm": UNIT_CAPS, "CapAmb": UNIT_CAPS}


def test_exabgp_runs_without_the_units_capabilities(
    shim: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The supervisor's own command line for ExaBGP, with ``cat`` in ExaBGP's place."""
    monkeypatch.setattr(exabgp, "DROPCAPS", shim)  # the same file, readable by that user
    argv = exabgp.exabgp_argv(*STATUS)
    assert argv[0] == sys.executable, argv  # through the interpreter and the shim
    argv[0] = os.path.realpath(argv[0])  # the interpreter itself, not the venv's link to it
    assert caps_of(argv) == {"CapEff": 0, "CapPrm": 0, "CapAmb": 0}
