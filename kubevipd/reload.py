"""What a reload (SIGHUP) may change in the running daemon, decided on the two configs alone.

The timings apply at once (the leader's from its next renewal, which also writes the new lease
duration for the followers); the VIP and the interface move in place; who we are and which
Lease we use through which kubeconfig need a new connection, which is a restart, i.e. a
hand-over, so they are kept until then, and the log says so.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from kubevipd.config.model import Config


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
        # The announcer was built with it; a new one comes with a VIP move or a restart.
        extra = "announce settings changed: they take effect after a restart"
        warning = f"{warning}; {extra}" if warning else extra
        new = replace(new, announce=old.announce)
    if new.metrics != old.metrics:
        extra = "metrics.listen changed: it takes effect after a restart"
        warning = f"{warning}; {extra}" if warning else extra
        new = replace(new, metrics=old.metrics)
    return new, warning
