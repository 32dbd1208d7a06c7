"""The incident model's data: Incident, Timer, Notification, the per-node IncidentState and the
Policy compiled from config. Pure data with JSON round-trips; the rules live in incidents.py.

Times: ``opened_at``, path entries, ``resolved_at`` (by event) are event times (the clamped
``eventTimestamp`` decide computes); timers' ``due_at``, ``opened_seen_at``, ``acked_at`` and a
resolution by hand are bridge-clock times.
"""

from __future__ import annotations

import functools
import hashlib
import sys
from collections.abc import Mapping, Sequence
from dataclasses import field
from datetime import UTC, datetime
from typing import Any, Literal

from bridge.config import Config
from bridge.frozen import frozen
from bridge.model import IncidentRef, format_timestamp, instant_digest, instant_key, parse_timestamp
from bridge.render import notification_title, short_duration

Kind = Literal["firing", "update", "reminder", "escalation", "resolved", "flapping", "stable", "event", "acknowledged"]
TimerKind = Literal["hold", "reminder", "escalation", "stable"]

# An incident keeps at most this many path entries: its first and the newest ones, with a count of
# those dropped in between (a node flapping inside one incident must not grow its state without end).
PATH_LIMIT = 32

DEFAULT_ROUTE = "default"  # routing.DEFAULT_ROUTE (routing imports config; this module stays below it)


def _ts(dt: datetime | None) -> str | None:
    return format_timestamp(dt) if dt is not None else None


# Memoised: a record holds the same instant several times (opened, the path's first step, the last
# event) and nodes share instants; one datetime object then serves them all, in the node caches too.
@functools.lru_cache(maxsize=4096)
def _parse(value: str) -> datetime:
    """A time as this module wrote it (format_timestamp); anything else goes through the strict parser."""
    if len(value) == 27 and value[-1] == "Z":
        try:
            return datetime.fromisoformat(value).astimezone(UTC)
        except ValueError:
            pass
    return parse_timestamp(value)


def _dt(value: Any) -> datetime | None:
    return _parse(value) if isinstance(value, str) else None


def _name(value: Any) -> Any:
    """Statuses, routes, receivers and node ids repeat in every record: one string object for all
    of them (records stay cached per node), instead of one per occurrence as json.loads makes."""
    return sys.intern(value) if type(value) is str else value


@functools.lru_cache(maxsize=1024)
def _shared(names: tuple[Any, ...]) -> tuple[Any, ...]:
    return names  # the first equal tuple seen: owners, notified and told lists repeat across records


def _names(values: Any) -> tuple[Any, ...]:
    return _shared(tuple(_name(v) for v in values or ()))


def human_duration(seconds: float) -> str:
    """12m, 1h30m, 45s; under a second reads 0s (render.short_duration: titles write them the same)."""
    return short_duration(seconds)


def incident_id(node_id: str, opened_at: datetime, status: str) -> str:
    """Stable: same node, opening instant and status, same id on every replica (a PagerDuty dedup_key).
    Two incidents opened at one instant (FAILED, RUNNING, then another status of ``open_on``) differ."""
    return "inc_" + instant_digest(instant_key(node_id, format_timestamp(opened_at), status))[:20]


# --- policy: what the config says, compiled once per config ----------------------------------------


@frozen
class RoutePolicy:
    name: str
    to: tuple[str, ...]
    hold: float = 0.0  # the route's ``for``
    repeat_interval: float = 0.0
    escalate: tuple[tuple[float, tuple[str, ...]], ...] = ()  # (after, receivers), increasing
    send_resolved: bool = True
    send_updates: bool = False
    group_wait: float = 0.0  # fleet digests (bridge/grouping.py); 0: off
    group_interval: float = 300.0  # the config's default
    group_by: tuple[str, ...] = ()


@frozen
class Policy:
    open_on: frozenset[str] = frozenset({"FAILED"})
    resolve_on: frozenset[str] = frozenset({"RUNNING"})
    flap_transitions: int = 0  # 0: flapping detection off
    flap_window: float = 600.0
    routes: Mapping[str, RoutePolicy] = field(default_factory=dict)
    receivers: frozenset[str] | None = None  # the configured receivers (None: not known, keep every one)
    # A firing a silence withheld is tried again this often (seconds), so the end of the silence (or
    # its removal) pages a node that is still down within this long, with or without another event.
    silence_recheck: float = 60.0

    @classmethod
    def from_config(cls, cfg: Config) -> Policy:
        routes = {
            r.name: RoutePolicy(
                r.name, tuple(r.to), r.for_, r.repeat_interval,
                tuple((e.after, tuple(e.to)) for e in r.escalate), r.send_resolved, r.send_updates,
                r.group_wait, r.group_interval, tuple(r.group_by),
            )
            for r in cfg.routes
        }
        if cfg.default_to:
            routes[DEFAULT_ROUTE] = RoutePolicy(DEFAULT_ROUTE, tuple(cfg.default_to))
        inc = cfg.incidents
        return cls(frozenset(inc.open_on), frozenset(inc.resolve_on), inc.flapping.transitions,
                   inc.flapping.window, routes, frozenset(cfg.receivers), inc.silence_recheck)


