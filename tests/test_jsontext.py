"""bridge.jsontext: every JSON body sent to a receiver is JSON, whatever numbers the alert holds."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bridge.config import Config, SlackReceiverConfig, WebhookReceiverConfig, parse
from bridge.receivers.slack import slack_message
from bridge.receivers.webhook import webhook_body
from bridge.render import Renderer, compact_json, json_bytes
from tests.support.fakes import make_alert

pytestmark = pytest.mark.timeout(10)

SLACK = {"type": "slack", "webhook_url": "https://hooks.slack.test/services/T/B/x"}
HOOK = {"type": "webhook", "url": "https://hooks.example.test/in"}


def config(receivers: dict[str, Any]) -> Config:
    return parse({"receivers": receivers}, env={})


def slack_cfg(cfg: Config, name: str) -> SlackReceiverConfig:
    rcv = cfg.receivers[name]
    assert isinstance(rcv, SlackReceiverConfig)
    return rcv


def hook_cfg(cfg: Config, name: str) -> WebhookReceiverConfig:
    rcv = cfg.receivers[name]
    assert isinstance(rcv, WebhookReceiverConfig)
    return rcv


def test_json_bytes_writes_non_finite_numbers_as_null_whoever_writes_them() -> None:
    """NaN and infinities are not JSON: null, as JSON.stringify writes them (json would write NaN)."""
    value = {"x": float("nan"), "y": [float("-inf"), 1.5], "z": (float("inf"),), "big": 2**70}
    expected = b'{"x":null,"y":[null,1.5],"z":[null],"big":%d}' % 2**70
    assert json_bytes(value) == expected and compact_json(value).encode() == expected
    assert json.loads(json_bytes({"x": float("nan")}, finite=True)) == {"x": None}



def _strict(body: bytes | str) -> Any:
    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} in a body sent to a receiver: {body[:300]!r}")
    return json.loads(body, parse_constant=refuse)


def test_no_receiver_body_carries_nan_or_infinity() -> None:
    """Whatever numbers an alert holds (ingest refuses non-finite ones, a job queued before may still
    hold one), every JSON body a receiver sends is JSON: each receiver's payload as its send() posts
    it (post_json writes json_bytes(payload, finite=alert.own_numbers)), a webhook body template
    using | tojson and the finalizer, and a fleet digest."""
    from bridge.receivers.discord import discord_message
    from bridge.receivers.http import correlation_key
    from bridge.receivers.msteams import teams_message
    from bridge.receivers.opsgenie import opsgenie_request
    from bridge.receivers.pagerduty import pagerduty_event
    from bridge.receivers.telegram import telegram_message

    nan, inf = float("nan"), float("inf")
    details = {"nodeId": "node-prod-1", "load": nan, "up": inf, "down": -inf, "nested": {"l": [nan, (inf,)]}}
    alert = make_alert(details=details)
    assert not alert.own_numbers
    receivers = {
        "slack": SLACK, "hook": HOOK,
        "templated": {**HOOK, "body_template": '{"d": {{ event.details | tojson }}, '
                                               '"load": {{ event.details.get("load") }}, '
                                               '"up": {{ event.details.get("up") }}}'},
        "pd": {"type": "pagerduty", "routing_key": "R0123456789abcdef0123456789abcdef"},
        "og": {"type": "opsgenie", "api_key": "k"},
        "teams": {"type": "msteams", "url": "https://teams.example.test/hook"},
        "discord": {"type": "discord", "url": "https://discord.example.test/api/webhooks/1/x"},
        "tg": {"type": "telegram", "bot_token": "1:abc", "chat_id": "42"},
    }
    cfg = config(receivers)
    renderer = Renderer.from_config(cfg)
    rcv = cfg.receivers
    payloads: dict[str, Any] = {
        "slack": slack_message(renderer, alert, slack_cfg(cfg, "slack")),
        "pd": pagerduty_event(renderer, alert, rcv["pd"], "R0123456789abcdef0123456789abcdef"),  # type: ignore[arg-type]
        "og": opsgenie_request(renderer, alert, rcv["og"])[1],  # type: ignore[arg-type]
        "teams": teams_message(renderer, alert, rcv["teams"]),  # type: ignore[arg-type]
        "discord": discord_message(renderer, alert, rcv["discord"]),  # type: ignore[arg-type]
        "tg": telegram_message(renderer, alert, rcv["tg"]),  # type: ignore[arg-type]
    }
    bodies = {name: json_bytes(p, finite=alert.own_numbers) for name, p in payloads.items()}
    for name in ("hook", "templated"):
        bodies[name] = webhook_body(renderer, alert, hook_cfg(cfg, name))
    for body in bodies.values():
        _strict(body)
    assert _strict(bodies["hook"])["event"]["details"] == {"nodeId": "node-prod-1", "load": None, "up": None,
                                                           "down": None, "nested": {"l": [None, [None]]}}
    assert _strict(bodies["templated"]) == {"d": _strict(bodies["hook"])["event"]["details"], "load": None,
                                            "up": None}
    assert correlation_key(alert)  # the pagers' key is text whatever the details hold
