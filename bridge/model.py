"""The bridge's nouns: Event, NodeState, RouteMatch, Delivery. Pure data, no I/O."""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from bridge.frozen import frozen

# Statuses ThunderStack documents today. Others are accepted (new ones may appear) but logged.
KNOWN_STATUSES = frozenset({"RUNNING", "STARTING", "PAUSED", "FAILED", "IN_PROGRESS"})
KNOWN_EVENT_TYPES = frozenset({"NODE_STATUS_UPDATED"})

DeliveryState = Literal["pending", "inflight", "done", "dead"]
DELIVERY_STATES: tuple[DeliveryState, ...] = ("pending", "inflight", "done", "dead")

# ISO-8601 as ThunderStack and its peers write it: date, 'T' or space, time, optional fraction,
# 'Z' or an offset. fromisoformat() alone would accept a bare date or a naive time.
_ISO = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?([Zz]|[+-]\d{2}(:?\d{2})?)$"
)


def utc_now() -> datetime:
    """The bridge's default clock (components take a clock argument; tests pass their own)."""
    return datetime.now(UTC)


# The form ThunderStack sends and the bridge writes: fromisoformat alone reads it, already in UTC.
_CANONICAL = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?Z\Z")


def stored_timestamp(value: str) -> datetime:
    """A timestamp the bridge wrote itself (``format_timestamp``: canonical, UTC), read back without
    parse_timestamp's pattern check. Only for stored values: ``fromisoformat`` also reads ISO forms
    that parse_timestamp refuses on the wire (``20260416T120000Z``); what it cannot read, or reads
    as another zone, goes through parse_timestamp."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return parse_timestamp(value)
    return parsed if parsed.tzinfo is UTC else parse_timestamp(value)


def parse_timestamp(value: str) -> datetime:
    """Parse an ISO-8601 timestamp with a zone into an aware UTC datetime. ValueError otherwise."""
    if _CANONICAL.match(value):
        try:
            return datetime.fromisoformat(value)  # tzinfo is UTC itself ("Z")
        except ValueError:
            pass  # e.g. month 13: the general path below words the error
    if not _ISO.match(value):
        raise ValueError("expected an ISO-8601 date-time with a zone, e.g. 2026-04-16T12:00:00Z")
    text = value.replace("t", "T").replace("z", "Z")
    if "." in text:
        # Python parses at most 6 fractional digits: keep microseconds, drop nanoseconds.
        m = re.search(r"\.(\d+)", text)
        if m and len(m.group(1)) > 6:
            text = text[: m.start(1) + 6] + text[m.end(1) :]
    dt = datetime.fromisoformat(text)  # 3.11+: reads "Z" as UTC
    if dt.tzinfo is None:  # pragma: no cover - the regex requires a zone
        raise ValueError("timestamp has no zone")
    try:
        return dt.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59:59-05:00 is in year 10000 in UTC
        raise ValueError("timestamp is out of range (years 1 to 9999 in UTC)") from None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


# Memoised as format_timestamp is: an accept writes the event's instant as the events' key, the
# node's newest and (usually) its since; the datetime caches its own hash.
@functools.lru_cache(maxsize=1024)
def to_us(dt: datetime) -> int:
    """Integer microseconds since the epoch: exact, unlike ``timestamp()`` floats (stored records)."""
    return (dt - _EPOCH) // _US


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


# Memoised: one accept formats the same few instants many times over (the event's time in its id,
# its record, the incident's id, path and job contexts; the node's last incident on every event).
@functools.lru_cache(maxsize=4096)
def format_timestamp(dt: datetime) -> str:
    """Canonical UTC form: microsecond precision, 'Z' suffix."""
    if dt.tzinfo is not UTC:
        dt = dt.astimezone(UTC) if dt.tzinfo is not None else dt.replace(tzinfo=UTC)
    # Neither strftime nor isoformat (two printf-style formats, the offset's included) nor an
    # f-string with seven format specs: each costs more than this on the request path.
    return "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (  # noqa: UP031
        dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second, dt.microsecond)


def instant_key(node_id: str, stamp: str, status: str) -> str:
    """What names a node's status at an instant (``stamp``: ``format_timestamp``): an event's dedup
    key, and the incident that event opens. NUL, which ingest refuses in ids and statuses, keeps
    the parts apart whatever they hold."""
    return f"{node_id}\x00{stamp}\x00{status}"


# Memoised: the incident an event opens is named by the event's own key, decided a moment after the
# event was parsed: one hash serves both (and a retried event's id).
@functools.lru_cache(maxsize=1024)
def instant_digest(key: str) -> str:
    """The SHA-256 hex digest of a key naming a node's instant (an event's id, an incident's)."""
    return hashlib.sha256(key.encode()).hexdigest()


