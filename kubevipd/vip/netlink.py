"""Add and remove the VIP with netlink, and watch the link and the address.

Every operation is idempotent (an add creates or replaces; pyroute2 0.7 reports a missing
address to delete as errno 99, which means "already done"), and IPv6 VIPs are added with
IFA_F_NODAD so they answer at once instead of after duplicate address detection. An add may give
the address a lifetime: the kernel then removes it by itself unless it is added again in time.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence

from kubevipd.lazyimport import defer_pyroute2

defer_pyroute2()  # before the first pyroute2 import: only IPRoute's modules load
# pyroute2 reads /proc/net/psched at import for its tc support, which kubevipd does not use, and
# warns twice where the unit hides /proc/net (ProcSubset=pid): noise in the journal.
logging.getLogger("pyroute2.netlink.rtnl.tcmsg.common").setLevel(logging.ERROR)

from pyroute2.iproute.linux import IPRoute  # noqa: E402
from pyroute2.netlink import NLM_F_REQUEST  # noqa: E402
from pyroute2.netlink.exceptions import NetlinkError  # noqa: E402
from pyroute2.netlink.rtnl import (  # noqa: E402
    RTM_GETLINK,
    RTMGRP_IPV4_IFADDR,
    RTMGRP_IPV6_IFADDR,
    RTMGRP_LINK,
)
from pyroute2.netlink.rtnl.marshal import MarshalRtnl  # noqa: E402

from kubevipd.vip.model import Vip  # noqa: E402

__all__ = ["InterfaceError", "Monitor", "Vip", "VipLink", "default_route_interface"]
from kubevipd.supervise import supervise  # noqa: E402

log = logging.getLogger("kubevipd.vip")

IFA_F_NODAD = 0x02
_DONE_DEL = {errno.EADDRNOTAVAIL, errno.ENOENT, errno.ESRCH}


class InterfaceError(Exception):
    """The interface does not exist or cannot be used."""


def default_route_interface(ipr: IPRoute | None = None) -> str | None:
    """The interface of the IPv4 (else IPv6) default route, as kube-vip picks one."""
    own = ipr is None
    ipr = ipr or IPRoute()
    try:
        for family in (socket.AF_INET, socket.AF_INET6):
            for route in ipr.get_default_routes(family=family):
                oif = route.get_attr("RTA_OIF")
                if oif:
                    links = ipr.get_links(oif)
                    if links:
                        return str(links[0].get_attr("IFLA_IFNAME"))
        return None
    finally:
        if own:
            ipr.close()


# --- raw address requests: one path for every pyroute2 release, with a lifetime the kernel keeps

RTM_NEWADDR = 20
NLMSG_ERROR = 2
NLM_F_ACK = 0x4
NLM_F_REPLACE = 0x100
NLM_F_CREATE = 0x400
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_CACHEINFO = 6
IFA_FLAGS = 8
FOREVER = 0xFFFFFFFF


def _nla(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return struct.pack("=HH", size, kind) + payload + b"\0" * (-size % 4)


def address_request(index: int, vip: Vip, lifetime: int | None, seq: int) -> bytes:
    """RTM_NEWADDR, create or replace: the address with ``lifetime`` seconds of valid and
    preferred lifetime (None: forever). Replacing an address that is there changes only its
    lifetime, which is how a renewal extends it."""
    v6 = vip.address.version == 6
    flags = IFA_F_NODAD if v6 else 0
    family = socket.AF_INET6 if v6 else socket.AF_INET
    packed = vip.address.packed
    life = FOREVER if lifetime is None else lifetime
    body = struct.pack("=BBBBI", family, vip.prefixlen, flags, 0, index)  # scope: universe
    body += _nla(IFA_ADDRESS, packed)
    if not v6:
        body += _nla(IFA_LOCAL, packed)
    body += _nla(IFA_CACHEINFO, struct.pack("=IIII", life, life, 0, 0))
    body += _nla(IFA_FLAGS, struct.pack("=I", flags))
    flags16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
    return struct.pack("=IHHII", 16 + len(body), RTM_NEWADDR, flags16, seq, 0) + body


def _ack_error(data: bytes, seq: int) -> int | None:
    """The errno of the kernel's answer to ``seq`` (0: done), or None if this is not it."""
    offset = 0
    while offset + 16 <= len(data):
        size, kind, _, got_seq, _ = struct.unpack_from("=IHHII", data, offset)
        if kind == NLMSG_ERROR and got_seq == seq and size >= 20:
            error: int = struct.unpack_from("=i", data, offset + 16)[0]
            return -error
        offset += max(16, (size + 3) & ~3)
    return None


