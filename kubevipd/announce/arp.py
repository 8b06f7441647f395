"""Gratuitous ARP (request and reply forms) and unsolicited Neighbour Advertisements.

Frames are built once with scapy and sent on a raw AF_PACKET socket bound to the interface, so
an announcement costs one send() a frame. Linux updates an existing neighbour entry from either
form, and the override flag makes IPv6 neighbours replace a cached MAC.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence

from kubevipd.vip.netlink import Vip

# scapy reads the host's routes at import and complains loudly where the unit hides /proc/net
# (ProcSubset=pid); kubevipd only builds frames with it, so that is noise.
_scapy_log = logging.getLogger("scapy")
_level = _scapy_log.level
_scapy_log.setLevel(logging.CRITICAL + 1)
try:
    from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6
    from scapy.layers.l2 import ARP, Ether
finally:
    _scapy_log.setLevel(max(_level, logging.ERROR))

log = logging.getLogger("kubevipd.announce")
BROADCAST = "ff:ff:ff:ff:ff:ff"
ALL_NODES_MAC = "33:33:00:00:00:01"


def frames(mac: str, vips: Sequence[Vip]) -> list[bytes]:
    """The frames that announce ``vips`` at ``mac``."""
    out: list[bytes] = []
    for v in vips:
        ip = str(v.address)
        if v.address.version == 4:
            out.append(
                bytes(
                    Ether(dst=BROADCAST, src=mac)
                    / ARP(op=1, hwsrc=mac, psrc=ip, hwdst="00:00:00:00:00:00", pdst=ip)
                )
            )
            out.append(
                bytes(
                    Ether(dst=BROADCAST, src=mac)
                    / ARP(op=2, hwsrc=mac, psrc=ip, hwdst=BROADCAST, pdst=ip)
                )
            )
        else:
            out.append(
                bytes(
                    Ether(dst=ALL_NODES_MAC, src=mac)
                    / IPv6(src=ip, dst="ff02::1", hlim=255)
                    / ICMPv6ND_NA(tgt=ip, R=0, S=0, O=1)
                    / ICMPv6NDOptDstLLAddr(lladdr=mac)
                )
            )
    return out


class ArpAnnouncer:
    """Sends the announcement frames for the VIP on one interface."""

    def __init__(self, ifname: str, mac: str, vips: Sequence[Vip]) -> None:
        self.ifname = ifname
        self._frames = frames(mac, vips)
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        self._sock.bind((ifname, 0))
        self._failing = False

    def announce(self) -> int:
        """Send every frame once; returns how many went out. Errors are logged once a streak."""
        sent = 0
        for f in self._frames:
            try:
                self._sock.send(f)
                sent += 1
            except OSError as e:
                if not self._failing:
                    log.warning("cannot send announcements on %s: %s", self.ifname, e)
                self._failing = True
        if sent == len(self._frames):
            self._failing = False
        return sent

    def close(self) -> None:
        self._sock.close()
