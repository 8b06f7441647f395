"""A model of a cluster for the never-two-holders property: several Machines, one Lease store.

Hypothesis (tests/unit/test_safety.py) drives it as a discrete-event simulation on one global
clock. Each node has a link to the store whose behaviour hypothesis changes at any time: fast,
slow, cut (writes never arrive and time out, the watch stalls and relists when healed), answers
lost after the write landed, conflicts whose read-back fails, watch events reordered by random
delays. On top of that: a node's wall clock steps, a daemon crashes and restarts at once with
its VIP still on the interface (its write in flight may still land), a reload changes the
timings, health changes, carrier changes, a daemon stopped (SIGTERM) and started again, netlink
refusing to add or to remove the VIP once (a transient error).
After every event the invariant is checked: at no instant do two nodes hold the VIP.

The model does with a machine's actions what kubevipd's main loop does, nothing more: a Write goes
out (its ``sent_at`` is when it left), AddVip and RemoveVip change the interface unless netlink
refuses (then the machine hears VipAddFailed or VipStray, and the rest of the batch is dropped,
its writes answered "not sent"), and a restart builds a new Machine as ``kubevipd.daemon``
does.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from kubevipd.election.base import LeaderRecord, WriteResult
from kubevipd.events import (
    AddVip,
    HealthChanged,
    HoldVip,
    LinkChanged,
    Observed,
    RemoveVip,
    Role,
    Stop,
    Timings,
    VipAddFailed,
    VipMissing,
    VipStray,
    Write,
    WriteDone,
)
from kubevipd.machine import KERNEL_LATE, Machine

WALL0 = 1_800_000_000.0
NODES = 3
MAX_EVENTS = 5000  # per time step: every loop is bounded


@st.composite
def timings(draw: Callable[..., Any]) -> Timings:
    """What the loader accepts (lease > renew > 1.2 x retry, whole milliseconds), with integer
    and fractional leases. Two of them leave room for the kernel fence, 10s/5s and 5s/2.5s, so
    that a reload from one to the other shortens a fenced lease."""
    lease = draw(st.sampled_from([1.0, 2.5, 5.0, 10.0]))
    renew = round(lease * draw(st.sampled_from([0.5, 0.88])), 3)
    retry = round(renew / draw(st.sampled_from([1.25, 4.0])), 3)
    return Timings(
        lease_duration=lease,
        renew_deadline=renew,
        retry_period=retry,
        health_gate=draw(st.booleans()),
    )


@dataclass
class Link:
    """How one node's requests and watch travel (seconds)."""

    apply: float = 0.002  # request to the store
    answer: float = 0.002  # store to the answer
    watch: float = 0.005  # store to this node's watch
    jitter: float = 0.0  # random extra watch delay: events arrive out of order
    cut: bool = False
    lose_answers: bool = False  # writes land, answers are lost (the client times out)
    readback_fails: bool = False  # a 409's read-back fails: the conflict comes without a record


# A few links, each a way the network or the apiserver misbehaves (a small set finds more than
# arbitrary combinations in the same number of examples).
LINKS = st.sampled_from(
    [
        Link(),
        Link(apply=0.3),  # slow requests
        Link(answer=1.5),  # answers come back late
        Link(apply=1.5, answer=1.5),
        Link(watch=1.5),  # this node sees changes late
        Link(watch=0.3, jitter=2.0),  # ... and out of order
        Link(cut=True),
        Link(lose_answers=True),
        Link(readback_fails=True),
    ]
)


# A link that changes again later: mostly cut (the worst next step) or healed.
THEN = st.none() | st.tuples(
    st.sampled_from([0.3, 1.0, 3.0]), st.sampled_from([Link(cut=True), Link()])
)


@dataclass
class InFlight:
    node: int
    generation: int  # the run that sent it; a restarted daemon never reads its answer
    write: Write
    sent_at: float


