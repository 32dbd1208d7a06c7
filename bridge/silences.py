"""Pure: silences made from what an operator typed (CLI, admin API), and whether one is in force."""

from __future__ import annotations

import math
import secrets
import unicodedata
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

from bridge.config import SilenceConfig, parse_duration
from bridge.config.base import DurationTooLong
from bridge.model import Event, Silence, parse_timestamp

MAX_SILENCE = timedelta(days=366)  # a year (and a leap day): longer is a typo, or a mute, not maintenance
MAX_TEXT = 1024
SPEC_FIELDS = ("node", "status", "starts_at", "ends_at", "duration", "comment")


def _text(value: Any, field: str, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{field}: must be {what}")
    if len(value) > MAX_TEXT:
        raise ValueError(f"{field}: longer than {MAX_TEXT} characters")
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in value):
        raise ValueError(f"{field}: contains a control character or a lone surrogate")
    return value


def silence_from_spec(spec: Mapping[str, Any], *, now: datetime) -> Silence:
    """A new silence from the fields the CLI and ``POST /-/silences`` take.

    ``node`` (id or glob), ``status`` (one or a list; omitted: any), ``starts_at`` (ISO-8601;
    omitted: now), ``ends_at`` (ISO-8601) or ``duration`` ("2h" or seconds), ``comment``.
    A silence lasts at most ``MAX_SILENCE`` and starts at most that far ahead.
    Raises ValueError naming the field that is wrong.
    """
    unknown = [str(k) for k in spec if k not in SPEC_FIELDS]
    if unknown:
        raise ValueError(f"{unknown[0][:64]}: unknown field; a silence takes {', '.join(SPEC_FIELDS)}")
    node = spec.get("node")
    if not isinstance(node, str) or not node.strip():
        raise ValueError("node: a node id or glob such as 'node-prod-*' is required")
    node = _text(node, "node", "a node id or glob").strip()
    if any(c.isspace() for c in node):
        raise ValueError("node: a node id or glob has no spaces, e.g. 'node-prod-*'")
    status = spec.get("status")
    if isinstance(status, str):
        status = [status]
    if status is not None and (not isinstance(status, list) or not status or len(status) > 64
                               or not all(isinstance(x, str) and x.strip() for x in status)):
        raise ValueError("status: a status or a non-empty list of statuses, e.g. [FAILED]")
    for x in status or []:
        _text(x, "status", "a status such as FAILED")
    comment = _text(spec.get("comment", ""), "comment", "text")
    try:
        starts_at = parse_timestamp(spec["starts_at"]) if spec.get("starts_at") else now
    except (TypeError, ValueError) as exc:
        raise ValueError(f"starts_at: {exc}") from None
    if starts_at - now > MAX_SILENCE:
        raise ValueError(f"starts_at: more than {MAX_SILENCE.days} days ahead")
    if (spec.get("ends_at") is None) == (spec.get("duration") is None):
        raise ValueError("set one of ends_at or duration")
    field = "ends_at" if spec.get("ends_at") is not None else "duration"
    try:
        if field == "ends_at":
            ends_at = parse_timestamp(spec["ends_at"])
        else:
            try:
                seconds = parse_duration(spec["duration"])
            except DurationTooLong:
                seconds = math.inf
            if seconds <= 0:
                raise ValueError("must be longer than 0")
            if seconds > MAX_SILENCE.total_seconds():
                raise ValueError(f"at most {MAX_SILENCE.days} days; a longer mute belongs in the config")
            ends_at = starts_at + timedelta(seconds=seconds)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"{field}: {exc}") from None
    if ends_at <= starts_at:
        raise ValueError("ends_at: must be after starts_at")
    if ends_at <= now:
        raise ValueError("ends_at: the silence would already be over")
    if ends_at - starts_at > MAX_SILENCE:
        raise ValueError(f"ends_at: a silence lasts at most {MAX_SILENCE.days} days; "
                         "a longer mute belongs in the config")
    return Silence(
        id="sil_" + secrets.token_hex(8),
        node=node,
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
