"""Pure: silences made from what an operator typed (CLI, admin API), and whether one is in force."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

from bridge.config import SilenceConfig, parse_duration
from bridge.model import Event, Silence, parse_timestamp


def silence_from_spec(spec: Mapping[str, Any], *, now: datetime) -> Silence:
    """A new silence from the fields the CLI and ``POST /-/silences`` take.

    ``node`` (id or glob), ``status`` (one or a list; omitted: any), ``starts_at`` (ISO-8601;
    omitted: now), ``ends_at`` (ISO-8601) or ``duration`` ("2h" or seconds), ``comment``.
    Raises ValueError naming the field that is wrong.
    """
    node = spec.get("node")
    if not isinstance(node, str) or not node.strip():
        raise ValueError("node: a node id or glob such as 'node-prod-*' is required")
    status = spec.get("status")
    if isinstance(status, str):
        status = [status]
    if status is not None and (not isinstance(status, list) or not status
                               or not all(isinstance(x, str) and x for x in status)):
        raise ValueError("status: a status or a non-empty list of statuses, e.g. [FAILED]")
    comment = spec.get("comment", "")
    if not isinstance(comment, str):
        raise ValueError("comment: must be text")
    try:
        starts_at = parse_timestamp(spec["starts_at"]) if spec.get("starts_at") else now
    except (TypeError, ValueError) as exc:
        raise ValueError(f"starts_at: {exc}") from None
    if (spec.get("ends_at") is None) == (spec.get("duration") is None):
        raise ValueError("set one of ends_at or duration")
    try:
        if spec.get("ends_at") is not None:
            ends_at = parse_timestamp(spec["ends_at"])
        else:
            seconds = parse_duration(spec["duration"])
            if seconds <= 0:
                raise ValueError("must be longer than 0")
            ends_at = starts_at + timedelta(seconds=seconds)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{'ends_at' if spec.get('ends_at') is not None else 'duration'}: {exc}") from None
    if ends_at <= starts_at:
        raise ValueError("ends_at: must be after starts_at")
    if ends_at <= now:
        raise ValueError("ends_at: the silence would already be over")
    return Silence(
        id="sil_" + secrets.token_hex(8),
        node=node.strip(),
        status=tuple(x.strip().upper() for x in status) if status is not None else None,
        starts_at=starts_at,
        ends_at=ends_at,
        comment=comment,
        created_at=now,
    )


def _aware(dt: datetime) -> datetime:
    # A naive time (YAML without a zone) is taken as UTC rather than failing the comparison.
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt


def is_active(starts_at: datetime | None, ends_at: datetime, now: datetime) -> bool:
    """The one rule for "is this silence in force": ``starts_at <= now < ends_at`` (no start: always)."""
    now = _aware(now)
    return (starts_at is None or _aware(starts_at) <= now) and now < _aware(ends_at)


AnySilence = Silence | SilenceConfig


def silenced(silences: Iterable[AnySilence], event: Event, now: datetime) -> AnySilence | None:
    """The first silence in force at ``now`` that matches the event's node (glob) and status."""
    for s in silences:
        if not is_active(s.starts_at, s.ends_at, now):
            continue
        if s.status is not None and event.status not in s.status:
            continue
        if fnmatchcase(event.node_id, s.node):
            return s
    return None
