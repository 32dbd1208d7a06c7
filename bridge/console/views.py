"""Pure: what the console pages show, computed from store reads and the config. No I/O."""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from bridge.config import Config
from bridge.decide import NodeRecord
from bridge.model import KNOWN_STATUSES, Delivery, NodeState
from bridge.redact import Redactor, config_secrets
from bridge.store.base import OutboxStats

MASK = "**********"  # what pydantic prints for a SecretStr
# Worst first: the fleet page lists the nodes that need a look at the top.
STATUS_ORDER = ("FAILED", "STARTING", "IN_PROGRESS", "PAUSED", "RUNNING")
_STATUS_CLASS = {"FAILED": "st-failed", "STARTING": "st-starting", "IN_PROGRESS": "st-progress",
                 "PAUSED": "st-paused", "RUNNING": "st-running"}
MAX_ROWS = 2000  # rows a page renders; counts always cover everything


def status_class(status: str) -> str:
    """A CSS class for a status; unknown statuses (from the sender) share one, never their own name."""
    return _STATUS_CLASS.get(status, "st-other")


def human_duration(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


# --- outbox ----------------------------------------------------------------------------------------


@dataclass
class ReceiverCounts:
    pending: int = 0
    inflight: int = 0
    dead: int = 0


@dataclass
class OutboxView:
    stats: OutboxStats
    receivers: dict[str, ReceiverCounts]
    truncated: bool  # a state had more jobs than were read: per-receiver counts are lower bounds
    dead: list[Delivery]
    errors: list[Delivery]  # unfinished or dead jobs with an error, newest first


def outbox_view(stats: OutboxStats, by_state: Mapping[str, Sequence[Delivery]], receivers: Iterable[str],
                *, limit: int) -> OutboxView:
    counts = {name: ReceiverCounts() for name in receivers}
    for state in ("pending", "inflight", "dead"):
        for d in by_state.get(state, ()):
            c = counts.setdefault(d.receiver, ReceiverCounts())
            setattr(c, state, getattr(c, state) + 1)
    truncated = any(len(v) >= limit for v in by_state.values())

    def newest(d: Delivery) -> datetime:
        return d.updated_at or d.created_at

    dead = sorted(by_state.get("dead", ()), key=newest, reverse=True)
    with_error = [d for s in ("pending", "inflight", "dead") for d in by_state.get(s, ()) if d.last_error]
    return OutboxView(stats, counts, truncated, dead[:100], sorted(with_error, key=newest, reverse=True)[:20])


# --- fleet -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FleetFilter:
    text: str = ""
    status: str = ""
    label: str = ""  # "key=value" or "key"

    @classmethod
    def from_query(cls, q: Mapping[str, str]) -> FleetFilter:
        return cls(q.get("q", "").strip()[:200], q.get("status", "").strip()[:64], q.get("label", "").strip()[:200])

    def admits(self, node: NodeState, labels: Mapping[str, str]) -> bool:
        if self.status and node.status != self.status:
            return False
        if self.text and self.text.lower() not in node.node_id.lower() and not any(
                self.text.lower() in f"{k}={v}".lower() for k, v in labels.items()):
            return False
        if self.label:
            key, eq, value = self.label.partition("=")
            if key not in labels or (eq and labels[key] != value):
                return False
        return True


@dataclass
class NodeRow:
    node_id: str
    status: str
    css: str
    since: datetime
    held_for: str  # how long in ``held_status``
    last_seen: datetime
    labels: dict[str, str]
    incident_id: str | None = None  # the open incident
    incident_for: str = ""  # how long it has been open
    acked_by: str | None = None  # None: not acknowledged
    held_status: str = ""  # the open incident's newest status (its path), else the node's status


@dataclass
class FleetView:
    rows: list[NodeRow]
    total: int
    shown: int  # after the filter
    counts: list[tuple[str, int, str]]  # (status, nodes, css), worst first
    label_keys: list[str] = field(default_factory=list)


def node_row(rec: NodeRecord, labels: dict[str, str], now: datetime) -> NodeRow:
    n, inc = rec.state, rec.incidents.incident
    if inc is None:
        return NodeRow(n.node_id, n.status, status_class(n.status), n.since,
                       human_duration((now - n.since).total_seconds()), n.last_timestamp, labels, held_status=n.status)
    status, entered = inc.path[-1]  # "FAILED for 14m" as the incident tells it
    return NodeRow(n.node_id, n.status, status_class(n.status), entered,
                   human_duration((now - entered).total_seconds()), n.last_timestamp, labels,
                   inc.id, human_duration(inc.duration(now)),
                   (inc.acked_by or "someone") if inc.acked_at is not None else None, status)


def fleet_view(records: Iterable[NodeRecord], labels_for: Any, flt: FleetFilter, now: datetime) -> FleetView:
    """``labels_for(node_id)`` gives the node's labels as routing sees them (the config's)."""
    all_recs = list(records)
    counts = Counter(r.state.status for r in all_recs)
    order = {s: i for i, s in enumerate(STATUS_ORDER)}
    rows: list[NodeRow] = []
    keys: set[str] = set()
    for rec in sorted(all_recs, key=lambda r: (order.get(r.state.status, -1), r.node_id)):
        labels = dict(labels_for(rec.node_id))
        keys.update(labels)
        if flt.admits(rec.state, labels):
            rows.append(node_row(rec, labels, now))
    ranked = sorted(counts.items(), key=lambda kv: (order.get(kv[0], -1), kv[0]))
    return FleetView(rows[:MAX_ROWS], len(all_recs), len(rows),
                     [(s, c, status_class(s)) for s, c in ranked], sorted(keys))


# --- silences --------------------------------------------------------------------------------------


def silence_preview(pattern: str, statuses: Sequence[str], nodes: Iterable[NodeState]) -> list[NodeState]:
    """Known nodes the node pattern matches (as ``routing.silenced`` matches it), worst status first.

    Statuses narrow which *events* are silenced, not which nodes: every matching node is listed;
    the page marks those whose current status is among them."""
    if not pattern:
        return []
    order = {s: i for i, s in enumerate(STATUS_ORDER)}
    found = [n for n in nodes if fnmatchcase(n.node_id, pattern)]
    return sorted(found, key=lambda n: (order.get(n.status, -1), n.node_id))


def status_choices(extra: Iterable[str] = ()) -> list[str]:
    return [*STATUS_ORDER, *sorted(set(extra) - KNOWN_STATUSES)]


# --- config ----------------------------------------------------------------------------------------


def mask_url(url: str) -> str:
    """A URL with its password masked (a redis:// URL may carry one)."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:{MASK}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def config_redactor(cfg: Config) -> Redactor:
    """Every secret value the config holds, to scrub from any page (a second line behind masking)."""
    values = config_secrets(cfg)
    # Also as a page spells them: a secret with & < > or quotes is rendered escaped.
    return Redactor([*values, *(html.escape(v) for v in values)])


def masked_config(cfg: Config) -> str:
    """The loaded config as YAML, every secret masked."""
    doc = cfg.model_dump(mode="json")  # SecretStr fields dump as MASK
    doc["storage"]["url"] = mask_url(cfg.storage.url)
    if doc["verification"].get("public_key_url"):
        doc["verification"]["public_key_url"] = mask_url(doc["verification"]["public_key_url"])
    return config_redactor(cfg)(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