# --- incident ----------------------------------------------------------------------------------------

Entries = tuple[tuple[str, datetime], ...]
Told = tuple[tuple[str, tuple[str, ...]], ...]


@frozen
class Incident:
    id: str
    node_id: str
    opened_at: datetime  # event time of the opening event
    opened_seen_at: datetime  # bridge clock at opening: hold, escalation and reminder timers count from it
    path: Entries  # (status, entered at, by event time); the first is the opening
    owners: tuple[str, ...]  # routes that matched the opening event
    notified: tuple[str, ...] = ()  # owners sent the firing notification (only they get updates and resolved)
    escalated: tuple[tuple[str, int], ...] = ()  # (route, step) reached
    path_elided: int = 0
    acked_at: datetime | None = None
    acked_by: str | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None  # who resolved it by hand; None: resolved by an event
    # (route, receivers) the firing and escalations reached: the resolution goes to them even after a
    # reload renamed or removed the route or changed its receivers.
    told: Told = ()

    # The copies below call the constructor with every field, positionally: dataclasses.replace
    # costs twice a construction, and these run on every event that opens, changes or resolves an
    # incident (bench/README.md, "Where the time goes").
    def _but(self, notified: tuple[str, ...], told: Told, path: Entries, path_elided: int) -> Incident:
        return Incident(self.id, self.node_id, self.opened_at, self.opened_seen_at, path, self.owners, notified,
                        self.escalated, path_elided, self.acked_at, self.acked_by, self.resolved_at,
                        self.resolved_by, told)

    def _told(self, route: str, receivers: Sequence[str]) -> Told:
        if not self.told:  # the first firing of the incident: the common case
            return ((route, tuple(dict.fromkeys(receivers))),)
        known = dict(self.told)
        merged = tuple(dict.fromkeys((*known.get(route, ()), *receivers)))
        return tuple({**known, route: merged}.items())

    def tell(self, route: str, receivers: Sequence[str]) -> Incident:
        return self._but(self.notified, self._told(route, receivers), self.path, self.path_elided)

    def fired(self, route: str, receivers: Sequence[str]) -> Incident:
        """The incident once ``route``'s firing went to ``receivers``: notified and told, one copy."""
        return self._but((*self.notified, route), self._told(route, receivers), self.path, self.path_elided)

    def closed(self, at: datetime, by: str | None) -> Incident:
        return Incident(self.id, self.node_id, self.opened_at, self.opened_seen_at, self.path, self.owners,
                        self.notified, self.escalated, self.path_elided, self.acked_at, self.acked_by, at, by,
                        self.told)

    def told_to(self, route: str) -> tuple[str, ...]:
        return dict(self.told).get(route, ())

    @property
    def told_routes(self) -> tuple[str, ...]:
        """The routes that told somebody of the incident: its firing, or only an escalation step
        (one due before the route's ``for``, or while flapping held the firing). Their receivers
        hear the ack and the end."""
        if not self.told:
            return self.notified
        return tuple(dict.fromkeys((*self.notified, *(r for r, _ in self.told))))

    @property
    def status(self) -> str:
        return self.path[-1][0]

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None

    def duration(self, at: datetime) -> float:
        end = self.resolved_at if self.resolved_at is not None else at
        return max(0.0, (end - self.opened_at).total_seconds())

    def entered(self, status: str, at: datetime) -> Incident:
        path = (*self.path, (status, at))
        elided = self.path_elided
        if len(path) > PATH_LIMIT:
            path, elided = (path[0], *path[2:]), elided + 1
        return self._but(self.notified, self.told, path, elided)

    def path_text(self, at: datetime) -> str:
        """``FAILED 12m → STARTING 3m → RUNNING``; an open incident's last entry counts up to ``at``."""
        last = len(self.path) - 1
        if not last and self.resolved_at is None and not self.path_elided:  # just opened: the firing's path
            status, entered = self.path[0]
            return f"{status} {human_duration((at - entered).total_seconds())}"
        parts: list[str] = []
        for i, (status, entered) in enumerate(self.path):
            if i == 0 and self.path_elided:
                parts.append(f"{status} → … {self.path_elided} more")
                continue
            if i < last:
                parts.append(f"{status} {human_duration((self.path[i + 1][1] - entered).total_seconds())}")
            elif self.resolved_at is None:
                parts.append(f"{status} {human_duration((at - entered).total_seconds())}")
            elif self.resolved_by is not None:
                parts.append(f"{status} {human_duration((self.resolved_at - entered).total_seconds())}")
                parts.append(f"resolved by {self.resolved_by}")
            else:
                parts.append(status)
        return " → ".join(parts)

    def view(self, at: datetime) -> dict[str, Any]:
        """What templates, the webhook JSON and the admin API show of the incident at ``at``."""
        return {
            "id": self.id, "node": self.node_id, "state": "open" if self.is_open else "resolved",
            "status": self.status, "opened_at": format_timestamp(self.opened_at),
            "duration": self.duration(at), "duration_text": human_duration(self.duration(at)),
            "path": [{"status": s, "since": format_timestamp(t)} for s, t in self.path],
            "path_text": self.path_text(at), "owners": list(self.owners),
            "acked_at": _ts(self.acked_at), "acked_by": self.acked_by,
            "resolved_at": _ts(self.resolved_at), "resolved_by": self.resolved_by,
        }

    def to_json(self) -> dict[str, Any]:
        """Only what differs from the defaults (from_json fills them in, as every earlier version
        does): every node with an open or last incident writes this on each event. Times stay ISO
        text: a version that reads only that may run beside this one (replicas) or after it."""
        # Tuples are written as arrays (orjson and json alike): no list copies.
        out: dict[str, Any] = {"id": self.id, "node": self.node_id, "opened_at": format_timestamp(self.opened_at),
                               "path": [(s, format_timestamp(t)) for s, t in self.path], "owners": self.owners}
        if self.opened_seen_at != self.opened_at:
            out["opened_seen_at"] = format_timestamp(self.opened_seen_at)
        if self.path_elided:
            out["path_elided"] = self.path_elided
        if self.notified:
            out["notified"] = self.notified
        if self.escalated:
            out["escalated"] = [[r, n] for r, n in self.escalated]
        if self.acked_at is not None:
            out["acked_at"], out["acked_by"] = format_timestamp(self.acked_at), self.acked_by
        if self.resolved_at is not None:
            out["resolved_at"] = format_timestamp(self.resolved_at)
        if self.resolved_by is not None:
            out["resolved_by"] = self.resolved_by
        if self.told:
            out["told"] = self.told
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Incident:
        opened = _parse(d["opened_at"])
        return cls(
            id=d["id"], node_id=_name(d["node"]), opened_at=opened,
            opened_seen_at=_dt(d.get("opened_seen_at")) or opened,
            path=tuple((_name(s), _parse(t)) for s, t in d.get("path") or [[d.get("status", "?"), d["opened_at"]]]),
            owners=_names(d.get("owners")), notified=_names(d.get("notified")),
            escalated=tuple((_name(r), int(n)) for r, n in d.get("escalated") or ()),
            path_elided=int(d.get("path_elided") or 0),
            acked_at=_dt(d.get("acked_at")), acked_by=d.get("acked_by"),
            resolved_at=_dt(d.get("resolved_at")), resolved_by=d.get("resolved_by"),
            told=tuple((_name(str(r)), _names(rs)) for r, rs in d.get("told") or ()),
        )


