"""What a VIP is: an address and its prefix length, on no particular interface.

Plain data, no netlink: the decider, the announcers and the VIP sources share it without
pulling in pyroute2.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from kubevipd.config.model import IPAddress


def address_family(version: int) -> int:
    """The socket family of IP ``version`` (4 or 6)."""
    return socket.AF_INET6 if version == 6 else socket.AF_INET


@dataclass(frozen=True)
class Vip:
    address: IPAddress
    prefixlen: int

    @property
    def family(self) -> int:
        return address_family(self.address.version)

    def __str__(self) -> str:
        return str(self.address)

    @property
    def cidr(self) -> str:
        """``192.168.0.75/32``: how it is recorded in the run directory and shown by ``ip``."""
        return f"{self.address}/{self.prefixlen}"
