"""Jobs claimed in the accept's own transaction (SQLite with a running dispatcher): a new job that
is its order key's head, due now and ungrouped, with a free send slot or a queue place a claim would
have given it (nothing older unclaimed), is committed in flight and sent without a claim round trip.
Everything else goes the claim's way, and a handed-off job keeps the claim's guarantees: order per
key, the lane's concurrency, a lease that a SIGKILL does not lose.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge import delivery
from bridge.decide import Policy, decide
from bridge.incident_state import Policy as IncidentPolicy
from bridge.incident_state import RoutePolicy
from bridge.model import Event, RouteMatch
from bridge.store.memory import MemoryStore
from bridge.store.sqlite import SQLiteStore
from bridge.testing import event_body
from tests.support.fakes import wait_until
from tests.support.harness import ProbeSink
from tests.support.rig import Rig, RigFactory, close_rig, hook, open_rig

pytest_plugins = ["tests.support.fakes"]
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def make_rig(tmp_path: Path) -> AsyncIterator[RigFactory]:
    rigs: list[Rig] = []
    async with aiohttp.ClientSession() as session:

        async def make(receivers: dict[str, Any], *, memory: bool = False, **options: Any) -> Rig:
            store = MemoryStore() if memory else SQLiteStore(tmp_path / f"bridge{len(rigs)}.db")
            # No polls: a claim that happens to share the accept's batch would look like a hand-off.
            rig = await open_rig(store, receivers, session, **{"poll": 60.0, **options})
            rigs.append(rig)
            return rig

        yield make
        for rig in reversed(rigs):
            await close_rig(rig)


async def start(rig: Rig) -> None:
    """Start the dispatcher and let its first claim (nothing due yet) pass."""
    rig.dispatcher.start()
    lanes = rig.dispatcher._lanes.values()
    await wait_until(lambda: not any(lane.backlog or lane.claiming for lane in lanes), 5, "the first claim")


def recorded(rig: Rig) -> bool:
    """Nothing in flight and no outcome waiting for its record (RECORD_DELAY) in the dispatcher."""
    d = rig.dispatcher
    return not d._tasks and not any(lane.finished for lane in d._lanes.values())


async def states(rig: Rig, ids: list[str]) -> list[tuple[str, int]]:
    return [((j := await rig.job(i)).state, j.attempts) for i in ids]


async def test_new_head_job_is_in_flight_when_the_accept_returns_and_sent_once(make_rig: RigFactory) -> None:
    async with ProbeSink(delay=0.2) as sink:
        rig = await make_rig({"hook": hook(sink.url)})
        await start(rig)
        ids = await rig.enqueue("n1", "FAILED")
        # Claimed in the accept's commit, not by a later claim: in flight before anything else ran.
        assert await states(rig, ids) == [("inflight", 1)]
        await wait_until(lambda: len(sink.delivered) == 1 and sink.active == 0, 10, "the delivery")
        await wait_until(lambda: recorded(rig), 5, "the outcome recorded")
        assert sink.ids() == ids
        assert await states(rig, ids) == [("done", 1)]
        # What the dispatcher sent is the alert the store keeps for the job.
        assert sink.requests[0].payload["event"]["nodeId"] == "n1"


async def test_handed_off_alert_is_sent_as_a_claimed_one_would_be(make_rig: RigFactory) -> None:
    # The same event on two stores: handed off on one, claimed after the commit on the other
    # (accepted before its dispatcher started). The alert is built from the job in memory in the
    # first case, from the stored context in the second: the receiver must see the same request.
    now = datetime.now(UTC).replace(microsecond=0)
    event = Event("NODE_STATUS_UPDATED", now - timedelta(seconds=3), "n1", "FAILED",
                  {"nodeId": "n1", "status": "FAILED", "region": "eu"}, {"env": "prod"}, now)
    policy = Policy(lambda e, prev: [RouteMatch("r", ("hook",))])
    bodies = []
    for handed in (True, False):
        async with ProbeSink() as sink:
            rig = await make_rig({"hook": hook(sink.url)})
            if handed:
                await start(rig)
            res = await rig.store.accept(event, lambda rec, dup: decide(event, rec, policy, now, duplicate=dup),
                                         now=now, dedup_ttl=3600)
            assert res.handed_off == (1 if handed else 0)
            if not handed:
                await start(rig)
            await wait_until(lambda sink=sink: len(sink.delivered) == 1, 10, "the delivery")
            [req] = sink.delivered
            bodies.append((req.payload, req.headers["webhook-id"]))
    assert bodies[0] == bodies[1]


async def test_a_keys_second_job_waits_for_the_first(make_rig: RigFactory) -> None:
    async with ProbeSink(delay=0.3) as sink:
        rig = await make_rig({"hook": hook(sink.url, concurrency=4)})
        await start(rig)
        first = await rig.enqueue("n1", "FAILED")
        second = await rig.enqueue("n1", "RUNNING")
        # Only heads are handed off: the second is its key's next job, not its head.
        assert await states(rig, first + second) == [("inflight", 1), ("pending", 0)]
        await wait_until(lambda: len(sink.delivered) == 2, 10, "both deliveries")
        assert sink.ids() == first + second
        assert sink.max_active == 1


async def test_a_new_job_queues_behind_a_busy_slot_with_a_longer_lease(make_rig: RigFactory) -> None:
    async with ProbeSink(delay=0.3) as sink:
        # A short least lease, so the leases are what the queue places need.
        rig = await make_rig({"hook": hook(sink.url, concurrency=1, timeout=10)}, lease=1.0)
        await start(rig)
        a = await rig.enqueue("n1", "FAILED")
        b = await rig.enqueue("n2", "FAILED")
        # Nothing older waits in the store: b takes the queue place a claim would have given it.
        assert await states(rig, a + b) == [("inflight", 1), ("inflight", 1)]
        assert isinstance(rig.store, SQLiteStore)
        with closing(sqlite3.connect(rig.store.path)) as c:  # an in-flight job is due when its lease ends
            first, second = [c.execute("SELECT due_at FROM jobs WHERE id = ?", (i,)).fetchone()[0] for i in a + b]
        # Its lease covers the send ahead of it: one more round of timeout + 5 s.
        assert second - first >= 15 - 0.5
        await wait_until(lambda: len(sink.delivered) == 2, 10, "both deliveries")
        assert sink.ids() == a + b
        assert sink.max_active == 1


async def test_the_queue_takes_no_more_than_a_claim_would(make_rig: RigFactory) -> None:
    async with ProbeSink(delay=0.2) as sink:
        rig = await make_rig({"hook": hook(sink.url, concurrency=1)})
        await start(rig)
        ids = [i for n in range(7) for i in await rig.enqueue(f"n{n}", "FAILED")]
        # One sending and PREFETCH_ROUNDS (4) queued; the rest wait in the store to be claimed.
        assert [s for s, _ in await states(rig, ids)] == ["inflight"] * 5 + ["pending"] * 2
        await wait_until(lambda: len(sink.delivered) == 7, 10, "every delivery")
        assert sink.ids() == ids and sink.max_active == 1


async def test_a_new_job_does_not_overtake_one_waiting_in_the_store(make_rig: RigFactory) -> None:
    async with ProbeSink(delay=0.3) as sink:
        rig = await make_rig({"hook": hook(sink.url, concurrency=1)})
        await start(rig)
        full = [i for n in range(6) for i in await rig.enqueue(f"n{n}", "FAILED")]
        assert [s for s, _ in await states(rig, full)] == ["inflight"] * 5 + ["pending"]
        await wait_until(lambda: len(sink.delivered) >= 1 and recorded_one(rig), 10, "the first delivery")
        # The queue has room again, but n5's job is older and still unclaimed: n6 must not pass it.
        late = await rig.enqueue("n6", "FAILED")
        assert await states(rig, late) == [("pending", 0)]
        await wait_until(lambda: len(sink.delivered) == 7, 10, "every delivery")
        assert sink.ids() == full + late


async def test_an_outcome_recorded_with_a_new_job_keeps_it_behind_the_next_job_it_frees(
    make_rig: RigFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The outcome of n1's first job frees n1's second one in the same store batch as a new job's
    # accept: the new job must not take a queue place ahead of it.
    monkeypatch.setattr(delivery, "RECORD_DELAY", 30.0)  # outcomes wait for the test to record them
    async with ProbeSink(delay=0.2) as sink:
        rig = await make_rig({"hook": hook(sink.url, concurrency=1)})
        await start(rig)
        a1 = await rig.enqueue("n1", "FAILED")
        a2 = await rig.enqueue("n1", "RUNNING")
        b = await rig.enqueue("n2", "FAILED")
        c = await rig.enqueue("n3", "FAILED")
        lane = rig.dispatcher._lanes["hook"]
        await wait_until(lambda: len(lane.finished) == 1, 10, "the first send's outcome")
        lane.backlog = False  # what a quiet lane looks like; the accepts above woke it
        rig.dispatcher._record_finished(lane)  # as the record timer would: its op joins the next batch
        d = await rig.enqueue("n4", "FAILED")  # in that same batch, ahead of the outcome
        assert await states(rig, d) == [("pending", 0)]
        rig.dispatcher.wake()
        await wait_until(lambda: len(sink.delivered) == 5, 10, "every delivery")
        names = {i: n for n, ids in (("a1", a1), ("a2", a2), ("b", b), ("c", c), ("d", d)) for i in ids}
        order = [names[i] for i in sink.ids()]
        assert order[0] == "a1" and order[-1] == "d"  # a2 (older, freed by a1) before d


class RecordingHandoff:
    """A dispatcher with no room: it refuses every job and notes which receivers were told of one."""

    def __init__(self) -> None:
        self.unclaimed_for: list[str] = []

    def reserve(self, receiver: str) -> float | None:
        return None

    def release(self, receiver: str) -> None:
        raise AssertionError("nothing was reserved")

    def unclaimed(self, receiver: str) -> None:
        self.unclaimed_for.append(receiver)

    def take(self, job: Any, lease: float) -> None:
        raise AssertionError("nothing was reserved")


async def test_the_store_tells_the_dispatcher_of_every_due_job_it_could_not_hand_off(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "told.db")
    await store.open()
    try:
        told = RecordingHandoff()
        store.set_handoff(told)
        now = datetime.now(UTC)
        policy = Policy(lambda e, prev: [RouteMatch("r", ("hook", "mail"))])

        async def accept(node: str, status: str, seconds: float) -> None:
            event = Event("NODE_STATUS_UPDATED", now - timedelta(seconds=seconds), node, status, received_at=now)
            await store.accept(event, lambda rec, dup: decide(event, rec, policy, now, duplicate=dup),
                               now=now, dedup_ttl=3600)

        await accept("n1", "FAILED", 3)  # two heads, due now, refused: both receivers told
        assert told.unclaimed_for == ["hook", "mail"]
        await accept("n1", "RUNNING", 2)  # behind its key's heads: not claimable, nobody told
        assert told.unclaimed_for == ["hook", "mail"]
    finally:
        await store.close()


def recorded_one(rig: Rig) -> bool:
    """The first send's outcome is recorded (its slot went to the next queued job meanwhile)."""
    lane = rig.dispatcher._lanes["hook"]
    return not lane.finished and lane.active + len(lane.queued) <= 4