# --- timers ------------------------------------------------------------------------------------------


def timer_id(node_id: str, kind: str, route: str, step: int, anchor: str) -> str:
    return "tmr_" + hashlib.sha256(f"{node_id}|{kind}|{route}|{step}|{anchor}".encode()).hexdigest()[:24]


@frozen
class Timer:
    """A durable timer: persisted as an outbox job, claimed when due, applied with ``on_timer``.

    ``anchor`` ties it to what it is about: an incident id, a plain route's ``status|since`` or a
    flapping period; with kind, route and step it makes the id unique and the same on every replica."""

    id: str
    kind: TimerKind
    node_id: str
    route: str
    step: int
    due_at: datetime
    anchor: str
    status: str  # the node's status when it was set (plain timers speak of it)

    @classmethod
    def make(cls, kind: TimerKind, node_id: str, route: str, step: int, due_at: datetime, anchor: str,
             status: str) -> Timer:
        return cls(timer_id(node_id, kind, route, step, anchor), kind, node_id, route, step, due_at, anchor, status)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "node": self.node_id, "route": self.route, "step": self.step,
                "due_at": format_timestamp(self.due_at), "anchor": self.anchor, "status": self.status}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Timer:
        return cls(d["id"], d["kind"], d["node"], d.get("route", ""), int(d.get("step") or 0),
                   _parse(d["due_at"]), d.get("anchor", ""), d.get("status", ""))


# --- flapping ----------------------------------------------------------------------------------------


