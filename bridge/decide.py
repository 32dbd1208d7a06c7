"""What happens to an event: the one decision, pure (no I/O, no clock of its own).

``decide(event, record, policy, now, duplicate=...)`` answers, for every backend, "why was this
event (not) notified". Stores only persist: they read the node's :class:`NodeRecord` and whether
the event's dedup key is live, call ``decide`` (through the closure ingest passes them), and write
the :class:`Decision` atomically.

Dedup is the store's check (an atomic insert-if-absent inside its transaction): the store reports
what it found with ``duplicate=True`` and ``decide`` answers ``duplicate``, so the reasons are all
listed here, in the order they apply:

1. ``duplicate``: the store holds a live dedup record for the event's node and instant;
2. ``stale``: older than ``max_event_age`` on arrival; recorded, node record untouched. Except a
   late recovery: a stale event that resolves the node's open incident and is newer than anything
   the node has seen is decided as below, so the incident closes (and its pages) however late;
3. ``out_of_order``: its ordering time is before the node's newest; recorded, record untouched;
4. ``silenced``: a silence in force matches; the node record moves on, nobody is notified but
   for resolutions (whoever was told a firing hears its end); a withheld firing is tried again
   (``incidents``: the silence re-check);
5. ``accepted``: routed, then the incident model (``incidents.step_event``) says who is told:
   an incident opens, updates or resolves, plain routes notify a status change; a repeat of the
   node's status notifies nobody. Each notification is one job per receiver.

Timers (``for``, reminders, escalations, the flapping window) live in the node's record
(``IncidentState.timers``); stores index the earliest due time and the timer loop applies
:func:`decide_timers` through ``Store.apply``. Ack and resolve by hand are :func:`decide_ack` and
:func:`decide_resolve` (docs/incidents.md).

Ordering time: the event's own time. One dated more than ``max_clock_skew`` ahead (an upstream
clock or format bug) cannot be placed: it is shown at its arrival, and what comes after it need only
be no older than ``max_clock_skew`` before that arrival (or the node's newest event before it, if
later). So a far-future event hides no event sent after it, even one dated a moment before it
arrived; such an event is shown at the far one's arrival, so the node's times never run backwards.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from bridge import incidents
from bridge.config import SilenceConfig
from bridge.frozen import frozen
from bridge.grouping_key import group_tag
from bridge.incident_state import IncidentState, Notification, RoutePolicy
from bridge.incident_state import Policy as IncidentPolicy
from bridge.model import (
    Alert,
    Event,
    GroupTag,
    IncidentRef,
    NodeState,
    RouteMatch,
    Silence,
    delivery_id,
    from_us,
    next_node_state,
    to_us,
)
from bridge.silences import silenced

Outcome = Literal["accepted", "duplicate", "stale", "out_of_order", "silenced", "applied", "not_found"]
# Routing: every matching route for the event, given the node's previous state (Router.match).
Routes = Callable[[Event, NodeState | None], Sequence[RouteMatch]]

_NO_INCIDENTS = IncidentState()



KEPT_OPEN = datetime(9999, 12, 31, tzinfo=UTC)  # the prune time of a node with an open incident: never
_STEP = timedelta(microseconds=1)  # between the queue places of jobs decided one after the other


@frozen
class NodeRecord:
    """Everything the stores hold about one node, persisted as one JSON blob.

    Later features add fields here (with defaults) and to ``to_json``/``from_json``; the backends
    store the blob and never look inside it (they index ``kept_from``, ``next_due`` and
    ``incident_open``)."""

    state: NodeState
    incidents: IncidentState = _NO_INCIDENTS
    queued: datetime | None = None  # the place of the node's newest job in its queues (``Job.order``)

    @property
    def node_id(self) -> str:
        return self.state.node_id

    @property
    def kept_from(self) -> datetime:
        """What pruning counts the record's age from (the stores index it): its newest event, or
        never while an incident is open or a timer is pending (the resolution or the timer, however
        late, needs the record)."""
        incident = self.incidents.incident
        if (incident is not None and incident.is_open) or self.incidents.timers:
            return KEPT_OPEN
        return self.state.last_timestamp

    @property
    def next_due(self) -> datetime | None:
        """When the earliest pending timer is due (the stores index it); None: no timer."""
        timers = self.incidents.timers
        return min(t.due_at for t in timers) if timers else None

    @property
    def incident_open(self) -> bool:
        """Whether the node has an open incident (the stores index it: the incidents-open gauge)."""
        incident = self.incidents.incident
        return incident is not None and incident.is_open

    def to_json(self) -> dict[str, Any]:
        s = self.state
        out: dict[str, Any] = {"status": s.status, "since": to_us(s.since), "newest": to_us(s.last_timestamp),
                               "event": s.last_event_id}
        inc = self.incidents.to_json()
        if inc:  # the default state writes nothing
            out["inc"] = inc
        if self.queued is not None:
            out["q"] = to_us(self.queued)
        return out

    @classmethod
    def from_json(cls, node_id: str, data: Mapping[str, Any]) -> NodeRecord:
        # "fired" (the old repeat_interval suppression times) is ignored: reminders replaced it.
        # interned: the same few statuses, and the node id the record's incidents hold again
        state = NodeState(sys.intern(node_id), sys.intern(data["status"]), from_us(data["since"]),
                          from_us(data["newest"]), data["event"])
        inc = data.get("inc")
        queued = data.get("q")
        return cls(state, IncidentState.from_json(inc) if inc else _NO_INCIDENTS,
                   from_us(queued) if queued is not None else None)


@frozen
class Job:
    """One delivery job to enqueue: the receiver, the route it goes out under, what kind of
    notification it is and the incident it belongs to. ``event``: what the alert shows as its event
    when it is not the accepted one (timers and commands: the node's status at the time)."""

    id: str
    route: str
    receiver: str
    kind: str = "event"
    incident: IncidentRef | None = None
    event: Event | None = None
    facts: Mapping[str, Any] = field(default_factory=dict)  # Alert.facts
    # A firing of a route with group_wait: held until ``not_before`` so the dispatcher can send it
    # with the other firings of its group as one digest (bridge/grouping.py).
    group: GroupTag | None = None
    not_before: datetime | None = None
    # Its place in its receiver+node queue (stores send a queue's jobs in this order): its event's
    # ordering time, or the bridge's clock, always after the node's earlier jobs (``_decided``,
    # which sets it on every job; the default, last of all, is only a placeholder).
    order: datetime = KEPT_OPEN


@frozen
class Decision:
    outcome: Outcome
    record: NodeRecord | None = None  # the node's new record; None: unchanged
    jobs: tuple[Job, ...] = ()
    previous: NodeState | None = None  # the node's state the event was decided on (None for stale)
    silenced_by: str | None = None  # the silence's id (or comment, or "config")
    resolved: tuple[float, ...] = ()  # durations (s) of the incidents this decision resolved (metrics)


@frozen
class Policy:
    """What the decision needs from the config and the store's silences; swapped whole.

    ``incidents``: the incident model's policy (``Policy.from_config``). A matched route it does
    not know (tests that fix the routes) is owned as ``RoutePolicy(route, receivers,
    repeat_interval=...)``."""

    routes: Routes
    silences: Sequence[Silence | SilenceConfig] = ()
    max_event_age: float = 0.0  # 0: no limit
    max_clock_skew: float = 300.0
    incidents: IncidentPolicy = field(default_factory=IncidentPolicy)
    # A node's configured labels (nodes.NodeLabeler.labels_for): alerts decided without an event
    # (timers) show them, and group_by reads them.
    labels: Callable[[str], Mapping[str, str]] | None = None


def order_time(event: Event, max_clock_skew: float) -> datetime:
    """The time an event orders by: its own; one dated more than ``max_clock_skew`` ahead (an upstream
    clock or format bug) orders at its arrival (and the events after it within ``max_clock_skew`` before
    that: ``decide``)."""
    latest = event.received_at + timedelta(seconds=max_clock_skew)
    return event.timestamp if event.timestamp <= latest else event.received_at


def _with_matches(ip: IncidentPolicy, matches: Sequence[RouteMatch]) -> IncidentPolicy:
    known = ip.routes
    for m in matches:
        if m.route not in known:
            break
    else:  # always, but for tests that fix the routes
        return ip
    missing = {m.route: RoutePolicy(m.route, m.receivers, repeat_interval=m.repeat_interval)
               for m in matches if m.route not in known}
    return replace(ip, routes={**known, **missing})


def _decided(prev: NodeRecord | None, state: NodeState, incident_state: IncidentState,
             notifications: Sequence[Notification], event: Event | None, now: datetime,
             policy: Policy | None = None, at: datetime | None = None) -> tuple[NodeRecord, tuple[Job, ...]]:
    """The node's new record and its jobs: one per (notification, receiver); ``event`` None: each
    alert shows the node at the time. A firing of a route with ``group_wait`` is tagged with its
    group and held that long.

    Each job's ``order`` is ``at`` (the event's ordering time; a timer's or a command's: ``now``), a
    microsecond apart in the order decided, and always after the node's previous jobs
    (``NodeRecord.queued``). So across nodes the oldest event goes first, and within one node's
    queue jobs go in the order decided: a reminder or an ack is dated by the bridge's clock, an
    event by ThunderStack's, which may differ by up to ``max_clock_skew``; ordered by those dates,
    a resolution could go out before a reminder queued earlier (while the receiver was down), and
    re-open the page."""
    after = prev.queued if prev is not None else None
    order = at or now
    if after is not None and order <= after:
        order = after + _STEP
    jobs: list[Job] = []
    labeler = policy.labels if policy is not None else None
    for n in notifications:
        if event is not None:
            shown = event
        else:
            labels = labeler(n.node_id) if labeler is not None else {}
            shown = Event("NODE_STATUS_UPDATED", n.at, n.node_id, n.status, labels=labels, received_at=now)
        ref = n.incident_ref()
        tag, hold = None, None
        rp = policy.incidents.routes.get(n.route) if policy is not None and n.kind == "firing" else None
        if rp is not None and rp.group_wait:
            tag = group_tag(n.route, rp.group_by, shown.labels, rp.group_interval)
            hold = now + timedelta(seconds=rp.group_wait)
        own = None if event is not None else shown
        for r in n.receivers:
            jobs.append(Job(delivery_id(n.key, r), n.route, r, n.kind, ref, own, n.extra, tag, hold, order))
            order += _STEP
    queued = jobs[-1].order if jobs else after
    return NodeRecord(state, incident_state, queued), tuple(jobs)


def _resolved(step: incidents.Step) -> tuple[float, ...]:
    inc = step.state.last_resolved
    if step.outcome != "resolved" or inc is None or inc.resolved_at is None:
        return ()
    return (inc.duration(inc.resolved_at),)


def _silence_label(silence: Silence | SilenceConfig) -> str:
    return getattr(silence, "id", None) or silence.comment or "config"


def _late_recovery(event: Event, record: NodeRecord | None, policy: Policy) -> bool:
    """A stale event that ends the node's open incident, newer than anything the node has seen: it
    is decided as accepted, so the incident closes and its resolution goes out, late. Stale stays
    what it was for anything else (nothing opens or notifies from an old event)."""
    return (record is not None and record.incident_open and event.status in policy.incidents.resolve_on
            and event.timestamp >= record.state.last_timestamp)


def decide(
    event: Event, record: NodeRecord | None, policy: Policy, now: datetime, *, duplicate: bool = False
) -> Decision:
    """The decision for ``event`` given the node's stored ``record`` (see the module doc)."""
    if duplicate:
        return Decision("duplicate")
    prev = record.state if record is not None else None
    if policy.max_event_age and (now - event.timestamp).total_seconds() > policy.max_event_age and not (
            _late_recovery(event, record, policy)):
        return Decision("stale")
    at = order_time(event, policy.max_clock_skew)
    if prev is not None and at < prev.last_timestamp:
        return Decision("out_of_order", previous=prev)
    mark = None
    if at != event.timestamp:  # dated too far ahead: see the module doc
        mark = at - timedelta(seconds=policy.max_clock_skew)
        if prev is not None and prev.last_timestamp > mark:
            mark = prev.last_timestamp
    shown = record.incidents.last_at if record is not None else None
    if shown is not None and at < shown:  # just after one dated too far ahead, which shows at its arrival
        at = shown
    state = next_node_state(prev, event, at, mark)
    silence = silenced(policy.silences, event, now) if policy.silences else None
    matches = policy.routes(event, prev)
    ip = _with_matches(policy.incidents, matches) if matches else policy.incidents
    inc = _reconciled(record.incidents if record is not None else None, event.node_id, now, ip)
    step = incidents.step_event(
        inc, node_id=event.node_id, source=event.id, prev_status=prev.status if prev else None,
        status=event.status, at=at, now=now, matched=[m.route for m in matches] if matches else (), policy=ip,
        mute=silence is not None,
    )
    new, jobs = _decided(record, state, step.state, step.notifications, event, now, policy, at)
    if silence is not None:  # the only notifications a silence lets through: resolutions of what was told
        return Decision("silenced", new, jobs, previous=prev, silenced_by=_silence_label(silence),
                        resolved=_resolved(step))
    return Decision("accepted", new, jobs, previous=prev, resolved=_resolved(step))


def _reconciled(state: IncidentState | None, node_id: str, now: datetime, ip: IncidentPolicy) -> IncidentState | None:
    """Timers of routes (or steps) a reload removed are dropped lazily, on the node's next decision."""
    if state is None or not state.timers:
        return state
    return incidents.reconcile(state, node_id=node_id, now=now, policy=ip).state


def decide_timers(record: NodeRecord | None, policy: Policy, now: datetime) -> Decision:
    """Fire every timer of ``record`` due at ``now``, in due order (``incidents.on_timer``: one no
    longer listed is a no-op, so a replica that lost the race, or a retry, changes nothing)."""
    if record is None or not record.incidents.timers:
        return Decision("applied")
    node = record.node_id
    ip = policy.incidents
    state = _reconciled(record.incidents, node, now, ip) or IncidentState()
    notes: list[Notification] = []
    resolved: list[float] = []
    fired = False
    # Only the timers due when this call began: a timer a fired one sets at or before ``now`` waits
    # for the next call, so no duration, however small, can spin this loop.
    due_ids = {t.id for t in state.timers if t.due_at <= now}
    while True:
        due = next((t for t in state.timers if t.id in due_ids and t.due_at <= now), None)
        if due is None:
            break
        due_ids.discard(due.id)
        # A silence covers the node as it is now (a re-check set while it was PAUSED is muted by a
        # [FAILED] silence once it is FAILED again).
        probe = Event("NODE_STATUS_UPDATED", now, node, record.state.status, received_at=now)
        mute = silenced(policy.silences, probe, now) is not None if policy.silences else False
        step = incidents.on_timer(state, due, now, ip, mute=mute)
        if step.outcome == "stale":  # not expected (it was listed); never loop on it
            state = replace(state, timers=tuple(t for t in state.timers if t.id != due.id))
        else:
            state = step.state
        notes.extend(step.notifications)
        resolved.extend(_resolved(step))
        fired = True
    if not fired and state == record.incidents:
        return Decision("applied")
    new, jobs = _decided(record, record.state, state, notes, None, now, policy)
    return Decision("applied", new, jobs, previous=record.state, resolved=tuple(resolved))


def _command(record: NodeRecord | None, incident_id: str, step: incidents.Step, now: datetime) -> Decision:
    if record is None or step.outcome in ("not_found", "already_acked"):
        return Decision("not_found" if step.outcome == "not_found" else "applied")
    new, jobs = _decided(record, record.state, step.state, step.notifications, None, now)
    return Decision("applied", new, jobs, previous=record.state, resolved=_resolved(step))


def decide_ack(record: NodeRecord | None, incident_id: str, *, by: str, now: datetime) -> Decision:
    """Acknowledge the node's open incident ``incident_id``: reminders and escalations stop."""
    state = record.incidents if record is not None else None
    return _command(record, incident_id, incidents.ack(state, incident_id, by=by, now=now), now)


def decide_resolve(record: NodeRecord | None, incident_id: str, policy: Policy, *, by: str,
                   now: datetime) -> Decision:
    """Resolve the node's open incident ``incident_id`` by hand: the resolution goes out now."""
    state = record.incidents if record is not None else None
    return _command(record, incident_id,
                    incidents.resolve(state, incident_id, by=by, now=now, policy=policy.incidents), now)


def outdated(alert: Alert, record: NodeRecord | None) -> bool:
    """Whether a dead delivery speaks of something that is over: a firing, update, reminder,
    escalation or acknowledgement of an incident the node's record no longer holds open, or a
    flapping notice (pagers correlate it by the node) of a flapping episode that has ended (its
    stable summary was decided). Retried now, it would go out after what closed it and re-open the
    page (PagerDuty, Opsgenie). A resolution, a stable summary, a plain event's notice and anything
    of an incident or episode still going on are never outdated."""
    if alert.kind == "flapping":
        return record is None or not record.incidents.flap.active
    inc = alert.incident
    if inc is None or alert.kind in ("resolved", "stable", "event"):
        return False
    current = record.incidents.incident if record is not None else None
    return current is None or current.id != inc.id or not current.is_open


# What a store calls: the node's record (None: unknown) and whether the dedup key is live.
Decider = Callable[[NodeRecord | None, bool], Decision]
# What ``Store.apply`` calls: the node's record (None: unknown).
Apply = Callable[[NodeRecord | None], Decision]


def decider(event: Event, policy: Policy, now: datetime) -> Decider:
    """``decide`` bound to one event, as ingest hands it to ``Store.accept``."""

    def run(record: NodeRecord | None, duplicate: bool) -> Decision:
        return decide(event, record, policy, now, duplicate=duplicate)

    return run
