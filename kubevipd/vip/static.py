"""The VIP named in the config (``vip.address``, and ``vip.address6`` for dual stack).

It never changes by itself: only a reload moves it.
"""

from __future__ import annotations

from collections.abc import Callable

from kubevipd.config.model import Config
from kubevipd.resolve import resolve_vips
from kubevipd.vip.model import Vip


class StaticVipSource:
    """The VipSource contract (kubevipd/vip/source.py) for addresses written in the config."""

    def __init__(self, cfg: Config) -> None:
        self._vips = tuple(resolve_vips(cfg))

    def current(self) -> tuple[Vip, ...]:
        return self._vips

    def start(self, emit: Callable[[object], None]) -> None:
        """Nothing to watch."""

    def on_role(self, leading: bool) -> None:
        """The address is the same whoever leads."""

    def reload(self, cfg: Config) -> tuple[Vip, ...]:
        self._vips = tuple(resolve_vips(cfg))
        return self._vips

    def stop(self) -> None:
        """No thread to end."""