@frozen
class Event:
    """A verified, validated ThunderStack event."""

    event_type: str
    timestamp: datetime
    node_id: str
    status: str
    details: Mapping[str, Any] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    # Derived once (hashing and formatting are on the request path).
    stamp: str = field(init=False, repr=False, compare=False)  # format_timestamp(timestamp)
    dedup_key: str = field(init=False, repr=False, compare=False)
    id: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        stamp = format_timestamp(self.timestamp)
        # Same node, instant and status: the same event, however it was spelled. Another status at the
        # same instant is another event (a quick FAILED then RUNNING): both count, in arrival order.
        key = instant_key(self.node_id, stamp, self.status)
        object.__setattr__(self, "stamp", stamp)
        object.__setattr__(self, "dedup_key", key)
        object.__setattr__(self, "id", "evt_" + instant_digest(key)[:24])

    @property
    def text_details(self) -> bool:
        """Every detail is text (the documented shape): no number from the body anywhere, so none
        that is NaN, infinite or past 64 bits."""
        return all(type(v) is str for v in self.details.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "eventType": self.event_type,
            "eventTimestamp": self.stamp,
            "nodeId": self.node_id,
            "status": self.status,
            "details": dict(self.details),
            "labels": dict(self.labels),
            "receivedAt": format_timestamp(self.received_at),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        return cls(
            event_type=data["eventType"],
            timestamp=stored_timestamp(data["eventTimestamp"]),
            node_id=data["nodeId"],
            status=data["status"],
            details=dict(data.get("details") or {}),
            labels=dict(data.get("labels") or {}),
            received_at=stored_timestamp(data["receivedAt"]),
        )


@frozen
class NodeState:
    """What the bridge remembers of a node: its newest known status and since when it held."""

    node_id: str
    status: str
    since: datetime  # eventTimestamp at which the node entered ``status``
    # eventTimestamp of the newest event seen for the node; later events older than it are out of
    # order. After one dated too far ahead: max_clock_skew before its arrival (decide.py).
    last_timestamp: datetime
    last_event_id: str


def next_node_state(prev: NodeState | None, event: Event, at: datetime, mark: datetime | None = None) -> NodeState:
    """The node's state after ``event``, shown at ``at``; ``mark``: what later events must not be
    older than (``at`` unless the event was dated too far ahead; decide checks ordering first)."""
    since = prev.since if prev is not None and prev.status == event.status else at
    return NodeState(event.node_id, event.status, since, at if mark is None else mark, event.id)


@frozen
class RouteMatch:
    """One matched route: which receivers it names, and its repeat interval in seconds (0 = none)."""

    route: str
    receivers: tuple[str, ...]
    repeat_interval: float = 0.0


def context_fields(
    route: str, receiver: str, previous_status: str | None, previous_since: datetime | None
) -> dict[str, Any]:
    """``Alert.context()`` but its event: what routing knew when the event was accepted."""
    return {
        "route": route,
        "receiver": receiver,
        "previous_status": previous_status,
        "previous_since": format_timestamp(previous_since) if previous_since else None,
    }


ALERT_KINDS = frozenset(
    {"firing", "update", "reminder", "escalation", "resolved", "flapping", "stable", "event", "acknowledged",
     "digest"}
)


@frozen
class IncidentRef:
    """The incident an alert belongs to, as receivers need it to correlate (id) and explain it."""

    id: str
    opened_at: datetime
    duration: float | None  # seconds open so far (total, on resolution)
    path: str  # e.g. "FAILED 12m → STARTING 3m → RUNNING"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "opened_at": format_timestamp(self.opened_at), "duration": self.duration,
                "path": self.path}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IncidentRef:
        return cls(id=str(data["id"]), opened_at=stored_timestamp(data["opened_at"]),
                   duration=data.get("duration"), path=str(data.get("path") or ""))


@frozen
class GroupTag:
    """Marks a firing job of a route with ``group_wait``: jobs of one receiver with the same ``key``
    go out together as one digest (bridge/grouping.py). ``key`` is opaque to the stores (they index
    it); ``interval`` is the route's group_interval and ``labels`` the group_by values, both as
    decided when the job was made."""

    key: str
    interval: float
    labels: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "interval": self.interval, "labels": dict(self.labels)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GroupTag:
        return cls(str(data["key"]), float(data.get("interval") or 0.0), dict(data.get("labels") or {}))


@frozen
class DigestMember:
    """One incident of a digest: its own job (completed with the digest) and what it says."""

    delivery_id: str
    node_id: str
    status: str
    incident: IncidentRef | None = None
    event_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"delivery_id": self.delivery_id, "node": self.node_id, "status": self.status,
                "event_id": self.event_id, "incident": self.incident.to_dict() if self.incident else None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DigestMember:
        inc = data.get("incident")
        return cls(str(data["delivery_id"]), str(data["node"]), str(data["status"]),
                   IncidentRef.from_dict(inc) if inc else None, str(data.get("event_id") or ""))


@frozen
class Digest:
    """What a grouped send speaks for (``Alert.digest``). ``id``: the group's id, the same on its
    first message and every follow-up to one receiver (a thread root's key); ``update``: these
    members joined a group already sent (a follow-up). Set on ``kind == "digest"`` alerts, and on
    the plain firing a group of one goes out as (so a later follow-up can refer to it)."""

    id: str
    members: tuple[DigestMember, ...]
    update: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)  # the group_by values

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "update": self.update, "labels": dict(self.labels),
                "members": [m.to_dict() for m in self.members]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Digest:
        return cls(str(data["id"]), tuple(DigestMember.from_dict(m) for m in data.get("members") or ()),
                   bool(data.get("update")), dict(data.get("labels") or {}))