class VipLink:
    """The VIP's addresses on one interface. Not thread-safe: the main loop owns it.

    Addresses go on with a request of our own (``address_request``), the same on every pyroute2
    release (0.7 ignores a lifetime given to ``addr()``); reads and removals use pyroute2.
    """

    ACK_TIMEOUT = 2.0  # seconds: the kernel answers at once; a bound all the same

    def __init__(self, ifname: str, vips: Sequence[Vip], ipr: IPRoute | None = None) -> None:
        self.ifname = ifname
        self.vips = tuple(vips)
        self._ipr = ipr or IPRoute()
        found = self._ipr.link_lookup(ifname=ifname)
        if not found:
            self._ipr.close()
            raise InterfaceError(f"interface {ifname} does not exist")
        self.index: int = found[0]
        self._nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self._nl.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        self._ipr.close()
        self._nl.close()

    def mac(self) -> str:
        link = self._ipr.get_links(self.index)[0]
        return str(link.get_attr("IFLA_ADDRESS"))

    def carrier(self) -> bool:
        link = self._ipr.get_links(self.index)[0]
        return _oper_up(link)

    def present(self) -> list[Vip]:
        """Which VIP addresses are on the interface now."""
        have = {
            (a.get_attr("IFA_ADDRESS"), a["prefixlen"])
            for a in self._ipr.get_addr(index=self.index)
        }
        return [v for v in self.vips if (str(v.address), v.prefixlen) in have]

    def add(self, lifetime: int | None = None) -> None:
        """Every VIP address on the interface, created or replaced. ``lifetime``: seconds the
        kernel keeps it unless added again (a fence that needs no daemon: see
        kubevipd.machine.Machine._vip_lifetime); None: until removed."""
        for v in self.vips:
            self._seq += 1
            self._nl.sendto(address_request(self.index, v, lifetime, self._seq), (0, 0))
            code = self._ack(self._seq)
            if code:
                raise InterfaceError(
                    f"cannot add {v}/{v.prefixlen} to {self.ifname}: {os.strerror(code)}"
                )

    def _ack(self, seq: int) -> int:
        end = time.monotonic() + self.ACK_TIMEOUT
        while (left := end - time.monotonic()) > 0:
            ready, _, _ = select.select([self._nl], [], [], left)
            if not ready:
                break
            code = _ack_error(self._nl.recv(65536), seq)
            if code is not None:
                return code
        return errno.ETIMEDOUT

    def remove(self) -> None:
        for v in self.vips:
            try:
                self._ipr.addr(
                    "del", index=self.index, address=str(v.address), prefixlen=v.prefixlen
                )
            except NetlinkError as e:
                if e.code not in _DONE_DEL and e.code != errno.ENODEV:
                    raise InterfaceError(f"cannot remove {v} from {self.ifname}: {e}") from None


def _oper_up(link: object) -> bool:
    state = link.get_attr("IFLA_OPERSTATE")  # type: ignore[attr-defined]
    return state in ("UP", "UNKNOWN")


