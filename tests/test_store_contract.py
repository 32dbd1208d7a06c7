"""The Store contract, run against every backend: memory (the reference), sqlite and redis.

Every backend must behave exactly like ``MemoryStore``; ``test_matches_memory_store`` replays one
seeded random workload on the backend and on a fresh ``MemoryStore`` and compares every answer.
The Redis backend runs against a real redis-server (tests/support/redis_server.py); the Redis-only tests
at the bottom cover replicas sharing one Redis and a Redis outage.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bridge.config import RetentionConfig
from bridge.decide import Decider, Decision, Policy, decide_ack, decide_resolve, decide_timers, decider
from bridge.errors import StorageUnavailable
from bridge.incident_state import RoutePolicy
from bridge.model import Event, NodeState, RouteMatch, Silence, delivery_id, parse_timestamp
from bridge.store.base import Store, compact_json, own_json, read_context
from bridge.store.memory import MemoryStore
from tests.support.redis_server import RedisServer, redis_outage_server, redis_server  # noqa: F401
from tests.support.stores import (
    BACKENDS,
    SKEW,
    STALE_AGE,
    T0,
    TTL,
    Plan,
    at,
    ev,
    open_store,
    plan_to,
    with_incidents,
)

StoreFactory = Callable[[], Awaitable[Store]]
# Routing given the node's previous state: these tests fix the routes and check what is stored.
EVERYTHING = Silence("sil_all", "*", None, datetime(1970, 1, 1, tzinfo=UTC), datetime(9999, 1, 1, tzinfo=UTC))


def no_plan(prev: NodeState | None) -> list[RouteMatch]:
    raise AssertionError("plan must not be called here")


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
async def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Opens stores of one backend that share their data (Redis: one prefix = one deployment)."""
    backend: str = request.param
    opened: list[Store] = []
    prefix = f"t{uuid.uuid4().hex[:10]}:"

    async def make() -> Store:
        store = await open_store(backend, request, tmp_path, prefix)
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


@pytest.fixture
async def store(new_store: StoreFactory) -> Store:
    return await new_store()


def decide_with(event: Event, plan: Plan, now: datetime, mode: str = "notify") -> Decider:
    """The real decision with fixed routes. mode "silenced": a silence covering everything is in
    force; "stale": decided as if the event arrived after max_event_age had passed."""
    policy = Policy(lambda e, prev: plan(prev), (EVERYTHING,) if mode == "silenced" else (), STALE_AGE, SKEW)
    return decider(event, policy, now + timedelta(seconds=2 * STALE_AGE) if mode == "stale" else now)


async def accept(store: Store, event: Event, plan: Plan, *, now: datetime | None = None, ttl: float = TTL,
                 mode: str = "notify") -> Any:
    now = now or event.timestamp
    return await store.accept(event, decide_with(event, plan, now, mode), now=now, dedup_ttl=ttl)


# --- accept ---------------------------------------------------------------------------------------


async def test_accept_creates_jobs_then_duplicate(store: Store) -> None:
    e = ev(details={"reason": "disk"})
    a = await accept(store, e, plan_to("slack", "mail"))
    assert a.status == "accepted"
    assert a.event_id == e.id
    assert a.previous is None
    assert a.deliveries == (delivery_id(e.id, "slack"), delivery_id(e.id, "mail"))
    job = await store.get_delivery(a.deliveries[0])
    assert job is not None
    assert (job.state, job.attempts, job.receiver, job.last_error) == ("pending", 0, "slack", None)
    assert job.created_at == job.next_attempt_at == job.updated_at == e.timestamp
    assert job.alert.event == e
    assert job.alert.route == "r"
    assert job.alert.delivery_id == job.id
    assert job.created_at.utcoffset() == timedelta(0)

    again = await accept(store, e, plan_to("slack", "mail", "hook"), now=at(5))
    assert again.status == "duplicate"
    assert again.event_id == e.id
    assert again.deliveries == ()
    assert (await store.stats(now=at(5))).pending == 2


async def test_every_value_of_a_body_and_a_record_reads_back_as_written(store: Store) -> None:
    # Stored text comes from two encoders (store.base.own_json for what the bridge builds, json for
    # a body's values): NaN, infinities and integers past 64 bits must survive, and so must text
    # outside ASCII in node ids, statuses and routes.
    details = {"nan": float("nan"), "inf": float("-inf"), "big": 2**80, "nested": {"x": [1.5, None, True]},
               "text": 'ünï ☃ \u2028 "q" \\ \r\n'}
    e = ev(node="nœud-☃", status="ÉCHOUÉ", **details)
    a = await accept(store, e, plan_to("slack🔔", route="rüte"))
    job = await store.get_delivery(a.deliveries[0])
    assert job is not None
    got = dict(job.alert.event.details)
    assert math.isnan(got.pop("nan")) and got.pop("inf") == float("-inf")
    assert got == {k: v for k, v in details.items() if k not in ("nan", "inf")}
    assert (job.alert.event.node_id, job.alert.event.status, job.alert.route, job.receiver) == (
        "nœud-☃", "ÉCHOUÉ", "rüte", "slack🔔")
    (record,) = await store.list_nodes()
    assert record.state == await store.node_state("nœud-☃")
    assert record.incidents.incident is None  # ÉCHOUÉ opens nothing; plain route "rüte" notified
    e2 = ev(node="nœud-☃", status="FAILED", t=1, text="\u2603 🚨")  # astral: a surrogate pair in Lua's cjson
    a2 = await accept(store, e2, plan_to("slack🔔", route="rüte"))
    job2 = await store.get_delivery(a2.deliveries[0])
    assert job2 is not None and job2.alert.incident is not None and job2.alert.kind == "firing"
    (record,) = await store.list_nodes()
    assert record.incidents.incident is not None and record.incidents.incident.owners == ("rüte",)
    assert job2.alert.event == e2


async def test_timestamp_spellings_dedup_together(store: Store) -> None:
    spellings = [
        "2026-04-16T12:00:00Z",
        "2026-04-16T12:00:00.000Z",
        "2026-04-16T12:00:00+00:00",
        "2026-04-16T14:00:00+02:00",
    ]
    events = [Event("NODE_STATUS_UPDATED", parse_timestamp(s), "n1", "FAILED", received_at=T0) for s in spellings]
    results = [await accept(store, e, plan_to("a"), now=T0) for e in events]
    assert [r.status for r in results] == ["accepted"] + ["duplicate"] * (len(spellings) - 1)
    assert {r.event_id for r in results} == {events[0].id}
    assert (await store.stats(now=T0)).pending == 1


async def test_another_status_at_the_same_instant_is_not_a_duplicate(store: Store) -> None:
    # FAILED then RUNNING with one eventTimestamp: the recovery must count (arrival order breaks the tie).
    failed, running = (Event("NODE_STATUS_UPDATED", T0, "n1", s, received_at=T0) for s in ("FAILED", "RUNNING"))
    results = [await accept(store, e, plan_to("a"), now=T0) for e in (failed, running, failed, running)]
    assert [r.status for r in results] == ["accepted", "accepted", "duplicate", "duplicate"]
    assert (await store.node_state("n1")).status == "RUNNING"  # type: ignore[union-attr]
    assert (await store.stats(now=T0)).pending == 2


async def test_concurrent_identical_accepts_accept_once(store: Store) -> None:
    e = ev()
    results = await asyncio.gather(*(accept(store, e, plan_to("a", "b")) for _ in range(50)))
    statuses = Counter(r.status for r in results)
    assert statuses == {"accepted": 1, "duplicate": 49}
    assert (await store.stats(now=T0)).pending == 2


async def test_stale_is_recorded_without_jobs_or_node_state(store: Store) -> None:
    r = await accept(store, ev(t=0), no_plan, mode="stale")
    assert (r.status, r.deliveries, r.previous) == ("stale", (), None)
    assert await store.node_state("n1") is None
    assert (await accept(store, ev(t=0), plan_to("a"))).status == "duplicate"  # it was recorded

    await accept(store, ev(t=10, status="RUNNING"), plan_to("a"))
    before = await store.node_state("n1")
    r = await accept(store, ev(t=20), no_plan, mode="stale")
    assert r.status == "stale"
    assert await store.node_state("n1") == before
    assert (await store.stats(now=at(20))).pending == 1


async def test_list_nodes_holds_every_node_once_as_node_state_has_it(store: Store) -> None:
    assert await store.list_nodes() == []
    # Ids a glob or a key prefix could trip over: the store lists them as they are.
    odd = ["n1", "node:*", "a[b]?c", '<script>"x"', "ünï"]
    for i, node in enumerate(odd):
        await accept(store, ev(node=node, t=i, status="RUNNING"), plan_to("a"))
    await accept(store, ev(node="n1", t=10, status="FAILED"), plan_to("a"))
    await accept(store, ev(node="stale-only", t=11), no_plan, mode="stale")  # no node state: not listed
    listed = await store.list_nodes()
    assert sorted(n.node_id for n in listed) == sorted(odd)
    for n in listed:
        assert n.state == await store.node_state(n.node_id)
    assert next(n for n in listed if n.node_id == "n1").state.status == "FAILED"


async def test_out_of_order_is_recorded_without_jobs(store: Store) -> None:
    await accept(store, ev(t=10, status="RUNNING"), plan_to("a"))
    state = await store.node_state("n1")
    assert state is not None
    r = await accept(store, ev(t=5, status="FAILED"), no_plan, now=at(11))
    assert r.status == "out_of_order"
    assert r.deliveries == ()
    assert r.previous == state
    assert await store.node_state("n1") == state
    assert (await store.stats(now=at(11))).pending == 1
    assert (await accept(store, ev(t=5), plan_to("a"), now=at(12))).status == "duplicate"
    # other nodes are not affected by n1's newest timestamp
    assert (await accept(store, ev(node="n2", t=5), plan_to("a"), now=at(12))).status == "accepted"


async def test_silenced_updates_node_state_without_jobs(store: Store) -> None:
    await accept(store, ev(t=0, status="RUNNING"), plan_to("a"))
    prev = await store.node_state("n1")
    r = await accept(store, ev(t=10, status="FAILED"), plan_to("a"), mode="silenced")
    assert (r.status, r.deliveries, r.previous) == ("silenced", (), prev)
    assert await store.node_state("n1") == NodeState("n1", "FAILED", at(10), at(10), ev(t=10).id)
    assert (await store.stats(now=at(10))).pending == 1
    assert (await accept(store, ev(t=10), plan_to("a"))).status == "duplicate"


