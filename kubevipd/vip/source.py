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
  was carried out: a node stepping down has removed the VIP from its interface before its
  source gives the address up. Must not block.
- ``reload(cfg)``: a SIGHUP's new config; returns the addresses it names now, or raises
  ``kubevipd.resolve.RunError`` with one line when it cannot (the running VIP then stays).
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

    def reload(self, cfg: Config) -> tuple[Vip, ...]: ...

    def stop(self) -> None: ...
