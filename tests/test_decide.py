"""The accept decision (bridge.decide): plain tables, no store, no sockets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bridge.config import parse
from bridge.decide import Decision, NodeRecord, Policy, decide, decide_ack, decide_timers, order_time
from bridge.incident_state import IncidentState, RoutePolicy
from bridge.incident_state import Policy as IncidentPolicy
from bridge.model import Event, NodeState, RouteMatch, Silence, delivery_id
from bridge.routing import compile_routes

T0 = datetime(2026, 4, 16, 12, 0, tzinfo=UTC)
SKEW = 300.0


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def ev(node: str = "n1", status: str = "FAILED", t: float = 0.0, received: float | None = None) -> Event:
    return Event("NODE_STATUS_UPDATED", at(t), node, status, received_at=at(t if received is None else received))


def fixed(*matches: RouteMatch) -> Policy:
    ip = IncidentPolicy(routes={m.route: RoutePolicy(m.route, m.receivers, repeat_interval=m.repeat_interval)
                                for m in matches})
    return Policy(lambda event, prev: list(matches), (), 3600.0, SKEW, ip)


def run(events: Sequence[tuple[Event, float]], policy: Policy) -> list[Decision]:
    """Decide each (event, now) on the record the previous decisions left, as a store would."""
    record: NodeRecord | None = None
    out = []
    for event, now in events:
        d = decide(event, record, policy, at(now))
        if d.record is not None:
            record = d.record
        out.append(d)
    return out


TO_A = fixed(RouteMatch("r", ("a",)))


@pytest.mark.parametrize(
    ("name", "events", "outcomes"),
    [
        ("first event", [(ev(t=0), 0)], ["accepted"]),
        ("newer events", [(ev(t=0), 0), (ev("n1", "RUNNING", 5), 5)], ["accepted", "accepted"]),
        ("older than the newest", [(ev(t=10), 10), (ev(t=5), 11)], ["accepted", "out_of_order"]),
        ("same instant, other status", [(ev(t=10), 10), (ev("n1", "RUNNING", 10), 11)], ["accepted", "accepted"]),
        ("stale: older than max_event_age", [(ev(t=0), 3601)], ["stale"]),
        ("exactly max_event_age: not stale", [(ev(t=0), 3600)], ["accepted"]),
        ("stale does not move the node", [(ev(t=10), 10), (ev(t=20), 4000), (ev(t=15), 15)],
         ["accepted", "stale", "accepted"]),
    ],
)
def test_outcomes(name: str, events: list[tuple[Event, float]], outcomes: list[str]) -> None:
    assert [d.outcome for d in run(events, TO_A)] == outcomes, name


def test_duplicate_is_what_the_store_found() -> None:
    record = decide(ev(t=0), None, TO_A, at(0)).record
    assert decide(ev(t=0), record, TO_A, at(1), duplicate=True) == Decision("duplicate")


def test_no_max_event_age_means_nothing_is_stale() -> None:
    policy = Policy(TO_A.routes, (), 0.0, SKEW)
    assert decide(ev(t=0), None, policy, at(10**8)).outcome == "accepted"


def test_node_record_keeps_since_while_the_status_holds() -> None:
    e0, e1, e2 = ev(t=0), ev(t=10), ev("n1", "RUNNING", 20)
    d0, d1, d2 = run([(e0, 0), (e1, 10), (e2, 20)], TO_A)
    assert d0.previous is None
    assert d1.previous == NodeState("n1", "FAILED", at(0), at(0), e0.id)
    assert d2.previous == NodeState("n1", "FAILED", at(0), at(10), e1.id)
    assert d2.record is not None and d2.record.state == NodeState("n1", "RUNNING", at(20), at(20), e2.id)


def test_out_of_order_and_stale_leave_the_record_unchanged() -> None:
    (first,) = run([(ev(t=10), 10)], TO_A)
    assert first.record is not None
    late = decide(ev(t=5), first.record, TO_A, at(11))
    assert (late.outcome, late.record, late.jobs, late.previous) == ("out_of_order", None, (), first.record.state)
    stale = decide(ev(t=20), first.record, TO_A, at(5000))
    assert (stale.outcome, stale.record, stale.previous) == ("stale", None, None)


# --- silences ------------------------------------------------------------------------------------


def test_silenced_moves_the_node_on_without_jobs() -> None:
    s = Silence("sil_1", "n*", ("FAILED",), at(0), at(100), "maintenance")
    policy = Policy(TO_A.routes, (s,), 3600.0, SKEW)
    d = decide(ev(t=10), None, policy, at(10))
    assert (d.outcome, d.jobs, d.silenced_by) == ("silenced", (), "sil_1")
    assert d.record is not None and d.record.state.status == "FAILED"
    assert decide(ev("n1", "RUNNING", 10), None, policy, at(10)).outcome == "accepted"  # other status
    assert decide(ev(t=100), None, policy, at(100)).outcome == "accepted"  # over: end is exclusive
    # a silence does not make an older event newer
    assert decide(ev(t=5), d.record, policy, at(11)).outcome == "out_of_order"


def test_a_silence_lets_the_resolution_of_a_page_through() -> None:
    # Paged at 0; a silence on every status from 50; the recovery inside it still closes the page.
    s = Silence("sil_1", "n*", ("FAILED", "RUNNING"), at(50), at(500), "maintenance")
    policy = Policy(TO_A.routes, (s,), 3600.0, SKEW, TO_A.incidents)
    (fired, recovered) = run([(ev(t=0), 0), (ev("n1", "RUNNING", 60), 60)], policy)
    assert [j.kind for j in fired.jobs] == ["firing"]
    assert recovered.outcome == "silenced" and [(j.kind, j.receiver) for j in recovered.jobs] == [("resolved", "a")]
    assert recovered.jobs[0].incident is not None and fired.jobs[0].incident is not None
    assert recovered.jobs[0].incident.id == fired.jobs[0].incident.id


def test_a_firing_withheld_by_a_silence_goes_out_once_it_ends() -> None:
    s = Silence("sil_1", "n*", ("FAILED", "RUNNING"), at(0), at(100), "maintenance")
    policy = Policy(TO_A.routes, (s,), 3600.0, SKEW, TO_A.incidents)
    (muted,) = run([(ev(t=10), 10)], policy)
    assert muted.outcome == "silenced" and muted.jobs == () and muted.record is not None
    assert muted.record.next_due == at(70)  # the re-check
    inside = decide_timers(muted.record, policy, at(70))
    assert inside.jobs == () and inside.record is not None and inside.record.next_due == at(130)
    after = decide_timers(inside.record, policy, at(130))
    assert [j.kind for j in after.jobs] == ["firing"] and after.record is not None and after.record.next_due is None


def test_a_timer_is_muted_by_what_the_node_is_now() -> None:
    # The re-check was set while the node was PAUSED; it is FAILED again under a [FAILED] silence.
    s = Silence("sil_1", "n*", ("FAILED",), at(0), at(1000), "maintenance")
    policy = Policy(TO_A.routes, (s,), 3600.0, SKEW, TO_A.incidents)
    decisions = run([(ev(t=10), 10), (ev("n1", "PAUSED", 20), 20), (ev(t=30), 30)], policy)
    record = decisions[-1].record
    assert record is not None and record.state.status == "FAILED"
    assert {t.status for t in record.incidents.timers} == {"FAILED"}
    paused = NodeRecord(record.state, replace(record.incidents, timers=tuple(
        replace(t, status="PAUSED") for t in record.incidents.timers)))
    assert decide_timers(paused, policy, at(100)).jobs == ()


def test_a_late_recovery_still_closes_the_incident() -> None:
    # The FAILED was paged; its RUNNING arrives after max_event_age: the page closes, late.
    late = run([(ev(t=0), 0), (ev("n1", "RUNNING", 10), 4000)], TO_A)[1]
    assert late.outcome == "accepted" and [j.kind for j in late.jobs] == ["resolved"]
    assert late.record is not None and late.record.state.status == "RUNNING" and not late.record.incident_open
    # Otherwise stale stays stale: a late FAILED opens nothing, a late RUNNING older than the node's newest
    # or with no incident open changes nothing.
    assert run([(ev("n1", "RUNNING", 0), 0), (ev(t=10), 4000)], TO_A)[1].outcome == "stale"
    assert run([(ev(t=20), 20), (ev("n1", "RUNNING", 10), 4000)], TO_A)[1].outcome == "stale"
    assert run([(ev("n1", "STARTING", 0), 0), (ev("n1", "RUNNING", 10), 4000)], TO_A)[1].outcome == "stale"


def test_config_silence_is_named_by_its_comment_or_config() -> None:
    cfg = parse({"receivers": {"a": {"type": "log"}}, "verification": {"public_key": "x"},
                 "silences": [{"node": "*", "ends_at": "2030-01-01T00:00:00Z"}]})
    policy = Policy(TO_A.routes, tuple(cfg.silences), 0.0, SKEW)
    assert decide(ev(), None, policy, at(0)).silenced_by == "config"


# --- repeat_interval and fan-out -----------------------------------------------------------------


def test_repeat_interval_reminds_instead_of_suppressing() -> None:
    # Changed meaning (issue 13): a repeat of the status notifies nobody; repeat_interval reminds.
    policy = fixed(RouteMatch("r", ("a",), 300))
    events = [(ev(t=0), 0), (ev(t=100), 100), (ev("n1", "RUNNING", 110), 110), (ev(t=299), 299), (ev(t=300), 300)]
    decisions = run(events, policy)
    assert [[j.kind for j in d.jobs] for d in decisions] == [["firing"], [], ["resolved"], ["firing"], []]
    last = decisions[-1].record
    assert last is not None and [t.kind for t in last.incidents.timers] == ["reminder"]
    assert last.next_due == at(299 + 300)
    assert decide_timers(last, policy, at(598)).record is None  # not due yet
    d = decide_timers(last, policy, at(599))
    assert [j.kind for j in d.jobs] == ["reminder"] and d.record is not None
    assert d.record.next_due == at(599 + 300)
    assert decide_timers(d.record, policy, at(599)).record is None  # applied once: nothing left due


def test_receiver_named_by_two_routes_gets_one_job_under_the_first() -> None:
    policy = fixed(RouteMatch("r1", ("a", "b")), RouteMatch("r2", ("b", "c")))
    e = ev()
    d = decide(e, None, policy, at(0))
    assert [(j.route, j.receiver, j.id) for j in d.jobs] == [
        ("r1", "a", delivery_id(e.id, "a")), ("r1", "b", delivery_id(e.id, "b")), ("r2", "c", delivery_id(e.id, "c")),
    ]  # fmt: skip


def test_ack_stops_reminders() -> None:
    policy = fixed(RouteMatch("r", ("a",), 60))
    (opened,) = run([(ev(t=0), 0)], policy)
    assert opened.record is not None and opened.record.incidents.incident is not None
    inc = opened.record.incidents.incident
    acked = decide_ack(opened.record, inc.id, by="alice", now=at(10))
    assert acked.record is not None and acked.record.incidents.timers == () and acked.record.next_due is None
    assert decide_ack(acked.record, "inc_other", by="bob", now=at(11)).outcome == "not_found"


def test_jobs_take_places_after_the_nodes_earlier_jobs_whatever_the_clocks() -> None:
    """ThunderStack's clock 2 minutes ahead of the bridge's (within max_clock_skew): the reminder,
    decided on the bridge's clock, still queues after the firing, and the resolution after both."""
    policy = fixed(RouteMatch("r", ("a", "b"), 30))
    (opened,) = run([(ev(t=120, received=0), 0)], policy)
    reminded = decide_timers(opened.record, policy, at(30))
    assert reminded.record is not None and [j.kind for j in reminded.jobs] == ["reminder", "reminder"]
    resolved = decide(ev(status="RUNNING", t=125, received=35), reminded.record, policy, at(35))
    jobs = [*opened.jobs, *reminded.jobs, *resolved.jobs]
    assert [j.kind for j in jobs] == ["firing"] * 2 + ["reminder"] * 2 + ["resolved"] * 2
    orders = [j.order for j in jobs]
    assert orders == sorted(orders) and len(set(orders)) == len(orders), orders
    assert orders[0] == at(120)  # an event's jobs take its own time: across nodes, the oldest event first
    assert resolved.record is not None and resolved.record.queued == orders[-1]