async def test_plan_receives_previous_node_state(store: Store) -> None:
    seen: list[NodeState | None] = []

    def plan(prev: NodeState | None) -> list[RouteMatch]:
        seen.append(prev)
        return [RouteMatch("r", ("a",))]

    e0, e1, e2, e3 = ev(t=0), ev(t=10), ev(t=20), ev(t=30, status="RUNNING")
    results = [await accept(store, e, plan) for e in (e0, e1, e2, e3)]
    assert seen == [
        None,
        NodeState("n1", "FAILED", at(0), at(0), e0.id),
        NodeState("n1", "FAILED", at(0), at(10), e1.id),  # since kept while the status holds
        NodeState("n1", "FAILED", at(0), at(20), e2.id),
    ]
    assert [r.previous for r in results] == seen
    assert await store.node_state("n1") == NodeState("n1", "RUNNING", at(30), at(30), e3.id)
    job = await store.get_delivery(results[3].deliveries[0])
    assert job is not None
    assert (job.alert.previous_status, job.alert.previous_since) == ("FAILED", at(0))
    assert job.alert.previous_duration == 30.0
    assert await store.node_state("nope") is None


async def test_repeat_interval_reminds_through_due_nodes_and_apply(store: Store) -> None:
    # Changed meaning (issue 13): repeat_interval no longer suppresses, it reminds; a repeat of the
    # status notifies nobody. The timer lives in the node record; the store indexes its due time.
    rp = RoutePolicy("r", ("a",), repeat_interval=300)
    policy = with_incidents(plan_to("a", route="r"), rp)
    e = ev(t=0)
    first = await store.accept(e, decider(e, policy, at(0)), now=at(0), dedup_ttl=TTL)
    assert len(first.deliveries) == 1 and first.next_due == at(300)
    repeat = ev(t=100)
    assert (await store.accept(repeat, decider(repeat, policy, at(100)), now=at(100), dedup_ttl=TTL)).deliveries == ()
    assert await store.due_nodes(now=at(299), limit=10) == []
    assert await store.due_nodes(now=at(300), limit=10) == ["n1"]
    d = await store.apply("n1", lambda rec: decide_timers(rec, policy, at(300)), now=at(300))
    assert [j.kind for j in d.jobs] == ["reminder"] and d.record is not None
    assert await store.due_nodes(now=at(300), limit=10) == []  # applied once, next one later
    assert await store.due_nodes(now=at(600), limit=10) == ["n1"]
    again = await store.apply("n1", lambda rec: decide_timers(rec, policy, at(300)), now=at(300))
    assert (again.record, again.jobs) == (None, ())  # a second replica's apply finds nothing due
    job = await store.get_delivery(d.jobs[0].id)
    assert job is not None and job.alert.kind == "reminder" and job.alert.incident is not None
    assert job.alert.incident.id == d.record.incidents.incident.id  # type: ignore[union-attr]
    assert job.alert.event.node_id == "n1" and job.alert.event.status == "FAILED"
    (claimed_first, ) = await store.claim(now=at(300), limit=5, lease=30)  # one at a time per key, in order
    assert claimed_first.id == first.deliveries[0] and claimed_first.alert.kind == "firing"
    [rec] = await store.list_nodes()
    assert rec == d.record
    assert (await store.stats(now=at(300))).incidents_open == 1
    assert await store.forget_node("n1")
    assert (await store.stats(now=at(300))).incidents_open == 0
    assert await store.due_nodes(now=at(10**6), limit=10) == [] and await store.list_nodes() == []


async def test_a_key_sends_in_the_order_decided_whatever_the_events_dates(store: Store) -> None:
    """The receiver is down: a firing for an event dated 60 s before it arrived, reminders decided on
    the bridge's clock, then the recovery, dated before the reminders were decided. The queue goes
    out as decided (a resolution before the reminders re-opened the page at PagerDuty), and other
    nodes still go oldest event first."""
    rp = RoutePolicy("r", ("a",), repeat_interval=1)
    policy = with_incidents(plan_to("a", route="r"), rp)
    failed = Event("NODE_STATUS_UPDATED", at(-60), "n1", "FAILED", received_at=at(0))
    firing = (await store.accept(failed, decider(failed, policy, at(0)), now=at(0), dedup_ttl=TTL)).deliveries
    reminders = []
    for t in (1, 2, 3):
        d = await store.apply("n1", lambda rec, t=t: decide_timers(rec, policy, at(t)), now=at(t))
        reminders += [j.id for j in d.jobs]
    running = Event("NODE_STATUS_UPDATED", at(-50), "n1", "RUNNING", received_at=at(3.5))
    resolved = (await store.accept(running, decider(running, policy, at(3.5)), now=at(3.5),
                                   dedup_ttl=TTL)).deliveries
    other = ev("n2", t=-55)  # dated between: its key is its own, and goes before n1's later jobs
    (n2,) = (await store.accept(other, decider(other, with_incidents(plan_to("a", route="r"), rp), at(4)),
                                now=at(4), dedup_ttl=TTL)).deliveries
    assert len(reminders) == 3 and len(resolved) == 1
    sent: list[str] = []
    while claimed := await store.claim(now=at(10), limit=10, lease=60):
        sent += [d.id for d in claimed]
        await store.complete_many([d.id for d in claimed], now=at(10))
    n1 = [i for i in sent if i != n2]
    assert n1 == [*firing, *reminders, *resolved]
    assert sent[:2] == [firing[0], n2]


async def test_apply_ack_and_resolve(store: Store) -> None:
    rp = RoutePolicy("r", ("a", "b"), repeat_interval=60)
    policy = with_incidents(plan_to("a", "b", route="r"), rp)
    e = ev(t=0)
    await store.accept(e, decider(e, policy, at(0)), now=at(0), dedup_ttl=TTL)
    [rec] = await store.list_nodes()
    inc = rec.incidents.incident
    assert inc is not None
    assert (await store.stats(now=at(1))).incidents_open == 1  # the gauge reads the store's index
    nf = await store.apply("n1", lambda r: decide_ack(r, "inc_nope", by="x", now=at(1)), now=at(1))
    assert (nf.outcome, nf.record) == ("not_found", None)
    acked = await store.apply("n1", lambda r: decide_ack(r, inc.id, by="alice", now=at(1)), now=at(1))
    assert acked.record is not None and acked.record.incidents.incident.acked_by == "alice"  # type: ignore[union-attr]
    assert await store.due_nodes(now=at(10**6), limit=10) == []  # reminders stopped
    assert (await store.stats(now=at(1))).incidents_open == 1  # acknowledged is still open
    done = await store.apply("n1", lambda r: decide_resolve(r, inc.id, policy, by="bob", now=at(5)), now=at(5))
    assert [(j.kind, j.receiver) for j in done.jobs] == [("resolved", "a"), ("resolved", "b")]
    assert done.resolved == (5.0,)
    [rec] = await store.list_nodes()
    assert rec.incidents.incident is None and rec.incidents.last_resolved is not None
    assert (await store.stats(now=at(5))).incidents_open == 0
    assert await store.apply("unknown", lambda r: decide_ack(r, inc.id, by="x", now=at(6)), now=at(6)) == \
        Decision("not_found")


async def test_due_nodes_earliest_first_and_limited(store: Store) -> None:
    for i, node in enumerate(["n1", "n2", "n3"]):
        rp = RoutePolicy("r", ("a",), hold=100 - 10 * i)
        policy = with_incidents(plan_to("a", route="r"), rp)
        e = ev(node, t=0)
        await store.accept(e, decider(e, policy, at(0)), now=at(0), dedup_ttl=TTL)
    assert await store.due_nodes(now=at(1000), limit=2) == ["n3", "n2"]
    assert await store.due_nodes(now=at(85), limit=5) == ["n3"]


async def test_receiver_named_by_two_routes_gets_one_job(store: Store) -> None:
    plan: Plan = lambda prev: [RouteMatch("r1", ("a", "b")), RouteMatch("r2", ("b", "c"))]  # noqa: E731
    e = ev()
    r = await accept(store, e, plan)
    assert r.deliveries == tuple(delivery_id(e.id, x) for x in ("a", "b", "c"))
    routes = {}
    for did in r.deliveries:
        job = await store.get_delivery(did)
        assert job is not None
        routes[job.receiver] = job.alert.route
    assert routes == {"a": "r1", "b": "r1", "c": "r2"}


# --- concurrent accepts: backends batch them (sqlite, redis); the answers stay sequential ----------


def _batch_workload() -> list[tuple[Event, Plan, dict[str, Any]]]:
    """One node's events in order, out of order, repeated, silenced and stale; repeat intervals
    fired and suppressed inside the batch; many other nodes, some events sent twice."""
    two_routes: Plan = lambda prev: [RouteMatch("r1", ("a", "b")), RouteMatch("r2", ("b", "c"))]  # noqa: E731
    repeat = plan_to("a", "b", route="rep", repeat=300)
    return [
        (ev("n1", "FAILED", 0), plan_to("a", "b"), {}),
        (ev("n1", "FAILED", 1), plan_to("a"), {}),  # same status: since kept
        (ev("n1", "RUNNING", 2), two_routes, {}),
        (ev("n1", "FAILED", 1.5), no_plan, {}),  # older than n1's newest, accepted just above
        (ev("n1", "RUNNING", 0), no_plan, {}),  # the first's instant, another status: older than n1's newest
        (ev("n1", "PAUSED", 3), plan_to("a"), {"mode": "silenced"}),
        (ev("n1", "FAILED", 4), no_plan, {"mode": "stale"}),
        (ev("n1", "FAILED", 5), plan_to("a", "c"), {}),
        (ev("n1", "FAILED", 4), no_plan, {}),  # the stale one again: a duplicate
        (ev("n2", "FAILED", 0), repeat, {}),
        (ev("n2", "FAILED", 1), repeat, {}),  # inside the interval the first one fired
        (ev("n2", "RUNNING", 2), repeat, {}),
        (ev("n2", "FAILED", 3), repeat, {}),  # FAILED: still inside 300 s
        *[(ev(f"m{i}", "FAILED", i), plan_to("a", "b"), {}) for i in range(30)],
        *[(ev(f"m{i}", "RUNNING", i + 0.5), plan_to("c"), {}) for i in range(0, 30, 3)],
        *[(ev(f"m{i}", "FAILED", i), plan_to("c"), {}) for i in range(0, 30, 5)],  # duplicates
        *[(ev(f"m{i}", "RUNNING", 40 + i), plan_to("c"), {}) for i in range(0, 30, 2)],
    ]