async def test_an_accept_run_again_in_its_batch_reserves_its_slot_once(make_rig: RigFactory) -> None:
    # Two accepts share a batch; one's decision raises, so the batch is rolled back and each op
    # runs again on its own (groupcommit). The good one reserved the only slot on its first run:
    # that reservation must go back before the second run, or the job is not handed off (and the
    # slot is lost for good).
    async with ProbeSink(delay=0.2) as sink:
        rig = await make_rig({"hook": hook(sink.url, concurrency=1)})
        await start(rig)
        now = datetime.now(UTC)
        policy = Policy(lambda e, prev: [RouteMatch("r", ("hook",))])
        good = Event("NODE_STATUS_UPDATED", now - timedelta(seconds=2), "n1", "FAILED", received_at=now)
        bad = Event("NODE_STATUS_UPDATED", now - timedelta(seconds=2), "n2", "FAILED", received_at=now)

        def broken(rec: Any, dup: bool) -> Any:
            raise ValueError("a decision that fails")

        results = await asyncio.gather(
            rig.store.accept(good, lambda rec, dup: decide(good, rec, policy, now, duplicate=dup),
                             now=now, dedup_ttl=3600),
            rig.store.accept(bad, broken, now=now, dedup_ttl=3600),
            return_exceptions=True,
        )
        ok, failed = results
        assert isinstance(failed, ValueError)
        assert not isinstance(ok, BaseException) and ok.handed_off == 1
        assert await states(rig, list(ok.deliveries)) == [("inflight", 1)]
        await wait_until(lambda: len(sink.delivered) == 1, 10, "the delivery")
        await wait_until(lambda: recorded(rig), 5, "the outcome recorded")
        # The slot is free again: the next new job is handed off too.
        later = await rig.enqueue("n3", "FAILED")
        assert await states(rig, later) == [("inflight", 1)]


