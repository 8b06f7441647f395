"""What a reload (SIGHUP) may change in the running daemon, decided on the two configs alone.

The timings apply at once (the leader's from its next renewal, which also writes the new lease
duration for the followers); the VIP and the interface move in place; who we are and which
Lease we use through which kubeconfig need a new connection, which is a restart, i.e. a
hand-over, so they are kept until then, and the log says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from kubevipd.config import ConfigError, load
from kubevipd.config.model import Config
from kubevipd.resolve import RunError, check_supported

log = logging.getLogger("kubevipd")


@dataclass(frozen=True)
class Reload:
    """SIGHUP: put on the main loop's queue by the signal handler."""


def what_a_reload_applies(old: Config, new: Config) -> tuple[Config, str | None]:
    """The config to run with now, and a warning line when some of ``new`` waits for a restart."""
    kept = replace(
        old.election,
        lease_duration=new.election.lease_duration,
        renew_deadline=new.election.renew_deadline,
        retry_period=new.election.retry_period,
    )
    warning = None
    if new.election != kept or new.node_name != old.node_name:
        warning = (
            "node_name or the election's lease, namespace, kubeconfig or server changed: "
            "they take effect after a restart (systemctl restart kubevipd hands over)"
        )
        new = replace(new, election=kept, node_name=old.node_name)
    if new.announce != old.announce:
        # The announcer was built with it: only a restart builds one with the new settings.
        extra = "announce settings changed: they take effect after a restart"
        warning = f"{warning}; {extra}" if warning else extra
        new = replace(new, announce=old.announce)
    if new.metrics != old.metrics:
        extra = "metrics.listen changed: it takes effect after a restart"
        warning = f"{warning}; {extra}" if warning else extra
        new = replace(new, metrics=old.metrics)
    return new, warning


def read_reload(path: str, old: Config) -> Config | None:
    """The config a SIGHUP asks for, as far as a reload applies it; None when it is invalid or
    asks for what this version cannot do (each reason logged): the running one then stays."""
    try:
        new = load(path).config
    except ConfigError as e:
        for d in e.diagnostics:
            log.error("%s", d)
        log.error("the new config is invalid; keeping the running one")
        return None
    new, warning = what_a_reload_applies(old, new)
    if warning:
        log.warning("%s", warning)
    try:
        check_supported(new)
    except RunError as e:
        log.error("%s; keeping the running config", e)
        return None
    return new
