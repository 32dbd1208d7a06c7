"""Signed events in, alerts out: the real server, real receivers, real Slack/SMTP/webhook peers."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.support.fakes import FakeSlack, SMTPServer, WebhookSink, make_cert, wait_until
from tests.support.harness import InProcessBridge

T0 = datetime.now(UTC) - timedelta(minutes=30)
FAST_RETRY = {"initial_backoff": "100ms", "max_backoff": "1s", "max_attempts": 5}


def _text(payload: dict[str, Any]) -> str:
    """Everything a person would read in a Slack message: fallback text and block texts."""
    parts = [payload.get("text") or ""]
    for block in payload.get("blocks", []) + [b for a in payload.get("attachments", []) for b in a.get("blocks", [])]:
        if isinstance(block.get("text"), dict):
            parts.append(block["text"].get("text", ""))
        for f in block.get("fields", []) or []:
            parts.append(f.get("text", ""))
        for e in block.get("elements", []) or []:
            if isinstance(e, dict):
                parts.append(str(e.get("text", "")))
    return "\n".join(parts)


async def test_failed_then_recovered_to_slack_webhook(bridge: Callable[..., Any]) -> None:
    async with FakeSlack() as slack:
        b: InProcessBridge = await bridge(
            nodes={"node-prod-1": {"labels": {"env": "prod"}}},
            receivers={"oncall": {"type": "slack", "webhook_url": slack.webhook_url, "rate_limit": 0}},
            routes=[{"name": "failed-anywhere", "match": {"status": ["FAILED"]}, "to": ["oncall"]},
                    {"name": "recoveries", "match": {"status": ["RUNNING"], "previous_status": ["FAILED"]},
                     "to": ["oncall"]}],
        )
        assert (await b.event("node-prod-1", "RUNNING", timestamp=T0))[0] == 200  # nothing matches
        assert (await b.event("node-prod-1", "FAILED", timestamp=T0 + timedelta(minutes=1)))[0] == 200
        assert (await b.event("node-prod-1", "RUNNING", timestamp=T0 + timedelta(minutes=7)))[0] == 200
        await wait_until(lambda: len(slack.messages) >= 2, 10, "two slack messages")
        failed, recovered = (_text(m.payload) for m in slack.messages)
        assert "node-prod-1" in failed and "FAILED" in failed
        assert "node-prod-1" in recovered and "RUNNING" in recovered and "FAILED" in recovered
        assert "6m" in recovered  # how long it was FAILED
        assert slack.messages[0].payload["blocks"], "Block Kit blocks expected"
        await b.stop()
        assert len(slack.messages) == 2


async def test_slack_token_mode(bridge: Callable[..., Any]) -> None:
    async with FakeSlack() as slack:
        b: InProcessBridge = await bridge(
            receivers={"oncall": {"type": "slack", "token": slack.token, "channel": "#alerts",
                                  "api_url": slack.api_url, "rate_limit": 0}},
            routes=[{"name": "failed", "match": {"status": "FAILED"}, "to": ["oncall"]}],
        )
        await b.event("n9", "FAILED")
        await wait_until(lambda: len(slack.messages) >= 1, 10, "chat.postMessage")
        msg = slack.messages[0]
        assert msg.kind == "api" and msg.path.endswith("chat.postMessage")
        assert msg.headers["Authorization"] == f"Bearer {slack.token}"
        assert msg.payload["channel"] == "#alerts"
        assert "n9" in _text(msg.payload) and "FAILED" in _text(msg.payload)


async def test_email_over_starttls_with_auth(bridge: Callable[..., Any], tmp_path: Path) -> None:
    cert = make_cert(tmp_path)
    async with SMTPServer(security="starttls", cert=cert, auth=("bridge", "pa55word")) as smtp:
        b: InProcessBridge = await bridge(
            receivers={"ops": {"type": "email", "to": ["ops@example.com"], "from": "bridge@example.com",
                               "smtp": {"host": "127.0.0.1", "port": smtp.port, "security": "starttls",
                                        "username": "bridge", "password": "pa55word",
                                        "ca_file": str(cert.cert_file)}}},
            routes=[{"name": "failed", "match": {"status": "FAILED"}, "to": ["ops"]}],
        )
        await b.event("node-7", "FAILED")
        mails = await smtp.wait_for(1, timeout=10)
        mail = mails[0]
        assert mail.tls and mail.login == "bridge" and mail.rcpt_tos == ["ops@example.com"]
        assert "node-7" in mail.message["Subject"] and "FAILED" in mail.message["Subject"]
        assert "node-7" in mail.part("plain") and "node-7" in mail.part("html")


async def test_webhook_signed_per_standard_webhooks(bridge: Callable[..., Any]) -> None:
    secret = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
    async with WebhookSink() as sink:
        b: InProcessBridge = await bridge(
            receivers={"audit": {"type": "webhook", "url": sink.url, "signing_secret": secret}},
            routes=[{"name": "all", "to": ["audit"]}],
        )
        _, doc = await b.event("node-3", "PAUSED")
        got = (await sink.wait_for(1, timeout=10))[0]
        msg_id, stamp = got.headers["webhook-id"], got.headers["webhook-timestamp"]
        expected = base64.b64encode(hmac.new(base64.b64decode(secret[6:]), f"{msg_id}.{stamp}.".encode()
                                             + got.body, hashlib.sha256).digest()).decode()
        assert f"v1,{expected}" in got.headers["webhook-signature"].split(" ")
        body = got.json()
        assert body["event"]["nodeId"] == "node-3" and body["event"]["status"] == "PAUSED"
        assert body["event"]["id"] == doc["id"] and body["route"] == "all" and body["receiver"] == "audit"
        assert msg_id.startswith("dlv_")


async def test_429_retry_after_is_honoured(bridge: Callable[..., Any]) -> None:
    async with FakeSlack() as slack:
        slack.rate_limit(1, retry_after=2)
        b: InProcessBridge = await bridge(
            receivers={"oncall": {"type": "slack", "webhook_url": slack.webhook_url, "rate_limit": 0,
                                  "retry": FAST_RETRY}},
            routes=[{"name": "failed", "match": {"status": "FAILED"}, "to": ["oncall"]}],
        )
        await b.event("n1", "FAILED")
        await wait_until(lambda: len(slack.messages) >= 1, 10, "delivery after the 429")
        first, second = slack.requests[0], slack.requests[1]
        assert first.status == 429
        assert second.at - first.at >= 2.0, f"retried after {second.at - first.at:.2f}s"


async def test_permanent_error_not_retried(bridge: Callable[..., Any]) -> None:
    async with WebhookSink(default_status=400) as sink:
        b: InProcessBridge = await bridge(
            receivers={"audit": {"type": "webhook", "url": sink.url, "retry": FAST_RETRY}},
            routes=[{"name": "all", "to": ["audit"]}],
        )
        await b.event("n1", "FAILED")
        await wait_until(lambda: len(sink.requests) >= 1, 10, "one attempt")

        async def dead() -> bool:
            return (await b.app.store.stats(now=datetime.now(UTC))).dead == 1

        for _ in range(50):
            if await dead():
                break
            await asyncio.sleep(0.1)
        assert await dead()
        [job] = await b.app.store.list_deliveries(state="dead")
        assert job.attempts == 1 and "400" in (job.last_error or "")
        await asyncio.sleep(1.5)  # a retry would have come by now with FAST_RETRY
        assert len(sink.requests) == 1
