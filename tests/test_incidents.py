"""Incident lifecycle (bridge/incidents.py): plain tables of events and timers, no sockets, no clock.

``Sim`` (tests/support/incident_sim.py) plays the part the stores and decide play.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from typing import Any, get_args

import pytest

from bridge import config as config_mod
from bridge.errors import ConfigError
from bridge.incident_state import (
    PATH_LIMIT,
    Flap,
    Incident,
    IncidentState,
    Kind,
    Policy,
    RoutePolicy,
    Timer,
)
from bridge.incidents import ack, on_timer, reconcile, resolve, step_event
from bridge.model import ALERT_KINDS
from tests.support.incident_sim import NODE, OPS, T0, Sim, m, policy

# --- the lifecycle, table by table ----------------------------------------------------------------


def test_restart_gives_one_firing_and_one_resolved_with_duration_and_path() -> None:
    sim = Sim(policy(OPS), prev="RUNNING")
    outcomes = [sim.event(s, t).outcome for s, t in [("FAILED", 0), ("STARTING", 12), ("RUNNING", 15)]]
    assert outcomes == ["opened", "updated", "resolved"]
    assert sim.kinds() == [("firing", "ops", ("slack",)), ("resolved", "ops", ("slack",))]
    firing, resolved = sim.sent
    assert firing.incident is not None and resolved.incident is not None
    assert firing.incident.id == resolved.incident.id
    assert resolved.title == "RESOLVED node-7 after 15m"
    ctx = resolved.context()
    assert ctx["kind"] == "resolved" and ctx["incident"]["duration"] == 900.0
    assert ctx["incident"]["path_text"] == "FAILED 12m → STARTING 3m → RUNNING"
    assert ctx["incident"]["state"] == "resolved" and ctx["incident"]["opened_at"] == "2026-04-16T12:00:00.000000Z"
    assert sim.state is not None and sim.state.incident is None and sim.state.last_resolved is not None
    ref = resolved.incident_ref()
    assert ref is not None and (ref.id, ref.opened_at, ref.duration) == (firing.incident.id, m(0), 900.0)
    assert ref.path == "FAILED 12m → STARTING 3m → RUNNING" and sim.sent[0].incident_ref() is not None
    assert {n.kind for n in sim.sent} <= ALERT_KINDS  # the receivers know every kind we send


def test_restart_inside_for_pages_nobody() -> None:
    sim = Sim(policy(replace(OPS, hold=120.0)), prev="RUNNING")
    opened = sim.event("FAILED", 0)
    (hold,) = opened.set_timers
    assert hold.kind == "hold" and hold.due_at == m(2)
    resolved = sim.event("RUNNING", 1)
    assert resolved.cancel_timers == (hold.id,)
    sim.run(60)
    assert sim.sent == [] and sim.jobs == {}
    # The cancelled hold job, delivered anyway (cancelled too late, or a second replica): nothing.
    late = on_timer(sim.state, hold, m(2), sim.policy)
    assert late.outcome == "stale" and late.notifications == () and late.state == sim.state


def test_hold_passes_then_firing_and_resolved() -> None:
    sim = Sim(policy(replace(OPS, hold=120.0)))
    sim.event("FAILED", 0)
    sim.run(1)
    assert sim.sent == []
    sim.run(2)
    assert sim.kinds() == [("firing", "ops", ("slack",))] and sim.sent[0].at == m(2)
    sim.event("RUNNING", 5)
    assert [n.kind for n in sim.sent] == ["firing", "resolved"]


def test_reminders_repeat_while_open_and_stop_after_ack() -> None:
    sim = Sim(policy(replace(OPS, repeat_interval=600.0)))
    sim.event("FAILED", 0)
    sim.run(35)
    assert [(n.kind, n.at) for n in sim.sent] == [("firing", m(0)), ("reminder", m(10)), ("reminder", m(20)),
                                                 ("reminder", m(30))]
    assert sim.sent[2].title == "still FAILED after 20m: node-7"
    assert sim.state is not None and sim.state.incident is not None
    acked = sim.apply(ack(sim.state, sim.state.incident.id, by="alice", now=m(35)))
    assert acked.outcome == "acked" and len(acked.cancel_timers) == 1 and sim.jobs == {}
    assert ack(sim.state, sim.state.incident.id, by="bob", now=m(36)).outcome == "already_acked"
    sim.run(200)
    sim.event("RUNNING", 201)
    assert [n.kind for n in sim.sent] == ["firing", "reminder", "reminder", "reminder", "acknowledged", "resolved"]
    assert sim.sent[4].receivers == OPS.to and sim.sent[4].extra == {"by": "alice"}
    assert sim.sent[-1].incident is not None and sim.sent[-1].incident.acked_by == "alice"


def test_escalation_fires_once_per_step_and_reaches_the_resolution() -> None:
    route = replace(OPS, escalate=((1800.0, ("pager",)), (3600.0, ("boss",))))
    sim = Sim(policy(route))
    sim.event("FAILED", 0)
    sim.event("FAILED", 40)  # a repeat: changes nothing, arms nothing
    sim.run(300)
    assert sim.kinds() == [("firing", "ops", ("slack",)), ("escalation", "ops", ("pager",)),
                           ("escalation", "ops", ("boss",))]
    assert [n.at for n in sim.sent] == [m(0), m(30), m(60)]
    sim.event("RUNNING", 301)
    assert sim.kinds()[-1] == ("resolved", "ops", ("slack", "pager", "boss"))


def test_ack_before_an_escalation_step_stops_it() -> None:
    route = replace(OPS, escalate=((1800.0, ("pager",)), (3600.0, ("boss",))))
    sim = Sim(policy(route))
    sim.event("FAILED", 0)
    sim.run(45)
    assert sim.state is not None and sim.state.incident is not None
    sim.apply(ack(sim.state, sim.state.incident.id, by="alice", now=m(45)))
    sim.run(500)
    # The ack reaches whoever was told: the firing's receiver and the escalation's.
    assert sim.kinds() == [("firing", "ops", ("slack",)), ("escalation", "ops", ("pager",)),
                           ("acknowledged", "ops", ("slack", "pager"))]


@pytest.mark.parametrize(
    ("events", "outcomes", "kinds"),
    [
        # A late RUNNING dated before the FAILED resolves nothing.
        ([("FAILED", 10), ("RUNNING", 5)], ["opened", "out_of_order"], ["firing"]),
        # ... and one dated after it does.
        ([("FAILED", 10), ("RUNNING", 5), ("RUNNING", 11)], ["opened", "out_of_order", "resolved"],
         ["firing", "resolved"]),
        # Another FAILED is an update, not a second incident.
        ([("FAILED", 0), ("STARTING", 1), ("FAILED", 2), ("RUNNING", 3)], ["opened", "updated", "updated", "resolved"],
         ["firing", "resolved"]),
        # A status in neither list: no incident, a plain change event for the matching route.
        ([("PAUSED", 0), ("PAUSED", 1)], ["event", "repeat"], ["event"]),
        # An undocumented status inside an incident is an update like any other.
        ([("FAILED", 0), ("EXPLODED", 1), ("RUNNING", 2)], ["opened", "updated", "resolved"], ["firing", "resolved"]),
        # RUNNING with nothing open is a plain change.
        ([("RUNNING", 0)], ["event"], ["event"]),
    ],
)
def test_event_tables(events: list[tuple[str, float]], outcomes: list[str], kinds: list[str]) -> None:
    sim = Sim(policy(OPS), prev="RUNNING" if events[0][0] != "RUNNING" else "STARTING")
    assert [sim.event(s, t).outcome for s, t in events] == outcomes
    assert [n.kind for n in sim.sent] == kinds


def test_path_text_with_an_undocumented_status() -> None:
    sim = Sim(policy(OPS))
    for s, t in [("FAILED", 0), ("EXPLODED", 1), ("RUNNING", 2)]:
        sim.event(s, t)
    assert sim.sent[-1].context()["incident"]["path_text"] == "FAILED 1m → EXPLODED 1m → RUNNING"


def test_far_future_event_only_delays_the_node_by_the_clamp() -> None:
    """decide clamps eventTimestamp to received_at + max_clock_skew (5m): an event dated 2100 is
    taken as 12:05. Normal events dated before that are out of order; the first after it counts."""
    sim = Sim(policy(OPS), prev="RUNNING")
    assert sim.event("FAILED", 5, now=0).outcome == "opened"  # claimed 2100, clamped to now + 5m
    assert sim.event("RUNNING", 1, now=1).outcome == "out_of_order"
    assert sim.event("RUNNING", 4, now=4).outcome == "out_of_order"
    assert sim.event("RUNNING", 6, now=6).outcome == "resolved"
    assert sim.state is not None and sim.state.last_at == m(6)
    assert [n.kind for n in sim.sent] == ["firing", "resolved"]


@pytest.mark.parametrize("status", ["FAILED\r\n<!channel>", "\ud800", "", "x" * 2000, "RUNNING "])
def test_hostile_statuses_are_plain_and_round_trip(status: str) -> None:
    sim = Sim(policy(OPS), prev="FAILED")
    step = sim.event(status, 0)
    assert step.outcome == "event" and sim.state is not None and sim.state.incident is None
    assert [n.status for n in sim.sent] == [status]
    # Inside an incident, the same status is a path entry that survives the stored form.
    sim.event("FAILED", 1)
    sim.event(status, 2)
    blob = json.dumps(sim.state.to_json())  # ASCII-only escapes, as the stores write it
    back = IncidentState.from_json(json.loads(blob))
    assert back == sim.state and back.incident is not None and back.incident.path[-1][0] == status


def test_a_long_incident_keeps_a_bounded_path() -> None:
    sim = Sim(policy(OPS))
    sim.event("FAILED", 0)
    for i in range(1, 400):
        sim.event("STARTING" if i % 2 else "FAILED", i)
    assert sim.state is not None and sim.state.incident is not None
    inc = sim.state.incident
    assert len(inc.path) == PATH_LIMIT and inc.path_elided == 400 - PATH_LIMIT
    assert inc.path[0] == ("FAILED", m(0)) and inc.path[-1] == ("STARTING", m(399))
    sim.event("RUNNING", 400)
    text = sim.sent[-1].context()["incident"]["path_text"]
    assert text.startswith(f"FAILED → … {401 - PATH_LIMIT} more → FAILED 1m") and text.endswith("STARTING 1m → RUNNING")
    assert len(json.dumps(sim.state.to_json())) < 8000


def test_incident_copies_keep_every_other_field() -> None:
    """tell/fired/entered/closed copy by hand (not dataclasses.replace): a field added later and
    not passed on would silently fall back to its default."""
    from dataclasses import fields

    inc = Incident("inc_1", NODE, m(0), m(0.5), (("FAILED", m(0)),), ("ops",), ("ops",), (("ops", 1),), 3,
                   m(1), "ann", m(2), "bob", (("ops", ("slack",)),))
    assert all(getattr(inc, f.name) != f.default for f in fields(Incident)), "every field off its default"
    changed = {
        "tell": (inc.tell("ops", ("mail",)), {"told"}),
        "fired": (inc.fired("pager", ("pd",)), {"notified", "told"}),
        "entered": (inc.entered("STARTING", m(3)), {"path"}),
        "closed": (inc.closed(m(4), None), {"resolved_at", "resolved_by"}),
    }
    for name, (copy, touched) in changed.items():
        kept = {f.name for f in fields(Incident)} - touched
        assert {k for k in kept if getattr(copy, k) != getattr(inc, k)} == set(), name
        assert all(getattr(copy, k) != getattr(inc, k) for k in touched), name
    state = IncidentState(inc, (), Flap(active=True), m(1), True, inc)
    step = step_event(state, node_id=NODE, source="evt_x", prev_status="FAILED", status="FAILED", at=m(5),
                      now=m(5), matched=("ops",), policy=policy(OPS))
    assert step.outcome == "repeat" and step.state == replace(state, last_at=m(5))


# --- flapping ----------------------------------------------------------------------------------------


def test_flapping_gives_one_flapping_and_one_stable() -> None:
    sim = Sim(policy(OPS, flapping=(4, 600.0)), prev="RUNNING")
    for s, t in [("FAILED", 1), ("RUNNING", 2), ("FAILED", 3), ("RUNNING", 4), ("FAILED", 5), ("RUNNING", 6),
                 ("FAILED", 7), ("RUNNING", 8)]:
        sim.event(s, t)
    # Before the 4th change: normal firing/resolved; then one flapping notification, the rest held.
    assert [n.kind for n in sim.sent] == ["firing", "resolved", "firing", "flapping"]
    assert sim.sent[-1].title == "node-7 is flapping (4 status changes in 3m)"
    (stable,) = [t for t in sim.jobs.values() if t.kind == "stable"]
    assert stable.due_at == m(18)  # a whole window after the last change
    sim.run(17)
    assert [n.kind for n in sim.sent][-1] == "flapping"
    sim.run(18)
    kinds = [n.kind for n in sim.sent]
    assert kinds == ["firing", "resolved", "firing", "flapping", "resolved", "stable"]
    assert kinds.count("flapping") == 1 and kinds.count("stable") == 1
    assert sim.sent[-1].title == "node-7 stable again: flapped 8 times in 7m, now RUNNING"
    # Every incident that was announced got its resolution (machine consumers close what they opened).
    fired = [n.incident.id for n in sim.sent if n.kind == "firing" and n.incident]
    closed = [n.incident.id for n in sim.sent if n.kind == "resolved" and n.incident]
    assert sorted(fired) == sorted(closed) and len(set(fired)) == 2
    # The state stayed exact: the last incident opened at 7 and resolved at 8.
    assert sim.state is not None and sim.state.incident is None and sim.state.last_resolved is not None
    assert sim.state.last_resolved.opened_at == m(7) and sim.state.flap == Flap()


def test_flapping_ends_on_a_failed_node_tells_owners_it_is_still_open() -> None:
    sim = Sim(policy(replace(OPS, repeat_interval=3600.0), flapping=(3, 600.0)), prev="RUNNING")
    for s, t in [("FAILED", 1), ("STARTING", 2), ("FAILED", 3), ("STARTING", 4), ("FAILED", 5)]:
        sim.event(s, t)
    sim.run(20)
    assert [n.kind for n in sim.sent] == ["firing", "flapping", "stable"]
    stable = sim.sent[-1]
    assert stable.incident is not None and stable.context()["incident"]["state"] == "open"
    assert stable.title == "node-7 stable again: flapped 5 times in 4m, now FAILED"
    sim.run(61)
    assert [n.kind for n in sim.sent][-1] == "reminder"


def test_flapping_that_settles_down_pages_the_incident_it_settled_in() -> None:
    # Flapping began on the FAILED that opened an incident nobody was told of (held), and the node
    # settled FAILED in another: its owners get that incident's firing, then the summary.
    sim = Sim(policy(OPS, flapping=(3, 600.0)), prev="RUNNING")
    for s, t in [("FAILED", 0), ("RUNNING", 1), ("FAILED", 2), ("RUNNING", 3), ("FAILED", 4)]:
        sim.event(s, t)
    assert [n.kind for n in sim.sent] == ["firing", "resolved", "flapping"]
    sim.run(20)
    assert [n.kind for n in sim.sent] == ["firing", "resolved", "flapping", "firing", "stable"]
    firing, stable = sim.sent[-2:]
    assert firing.incident is not None and firing.incident.opened_at == m(4) and firing.key != stable.key
    assert sim.state is not None and sim.state.incident is not None
    assert sim.state.incident.notified == ("ops",)
    sim.event("RUNNING", 30)
    assert sim.sent[-1].kind == "resolved" and sim.sent[-1].incident is not None
    assert sim.sent[-1].incident.id == firing.incident.id
    # Every firing got its resolution.
    fired = [n.incident.id for n in sim.sent if n.kind == "firing" and n.incident]
    closed = [n.incident.id for n in sim.sent if n.kind == "resolved" and n.incident]
    assert sorted(fired) == sorted(closed)


def test_changes_spread_wider_than_the_window_are_not_flapping() -> None:
    sim = Sim(policy(OPS, flapping=(4, 600.0)), prev="RUNNING")
    for i, s in enumerate(["FAILED", "RUNNING"] * 4):
        sim.event(s, i * 4)  # one change every 4 minutes: never 4 inside 10
    assert [n.kind for n in sim.sent] == ["firing", "resolved"] * 4


# --- timers are data ---------------------------------------------------------------------------------


def test_a_timer_applied_twice_fires_once() -> None:
    sim = Sim(policy(replace(OPS, repeat_interval=600.0)))
    sim.event("FAILED", 0)
    (reminder,) = sim.jobs.values()
    first = on_timer(sim.state, reminder, m(10), sim.policy)
    second = on_timer(first.state, reminder, m(10), sim.policy)
    assert [n.kind for n in first.notifications] == ["reminder"]
    assert second.outcome == "stale" and second.notifications == () and second.state == first.state
    # Two replicas applying the same timer to the same state compute the same step (same ids).
    assert on_timer(sim.state, reminder, m(10), sim.policy) == first


def test_timer_ids_are_deterministic_and_distinct() -> None:
    pol = policy(replace(OPS, hold=60.0, repeat_interval=600.0, escalate=((1800.0, ("pager",)),)))
    a = step_event(None, node_id=NODE, source="e", prev_status=None, status="FAILED", at=m(0), now=m(0),
                   matched=["ops"], policy=pol)
    b = step_event(None, node_id=NODE, source="e", prev_status=None, status="FAILED", at=m(0), now=m(0),
                   matched=["ops"], policy=pol)
    assert a == b and len({t.id for t in a.set_timers}) == len(a.set_timers) == 2
    assert Timer.from_json(json.loads(json.dumps(a.set_timers[0].to_json()))) == a.set_timers[0]


def test_reload_that_drops_the_route_cancels_its_timers() -> None:
    sim = Sim(policy(replace(OPS, repeat_interval=600.0, escalate=((1800.0, ("pager",)),))))
    sim.event("FAILED", 0)
    assert len(sim.jobs) == 2
    new = policy(RoutePolicy("other", ("mail",)))
    step = sim.apply(reconcile(sim.state, node_id=NODE, now=m(1), policy=new))
    assert step.outcome == "reconciled" and sim.jobs == {}
    # Even a timer that escaped the cancel sends nothing for a route that is gone.
    sim.policy = new
    stale = Timer.make("reminder", NODE, "ops", 1, m(10), sim.state.incident.id, "FAILED")  # type: ignore[union-attr]
    assert on_timer(sim.state, stale, m(10), new).notifications == ()


# --- plain routes ------------------------------------------------------------------------------------


def test_plain_route_notifies_changes_not_repeats() -> None:
    started = RoutePolicy("starting", ("slack",))
    sim = Sim(policy(started), prev="RUNNING")
    outcomes = [sim.event(s, t, ("starting",) if s == "STARTING" else ()).outcome
                for s, t in [("STARTING", 0), ("STARTING", 1), ("RUNNING", 2), ("STARTING", 3)]]
    assert outcomes == ["event", "repeat", "event", "event"]
    assert [(n.kind, n.at) for n in sim.sent] == [("event", m(0)), ("event", m(3))]


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        # Stuck in STARTING for 15 minutes: one alert at 15m.
        ([("STARTING", 0), ("STARTING", 5)], [("event", 15)]),
        # It came up in time: nothing.
        ([("STARTING", 0), ("RUNNING", 10)], []),
        # STARTING → IN_PROGRESS, both matched by the route: still held, alert at 15m from the first.
        ([("STARTING", 0), ("IN_PROGRESS", 10)], [("event", 15)]),
    ],
)
def test_plain_for_means_still_in_a_matching_status(events: list[tuple[str, float]],
                                                    expected: list[tuple[str, float]]) -> None:
    stuck = RoutePolicy("stuck", ("slack",), hold=900.0)
    sim = Sim(policy(stuck), prev="RUNNING")
    for s, t in events:
        sim.event(s, t, ("stuck",) if s in ("STARTING", "IN_PROGRESS") else ())
    sim.run(100)
    assert [(n.kind, n.at) for n in sim.sent] == [(k, m(t)) for k, t in expected]
    if expected:
        assert sim.sent[0].title == "node-7 still STARTING after 15m"


def test_routes_that_do_not_own_the_incident_stay_plain() -> None:
    """The old recovery route (RUNNING after FAILED) keeps working beside the owner's resolution,
    and a receiver named by both gets one message."""
    recovery = RoutePolicy("recovery", ("mail", "slack"))
    sim = Sim(policy(OPS, recovery), prev="RUNNING")
    sim.event("FAILED", 0, ("ops",))
    sim.event("RUNNING", 5, ("recovery",))
    assert sim.kinds() == [("firing", "ops", ("slack",)), ("resolved", "ops", ("slack",)),
                           ("event", "recovery", ("mail",))]


def test_send_updates_and_send_resolved() -> None:
    chatty = RoutePolicy("chatty", ("slack",), send_updates=True)
    quiet = RoutePolicy("quiet", ("pager",), send_resolved=False)
    sim = Sim(policy(chatty, quiet))
    for s, t in [("FAILED", 0), ("STARTING", 1), ("RUNNING", 2)]:
        sim.event(s, t, ("chatty", "quiet") if s == "FAILED" else ())
    assert sim.kinds() == [("firing", "chatty", ("slack",)), ("firing", "quiet", ("pager",)),
                           ("update", "chatty", ("slack",)), ("resolved", "chatty", ("slack",))]
    assert sim.sent[2].title == "node-7 now STARTING (incident open 1m)"


# --- ack, resolve by hand, silences ------------------------------------------------------------------


def test_resolve_by_hand() -> None:
    sim = Sim(policy(replace(OPS, repeat_interval=600.0)))
    sim.event("FAILED", 0)
    assert sim.state is not None and sim.state.incident is not None
    inc_id = sim.state.incident.id
    assert resolve(sim.state, "inc_nope", by="alice", now=m(1), policy=sim.policy).outcome == "not_found"
    step = sim.apply(resolve(sim.state, inc_id, by="alice", now=m(4), policy=sim.policy))
    assert step.outcome == "resolved" and sim.jobs == {}
    assert sim.sent[-1].context()["incident"]["path_text"] == "FAILED 4m → resolved by alice"
    # Still FAILED: a repeat does not reopen; leaving and coming back does.
    assert sim.event("FAILED", 5).outcome == "repeat"
    assert sim.event("STARTING", 6).outcome == "event"
    assert sim.event("FAILED", 7).outcome == "opened"
    assert sim.state.incident is not None and sim.state.incident.id != inc_id


def test_silenced_firing_goes_out_at_the_first_recheck_after_the_silence() -> None:
    sim = Sim(policy(replace(OPS, repeat_interval=600.0)))
    sim.event("FAILED", 0, mute=True)
    sim.run(25, mute=True)
    assert sim.sent == []
    sim.run(35)
    # The reminder armed while it was withheld counts again from the firing: none 4 minutes after it.
    assert [(n.kind, n.at) for n in sim.sent] == [("firing", m(26))]
    sim.run(36)
    assert [(n.kind, n.at) for n in sim.sent] == [("firing", m(26)), ("reminder", m(36))]
    sim.event("RUNNING", 37)
    assert [n.kind for n in sim.sent] == ["firing", "reminder", "resolved"]
    assert sim.jobs == {}


def test_a_node_still_down_after_its_silence_is_paged_without_another_event() -> None:
    # No repeat_interval and no further event from the node: the re-check alone pages it, once.
    sim = Sim(policy(OPS))
    sim.event("FAILED", 0, mute=True)
    sim.run(90, mute=True)
    assert sim.sent == [] and [t.kind for t in sim.jobs.values()] == ["hold"]
    sim.run(600)
    assert [(n.kind, n.at) for n in sim.sent] == [("firing", m(91))]
    assert sim.jobs == {}  # nothing left to re-check
    sim.event("RUNNING", 700)
    assert [n.kind for n in sim.sent] == ["firing", "resolved"]


def test_the_recheck_follows_the_policy() -> None:
    sim = Sim(policy(OPS, silence_recheck=15.0))
    sim.event("FAILED", 0, mute=True)
    sim.run(1)
    assert [(n.kind, n.at) for n in sim.sent] == [("firing", T0 + timedelta(seconds=15))]


def test_a_resolution_is_never_silenced() -> None:
    # Paged before the silence, recovered inside it: the page must close (else it stays open for ever).
    sim = Sim(policy(replace(OPS, escalate=((600.0, ("pager",)),))))
    sim.event("FAILED", 0)
    sim.run(10)
    sim.event("RUNNING", 12, mute=True)
    assert sim.kinds() == [("firing", "ops", ("slack",)), ("escalation", "ops", ("pager",)),
                           ("resolved", "ops", ("slack", "pager"))]


def test_a_silenced_escalation_goes_out_once_the_silence_is_over() -> None:
    sim = Sim(policy(replace(OPS, escalate=((600.0, ("pager",)), (1200.0, ("boss",))))))
    sim.event("FAILED", 0)
    sim.run(15, mute=True)
    assert sim.kinds() == [("firing", "ops", ("slack",))]
    sim.run(20)
    sim.event("RUNNING", 21)
    assert [(n.kind, n.receivers, n.at) for n in sim.sent[1:3]] == [("escalation", ("pager",), m(16)),
                                                                     ("escalation", ("boss",), m(20))]
    assert sim.kinds()[-1] == ("resolved", "ops", ("slack", "pager", "boss"))


def test_an_ack_stops_a_firing_a_silence_withheld() -> None:
    # Somebody is on it: nobody new is paged (the re-check, a held `for`), nothing is left to re-check.
    sim = Sim(policy(OPS, replace(OPS, name="slow", to=("pager",), hold=600.0)))
    sim.event("FAILED", 0, ("ops", "slow"), mute=True)
    assert sim.state is not None and sim.state.incident is not None
    sim.apply(ack(sim.state, sim.state.incident.id, by="alice", now=m(0.5)))
    assert sim.jobs == {}
    sim.run(60)
    assert sim.sent == []


def test_a_reminder_and_a_recheck_both_due_after_a_silence_fire_once() -> None:
    # A reminder armed while withheld and the re-check both come due once the silence is over:
    # whichever comes first sends the firing, the other nothing.
    sim = Sim(policy(replace(OPS, repeat_interval=600.0), silence_recheck=45.0))
    sim.event("FAILED", 0, mute=True)
    sim.run(9.9, mute=True)
    sim.run(12)
    assert [(n.kind, n.at) for n in sim.sent] == [("firing", m(10))]
    assert sorted(t.kind for t in sim.jobs.values()) == ["reminder"]


def test_a_long_silence_keeps_one_recheck_per_owner() -> None:
    sim = Sim(policy(replace(OPS, repeat_interval=120.0, escalate=((300.0, ("pager",)),))))
    sim.event("FAILED", 0, mute=True)
    for minute in range(1, 30):
        sim.run(minute, mute=True)
        assert sorted(t.kind for t in sim.jobs.values()).count("hold") == 1
    assert sim.sent == []


def test_a_silence_does_not_keep_a_flapping_notice_open() -> None:
    # The notice went out (a pager alert opened); the node settles while a silence covers it: the
    # summary that closes that alert still goes out, the withheld firing waits for the silence's end.
    sim = Sim(policy(OPS, flapping=(3, 600.0)), prev="RUNNING")
    for s, t in [("FAILED", 0), ("RUNNING", 1), ("FAILED", 2)]:
        sim.event(s, t)
    assert [n.kind for n in sim.sent] == ["firing", "resolved", "flapping"]
    sim.run(12.5, mute=True)
    assert [n.kind for n in sim.sent] == ["firing", "resolved", "flapping", "stable"]
    sim.run(20)
    assert [n.kind for n in sim.sent][-1] == "firing"


def test_flapping_nobody_was_told_of_ends_quietly_inside_the_silence() -> None:
    sim = Sim(policy(OPS, flapping=(3, 600.0)), prev="RUNNING")
    for s, t in [("FAILED", 0), ("RUNNING", 0.2), ("FAILED", 0.4)]:  # inside one re-check interval
        sim.event(s, t, mute=True)
    sim.run(30, mute=True)
    assert sim.sent == []
    sim.run(32)
    assert [n.kind for n in sim.sent] == ["firing"]  # the incident it settled in, once the silence is over


def test_an_acked_incident_settling_after_flapping_pages_nobody_new() -> None:
    sim = Sim(policy(OPS, flapping=(3, 600.0)), prev="RUNNING")
    for s, t in [("FAILED", 0), ("RUNNING", 1), ("FAILED", 2)]:
        sim.event(s, t)
    assert sim.state is not None and sim.state.incident is not None
    sim.apply(ack(sim.state, sim.state.incident.id, by="alice", now=m(3)))
    sim.run(30)
    assert [n.kind for n in sim.sent] == ["firing", "resolved", "flapping", "stable"]


def test_two_incidents_opened_at_one_instant_have_two_ids() -> None:
    # FAILED, RUNNING, then another status of open_on, all stamped alike: another incident, another
    # id (its firing's delivery id, its pager alert and its Slack thread with it).
    sim = Sim(policy(OPS, open_on=frozenset({"FAILED", "UNKNOWN"})), prev="RUNNING")
    for s in ("FAILED", "RUNNING", "UNKNOWN"):
        sim.event(s, 0)
    firings = [n for n in sim.sent if n.kind == "firing"]
    assert len(firings) == 2 and firings[0].incident is not None and firings[1].incident is not None
    assert firings[0].incident.id != firings[1].incident.id and firings[0].key != firings[1].key


def test_silenced_incident_resolves_without_a_message() -> None:
    # Nobody was told the firing (the silence covered it until the node recovered): nothing to end.
    sim = Sim(policy(OPS))
    sim.event("FAILED", 0, mute=True)
    sim.event("RUNNING", 0.5)
    assert sim.sent == [] and sim.jobs == {}


# --- stored form -------------------------------------------------------------------------------------


def test_state_round_trips_mid_flight() -> None:
    sim = Sim(policy(replace(OPS, repeat_interval=600.0, escalate=((60.0, ("pager",)),)), flapping=(3, 600.0)))
    for s, t in [("FAILED", 0), ("STARTING", 1), ("FAILED", 2), ("STARTING", 3)]:
        sim.event(s, t)
    sim.run(3.5)
    assert sim.state is not None and sim.state.flap.active and sim.state.timers
    assert IncidentState.from_json(json.loads(json.dumps(sim.state.to_json()))) == sim.state


def test_a_quiet_node_stores_almost_nothing() -> None:
    step = step_event(IncidentState(last_at=m(0)), node_id=NODE, source="e", prev_status="RUNNING", status="RUNNING",
                      at=m(1), now=m(1), matched=["ops"], policy=policy(OPS))
    assert step.outcome == "repeat" and step.state.to_json() == {"last_at": "2026-04-16T12:01:00.000000Z"}


# As 74ee715 (the version before records left out default fields) wrote a node's incident state:
# a resolved incident, an open acknowledged one with a pending timer, flapping.
_BLOB_74EE715 = (
    "{\"flap\": {\"active\": true, \"count\": 6, \"held\": null, \"last_at\": \"2026-04-16T12:13:00.000000Z\", \"r"
    "ecent\": [\"2026-04-16T12:00:00.000000Z\", \"2026-04-16T12:01:00.000000Z\", \"2026-04-16T12:10:00.0000"
    "00Z\"], \"routes\": [\"ops\"], \"started_at\": \"2026-04-16T12:00:00.000000Z\"}, \"incident\": {\"acked_at\":"
    " \"2026-04-16T12:14:00.000000Z\", \"acked_by\": \"alice\", \"escalated\": [[\"ops\", 0]], \"id\": \"inc_91104"
    "42617945c547d6a\", \"node\": \"node-7\", \"notified\": [], \"opened_at\": \"2026-04-16T12:10:00.000000Z\", "
    "\"opened_seen_at\": \"2026-04-16T12:10:00.000000Z\", \"owners\": [\"ops\"], \"path\": [[\"FAILED\", \"2026-04"
    "-16T12:10:00.000000Z\"], [\"STARTING\", \"2026-04-16T12:11:00.000000Z\"], [\"FAILED\", \"2026-04-16T12:1"
    "2:00.000000Z\"], [\"STARTING\", \"2026-04-16T12:13:00.000000Z\"]], \"path_elided\": 0, \"resolved_at\": n"
    "ull, \"resolved_by\": null, \"told\": [[\"ops\", [\"pager\"]]]}, \"last_at\": \"2026-04-16T12:13:00.000000Z"
    "\", \"last_resolved\": {\"acked_at\": null, \"acked_by\": null, \"escalated\": [[\"ops\", 0]], \"id\": \"inc_d"
    "574343b93427821db0f\", \"node\": \"node-7\", \"notified\": [\"ops\"], \"opened_at\": \"2026-04-16T12:00:00.0"
    "00000Z\", \"opened_seen_at\": \"2026-04-16T12:00:00.000000Z\", \"owners\": [\"ops\"], \"path\": [[\"FAILED\","
    " \"2026-04-16T12:00:00.000000Z\"], [\"RUNNING\", \"2026-04-16T12:01:00.000000Z\"]], \"path_elided\": 0, "
    "\"resolved_at\": \"2026-04-16T12:01:00.000000Z\", \"resolved_by\": null, \"told\": [[\"ops\", [\"slack\", \"p"
    "ager\"]]]}, \"timers\": [{\"anchor\": \"flap:2026-04-16T12:00:00.000000Z\", \"due_at\": \"2026-04-16T12:23"
    ":00.000000Z\", \"id\": \"tmr_2d4334b2d489438b08a6c12e\", \"kind\": \"stable\", \"node\": \"node-7\", \"route\":"
    " \"\", \"status\": \"STARTING\", \"step\": 6}]}"
)


def _keys(value: Any, prefix: str = "") -> set[str]:
    if isinstance(value, dict):
        return set().union(*(({prefix + k} | _keys(v, prefix + k + ".")) for k, v in value.items()))
    if isinstance(value, list):
        return set().union(set(), *(_keys(v, prefix) for v in value))
    return set()


def test_records_of_the_previous_version_read_and_it_reads_ours() -> None:
    """Upgrade, rollback and mixed replicas on one Redis: this version reads what 74ee715 wrote,
    and writes only keys that version wrote too, times as the same ISO text, so its reader (which
    fills in every missing key with its default) reads ours."""
    old = json.loads(_BLOB_74EE715)
    state = IncidentState.from_json(old)
    assert state.incident is not None and state.incident.acked_by == "alice" and state.timers
    assert state.flap.active and state.last_resolved is not None and state.last_resolved.resolved_at == m(1)
    ours = json.loads(json.dumps(state.to_json()))
    assert IncidentState.from_json(ours) == state
    assert _keys(ours) <= _keys(old) and len(json.dumps(ours)) < len(_BLOB_74EE715)
    assert ours["last_at"] == old["last_at"] and ours["incident"]["opened_at"] == old["incident"]["opened_at"]


def test_older_blobs_read_with_defaults() -> None:
    assert IncidentState.from_json(None) == IncidentState() == IncidentState.from_json({})
    inc = Incident.from_json({"id": "inc_1", "node": NODE, "opened_at": "2026-04-16T12:00:00Z", "status": "FAILED"})
    assert inc.path == (("FAILED", T0),) and inc.opened_seen_at == T0 and inc.is_open and inc.notified == ()


def test_silence_recheck_is_configured_and_refused_at_zero() -> None:
    base = {"receivers": {"a": {"type": "log"}}, "default_to": "a"}
    cfg = config_mod.parse({**base, "incidents": {"silence_recheck": "15s"}}, env={})
    assert Policy.from_config(cfg).silence_recheck == 15.0
    assert Policy.from_config(config_mod.parse(base, env={})).silence_recheck == 60.0
    with pytest.raises(ConfigError, match=r"incidents\.silence_recheck: must be 1s or longer"):
        config_mod.parse({**base, "incidents": {"silence_recheck": "0s"}}, env={})


def test_policy_from_config() -> None:
    cfg = config_mod.parse(
        {
            "receivers": {"a": {"type": "log"}, "p": {"type": "log"}},
            "routes": [{"name": "r", "to": "a", "for": "2m", "repeat_interval": "1h", "send_updates": True,
                        "escalate": [{"after": "30m", "to": "p"}]}],
            "default_to": "a",
            "incidents": {"open_on": ["FAILED", "PAUSED"], "flapping": {"transitions": 4, "window": "10m"}},
        },
        env={},
    )
    pol = Policy.from_config(cfg)
    assert pol.routes["r"] == RoutePolicy("r", ("a",), 120.0, 3600.0, ((1800.0, ("p",)),), True, True)
    assert pol.routes["default"] == RoutePolicy("default", ("a",))
    assert pol.open_on == {"FAILED", "PAUSED"} and pol.resolve_on == {"RUNNING"}
    assert (pol.flap_transitions, pol.flap_window) == (4, 600.0)


def test_a_node_already_failed_before_incidents_existed_gets_one() -> None:
    """After the upgrade the node's status is FAILED but no incident is stored: the next FAILED opens
    one (once); a repeat after that is a repeat."""
    sim = Sim(policy(OPS), prev="FAILED")
    assert [sim.event("FAILED", t).outcome for t in (0, 1)] == ["opened", "repeat"]
    assert [n.kind for n in sim.sent] == ["firing"]


def test_plain_reminders_while_stuck_then_stop() -> None:
    stuck = RoutePolicy("stuck", ("slack",), hold=900.0, repeat_interval=1800.0)
    sim = Sim(policy(stuck), prev="RUNNING")
    sim.event("STARTING", 0, ("stuck",))
    sim.run(80)
    assert [(n.kind, n.at) for n in sim.sent] == [("event", m(15)), ("reminder", m(45)), ("reminder", m(75))]
    assert sim.sent[-1].title == "still STARTING after 1h15m: node-7" and sim.sent[-1].incident is None
    sim.event("RUNNING", 80, ())
    sim.run(500)
    assert len(sim.sent) == 3 and sim.jobs == {}


def test_resolve_by_hand_while_flapping_is_sent_at_once() -> None:
    sim = Sim(policy(OPS, flapping=(2, 600.0)), prev="RUNNING")
    sim.event("FAILED", 0)
    sim.event("STARTING", 1)  # second change: flapping
    assert [n.kind for n in sim.sent] == ["firing", "flapping"]
    assert sim.state is not None and sim.state.incident is not None
    sim.apply(resolve(sim.state, sim.state.incident.id, by="bob", now=m(2), policy=sim.policy))
    assert [n.kind for n in sim.sent] == ["firing", "flapping", "resolved"]
    sim.run(30)
    assert [n.kind for n in sim.sent] == ["firing", "flapping", "resolved", "stable"]
    assert sim.sent[-1].title == "node-7 stable again: flapped 2 times in 1m, now STARTING"


def test_every_kind_is_one_the_receivers_know() -> None:
    assert set(get_args(Kind)) <= ALERT_KINDS


# --- reloads between the firing and the resolution -------------------------------------------------


def test_a_reload_renaming_the_route_still_resolves_to_whoever_was_told() -> None:
    pager = RoutePolicy("ops", ("slack", "pd"), escalate=((1800.0, ("oncall",)),))
    sim = Sim(policy(pager, receivers=frozenset({"slack", "pd", "oncall"})), prev="RUNNING")
    sim.event("FAILED", 0)
    sim.run(31)  # the escalation reached oncall
    assert sim.kinds() == [("firing", "ops", ("slack", "pd")), ("escalation", "ops", ("oncall",))]
    # The route is renamed and pd dropped from the config: the resolution still reaches those told
    # who still exist (the one that was removed would only go dead).
    sim.policy = policy(RoutePolicy("ops-renamed", ("slack",)), receivers=frozenset({"slack", "oncall"}))
    sim.event("RUNNING", 40, matched=("ops-renamed",))
    assert sim.kinds()[-1] == ("resolved", "ops", ("slack", "oncall"))


def test_a_reload_changing_the_receivers_resolves_to_old_and_new() -> None:
    sim = Sim(policy(RoutePolicy("ops", ("slack",)), receivers=frozenset({"slack", "pd"})), prev="RUNNING")
    sim.event("FAILED", 0)
    sim.policy = policy(RoutePolicy("ops", ("pd",)), receivers=frozenset({"slack", "pd"}))
    sim.event("RUNNING", 5)
    assert sim.kinds()[-1] == ("resolved", "ops", ("pd", "slack"))