@dataclass
class Node:
    name: str
    machine: Machine
    link: Link = field(default_factory=Link)
    skew: float = 0.0  # wall clock minus the true time
    holds: bool = False  # the VIP is on its interface
    generation: int = 0
    stale: bool = False  # its watch missed events while cut: it relists when healed
    add_refusals: int = 0  # netlink refuses this many AddVip / RemoveVip from now on
    remove_refusals: int = 0
    down: bool = False  # stopped (SIGTERM) and not started again yet
    frozen_until: float = 0.0  # SIGSTOP, a stuck process: it hears nothing until then
    kernel_token: int = 0  # the last lifetime given to its VIP (an older expiry is void)
    lifetime: int | None = None  # that lifetime (None: forever)
    freeze_after_write: float = 0.0  # freezes this long right after its next write goes out


MachineFactory = Callable[..., Machine]
# A node by index, or NODES: the one that leads or holds the VIP now (faults that hit the leader
# find the most).
WHO = st.integers(0, NODES)


class Cluster(RuleBasedStateMachine):
    """Subclass with another ``factory`` to check the property against a broken machine."""

    factory: MachineFactory = Machine

    def __init__(self) -> None:
        super().__init__()
        self.now = 100.0
        self.version = 0
        self.record: LeaderRecord | None = None
        self.nodes: list[Node] = []
        self.queue: list[tuple[float, int, str, Any]] = []
        self.seq = 0
        self.rng = random.Random(0)

    # ------------------------------------------------------------ plumbing

    def wall(self, n: Node) -> float:
        return WALL0 + self.now + n.skew

    def make(
        self, name: str, t: Timings, vip: bool, skew: float, inherited: float | None = None
    ) -> Machine:
        return self.factory(
            name,
            t,
            now=self.now,
            wall=WALL0 + self.now + skew,
            vip_at_start=vip,
            inherited_deadline=inherited,
        )

    def pick(self, who: int) -> int:
        if who < NODES:
            return who
        leading = [i for i, n in enumerate(self.nodes) if n.machine.role is Role.LEADER]
        holding = [i for i, n in enumerate(self.nodes) if n.holds]  # e.g. restarted, starting
        return (leading or holding or [0])[0]

    def at(self, when: float, kind: str, data: Any) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (when, self.seq, kind, data))

    def frozen(self, i: int) -> bool:
        return self.now < self.nodes[i].frozen_until

    def feed(self, i: int, event: object) -> None:
        n = self.nodes[i]
        if n.down:
            return  # stopped: no daemon to hear it
        if self.frozen(i):
            if event is not None:  # the kernel queues it; the daemon reads it when it thaws
                self.at(n.frozen_until, "local", (i, n.generation, event))
            return
        out = n.machine.handle(event, self.now, self.wall(n)).actions  # type: ignore[arg-type]
        for k, a in enumerate(out):
            if isinstance(a, Write):
                f = InFlight(i, n.generation, a, self.now)
                if n.link.cut:
                    self.at(self.now + a.timeout, "answer", (f, _timeout()))
                else:
                    self.at(self.now + n.link.apply, "apply", f)
            elif isinstance(a, AddVip) and n.add_refusals:
                n.add_refusals -= 1
                self.refused(i, VipAddFailed("refused"), out[k + 1 :])
                break
            elif isinstance(a, AddVip | HoldVip):
                n.holds = True
                self.kernel_lifetime(i, a.lifetime)
            elif isinstance(a, RemoveVip) and n.remove_refusals:
                n.remove_refusals -= 1
                self.refused(i, VipStray("could not remove it", failed=True), out[k + 1 :])
                break
            elif isinstance(a, RemoveVip):
                n.holds = False
            self.check()
        if n.machine.role is Role.STOPPED and not n.down:
            self.shut_down(i)
        if n.freeze_after_write and any(isinstance(a, Write) for a in out):
            length, n.freeze_after_write = n.freeze_after_write, 0.0
            self.freeze(i, length)

    def shut_down(self, i: int) -> None:
        """The the main loop's exit: the VIP is removed whatever happened; its writes still out may
        land, their answers are never read."""
        n = self.nodes[i]
        n.holds, n.down = False, True
        n.generation += 1

    def kernel_lifetime(self, i: int, lifetime: int | None) -> None:
        """The kernel removes the VIP by itself this long after it was (re)added, and as late as
        it may (its check runs at most once a second): the worst case for the property."""
        n = self.nodes[i]
        n.kernel_token += 1
        n.lifetime = lifetime
        if lifetime is not None:
            self.at(self.now + lifetime + KERNEL_LATE, "expire", (i, n.kernel_token))

    def refused(self, i: int, news: object, rest: list[Any]) -> None:
        """What the main loop does when netlink refuses an action: the machine hears of it next,
        and the rest of the batch is not carried out (its writes are answered "not sent")."""
        n = self.nodes[i]
        self.at(self.now, "local", (i, n.generation, news))
        for a in rest:
            if isinstance(a, Write):
                failed = WriteResult(ok=False, error="not sent", error_kind="other")
                self.at(self.now, "answer", (InFlight(i, n.generation, a, self.now), failed))

    def check(self) -> None:
        holders = [n.name for n in self.nodes if n.holds]
        assert len(holders) <= 1, f"two holders at t={self.now:.3f}: {holders}"

    def store(self, f: InFlight) -> WriteResult:
        """The apiserver: compare-and-swap on the resourceVersion, as LeaseElection reports it."""
        cur, want = self.record, f.write.record.version
        if cur is None and want:
            return WriteResult(ok=False, missing=True, error="not found")
        if (cur is None and not want) or (cur is not None and want == cur.version):
            self.version += 1
            self.record = replace(f.write.record, version=str(self.version))
            for j in range(len(self.nodes)):
                self.watch_to(j, self.record)
            return WriteResult(ok=True, record=self.record)
        if self.nodes[f.node].link.readback_fails:
            return WriteResult(ok=False, conflict=True, error="409; read-back failed")
        return WriteResult(ok=False, conflict=True, record=cur, error="409")

    def watch_to(self, j: int, record: LeaderRecord | None) -> None:
        n = self.nodes[j]
        if n.link.cut:
            n.stale = True
            return
        delay = n.link.watch + (self.rng.uniform(0, n.link.jitter) if n.link.jitter else 0.0)
        self.at(self.now + delay, "watch", (j, n.generation, record))

    def process(self, kind: str, data: Any) -> None:
        if kind == "apply":
            f: InFlight = data
            n = self.nodes[f.node]
            result = self.store(f)
            if n.link.lose_answers and result.ok:
                self.at(f.sent_at + f.write.timeout, "answer", (f, _timeout()))
            else:
                self.at(self.now + n.link.answer, "answer", (f, result))
        elif kind == "answer":
            f, result = data
            if f.generation == self.nodes[f.node].generation:
                self.feed(f.node, WriteDone(f.write.op, result, f.sent_at))
        elif kind == "watch":
            j, generation, record = data
            if generation == self.nodes[j].generation:
                self.feed(j, Observed(record))
        elif kind == "local":
            j, generation, news = data
            if generation == self.nodes[j].generation:
                self.feed(j, news)
        elif kind == "stop_timeout":
            j, generation = data
            if generation == self.nodes[j].generation:
                self.shut_down(j)  # the hand-over did not finish in time (the main loop's stop_by)
        elif kind == "start":
            self.start_again(data)
        elif kind == "expire":
            j, token = data
            n = self.nodes[j]
            if token == n.kernel_token and n.holds:
                n.holds = False
                self.feed(j, VipMissing())  # its monitor hears it (later, if it is frozen)
        elif kind == "link":
            self.set_link(*data)

    def run_until(self, end: float) -> None:
        """Events and machine wake-ups in time order, as the main loops would see them."""
        for _ in range(MAX_EVENTS):
            wakes = [
                (max(w, n.frozen_until), i)
                for i, n in enumerate(self.nodes)
                if not n.down and (w := n.machine.next_wakeup())
            ]
            t_wake = min((w for w, _ in wakes), default=float("inf"))
            t_event = self.queue[0][0] if self.queue else float("inf")
            if min(t_wake, t_event) > end:
                self.now = end
                return
            self.now = max(self.now, min(t_wake, t_event))
            if t_event <= t_wake:
                _, _, kind, data = heapq.heappop(self.queue)
                self.process(kind, data)
            else:
                for w, i in wakes:
                    if w <= self.now:
                        self.feed(i, None)
        raise AssertionError(f"no progress at t={self.now:.3f}: a machine wakes and does nothing")

    # ------------------------------------------------------------ rules

    @initialize(t=timings(), seed=st.integers(0, 2**32 - 1))
    def start(self, t: Timings, seed: int) -> None:
        self.rng = random.Random(seed)
        for i in range(NODES):
            name = f"n{i + 1}"
            self.nodes.append(Node(name, self.make(name, t, False, 0.0)))
        for i in range(NODES):
            self.feed(i, HealthChanged(True))
            self.watch_to(i, self.record)  # the first list: no lease yet

    @rule(dt=st.sampled_from([0.01, 0.1, 0.5, 1.0, 3.0, 10.0]))
    def time_passes(self, dt: float) -> None:
        self.run_until(self.now + dt)

    @rule(i=WHO, link=LINKS, then=THEN)
    def a_link_changes(self, i: int, link: Link, then: tuple[float, Link] | None = None) -> None:
        """``then``: it changes again that much later (a flap: answers lost, then cut)."""
        i = self.pick(i)
        self.set_link(i, link)
        if then is not None:
            self.at(self.now + then[0], "link", (i, then[1]))

    def set_link(self, i: int, link: Link) -> None:
        n = self.nodes[i]
        was_cut, n.link = n.link.cut, link
        if was_cut and not link.cut and n.stale:
            n.stale = False
            self.watch_to(i, self.record)  # the watch broke: relist

    @rule(i=WHO, step=st.sampled_from([-30.0, -2.0, -0.5, 0.5, 20.0]))
    def a_wall_clock_steps(self, i: int, step: float) -> None:
        i = self.pick(i)
        self.nodes[i].skew += step

    @rule(i=WHO)
    def a_daemon_crashes_and_restarts(self, i: int) -> None:
        """SIGKILL and an immediate restart (Restart=on-failure, no cleanup in between): the VIP
        is still on the interface; the write in flight may still land."""
        i = self.pick(i)
        n = self.nodes[i]
        if n.down:
            return
        n.generation += 1
        n.frozen_until = 0.0
        old = n.machine
        # What the main loop reads back from the run directory (status.held_until).
        inherited = old.deadline if old.role is Role.LEADER and old.holds_vip else None
        n.machine = self.make(n.name, old.t, n.holds, n.skew, inherited)
        n.stale = False
        self.feed(i, HealthChanged(True))
        self.watch_to(i, self.record)  # the new run lists the lease first

    @rule(i=WHO, after=st.sampled_from([0.0, 0.5, 5.0]))
    def a_daemon_is_stopped_then_started(self, i: int, after: float) -> None:
        """SIGTERM: the machine hands over; the main loop exits when it has stopped, or after its
        stop timeout, removing the VIP; systemd starts it again ``after`` later."""
        i = self.pick(i)
        n = self.nodes[i]
        if n.down:
            return
        self.at(self.now + n.machine.t.api_timeout * 2 + 1.0, "stop_timeout", (i, n.generation))
        self.feed(i, Stop())
        self.at(self.now + after, "start", i)

    def start_again(self, i: int) -> None:
        n = self.nodes[i]
        if not n.down:
            return
        n.down, n.stale = False, False
        n.generation += 1
        n.machine = self.make(n.name, n.machine.t, n.holds, n.skew)
        self.feed(i, HealthChanged(True))
        self.watch_to(i, self.record)

    @rule(i=WHO, length=st.sampled_from([1.0, 4.0, 20.0]))
    def a_daemon_freezes(self, i: int, length: float) -> None:
        """SIGSTOP or a stuck process, with no watchdog: only the kernel's lifetime of its VIP
        can take the VIP away in time. A node whose timings leave no room for that fence
        (_fence_enabled False), or whose VIP has no lifetime yet (held forever under such
        timings before a reload), relies on systemd's watchdog, which the model does not have,
        so it is not frozen while it holds the VIP (the_leader_reloads_then_freezes_after_its_
        next_write freezes one right after the renewal that carries a reload's lease)."""
        self.freeze(self.pick(i), length)

    def freeze(self, i: int, length: float) -> None:
        n = self.nodes[i]
        fenced = n.machine._fence_enabled() and n.lifetime is not None
        if n.down or self.frozen(i) or (n.holds and not fenced):
            return
        n.frozen_until = self.now + length

    @rule(i=WHO, up=st.booleans())
    def the_carrier_changes(self, i: int, up: bool) -> None:
        i = self.pick(i)
        if not self.nodes[i].down:
            self.feed(i, LinkChanged(up))

    @rule(i=WHO, t=timings())
    def a_reload_changes_the_timings(self, i: int, t: Timings) -> None:
        i = self.pick(i)
        self.nodes[i].machine.set_timings(t)  # what the main loop's SIGHUP does
        self.feed(i, None)

    @rule(i=WHO, healthy=st.booleans())
    def health_changes(self, i: int, healthy: bool) -> None:
        i = self.pick(i)
        self.feed(i, HealthChanged(healthy))

    # Faults that strike together, at one instant: rare as a chance sequence of the rules above,
    # yet exactly what breaks a machine that trusts its wall clock or its old deadline.

    @rule(step=st.sampled_from([-30.0, -2.0, 0.0, 20.0]), link=LINKS)
    def the_leader_restarts_with_a_stepped_clock_and_a_new_link(
        self, step: float, link: Link
    ) -> None:
        i = self.pick(NODES)
        self.a_wall_clock_steps(i, step)
        self.a_daemon_crashes_and_restarts(i)
        self.a_link_changes(i, link)

    @rule(t=timings(), link=LINKS, then=THEN)
    def the_leader_reloads_and_its_link_changes(
        self, t: Timings, link: Link, then: tuple[float, Link] | None
    ) -> None:
        i = self.pick(NODES)
        self.a_reload_changes_the_timings(i, t)
        self.a_link_changes(i, link, then)

    @rule(t=timings(), after=st.sampled_from([0.3, 1.0]))
    def the_leader_reloads_then_loses_its_answers_then_its_link(
        self, t: Timings, after: float
    ) -> None:
        """A config change, then a failing network: its renewals land unanswered (the
        followers learn the new lease duration; the leader does not learn it renewed), then
        nothing gets through."""
        i = self.pick(NODES)
        self.a_reload_changes_the_timings(i, t)
        self.a_link_changes(i, Link(lose_answers=True), (after, Link(cut=True)))

    @rule(t=timings(), length=st.sampled_from([4.0, 20.0]))
    def the_leader_reloads_then_freezes_after_its_next_write(
        self, t: Timings, length: float
    ) -> None:
        """A reload, then a freeze right after the renewal that carries the new lease duration,
        before its answer and what the machine does on it."""
        i = self.pick(NODES)
        self.a_reload_changes_the_timings(i, t)
        self.nodes[i].freeze_after_write = length

    @rule(i=WHO, remove=st.booleans())
    def netlink_refuses_once(self, i: int, remove: bool) -> None:
        """The next AddVip or RemoveVip of this node fails once (EBUSY, ENOBUFS, ...)."""
        n = self.nodes[self.pick(i)]
        if remove:
            n.remove_refusals = 1
        else:
            n.add_refusals = 1

    @rule(link=LINKS)
    def the_leader_cannot_remove_its_vip_once_and_its_link_changes(self, link: Link) -> None:
        """Its removal at the renew deadline (or at a step-down) is refused once."""
        i = self.pick(NODES)
        self.nodes[i].remove_refusals = 1
        self.a_link_changes(i, link)

    @invariant()
    def never_two_holders(self) -> None:
        self.check()


def _timeout() -> WriteResult:
    return WriteResult(ok=False, error="no answer", error_kind="timeout")
