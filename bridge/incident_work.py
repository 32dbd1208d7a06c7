"""A step of the incident model under construction, and the pieces every rule is built from:
fire an owner, open an incident, tell whoever was told that it ended. Pure: no I/O, no clock.

bridge/incidents.py holds the rules (events, timers, flapping, commands) and documents them; this
module is what they share, so neither grows past one idea.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Literal

from bridge.frozen import frozen
from bridge.incident_state import (
    Incident,
    IncidentState,
    Kind,
    Notification,
    Policy,
    RoutePolicy,
    Timer,
    TimerKind,
    incident_id,
)
from bridge.model import format_timestamp

Outcome = Literal[
    "opened", "updated", "resolved", "event", "repeat", "out_of_order",  # events
    "fired", "stale",  # timers
    "acked", "not_found", "already_acked", "reconciled",  # commands
]


@frozen
class Step:
    state: IncidentState
    outcome: Outcome
    notifications: tuple[Notification, ...] = ()
    set_timers: tuple[Timer, ...] = ()
    cancel_timers: tuple[str, ...] = ()


def plain_anchor(status: str, since: datetime) -> str:
    return f"plain:{status}|{format_timestamp(since)}"


def is_plain(t: Timer) -> bool:
    return t.anchor.startswith("plain:")


# ``stable`` closes the flapping notice's alert as ``resolved`` closes the firing's.
NEVER_MUTED = frozenset({"resolved", "stable"})


class Work:
    """A step under construction: the state's parts, made mutable for one call."""

    __slots__ = ("cancelled", "flap", "inc", "key", "last_at", "last_resolved", "manual_hold", "mute", "new",
                 "node_id", "now", "out", "policy", "taken", "timers")

    def __init__(self, state: IncidentState, node_id: str, now: datetime, policy: Policy, key: str, mute: bool):
        self.inc = state.incident
        self.timers = {t.id: t for t in state.timers} if state.timers else {}
        self.flap = state.flap
        self.last_at = state.last_at
        self.manual_hold = state.manual_hold
        self.last_resolved = state.last_resolved
        self.node_id, self.now, self.policy, self.key, self.mute = node_id, now, policy, key, mute
        self.out: list[Notification] = []
        self.new: dict[str, Timer] = {}
        self.cancelled: list[str] = []
        self.taken: set[tuple[str, str]] = set()  # (key, receiver): one notification per receiver and key

    @property
    def quiet(self) -> bool:
        """Per-event notifications are held: silenced, or the node is flapping."""
        return self.mute or self.flap.active

    def route(self, name: str) -> RoutePolicy | None:
        return self.policy.routes.get(name)

    def set_timer(self, kind: TimerKind, route: str, step: int, after: float, anchor: str, status: str) -> None:
        t = Timer.make(kind, self.node_id, route, step, self.now + timedelta(seconds=after), anchor, status)
        if t.id not in self.timers:
            self.timers[t.id] = self.new[t.id] = t

    def cancel(self, pred: Callable[[Timer], bool]) -> None:
        if not self.timers:
            return
        for t in [t for t in self.timers.values() if pred(t)]:
            del self.timers[t.id]
            if self.new.pop(t.id, None) is None:  # set and dropped in one step: neither
                self.cancelled.append(t.id)

    def notify(self, kind: Kind, route: str, receivers: Iterable[str], *, status: str, at: datetime,
               incident: Incident | None = None, key: str | None = None, extra: dict[str, Any] | None = None) -> None:
        if self.mute and kind not in NEVER_MUTED:
            return
        k = key or self.key
        taken = self.taken
        fresh = tuple(r for r in dict.fromkeys(receivers) if (k, r) not in taken) if taken else (
            tuple(dict.fromkeys(receivers)))
        if not fresh:
            return
        for r in fresh:
            taken.add((k, r))
        self.out.append(Notification(kind, route, fresh, k, self.node_id, status, at, incident, extra or {}))

    def step(self, outcome: Outcome) -> Step:
        timers = tuple(sorted(self.timers.values(), key=lambda t: (t.due_at, t.id))) if self.timers else ()
        state = IncidentState(self.inc, timers, self.flap, self.last_at, self.manual_hold, self.last_resolved)
        return Step(state, outcome, tuple(self.out), tuple(self.new.values()) if self.new else (),
                    tuple(self.cancelled) if self.cancelled else ())


