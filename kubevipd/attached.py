"""The parts bound to one interface and one VIP: the netlink link, the announcer, the monitor.

They come and go together: at start, and whenever the VIP moves (a reload, later a DNS name or
a DHCP lease). Each attachment has a generation; news from a monitor of an older one, or the
outcome of a call on its announcer, is dropped by the main loop, so a reload never acts on what
the replaced interface said. The effects hold the current attachment itself, never copies of
its parts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from kubevipd.announce.base import Announcer, AnnouncerEnv
from kubevipd.config.model import Config
from kubevipd.effects import Effects, FromLink
from kubevipd.events import LinkChanged, VipMissing
from kubevipd.parts import Parts
from kubevipd.resolve import RunError, resolve_interface
from kubevipd.vip.model import Vip
from kubevipd.vip.netlink import InterfaceError, Monitor, VipLink

log = logging.getLogger("kubevipd")


class InterfaceMissing(RunError):
    """The interface is not there (yet): transient at start, so exit status 1, not 2."""


class Attached:
    def __init__(
        self,
        parts: Parts,
        cfg: Config,
        ifname: str,
        vips: list[Vip],
        effects: Effects,
        put: Callable[[object], None],
        announcer: Announcer | None,
        env: AnnouncerEnv,
    ) -> None:
        """Bind to ``ifname`` for ``vips`` and point the effects at this attachment. Given the
        ``announcer`` of an earlier attachment to the same interface, keep it and tell it the
        new VIP (``set_vips``): a BGP speaker keeps its sessions when only the address moves."""
        self.ifname = ifname
        self.vips: tuple[Vip, ...] = tuple(vips)
        try:
            self.link: VipLink = parts.link(ifname, vips)
        except InterfaceError as e:
            raise InterfaceMissing(str(e)) from None
        if announcer is not None:
            self.announcer: Announcer = announcer
            if announcer.slow:  # after its queued calls (a withdraw of the old VIP), in order
                what = f"new VIP for the announcer on {ifname}"
                effects.slow.submit(what, lambda: announcer.set_vips(vips))
            else:
                announcer.set_vips(vips)
        else:
            self.announcer = parts.announcer(cfg, ifname, self.link, vips, env)
        gen = self.generation = effects.attach(self)
        self.monitor: Monitor = parts.monitor(
            self.link.index,
            vips,
            on_link=lambda up: put(FromLink(gen, LinkChanged(up))),
            on_vip_gone=lambda: put(FromLink(gen, VipMissing())),
        )
        self.monitor.start()

    def remove_for_good(self, within: float) -> bool:
        """The VIP off at exit, tried again for up to ``within`` seconds (a transient netlink
        error); False when it may still be up (its kernel lifetime, if any, ends it anyway)."""
        end = time.monotonic() + within
        while True:
            try:
                self.link.remove()
                return True
            except InterfaceError as e:
                if time.monotonic() >= end:
                    log.error("%s; exiting with the VIP possibly still up", e)
                    return False
                log.warning("%s; trying again", e)
                time.sleep(0.1)

    def detach(self, effects: Effects, keep_announcer: bool = False) -> None:
        """Let go of the interface. A slow announcer is closed after the calls still queued
        for it (a withdraw after the VIP's removal), never under them; with
        ``keep_announcer``, not at all (the next attachment to this interface takes it)."""
        self.monitor.stop()
        effects.detach(self, close_announcer=not keep_announcer)
        self.link.close()


def attach_when_there(
    parts: Parts,
    cfg: Config,
    vips: list[Vip],
    effects: Effects,
    put: Callable[[object], None],
    wait: float,
    env: AnnouncerEnv,
) -> tuple[Attached, str]:
    """At boot the interface may come up after us (a bond, a VLAN, a late driver), and with no
    ``interface`` set, the default route too: wait for it up to ``wait`` seconds (within
    systemd's start timeout), then raise InterfaceMissing, exit status 1, so that systemd tries
    again. A missing interface can heal by itself, so it is never exit status 2."""
    end = time.monotonic() + wait
    waiting = False
    while True:
        try:
            try:
                ifname = resolve_interface(cfg)
            except RunError as e:
                raise InterfaceMissing(str(e)) from None
            return Attached(parts, cfg, ifname, vips, effects, put, None, env), ifname
        except InterfaceMissing as e:
            if time.monotonic() >= end:
                raise
            if not waiting:
                log.warning("%s; waiting up to %gs for it", e, wait)
                waiting = True
            time.sleep(0.5)
