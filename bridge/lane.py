"""One receiver's send path as the dispatcher keeps it (bridge/delivery.py): what it holds, and the
rules for taking more. Pure bookkeeping: no I/O, no store."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

from bridge.config import ReceiverBase
from bridge.model import Delivery
from bridge.pacing import RateLimiter, RetryPolicy
from bridge.receivers.base import Receiver

# Claim up to this many rounds of jobs (``concurrency`` each) beyond the send slots, so one store
# batch records that many rounds of outcomes and claims as many jobs (larger batches, fewer commits).
PREFETCH_ROUNDS = 4


@dataclass(eq=False)
class Lane:
    """Claimed jobs wait in ``queued`` for one of ``cfg.concurrency`` send slots; finished sends
    wait in ``finished`` until their outcomes are recorded together."""

    receiver: Receiver
    cfg: ReceiverBase
    policy: RetryPolicy
    limiter: RateLimiter
    active: int = 0  # sends in progress
    queued: deque[Delivery] = field(default_factory=deque)
    finished: list[tuple[Delivery, Exception | None]] = field(default_factory=list)
    record_timer: asyncio.TimerHandle | None = None
    record_due: bool = False  # the oldest outcome in ``finished`` has waited long enough
    retired: bool = False  # removed by a reload: starts no more sends
    incoming: int = 0  # places reserved by a hand-off whose accept has not committed yet
    claiming: bool = False  # a claim's jobs are on their way (in the store's batch, not yet queued)
    # The store may hold due jobs of this receiver that are not claimed yet. Cleared by a claim
    # that came back with room to spare; set by anything that can make jobs due.
    backlog: bool = True

    def wants_jobs(self) -> bool:
        """Claim when the jobs at hand fit in the send slots: a slot is idle, or would be as soon as
        a send ends. Claiming rounds ahead then keeps the slots busy while the store works, and one
        store batch records the outcomes of those rounds and claims the next ones."""
        return not self.retired and self.active + len(self.queued) <= self.cfg.concurrency

    def holds_at_most(self) -> int:
        """Jobs sending and queued together: the send slots and the rounds claimed ahead."""
        return (1 + PREFETCH_ROUNDS) * self.cfg.concurrency

    def has_room_for_new(self) -> bool:
        """Whether a new job (its key's head, due now) can be handed to this lane as its accept
        commits: a send slot is free, or there is a place in the queue and no older job can be
        ahead of it: none waits unclaimed in the store (``backlog``), none is on its way (a claim).
        Then it is queued exactly where a claim would have put it, so it overtakes nothing."""
        held = self.active + len(self.queued) + self.incoming
        if held < self.cfg.concurrency:
            return not self.retired
        return not (self.retired or self.backlog or self.claiming) and held < self.holds_at_most()

    def lease_for(self, upto: int, least: float) -> float:
        """The lease (at least ``least`` seconds) of a job at queue place ``upto`` (1 = the next to
        send): it must outlast the wait for a send slot (the rounds ahead of it, the rate limit) and
        the send, or the job is due again (here or at a replica) while it is still ours."""
        rounds = (upto + self.cfg.concurrency - 1) // self.cfg.concurrency
        return max(least, self.limiter.wait_bound(upto) + rounds * (self.cfg.timeout + 5) + 5)
