"""What happens to an event: the one decision, pure (no I/O, no clock of its own).

``decide(event, record, policy, now, duplicate=...)`` answers, for every backend, "why was this
event (not) notified". Stores only persist: they read the node's :class:`NodeRecord` and whether
the event's dedup key is live, call ``decide`` (through the closure ingest passes them), and write
the :class:`Decision` atomically.

Dedup is the store's check (an atomic insert-if-absent inside its transaction): the store reports
what it found with ``duplicate=True`` and ``decide`` answers ``duplicate``, so the reasons are all
listed here, in the order they apply:

1. ``duplicate``: the store holds a live dedup record for the event's node and instant;
2. ``stale``: older than ``max_event_age`` on arrival; recorded, node record untouched;
3. ``out_of_order``: its ordering time is before the node's newest; recorded, record untouched;
4. ``silenced``: a silence in force matches; the node record moves on, nobody is notified;
5. ``accepted``: routed; routes still inside their ``repeat_interval`` for this node and status
   are skipped, and each receiver gets one job, under the first route that names it.

Ordering time: the event time clamped to ``received_at + max_clock_skew``, so an event dated far
in the future (an upstream clock or format bug) orders as "arrival + skew" and cannot mute its
node for longer than the skew.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from bridge.config import SilenceConfig
from bridge.model import Event, NodeState, RouteMatch, Silence, delivery_id, next_node_state
from bridge.silences import silenced

Outcome = Literal["accepted", "duplicate", "stale", "out_of_order", "silenced"]
# Routing: every matching route for the event, given the node's previous state (Router.match).
Routes = Callable[[Event, NodeState | None], Sequence[RouteMatch]]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def to_us(dt: datetime) -> int:
    """Integer microseconds since the epoch: exact, unlike ``timestamp()`` floats."""
    return (dt - _EPOCH) // _US


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """Everything the stores hold about one node, persisted as one JSON blob.

    Later features add fields here (with defaults) and to ``to_json``/``from_json``; the backends
    store the blob and never look inside it (they index ``state.last_timestamp`` only)."""

    state: NodeState
    # status -> route -> when the route (one with a repeat_interval) last fired for this node in
    # that status (unix seconds)
    fired: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    @property
    def node_id(self) -> str:
        return self.state.node_id

    def to_json(self) -> dict[str, Any]:
        s = self.state
        return {"status": s.status, "since": to_us(s.since), "newest": to_us(s.last_timestamp),
                "event": s.last_event_id, "fired": self.fired}

    @classmethod
    def from_json(cls, node_id: str, data: Mapping[str, Any]) -> NodeRecord:
        state = NodeState(node_id, data["status"], from_us(data["since"]), from_us(data["newest"]), data["event"])
        return cls(state, data.get("fired") or {})


@dataclass(frozen=True, slots=True)
class Job:
    """One delivery job to enqueue: the receiver, and the route it goes out under."""

    id: str
    route: str
    receiver: str


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    record: NodeRecord | None = None  # the node's new record; None: unchanged
    jobs: tuple[Job, ...] = ()
    previous: NodeState | None = None  # the node's state the event was decided on (None for stale)
    silenced_by: str | None = None  # the silence's id (or comment, or "config")


@dataclass(frozen=True, slots=True)
class Policy:
    """What the decision needs from the config and the store's silences; swapped whole."""

    routes: Routes
    silences: Sequence[Silence | SilenceConfig] = ()
    max_event_age: float = 0.0  # 0: no limit
    max_clock_skew: float = 300.0


def order_time(event: Event, max_clock_skew: float) -> datetime:
    """The time an event orders by: its own, but never later than arrival + ``max_clock_skew``."""
    latest = event.received_at + timedelta(seconds=max_clock_skew)
    return event.timestamp if event.timestamp <= latest else latest


def select_deliveries(
    matches: Sequence[RouteMatch], last_fired: Mapping[str, float], now_ts: float
) -> tuple[list[tuple[str, str]], list[str]]:
    """Which (route, receiver) pairs get a job, and which routes fired.

    ``last_fired`` maps a route to when it last fired for this node and status (unix seconds).
    A route still inside its repeat_interval is skipped; a receiver named by several routes gets
    one job, under the first route that fired.
    """
    pairs: list[tuple[str, str]] = []
    fired: list[str] = []
    taken: set[str] = set()
    for m in matches:
        if m.repeat_interval > 0:
            last = last_fired.get(m.route)
            if last is not None and now_ts - last < m.repeat_interval:
                continue
        fired.append(m.route)
        for receiver in m.receivers:
            if receiver not in taken:
                taken.add(receiver)
                pairs.append((m.route, receiver))
    return pairs, fired


def decide(
    event: Event, record: NodeRecord | None, policy: Policy, now: datetime, *, duplicate: bool = False
) -> Decision:
    """The decision for ``event`` given the node's stored ``record`` (see the module doc)."""
    if duplicate:
        return Decision("duplicate")
    if policy.max_event_age and (now - event.timestamp).total_seconds() > policy.max_event_age:
        return Decision("stale")
    prev = record.state if record is not None else None
    at = order_time(event, policy.max_clock_skew)
    if prev is not None and at < prev.last_timestamp:
        return Decision("out_of_order", previous=prev)
    state = next_node_state(prev, event, at)
    fired = record.fired if record is not None else {}
    if policy.silences:
        silence = silenced(policy.silences, event, now)
        if silence is not None:
            label = getattr(silence, "id", None) or silence.comment or "config"
            return Decision("silenced", NodeRecord(state, fired), previous=prev, silenced_by=label)
    matches = policy.routes(event, prev)
    now_ts = now.timestamp()
    pairs, fired_routes = select_deliveries(matches, fired.get(event.status, {}), now_ts)
    # Only routes with a repeat_interval ever read these times: keep the record small.
    timed = [m.route for m in matches if m.repeat_interval > 0 and m.route in fired_routes] if fired_routes else ()
    if timed:
        fired = {**fired, event.status: {**fired.get(event.status, {}), **dict.fromkeys(timed, now_ts)}}
    jobs = tuple(Job(delivery_id(event.id, receiver), route, receiver) for route, receiver in pairs)
    return Decision("accepted", NodeRecord(state, fired), jobs, previous=prev)


# What a store calls: the node's record (None: unknown) and whether the dedup key is live.
Decider = Callable[[NodeRecord | None, bool], Decision]


def decider(event: Event, policy: Policy, now: datetime) -> Decider:
    """``decide`` bound to one event, as ingest hands it to ``Store.accept``."""

    def run(record: NodeRecord | None, duplicate: bool) -> Decision:
        return decide(event, record, policy, now, duplicate=duplicate)

    return run