async def test_concurrent_accepts_answer_as_if_sequential(store: Store) -> None:
    calls = _batch_workload()
    results = await asyncio.gather(*(accept(store, e, p, now=at(10), **kw) for e, p, kw in calls))

    ref = MemoryStore()
    expected = [await accept(ref, e, p, now=at(10), **kw) for e, p, kw in calls]
    assert results == expected
    assert [r.status for r in results[:13]] == [
        "accepted", "accepted", "accepted", "out_of_order", "out_of_order", "silenced", "stale", "accepted",
        "duplicate", "accepted", "accepted", "accepted", "accepted",
    ]  # fmt: skip
    # incidents (issue 13): the repeat is quiet, RUNNING resolves, FAILED opens a new one
    assert [len(r.deliveries) for r in results[9:13]] == [2, 0, 2, 2]
    assert results[2].previous == NodeState("n1", "FAILED", at(0), at(1), ev("n1", t=1).id)
    assert results[7].previous == NodeState("n1", "PAUSED", at(3), at(3), ev("n1", "PAUSED", 3).id)
    for node in ("n1", "n2", "m0", "m1", "m29"):
        assert await store.node_state(node) == await ref.node_state(node)
    assert await store.list_deliveries(limit=1000) == await ref.list_deliveries(limit=1000)
    assert await store.stats(now=at(10)) == await ref.stats(now=at(10))
    got = await store.claim(now=at(11), limit=1000, lease=60)
    assert got == await ref.claim(now=at(11), limit=1000, lease=60)
    assert len(got) == len({d.order_key for d in got})


async def test_concurrent_accepts_of_one_node_chain_their_states(store: Store) -> None:
    statuses = ["FAILED", "FAILED", "RUNNING", "PAUSED", "PAUSED", "FAILED"] * 10
    events = [ev("n1", s, t=i) for i, s in enumerate(statuses)]
    results = await asyncio.gather(*(accept(store, e, plan_to("a")) for e in events))
    assert [r.status for r in results] == ["accepted"] * len(events)
    assert results[0].previous is None
    for before, r in zip(events, results[1:], strict=False):
        assert r.previous is not None and r.previous.last_event_id == before.id
    assert results[3].previous == NodeState("n1", "RUNNING", at(2), at(2), events[2].id)
    assert results[5].previous == NodeState("n1", "PAUSED", at(3), at(4), events[4].id)
    assert await store.node_state("n1") == NodeState("n1", "FAILED", at(59), at(59), events[-1].id)
    claimed = [(await store.claim(now=at(60), limit=5, lease=60))[0]]
    for _ in range(sum(bool(r.deliveries) for r in results) - 1):
        await store.complete(claimed[-1].id, now=at(60))
        claimed += await store.claim(now=at(60), limit=5, lease=60)
    notified = [e for e, r in zip(events, results, strict=True) if r.deliveries]  # status changes
    assert len(notified) == 4 + 9 * 3  # per cycle: FAILED (opens), RUNNING, PAUSED; the repeats are quiet
    assert [d.alert.event for d in claimed] == notified  # one at a time, in event order


async def test_a_failing_plan_fails_only_its_own_accept(store: Store) -> None:
    def broken(prev: NodeState | None) -> list[RouteMatch]:
        raise RuntimeError("routing bug")

    results = await asyncio.gather(
        accept(store, ev("n1", t=0), plan_to("a")),
        accept(store, ev("n2", t=0), broken),
        accept(store, ev("n3", t=0), plan_to("a")),
        accept(store, ev("n1", "RUNNING", t=1), plan_to("a")),
        return_exceptions=True,
    )
    assert isinstance(results[1], RuntimeError)
    assert [getattr(r, "status", None) for r in results] == ["accepted", None, "accepted", "accepted"]
    assert results[3].previous == NodeState("n1", "FAILED", at(0), at(0), ev("n1", t=0).id)
    assert (await store.stats(now=at(1))).pending == 3
    # Nothing of the failed accept remains, not even in a backend's memory of node states.
    assert await store.node_state("n2") is None
    again = await accept(store, ev("n2", t=0), plan_to("a"))
    assert again.status == "accepted" and again.previous is None


async def test_concurrent_outcomes_are_all_recorded(store: Store) -> None:
    ids = [(await accept(store, ev(f"n{i}", t=i), plan_to("a"))).deliveries[0] for i in range(9)]
    assert len(await store.claim(now=at(10), limit=20, lease=60)) == 9
    outcomes = []
    for i, did in enumerate(ids):
        if i % 3 == 0:
            outcomes.append(store.complete(did, now=at(11)))
        elif i % 3 == 1:
            outcomes.append(store.bury(did, now=at(11), error="gone"))
        else:
            outcomes.append(store.reschedule(did, now=at(11), next_attempt_at=at(20), error="503"))
    outcomes.append(store.complete(ids[0], now=at(12)))  # already done: ignored
    outcomes.append(store.complete("dlv_nope", now=at(12)))
    await asyncio.gather(*outcomes)
    s = await store.stats(now=at(12))
    assert (s.pending, s.inflight, s.dead, s.done) == (3, 0, 3, 3)
    done = await store.get_delivery(ids[0])
    assert done is not None and (done.state, done.updated_at) == ("done", at(11))
    again = await store.claim(now=at(20), limit=20, lease=60)
    assert sorted(d.id for d in again) == sorted(ids[2::3])


async def test_complete_many_records_each_as_complete_does(store: Store) -> None:
    """Sends that ended together: each job done, the next job of each order key its head (claimable),
    ids already finished or unknown ignored, a rescheduled one left as it is."""
    first = [(await accept(store, ev(f"n{i}", t=i), plan_to("a"))).deliveries[0] for i in range(4)]
    second = [(await accept(store, ev(f"n{i}", t=10 + i, status="RUNNING"), plan_to("a"))).deliveries[0]
              for i in range(2)]
    assert sorted(d.id for d in await store.claim(now=at(20), limit=20, lease=60)) == sorted(first)
    await store.reschedule(first[3], now=at(21), next_attempt_at=at(30), error="503")
    await store.complete(first[2], now=at(21))
    await store.complete_many([first[0], first[1], first[2], "dlv_nope"], now=at(22))
    for did, state, at_ in ((first[0], "done", at(22)), (first[1], "done", at(22)), (first[2], "done", at(21)),
                            (first[3], "pending", at(21))):
        job = await store.get_delivery(did)
        assert job is not None and (job.state, job.updated_at) == (state, at_)
    s = await store.stats(now=at(22))
    assert (s.pending, s.inflight, s.done) == (3, 0, 3)
    # n0's and n1's next jobs are their keys' heads now; n3's first job still holds its key.
    assert sorted(d.id for d in await store.claim(now=at(22), limit=20, lease=60)) == sorted(second)
    await store.complete_many([], now=at(23))


async def test_complete_many_of_one_two_or_three_promotes_each_keys_next_job(store: Store) -> None:
    """SQLite ends one or two jobs with a statement each and three or more with one list: each
    size leaves every finished key's next job claimable, and only those."""
    for size in (1, 2, 3):
        nodes = [f"s{size}-{i}" for i in range(size + 1)]
        first = [(await accept(store, ev(n, t=0), plan_to("a"))).deliveries[0] for n in nodes]
        second = [(await accept(store, ev(n, t=1, status="RUNNING"), plan_to("a"))).deliveries[0] for n in nodes]
        assert sorted(d.id for d in await store.claim(now=at(2), limit=20, lease=60)) == sorted(first)
        await store.complete_many(first[:size], now=at(3))
        assert sorted(d.id for d in await store.claim(now=at(3), limit=20, lease=60)) == sorted(second[:size])
        for did in (*first[size:], *second[:size]):
            await store.complete(did, now=at(4))
        assert [d.id for d in await store.claim(now=at(4), limit=20, lease=60)] == second[size:]
        for did in second[size:]:
            await store.complete(did, now=at(5))


# --- claim and ordering ---------------------------------------------------------------------------


async def test_claim_one_at_a_time_per_receiver_and_node(store: Store) -> None:
    first = (await accept(store, ev(t=0), plan_to("a"))).deliveries[0]
    second = (await accept(store, ev(t=1, status="RUNNING"), plan_to("a"))).deliveries[0]
    claimed = await store.claim(now=at(2), limit=10, lease=60)
    assert [d.id for d in claimed] == [first]
    assert (claimed[0].state, claimed[0].attempts, claimed[0].updated_at) == ("inflight", 1, at(2))
    assert await store.claim(now=at(3), limit=10, lease=60) == []  # first in flight
    await store.reschedule(first, now=at(3), next_attempt_at=at(50), error="503")
    assert await store.claim(now=at(4), limit=10, lease=60) == []  # first pending, not due
    again = await store.claim(now=at(50), limit=10, lease=60)
    assert [(d.id, d.attempts) for d in again] == [(first, 2)]
    await store.complete(first, now=at(51))
    nxt = await store.claim(now=at(51), limit=10, lease=60)
    assert [d.id for d in nxt] == [second]
    done = await store.get_delivery(first)
    assert done is not None
    assert (done.state, done.updated_at, done.last_error) == ("done", at(51), "503")


async def test_events_go_out_in_event_order_not_arrival_order(store: Store) -> None:
    late = (await accept(store, ev(node="n1", t=10), plan_to("a"), now=at(0))).deliveries[0]
    # n2 arrives later but happened earlier: oldest event first across keys
    early = (await accept(store, ev(node="n2", t=5), plan_to("a"), now=at(1))).deliveries[0]
    claimed = await store.claim(now=at(20), limit=10, lease=60)
    assert [d.id for d in claimed] == [early, late]
    assert await store.claim(now=at(20), limit=10, lease=60) == []


