"""outbox_ops.retry on every backend: a dead delivery of an incident that is over stays dead."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge import outbox_ops
from bridge.decide import decider
from bridge.incident_state import RoutePolicy
from bridge.store.base import Store
from tests.support.redis_server import redis_server  # noqa: F401
from tests.support.stores import BACKENDS, open_store
from tests.test_store_contract import TTL, at, ev, plan_to, with_incidents

POLICY = with_incidents(plan_to("pd", route="r"), RoutePolicy("r", ("pd",)))


@pytest.fixture(params=BACKENDS)
async def outbox(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    store = await open_store(request.param, request, tmp_path, f"t{uuid.uuid4().hex[:10]}:")
    yield store
    await store.close()


async def _accept(store: Store, status: str, t: float) -> str:
    e = ev(status=status, t=t)
    (job,) = (await store.accept(e, decider(e, POLICY, at(t)), now=at(t), dedup_ttl=TTL)).deliveries
    return job


async def _send(store: Store, t: float, *, fail: bool) -> str:
    (d,) = await store.claim(now=at(t), limit=10, lease=60)
    if fail:
        await store.bury(d.id, now=at(t), error="400")
    else:
        await store.complete(d.id, now=at(t))
    return d.id


async def test_a_dead_firing_of_an_incident_over_is_not_sent_after_its_resolution(outbox: Store) -> None:
    store = outbox
    firing = await _accept(store, "FAILED", 0)
    assert await _send(store, 1, fail=True) == firing
    resolved = await _accept(store, "RUNNING", 2)
    assert await _send(store, 3, fail=False) == resolved
    for ids in (None, [firing]):
        done = await outbox_ops.retry(store, ids, now=at(4))
        assert done.retried == 0 and [d.id for d in done.skipped] == [firing]
        assert done.skipped_view()[0]["kind"] == "firing"
    job = await store.get_delivery(firing)
    assert job is not None and job.state == "dead"
    assert await store.claim(now=at(5), limit=10, lease=60) == []


async def test_dead_deliveries_of_an_open_incident_and_resolutions_are_retried(outbox: Store) -> None:
    store = outbox
    firing = await _accept(store, "FAILED", 0)
    await _send(store, 1, fail=True)
    done = await outbox_ops.retry(store, None, now=at(2))  # still open: it goes again
    assert (done.retried, done.skipped) == (1, ())
    assert await _send(store, 3, fail=False) == firing
    resolved = await _accept(store, "RUNNING", 4)
    await _send(store, 5, fail=True)
    done = await outbox_ops.retry(store, [resolved, "dlv_unknown"], now=at(6))
    assert (done.retried, done.skipped) == (1, ())
    assert await _send(store, 7, fail=False) == resolved
