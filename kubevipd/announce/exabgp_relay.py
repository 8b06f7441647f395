"""The helper ExaBGP runs for kubevipd: it joins ExaBGP's process API to kubevipd's socket.

ExaBGP starts its API programs itself, with pipes on their stdin and stdout and every other
file descriptor closed, so kubevipd cannot hand it one: this relay connects to the Unix socket
kubevipd listens on (the one argument) and copies lines both ways, each direction on its own
thread, so that ExaBGP never blocks on a full pipe (ExaBGP 4.2 stops when its helper stops
reading). When kubevipd's end closes (kubevipd stopped, crashed or was killed), the relay
ends ExaBGP too (SIGTERM to its parent): ExaBGP 4.2 goes on announcing after its helper died,
and a route of a node whose daemon is gone must not stay in the routers.

Standard library only, run by its file path: it must start in milliseconds and depend on
nothing kubevipd imports.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading


def _end_exabgp(exabgp: int) -> None:
    """SIGTERM to ExaBGP, if it is still our parent: once it died, the parent is an init
    process (PID 1, or a subreaper), which must never get it."""
    if os.getppid() == exabgp:
        os.kill(exabgp, signal.SIGTERM)


def _to_exabgp(sock: socket.socket, exabgp: int) -> None:
    """kubevipd's commands, line by line, to ExaBGP's stdin; at EOF, end ExaBGP."""
    out = sys.stdout.buffer
    reader = sock.makefile("rb")
    try:
        for line in reader:
            out.write(line)
            out.flush()
    except (OSError, ValueError):
        pass
    _end_exabgp(exabgp)
    os._exit(0)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: exabgp_relay.py SOCKET\n")
        return 2
    exabgp = os.getppid()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(argv[1])
    except OSError as e:
        sys.stderr.write(f"kubevipd relay: cannot connect to {argv[1]}: {e}\n")
        _end_exabgp(exabgp)
        return 1
    threading.Thread(target=_to_exabgp, args=(sock, exabgp), daemon=True).start()
    # ExaBGP's news (JSON lines, acks) to kubevipd, as fast as it writes them.
    try:
        while True:
            chunk = os.read(0, 65536)
            if not chunk:
                break  # ExaBGP is ending
            sock.sendall(chunk)
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
