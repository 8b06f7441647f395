"""Run a command without the ambient capabilities this process holds: how kubevipd starts ExaBGP.

kubevipd's unit gives it CAP_NET_ADMIN and CAP_NET_RAW as ambient capabilities (it runs as the
kubevipd user and adds the VIP, sends ARP), and ambient capabilities pass to every child across
exec. ExaBGP needs neither: it connects out to the peers' port, and TCP MD5 and the TTL are
socket options anyone may set. It parses what the peers send, so it runs without them: a flaw
in its parser must not be able to move addresses or routes on the host.

``prctl(PR_CAP_AMBIENT_CLEAR_ALL)`` before the exec, not ``capset`` (which setpriv and capsh
call): the unit's ``SystemCallFilter=~@privileged`` refuses capset, and prctl is in
``@system-service``. After the exec a non-root process keeps no capability: running a file
without file capabilities (python3; exabgp is a python3 script), its permitted set is its
ambient set. The inheritable set keeps the two (clearing it needs capset), which matters only
for a file with inheritable file capabilities, and the unit's ``NoNewPrivileges=yes`` lets no
exec gain any. As root the exec gives all of them back, as it always does.

    python3 -I dropcaps.py COMMAND [ARG...]

Standard library only, run by its file path, as the relay is.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys

PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4


def clear_ambient() -> str | None:
    """Clear the ambient set; None when done, else why not. EINVAL: a kernel before 4.3,
    which has no ambient set to clear."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) == 0:
        return None
    err = ctypes.get_errno()
    return None if err == errno.EINVAL else os.strerror(err)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        sys.stderr.write("usage: dropcaps.py COMMAND [ARG...]\n")
        return 2
    why = clear_ambient()
    if why is not None:  # ExaBGP still runs: BGP matters more than this second fence
        sys.stderr.write(f"kubevipd: ExaBGP keeps kubevipd's capabilities ({why})\n")
    try:
        os.execvp(argv[1], argv[1:])
    except OSError as e:
        sys.stderr.write(f"kubevipd: cannot run {argv[1]}: {e.strerror or e}\n")
        return 127


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