async def test_failing_order_key_blocks_only_itself(store: Store) -> None:
    plan = plan_to("a", "b")
    n1a, n1b = (await accept(store, ev("n1", t=0), plan)).deliveries
    n2a, n2b = (await accept(store, ev("n2", t=1), plan)).deliveries
    n1a2, n1b2 = (await accept(store, ev("n1", "RUNNING", t=2), plan)).deliveries
    n2a2, n2b2 = (await accept(store, ev("n2", "RUNNING", t=3), plan)).deliveries
    first = await store.claim(now=at(5), limit=10, lease=60)
    assert {d.id for d in first} == {n1a, n1b, n2a, n2b}
    await store.reschedule(n1a, now=at(6), next_attempt_at=at(600), error="down")  # a fails for n1
    for did in (n1b, n2a, n2b):
        await store.complete(did, now=at(6))
    nxt = await store.claim(now=at(7), limit=10, lease=60)
    assert {d.id for d in nxt} == {n1b2, n2a2, n2b2}  # n1a2 waits behind n1a
    waiting = await store.get_delivery(n1a2)
    assert waiting is not None and (waiting.state, waiting.attempts) == ("pending", 0)
    assert await store.claim(now=at(8), limit=10, lease=60) == []


async def test_limit_and_receivers_filter(store: Store) -> None:
    ids = {}
    for i, node in enumerate(("n1", "n2", "n3")):
        a, b = (await accept(store, ev(node, t=i), plan_to("a", "b"))).deliveries
        ids[node] = (a, b)
    two = await store.claim(now=at(10), limit=2, lease=60, receivers=["b"])
    assert [d.id for d in two] == [ids["n1"][1], ids["n2"][1]]
    assert await store.claim(now=at(10), limit=5, lease=60, receivers=[]) == []
    assert await store.claim(now=at(10), limit=0, lease=60) == []
    rest = await store.claim(now=at(10), limit=10, lease=60, receivers=["a", "b", "zzz"])
    # same event time and creation time: the id breaks the tie
    assert [d.id for d in rest] == [ids["n1"][0], ids["n2"][0], *sorted(ids["n3"])]


def grouped(*receivers: str, wait: float = 10.0) -> Policy:
    """Route "r" with group_wait: its firings are held that long and tagged with one group."""
    return with_incidents(plan_to(*receivers, route="r"), RoutePolicy("r", receivers, group_wait=wait,
                                                                      group_interval=60.0))


async def accept_in(store: Store, event: Event, policy: Policy) -> Any:
    return await store.accept(event, decider(event, policy, event.timestamp), now=event.timestamp, dedup_ttl=TTL)


async def test_grouped_firings_are_held_then_claimed_together(store: Store) -> None:
    policy = grouped("a")
    ids = [(await accept_in(store, ev(f"n{i}", t=i), policy)).deliveries[0] for i in range(4)]
    job = await store.get_delivery(ids[0])
    assert job is not None and job.next_attempt_at == at(10) and job.alert.group is not None
    assert await store.claim(now=at(9), limit=10, lease=60, group_limit=100) == []  # held for group_wait
    # the first is due: it takes its whole group along, in order, whatever their due times
    got = await store.claim(now=at(10), limit=1, lease=60, group_limit=100)
    assert [d.id for d in got] == ids and {d.state for d in got} == {"inflight"}
    assert {d.alert.group.key for d in got if d.alert.group} == {job.alert.group.key}
    assert await store.claim(now=at(20), limit=10, lease=60, group_limit=100) == []
    for did in ids:
        await store.complete(did, now=at(21))
    late = (await accept_in(store, ev("n9", t=30), policy)).deliveries[0]
    assert await store.claim(now=at(39), limit=10, lease=60, group_limit=100) == []
    assert [d.id for d in await store.claim(now=at(40), limit=10, lease=60, group_limit=100)] == [late]


async def test_group_claim_only_takes_heads_of_the_receiver_within_the_limit(store: Store) -> None:
    policy = grouped("a", "b")
    n1a, n1b = (await accept_in(store, ev("n1", t=0), policy)).deliveries
    behind = (await accept_in(store, ev("n1", "RUNNING", t=1), policy)).deliveries  # resolutions: not grouped
    rest = [(await accept_in(store, ev(f"n{i}", t=i), policy)).deliveries for i in (2, 3)]
    got = await store.claim(now=at(10), limit=1, lease=60, receivers=["a"], group_limit=1)
    assert [d.id for d in got] == [n1a, rest[0][0]]  # one mate; not b's, not n1's resolution
    assert all(d.id not in behind for d in got)
    # without group_limit a claim takes due jobs only, each alone
    alone = await store.claim(now=at(10), limit=10, lease=60, receivers=["b"])
    assert [d.id for d in alone] == [n1b]
    got = await store.claim(now=at(13), limit=10, lease=60, receivers=["a"], group_limit=10)
    assert [d.id for d in got] == [rest[1][0]]


async def test_group_mates_past_their_lease_are_taken_again_and_finished_ones_never(store: Store) -> None:
    policy = grouped("a")
    ids = [(await accept_in(store, ev(f"n{i}", t=i), policy)).deliveries[0] for i in range(3)]
    assert len(await store.claim(now=at(10), limit=1, lease=30, group_limit=10)) == 3
    await store.complete(ids[1], now=at(11))
    await store.bury(ids[2], now=at(11), error="boom")
    again = await store.claim(now=at(40), limit=10, lease=30, group_limit=10)  # the crashed worker's lease ran out
    assert [(d.id, d.attempts) for d in again] == [(ids[0], 2)]
    await store.reschedule(ids[0], now=at(41), next_attempt_at=at(500), error="503")
    assert await store.retry_deliveries([ids[2]], now=at(42)) == 1
    # the revived job is due; its pending mate (in backoff) goes with it
    got = await store.claim(now=at(42), limit=10, lease=30, group_limit=10)
    assert [d.id for d in got] == [ids[2], ids[0]]


async def test_reschedule_not_claimable_before_next_attempt(store: Store) -> None:
    did = (await accept(store, ev(), plan_to("a"))).deliveries[0]
    await store.claim(now=at(1), limit=1, lease=60)
    await store.reschedule(did, now=at(2), next_attempt_at=at(60), error="timeout")
    job = await store.get_delivery(did)
    assert job is not None
    assert (job.state, job.next_attempt_at, job.last_error, job.attempts) == ("pending", at(60), "timeout", 1)
    assert await store.claim(now=at(59.999), limit=1, lease=60) == []
    assert [d.id for d in await store.claim(now=at(60), limit=1, lease=60)] == [did]
    await store.reschedule("dlv_nope", now=at(61), next_attempt_at=at(99), error="x")  # ignored


async def test_lease_expiry_makes_job_due_again(store: Store) -> None:
    did = (await accept(store, ev(), plan_to("a"))).deliveries[0]
    assert len(await store.claim(now=at(0), limit=5, lease=30)) == 1
    assert await store.claim(now=at(29.9), limit=5, lease=30) == []
    again = await store.claim(now=at(30), limit=5, lease=30)
    assert [(d.id, d.state, d.attempts, d.updated_at) for d in again] == [(did, "inflight", 2, at(30))]
    assert await store.claim(now=at(31), limit=5, lease=30) == []


async def test_bury_marks_dead_and_unblocks_next(store: Store) -> None:
    first = (await accept(store, ev(t=0), plan_to("a"))).deliveries[0]
    second = (await accept(store, ev(t=1, status="RUNNING"), plan_to("a"))).deliveries[0]
    await store.claim(now=at(2), limit=5, lease=30)
    await store.bury(first, now=at(3), error="invalid_auth")
    job = await store.get_delivery(first)
    assert job is not None
    assert (job.state, job.last_error, job.updated_at) == ("dead", "invalid_auth", at(3))
    assert [d.id for d in await store.claim(now=at(100), limit=5, lease=30)] == [second]
    await store.bury(second, now=at(101), error="x")
    assert await store.claim(now=at(1000), limit=5, lease=30) == []  # dead is never claimed
    await store.bury(second, now=at(1002), error="again")  # no-op once finished
    await store.complete(second, now=at(1002))
    job = await store.get_delivery(second)
    assert job is not None and (job.state, job.last_error, job.updated_at) == ("dead", "x", at(101))


async def test_bury_receiver(store: Store) -> None:
    plan = plan_to("a", "b")
    a1, _ = (await accept(store, ev("n1", t=0), plan)).deliveries
    a2, _ = (await accept(store, ev("n2", t=1), plan)).deliveries
    a3, _ = (await accept(store, ev("n2", "RUNNING", t=2), plan)).deliveries
    await store.claim(now=at(3), limit=10, lease=30)  # a1, b1, a2, b2 in flight
    await store.complete(a1, now=at(4))
    assert await store.bury_receiver("a", now=at(5), error="receiver removed") == 2
    for did in (a2, a3):
        job = await store.get_delivery(did)
        assert job is not None and (job.state, job.last_error) == ("dead", "receiver removed")
    done = await store.get_delivery(a1)
    assert done is not None and done.state == "done"
    assert {d.state for d in await store.list_deliveries() if d.receiver == "b"} == {"inflight", "pending"}
    assert await store.bury_receiver("a", now=at(6), error="again") == 0
    assert await store.claim(now=at(100), limit=10, lease=30, receivers=["a"]) == []


async def _two_dead_one_inflight(store: Store) -> tuple[str, str, str]:
    """Three jobs claimed; the first two then went dead (errors "x" and "y"), the third is in flight."""
    d1 = (await accept(store, ev("n1"), plan_to("a"))).deliveries[0]
    d2 = (await accept(store, ev("n2"), plan_to("a"))).deliveries[0]
    d3 = (await accept(store, ev("n3"), plan_to("a"))).deliveries[0]
    await store.claim(now=at(1), limit=10, lease=30)
    await store.bury(d1, now=at(2), error="x")
    await store.bury(d2, now=at(2), error="y")
    return d1, d2, d3


async def test_retry_all_dead(store: Store) -> None:
    d1, d2, d3 = await _two_dead_one_inflight(store)
    await store.complete(d3, now=at(2))
    assert await store.retry_deliveries(None, now=at(10)) == 2
    for did in (d1, d2):
        job = await store.get_delivery(did)
        assert job is not None
        assert (job.state, job.attempts, job.next_attempt_at, job.updated_at) == ("pending", 0, at(10), at(10))
    assert {d.id for d in await store.claim(now=at(10), limit=10, lease=30)} == {d1, d2}
    assert await store.retry_deliveries(None, now=at(11)) == 0


