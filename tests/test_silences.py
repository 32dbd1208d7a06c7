"""Silences made from operator input: pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bridge.silences import is_active, silence_from_spec

NOW = datetime(2026, 4, 16, 12, tzinfo=UTC)


def test_duration_and_defaults() -> None:
    s = silence_from_spec({"node": " prod-* ", "status": "failed", "duration": "2h", "comment": "db"}, now=NOW)
    assert (s.node, s.status, s.starts_at, s.ends_at) == ("prod-*", ("FAILED",), NOW, NOW + timedelta(hours=2))
    assert s.id.startswith("sil_") and s.created_at == NOW


@pytest.mark.parametrize(("spec", "field"), [
    ({"duration": "1h"}, "node"),
    ({"node": "n", "status": [], "duration": "1h"}, "status"),
    ({"node": "n"}, "set one of ends_at or duration"),
    ({"node": "n", "duration": "1h", "ends_at": "2026-04-16T13:00:00Z"}, "set one of ends_at or duration"),
    ({"node": "n", "duration": "soon"}, "duration"),
    ({"node": "n", "ends_at": "2026-04-16T11:00:00Z"}, "ends_at"),
    ({"node": "n", "starts_at": "noon", "duration": "1h"}, "starts_at"),
    # unbounded or broken (issue #11, item 4): each names its field, none raises anything but ValueError
    ({"node": "n", "duration": "999999999d"}, "duration"),
    ({"node": "n", "duration": 1e300}, "duration"),
    ({"node": "n", "duration": "367d"}, "duration"),
    ({"node": "*", "ends_at": "9999-12-31T23:59:59Z"}, "ends_at"),
    ({"node": "n", "starts_at": "9999-12-31T00:00:00Z", "duration": "2d"}, "starts_at"),
    ({"node": "n", "starts_at": "2026-04-16T14:00:00Z", "ends_at": "2026-04-16T13:00:00Z"}, "ends_at"),
    ({"node": "n", "duration": "1h", "until": "tomorrow"}, "until"),
    ({"node": "db *", "duration": "1h"}, "node"),
    ({"node": "db-\r\n*", "duration": "1h"}, "node"),
    ({"node": "db-\ud800", "duration": "1h"}, "node"),
    ({"node": "x" * 2000, "duration": "1h"}, "node"),
    ({"node": "n", "duration": "1h", "comment": ["x"]}, "comment"),
    ({"node": "n", "duration": "1h", "status": ["FAILED", 3]}, "status"),
])
def test_errors_name_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError) as info:
        silence_from_spec(spec, now=NOW)
    assert str(info.value).startswith(field)


def test_the_longest_silence() -> None:
    s = silence_from_spec({"node": "n", "duration": "366d"}, now=NOW)
    assert s.ends_at - s.starts_at == timedelta(days=366)


def test_is_active_window() -> None:
    end = NOW + timedelta(hours=1)
    assert is_active(None, end, NOW) and is_active(NOW, end, NOW)
    assert not is_active(NOW + timedelta(seconds=1), end, NOW)
    assert not is_active(None, NOW, NOW)  # the end is exclusive
