"""outbox_ops.retry on every backend: a dead delivery of an incident that is over stays dead."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from bridge import outbox_ops
from bridge.decide import decide_timers, decider
from bridge.incident_state import RoutePolicy
from bridge.store.base import Store
from tests.support.redis_server import redis_server  # noqa: F401
from tests.support.stores import BACKENDS, TTL, at, ev, open_store, plan_to, with_incidents

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


async def _drain(store: Store, t: float, *, bury: tuple[str, ...] = ()) -> list[str]:
    """Claim and end everything due at ``t`` (kinds in ``bury`` go dead); the kinds, in order."""
    kinds = []
    while claimed := await store.claim(now=at(t), limit=10, lease=60):
        for d in claimed:
            kinds.append(d.alert.kind)
            if d.alert.kind in bury:
                await store.bury(d.id, now=at(t), error="503")
            else:
                await store.complete(d.id, now=at(t))
    return kinds


async def test_a_dead_flapping_notice_goes_again_only_while_the_flapping_lasts(outbox: Store) -> None:
    """Pagers correlate a flapping notice by the node, and its stable summary closes it: once that
    is decided, the notice retried would re-open the node's alert for good."""
    store = outbox
    base = with_incidents(plan_to("pd", route="r"), RoutePolicy("r", ("pd",)))
    policy = replace(base, incidents=replace(base.incidents, flap_transitions=3, flap_window=60))

    async def event(status: str, t: float) -> None:
        e = ev(status=status, t=t)
        await store.accept(e, decider(e, policy, at(t)), now=at(t), dedup_ttl=TTL)

    await event("FAILED", 0)
    await _drain(store, 0)
    await event("RUNNING", 1)
    await _drain(store, 1)
    await event("FAILED", 2)
    assert await _drain(store, 2, bury=("flapping",)) == ["flapping"]
    (dead,) = await store.list_deliveries(state="dead")
    done = await outbox_ops.retry(store, None, now=at(3))  # still flapping: it goes, before the summary
    assert (done.retried, done.skipped) == (1, ())
    await store.bury(dead.id, now=at(3), error="503")  # ... and fails again
    decided = await store.apply("n1", lambda r: decide_timers(r, policy, at(70)), now=at(70))
    assert "stable" in [j.kind for j in decided.jobs]
    assert "flapping" not in await _drain(store, 70)
    done = await outbox_ops.retry(store, None, now=at(80))  # the flapping is over: it stays dead
    assert done.retried == 0 and [d.id for d in done.skipped] == [dead.id]
    assert await _drain(store, 81) == []


async def test_a_pending_delivery_retried_by_id_is_made_due_whatever_its_incident(outbox: Store) -> None:
    """A pending job (in backoff) still has its place before whatever closes its incident: a retry
    by id makes it due now, as it always did, and reports nothing left dead."""
    store = outbox
    firing = await _accept(store, "FAILED", 0)
    (d,) = await store.claim(now=at(1), limit=10, lease=60)
    await store.reschedule(d.id, now=at(1), next_attempt_at=at(3600), error="503")
    resolved = await _accept(store, "RUNNING", 2)
    done = await outbox_ops.retry(store, [firing], now=at(3))
    assert (done.retried, done.skipped) == (1, ())
    assert await _drain(store, 4) == ["firing", "resolved"]
    assert (await store.get_delivery(resolved)) is not None


async def test_retrying_every_dead_one_says_when_more_remain(outbox: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    store = outbox
    monkeypatch.setattr(outbox_ops, "DEAD_READ_LIMIT", 2)
    for i in range(3):
        e = ev(node=f"n{i}", t=i)
        await store.accept(e, decider(e, POLICY, at(i)), now=at(i), dedup_ttl=TTL)
    await _drain(store, 5, bury=("firing",))
    done = await outbox_ops.retry(store, None, now=at(6))
    assert (done.retried, done.more) == (2, True)
    done = await outbox_ops.retry(store, None, now=at(6))
    assert (done.retried, done.more) == (1, False)
