"""What a VIP is: an address and its prefix length, on no particular interface.

Plain data, no netlink: the decider, the announcers and the VIP sources share it without
pulling in pyroute2.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from kubevipd.config.model import IPAddress


@dataclass(frozen=True)
class Vip:
    address: IPAddress
    prefixlen: int

    @property
    def family(self) -> int:
        return socket.AF_INET6 if self.address.version == 6 else socket.AF_INET

    def __str__(self) -> str:
        return str(self.address)

    @property
    def cidr(self) -> str:
        """``192.168.0.75/32``: how it is recorded in the run directory and shown by ``ip``."""
        return f"{self.address}/{self.prefixlen}"
