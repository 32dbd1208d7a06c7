"""Timestamps, dedup keys and ids: pure."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bridge.model import Alert, Event, format_timestamp, parse_timestamp, stored_timestamp


def dedup_key(node: str, t: datetime) -> str:
    return Event("NODE_STATUS_UPDATED", t, node, "FAILED").dedup_key


def event_id(node: str, t: datetime) -> str:
    return Event("NODE_STATUS_UPDATED", t, node, "FAILED").id


@pytest.mark.parametrize("text", ["2026-04-16T12:00:00Z", "2026-04-16T12:00:00.000Z", "2026-04-16T12:00:00+00:00",
                                  "2026-04-16T14:00:00+02:00", "2026-04-16 12:00:00Z", "2026-04-16t12:00:00z",
                                  "2026-04-16T12:00Z", "2026-04-16T07:00:00-0500",
                                  "2026-04-16T12:00:00.000000000Z"])
def test_spellings_of_one_instant(text: str) -> None:
    assert parse_timestamp(text) == datetime(2026, 4, 16, 12, tzinfo=UTC)
    assert dedup_key("n1", parse_timestamp(text)) == "n1\x002026-04-16T12:00:00.000000Z\x00FAILED"


def test_another_status_at_the_same_instant_is_another_event() -> None:
    failed, running = (Event("NODE_STATUS_UPDATED", datetime(2026, 4, 16, 12, tzinfo=UTC), "n1", s)
                       for s in ("FAILED", "RUNNING"))
    assert failed.dedup_key != running.dedup_key and failed.id != running.id
    # "|" in a node id and a status cannot make two events one (ingest refuses NUL in both)
    a = Event("NODE_STATUS_UPDATED", datetime(2026, 4, 16, 12, tzinfo=UTC), "n|2026-04-16T12:00:00.000000Z|X", "Y")
    b = Event("NODE_STATUS_UPDATED", datetime(2026, 4, 16, 12, tzinfo=UTC), "n", "X|2026-04-16T12:00:00.000000Z|Y")
    assert a.dedup_key != b.dedup_key


@pytest.mark.parametrize("text", ["2026-04-16", "2026-04-16T12:00:00", "yesterday", "2026-13-01T00:00:00Z",
                                  "2026-04-16T25:00:00Z", "", "2026-04-16T12:00:00+25:00", "\uff11\uff12\uff13"])
def test_invalid_timestamps(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(text)


@pytest.mark.parametrize("text", ["2026-04-16T12:00:00.000000Z", "2026-04-16T12:00:00.000100Z",
                                  "2026-04-16T12:00:00Z", "2026-04-16T14:00:00+02:00", "2026-04-16t12:00:00z",
                                  "2026-04-16T12:00:00.000000000Z"])
def test_a_stored_timestamp_reads_back_as_parse_timestamp_reads_it(text: str) -> None:
    """The fast path for what the bridge wrote (canonical UTC) and the general one agree, on any
    spelling; the result is always aware UTC."""
    got = stored_timestamp(text)
    assert got == parse_timestamp(text) and got.tzinfo is UTC
    assert stored_timestamp(format_timestamp(got)) == got


@pytest.mark.parametrize("text", ["2026-04-16", "2026-04-16T12:00:00", "2026-13-01T00:00:00Z", ""])
def test_a_stored_timestamp_that_is_not_one_is_refused_as_parse_timestamp_refuses_it(text: str) -> None:
    with pytest.raises(ValueError):
        stored_timestamp(text)


def test_sub_millisecond_precision_is_kept() -> None:
    a = parse_timestamp("2026-04-16T12:00:00.0001Z")
    b = parse_timestamp("2026-04-16T12:00:00.0002Z")
    assert dedup_key("n", a) != dedup_key("n", b)
    assert format_timestamp(a) == "2026-04-16T12:00:00.000100Z"


def test_event_id_is_stable_and_per_node() -> None:
    t = parse_timestamp("2026-04-16T12:00:00Z")
    assert event_id("n1", t) == event_id("n1", parse_timestamp("2026-04-16T12:00:00.000Z"))
    assert event_id("n1", t) != event_id("n2", t)


def test_alert_context_round_trip() -> None:
    t = parse_timestamp("2026-04-16T12:00:00Z")
    ev = Event("NODE_STATUS_UPDATED", t, "n1", "FAILED", {"nodeId": "n1", "x": [1]}, {"env": "prod"}, t)
    alert = Alert(ev, "r", "rcv", "dlv_1", "RUNNING", parse_timestamp("2026-04-16T09:00:00Z"))
    back = Alert.from_context("dlv_1", alert.context())
    assert back == alert
    assert back.previous_duration == 3 * 3600
