"""Webhook receiver against WebhookSink on 127.0.0.1, with Standard Webhooks signatures."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from bridge.config import WebhookReceiverConfig, parse
from bridge.errors import ConfigError, Permanent, RetryLater
from bridge.receivers import Receiver, build_receiver
from bridge.receivers.webhook import webhook_body
from bridge.render import Renderer
from tests.support.fakes import Answer, CertFiles, Received, WebhookSink, free_port, make_alert
from tests.support.tls import https_server

pytest_plugins = ["tests.support.fakes"]
pytestmark = pytest.mark.timeout(20)

RAW_KEY = b"0123456789abcdef0123456789abcdef"
WHSEC = "whsec_" + base64.b64encode(RAW_KEY).decode()


def webhook_receiver(session: aiohttp.ClientSession, url: str, **settings: Any) -> Receiver:
    cfg = parse({"receivers": {"hook": {"type": "webhook", "url": url, **settings}}}, env={})
    return build_receiver("hook", cfg.receivers["hook"], renderer=Renderer.from_config(cfg), session=session)


def verify(req: Received, key: bytes, tolerance: float = 300) -> bool:
    """Standard Webhooks verification, written from the spec (not from the code under test)."""
    msg_id = req.headers["webhook-id"]
    timestamp = req.headers["webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > tolerance:
        return False
    content = f"{msg_id}.{timestamp}.{req.body.decode()}".encode()
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    # The header may hold several space-separated "v1,<sig>" values (key rotation).
    for part in req.headers["webhook-signature"].split(" "):
        version, _, sig = part.partition(",")
        if version == "v1" and hmac.compare_digest(sig, expected):
            return True
    return False


async def test_signed_json_verifies_with_whsec_secret(
    webhook_sink: WebhookSink, http_session: aiohttp.ClientSession
) -> None:
    receiver = webhook_receiver(http_session, webhook_sink.url, signing_secret=WHSEC)
    alert = make_alert()
    await receiver.send(alert)

    [req] = webhook_sink.requests
    assert req.method == "POST"
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["webhook-id"] == alert.delivery_id
    assert verify(req, RAW_KEY)
    assert not verify(req, WHSEC.encode())  # the whsec_ prefix is not part of the key
    body = req.json()
    assert body["event"] == alert.event.to_dict()
    assert body["route"] == "prod-failures"
    assert body["receiver"] == "ops"
    assert body["deliveryId"] == alert.delivery_id
    assert body["previousStatus"] == "RUNNING"
    assert body["previousDuration"] == 11520.0


async def test_plain_secret_is_used_as_raw_bytes(
    webhook_sink: WebhookSink, http_session: aiohttp.ClientSession
) -> None:
    await webhook_receiver(http_session, webhook_sink.url, signing_secret="plain-secret-value").send(make_alert())
    [req] = webhook_sink.requests
    assert verify(req, b"plain-secret-value")


async def test_webhook_id_is_stable_across_retries_and_sent_unsigned(
    webhook_sink: WebhookSink, http_session: aiohttp.ClientSession
) -> None:
    webhook_sink.script(503)
    receiver = webhook_receiver(http_session, webhook_sink.url)
    with pytest.raises(RetryLater):
        await receiver.send(make_alert())
    await receiver.send(make_alert())
    first, second = webhook_sink.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == "dlv_0123456789abcdef01234567"
    assert "webhook-signature" not in second.headers
    assert "webhook-timestamp" not in second.headers


async def test_configured_headers_and_body_template(
    webhook_sink: WebhookSink, http_session: aiohttp.ClientSession
) -> None:
    receiver = webhook_receiver(
        http_session,
        webhook_sink.url,
        headers={"Authorization": "Bearer hdr-s3cret", "X-Team": "core", "content-type": "application/x-alert"},
        body_template='{"text": {{ title | tojson }}, "id": {{ delivery_id | tojson }}}',
        signing_secret=WHSEC,
    )
    await receiver.send(make_alert())
    [req] = webhook_sink.requests
    assert req.headers["Authorization"] == "Bearer hdr-s3cret"
    assert req.headers["X-Team"] == "core"
    assert req.headers.getall("Content-Type") == ["application/x-alert"]  # replaced, not doubled
    assert req.json() == {"text": "node-prod-1 is FAILED", "id": "dlv_0123456789abcdef01234567"}
    assert verify(req, RAW_KEY)


# --- failures ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [503, 500, 502, 408, 429])
async def test_transient_statuses_are_retry_later(
    status: int, webhook_sink: WebhookSink, http_session: aiohttp.ClientSession
) -> None:
    webhook_sink.script(status)
    with pytest.raises(RetryLater) as info:
        await webhook_receiver(http_session, webhook_sink.url).send(make_alert())
    assert info.value.reason.startswith(f"webhook answered {status}")
    assert len(webhook_sink.requests) == 1  # one attempt, no retry inside the receiver


async def test_retry_after_is_honoured(webhook_sink: WebhookSink, http_session: aiohttp.ClientSession) -> None:
    in_30s = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    webhook_sink.script(
        Answer(status=503, retry_after=7),
        Answer(status=503, retry_after=in_30s),
        Answer(status=429, retry_after="garbage"),
        Answer(status=429, retry_after="inf"),
    )
    receiver = webhook_receiver(http_session, webhook_sink.url)
    seen = []
    for _ in range(4):
        with pytest.raises(RetryLater) as info:
            await receiver.send(make_alert())
        seen.append(info.value.retry_after)
    assert seen[0] == 7
    assert seen[1] is not None and 25 <= seen[1] <= 30  # an HTTP date, counted from now
    assert seen[2:] == [None, None]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
async def test_other_4xx_is_permanent(
    status: int, webhook_sink: WebhookSink, http_session: aiohttp.ClientSession
) -> None:
    webhook_sink.script(status)
    with pytest.raises(Permanent) as info:
        await webhook_receiver(http_session, webhook_sink.url).send(make_alert())
    assert info.value.reason.startswith(f"webhook answered {status}")


async def test_redirect_is_not_followed(webhook_sink: WebhookSink, http_session: aiohttp.ClientSession) -> None:
    webhook_sink.script(Answer(status=301))
    with pytest.raises(Permanent, match="redirects are not followed"):
        await webhook_receiver(http_session, webhook_sink.url).send(make_alert())
    assert len(webhook_sink.requests) == 1


async def test_flapping_endpoint(webhook_sink: WebhookSink, http_session: aiohttp.ClientSession) -> None:
    webhook_sink.flap([503, 200], times=2)
    receiver = webhook_receiver(http_session, webhook_sink.url)
    outcomes = []
    for _ in range(4):
        try:
            await receiver.send(make_alert())
            outcomes.append("ok")
        except RetryLater:
            outcomes.append("retry")
    assert outcomes == ["retry", "ok", "retry", "ok"]
    assert len(webhook_sink.delivered) == 2


async def test_dropped_connection_is_retry_later(
    webhook_sink: WebhookSink, http_session: aiohttp.ClientSession
) -> None:
    webhook_sink.drop_next()
    with pytest.raises(RetryLater, match="ServerDisconnectedError"):
        await webhook_receiver(http_session, webhook_sink.url).send(make_alert())
    assert len(webhook_sink.requests) == 1


async def test_unknown_host_is_retry_later(http_session: aiohttp.ClientSession) -> None:
    with pytest.raises(RetryLater, match="DNS lookup failed"):
        await webhook_receiver(http_session, "http://no-such-host.invalid/hook").send(make_alert())


async def test_connection_refused_is_retry_later(http_session: aiohttp.ClientSession) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    with pytest.raises(RetryLater) as info:
        await webhook_receiver(http_session, url).send(make_alert())
    assert info.value.reason.endswith("Connection refused")


async def test_timeout_is_retry_later(webhook_sink: WebhookSink, http_session: aiohttp.ClientSession) -> None:
    webhook_sink.delay_next(5)
    started = time.monotonic()
    with pytest.raises(RetryLater) as info:
        await webhook_receiver(http_session, webhook_sink.url, timeout="300ms").send(make_alert())
    assert time.monotonic() - started < 2
    assert info.value.reason == "webhook: no answer within 0.3s"


async def test_bad_whsec_secret_is_a_config_error(http_session: aiohttp.ClientSession) -> None:
    with pytest.raises(ConfigError) as info:
        webhook_receiver(http_session, "http://127.0.0.1:1/", signing_secret="whsec_!!!not-base64!!!")
    assert info.value.problems == ["receivers.hook.signing_secret: a whsec_ secret must be base64 after the prefix"]
    assert "not-base64" not in str(info.value)


# --- secrets ---------------------------------------------------------------------------------------


async def test_no_secret_in_errors_reprs_or_logs(
    webhook_sink: WebhookSink, http_session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url_secret = "urlTok3nInQuery"
    secrets = [url_secret, "hdr-s3cret-value", "plain-signing-s3cret"]
    url = f"{webhook_sink.url}?token={url_secret}"
    settings = {"headers": {"X-Api-Key": "hdr-s3cret-value"}, "signing_secret": "plain-signing-s3cret"}
    receiver = webhook_receiver(http_session, url, **settings)
    # A hostile endpoint echoes our secrets back in its reason phrase and body.
    echo = f"Denied {url_secret} hdr-s3cret-value"
    webhook_sink.script(
        Answer(status=401, reason=echo, body=echo.encode()),
        503,
        Answer(status=429, reason=f"Slow down {url_secret}", body=echo.encode()),
        Answer(301),
    )
    webhook_sink.delay_next(5)
    errors: list[BaseException] = []
    for timeout_receiver in [receiver] * 4 + [webhook_receiver(http_session, url, timeout="200ms", **settings)]:
        with pytest.raises((RetryLater, Permanent)) as info:
            await timeout_receiver.send(make_alert())
        errors.append(info.value)
    dead = webhook_receiver(http_session, f"http://127.0.0.1:{free_port()}/?token={url_secret}", **settings)
    with pytest.raises(RetryLater) as info:
        await dead.send(make_alert())
    errors.append(info.value)

    ours = [r for r in caplog.records if r.name not in ("aiohttp.server", "aiohttp.access", "aiohttp.web")]
    seen = "\n".join(
        [str(e) for e in errors]
        + [repr(e) for e in errors]
        + [repr(receiver), repr(dead)]
        + [r.getMessage() for r in ours]
    )
    for secret in secrets:
        assert secret not in seen
    for exc in errors:
        assert exc.__cause__ is None
        assert exc.__context__ is None or exc.__suppress_context__
    assert json.loads(webhook_sink.requests[0].body)["deliveryId"]  # the requests really went out


# --- JSON body templates with hostile event values (issue 11.10) -----------------------------------

QUOTED = '{"text": "{{ node }} is {{ status }}", "node": "{{ node }}", "was": {{ previous_status | tojson }}}'


@pytest.mark.parametrize(
    "node", ['x", "sev": "critical', "a\r\nb", 'back\\slash\\"', "ünï ☃ \u2028 \x00", "}{]"]
)
async def test_json_body_template_escapes_every_value(
    node: str, webhook_sink: WebhookSink, http_session: aiohttp.ClientSession
) -> None:
    receiver = webhook_receiver(http_session, webhook_sink.url, body_template=QUOTED)
    await receiver.send(make_alert(node=node, status='FAILED"\r\n'))
    [req] = webhook_sink.requests
    body = json.loads(req.body)  # valid JSON whatever the node id
    assert body == {"text": f'{node} is FAILED"\r\n', "node": node, "was": "RUNNING"}  # no injected key
    assert req.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ('{"text": "{{ node | safe }}"}', "receivers.hook.body_template: "),
        ('{"text": {{ node }}}', "receivers.hook.body_template: does not render valid JSON"),
    ],
)
def test_check_refuses_a_json_body_that_event_values_can_break(template: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        Renderer.from_config(parse({"receivers": {"hook": {"type": "webhook", "url": "http://127.0.0.1:1/",
                                                             "body_template": template}}}, env={}))
    [found] = info.value.problems
    assert found.startswith(problem), found


def test_check_accepts_a_urlencoded_node_in_a_json_body() -> None:
    """A lone surrogate never reaches a template (ingest answers 422), so check must not fail on one."""
    template = '{"link": "https://console.example/nodes/{{ node | urlencode }}", "node": "{{ node }}"}'
    cfg = parse({"receivers": {"hook": {"type": "webhook", "url": "http://127.0.0.1:1/",
                                        "body_template": template}}}, env={})
    rcv = cfg.receivers["hook"]
    assert isinstance(rcv, WebhookReceiverConfig)
    alert = make_alert()
    assert json.loads(webhook_body(Renderer.from_config(cfg), alert, rcv))["link"].startswith(
        "https://console.example/nodes/")


def test_check_names_the_hostile_value_that_injects_a_key() -> None:
    with pytest.raises(ConfigError) as info:
        Renderer.from_config(parse({"receivers": {"hook": {"type": "webhook", "url": "http://127.0.0.1:1/",
                                                             "body_template": '{"text": "{{ node | safe }}"}'}}},
                                   env={}))
    [found] = info.value.problems
    assert found.startswith(
        "receivers.hook.body_template: the node id/status 'x\", \"sev\": \"critical' changes the JSON keys"
    ), found


def test_unquoted_values_render_as_json() -> None:
    cfg = parse({"receivers": {"hook": {"type": "webhook", "url": "http://127.0.0.1:1/",
                                        "body_template": '{"dur": {{ previous_duration }}, "l": {{ labels }}}'}}},
                env={})
    rcv = cfg.receivers["hook"]
    assert isinstance(rcv, WebhookReceiverConfig)
    assert json.loads(webhook_body(Renderer.from_config(cfg), make_alert(), rcv)) == {
        "dur": 11520.0, "l": {"env": "prod", "team": "core"}}


def test_an_explicit_json_content_type_is_still_checked() -> None:
    with pytest.raises(ConfigError):
        Renderer.from_config(parse({"receivers": {"hook": {
            "type": "webhook", "url": "http://127.0.0.1:1/", "headers": {"content-type": "application/json"},
            "body_template": "node={{ node }}"}}}, env={}))


@pytest.mark.parametrize("secret", ["whsec_!!!not-base64!!!", "whsec_", "whsec_abc"])
def test_check_refuses_an_undecodable_whsec_secret(secret: str) -> None:
    # parse() is what `check` and `serve` both run: one validation (issue 11.12).
    with pytest.raises(ConfigError) as info:
        parse({"receivers": {"hook": {"type": "webhook", "url": "http://127.0.0.1:1/", "signing_secret": secret}}},
              env={})
    [problem] = info.value.problems
    assert problem.startswith("receivers.hook.signing_secret: a whsec_ secret ")
    assert secret not in problem or secret == "whsec_"


# --- TLS failures (issue 11.11) ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["webhook", "slack"])
async def test_untrusted_certificate_is_a_clear_retry_later(
    kind: str, tls_cert: CertFiles, http_session: aiohttp.ClientSession
) -> None:
    async with https_server(tls_cert) as url:
        key = "url" if kind == "webhook" else "webhook_url"
        cfg = parse({"receivers": {"r": {"type": kind, key: url}}}, env={})
        receiver = build_receiver("r", cfg.receivers["r"], renderer=Renderer.from_config(cfg), session=http_session)
        with pytest.raises(RetryLater) as info:
            await receiver.send(make_alert())
    reason = info.value.reason
    assert reason.endswith(": TLS certificate not trusted for 127.0.0.1 (self-signed certificate)"), reason
    assert "s3cr3t" not in reason