def test_job_carries_kind_and_incident() -> None:
    policy = fixed(RouteMatch("r", ("a",)))
    d0, d1, d2 = run([(ev(t=0), 0), (ev("n1", "STARTING", 60), 60), (ev("n1", "RUNNING", 90), 90)], policy)
    (firing,), (), (resolved,) = d0.jobs, d1.jobs, d2.jobs
    assert (firing.kind, resolved.kind) == ("firing", "resolved")
    assert firing.incident is not None and resolved.incident is not None
    assert firing.incident.id == resolved.incident.id
    assert resolved.incident.duration == 90 and resolved.incident.path == "FAILED 1m → STARTING 30s → RUNNING"
    assert d2.resolved == (90.0,)


def test_hold_inside_for_notifies_nobody() -> None:
    ip = IncidentPolicy(routes={"r": RoutePolicy("r", ("a",), hold=120)})
    policy = Policy(lambda e, prev: [RouteMatch("r", ("a",))], (), 0.0, SKEW, ip)
    d0, d1 = run([(ev(t=0), 0), (ev("n1", "RUNNING", 40), 40)], policy)
    assert d0.jobs == () and d1.jobs == ()
    assert d1.record is not None and d1.record.incidents.timers == ()
    (d0b,) = run([(ev(t=0), 0)], policy)
    assert d0b.record is not None
    fired = decide_timers(d0b.record, policy, at(120))
    assert [j.kind for j in fired.jobs] == ["firing"]