# --- incident pieces ------------------------------------------------------------------------------


def fire(w: Work, inc: Incident, rp: RoutePolicy, at: datetime, *, reminder_step: int = 1,
         key: str | None = None) -> Incident:
    """The firing for one owner (now, or when its hold ends): sent unless held, reminders armed.
    Withheld by a silence, it is tried again (a hold timer, step 1); withheld by flapping alone, the
    stable summary sends it. Someone acknowledged the incident: nobody new is paged."""
    if rp.name in inc.notified or inc.acked_at is not None:  # a re-check racing the reminder that sent it
        return inc
    mine = [t for t in w.timers.values() if t.route == rp.name and t.anchor == inc.id] if w.timers else []
    reminders = [t for t in mine if t.kind == "reminder"]
    if not w.quiet:
        w.notify("firing", rp.name, rp.to, status=inc.status, at=at, incident=inc, key=key)
        inc = inc.fired(rp.name, rp.to)
        if reminders:  # armed while it was withheld: the next reminder counts from this firing
            reminder_step = max(t.step for t in reminders) + 1
            w.cancel(lambda t: t.kind == "reminder" and t.route == rp.name and t.anchor == inc.id)
            reminders = []
    elif w.mute:  # one re-check per owner: its id is the same each time (set_timer keeps a pending one)
        w.set_timer("hold", rp.name, 1, w.policy.silence_recheck, inc.id, inc.status)
    if rp.repeat_interval and not reminders:
        w.set_timer("reminder", rp.name, reminder_step, rp.repeat_interval, inc.id, inc.status)
    return inc


def open_incident(w: Work, status: str, at: datetime, matched: Sequence[str]) -> Incident:
    routes = w.policy.routes
    owners = tuple([m for m in dict.fromkeys(matched) if m in routes]) if matched else ()
    inc = Incident(incident_id(w.node_id, at, status), w.node_id, at, w.now, ((status, at),), owners)
    if w.timers:
        w.cancel(lambda t: is_plain(t) and t.route in owners)  # the incident speaks for these routes now
    for name in owners:
        rp = w.policy.routes[name]
        if rp.hold:
            w.set_timer("hold", name, 0, rp.hold, inc.id, status)
        else:
            inc = fire(w, inc, rp, at)
        for step, (after, _to) in enumerate(rp.escalate):
            w.set_timer("escalation", name, step, after, inc.id, status)
    return inc


def resolution_targets(w: Work, inc: Incident) -> list[tuple[str, tuple[str, ...]]]:
    """(route, receivers) for the resolution: every route that told somebody (its firing or an
    escalation step) and has send_resolved, to whoever it told."""
    out = []
    known = w.policy.receivers
    for name in inc.told_routes:
        rp = w.route(name)
        told = inc.told_to(name)
        if rp is not None and not rp.send_resolved:
            continue
        if rp is None:  # a reload removed or renamed the route: whoever it told hears the end
            receivers: tuple[str, ...] = told
        else:
            # The route's receivers now (a reload may have changed them) only if its firing went
            # out: an escalation step due before `for` told its own receivers, not the route's.
            fired = rp.to if name in inc.notified else ()
            extra = [r for (route, n) in inc.escalated if route == name and n < len(rp.escalate)
                     for r in rp.escalate[n][1]] if inc.escalated else ()
            receivers = tuple(dict.fromkeys((*fired, *extra, *told)))
        if known is not None:
            receivers = tuple([r for r in receivers if r in known])
        if receivers:
            out.append((name, receivers))
    return out


def send_resolved(w: Work, inc: Incident, at: datetime, key: str | None = None) -> None:
    for name, receivers in resolution_targets(w, inc):
        w.notify("resolved", name, receivers, status=inc.status, at=at, incident=inc, key=key)


def close(w: Work, inc: Incident, at: datetime, by: str | None) -> None:
    inc = inc.closed(at, by)
    if by is None and w.flap.active and not w.mute:
        if resolution_targets(w, inc):
            if w.flap.held is not None:  # a second told incident in one episode (an escalation
                send_resolved(w, w.flap.held, at, key=f"{w.key}/held")  # reached it): never drop one
            w.flap = replace(w.flap, held=inc)
    else:
        send_resolved(w, inc, at)
    if w.timers:
        w.cancel(lambda t: t.anchor == inc.id)
    w.inc, w.last_resolved = None, inc
