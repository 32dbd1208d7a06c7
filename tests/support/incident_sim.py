"""A stand-in for the stores and decide around the pure incident model (bridge/incidents.py).

``Sim`` keeps the node's state, the outbox of timer jobs (built only from the steps' set/cancel
lists, and checked against the state's own list after every step), fires due timers in order, and
records what was sent. Times are minutes after ``T0`` (``m``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bridge.incident_state import IncidentState, Notification, Policy, RoutePolicy, Timer
from bridge.incidents import Step, on_timer, step_event

T0 = datetime(2026, 4, 16, 12, 0, tzinfo=UTC)
NODE = "node-7"


def m(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def policy(*routes: RoutePolicy, flapping: tuple[int, float] = (0, 600.0), **kw: Any) -> Policy:
    return Policy(flap_transitions=flapping[0], flap_window=flapping[1], routes={r.name: r for r in routes}, **kw)


OPS = RoutePolicy("ops", ("slack",))


class Sim:
    def __init__(self, pol: Policy, prev: str | None = None) -> None:
        self.policy = pol
        self.state: IncidentState | None = None
        self.prev = prev
        self.jobs: dict[str, Timer] = {}
        self.sent: list[Notification] = []
        self.steps: list[Step] = []
        self.n = 0

    def apply(self, step: Step) -> Step:
        for tid in step.cancel_timers:
            assert tid in self.jobs, "cancelled a timer that was never set"
            del self.jobs[tid]
        for t in step.set_timers:
            assert t.id not in self.jobs, "set a timer twice"
            self.jobs[t.id] = t
        self.state = step.state
        assert set(self.jobs) == {t.id for t in step.state.timers}, "outbox and state disagree on pending timers"
        self.sent.extend(step.notifications)
        self.steps.append(step)
        return step

    def run(self, until: float, *, mute: bool = False) -> None:
        """Fire every timer due by minute ``until``, in due order, each at its due time."""
        while True:
            due = sorted((t for t in self.jobs.values() if t.due_at <= m(until)), key=lambda t: (t.due_at, t.id))
            if not due:
                return
            t = due[0]
            del self.jobs[t.id]  # the claimed job is done whatever the step says
            self.apply(on_timer(self.state, t, t.due_at, self.policy, mute=mute))

    def event(self, status: str, minute: float, matched: tuple[str, ...] = ("ops",), *, now: float | None = None,
              mute: bool = False) -> Step:
        clock = minute if now is None else now
        self.run(clock)
        self.n += 1
        step = self.apply(step_event(self.state, node_id=NODE, source=f"evt_{self.n}", prev_status=self.prev,
                                     status=status, at=m(minute), now=m(clock), matched=matched, policy=self.policy,
                                     mute=mute))
        if step.outcome != "out_of_order":
            self.prev = status
        return step

    def kinds(self) -> list[tuple[str, str, tuple[str, ...]]]:
        return [(n.kind, n.route, n.receivers) for n in self.sent]
