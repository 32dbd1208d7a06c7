"""Slack receiver against FakeSlack on 127.0.0.1: both modes, every failure class, no leaks."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from bridge.config import parse
from bridge.errors import Permanent, RetryLater
from bridge.model import IncidentRef
from bridge.receivers import Receiver, build_receiver
from bridge.render import Renderer
from tests.support.fakes import T0, Answer, FakeSlack, free_port, make_alert
from tests.support.waits import strings

pytest_plugins = ["tests.support.fakes"]
pytestmark = pytest.mark.timeout(20)


def slack_receiver(session: aiohttp.ClientSession, **settings: Any) -> Receiver:
    cfg = parse({"receivers": {"ops": {"type": "slack", **settings}}}, env={})
    return build_receiver("ops", cfg.receivers["ops"], renderer=Renderer.from_config(cfg), session=session)


def webhook_mode(slack: FakeSlack, session: aiohttp.ClientSession, **extra: Any) -> Receiver:
    return slack_receiver(session, webhook_url=slack.webhook_url, **extra)


def token_mode(slack: FakeSlack, session: aiohttp.ClientSession, **extra: Any) -> Receiver:
    settings = {"token": slack.token, "channel": "#alerts", "api_url": slack.api_url, **extra}
    return slack_receiver(session, **settings)


def headline(payload: dict[str, Any]) -> str:
    text: str = payload["blocks"][0]["text"]["text"]
    return text


# --- delivery --------------------------------------------------------------------------------------


async def test_webhook_mode_delivers_blocks(fake_slack: FakeSlack, http_session: aiohttp.ClientSession) -> None:
    receiver = webhook_mode(fake_slack, http_session)
    await receiver.send(make_alert())

    [msg] = fake_slack.messages
    assert msg.kind == "webhook"
    assert headline(msg.payload) == ":red_circle: node-prod-1 is FAILED"
    assert msg.payload["text"].startswith(":red_circle: node-prod-1 is FAILED")
    assert msg.payload["attachments"][0]["color"] == "#d62728"



async def test_webhook_body_is_utf8_json_whatever_a_template_writes(
    fake_slack: FakeSlack, http_session: aiohttp.ClientSession
) -> None:
    """Sent without slack-sdk: the body must still be JSON Slack can read, as UTF-8, with a lone
    surrogate (which an operator's template can write) escaped, and the event values escaped once."""
    receiver = webhook_mode(fake_slack, http_session, title="odd \ud800 {{ node }} ☃")
    await receiver.send(make_alert(node="n<1>&ünï"))
    [msg] = fake_slack.messages
    assert msg.headers["Content-Type"].startswith("application/json")
    msg.body.decode("utf-8")  # strict: no surrogate reached the wire
    assert headline(msg.payload) == "odd \ud800 n&lt;1&gt;&amp;ünï ☃"

async def test_token_mode_posts_to_the_channel(fake_slack: FakeSlack, http_session: aiohttp.ClientSession) -> None:
    receiver = token_mode(fake_slack, http_session)
    await receiver.send(make_alert(status="RUNNING", previous="FAILED"))

    [msg] = fake_slack.messages
    assert msg.path == "/api/chat.postMessage"
    assert msg.headers["Authorization"] == f"Bearer {fake_slack.token}"
    assert msg.payload["channel"] == "#alerts"
    assert headline(msg.payload) == ":large_green_circle: node-prod-1 is RUNNING"
    assert msg.payload["attachments"][0]["color"] == "#2ca02c"


# --- transient failures ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [webhook_mode, token_mode])
async def test_429_is_retry_later_with_retry_after(
    mode: Any, fake_slack: FakeSlack, http_session: aiohttp.ClientSession
) -> None:
    fake_slack.rate_limit(retry_after=2)
    receiver = mode(fake_slack, http_session)
    with pytest.raises(RetryLater) as info:
        await receiver.send(make_alert())
    assert info.value.retry_after == 2
    assert "429" in info.value.reason
    assert len(fake_slack.requests) == 1  # slack-sdk did not retry on its own
    await receiver.send(make_alert())  # the next attempt goes through
    assert len(fake_slack.messages) == 1


@pytest.mark.parametrize("mode", [webhook_mode, token_mode])
async def test_500_is_retry_later(mode: Any, fake_slack: FakeSlack, http_session: aiohttp.ClientSession) -> None:
    fake_slack.fail_next(status=500)
    with pytest.raises(RetryLater) as info:
        await mode(fake_slack, http_session).send(make_alert())
    assert "answered 500" in info.value.reason
    assert info.value.retry_after is None
    assert len(fake_slack.requests) == 1


async def test_api_ok_false_ratelimited_on_200_is_retry_later(
    fake_slack: FakeSlack, http_session: aiohttp.ClientSession
) -> None:
    fake_slack.fail_next(status=200, error="service_unavailable")
    with pytest.raises(RetryLater, match="service_unavailable"):
        await token_mode(fake_slack, http_session).send(make_alert())


@pytest.mark.parametrize("mode", [webhook_mode, token_mode])
async def test_dropped_connection_is_retry_later_without_sdk_retry(
    mode: Any, fake_slack: FakeSlack, http_session: aiohttp.ClientSession
) -> None:
    fake_slack.drop_next(2)
    with pytest.raises(RetryLater) as info:
        await mode(fake_slack, http_session).send(make_alert())
    assert "ServerDisconnectedError" in info.value.reason
    assert len(fake_slack.requests) == 1  # slack-sdk's connection-error retry handler is off


@pytest.mark.parametrize("mode", [webhook_mode, token_mode])
async def test_connection_refused_is_retry_later(mode: Any, http_session: aiohttp.ClientSession) -> None:
    dead = FakeSlack()  # never started: its URLs point at a closed port
    dead._port = free_port()
    with pytest.raises(RetryLater) as info:
        await mode(dead, http_session).send(make_alert())
    assert "Connection refused" in info.value.reason


@pytest.mark.parametrize("mode", [webhook_mode, token_mode])
async def test_timeout_is_retry_later(mode: Any, fake_slack: FakeSlack, http_session: aiohttp.ClientSession) -> None:
    fake_slack.delay_next(5)
    receiver = mode(fake_slack, http_session, timeout="300ms")
    started = time.monotonic()
    with pytest.raises(RetryLater) as info:
        await receiver.send(make_alert())
    assert time.monotonic() - started < 2
    assert info.value.reason.endswith("no answer within 0.3s")


# --- permanent failures ------------------------------------------------------------------------------


async def test_invalid_auth_is_permanent(fake_slack: FakeSlack, http_session: aiohttp.ClientSession) -> None:
    receiver = token_mode(fake_slack, http_session, token="xoxb-wrong-token-value")
    with pytest.raises(Permanent) as info:
        await receiver.send(make_alert())
    assert info.value.reason == "slack chat.postMessage answered 200 invalid_auth"


async def test_channel_not_found_is_permanent(fake_slack: FakeSlack, http_session: aiohttp.ClientSession) -> None:
    receiver = token_mode(fake_slack, http_session, channel="#nowhere")
    with pytest.raises(Permanent, match="channel_not_found"):
        await receiver.send(make_alert())


async def test_webhook_404_no_service_is_permanent(fake_slack: FakeSlack, http_session: aiohttp.ClientSession) -> None:
    receiver = slack_receiver(http_session, webhook_url=fake_slack.base_url + "/services/T0/B0/revoked")
    with pytest.raises(Permanent) as info:
        await receiver.send(make_alert())
    assert info.value.reason == "slack webhook answered 404 no_service"


async def test_webhook_400_invalid_payload_is_permanent(
    fake_slack: FakeSlack, http_session: aiohttp.ClientSession
) -> None:
    fake_slack.fail_next(status=400, error="invalid_payload")
    with pytest.raises(Permanent, match="answered 400 invalid_payload"):
        await webhook_mode(fake_slack, http_session).send(make_alert())


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_webhook_redirect_is_not_followed(
    status: int, fake_slack: FakeSlack, http_session: aiohttp.ClientSession
) -> None:
    """A redirect would carry the alert (and, for 307/308, the same POST) wherever a Location says."""
    fake_slack.script(Answer(status=status, location=fake_slack.webhook_url))
    receiver = webhook_mode(fake_slack, http_session)
    with pytest.raises(Permanent) as info:
        await receiver.send(make_alert())
    assert f"answered {status}" in info.value.reason and "redirects are not followed" in info.value.reason
    assert fake_slack.webhook_path not in info.value.reason and fake_slack.base_url not in info.value.reason
    assert len(fake_slack.requests) == 1 and fake_slack.messages == []


@pytest.mark.parametrize("url", [
    "hooks.slack.test/services/T0/B0/s3cr3tWebhookPathPart",  # no scheme: every alert retried, then dead
    "ftp://hooks.slack.test/services/T0/B0/s3cr3tWebhookPathPart",
    "https://hooks.slack.test:99999/services/T0/B0/s3cr3tWebhookPathPart",
    "https://[::1/services/T0/B0/s3cr3tWebhookPathPart",  # ValueError when the receiver was built
    "https://hooks slack.test/services/T0/B0/s3cr3tWebhookPathPart",
], ids=["no-scheme", "ftp", "port", "ipv6", "space"])
def test_unusable_webhook_url_is_a_config_error_that_does_not_show_it(url: str) -> None:
    from bridge.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        parse({"receivers": {"ops": {"type": "slack", "webhook_url": url}}}, env={})
    assert "receivers.ops" in str(info.value) and "webhook_url" in str(info.value)
    assert "s3cr3t" not in str(info.value)


# --- secrets ---------------------------------------------------------------------------------------


async def test_no_secret_in_errors_reprs_or_logs(
    fake_slack: FakeSlack, http_session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = [fake_slack.token, "s3cr3tWebhookPathPart", "xoxb-wrong-token-value", "revokedS3cretPath"]
    errors: list[BaseException] = []
    receivers = [
        webhook_mode(fake_slack, http_session),
        token_mode(fake_slack, http_session),
        token_mode(fake_slack, http_session, token="xoxb-wrong-token-value"),
        slack_receiver(http_session, webhook_url=fake_slack.base_url + "/services/T/B/revokedS3cretPath"),
    ]
    for receiver in receivers:
        for script in ("429", "500", "delay", None):
            if script == "429":
                fake_slack.rate_limit()
            elif script == "500":
                fake_slack.fail_next()
            try:
                await receiver.send(make_alert())
            except (RetryLater, Permanent) as exc:
                errors.append(exc)
    dead = FakeSlack()
    dead._port = free_port()
    for receiver in (webhook_mode(dead, http_session), token_mode(dead, http_session)):
        with pytest.raises(RetryLater) as info:
            await receiver.send(make_alert())
        errors.append(info.value)

    assert len(errors) >= 10
    # The fake server's own logs (aiohttp.server / aiohttp.access) are not ours to judge.
    ours = [r for r in caplog.records if r.name not in ("aiohttp.server", "aiohttp.access", "aiohttp.web")]
    seen = "\n".join(
        [str(e) for e in errors]
        + [repr(e) for e in errors]
        + [repr(r) for r in receivers]
        + [r.getMessage() for r in ours]
        + [str(r.args) for r in ours]
    )
    for secret in secrets:
        assert secret not in seen
    for err in errors:
        # A chained library exception would print the URL in a traceback: none may show.
        assert err.__cause__ is None
        assert err.__context__ is None or err.__suppress_context__


# --- hostile event values (issue 11.9) -------------------------------------------------------------

HOSTILE_NODES = ["a> <!channel> <x", "<!here>", "<@U123>", "<https://evil.example|click>", "a&b|c/../d?x#y"]


def _links(cfg: dict[str, Any]) -> dict[str, Any]:
    return {**cfg, "links": {"node": "https://cloud.example.test/nodes/{{ node }}?from=bridge&x=1"}}


@pytest.mark.parametrize("mode", ["webhook", "token"])
@pytest.mark.parametrize("node", HOSTILE_NODES)
async def test_event_values_never_become_mentions_or_links(
    mode: str, node: str, fake_slack: FakeSlack, http_session: aiohttp.ClientSession
) -> None:
    """Node id, status, previous status and labels from a signed event: no mention, link or date."""
    settings: dict[str, Any] = (
        {"webhook_url": fake_slack.webhook_url}
        if mode == "webhook"
        else {"token": fake_slack.token, "channel": "#alerts", "api_url": fake_slack.api_url}
    )
    cfg = parse(_links({"receivers": {"ops": {"type": "slack", **settings}}}), env={})
    receiver = build_receiver("ops", cfg.receivers["ops"], renderer=Renderer.from_config(cfg), session=http_session)
    alert = make_alert(node=node, status="<!here>", previous="<@U123>", labels={"team": "<!subteam^S1>"})
    await receiver.send(alert)

    [msg] = fake_slack.messages
    raw = msg.body.decode()
    payload = json.dumps(msg.payload, ensure_ascii=False)  # the same after form/JSON decoding
    for text in (raw, payload):
        # The only Slack control sequences are ours: the node link and the event-time date.
        assert "<!channel>" not in text and "<!here>" not in text and "<@U123>" not in text
        assert "<!subteam" not in text and "<https://evil" not in text
    posted = strings(msg.payload)
    for s in posted:
        for opened in s.split("<")[1:]:
            assert opened.startswith(("!date^", "https://cloud.example.test/nodes/")), (opened, s)
    assert msg.payload["text"].startswith(":large_orange_circle: ")
    assert "&lt;!here&gt;" in msg.payload["text"] and "&lt;@U123&gt;" in msg.payload["text"]
    [attachment] = msg.payload["attachments"]
    assert "&lt;@U123&gt;" in attachment["fallback"]
    fields = [f["text"] for f in attachment["blocks"][0]["fields"]]
    [node_field] = [f for f in fields if f.startswith("*Node*")]
    link, _, label = node_field.removeprefix("*Node*\n<").removesuffix(">").partition("|")
    # The node id is one percent-encoded path segment; the template's own & is escaped for Slack.
    assert link == "https://cloud.example.test/nodes/" + quote(node, safe="") + "?from=bridge&amp;x=1"
    assert label == node.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


async def test_operator_template_keeps_its_own_mention(
    fake_slack: FakeSlack, http_session: aiohttp.ClientSession
) -> None:
    """An override's own <!here> is the operator's choice; the event's values inside it are escaped."""
    receiver = webhook_mode(fake_slack, http_session, title="{{ node }} {{ status }}", text="<!here> {{ node }} down")
    await receiver.send(make_alert(node="<!channel>", status="<@U1>"))
    [msg] = fake_slack.messages
    assert headline(msg.payload) == "&lt;!channel&gt; &lt;@U1&gt;"
    assert msg.payload["blocks"][1]["text"]["text"] == "<!here> &lt;!channel&gt; down"




async def test_resolved_headline(fake_slack: FakeSlack, http_session: aiohttp.ClientSession) -> None:
    receiver = webhook_mode(fake_slack, http_session)
    ref = IncidentRef("inc_0123456789abcdef0123", T0 - timedelta(minutes=15), 900.0,
                      "FAILED 12m → STARTING 3m → RUNNING")
    await receiver.send(replace(make_alert(node="node-7", status="RUNNING", previous="STARTING"),
                                kind="resolved", incident=ref))
    [msg] = fake_slack.messages
    assert headline(msg.payload) == ":large_green_circle: RESOLVED node-7 after 15m"
