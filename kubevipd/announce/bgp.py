"""BGP: the VIP as a /32 (/128) route to this node, through a supervised ExaBGP.

The Announcer contract (kubevipd/announce/base.py): ``announce(term)`` gives ExaBGP one route
per VIP address and peer, with this node's address on that session as the explicit next hop;
``withdraw()`` takes them back; ``set_vips`` changes what the next announcement carries. Calls
only hand lines to ExaBGP (milliseconds), so the announcer is fast: the main loop calls it on
its own thread, withdraw before the VIP leaves the interface.

A route from a former leader must never win over the current leader's: a leader that crashed
keeps its route in the routers until their hold timer fires. So a leader announces with a MED
from its term (the Lease's ``leaseTransitions`` when it took the lease): every takeover counts
one more transition, so every later leader's MED is lower, and routers prefer the lowest MED
between routes from the same neighbouring AS (every node has the same ``local_as``). The
routers need nothing but that default (BIRD: ``med metric`` off is fine; GoBGP and FRR: MED
compared within one AS). In all-nodes mode (no term) no MED is sent: every route is equal, for
ECMP.

The path to the network is the sessions: ``on_path(ok, detail)`` says whether any peer has an
established session, and each peer's state, whenever it changes; the policy hands over a lease
it cannot make reachable, as it does when it cannot add the VIP.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from kubevipd.announce.base import ONCE, AnnounceError, PathReport
from kubevipd.announce.bgp_plan import Plan
from kubevipd.announce.exabgp import ExaBgp, PeerState, Route, peer_detail
from kubevipd.config.model import bgp_family
from kubevipd.vip.model import Vip

MED_TOP = 4_294_967_294  # 2**32 - 2: term 0's MED; leaseTransitions is an int32, never above


def med_for_term(term: int | None) -> int | None:
    """The MED a leader of ``term`` announces with: lower for every later term."""
    if term is None:
        return None
    return MED_TOP - max(0, min(term, MED_TOP))


def routes_for(plan: Plan, vips: Sequence[Vip], term: int | None) -> list[Route]:
    med = med_for_term(term)
    out: list[Route] = []
    for p in plan.peers:
        for v in vips:
            if bgp_family(v.address.version) not in p.families:
                continue
            hop = p.next_hops[v.address.version]
            bits = 32 if v.address.version == 4 else 128
            out.append(Route(str(p.address), f"{v.address}/{bits}", str(hop), med))
    return out


def describe_peers(plan: Plan, peers: dict[str, PeerState]) -> str:
    """ "10.0.0.1 (AS 65000) up, 10.0.0.2 (AS 65000) connecting (...)", for STATUS= and logs."""
    return ", ".join(peer_detail(p, peers.get(str(p.address))) for p in plan.peers)


class BgpAnnouncer:
    """The VIP's routes, through one ExaBGP child kept for the announcer's life (its sessions
    are up on followers too, so a takeover announces at once)."""

    slow = False  # lines to a local socket
    timing = ONCE  # a session keeps a route up by itself; a new ExaBGP gets it again

    def __init__(
        self,
        plan: Plan,
        vips: Sequence[Vip],
        run_dir: Path,
        on_path: PathReport,
        speaker: Callable[..., ExaBgp] = ExaBgp,
    ) -> None:
        self.plan = plan
        self._vips = tuple(vips)
        self._on_path = on_path
        self._speaker = speaker(plan, run_dir, self._peers_changed)
        self._peers_changed(dict(self._speaker.peers))
        self._speaker.start()

    def _peers_changed(self, peers: dict[str, PeerState]) -> None:
        ok = any(p.up for p in peers.values())
        states = {addr: st.state for addr, st in peers.items()}
        what = "BGP peers" if ok else "no BGP session is established"
        self._on_path(ok, f"{what}: {describe_peers(self.plan, peers)}", states)

    def announce(self, term: int | None = None) -> int:
        """Give ExaBGP the VIP's routes (with the term's MED); returns the commands sent."""
        try:
            return self._speaker.set_routes(routes_for(self.plan, self._vips, term))
        except OSError as e:
            raise AnnounceError(f"cannot give the VIP's routes to ExaBGP: {e}") from None

    def withdraw(self) -> None:
        try:
            self._speaker.set_routes(())
        except OSError as e:
            raise AnnounceError(f"cannot withdraw the VIP's routes through ExaBGP: {e}") from None

    def set_vips(self, vips: Sequence[Vip]) -> None:
        self._vips = tuple(vips)

    def close(self) -> None:
        self._speaker.stop()