def test_a_reload_that_drops_the_route_cancels_its_timers() -> None:
    policy = fixed(RouteMatch("r", ("a",), 60))
    (opened,) = run([(ev(t=0), 0)], policy)
    assert opened.record is not None and opened.record.next_due is not None
    reloaded = Policy(lambda e, prev: [], (), 0.0, SKEW, IncidentPolicy())
    d = decide_timers(opened.record, reloaded, at(60))
    assert d.jobs == () and d.record is not None and d.record.incidents.timers == ()


def test_routing_sees_the_previous_state() -> None:
    cfg = parse({"receivers": {"a": {"type": "log"}}, "verification": {"public_key": "x"},
                 "routes": [{"name": "recovered", "match": {"status": "RUNNING", "previous_status": "FAILED"},
                             "to": ["a"]}]})
    router = compile_routes(cfg)
    policy = Policy(router.match, (), 0.0, SKEW)
    decisions = run([(ev(t=0), 0), (ev("n1", "RUNNING", 1), 1), (ev("n1", "RUNNING", 2), 2)], policy)
    assert [len(d.jobs) for d in decisions] == [0, 1, 0]


def test_a_failing_router_raises_before_anything_is_decided() -> None:
    def broken(event: Event, prev: NodeState | None) -> list[RouteMatch]:
        raise RuntimeError("routing bug")

    with pytest.raises(RuntimeError):
        decide(ev(), None, Policy(broken), at(0))