async def test_retry_by_ids(store: Store) -> None:
    d1, d2, d3 = await _two_dead_one_inflight(store)
    await store.reschedule(d3, now=at(2), next_attempt_at=at(500), error="z")
    assert await store.retry_deliveries([d1, "dlv_unknown"], now=at(3)) == 1
    j1, j2 = await store.get_delivery(d1), await store.get_delivery(d2)
    assert j1 is not None and j1.state == "pending"
    assert j2 is not None and j2.state == "dead"
    assert await store.retry_deliveries([d3], now=at(4)) == 1  # pending: due now
    assert {d.id for d in await store.claim(now=at(4), limit=10, lease=30)} == {d1, d3}
    assert await store.retry_deliveries([d1], now=at(5)) == 0  # inflight: untouched
    assert await store.retry_deliveries([], now=at(5)) == 0


async def test_purge_dead(store: Store) -> None:
    d1 = (await accept(store, ev("n1"), plan_to("a"))).deliveries[0]
    d2 = (await accept(store, ev("n2"), plan_to("a"))).deliveries[0]
    d3 = (await accept(store, ev("n3"), plan_to("a"))).deliveries[0]
    await store.bury(d1, now=at(1), error="x")
    await store.bury(d2, now=at(1), error="x")
    assert await store.purge_dead() == 2
    assert await store.get_delivery(d1) is None
    assert await store.get_delivery(d2) is None
    assert await store.get_delivery(d3) is not None
    assert await store.purge_dead() == 0
    assert (await store.stats(now=at(1))).dead == 0


async def test_list_deliveries(store: Store) -> None:
    ids = []
    for i in range(5):
        ids += (await accept(store, ev(f"n{i}", t=i), plan_to("a", "b"), now=at(10 - i))).deliveries
    await store.bury(ids[0], now=at(20), error="x")
    everything = await store.list_deliveries()
    assert len(everything) == 10
    keys = [(d.created_at, d.id) for d in everything]
    assert keys == sorted(keys)  # oldest created first
    assert [d.id for d in await store.list_deliveries(state="dead")] == [ids[0]]
    pending = await store.list_deliveries(state="pending", limit=3)
    assert len(pending) == 3 and all(d.state == "pending" for d in pending)
    assert [d.id for d in pending] == [d.id for d in everything if d.state == "pending"][:3]
    assert await store.list_deliveries(state="done") == []


async def test_stats(store: Store) -> None:
    empty = await store.stats(now=T0)
    assert (empty.pending, empty.inflight, empty.dead, empty.done, empty.oldest_pending_age) == (0, 0, 0, 0, 0.0)
    d = [(await accept(store, ev(f"n{i}", t=i), plan_to("a"))).deliveries[0] for i in range(5)]
    await store.claim(now=at(10), limit=2, lease=60)  # d0, d1
    await store.complete(d[0], now=at(11))
    await store.bury(d[2], now=at(11), error="x")
    s = await store.stats(now=at(100))
    assert (s.pending, s.inflight, s.dead, s.done) == (2, 1, 1, 1)
    assert s.oldest_pending_age == 99.0  # d1 (in flight) was created at t=1
    await store.complete(d[1], now=at(101))
    assert (await store.stats(now=at(100))).oldest_pending_age == 97.0


async def test_prune(store: Store) -> None:
    retention = RetentionConfig(done=100, dead=200, events=1000)
    e_done, e_dead, e_pending = ev("n1", t=0), ev("n2", t=0), ev("n3", t=0)
    done = (await accept(store, e_done, plan_to("a"), ttl=60)).deliveries[0]
    dead = (await accept(store, e_dead, plan_to("a"), ttl=60)).deliveries[0]
    pending = (await accept(store, e_pending, plan_to("a"), ttl=600)).deliveries[0]
    await store.complete(done, now=at(10))
    await store.bury(dead, now=at(10), error="x")

    assert await store.prune(now=at(30), retention=retention) == 0
    assert await store.prune(now=at(60), retention=retention) == 2  # two dedup records expired
    assert await store.prune(now=at(110), retention=retention) == 1  # the done job
    assert await store.get_delivery(done) is None
    assert await store.get_delivery(dead) is not None
    assert await store.prune(now=at(210), retention=retention) == 1  # the dead job
    assert await store.get_delivery(dead) is None
    assert await store.prune(now=at(999), retention=retention) == 1  # the third dedup record
    assert await store.prune(now=at(1000), retention=retention) == 3  # the three events
    assert await store.prune(now=at(5000), retention=retention) == 0
    job = await store.get_delivery(pending)
    assert job is not None and job.state == "pending"
    s = await store.stats(now=at(5000))
    assert (s.pending, s.done, s.dead) == (1, 0, 0)
    # dedup record gone: the same event is accepted again
    assert (await accept(store, e_done, plan_to("a"), now=at(5000))).status == "accepted"


async def test_expired_dedup_record_accepts_again_even_before_prune(store: Store) -> None:
    e = ev()
    assert (await accept(store, e, plan_to("a"), ttl=60)).status == "accepted"
    assert (await accept(store, e, plan_to("a"), now=at(59.999), ttl=60)).status == "duplicate"
    # the expiry counts from the later of now and the event's timestamp
    future = ev(node="n9", t=100)
    assert (await accept(store, future, plan_to("a"), now=at(0), ttl=60)).status == "accepted"
    assert (await accept(store, future, plan_to("a"), now=at(159), ttl=60)).status == "duplicate"
    assert (await accept(store, future, plan_to("a"), now=at(160), ttl=60)).status == "accepted"


async def test_prune_drops_node_records_past_the_events_retention(store: Store) -> None:
    retention = RetentionConfig(done=100, dead=100, events=1000)
    nodes = [f"node-{i}" for i in range(10_000)]
    results = await asyncio.gather(*(accept(store, ev(n, t=0, status="RUNNING"), plan_to()) for n in nodes))
    assert {r.status for r in results} == {"accepted"}
    await accept(store, ev("fresh", t=500, status="RUNNING"), plan_to())
    # An open incident is an open alert: its node is kept however long it stays FAILED.
    await accept(store, ev("down", t=0, status="FAILED"), plan_to("a"))
    await store.prune(now=at(999), retention=retention)
    assert await store.node_state("node-0") is not None  # not yet past the retention
    await store.prune(now=at(1000), retention=retention)
    for n in ("node-0", "node-5000", "node-9999"):
        assert await store.node_state(n) is None
    assert await store.node_state("fresh") is not None
    await store.prune(now=at(10_000), retention=retention)
    down = await store.node_state("down")
    assert down is not None and down.status == "FAILED"
    resolved = await accept(store, ev("down", t=10_001, status="RUNNING"), plan_to("a"))
    assert resolved.previous == down and len(resolved.deliveries) == 1  # the resolution goes out
    # a pruned node starts over: its next event has no previous state
    again = await accept(store, ev("node-1", t=1001), plan_to("a"))
    assert (again.status, again.previous) == ("accepted", None)


async def test_forget_node_resets_state_and_repeat_times(store: Store) -> None:
    plan = plan_to("a", repeat=3600)
    first = await accept(store, ev("n1", t=0), plan)
    await accept(store, ev("n2", t=0), plan)
    assert len(first.deliveries) == 1
    assert (await accept(store, ev("n1", t=10), plan)).deliveries == ()  # inside the repeat interval
    assert await store.forget_node("n1") is True
    assert await store.node_state("n1") is None
    assert await store.forget_node("n1") is False
    assert await store.forget_node("never-seen") is False
    # repeat times went with the record; the events and their dedup records stay
    r = await accept(store, ev("n1", t=20), plan)
    assert (r.status, r.previous, len(r.deliveries)) == ("accepted", None, 1)
    assert (await accept(store, ev("n1", t=10), plan)).status == "duplicate"
    assert (await accept(store, ev("n1", t=5), plan)).status == "out_of_order"  # older than t=20
    assert await store.node_state("n2") is not None  # other nodes untouched
    assert (await store.stats(now=at(20))).pending == 3


# --- silences and meta ----------------------------------------------------------------------------


async def test_silences(store: Store) -> None:
    s1 = Silence("s1", "db-*", ("FAILED",), at(0), at(100), "maintenance", at(-5))
    s2 = Silence("s2", "*", None, at(-50), at(50))
    s3 = Silence("s3", "web", None, at(-100), at(-10))
    for s in (s1, s2, s3):
        await store.add_silence(s)
    assert await store.list_silences(now=at(0)) == [s2, s1]
    assert await store.list_silences(now=at(0), include_expired=True) == [s3, s2, s1]
    assert await store.expire_silence("s1", now=at(20)) is True
    assert await store.list_silences(now=at(20)) == [s2]
    expired = [s for s in await store.list_silences(now=at(20), include_expired=True) if s.id == "s1"]
    assert expired == [Silence("s1", "db-*", ("FAILED",), at(0), at(20), "maintenance", at(-5))]
    assert await store.expire_silence("s1", now=at(30)) is False
    assert await store.expire_silence("s3", now=at(30)) is False
    assert await store.expire_silence("nope", now=at(30)) is False
    await store.add_silence(Silence("s2", "*", None, at(-50), at(500), "extended"))
    assert [s.comment for s in await store.list_silences(now=at(100))] == ["extended"]


async def test_meta(store: Store) -> None:
    assert await store.get_meta("schema") is None
    await store.set_meta("schema", "1")
    await store.set_meta("other", "x")
    assert await store.get_meta("schema") == "1"
    await store.set_meta("schema", "2")
    assert await store.get_meta("schema") == "2"
    await store.ping()


# --- the conversation log --------------------------------------------------------------------------


