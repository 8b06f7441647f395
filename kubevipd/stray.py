"""When to remove a VIP this node must not have: one rule, kept alike by every policy.

A stray copy (the interface shows the VIP while the policy does not hold it: a crashed run's, a
hand's, or a removal netlink refused) is removed at once. A removal netlink refused is tried
again at once (a transient error is gone by then), then after pauses doubling from
REMOVE_RETRY_FIRST up to the retry period: there is no safe alternative to trying, and a hot
loop of refusals would flood the journal. Pure: it keeps times, it reads no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

REMOVE_RETRY_FIRST = 0.05  # seconds: the first pause after a second refusal in a row


@dataclass
class StrayRemoval:
    due: float | None = None  # when the next RemoveVip is due (None: none is)
    failures: int = 0  # refusals in a row of the removal under way

    def heard(self, failed: bool, now: float, retry_period: float) -> None:
        """A VipStray: ``failed`` when it is our own removal netlink refused."""
        pause = 0.0
        if failed:
            self.failures += 1
            if self.failures > 1:
                pause = min(REMOVE_RETRY_FIRST * 2 ** (self.failures - 2), retry_period)
        at = now + pause
        self.due = at if self.due is None else min(self.due, at)

    def new_removal(self) -> None:
        """The policy removes the VIP it held: a refusal of that is first tried again at once."""
        self.failures = 0

    def take(self, now: float, holding: bool) -> bool:
        """True when a RemoveVip is due now. Holding the VIP again cancels it: it is meant to
        be there."""
        if self.due is None:
            return False
        if holding:
            self.due = None
            return False
        if now >= self.due:
            self.due = None
            return True
        return False