async def test_no_hand_off_before_the_dispatcher_starts_nor_after_it_stops(make_rig: RigFactory) -> None:
    async with ProbeSink() as sink:
        rig = await make_rig({"hook": hook(sink.url)})
        before = await rig.enqueue("n1", "FAILED")
        await start(rig)
        await wait_until(lambda: len(sink.delivered) == 1, 10, "the first delivery")
        await rig.dispatcher.stop(grace=1.0)
        after = await rig.enqueue("n2", "FAILED")
        assert await states(rig, before + after) == [("done", 1), ("pending", 0)]


async def test_memory_store_claims_as_before(make_rig: RigFactory) -> None:
    async with ProbeSink(delay=0.2) as sink:
        rig = await make_rig({"hook": hook(sink.url)}, memory=True)
        await start(rig)
        ids = await rig.enqueue("n1", "FAILED")
        assert await states(rig, ids) == [("pending", 0)]
        rig.dispatcher.wake()  # as ingest does when jobs were not handed off
        await wait_until(lambda: len(sink.delivered) == 1, 10, "the delivery")


async def test_grouped_job_held_for_group_wait_is_not_handed_off(make_rig: RigFactory) -> None:
    async with ProbeSink() as sink:
        rig = await make_rig({"hook": hook(sink.url)})
        await start(rig)
        policy = Policy(lambda e, prev: [RouteMatch("fleet", ("hook",))],
                        incidents=IncidentPolicy(routes={"fleet": RoutePolicy("fleet", ("hook",), group_wait=30.0)}))
        now = datetime.now(UTC)
        event = Event("NODE_STATUS_UPDATED", now - timedelta(seconds=1), "n1", "FAILED", received_at=now)
        res = await rig.store.accept(event, lambda rec, dup: decide(event, rec, policy, now, duplicate=dup),
                                     now=now, dedup_ttl=3600)
        assert res.handed_off == 0 and len(res.deliveries) == 1
        job = await rig.job(res.deliveries[0])
        assert (job.state, job.attempts) == ("pending", 0) and job.alert.group is not None
        assert job.next_attempt_at > now  # held: due after group_wait, claimed (with its group) then