async def test_conversation_log_records_per_receiver_and_key(store: Store) -> None:
    root = {"channel": "C0123", "ts": "1712.000100"}
    assert await store.get_conversation("slack", "inc_1", now=at(0)) is None
    await store.record_conversation("slack", "inc_1", root, now=at(0), ttl=100)
    assert await store.get_conversation("slack", "inc_1", now=at(99)) == root
    # another receiver, another incident: their own records
    assert await store.get_conversation("slack2", "inc_1", now=at(1)) is None
    assert await store.get_conversation("slack", "inc_2", now=at(1)) is None
    # recording again replaces the reference and its expiry
    moved = {"channel": "C0123", "ts": "1712.000200"}
    await store.record_conversation("slack", "inc_1", moved, now=at(50), ttl=100)
    assert await store.get_conversation("slack", "inc_1", now=at(149)) == moved
    # expired: gone before any prune
    assert await store.get_conversation("slack", "inc_1", now=at(150)) is None


async def test_conversation_log_keys_are_unambiguous(store: Store) -> None:
    """Names may hold any separator: ('a:1', 'x') and ('a', '1:x') are two records."""
    await store.record_conversation("a:1", "x", {"n": "1"}, now=at(0), ttl=100)
    await store.record_conversation("a", "1:x", {"n": "2"}, now=at(0), ttl=100)
    await store.record_conversation("a|1", "x", {"n": "3"}, now=at(0), ttl=100)
    assert await store.get_conversation("a:1", "x", now=at(1)) == {"n": "1"}
    assert await store.get_conversation("a", "1:x", now=at(1)) == {"n": "2"}
    assert await store.get_conversation("a|1", "x", now=at(1)) == {"n": "3"}


async def test_conversation_log_one_root_for_several_incidents(store: Store) -> None:
    """A digest: one message shared by several incidents, recorded once per member."""
    root = {"channel": "C0123", "ts": "1712.000300"}
    for key in ("inc_a", "inc_b", "inc_c"):
        await store.record_conversation("slack", key, root, now=at(0), ttl=100)
    edited = {"channel": "C0123", "ts": "1712.000300", "resolved": "1"}
    await store.record_conversation("slack", "inc_b", edited, now=at(10), ttl=100)
    assert await store.get_conversation("slack", "inc_a", now=at(20)) == root
    assert await store.get_conversation("slack", "inc_b", now=at(20)) == edited


async def test_prune_drops_expired_conversations_uncounted(store: Store, new_store: StoreFactory) -> None:
    retention = RetentionConfig(done=100, dead=100, events=1000)
    hostile = {"channel": "C1", "ts": "1.2", "note": "<!channel> & \r\n \"q\" ☃"}
    await store.record_conversation("slack", "short", hostile, now=at(0), ttl=10)
    await store.record_conversation("slack", "long", {"channel": "C1", "ts": "1.3"}, now=at(0), ttl=1000)
    assert await store.get_conversation("slack", "short", now=at(9)) == hostile
    assert await store.prune(now=at(10), retention=retention) == 0
    # pruned past its expiry: gone even when asked about an earlier instant
    assert await store.get_conversation("slack", "short", now=at(5)) is None
    assert await store.get_conversation("slack", "long", now=at(5)) == {"channel": "C1", "ts": "1.3"}
    if store.durable:  # what one process recorded, the next one opening the same storage reads
        await store.record_conversation("slack", "again", hostile, now=at(5), ttl=10)
        await store.close()
        other = await new_store()
        assert await other.get_conversation("slack", "long", now=at(5)) == {"channel": "C1", "ts": "1.3"}
        assert await other.get_conversation("slack", "again", now=at(6)) == hostile


# --- the reference: same workload, same answers as MemoryStore -----------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_matches_memory_store(store: Store, seed: int) -> None:
    ref = MemoryStore()
    rng = random.Random(seed)
    nodes = ["n1", "n2", "n3"]
    statuses = ["FAILED", "RUNNING", "PAUSED"]
    receivers = ["a", "b", "c"]
    clock = 0.0
    known: list[str] = []
    newest = dict.fromkeys(nodes, 0.0)

    def random_plan() -> Plan:
        matches = [
            RouteMatch(f"r{i}", tuple(rng.sample(receivers, rng.randint(1, 3))), rng.choice([0.0, 0.0, 30.0]))
            for i in range(rng.randint(0, 3))
        ]
        return lambda prev: matches

    async def both(name: str, *args: Any, **kw: Any) -> Any:
        got = await getattr(store, name)(*args, **kw)
        want = await getattr(ref, name)(*args, **kw)
        assert got == want, f"{name}{args}{kw} (seed {seed})"
        return got

    for step in range(300):
        clock += rng.choice([0.0, 0.5, 1.0, 7.0])
        now = at(clock)
        op = rng.choices(["accept", "claim", "finish", "retry", "misc", "prune"], weights=[10, 6, 6, 1, 2, 1])[0]
        if op == "accept":
            # Each request reads the clock after the last one did (ties in event time, two statuses at one
            # instant, are broken by arrival: created_at). Other operations may share an instant.
            clock += 0.125  # exact in binary: stored float seconds compare equal
            now = at(clock)
            node = rng.choice(nodes)
            if rng.random() < 0.15:
                t = newest[node] - rng.choice([1.0, 2.0])  # out of order
            elif rng.random() < 0.1:
                t = newest[node]  # a repeat of the newest
            else:
                t = clock + rng.choice([-1.0, 0.0, 0.25])
            newest[node] = max(newest[node], t)
            event = Event("NODE_STATUS_UPDATED", at(t), node, rng.choice(statuses), {"step": step}, {}, received_at=now)
            mode = rng.choices(["notify", "stale", "silenced"], weights=[8, 1, 1])[0]
            ttl = rng.choice([5.0, 60.0])
            a = await both("accept", event, decide_with(event, random_plan(), now, mode), now=now, dedup_ttl=ttl)
            known += a.deliveries
        elif op == "claim":
            only = rng.choice([None, None, ["a"], ["b", "c"]])
            claimed = await both(
                "claim", now=now, limit=rng.randint(1, 4), lease=rng.choice([3.0, 20.0]), receivers=only
            )
            known += [d.id for d in claimed]
        elif op == "finish" and known:
            did = rng.choice(known)
            how = rng.choice(["complete", "complete_many", "reschedule", "bury"])
            if how == "complete":
                await both("complete", did, now=now)
            elif how == "complete_many":  # SQLite's both paths; repeats, finished and in-flight ids mixed
                await both("complete_many", [did, *(rng.choice(known) for _ in range(rng.randint(0, 5)))], now=now)
            elif how == "bury":
                await both("bury", did, now=now, error=f"e{step}")
            else:
                nxt = now + timedelta(seconds=rng.choice([0.0, 2.0, 15.0]))
                await both("reschedule", did, now=now, next_attempt_at=nxt, error=f"e{step}")
        elif op == "retry":
            ids: Sequence[str] | None = None if rng.random() < 0.5 or len(known) < 2 else rng.sample(known, 2)
            await both("retry_deliveries", ids, now=now)
        elif op == "misc":
            which = rng.choice(["bury_receiver", "purge_dead", "list", "get", "node"])
            if which == "bury_receiver":
                await both("bury_receiver", rng.choice(receivers), now=now, error="removed")
            elif which == "purge_dead":
                await both("purge_dead")
            elif which == "list":
                await both(
                    "list_deliveries",
                    state=rng.choice([None, "pending", "inflight", "dead", "done"]),
                    limit=rng.choice([3, 100]),
                )
            elif which == "get" and known:
                await both("get_delivery", rng.choice(known))
            else:
                await both("node_state", rng.choice(nodes))
        elif op == "prune":
            await both("prune", now=now, retention=RetentionConfig(done=10, dead=30, events=60))
        await both("stats", now=now)
    await both("list_deliveries", limit=10_000)


# --- Redis: replicas sharing one server, and an outage ------------------------------------------


@pytest.fixture
async def redis_pair(redis_server: RedisServer) -> AsyncIterator[tuple[Store, Store]]:  # noqa: F811
    from bridge.store.redis import RedisStore

    prefix = f"p{uuid.uuid4().hex[:10]}:"
    one, two = RedisStore(redis_server.url, prefix=prefix), RedisStore(redis_server.url, prefix=prefix)
    await one.open()
    await two.open()
    yield one, two
    await one.close()
    await two.close()


