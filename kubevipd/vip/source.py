"""The contract of a VIP source: what the VIP is.

Today the VIP is the config's address (kubevipd/vip/static.py). Next: a DNS name, whose
address changes at run time, and a DHCP lease with dynamic DNS, whose address is known only
once this node leads. The main loop (kubevipd/daemon.py) moves the VIP on one path whatever
moved it: a source's ``VipChanged`` event, or a reload.

What an implementation must guarantee:

- ``current()``: the addresses now, or None while they are not known (DHCP before it got a
  lease). Cheap, never blocks, never raises.
- ``start(emit)``: from then on, ``emit(VipChanged(...))`` whenever the addresses change, from
  any thread; ``emit`` only queues. A source that resolves or asks the network does so on a
  thread of its own, bounded in time, and keeps the last good answer on failure (logged).
- ``on_role(leading)``: told when this node starts or stops leading (DHCP asks for its lease
  only while leading, and releases it after). Called once the decision that changed the role
  was carried out; ``on_role(False)`` only once the VIP is off this node's interface (a removal
  netlink refused is retried first), so a source never gives up an address still in use here;
  and at exit, once the VIP was removed. Must not block.
- ``reload(cfg)``: a SIGHUP's new config, on the main loop's thread, so it never blocks:
  returns the addresses it names now, or None when it has to ask first (a DNS name: its
  ``VipChanged`` follows), or raises ``kubevipd.resolve.RunError`` with one line when it cannot
  (the running VIP then stays, and so do its addresses).
- ``stop()``: ends its threads; called once, last.

Built by an explicit factory that matches on the config (kubevipd/parts.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from kubevipd.config.model import Config
from kubevipd.vip.model import Vip


class VipSource(Protocol):
    def current(self) -> tuple[Vip, ...] | None: ...

    def start(self, emit: Callable[[object], None]) -> None: ...

    def on_role(self, leading: bool) -> None: ...

    def reload(self, cfg: Config) -> tuple[Vip, ...] | None: ...

    def stop(self) -> None: ...


class RoleNotice:
    """What the main loop told a source of its role: leading at once, stepping down only once
    the VIP is off (``vip_off`` is asked only then: it reads the interface)."""

    def __init__(self, source: VipSource) -> None:
        self.source = source
        self.told = False

    def update(self, leading: bool, vip_off: Callable[[], bool]) -> None:
        if leading and not self.told:
            self.told = True
            self.source.on_role(True)
        elif not leading and self.told and vip_off():
            self.told = False
            self.source.on_role(False)
