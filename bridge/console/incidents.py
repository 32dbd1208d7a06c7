"""Pure: what the incident pages show, from node records and outbox jobs. No I/O.

An incident's notifications are the outbox jobs whose context names it (``Alert.incident.id``,
with ``Alert.kind``): the job holds receiver, kind, attempts and outcome, so the timeline needs no
log of its own. The stores list jobs oldest first and have no index by incident: the page reads a
bounded number per state and says so when a state had more.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from bridge.console.views import human_duration, status_class
from bridge.incident_state import Incident
from bridge.model import Delivery

INCIDENT_ID = re.compile(r"inc_[0-9a-f]{20}")  # incident_state.incident_id's shape; anything else is no incident
BY_MAX = 200  # as the admin API's "by"


@dataclass(frozen=True)
class IncidentRow:
    id: str
    node_id: str
    open: bool
    status: str  # the newest status on its path
    css: str
    opened_at: datetime
    open_for: str  # how long it has been (or was) open
    held_for: str  # how long it has been in ``status`` (up to its resolution)
    path_text: str
    acked_at: datetime | None
    acked_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None  # None on a resolved incident: an event resolved it


def incident_row(inc: Incident, now: datetime) -> IncidentRow:
    end = inc.resolved_at or now
    return IncidentRow(inc.id, inc.node_id, inc.is_open, inc.status, status_class(inc.status), inc.opened_at,
                       human_duration(inc.duration(now)), human_duration((end - inc.path[-1][1]).total_seconds()),
                       inc.path_text(now), inc.acked_at, inc.acked_by, inc.resolved_at, inc.resolved_by)


@dataclass(frozen=True)
class PathStep:
    status: str
    css: str
    entered: datetime
    lasted: str
    current: bool  # the open incident's newest status: its duration still counts up


@dataclass(frozen=True)
class NotificationRow:
    delivery_id: str
    receiver: str
    kind: str
    route: str
    status: str  # the node's status the message speaks of
    attempts: int
    outcome: str  # delivered, failed, retrying, waiting, sending
    outcome_ok: bool | None  # True delivered, False failed for good, None not finished
    error: str
    created_at: datetime
    updated_at: datetime | None


@dataclass(frozen=True)
class IncidentPage:
    row: IncidentRow
    steps: list[PathStep]
    elided: int  # path entries dropped between the first and the newest (incident_state.PATH_LIMIT)
    notifications: list[NotificationRow]
    truncated: bool  # a job state had more jobs than were read: notifications may be missing


def path_steps(inc: Incident, now: datetime) -> list[PathStep]:
    end = inc.resolved_at or now
    steps: list[PathStep] = []
    last = len(inc.path) - 1
    for i, (status, entered) in enumerate(inc.path):
        until = inc.path[i + 1][1] if i < last else end
        steps.append(PathStep(status, status_class(status), entered,
                              human_duration((until - entered).total_seconds()), i == last and inc.is_open))
    return steps


def _outcome(d: Delivery) -> tuple[str, bool | None]:
    if d.state == "done":
        return "delivered", True
    if d.state == "dead":
        return "failed", False
    if d.state == "inflight":
        return "sending", None
    return ("retrying", None) if d.attempts else ("waiting", None)


def notifications(jobs: Iterable[Delivery], incident_id: str) -> list[NotificationRow]:
    """The jobs that speak of the incident, oldest first (one per receiver and notification)."""
    seen: set[str] = set()
    rows: list[NotificationRow] = []
    for d in sorted(jobs, key=lambda d: (d.created_at, d.id)):
        ref = d.alert.incident
        if ref is None or ref.id != incident_id or d.id in seen:
            continue
        seen.add(d.id)  # a job read twice (it changed state between two reads) is listed once
        outcome, ok = _outcome(d)
        rows.append(NotificationRow(d.id, d.receiver, d.alert.kind, d.alert.route, d.alert.event.status,
                                    d.attempts, outcome, ok, d.last_error or "", d.created_at, d.updated_at))
    return rows


def incident_page(inc: Incident, jobs_by_state: Mapping[str, Sequence[Delivery]], now: datetime,
                  *, limit: int) -> IncidentPage:
    jobs = [d for batch in jobs_by_state.values() for d in batch]
    truncated = any(len(batch) >= limit for batch in jobs_by_state.values())
    return IncidentPage(incident_row(inc, now), path_steps(inc, now), inc.path_elided,
                        notifications(jobs, inc.id), truncated)


def operator_name(given: str | None) -> str | None:
    """Who pressed the button, for ``acked_by``/``resolved_by``: "console" unless named; None if too long."""
    name = " ".join((given or "").split())  # no CR/LF or tabs in what logs and messages show
    if len(name) > BY_MAX:
        return None
    return name or "console"