@pytest.mark.parametrize("seed", [4, 5])
async def test_redis_matches_memory_store_in_small_batches(
    redis_pair: tuple[Store, Store], monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """Prune, purge, retry, bury_receiver and claim promotion work in batches; force many."""
    from bridge.store.redis import store as redis_store

    monkeypatch.setattr(redis_store, "_BATCH", 2)
    await test_matches_memory_store(redis_pair[0], seed)


async def test_redis_replicas_accept_each_event_once(redis_pair: tuple[Store, Store]) -> None:
    one, two = redis_pair
    events = [ev(f"n{i}", t=i % 7) for i in range(100)]
    calls = [accept(s, e, plan_to("a", "b"), now=at(10)) for e in events for s in (one, two, one)]
    results = await asyncio.gather(*calls)
    accepted = Counter(r.event_id for r in results if r.status == "accepted")
    assert accepted == Counter({e.id: 1 for e in events})
    assert Counter(r.status for r in results) == {"accepted": 100, "duplicate": 200}
    assert (await two.stats(now=at(10))).pending == 200
    # jobs created through one replica are visible through the other
    did = delivery_id(events[0].id, "a")
    assert await one.get_delivery(did) == await two.get_delivery(did) is not None


async def test_redis_replicas_contend_on_one_node(redis_pair: tuple[Store, Store]) -> None:
    one, two = redis_pair
    events = [ev("n1", "FAILED" if i % 3 else "RUNNING", t=i) for i in range(40)]
    calls = [accept(s, e, plan_to("a"), now=at(50)) for e in events for s in (two, one)]
    results = await asyncio.gather(*calls)
    first = Counter(r.event_id for r in results if r.status != "duplicate")
    assert first == Counter({e.id: 1 for e in events})  # accepted or out_of_order, once each
    assert {r.status for r in results} <= {"accepted", "out_of_order", "duplicate"}
    state = await one.node_state("n1")
    assert state is not None and state.last_timestamp == at(39)
    assert (await one.stats(now=at(50))).pending == sum(len(r.deliveries) for r in results)


async def test_redis_replicas_batches_conflict_and_retry(redis_pair: tuple[Store, Store]) -> None:
    # Each replica commits its concurrent accepts as one batch, planned on the same node state:
    # the second batch's items conflict, retry and end up duplicates; a replica's own batch also
    # holds each event twice. Every event is answered first exactly once, and the accepted ones
    # chain: each one's previous state is the one accepted just before it.
    one, two = redis_pair
    events = [ev("n1", "FAILED" if i % 4 else "RUNNING", t=i) for i in range(30)]
    events += [ev(f"x{i}", t=i) for i in range(10)]
    calls = [accept(s, e, plan_to("a", "b"), now=at(50)) for e in events for s in (one, two, one)]
    results = await asyncio.gather(*calls)
    first = Counter(r.event_id for r in results if r.status != "duplicate")
    assert first == Counter({e.id: 1 for e in events})
    assert {r.status for r in results} <= {"accepted", "out_of_order", "duplicate"}
    by_id = {e.id: e for e in events}
    chain = sorted(
        (r for r in results if r.status == "accepted" and by_id[r.event_id].node_id == "n1"),
        key=lambda r: by_id[r.event_id].timestamp,
    )
    assert chain[0].previous is None  # nothing wrote n1's state before the first accepted event
    for before, r in itertools.pairwise(chain):
        assert r.previous is not None and r.previous.last_event_id == before.event_id
    state = await two.node_state("n1")
    assert state is not None and state.last_event_id == chain[-1].event_id == events[29].id
    assert (await one.stats(now=at(50))).pending == sum(len(r.deliveries) for r in results)


async def test_redis_batch_replans_after_another_replica_took_its_event(redis_pair: tuple[Store, Store]) -> None:
    # Replica one's batch holds A then B of one node; replica two commits A first, at another
    # time. B was planned on one's own commit of A (A's reminder due at 100 + 30), so it must be
    # planned again on what two committed (due at 50 + 30). (Before issue 13 this checked the old
    # repeat_interval suppression; the reminder's due time carries the same dependency now.)
    one, two = redis_pair
    for i in range(5):  # the commits' order is up to the event loop: try a few times
        node = f"n{i}"
        a, b = ev(node, "FAILED", t=0), ev(node, "FAILED", t=1)
        plan = plan_to("x", route="r", repeat=30)
        two_a, one_a, one_b = await asyncio.gather(
            accept(two, a, plan, now=at(50)), accept(one, a, plan, now=at(100)), accept(one, b, plan, now=at(100))
        )
        assert {two_a.status, one_a.status} == {"accepted", "duplicate"}
        assert one_b.status == "accepted" and one_b.deliveries == ()
        assert one_b.next_due == (at(80) if two_a.status == "accepted" else at(130))
        assert await one.due_nodes(now=at(80), limit=10) == ([node] if two_a.status == "accepted" else [])
        await one.forget_node(node)


async def test_redis_commits_concurrent_accepts_in_one_round_trip(redis_pair: tuple[Store, Store]) -> None:
    from bridge.store.redis import RedisStore

    one, _ = redis_pair
    assert isinstance(one, RedisStore)
    await accept(one, ev("warm", t=0), plan_to("a"))  # scripts loaded
    client = one._client()

    async def script_calls() -> int:
        stats = await client.info("commandstats")
        return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))

    before = await script_calls()
    results = await asyncio.gather(*(accept(one, ev(f"n{i % 10}", t=i), plan_to("a")) for i in range(200)))
    assert [r.status for r in results] == ["accepted"] * 200
    assert await script_calls() - before == 2  # one read, one commit
    for i in range(10, 200):
        prev = results[i].previous
        assert prev is not None and prev.last_event_id == ev(f"n{i % 10}", t=i - 10).id


async def test_redis_replicas_never_claim_the_same_job(redis_pair: tuple[Store, Store]) -> None:
    one, two = redis_pair
    for i in range(120):
        await accept(one, ev(f"n{i}", t=0), plan_to("a"))
    claimed: list[str] = []
    for _ in range(20):
        batches = await asyncio.gather(*(s.claim(now=at(1), limit=3, lease=300) for s in (one, two, one, two)))
        claimed += [d.id for batch in batches for d in batch]
    assert len(claimed) == len(set(claimed)) == 120
    s = await one.stats(now=at(1))
    assert (s.pending, s.inflight) == (0, 120)


async def test_redis_replicas_never_split_a_group(redis_pair: tuple[Store, Store]) -> None:
    one, two = redis_pair
    policy = grouped("a")
    for i in range(40):
        await accept_in(one if i % 2 else two, ev(f"n{i}", t=i * 0.01), policy)
    batches = await asyncio.gather(*(s.claim(now=at(11), limit=1, lease=300, group_limit=100)
                                     for s in (one, two, one, two)))
    sizes = sorted(len(b) for b in batches)
    assert sizes == [0, 0, 0, 40]


