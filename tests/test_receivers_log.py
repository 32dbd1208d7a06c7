"""Log receiver: one structured line per alert on the "bridge.alerts" logger."""

from __future__ import annotations

import logging

import aiohttp
import pytest

from bridge.config import parse
from bridge.receivers import build_receiver, build_receivers
from bridge.receivers.base import Receiver
from bridge.render import Renderer
from tests.support.fakes import make_alert

pytest_plugins = ["tests.support.fakes"]
pytestmark = pytest.mark.timeout(10)


def alert_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "bridge.alerts"]


async def test_one_structured_line_per_alert(
    http_session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = parse({"receivers": {"audit": {"type": "log"}}}, env={})
    receiver = build_receiver("audit", cfg.receivers["audit"], renderer=Renderer.from_config(cfg), session=http_session)
    caplog.set_level(logging.INFO, logger="bridge.alerts")

    await receiver.send(make_alert(receiver="audit"))
    await receiver.send(make_alert(receiver="audit", status="RUNNING", previous="FAILED"))

    failed, running = alert_records(caplog)
    assert failed.levelno == logging.WARNING and running.levelno == logging.INFO
    line = failed.getMessage()
    assert "\n" not in line
    assert line == "ALERT node-prod-1 is FAILED (was RUNNING for 3h 12m) (route prod-failures)"
    fields = failed.alert  # type: ignore[attr-defined]  # for structured formatters
    assert fields["msg"] == "node-prod-1 is FAILED"
    assert fields["node"] == "node-prod-1"
    assert fields["status"] == "FAILED"
    assert fields["previous_status"] == "RUNNING"
    assert fields["previous_duration"] == 11520.0
    assert fields["receiver"] == "audit"
    assert fields["delivery_id"] == "dlv_0123456789abcdef01234567"
    assert running.alert["status"] == "RUNNING"  # type: ignore[attr-defined]


async def test_title_override_is_used(http_session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture) -> None:
    cfg = parse({"receivers": {"audit": {"type": "log", "title": "{{ node }} went {{ status }}"}}}, env={})
    receiver = build_receiver("audit", cfg.receivers["audit"], renderer=Renderer.from_config(cfg), session=http_session)
    caplog.set_level(logging.INFO, logger="bridge.alerts")
    await receiver.send(make_alert())
    [record] = alert_records(caplog)
    assert record.getMessage().startswith("ALERT node-prod-1 went FAILED")
    assert record.alert["msg"] == "node-prod-1 went FAILED"  # type: ignore[attr-defined]


async def test_build_receivers_builds_every_type(http_session: aiohttp.ClientSession) -> None:
    cfg = parse(
        {
            "receivers": {
                "audit": {"type": "log"},
                "chat": {"type": "slack", "webhook_url": "http://127.0.0.1:1/services/T/B/x"},
                "api": {"type": "slack", "token": "xoxb-1", "channel": "#a"},
                "mail": {"type": "email", "to": ["a@b.test"], "from": "c@d.test", "smtp": {"host": "h"}},
                "hook": {"type": "webhook", "url": "http://127.0.0.1:1/"},
            }
        },
        env={},
    )
    receivers = build_receivers(cfg, Renderer.from_config(cfg), http_session)
    assert set(receivers) == {"audit", "chat", "api", "mail", "hook"}
    for name, receiver in receivers.items():
        assert isinstance(receiver, Receiver)
        assert receiver.name == name
        await receiver.close()