# --- future-dated events (issue 11): a far-future event hides nothing that comes after it ---------


def test_order_time_of_a_far_future_event_is_its_arrival() -> None:
    assert order_time(ev(t=0, received=0), 300) == at(0)
    assert order_time(ev(t=300, received=0), 300) == at(300)  # inside the skew: its own time
    assert order_time(ev(t=1000, received=0), 300) == at(0)  # beyond it: when it arrived
    far = Event("NODE_STATUS_UPDATED", datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), "n1", "FAILED",
                received_at=at(0))
    assert order_time(far, 300) == at(0)


def test_far_future_event_then_normal_ones_over_time() -> None:
    far = Event("NODE_STATUS_UPDATED", datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), "n1", "FAILED",
                received_at=at(0))
    policy = Policy(TO_A.routes, (), 0.0, 60.0)
    sequence = [
        (far, 0),
        (ev("n1", "RUNNING", 30), 30),  # after the far one arrived: it resolves
        (ev("n1", "FAILED", 59), 59),
        (ev("n1", "RUNNING", 60), 60),
        (ev("n1", "FAILED", 61), 61),
        (ev("n1", "FAILED", 3600), 3600),
    ]
    decisions = run(sequence, policy)
    assert [d.outcome for d in decisions] == ["accepted"] * 6
    assert [[j.kind for j in d.jobs] for d in decisions] == [["firing"], ["resolved"], ["firing"], ["resolved"],
                                                             ["firing"], []]
    first = decisions[0].record
    # Shown at its arrival; what follows need only be no older than max_clock_skew before it.
    assert first is not None and first.state.since == at(0) and first.state.last_timestamp == at(-60)
    assert decisions[1].previous == NodeState("n1", "FAILED", at(0), at(-60), far.id)