@frozen
class Flap:
    """Flapping detection for one node (counted in status changes, by event time)."""

    recent: tuple[datetime, ...] = ()  # times of the newest changes, at most ``transitions`` of them
    active: bool = False
    started_at: datetime | None = None  # event time of the first change of the flapping period
    last_at: datetime | None = None  # event time of its newest change
    count: int = 0  # changes in the flapping period
    routes: tuple[str, ...] = ()  # routes concerned: they get the stable summary
    held: Incident | None = None  # a notified incident resolved while flapping: its resolution waits for stable
    noticed: tuple[str, ...] = ()  # routes told the flapping notice: a silence never holds back their stable

    def to_json(self) -> dict[str, Any]:
        out = {"recent": [format_timestamp(t) for t in self.recent], "active": self.active,
               "started_at": _ts(self.started_at), "last_at": _ts(self.last_at), "count": self.count,
               "routes": list(self.routes), "held": self.held.to_json() if self.held else None}
        if self.noticed:  # only then: an earlier version reads the rest as it wrote it (and ignores this)
            out["noticed"] = list(self.noticed)
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Flap:
        held = d.get("held")
        return cls(tuple(_parse(t) for t in d.get("recent") or ()), bool(d.get("active")),
                   _dt(d.get("started_at")), _dt(d.get("last_at")), int(d.get("count") or 0),
                   _names(d.get("routes")), Incident.from_json(held) if held else None, _names(d.get("noticed")))


_NO_FLAP = Flap()


# --- the node's incident state ----------------------------------------------------------------------


@frozen
class IncidentState:
    """Everything the incident model keeps about one node (a field of decide's node state)."""

    incident: Incident | None = None  # the open incident
    timers: tuple[Timer, ...] = ()  # pending: a fired timer not listed here is stale (a no-op)
    flap: Flap = _NO_FLAP
    last_at: datetime | None = None  # newest event time applied (ordering)
    # Resolved by hand while the node is in an open_on status: no new incident until the status changes.
    manual_hold: bool = False
    last_resolved: Incident | None = None  # for the admin API and `route` explanations

    def pending(self, timer_id: str) -> Timer | None:
        return next((t for t in self.timers if t.id == timer_id), None)

    def to_json(self) -> dict[str, Any]:
        """Only what differs from the defaults: most nodes store ``{"last_at": ...}`` alone."""
        out: dict[str, Any] = {"last_at": _ts(self.last_at)} if self.last_at is not None else {}
        if self.incident is not None:
            out["incident"] = self.incident.to_json()
        if self.timers:
            out["timers"] = [t.to_json() for t in self.timers]
        if self.flap is not _NO_FLAP and self.flap != _NO_FLAP:
            out["flap"] = self.flap.to_json()
        if self.manual_hold:
            out["manual_hold"] = True
        if self.last_resolved is not None:
            out["last_resolved"] = self.last_resolved.to_json()
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any] | None) -> IncidentState:
        """Tolerant of missing (newer) fields: an older bridge's blob reads as far as it goes."""
        if not d:
            return cls()
        inc, last = d.get("incident"), d.get("last_resolved")
        return cls(
            incident=Incident.from_json(inc) if inc else None,
            timers=tuple(Timer.from_json(t) for t in d.get("timers") or ()),
            flap=Flap.from_json(flap) if (flap := d.get("flap")) else _NO_FLAP, last_at=_dt(d.get("last_at")),
            manual_hold=bool(d.get("manual_hold")),
            last_resolved=Incident.from_json(last) if last else None,
        )


# --- notifications ----------------------------------------------------------------------------------


@frozen
class Notification:
    """One message to some receivers. ``key`` is unique per notification of one step: the delivery
    job id is derived from (key, receiver), so a redelivered step never doubles a job."""

    kind: Kind
    route: str
    receivers: tuple[str, ...]
    key: str
    node_id: str
    status: str  # the node's status the message speaks of
    at: datetime
    incident: Incident | None = None  # snapshot at ``at``
    # flapping counts and span, hold length, escalation step: Alert.facts, what the title needs
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> str:
        """The default title, worded where every receiver's is (render.notification_title)."""
        inc = self.incident
        return notification_title(self.kind, self.node_id, self.status,
                                   inc.duration(self.at) if inc else None, self.extra)

    def incident_ref(self) -> IncidentRef | None:
        """The incident as ``model.Alert.incident`` carries it to receivers (dedup key, path)."""
        inc = self.incident
        if inc is None:
            return None
        return IncidentRef(inc.id, inc.opened_at, inc.duration(self.at), inc.path_text(self.at))

    def context(self) -> dict[str, Any]:
        """What templates and the webhook JSON expose (machine consumers correlate on incident.id)."""
        return {
            "kind": self.kind, "route": self.route, "node": self.node_id, "status": self.status,
            "at": format_timestamp(self.at), "title": self.title,
            "incident": self.incident.view(self.at) if self.incident else None, **dict(self.extra),
        }
