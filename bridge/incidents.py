"""Incidents: the alert lifecycle (open, update, resolve, hold, remind, escalate, flapping, ack).

Pure: no I/O, no clock of its own. The data lives in incident_state.py; this module is the rules.

How decide.py uses it (the whole contract):

- The node's state carries one :class:`IncidentState` (``to_json``/``from_json``, one JSON object
  inside the node's blob). ``None`` reads as an empty state.
- For an event decide has accepted *in order* (not a duplicate, not stale) it calls
  :func:`step_event` with the node's previous status, the event's status, its ordering time
  (``decide.order_time``), the bridge clock, the names of the routes ``router.match``
  gave, and ``mute=True`` when a silence covers the event. Out-of-order events need no call (a call
  with one is a no-op with outcome ``out_of_order``: the model checks ordering by itself too).
- A timer job that comes due goes to :func:`on_timer` (``mute=True`` when a silence covers the
  node in its status now). A timer no longer listed in the state is a no-op: redelivery
  after a crash, or the second of two replicas, changes nothing and sends nothing.
- ``ack`` and ``resolve`` are the operator's commands, :func:`reconcile` runs after a reload.
- Every call returns a :class:`Step`: the new state to persist (atomically with the rest),
  notifications to turn into delivery jobs (job id from ``(notification.key, receiver)``), timers
  to persist as jobs due at ``due_at``, and timer ids whose jobs to drop. Dropping is an
  optimisation: a stale timer that still fires is a no-op.

Rules in short (docs/incidents.md has the why):

- An incident opens when the node *enters* a status of ``open_on`` and none is open; the routes the
  opening event matched own it. Every other status change is an update (``send_updates``
  owners that were notified get it); a status of ``resolve_on`` resolves it. A repeat of the current
  status changes nothing.
- An owner with ``for`` gets the firing only if the incident is still open after it (the hold
  timer); ``repeat_interval`` reminds while open and unacknowledged; each ``escalate`` step fires
  once while open and unacknowledged. Only owners that got the firing get updates; the ack and
  the resolution go to whoever was told, by the firing or an escalation step (which may come before
  ``for`` or while flapping holds the firing), so a restart inside ``for`` pages nobody.
- Routes that matched but do not own the open incident are plain: a status change notifies
  (kind ``event``), a repeat does not; with ``for`` the node must stay in statuses the route
  matches for that long; ``repeat_interval`` reminds while it does.
- Flapping (``transitions`` changes within ``window``): one ``flapping`` notification, then
  per-event notifications (firing, update, resolved, event) are held; incident state and timers go
  on exactly. After ``window`` without a change one ``stable`` summary goes out, preceded by the
  held resolution of an incident somebody was told of (its firing before the flapping began, or an
  escalation step).
- ``mute`` (silences): state and timers proceed, news is dropped, owners are not marked notified.
  A withheld firing is tried again every ``silence_recheck`` (a hold timer) while the incident is
  open: a node still down when the silence ends is paged, with or without another event. What
  closes what a receiver was told (``incident_work.NEVER_MUTED``) is never muted: else a page stays open.
- An ack tells whoever was told the firing or an escalation (kind ``acknowledged``): pagers
  acknowledge the alert.
- Timers count on the bridge clock from when they are set; paths and durations use event times.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from bridge.incident_state import Flap, Incident, IncidentState, Notification, Policy, RoutePolicy, Timer
from bridge.incident_work import (
    Outcome,
    Step,
    Work,
    close,
    fire,
    is_plain,
    open_incident,
    plain_anchor,
    send_resolved,
)
from bridge.model import format_timestamp, parse_timestamp

__all__ = [
    "Incident", "IncidentState", "Notification", "Policy", "RoutePolicy", "Step", "Timer",
    "ack", "on_timer", "reconcile", "resolve", "step_event",
]


# --- events ---------------------------------------------------------------------------------------


def step_event(
    state: IncidentState | None,
    *,
    node_id: str,
    source: str,
    prev_status: str | None,
    status: str,
    at: datetime,
    now: datetime,
    matched: Sequence[str],
    policy: Policy,
    mute: bool = False,
) -> Step:
    """Apply one accepted event. ``source``: the event id (notification keys); ``at``: its time,
    clamped by decide; ``matched``: route names from ``router.match`` in order."""
    state = state or IncidentState()
    if state.last_at is not None and at < state.last_at:
        return Step(state, "out_of_order")
    changed = prev_status != status
    if not changed and (state.incident is not None or state.manual_hold or status not in policy.open_on):
        # The common case, kept cheap (the constructor, not dataclasses.replace: half the cost).
        return Step(IncidentState(state.incident, state.timers, state.flap, at, state.manual_hold, state.last_resolved),
                    "repeat")
    w = Work(state, node_id, now, policy, source, mute)
    w.last_at = at
    if changed:
        w.manual_hold = False
        if policy.flap_transitions:
            _note_change(w, at, status, matched)
    inc = w.inc
    handled: tuple[str, ...] = ()  # the incident's owners: it speaks for them
    outcome: Outcome
    if inc is None:
        if status in policy.open_on and not w.manual_hold:
            w.inc = open_incident(w, status, at, matched)
            handled = w.inc.owners
            outcome = "opened"
        else:
            outcome = "event" if changed else "repeat"
    else:  # changed: a repeat inside an incident took the fast path above
        handled = inc.owners
        inc = inc.entered(status, at)
        if status in policy.resolve_on:
            close(w, inc, at, None)
            outcome = "resolved"
        else:
            w.inc = inc
            if not w.quiet:
                for name in inc.notified:
                    rp = w.route(name)
                    if rp is not None and rp.send_updates:
                        w.notify("update", name, rp.to, status=status, at=at, incident=inc)
            outcome = "updated"
    if changed and (matched or w.timers):
        plain = [m for m in dict.fromkeys(matched) if m not in handled and m in policy.routes]
        if plain or w.timers:  # else there is nothing to notify, set or cancel
            _plain_change(w, plain, status, at)
    if w.flap.active and changed:
        _flap_followup(w, at, status, matched)
    return w.step(outcome)


def _plain_of(route: str) -> Callable[[Timer], bool]:
    return lambda t: is_plain(t) and t.route == route


def _plain_change(w: Work, plain: Sequence[str], status: str, at: datetime) -> None:
    keep = set(plain)
    w.cancel(lambda t: is_plain(t) and t.route not in keep)  # the route no longer holds
    for name in plain:
        rp = w.policy.routes[name]
        pending = [t for t in w.timers.values() if is_plain(t) and t.route == name]
        if rp.hold:
            if not pending:  # else: still in statuses the route matches, the running hold goes on
                w.set_timer("hold", name, 0, rp.hold, plain_anchor(status, at), status)
            continue
        w.cancel(_plain_of(name))
        if not w.quiet:
            w.notify("event", name, rp.to, status=status, at=at)
        if rp.repeat_interval:
            w.set_timer("reminder", name, 1, rp.repeat_interval, plain_anchor(status, at), status)


# --- flapping -------------------------------------------------------------------------------------


def _concerned(w: Work, matched: Sequence[str]) -> tuple[str, ...]:
    owners = w.inc.owners if w.inc is not None else ()
    return tuple(r for r in dict.fromkeys([*owners, *matched]) if r in w.policy.routes)


def _note_change(w: Work, at: datetime, status: str, matched: Sequence[str]) -> None:
    """Count a status change; on the change that makes the node flapping, say so once."""
    p, flap = w.policy, w.flap
    if flap.active:
        w.flap = replace(flap, count=flap.count + 1, last_at=at)
        return
    recent = tuple(t for t in (*flap.recent, at) if (at - t).total_seconds() <= p.flap_window)[-p.flap_transitions:]
    if len(recent) < p.flap_transitions:
        w.flap = replace(flap, recent=recent)
        return
    routes = _concerned(w, matched)
    w.flap = Flap(recent, True, recent[0], at, len(recent), routes, w.flap.held, () if w.mute else routes)
    span = (at - recent[0]).total_seconds()
    for name in w.flap.routes:
        rp = w.policy.routes[name]
        w.notify("flapping", name, rp.to, status=status, at=at, incident=w.inc, key=f"{w.key}/flapping",
                 extra={"flap": {"count": len(recent), "since": format_timestamp(recent[0]), "span": span}})


def _flap_followup(w: Work, at: datetime, status: str, matched: Sequence[str]) -> None:
    """While flapping, every change pushes the stable check out by a whole window."""
    w.flap = replace(w.flap, routes=tuple(dict.fromkeys([*w.flap.routes, *_concerned(w, matched)])))
    w.cancel(lambda t: t.kind == "stable")
    started = w.flap.started_at or at
    w.set_timer("stable", "", w.flap.count, w.policy.flap_window, f"flap:{format_timestamp(started)}", status)


def _stable(w: Work, timer: Timer) -> None:
    flap = w.flap
    if flap.held is not None:
        send_resolved(w, flap.held, flap.held.resolved_at or w.now, key=f"{timer.id}/resolved")
    inc = w.inc
    status = inc.status if inc is not None else timer.status
    span = (flap.last_at - flap.started_at).total_seconds() if flap.last_at and flap.started_at else 0.0
    targets = dict.fromkeys([*flap.routes, *(inc.owners if inc else ())])
    w.flap = Flap()
    if inc is not None:
        # Settled in an open incident: the owners whose hold has passed get its firing first (pagers
        # open the incident's own alert; Slack's thread starts with it), then the summary, which
        # closes the flapping notice. The others' hold timers still run.
        for n in inc.owners:
            rp = w.route(n)
            if rp is not None and n not in inc.notified and w.now >= inc.opened_seen_at + timedelta(seconds=rp.hold):
                inc = fire(w, inc, rp, w.now, key=f"{timer.id}/firing")
        w.inc = inc
    for name in targets:
        rp = w.route(name)
        if rp is not None and (name in flap.noticed or not w.mute):  # silenced: only to close a notice
            w.notify("stable", name, rp.to, status=status, at=w.now, incident=inc,
                     extra={"flap": {"count": flap.count, "since": _ts_or_none(flap.started_at), "span": span}})


def _ts_or_none(dt: datetime | None) -> str | None:
    return format_timestamp(dt) if dt is not None else None


# --- timers ---------------------------------------------------------------------------------------


def on_timer(state: IncidentState | None, timer: Timer, now: datetime, policy: Policy, *, mute: bool = False) -> Step:
    """Apply a timer that came due. Idempotent: a timer the state no longer lists is a no-op."""
    state = state or IncidentState()
    stored = state.pending(timer.id)
    if stored is None:
        return Step(state, "stale")
    timer = stored  # the state's copy is the truth; the job only names it
    w = Work(state, timer.node_id, now, policy, timer.id, mute)
    w.cancel(lambda t: t.id == timer.id)
    w.cancelled.remove(timer.id)  # it is the job being applied: its owner completes it
    rp = w.route(timer.route)
    inc = w.inc
    if timer.kind == "stable":
        if w.flap.active:
            _stable(w, timer)
    elif rp is None:
        pass  # a reload removed the route
    elif is_plain(timer):
        _plain_timer(w, timer, rp)
    elif inc is not None and inc.id == timer.anchor:
        if timer.kind == "hold":
            w.inc = fire(w, inc, rp, now)
        elif inc.acked_at is None and timer.kind == "reminder":
            w.inc = _remind(w, inc, rp, timer)
        elif inc.acked_at is None and timer.kind == "escalation" and timer.step < len(rp.escalate):
            after, to = rp.escalate[timer.step]
            if mute:  # held, not lost: tried again until the silence is over (or the incident)
                w.set_timer("escalation", rp.name, timer.step, w.policy.silence_recheck, inc.id, inc.status)
            else:  # told, not notified: its receivers get the ack and the resolution, not the updates
                w.notify("escalation", rp.name, to, status=inc.status, at=now, incident=inc,
                         extra={"escalation": {"step": timer.step, "after": after}})
                w.inc = replace(inc, escalated=(*inc.escalated, (rp.name, timer.step))).tell(rp.name, to)
    return w.step("fired")


def _remind(w: Work, inc: Incident, rp: RoutePolicy, timer: Timer) -> Incident:
    if rp.name not in inc.notified:  # its firing was held (silence, flapping): this is the firing
        return fire(w, inc, rp, w.now, reminder_step=timer.step + 1)
    w.notify("reminder", rp.name, rp.to, status=inc.status, at=w.now, incident=inc,
             extra={"reminder": timer.step})
    w.set_timer("reminder", rp.name, timer.step + 1, rp.repeat_interval, inc.id, inc.status)
    return inc


def _plain_timer(w: Work, timer: Timer, rp: RoutePolicy) -> None:
    since = parse_timestamp(timer.anchor.rpartition("|")[2])
    if timer.kind == "hold":
        if not w.quiet:
            w.notify("event", rp.name, rp.to, status=timer.status, at=w.now, extra={"held_for": rp.hold})
    elif not w.quiet:
        w.notify("reminder", rp.name, rp.to, status=timer.status, at=w.now,
                 extra={"reminder": timer.step, "for": (w.now - since).total_seconds()})
    if rp.repeat_interval:
        w.set_timer("reminder", rp.name, timer.step + 1, rp.repeat_interval, timer.anchor, timer.status)


# --- commands -------------------------------------------------------------------------------------


def ack(state: IncidentState | None, incident_id: str, *, by: str, now: datetime) -> Step:
    """Acknowledge the open incident: reminders, escalations and firings not sent yet stop; the
    resolution still goes out to whoever was told."""
    state = state or IncidentState()
    inc = state.incident
    if inc is None or inc.id != incident_id:
        return Step(state, "not_found")
    if inc.acked_at is not None:
        return Step(state, "already_acked")
    w = Work(state, inc.node_id, now, Policy(), f"ack:{inc.id}", False)
    w.inc = replace(inc, acked_at=now, acked_by=by)
    # Whoever was told the firing or an escalation hears the ack: pagers acknowledge their alert.
    for name in inc.told_routes:
        told = inc.told_to(name)
        if told:
            w.notify("acknowledged", name, told, status=inc.status, at=now, incident=w.inc, extra={"by": by})
    w.cancel(lambda t: t.anchor == inc.id and t.kind in ("reminder", "escalation", "hold"))  # nobody new is paged
    return w.step("acked")


def resolve(state: IncidentState | None, incident_id: str, *, by: str, now: datetime, policy: Policy,
            mute: bool = False) -> Step:
    """Resolve the open incident by hand (``by`` names who). Owners that were notified get the
    resolution now, flapping or not; no new incident opens until the node's status changes."""
    state = state or IncidentState()
    inc = state.incident
    if inc is None or inc.id != incident_id:
        return Step(state, "not_found")
    w = Work(state, inc.node_id, now, policy, f"resolve:{inc.id}", mute)
    close(w, inc, now, by)
    w.manual_hold = inc.status in policy.open_on
    return w.step("resolved")


def reconcile(state: IncidentState | None, *, node_id: str, now: datetime, policy: Policy) -> Step:
    """After a reload: drop timers for routes (or escalation steps) the new config no longer has."""
    state = state or IncidentState()
    w = Work(state, node_id, now, policy, f"reload:{node_id}", False)

    def gone(t: Timer) -> bool:
        if t.kind == "stable":
            return False
        rp = policy.routes.get(t.route)
        return rp is None or (t.kind == "escalation" and t.step >= len(rp.escalate)) or (
            t.kind == "reminder" and not rp.repeat_interval)

    w.cancel(gone)
    return w.step("reconciled")