TEST_ROUTE = "send-test"  # the route of ``alert-bridge send-test`` alerts: their title says TEST


@frozen
class Alert:
    """What a receiver sends: the event plus what routing knew when it was accepted."""

    event: Event
    route: str
    receiver: str
    delivery_id: str
    previous_status: str | None = None
    previous_since: datetime | None = None  # when the node entered previous_status
    kind: str = "event"  # one of ALERT_KINDS
    incident: IncidentRef | None = None
    # What the kind's wording needs beyond the incident: flap count and span, escalation step, hold.
    facts: Mapping[str, Any] = field(default_factory=dict)
    group: GroupTag | None = None  # a firing held for its route's group_wait (bridge/grouping.py)
    digest: Digest | None = None  # the incidents a grouped send speaks for

    @property
    def own_numbers(self) -> bool:
        """Every number a receiver renders from this alert is the bridge's own (finite, within 64
        bits): its event's details are all text, and it is not a digest of other events."""
        return self.digest is None and self.event.text_details

    @property
    def previous_duration(self) -> float | None:
        """Seconds the node held ``previous_status`` before this event."""
        if self.previous_since is None:
            return None
        return max(0.0, (self.event.timestamp - self.previous_since).total_seconds())

    def context(self) -> dict[str, Any]:
        """Payload stored with a delivery job (a snapshot taken at acceptance)."""
        return {"event": self.event.to_dict(), **context_fields(self.route, self.receiver, self.previous_status,
                                                                self.previous_since),
                "kind": self.kind, "incident": self.incident.to_dict() if self.incident else None,
                **({"facts": dict(self.facts)} if self.facts else {}),
                **({"group": self.group.to_dict()} if self.group else {}),
                **({"digest": self.digest.to_dict()} if self.digest else {})}

    @classmethod
    def from_context(cls, delivery_id: str, data: Mapping[str, Any]) -> Alert:
        since = data.get("previous_since")
        return cls(
            event=Event.from_dict(data["event"]),
            route=data["route"],
            receiver=data["receiver"],
            delivery_id=delivery_id,
            previous_status=data.get("previous_status"),
            previous_since=stored_timestamp(since) if since else None,
            kind=data.get("kind") or "event",  # jobs stored before incidents existed
            incident=IncidentRef.from_dict(data["incident"]) if data.get("incident") else None,
            facts=data.get("facts") or {},
            group=GroupTag.from_dict(data["group"]) if data.get("group") else None,
            digest=Digest.from_dict(data["digest"]) if data.get("digest") else None,
        )


@dataclass(slots=True)
class Delivery:
    """One delivery job: one alert for one receiver, as the store holds it."""

    id: str
    alert: Alert
    state: DeliveryState
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    last_error: str | None = None
    updated_at: datetime | None = None

    @property
    def receiver(self) -> str:
        return self.alert.receiver

    @property
    def order_key(self) -> str:
        return order_key(self.alert.receiver, self.alert.event.node_id)

    def summary(self) -> dict[str, Any]:
        """What an operator sees of a delivery (CLI --json and the admin API)."""
        return {
            "id": self.id, "state": self.state, "receiver": self.receiver, "route": self.alert.route,
            "node": self.alert.event.node_id, "status": self.alert.event.status,
            "event_id": self.alert.event.id, "attempts": self.attempts,
            "created_at": format_timestamp(self.created_at),
            "next_attempt_at": format_timestamp(self.next_attempt_at), "last_error": self.last_error,
        }


def order_key(receiver: str, node_id: str) -> str:
    """Deliveries sharing this key go out one at a time, in event order."""
    return f"{receiver}|{node_id}"


def delivery_id(event_id: str, receiver: str) -> str:
    """Stable per (event, receiver): a receiver gets at most one job per event; webhook-id reuses it."""
    digest = hashlib.sha256(f"{event_id}|{receiver}".encode()).hexdigest()
    return "dlv_" + digest[:24]


@frozen
class Silence:
    """A maintenance window: matching events are recorded and counted but not notified."""

    id: str
    node: str  # glob
    status: tuple[str, ...] | None
    starts_at: datetime
    ends_at: datetime
    comment: str = ""
    created_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "node": self.node,
            "status": list(self.status) if self.status is not None else None,
            "starts_at": format_timestamp(self.starts_at),
            "ends_at": format_timestamp(self.ends_at),
            "comment": self.comment,
            "created_at": format_timestamp(self.created_at) if self.created_at else None,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Silence:
        return cls(
            id=d["id"],
            node=d["node"],
            status=tuple(d["status"]) if d.get("status") is not None else None,
            starts_at=parse_timestamp(d["starts_at"]),
            ends_at=parse_timestamp(d["ends_at"]),
            comment=d.get("comment", ""),
            created_at=parse_timestamp(d["created_at"]) if d.get("created_at") else None,
        )