class Monitor:
    """Reports carrier changes of the interface and removals of a VIP, from its own thread.

    ``on_link(up)`` and ``on_vip_gone()`` must only hand the news to the main loop.

    The monitor reads a plain netlink socket of its own and only borrows pyroute2's parser, for
    a reason: from pyroute2 0.9 on an ``IPRoute`` keeps one socket per *thread*, so a socket
    bound to the multicast groups on the thread that made the monitor is not the one the
    monitor's thread would read, and that one hears nothing. A kernel socket is the same socket
    in every thread, on every pyroute2 release. It lives in the network namespace of the thread
    that makes the monitor, as any socket does.
    """

    GROUPS = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR
    RCVBUF = 1 << 20  # as pyroute2's own sockets: a burst of link messages must not overflow it

    def __init__(
        self,
        index: int,
        vips: Sequence[Vip],
        on_link: Callable[[bool], None],
        on_vip_gone: Callable[[], None],
    ) -> None:
        self.index = index
        self._vips = {(str(v.address), v.prefixlen) for v in vips}
        self._on_link = on_link
        self._on_vip_gone = on_vip_gone
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.RCVBUF)
            self._sock.bind((0, self.GROUPS))  # port 0: the kernel picks a free one
        except OSError:
            self._sock.close()
            raise
        self._marshal = MarshalRtnl()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_up: bool | None = None
        self._resync_due = False
        self._started_once = False

    def start(self) -> None:
        # Supervised (kubevipd.supervise): a monitor that died on a message it did not expect
        # is logged with its traceback and starts again, checking the link and the VIP anew.
        self._thread = supervise("netlink-monitor", self._run, self._stop.is_set, self._stop.wait)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=2)
        self._sock.close()

    def _run(self) -> None:
        if self._started_once:
            # Started again after dying: news may have come while nobody read (a pause of
            # supervise.RESTART_S), so the carrier and the VIP are checked as after an overflow.
            self._resync_due = True
        self._started_once = True
        while not self._stop.is_set():
            try:
                # After an overflow: read what is queued first, then ask (the answer must fit).
                ready, _, _ = select.select([self._sock], [], [], 0 if self._resync_due else 0.2)
                if not ready:
                    if self._resync_due:
                        self._resync()
                    continue
                data = self._sock.recv(65536)
            except OSError as e:
                if self._stop.is_set():
                    return
                if e.errno == errno.ENOBUFS:
                    # The kernel dropped messages it could not queue: a VIP removal or a carrier
                    # change may be among them. The socket itself goes on working.
                    log.warning("netlink monitor missed messages; checking the link and the VIP")
                    self._resync_due = True
                else:
                    log.warning("netlink monitor: %s", e)
                continue
            try:
                msgs = self._marshal.parse(data)
            except (NetlinkError, ValueError, KeyError, IndexError) as e:
                log.warning("netlink monitor: cannot parse a message: %s", e)
                continue
            for msg in msgs:
                self._dispatch(msg)

    def _resync(self) -> None:
        """After lost messages: report the carrier as the kernel has it now (the reply is an
        RTM_NEWLINK like any other), and report the VIP as possibly gone (the main loop adds it
        again if it holds the lease: adding an address that is there is a no-op)."""
        self._resync_due = False
        self._last_up = None
        # struct nlmsghdr + struct ifinfomsg: RTM_GETLINK for our index.
        request = struct.pack("=IHHIIBxHiII", 32, RTM_GETLINK, NLM_F_REQUEST, 1, 0, 0, 0,
                              self.index, 0, 0)  # fmt: skip
        try:
            self._sock.sendto(request, (0, 0))
        except OSError as e:
            log.warning("netlink monitor: cannot ask for the link state: %s", e)
            self._resync_due = True
        self._on_vip_gone()

    def _dispatch(self, msg: object) -> None:
        event = msg["event"]  # type: ignore[index]
        if event == "RTM_DELADDR" and msg["index"] == self.index:  # type: ignore[index]
            key = (msg.get_attr("IFA_ADDRESS"), msg["prefixlen"])  # type: ignore[attr-defined,index]
            if key in self._vips:
                self._on_vip_gone()
        elif event == "RTM_NEWLINK" and msg["index"] == self.index:  # type: ignore[index]
            up = _oper_up(msg)
            if up != self._last_up:
                self._last_up = up
                self._on_link(up)
        elif event == "RTM_DELLINK" and msg["index"] == self.index:  # type: ignore[index]
            self._on_link(False)
