"""Gratuitous ARP (request and reply forms) and unsolicited Neighbour Advertisements.

Frames are built once with scapy and sent on a raw AF_PACKET socket bound to the interface, so
an announcement costs one send() a frame. Linux updates an existing neighbour entry from either
form, and the override flag makes IPv6 neighbours replace a cached MAC.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence

from kubevipd.announce.base import AnnounceError, AnnounceTiming
from kubevipd.vip.model import Vip

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


# At once, then these offsets (seconds): a switch or a host that missed the first frames (a
# port coming up, a busy ARP queue) still learns the new MAC within a second.
BURST = (0.0, 0.25, 0.5, 1.0)


class ArpAnnouncer:
    """Gratuitous ARP and unsolicited NA for the VIP on one interface (the Announcer contract,
    kubevipd/announce/base.py): a burst after a takeover, then every ``refresh`` seconds, so
    that neighbours whose entries went stale learn the MAC again."""

    slow = False  # one send() a frame

    def __init__(self, ifname: str, mac: str, vips: Sequence[Vip], refresh: float = 3.0) -> None:
        self.ifname = ifname
        self.timing = AnnounceTiming(burst=BURST, refresh=refresh)
        self._mac = mac
        self._frames = frames(mac, vips)
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        self._sock.bind((ifname, 0))

    def announce(self, term: int | None = None) -> int:
        """Send every frame once; returns how many went out, or raises AnnounceError naming
        the first failure when any frame could not be sent. The term does not matter: a
        neighbour keeps only the latest MAC it heard."""
        sent = 0
        error: OSError | None = None
        for f in self._frames:
            try:
                self._sock.send(f)
                sent += 1
            except OSError as e:
                error = error or e
        if error is not None:
            raise AnnounceError(
                f"cannot send announcements on {self.ifname} "
                f"({sent} of {len(self._frames)} sent): {error.strerror or error}"
            )
        return sent

    def withdraw(self) -> None:
        """Nothing to send: the next holder's frames replace the neighbour entries."""

    def set_vips(self, vips: Sequence[Vip]) -> None:
        self._frames = frames(self._mac, vips)

    def close(self) -> None:
        self._sock.close()
