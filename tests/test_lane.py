"""A receiver's send path (bridge/lane.py): when it takes a new job, and how long its lease is."""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest

from bridge.config.receivers import RetryConfig, WebhookReceiverConfig
from bridge.lane import PREFETCH_ROUNDS, Lane
from bridge.model import Delivery
from bridge.pacing import RateLimiter, RetryPolicy


def lane(concurrency: int = 2, timeout: float = 10.0, rate: float = 0.0, **state: Any) -> Lane:
    cfg = WebhookReceiverConfig(type="webhook", url="http://127.0.0.1:9/hook", concurrency=concurrency,
                                timeout=timeout, rate_limit=rate)
    made = Lane(receiver=None, cfg=cfg, policy=RetryPolicy(RetryConfig()), limiter=RateLimiter(rate))  # type: ignore[arg-type]
    for k, v in state.items():
        setattr(made, k, v)
    return made


def queued(n: int) -> deque[Delivery]:
    return deque(Delivery.__new__(Delivery) for _ in range(n))


def test_a_free_slot_takes_a_new_job_whatever_waits_in_the_store() -> None:
    assert lane(active=1, backlog=True, claiming=True).has_room_for_new()


@pytest.mark.parametrize("why", ["backlog", "claiming", "retired"])
def test_a_busy_lane_queues_a_new_job_only_when_nothing_older_can_be_ahead(why: str) -> None:
    assert lane(active=2, backlog=False).has_room_for_new()
    assert not lane(active=2, **{"backlog": False, why: True}).has_room_for_new()


def test_the_queue_holds_what_a_claim_would_fetch_and_no_more() -> None:
    most = (1 + PREFETCH_ROUNDS) * 2
    assert lane(active=2, queued=queued(most - 3), incoming=0, backlog=False).holds_at_most() == most
    assert lane(active=2, queued=queued(most - 3), incoming=0, backlog=False).has_room_for_new()
    assert not lane(active=2, queued=queued(most - 3), incoming=1, backlog=False).has_room_for_new()
    assert not lane(active=1, retired=True).has_room_for_new()


def test_a_lease_covers_the_rounds_ahead_and_the_rate_limit() -> None:
    two = lane(concurrency=2, timeout=10.0)
    assert two.lease_for(1, 0.0) == two.lease_for(2, 0.0) == 15 + 5  # the first round: one send
    assert two.lease_for(3, 0.0) == 2 * 15 + 5
    assert two.lease_for(1, 60.0) == 60.0  # never shorter than the configured lease
    paced = lane(concurrency=1, timeout=10.0, rate=1.0)
    assert paced.lease_for(5, 0.0) >= 5 * 15 + 5 + paced.limiter.wait_bound(5) - 1e-9
    assert paced.limiter.wait_bound(5) > 0