async def test_redis_prune_keeps_redis_bounded(redis_pair: tuple[Store, Store]) -> None:
    from bridge.store.redis import RedisStore

    one, two = redis_pair
    assert isinstance(one, RedisStore)
    for i in range(60):  # every event a status change, so every one notifies (issue 13)
        await accept(one, ev(f"n{i % 6}", "FAILED" if (i // 6) % 2 == 0 else "RUNNING", t=i), plan_to("a", "b"),
                     ttl=60)
    while claimed := await two.claim(now=at(100), limit=50, lease=30):
        for d in claimed:
            if d.receiver == "a":
                await two.complete(d.id, now=at(100))
            else:
                await two.bury(d.id, now=at(100), error="x")
    await two.record_conversation("a", "inc_1", {"channel": "C1", "ts": "1.1"}, now=at(0), ttl=10)
    removed = await one.prune(now=at(10**6), retention=RetentionConfig(done=10, dead=10, events=10))
    assert removed == 60 + 120 + 60  # dedup records, jobs, events (conversations uncounted)
    client = one._client()
    left = sorted([k async for k in client.scan_iter(match=f"{one.prefix}*")])
    # node records go too once their newest event is past the events' retention (issue 11)
    assert [k[len(one.prefix) :] for k in left] == ["meta", "ping", "version"], left


async def test_redis_outage_raises_storage_unavailable_then_recovers(
    redis_outage_server: RedisServer,  # noqa: F811
) -> None:
    from bridge.store.redis import RedisStore

    store = RedisStore(redis_outage_server.url, prefix="outage:")
    await store.open()
    try:
        assert (await accept(store, ev(t=0), plan_to("a"))).status == "accepted"
        redis_outage_server.stop()
        for call in (
            lambda: accept(store, ev(t=1), plan_to("a")),
            lambda: store.claim(now=at(2), limit=5, lease=30),
            lambda: store.stats(now=at(2)),
            lambda: store.ping(),
        ):
            started = time.monotonic()
            with pytest.raises(StorageUnavailable):
                await call()
            assert time.monotonic() - started < 5
        redis_outage_server.start()
        # same store object, same port: it reconnects by itself (the restarted server is empty)
        assert (await accept(store, ev(t=1), plan_to("a"))).status == "accepted"
        assert [d.receiver for d in await store.claim(now=at(2), limit=5, lease=30)] == ["a"]
        await store.ping()
    finally:
        await store.close()


# --- SQLite: files written before node records were one JSON blob -----------------------------------


async def test_sqlite_migrates_old_node_rows(tmp_path: Path) -> None:
    import sqlite3

    from bridge.store.sqlite import SQLiteStore

    path = tmp_path / "old.db"
    e = ev("n1", t=10)
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE nodes (node_id TEXT PRIMARY KEY, status TEXT NOT NULL, since REAL NOT NULL, "
        "last_ts REAL NOT NULL, last_event_id TEXT NOT NULL);"
        "CREATE TABLE fired (route TEXT NOT NULL, node_id TEXT NOT NULL, status TEXT NOT NULL, at REAL NOT NULL, "
        "PRIMARY KEY (route, node_id, status));"
    )
    conn.execute("INSERT INTO nodes VALUES ('n1', 'FAILED', ?, ?, ?)", (at(0).timestamp(), at(10).timestamp(), e.id))
    conn.execute("INSERT INTO fired VALUES ('r', 'n1', 'FAILED', ?)", (at(10).timestamp(),))
    conn.commit()
    conn.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        assert await store.node_state("n1") == NodeState("n1", "FAILED", at(0), at(10), e.id)
        assert (await accept(store, ev("n1", t=5), plan_to("a"))).status == "out_of_order"
        # the old repeat times are dropped (issue 13: repeat_interval reminds now); a node with no
        # incident state in FAILED opens an incident on its next FAILED
        r = await accept(store, ev("n1", t=20), plan_to("a", repeat=60))
        assert (r.status, len(r.deliveries)) == ("accepted", 1)
    finally:
        await store.close()


async def test_sqlite_jobs_written_before_digests_gain_their_group_column(tmp_path: Path) -> None:
    import sqlite3

    from bridge.store.sqlite import SQLiteStore

    path = tmp_path / "old.db"
    store = SQLiteStore(path)
    await store.open()
    old = (await accept(store, ev("n0", t=0), plan_to("a"))).deliveries[0]
    await store.close()
    conn = sqlite3.connect(path)  # the jobs table as it was before fleet digests: no grp column
    conn.executescript("DROP INDEX jobs_group; ALTER TABLE jobs DROP COLUMN grp;")
    conn.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        ids = [(await accept_in(store, ev(f"n{i}", t=i), grouped("a"))).deliveries[0] for i in (1, 2)]
        got = await store.claim(now=at(11), limit=10, lease=60, group_limit=10)
        assert [d.id for d in got] == [old, *ids]  # the old job alone, then the group together
    finally:
        await store.close()


async def _two_incidents_one_resolved(store: Store) -> None:
    policy = with_incidents(plan_to("a", route="r"), RoutePolicy("r", ("a",)))
    for node, status, t in (("n1", "FAILED", 0), ("n2", "FAILED", 1), ("n2", "RUNNING", 2)):
        e = ev(node, status, t=t)
        await store.accept(e, decider(e, policy, at(t)), now=at(t), dedup_ttl=TTL)
    assert (await store.stats(now=at(3))).incidents_open == 1


async def test_sqlite_nodes_written_before_the_open_incident_index_gain_it(tmp_path: Path) -> None:
    import sqlite3

    from bridge.store.sqlite import SQLiteStore

    path = tmp_path / "old.db"
    store = SQLiteStore(path)
    await store.open()
    await _two_incidents_one_resolved(store)
    await store.close()
    conn = sqlite3.connect(path)  # the nodes table as it was before the index: no incident_open column
    conn.executescript("DROP INDEX nodes_open; ALTER TABLE nodes DROP COLUMN incident_open;")
    conn.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        assert (await store.stats(now=at(3))).incidents_open == 1  # filled from the records once
    finally:
        await store.close()


async def test_sqlite_two_column_job_key_index_is_made_again_in_head_order(tmp_path: Path) -> None:
    """A file from before jobs_key held (seq, created_at, id): opened, its index is rebuilt, finding
    a key's next head sorts nothing, and a key's jobs still go out in order."""
    import sqlite3

    from bridge.store.sqlite import SQLiteStore

    path = tmp_path / "old.db"
    store = SQLiteStore(path)
    await store.open()
    first = (await accept(store, ev("n1", t=0), plan_to("a"))).deliveries[0]
    second = (await accept(store, ev("n1", t=1, status="RUNNING"), plan_to("a"))).deliveries[0]
    await store.close()
    conn = sqlite3.connect(path)
    conn.executescript("DROP INDEX jobs_key; CREATE INDEX jobs_key ON jobs(order_key, seq) "
                       "WHERE state IN ('pending', 'inflight');")
    conn.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        assert [d.id for d in await store.claim(now=at(5), limit=10, lease=60)] == [first]
        await store.complete(first, now=at(6))
        assert [d.id for d in await store.claim(now=at(6), limit=10, lease=60)] == [second]
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    try:
        assert [r[2] for r in conn.execute("PRAGMA index_info(jobs_key)")] == ["order_key", "seq", "created_at", "id"]
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM jobs WHERE order_key = ? AND state IN ('pending', 'inflight') "
            "ORDER BY seq, created_at, id LIMIT 1", ("a|n1",)).fetchall()
        assert "TEMP B-TREE" not in str(plan) and "jobs_key" in str(plan)
    finally:
        conn.close()


async def test_redis_keys_of_layout_2_gain_the_open_incident_index(redis_pair: tuple[Store, Store]) -> None:
    from bridge.store.redis import RedisStore

    one, _ = redis_pair
    assert isinstance(one, RedisStore)
    await _two_incidents_one_resolved(one)
    client = one._client()
    await client.delete(f"{one.prefix}open")  # what layout 2 had: no index
    await client.hset(f"{one.prefix}meta", "redis_layout", "2")
    store = RedisStore(one.url, prefix=one.prefix)
    await store.open()
    try:
        assert (await store.stats(now=at(3))).incidents_open == 1
    finally:
        await store.close()


async def test_redis_migrates_keys_of_the_earlier_layout(redis_pair: tuple[Store, Store]) -> None:
    from bridge.store.redis import RedisStore

    one, _ = redis_pair
    assert isinstance(one, RedisStore)
    did = (await accept(one, ev("n2", t=0), plan_to("a"))).deliveries[0]
    client = one._client()
    p = one.prefix
    # what the earlier layout wrote: terse job fields, node state as fields, repeat times apart
    readable = {"context": "ctx", "created_at": "created", "next_attempt_at": "next", "updated_at": "updated",
                "order_key": "ok", "receiver": "rcv", "event_ts": "ets", "member": "m"}
    job = await client.hgetall(f"{p}job:{did}")
    await client.delete(f"{p}job:{did}")
    await client.hset(f"{p}job:{did}", mapping={readable.get(k, k): v for k, v in job.items()})
    e = ev("n1", t=10)
    await client.hset(f"{p}node:n1", mapping={"status": "FAILED", "since": str(int(at(0).timestamp() * 1e6)),
                                              "last": str(int(at(10).timestamp() * 1e6)), "id": e.id, "v": "3"})
    await client.hset(f"{p}fired:n1", '["FAILED","r"]', repr(at(10).timestamp()))
    await client.hdel(f"{p}meta", "redis_layout")

    store = RedisStore(one.url, prefix=p)
    await store.open()
    try:
        assert await store.node_state("n1") == NodeState("n1", "FAILED", at(0), at(10), e.id)
        r = await accept(store, ev("n1", t=20), plan_to("a", repeat=60))
        assert (r.status, len(r.deliveries)) == ("accepted", 1)  # repeat times dropped (issue 13)
        assert (await accept(store, ev("n1", t=5), plan_to("a"))).status == "out_of_order"
        got = await store.get_delivery(did)
        assert got is not None and (got.receiver, got.state) == ("a", "pending")
        assert [d.id for d in await store.claim(now=at(30), limit=5, lease=30)] == [did, *r.deliveries]
        assert not [k async for k in client.scan_iter(match=f"{p}fired:*")]
    finally:
        await store.close()


async def test_sqlite_migrates_the_dedup_key_to_take_the_status(tmp_path: Path) -> None:
    """A file whose events were unique by (time, node): the index takes the status, the rows stay,
    and a stored event is still a duplicate while another status at its instant is accepted."""
    import sqlite3

    from bridge.store.sqlite import SQLiteStore

    path = tmp_path / "old.db"
    store = SQLiteStore(path)
    await store.open()
    try:
        assert (await accept(store, ev("n1", t=0), plan_to("a"), now=at(1))).status == "accepted"
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    conn.execute("DROP INDEX events_key")
    conn.execute("CREATE UNIQUE INDEX events_key ON events(ts_us, node_id)")  # as earlier versions made it
    conn.commit()
    conn.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        assert (await accept(store, ev("n1", t=0), plan_to("a"), now=at(2))).status == "duplicate"
        assert (await accept(store, ev("n1", "RUNNING", t=0), plan_to("a"), now=at(2))).status == "accepted"
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    try:
        columns = [r[2] for r in conn.execute("PRAGMA index_info(events_key)")]
        count = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    finally:
        conn.close()
    assert columns == ["ts_us", "node_id", "status"] and count == 2


async def test_sqlite_migrates_events_keyed_by_their_id(tmp_path: Path) -> None:
    """Files whose events were keyed by the hashed event id: the rows move to the (time, node) key,
    and an event stored before the upgrade is still a duplicate after it."""
    import json
    import sqlite3

    from bridge.store.base import compact_json
    from bridge.store.sqlite import SQLiteStore

    path = tmp_path / "old.db"
    stored = ev("n1", t=0.000123)  # microseconds the float column alone would not keep exactly
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE events (id TEXT PRIMARY KEY, node_id TEXT NOT NULL, status TEXT NOT NULL, "
        "event_type TEXT NOT NULL, ts REAL NOT NULL, received_at REAL NOT NULL, expires_at REAL NOT NULL, "
        "outcome TEXT NOT NULL, body TEXT NOT NULL, kept INTEGER NOT NULL DEFAULT 1);"
        "CREATE INDEX events_expiry ON events(expires_at) WHERE expires_at > 0;"
        "CREATE INDEX events_kept ON events(received_at) WHERE kept = 1;"
        "CREATE TABLE jobs (id TEXT PRIMARY KEY, order_key TEXT NOT NULL, receiver TEXT NOT NULL, seq REAL NOT NULL,"
        " state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL,"
        " next_attempt_at REAL NOT NULL, updated_at REAL NOT NULL, last_error TEXT,"
        " is_head INTEGER NOT NULL DEFAULT 0, due_at REAL NOT NULL, context TEXT NOT NULL);"
        "CREATE INDEX jobs_state ON jobs(state, updated_at);"
    )
    ts = stored.timestamp.timestamp()
    conn.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
                 (stored.id, "n1", "FAILED", stored.event_type, ts, ts, ts + TTL, "accepted",
                  compact_json(stored.to_dict())))
    conn.commit()
    conn.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        assert (await accept(store, ev("n1", t=0.000123), plan_to("a"), now=at(1))).status == "duplicate"
        assert (await accept(store, ev("n1", t=0.000124), plan_to("a"), now=at(1))).status == "accepted"
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT id, body FROM events ORDER BY ts_us").fetchall()
        indexes = {r[1] for r in conn.execute("PRAGMA index_list(jobs)")}
    finally:
        conn.close()
    assert rows[0][0] == stored.id and json.loads(rows[0][1])["eventTimestamp"] == stored.stamp
    assert len(rows) == 2 and "jobs_state" not in indexes and {"jobs_done", "jobs_dead"} <= indexes


def _context(details: str, extra: str = "") -> str:
    return ('{"event":{"id":"evt_1","eventType":"T","eventTimestamp":"2026-04-16T12:00:00.000000Z","nodeId":"n",'
            f'"status":"FAILED","details":{details},"labels":{{}},"receivedAt":"2026-04-16T12:00:00.000000Z"}},'
            f'"route":"r","receiver":"x","kind":"firing","incident":{{"id":"inc_1","opened_at":'
            f'"2026-04-16T12:00:00.000000Z","duration":12.5,"path":""}}{extra}}}')


@pytest.mark.parametrize("text", [
    _context('{"nodeId":"n","s":"\u00fc \u2603 \\"q\\""}'),  # text details: orjson's read stands
    _context('{"big":18446744073709551616,"neg":-99999999999999999999}'),  # past 64 bits: json reads them
    _context('{"nan":NaN,"inf":-Infinity}'),  # json's spelling of non-finite numbers
    _context('{"s":"\\ud800 lone"}'),  # a lone surrogate's escape
    _context('{"n":"x"}', ',"group":{"key":"g","interval":0,"labels":{"load":123456789012345678901234}}'),
    _context('{"n":"x"}', ',"digest":{"id":"g","update":false,"labels":{"k":123456789012345678901234},"members":[]}'),
])
def test_a_stored_context_reads_back_as_json_reads_it(text: str) -> None:
    expected, got = json.loads(text), read_context(text)
    assert repr(got) == repr(expected)  # same types too: a long integer stays an exact int


def test_own_json_writes_what_orjson_refuses_as_json_does() -> None:
    assert json.loads(own_json({"a": [1, 2.5, None], "b": "ü"})) == {"a": [1, 2.5, None], "b": "ü"}
    assert own_json({"s": "\ud800", "n": 2**70}) == compact_json({"s": "\ud800", "n": 2**70})
    with pytest.raises(TypeError):
        own_json({"at": T0})  # not written in orjson's own format: refused, as json refuses it
