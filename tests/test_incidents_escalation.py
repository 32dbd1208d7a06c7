"""Whoever an escalation told hears the ack and the end (bridge/incidents.py, docs/incidents.md
``escalate``), also when the route's own firing was not sent: the step came before the route's
``for``, or flapping held the firing. Probe findings s06, s10 and s12."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bridge.incidents import ack
from tests.support.incident_sim import OPS, Sim, m, policy

# FAILED pages "pager" after 2 minutes; the route's own firing waits ``for`` (when set).
PAGED = replace(OPS, escalate=((120.0, ("pager",)),))


def _ack(sim: Sim, minute: float) -> None:
    sim.run(minute)
    assert sim.state is not None and sim.state.incident is not None
    sim.apply(ack(sim.state, sim.state.incident.id, by="alice", now=m(minute)))


@pytest.mark.parametrize("hold", [0.0, 240.0])
def test_an_escalation_is_resolved_with_or_without_for(hold: float) -> None:
    sim = Sim(policy(replace(PAGED, hold=hold)), prev="RUNNING")
    sim.event("FAILED", 0)
    sim.event("RUNNING", 3)  # inside `for` when set: the route's own firing never went out
    fired = [("firing", "ops", ("slack",))] if not hold else []
    told = ("slack", "pager") if not hold else ("pager",)  # nobody who was told nothing
    assert sim.kinds() == [*fired, ("escalation", "ops", ("pager",)), ("resolved", "ops", told)]
    assert len({n.incident.id for n in sim.sent if n.incident is not None}) == 1
    sim.run(60)
    assert sim.jobs == {} and [n.kind for n in sim.sent].count("resolved") == 1


@pytest.mark.parametrize("hold", [0.0, 240.0])
def test_an_escalation_hears_the_ack_then_the_end_once_each(hold: float) -> None:
    # s12: for 4m, escalation at 2m, ack at 3m, RUNNING at 10m.
    sim = Sim(policy(replace(PAGED, hold=hold)), prev="RUNNING")
    sim.event("FAILED", 0)
    _ack(sim, 3)
    sim.run(9)  # the ack stopped the held firing: nobody new is paged
    sim.event("RUNNING", 10)
    told = ("slack", "pager") if not hold else ("pager",)
    fired = [("firing", "ops", ("slack",))] if not hold else []
    assert sim.kinds() == [*fired, ("escalation", "ops", ("pager",)), ("acknowledged", "ops", told),
                           ("resolved", "ops", told)]


def test_a_firing_after_an_early_escalation_resolves_both_once() -> None:
    sim = Sim(policy(replace(PAGED, hold=240.0)), prev="RUNNING")
    sim.event("FAILED", 0)
    sim.run(5)  # the escalation at 2m, the route's firing when `for` passed at 4m
    sim.event("RUNNING", 6)
    assert sim.kinds() == [("escalation", "ops", ("pager",)), ("firing", "ops", ("slack",)),
                           ("resolved", "ops", ("slack", "pager"))]


def test_an_escalation_while_flapping_holds_the_firing_is_resolved_at_the_summary() -> None:
    # s10: the node flaps (no route matches its first changes), ends FAILED: the firing is held, the
    # escalation is not (a timer, not a per-event notification). The node recovers while still flapping.
    sim = Sim(policy(PAGED, flapping=(4, 300.0)), prev=None)
    for s, t in [("RUNNING", 0), ("STARTING", 0.1), ("RUNNING", 0.2), ("STARTING", 0.3)]:
        sim.event(s, t, ())
    sim.event("FAILED", 0.4)
    sim.run(3)
    assert sim.kinds() == [("escalation", "ops", ("pager",))]
    sim.event("RUNNING", 3, ())
    assert sim.kinds() == [("escalation", "ops", ("pager",))]  # the resolution waits for the summary
    sim.run(30)
    # The pager's alert closes. The summary goes to the route whose firing flapping held (it stands
    # for what was held), not to the pager, which was told nothing of the flapping.
    assert sim.kinds() == [("escalation", "ops", ("pager",)), ("resolved", "ops", ("pager",)),
                           ("stable", "ops", ("slack",))]
    assert sim.jobs == {}


def test_an_escalation_while_flapping_hears_the_ack() -> None:
    sim = Sim(policy(PAGED, flapping=(4, 300.0)), prev=None)
    for s, t in [("RUNNING", 0), ("STARTING", 0.1), ("RUNNING", 0.2), ("STARTING", 0.3)]:
        sim.event(s, t, ())
    sim.event("FAILED", 0.4)
    _ack(sim, 3)
    assert sim.kinds() == [("escalation", "ops", ("pager",)), ("acknowledged", "ops", ("pager",))]


def test_send_resolved_false_covers_the_escalation_too() -> None:
    # As for a route whose firing went out: send_resolved: false sends its resolution to nobody.
    sim = Sim(policy(replace(PAGED, hold=240.0, send_resolved=False)), prev="RUNNING")
    sim.event("FAILED", 0)
    sim.event("RUNNING", 3)
    assert sim.kinds() == [("escalation", "ops", ("pager",))]


def test_an_escalation_a_silence_withheld_told_nobody() -> None:
    sim = Sim(policy(replace(PAGED, hold=240.0)), prev="RUNNING")
    sim.event("FAILED", 0)
    sim.run(3, mute=True)  # the escalation step, muted: tried again later, nobody told
    sim.event("RUNNING", 3.5)
    assert sim.sent == [] and sim.jobs == {}


def test_a_silence_never_swallows_the_end_of_an_escalation() -> None:
    sim = Sim(policy(replace(PAGED, hold=240.0)), prev="RUNNING")
    sim.event("FAILED", 0)
    sim.run(3)
    sim.event("RUNNING", 3.5, mute=True)
    assert sim.kinds() == [("escalation", "ops", ("pager",)), ("resolved", "ops", ("pager",))]