def test_a_far_future_repeat_cannot_swallow_the_resolution() -> None:
    """FAILED pages; a copy dated years ahead arrives; the real RUNNING a minute later resolves."""
    policy = Policy(TO_A.routes, (), 0.0, 300.0)
    sequence = [(ev("n1", "FAILED", 0), 0), (ev("n1", "FAILED", 10**8, received=5), 5),
                (ev("n1", "RUNNING", 60), 60)]
    decisions = run(sequence, policy)
    assert [d.outcome for d in decisions] == ["accepted", "accepted", "accepted"]
    assert [[j.kind for j in d.jobs] for d in decisions] == [["firing"], [], ["resolved"]]


def test_events_arriving_before_a_far_future_one_still_order_by_their_time() -> None:
    policy = Policy(TO_A.routes, (), 0.0, 60.0)
    sequence = [(ev(t=10**6, received=0), 0), (ev("n1", "RUNNING", 10**6 + 1, received=50), 50),
                (ev("n1", "FAILED", 111), 111)]
    assert [d.outcome for d in run(sequence, policy)] == ["accepted", "accepted", "accepted"]
    # Sent after the far one, dated before it arrived (delivery took 15 s): it is the newer one, and
    # shows at the far one's arrival. One older than the node's newest before it is out of order.
    late = [(ev("n1", "FAILED", 10), 10), (ev("n1", "RUNNING", 10**6, received=20), 20),
            (ev("n1", "FAILED", 15), 30), (ev("n1", "RUNNING", 9), 31)]
    decisions = run(late, policy)
    assert [d.outcome for d in decisions] == ["accepted", "accepted", "accepted", "out_of_order"]
    assert [[j.kind for j in d.jobs] for d in decisions] == [["firing"], ["resolved"], ["firing"], []]
    reopened = decisions[2].record
    assert reopened is not None and reopened.state.since == at(20) and reopened.state.last_timestamp == at(20)


def test_a_far_future_failure_cannot_mute_the_recovery_sent_right_after_it() -> None:
    """FAILED dated a year ahead arrives at 0; RUNNING, dated 0.3 s before that arrival and sent after
    it, resolves the incident (at the far one's arrival: it lasted 0 s), and the node is RUNNING."""
    policy = Policy(TO_A.routes, (), 3600.0, 300.0)
    sequence = [(ev("n1", "RUNNING", -3600), -3600), (ev("n1", "FAILED", 365 * 86400, received=0), 0),
                (ev("n1", "RUNNING", -0.3, received=0.1), 0.1)]
    decisions = run(sequence, policy)
    assert [d.outcome for d in decisions] == ["accepted"] * 3
    assert [[j.kind for j in d.jobs] for d in decisions] == [["event"], ["firing"], ["resolved"]]
    assert decisions[2].resolved == (0.0,)
    last = decisions[2].record
    assert last is not None and last.state.status == "RUNNING" and not last.incident_open
    # Older than max_clock_skew before the far one's arrival (and than the node's newest before it):
    # out of order, as any late event.
    late = run([*sequence[:2], (ev("n1", "RUNNING", -301, received=1), 1)], policy)
    assert late[2].outcome == "out_of_order" and late[2].jobs == ()


# --- the record's JSON form -----------------------------------------------------------------------


def test_node_record_round_trips_through_json() -> None:
    import json

    (opened,) = run([(ev(t=0.000001), 0)], fixed(RouteMatch("r", ("a",), 60)))
    record = opened.record
    assert record is not None and record.incidents != IncidentState()
    text = json.dumps(record.to_json())
    assert NodeRecord.from_json("n1", json.loads(text)) == record
    # a record written before incidents (with the old repeat times) reads with an empty incident state
    old = NodeRecord.from_json("n1", {**record.to_json(), "inc": None, "fired": {"FAILED": {"r": 1.25}}})
    assert old == NodeRecord(record.state, queued=record.queued)
    # and one written before jobs had their own place in the queues, with none
    assert NodeRecord.from_json("n1", {k: v for k, v in record.to_json().items() if k != "q"}).queued is None


@pytest.mark.timeout(10)
def test_timers_never_spin_whatever_the_interval() -> None:
    """A reminder interval that rounds to nothing (config refuses it; this is the backstop) fires the
    timers due when the call began, once each, and returns."""
    policy = fixed(RouteMatch("r", ("a",), 1e-9))
    (opened,) = run([(ev(t=0), 0)], policy)
    assert opened.record is not None and opened.record.incidents.timers
    d = decide_timers(opened.record, policy, at(1))
    assert [j.kind for j in d.jobs] == ["reminder"]