# --- the real process: a handed-off job in flight at a SIGKILL ------------------------------------


@pytest.mark.slow
async def test_handed_off_job_in_flight_at_kill_9_is_delivered_by_the_restarted_bridge(
    bridge_process: Any, tmp_path: Path
) -> None:
    async with ProbeSink() as sink:
        sink.hold(from_arrival=0)  # every send stalls at the receiver
        p = await bridge_process(receivers={"hook": hook(sink.url, timeout="60s")}, default_to=["hook"])
        ts = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
        status, doc, _ = await p.post(event_body("n1", "FAILED", timestamp=ts))
        assert status == 200 and doc["deliveries"] == 1
        await wait_until(lambda: sink.active == 1, 10, "the send stalled at the receiver")
        db = Path(p.cfg["storage"]["url"].removeprefix("sqlite://"))
        with closing(sqlite3.connect(db)) as c:
            [(state, attempts)] = c.execute("SELECT state, attempts FROM jobs").fetchall()
        assert (state, attempts) == ("inflight", 1)  # claimed, its lease running, not lost

        p.kill()
        await wait_until(lambda: sink.active == 0, 5, "the stalled request to see its client gone")
        sink.release()
        await p.start()
        await wait_until(lambda: len(sink.delivered) == 1, 20, "the delivery after the restart")
        assert sink.arrived == sink.ids() * 2  # sent again once (at least once), delivered once
