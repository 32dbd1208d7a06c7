"""bridge.render: default messages, overrides, and config-time template checks."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from markupsafe import Markup

from bridge.config import (
    Config,
    EmailReceiverConfig,
    LogReceiverConfig,
    SlackReceiverConfig,
    WebhookReceiverConfig,
    parse,
)
from bridge.errors import ConfigError
from bridge.model import TEST_ROUTE, Alert, IncidentRef
from bridge.receivers.email import DEFAULTS as EMAIL_DEFAULTS
from bridge.receivers.email import email_content
from bridge.receivers.log import log_fields
from bridge.receivers.slack import slack_message
from bridge.receivers.webhook import webhook_body
from bridge.render import Renderer, compact_json, human_duration, json_bytes, precompile
from tests.support.fakes import T0, make_alert
from tests.support.waits import strings

pytestmark = pytest.mark.timeout(10)


def config(receivers: dict[str, Any], **extra: Any) -> Config:
    return parse({"receivers": receivers, **extra}, env={})


SLACK = {"type": "slack", "webhook_url": "https://hooks.slack.test/services/T/B/x"}
EMAIL = {"type": "email", "to": ["ops@example.test"], "from": "bridge@example.test", "smtp": {"host": "smtp"}}
HOOK = {"type": "webhook", "url": "https://hooks.example.test/in"}
LOG = {"type": "log"}


def slack_cfg(cfg: Config, name: str = "ops") -> SlackReceiverConfig:
    rcv = cfg.receivers[name]
    assert isinstance(rcv, SlackReceiverConfig)
    return rcv


def email_cfg(cfg: Config, name: str = "ops") -> EmailReceiverConfig:
    rcv = cfg.receivers[name]
    assert isinstance(rcv, EmailReceiverConfig)
    return rcv


def hook_cfg(cfg: Config, name: str = "ops") -> WebhookReceiverConfig:
    rcv = cfg.receivers[name]
    assert isinstance(rcv, WebhookReceiverConfig)
    return rcv


def all_text(obj: Any) -> str:
    """Every string inside a Slack message, joined, to search for what a reader would see."""
    if isinstance(obj, str):
        return obj
    if isinstance(obj, dict):
        return "\n".join(all_text(v) for v in obj.values())
    if isinstance(obj, list):
        return "\n".join(all_text(v) for v in obj)
    return ""


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (None, None),
        (0, "0s"),
        (59.9, "59s"),
        (60, "1m"),
        (61, "1m 1s"),
        (3600, "1h"),
        (3725, "1h 2m"),
        (11520, "3h 12m"),
        (90061, "1d 1h"),
        (2 * 86400 + 59, "2d"),
    ],
)
def test_human_duration(seconds: float | None, expected: str | None) -> None:
    assert human_duration(seconds) == expected


# --- Slack ---------------------------------------------------------------------------------------


def test_slack_default_message_names_node_status_and_previous_state() -> None:
    cfg = config({"ops": SLACK}, links={"node": "https://cloud.example.test/nodes/{{ event.nodeId }}"})
    msg = slack_message(Renderer.from_config(cfg), make_alert(), slack_cfg(cfg))

    assert msg["blocks"][0]["type"] == "header"
    assert msg["blocks"][0]["text"]["text"] == ":red_circle: node-prod-1 is FAILED"
    assert msg["text"] == ":red_circle: node-prod-1 is FAILED (was RUNNING for 3h 12m)"
    [attachment] = msg["attachments"]
    assert attachment["color"] == "#d62728"
    fields = [f["text"] for f in attachment["blocks"][0]["fields"]]
    assert "*Node*\n<https://cloud.example.test/nodes/node-prod-1|node-prod-1>" in fields
    assert "*Status*\nFAILED" in fields
    assert "*Previous status*\nRUNNING for 3h 12m" in fields
    assert "*Labels*\n`env=prod`, `team=core`" in fields
    assert any(f.startswith("*Event time*\n<!date^1776340800^") for f in fields)
    assert "dlv_0123456789abcdef01234567" in all_text(attachment)


@pytest.mark.parametrize(
    ("status", "colour", "emoji"),
    [
        ("FAILED", "#d62728", ":red_circle:"),
        ("RUNNING", "#2ca02c", ":large_green_circle:"),
        ("PAUSED", "#ff9f1c", ":large_orange_circle:"),
        ("SOMETHING_NEW", "#ff9f1c", ":large_orange_circle:"),
    ],
)
def test_slack_colour_follows_status(status: str, colour: str, emoji: str) -> None:
    cfg = config({"ops": SLACK})
    msg = slack_message(Renderer.from_config(cfg), make_alert(status=status), slack_cfg(cfg))
    assert msg["attachments"][0]["color"] == colour
    assert msg["blocks"][0]["text"]["text"] == f"{emoji} node-prod-1 is {status}"


def test_slack_first_sighting_and_escaping() -> None:
    cfg = config({"ops": SLACK})
    alert = make_alert(node="n<1>&", previous=None, held=None, labels={"owner": "<@here>"})
    msg = slack_message(Renderer.from_config(cfg), alert, slack_cfg(cfg))
    fields = [f["text"] for f in msg["attachments"][0]["blocks"][0]["fields"]]
    assert "*Previous status*\nnone known" in fields
    assert "*Node*\nn&lt;1&gt;&amp;" in fields  # mrkdwn control characters are escaped
    assert "`owner=&lt;@here&gt;`" in fields[-1]
    # the fallback is shown in notifications, which parse mentions too (issue 11.9): escaped as well
    assert msg["text"] == ":red_circle: n&lt;1&gt;&amp; is FAILED"


NODES = {"node-prod-1": {"labels": {"env": "prod", "team": "core"}}}


def test_slack_overrides_replace_headline_and_add_text() -> None:
    cfg = config(
        {"ops": {**SLACK, "title": "{{ node }} -> {{ status }}", "text": "*owner*: {{ labels.team }}"}},
        nodes=NODES,
    )
    msg = slack_message(Renderer.from_config(cfg), make_alert(), slack_cfg(cfg))
    assert msg["blocks"][0]["text"]["text"] == "node-prod-1 -> FAILED"
    assert msg["blocks"][1] == {"type": "section", "text": {"type": "mrkdwn", "text": "*owner*: core"}}


# --- email, webhook, log -------------------------------------------------------------------------


def test_email_default_subject_text_and_escaped_html() -> None:
    cfg = config({"ops": EMAIL})
    alert = make_alert(labels={"note": "<script>x</script>"})
    mail = email_content(Renderer.from_config(cfg), alert, email_cfg(cfg))
    assert mail.subject == "[ALERT] node-prod-1 is FAILED"
    assert "node-prod-1 is FAILED (was RUNNING for 3h 12m)." in mail.text
    assert "Event time: 2026-04-16 12:00:00 UTC" in mail.text
    assert "note=<script>x</script>" in mail.text
    assert "<script>" not in mail.html
    assert "note=&lt;script&gt;x&lt;/script&gt;" in mail.html
    assert "#d62728" in mail.html


def test_email_overrides_and_subject_folding() -> None:
    cfg = config(
        {
            "ops": {
                **EMAIL,
                "title": "{{ status }}: {{ node }}",
                "subject": "ALERT {{ title }}\n(route {{ route }})",
                "html": "<b>{{ labels.team }}</b> {{ text }}",
                "text": "held {{ previous_duration_human }}",
            }
        },
        nodes=NODES,
    )
    mail = email_content(Renderer.from_config(cfg), make_alert(labels={"team": "<core>"}), email_cfg(cfg))
    assert mail.subject == "[ALERT] ALERT FAILED: node-prod-1 (route prod-failures)"  # the kind comes first
    assert mail.text == "held 3h 12m"
    assert mail.html == "<b>&lt;core&gt;</b> held 3h 12m"


def test_webhook_default_body_is_normalised_event_plus_context() -> None:
    cfg = config({"ops": HOOK}, links={"node": "https://c.test/n/{{ node | urlencode }}"})
    alert = make_alert()
    body = json.loads(webhook_body(Renderer.from_config(cfg), alert, hook_cfg(cfg)))
    assert body["event"] == alert.event.to_dict()
    assert body["route"] == "prod-failures"
    assert body["receiver"] == "ops"
    assert body["deliveryId"] == alert.delivery_id
    assert body["previousStatus"] == "RUNNING"
    assert body["previousDuration"] == 11520.0
    assert body["previousDurationHuman"] == "3h 12m"
    assert body["links"] == {"node": "https://c.test/n/node-prod-1"}
    assert body["title"] == "node-prod-1 is FAILED"


def test_webhook_body_template_sees_the_documented_context() -> None:
    template = (
        '{"node": {{ node | tojson }}, "status": {{ status | tojson }}, "prev": {{ previous_status | tojson }},'
        ' "dur": {{ previous_duration | tojson }}, "human": {{ previous_duration_human | tojson }},'
        ' "route": {{ route | tojson }}, "receiver": {{ receiver | tojson }}, "id": {{ delivery_id | tojson }},'
        ' "type": {{ event.eventType | tojson }}, "ts": {{ event.eventTimestamp | tojson }},'
        ' "labels": {{ labels | tojson }}, "link": {{ links.node | tojson }}}'
    )
    cfg = config({"ops": {**HOOK, "body_template": template}})
    body = json.loads(webhook_body(Renderer.from_config(cfg), make_alert(), hook_cfg(cfg)))
    assert body == {
        "node": "node-prod-1",
        "status": "FAILED",
        "prev": "RUNNING",
        "dur": 11520.0,
        "human": "3h 12m",
        "route": "prod-failures",
        "receiver": "ops",
        "id": "dlv_0123456789abcdef01234567",
        "type": "NODE_STATUS_UPDATED",
        "ts": "2026-04-16T12:00:00.000000Z",
        "labels": {"env": "prod", "team": "core"},
        "link": None,
    }


def test_log_fields() -> None:
    cfg = config({"ops": {"type": "log"}})
    rcv = cfg.receivers["ops"]
    assert isinstance(rcv, LogReceiverConfig)
    fields = log_fields(Renderer.from_config(cfg), make_alert(), rcv)
    assert fields["msg"] == "node-prod-1 is FAILED"
    assert fields["node"] == "node-prod-1"
    assert fields["status"] == "FAILED"
    assert fields["previous_status"] == "RUNNING"
    assert fields["previous_duration"] == 11520.0
    assert fields["delivery_id"] == "dlv_0123456789abcdef01234567"
    json.dumps(fields)  # one structured line must serialise


# --- config-time checks ---------------------------------------------------------------------------


def problems_of(receivers: dict[str, Any], **extra: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        Renderer.from_config(config(receivers, **extra))
    return info.value.problems


def test_syntax_error_names_the_yaml_path() -> None:
    [problem] = problems_of({"ops-email": {**EMAIL, "subject": "{{ node "}})
    assert problem.startswith("receivers.ops-email.subject: template error: line 1: ")


def test_unknown_variable_fails_at_config_check() -> None:
    [problem] = problems_of({"ops": {**SLACK, "title": "{{ nodee }} down"}})
    assert problem.startswith("receivers.ops.title: template error: 'nodee' is undefined")


def test_every_problem_is_listed() -> None:
    problems = problems_of(
        {
            "a": {**SLACK, "text": "{{ event.nope }}"},
            "b": {**EMAIL, "html": "{% if %}"},
            "c": {**HOOK, "body_template": "{{ missing }}"},
        }
    )
    assert [p.split(":")[0] for p in problems] == [
        "receivers.a.text",
        "receivers.b.html",
        "receivers.c.body_template",
    ]


def test_template_that_breaks_without_previous_state_is_caught() -> None:
    # Renders for a transition but not for a first sighting (previous_duration is None).
    [problem] = problems_of({"ops": {**SLACK, "title": "{{ (previous_duration / 60) | int }} min"}})
    assert problem.startswith("receivers.ops.title: template error: TypeError")


def test_sandbox_blocks_unsafe_attributes() -> None:
    [problem] = problems_of({"ops": {**SLACK, "title": "{{ node.__class__.__mro__ }}"}})
    assert problem.startswith("receivers.ops.title: template error:")
    assert "unsafe" in problem


def test_links_node_is_checked() -> None:
    assert problems_of({"ops": SLACK}, links={"node": "https://x/{{ nodeid }}"}) == [
        "links.node: template error: 'nodeid' is undefined"
        " (event.details and labels vary per event: use .get('key') or | default('...'))"
    ]


def test_body_template_must_render_json_unless_content_type_is_set() -> None:
    [problem] = problems_of({"ops": {**HOOK, "body_template": "node={{ node }}"}})
    assert problem.startswith("receivers.ops.body_template: does not render valid JSON")
    cfg = config({"ops": {**HOOK, "body_template": "node={{ node }}", "headers": {"Content-Type": "text/plain"}}})
    assert webhook_body(Renderer.from_config(cfg), make_alert(), hook_cfg(cfg)) == b"node=node-prod-1"


def test_configured_label_keys_can_be_used() -> None:
    nodes = {"node-a": {"labels": {"team": "core"}}, "node-b": {"labels": {"env": "prod"}}}
    cfg = config({"ops": {**SLACK, "title": "{{ labels.team }}/{{ labels.env }}"}}, nodes=nodes)
    renderer = Renderer.from_config(cfg)
    msg = slack_message(renderer, make_alert(labels={"team": "core", "env": "prod"}), slack_cfg(cfg))
    assert msg["blocks"][0]["text"]["text"] == "core/prod"


def test_runtime_template_failure_falls_back_to_default(caplog: pytest.LogCaptureFixture) -> None:
    nodes = {"node-a": {"labels": {"team": "core"}}}
    cfg = config({"ops": {**SLACK, "title": "team {{ labels.team }}"}}, nodes=nodes)
    renderer = Renderer.from_config(cfg)
    with caplog.at_level(logging.WARNING, logger="bridge.render"):
        msg = slack_message(renderer, make_alert(labels={}), slack_cfg(cfg))  # this node has no team label
    assert msg["blocks"][0]["text"]["text"] == ":red_circle: node-prod-1 is FAILED"
    assert "template title failed for receiver ops" in caplog.text


def test_labels_without_nodes_config_fail_the_check() -> None:
    # Labels only ever come from `nodes:`; without it {{ labels.team }} could never render.
    [problem] = problems_of({"ops": {**SLACK, "text": "{{ labels.team }}"}})
    assert problem.startswith("receivers.ops.text: template error: 'dict object' has no attribute 'team'")


def test_templates_are_compiled_once_per_config() -> None:
    cfg = config({"ops": {**SLACK, "title": "{{ node }}!"}, "mail": {**EMAIL, "subject": "{{ title }}"}})
    renderer = Renderer.from_config(cfg)
    precompile(renderer, EMAIL_DEFAULTS)  # as building the email receiver does
    compiled = dict(renderer._compiled)
    for _ in range(3):
        slack_message(renderer, make_alert(), slack_cfg(cfg))
        email_content(renderer, make_alert(receiver="mail"), email_cfg(cfg, "mail"))
    assert renderer._compiled == compiled  # same Template objects, nothing new compiled


# --- default wording per notification kind (one place: render.notification_title) ----------------

RESOLVED_PATH = "FAILED 12m → STARTING 3m → RUNNING"


def incident_alert(kind: str, status: str = "FAILED", *, duration: float | None = 900.0,
                   path: str = "FAILED 12m → STARTING 3m", facts: dict[str, Any] | None = None,
                   node: str = "node-7", route: str = "prod-failures") -> Alert:
    ref = IncidentRef("inc_0123456789abcdef0123", T0 - timedelta(minutes=15), duration, path) \
        if duration is not None else None
    return replace(make_alert(node=node, status=status, route=route), kind=kind, incident=ref, facts=facts or {})


@pytest.mark.parametrize(
    ("alert", "title"),
    [
        (incident_alert("firing"), "node-7 is FAILED"),
        (incident_alert("resolved", "RUNNING", path=RESOLVED_PATH), "RESOLVED node-7 after 15m"),
        (incident_alert("reminder", duration=7200.0), "still FAILED after 2h: node-7"),
        (incident_alert("reminder", "STARTING", duration=None, facts={"reminder": 2, "for": 2700.0}),
         "still STARTING after 45m: node-7"),
        (incident_alert("escalation", duration=1800.0, facts={"escalation": {"step": 0, "after": 1800.0}}),
         "ESCALATED node-7: FAILED, open 30m"),
        (incident_alert("acknowledged", duration=600.0), "ACKNOWLEDGED node-7: FAILED, open 10m"),
        (incident_alert("acknowledged", duration=600.0, facts={"by": "alice"}),
         "ACKNOWLEDGED node-7: FAILED, open 10m by alice"),
        (incident_alert("update", "STARTING", duration=60.0), "node-7 now STARTING (incident open 1m)"),
        (incident_alert("flapping", facts={"flap": {"count": 4, "since": "x", "span": 180.0}}),
         "node-7 is flapping (4 status changes in 3m)"),
        (incident_alert("stable", "RUNNING", duration=None, facts={"flap": {"count": 7, "since": "x", "span": 840.0}}),
         "node-7 stable again: flapped 7 times in 14m, now RUNNING"),
        (incident_alert("event", "STARTING", duration=None, facts={"held_for": 900.0}),
         "node-7 still STARTING after 15m"),
        (incident_alert("event", "RUNNING", duration=None), "node-7 is RUNNING"),
    ],
    ids=lambda v: v if isinstance(v, str) else v.kind,
)
def test_default_title_says_what_happened_per_kind(alert: Alert, title: str) -> None:
    cfg = config({"ops": LOG})
    renderer = Renderer.from_config(cfg)
    ctx = renderer.context(alert, cfg.receivers["ops"])
    assert ctx["title"] == title
    assert log_fields(renderer, alert, cfg.receivers["ops"])["msg"] == title


def test_resolution_text_carries_total_duration_and_path() -> None:
    cfg = config({"ops": LOG})
    alert = incident_alert("resolved", "RUNNING", path=RESOLVED_PATH)
    text = Renderer.from_config(cfg).context(alert)["text"]
    assert text.startswith("RESOLVED node-7 after 15m.\nnode-7 is RUNNING (was RUNNING for 3h 12m).\n")
    assert f"Incident inc_0123456789abcdef0123: {RESOLVED_PATH} (15m in total).\n" in text
    open_text = Renderer.from_config(cfg).context(incident_alert("reminder", duration=7200.0))["text"]
    assert "Incident inc_0123456789abcdef0123: FAILED 12m → STARTING 3m (open 2h).\n" in open_text


def test_every_receiver_uses_the_shared_title() -> None:
    cfg = config({"ops": SLACK, "mail": EMAIL, "hook": HOOK})
    renderer = Renderer.from_config(cfg)
    alert = incident_alert("resolved", "RUNNING", path=RESOLVED_PATH)
    assert slack_message(renderer, alert, slack_cfg(cfg))["blocks"][0]["text"]["text"].endswith(
        "RESOLVED node-7 after 15m")
    assert email_content(renderer, replace(alert, receiver="mail"), email_cfg(cfg, "mail")).subject == \
        "[RESOLVED] node-7 after 15m"
    body = json.loads(webhook_body(renderer, replace(alert, receiver="hook"), hook_cfg(cfg, "hook")))
    assert body["title"] == "RESOLVED node-7 after 15m" and body["kind"] == "resolved"
    assert body["incident"]["path"] == RESOLVED_PATH
    stable = incident_alert("stable", "RUNNING", facts={"flap": {"count": 7, "since": "x", "span": 840.0}})
    body = json.loads(webhook_body(renderer, replace(stable, receiver="hook"), hook_cfg(cfg, "hook")))
    assert body["facts"] == {"flap": {"count": 7, "since": "x", "span": 840.0}}


def test_default_title_escapes_event_values_for_slack_and_marks_tests() -> None:
    cfg = config({"ops": SLACK})
    renderer = Renderer.from_config(cfg)
    hostile = incident_alert("resolved", "RUNNING", node="<!channel> & co", path=RESOLVED_PATH)
    head = slack_message(renderer, hostile, slack_cfg(cfg))["blocks"][0]["text"]["text"]
    assert "RESOLVED &lt;!channel&gt; &amp; co after 15m" in head and "<!channel>" not in head
    test_alert = incident_alert("resolved", "RUNNING", path=RESOLVED_PATH, route=TEST_ROUTE)
    assert renderer.context(test_alert)["title"] == "TEST: RESOLVED node-7 after 15m"


def test_alert_facts_survive_the_job_context() -> None:
    alert = incident_alert("stable", "RUNNING", facts={"flap": {"count": 7, "since": "x", "span": 840.0}})
    again = Alert.from_context(alert.delivery_id, json.loads(json.dumps(alert.context())))
    assert again.facts == alert.facts and again.kind == "stable" and again.incident == alert.incident
    assert "facts" not in make_alert().context()  # jobs without facts stay as they were


# --- escaped contexts (Slack, Teams, Discord, Telegram): the raw event document -----------------

def _escapers() -> list[tuple[str, dict[str, Any], Any]]:
    from bridge.receivers.discord import discord_escape
    from bridge.receivers.msteams import teams_escape
    from bridge.receivers.telegram import html_escape
    from bridge.render import slack_escape

    return [("slack", SLACK, slack_escape),
            ("msteams", {"type": "msteams", "url": "https://teams.example.test/hook"}, teams_escape),
            ("discord", {"type": "discord", "url": "https://discord.example.test/api/webhooks/1/x"}, discord_escape),
            ("telegram", {"type": "telegram", "bot_token": "1:abc", "chat_id": "42"}, html_escape)]


HOSTILE_DETAIL = "<!channel> <@U1> *bold* <b>&amp;"


@pytest.mark.parametrize(("kind", "rcv", "escape"), _escapers(), ids=["slack", "msteams", "discord", "telegram"])
def test_an_override_reading_the_event_document_sees_it_escaped(kind: str, rcv: dict[str, Any], escape: Any) -> None:
    """Leaving ``event`` out of an escaped context is only for contexts no override reads: an override
    that reads it (title or text) gets every string in it escaped once, keys and nested values too."""
    alert = make_alert(node="n<1>", details={"region": HOSTILE_DETAIL, "nested": {HOSTILE_DETAIL: [HOSTILE_DETAIL]}})
    source = "{{ event.details.get('region') }}|{{ event.details.get('nested') | tojson }}"
    for field in ("title", "text"):
        cfg = config({"ops": {**rcv, field: source}})
        ctx, used = Renderer.from_config(cfg).context_and_overrides(alert, cfg.receivers["ops"], escape=escape)
        assert field in used  # rendered, not fallen back to the default
        region, _, nested = ctx[field].partition("|")
        assert region == escape(HOSTILE_DETAIL)
        assert json.loads(nested) == {escape(HOSTILE_DETAIL): [escape(HOSTILE_DETAIL)]}
        assert escape(HOSTILE_DETAIL) != HOSTILE_DETAIL


@pytest.mark.parametrize(("kind", "rcv", "escape"), _escapers(), ids=["slack", "msteams", "discord", "telegram"])
def test_an_escaped_context_without_overrides_holds_no_unescaped_value(
    kind: str, rcv: dict[str, Any], escape: Any
) -> None:
    """No override: ``event`` is left out (reading it fails loudly), and what is there is escaped."""
    alert = make_alert(node="n<1>", status="<!here>", details={"region": HOSTILE_DETAIL})
    cfg = config({"ops": rcv})
    ctx, used = Renderer.from_config(cfg).context_and_overrides(alert, cfg.receivers["ops"], escape=escape)
    assert used == frozenset() and "event" not in ctx
    assert all(HOSTILE_DETAIL not in s and "<!here>" not in s and "n<1>" not in s for s in strings(ctx))


@pytest.mark.parametrize("value", [
    {"n": "plain ascii", "k": [1, 2.5, None]},
    {"n": "ünï ☃ \u2028", "k": "€"},
    {"n": "odd \ud800 one", "also": "\udfff", "fine": "☃"},
    {"n": "odd \udc00"},  # non-ASCII only through the surrogate
])
def test_compact_json_writes_utf8_safe_json_of_any_text(value: dict[str, Any]) -> None:
    text = compact_json(value)
    assert json.loads(text) == value  # the same value, lone surrogates as \u escapes
    text.encode("utf-8")  # strict: no lone surrogate left in the text
    plain = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    assert text == plain.encode("utf-8", "backslashreplace").decode("utf-8")


@pytest.mark.parametrize("value", [
    {"n": "plain ascii", "k": [1, 2.5, None, True], "t": (1, "x")},
    {"n": "ünï ☃ \u2028", "k": "€", "c": "a\r\nb\t\x00\x7f \\ \"q\""},
    {"n": "odd \ud800 one", "also": "\udfff"},  # orjson refuses: compact_json writes it
    {"big": 2**70, "neg": -(2**64)},  # past 64 bits: orjson refuses, json keeps them exact
    {"m": Markup("<b>x</b>")},  # a str subclass: orjson refuses
    {"f": [1e-07, 1e16, 0.1, -0.0, 123456.789]},  # spelled differently, the same numbers
])
def test_json_bytes_is_the_json_of_compact_json_whoever_writes_it(value: dict[str, Any]) -> None:
    expected = json.loads(compact_json(value))
    assert json_bytes(value) == compact_json(value).encode()
    out = json_bytes(value, finite=True)
    out.decode("utf-8")  # strict: UTF-8 whichever encoder wrote it
    assert json.loads(out) == expected
    assert repr(json.loads(out)) == repr(expected)  # -0.0 stays -0.0, 2**70 an exact int


def test_only_an_alert_of_text_details_has_only_the_bridges_own_numbers() -> None:
    assert make_alert(details={"region": "eu", "nodeId": "n"}).own_numbers
    assert not make_alert(details={"load": float("nan")}).own_numbers
    assert not make_alert(details={"count": 3}).own_numbers
    assert not make_alert(details={"nested": {"a": "b"}}).own_numbers


def test_webhook_body_keeps_what_the_body_carried_when_details_are_not_text() -> None:
    """A 70-bit integer inside a signed event's details is written exactly (orjson would refuse it):
    the default body goes through json for such an event. A NaN (ingest refuses one now; a job queued
    before may hold one) is written as null, never as the bare NaN a strict receiver refuses."""
    cfg = config({"ops": HOOK})
    alert = make_alert(details={"load": float("nan"), "big": 2**70})
    body = webhook_body(Renderer.from_config(cfg), alert, hook_cfg(cfg))
    assert b'"load":null' in body and f'"big":{2**70}'.encode() in body
    plain = webhook_body(Renderer.from_config(cfg), make_alert(), hook_cfg(cfg))
    assert json.loads(plain)["event"] == make_alert().event.to_dict()
