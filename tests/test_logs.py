"""Log lines: one per event and per delivery attempt with their ids, text or JSON; no secret ever."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa

from bridge import logs
from bridge.config import parse
from bridge.testing import event_body, sign
from tests.support.cli_runner import run_cli
from tests.support.fakes import Answer, FakeSlack, SMTPServer, WebhookSink, make_cert, wait_until
from tests.support.harness import BridgeProcess
from tests.support.keyserver import KeyEndpoint
from tests.support.promtext import series

pytestmark = pytest.mark.timeout(90)

FAST = {"initial_backoff": "50ms", "max_backoff": "200ms", "max_attempts": 4}


def json_lines(text: str) -> list[dict[str, Any]]:
    docs = []
    for line in text.splitlines():
        if line.strip():
            doc = json.loads(line)  # every line is one JSON object
            assert isinstance(doc, dict), line
            docs.append(doc)
    return docs


async def test_json_log_shape_one_line_per_event_and_attempt(
    bridge_process: Callable[..., Any], webhook_sink: WebhookSink
) -> None:
    webhook_sink.fail_next(1, status=503)
    p: BridgeProcess = await bridge_process(
        log={"format": "json", "level": "info"},
        receivers={"hook": {"type": "webhook", "url": webhook_sink.url, "retry": FAST}, "console": {"type": "log"}},
        routes=[{"name": "all", "to": ["hook", "console"]}],
    )
    t = datetime.now(UTC) - timedelta(minutes=1)
    status, first = await p.event("n1", "FAILED", timestamp=t)
    assert status == 200 and first["deliveries"] == 2
    status, dup = await p.event("n1", "FAILED", timestamp=t)
    assert dup["status"] == "duplicate"
    status, _ = await p.event("n1", "FAILED", path="/webhook/other-node")  # node mismatch: refused
    assert status == 403
    await webhook_sink.wait_for(2, timeout=10)
    assert await p.terminate() == 0

    docs = json_lines(p.log())
    for d in docs:
        assert set(d) >= {"time", "level", "logger", "message"}, d
        assert datetime.fromisoformat(d["time"]).tzinfo is not None
        assert d["level"] in ("debug", "info", "warning", "error", "critical")

    event_lines = [d for d in docs if d["logger"] == "bridge.ingest"]
    assert [(d["message"], d.get("event_id")) for d in event_lines] == [
        ("event accepted", first["id"]), ("event duplicate", first["id"]),
        (event_lines[2]["message"], None),
    ]
    assert event_lines[0]["node"] == "n1" and event_lines[0]["deliveries"] == 2
    assert event_lines[2]["level"] == "info" and event_lines[2]["error"] == "node_rejected"

    attempts = [d for d in docs if d["logger"] == "bridge.delivery" and d.get("receiver") == "hook"]
    assert [d["level"] for d in attempts] == ["warning", "info"]  # 503 → retry, then delivered
    assert attempts[0]["delivery_id"] == attempts[1]["delivery_id"]
    assert [d["attempt"] for d in attempts] == [1, 2]
    assert all(d["event_id"] == first["id"] for d in attempts)
    assert "503" in attempts[0]["message"]

    [alert] = [d for d in docs if d["logger"] == "bridge.alerts"]
    assert alert["alert"]["node"] == "n1" and alert["alert"]["event_id"] == first["id"]
    assert alert["message"].startswith("ALERT n1 is FAILED")


async def test_text_log_is_the_default(bridge_process: Callable[..., Any]) -> None:
    p: BridgeProcess = await bridge_process(routes=[{"name": "all", "to": ["console"]}])
    status, doc = await p.event("n7", "FAILED")
    assert status == 200
    await wait_until(lambda: "delivered" in p.log(), 10, "a delivery line")
    assert await p.terminate() == 0
    text = p.log()
    pattern = (r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO +bridge\.ingest: event accepted "
               rf"event_id={doc['id']} node=n7 node_status=FAILED deliveries=1$")
    assert re.search(pattern, text, re.M), text
    assert re.search(rf"bridge\.delivery: delivered delivery_id=dlv_\w+ receiver=console event_id={doc['id']} "
                     r"attempt=1$", text, re.M), text
    with pytest.raises(ValueError):
        json_lines(text)


FORGED = "2026-01-01 00:00:00,000 ERROR   bridge.ingest: FORGED line"


async def test_text_log_lines_cannot_be_forged_by_a_signed_value(bridge_process: Callable[..., Any]) -> None:
    """CR, LF and other control characters in a signed node id or status stay inside their line."""
    p: BridgeProcess = await bridge_process(routes=[{"name": "all", "to": ["console"]}])
    node = f"n1\r\n{FORGED}"
    status, doc = await p.event(node, "FAILED\n\x1b[31m\u2028\x85")
    assert status == 200, doc
    await wait_until(lambda: "delivered" in p.log(), 10, "a delivery line")
    assert await p.terminate() == 0
    lines = p.log().splitlines()
    assert not [line for line in lines if line.startswith(FORGED[:10]) and "FORGED" in line], lines
    [accepted] = [line for line in lines if "event accepted" in line]
    assert "node=n1\\r\\n2026-01-01" in accepted and "FAILED\\n\\x1b[31m\\u2028\\x85" in accepted, accepted
    # every line is one record: a timestamp, a level, a logger
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ +[\w.]+: ", line) for line in lines), lines


def test_text_and_json_formats_escape_control_characters() -> None:
    from bridge.logs import JSONFormatter, TextFormatter

    record = logging.makeLogRecord({"msg": "node %s", "args": ("a\r\nb\ud800",), "levelname": "INFO",
                                    "name": "t", "node": "x\ny", "alert": {"k": "v\r\n\u2029"}})
    line = TextFormatter().format(record)
    assert "\n" not in line and "\r" not in line and "\u2029" not in line
    assert "node a\\r\\nb\\ud800" in line and "node=x\\ny" in line
    doc = JSONFormatter().format(record)
    assert "\n" not in doc and "\ud800" not in doc
    assert json.loads(doc)["message"] == "node a\r\nb\ud800" and json.loads(doc)["alert"]["k"] == "v\r\n\u2029"


def test_text_format_escapes_bidirectional_overrides() -> None:
    """A signed node id with U+202E cannot make a log viewer show the rest of its line reversed."""
    from bridge.logs import TextFormatter

    hostile = "n1\u202e\u2066\u200fdelif"
    record = logging.makeLogRecord({"msg": "event %s", "args": (hostile,), "levelname": "INFO",
                                    "name": "t", "node": hostile})
    line = TextFormatter().format(record)
    assert not any(c in line for c in "\u202e\u2066\u200f"), ascii(line)
    assert "event n1\\u202e\\u2066\\u200fdelif" in line and "node=n1\\u202e\\u2066\\u200fdelif" in line, line


def test_redactor_scrubs_messages_extras_and_tracebacks() -> None:
    secret = "s3cr3t-" + secrets.token_hex(8)
    cfg = parse({"receivers": {"hook": {"type": "webhook", "url": f"https://x.test/?k={secret}"}},
                 "verification": {"public_key": "unused"}}, env={})
    for fmt in ("text", "json"):
        out = io.StringIO()
        logs.setup(parse({"log": {"format": fmt}}, env={}).log, cfg, stream=out)
        log = logging.getLogger("test.redaction")
        log.warning("message %s", f"https://x.test/?k={secret}", extra={"field": secret, "nested": {"a": [secret]}})
        try:
            raise RuntimeError(f"boom {secret}")
        except RuntimeError:
            log.exception("failed")
        log.warning("stack", stack_info=True, extra={"x": secret})
        text = out.getvalue()
        assert secret not in text
        assert "<secret>" in text and "boom" in text and "RuntimeError" in text
    # a reload that adds a secret makes it redacted too
    newer = "n3wer-" + secrets.token_hex(8)
    logs.reconfigure(parse({"receivers": {"h2": {"type": "webhook", "url": f"https://y.test/{newer}"}},
                            "verification": {"public_key": "unused"}, "log": {"format": "json"}}, env={}))
    logging.getLogger("test.redaction").warning("now %s and %s", newer, secret)
    tail = out.getvalue().splitlines()[-1]
    assert newer not in tail and secret not in tail and json.loads(tail)["message"] == "now <secret> and <secret>"
    for h in list(logging.getLogger().handlers):
        if getattr(h, "_alert_bridge", False):
            logging.getLogger().removeHandler(h)


def test_redactor_scrubs_the_storage_password() -> None:
    """The storage URL is no SecretStr, yet a redis:// URL may carry a password: the log scrubs it too."""
    password = "pw-" + secrets.token_hex(8)
    url = f"redis://:{password}@127.0.0.1:6379/0"
    cfg = parse({"storage": {"url": url}, "verification": {"public_key": "unused"}}, env={})
    out = io.StringIO()
    logs.setup(parse({"log": {"format": "json"}}, env={}).log, cfg, stream=out)
    try:
        logging.getLogger("test.redaction").warning("cannot reach %s (auth %s)", url, password)
        doc = json.loads(out.getvalue().splitlines()[-1])
        assert password not in out.getvalue() and doc["message"] == "cannot reach <secret> (auth <secret>)"
    finally:
        for h in list(logging.getLogger().handlers):
            if getattr(h, "_alert_bridge", False):
                logging.getLogger().removeHandler(h)


@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_no_secret_in_logs_metrics_or_answers(
    fmt: str, bridge_process: Callable[..., Any], signing_key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey,
    tmp_path: Path,
) -> None:
    slack_secret = "slackpath" + secrets.token_hex(12)
    slack_bad_secret = "slackgone" + secrets.token_hex(12)
    url_secret = "urltoken" + secrets.token_hex(12)
    header_secret = "hdrbearer" + secrets.token_hex(12)
    smtp_secret = "smtppass" + secrets.token_hex(12)
    smtp_wrong_secret = "smtpwrong" + secrets.token_hex(12)
    api_secret = "apitoken" + secrets.token_hex(12)
    all_secrets = [slack_secret, slack_bad_secret, url_secret, header_secret, smtp_secret, smtp_wrong_secret,
                   api_secret]
    cert = make_cert(tmp_path / "tls")
    answers: list[str] = []

    async with (
        FakeSlack(webhook_path=f"/services/T0/B0/{slack_secret}") as slack,
        WebhookSink() as sink,
        SMTPServer(security="starttls", cert=cert, auth=("bridge", smtp_secret)) as smtp,
        KeyEndpoint(signing_key, failures=1) as keys,
    ):
        slack.fail_next(2, status=500, error="internal_error")
        # an echoing peer: the header value comes back in the error body
        sink.script(Answer(status=500, body=f"you sent Bearer {header_secret}".encode()),
                    Answer(status=401, body=header_secret.encode()))
        smtp.fail_next("451 4.3.0 try again later", stage="data")
        smtp_cfg = {"host": "127.0.0.1", "port": smtp.port, "security": "starttls", "username": "bridge",
                    "ca_file": str(cert.cert_file)}
        p: BridgeProcess = await bridge_process(
            log={"format": fmt, "level": "debug"},
            verification={"public_key_file": None, "public_key_url": keys.url, "api_token": api_secret},
            receivers={
                "chat": {"type": "slack", "webhook_url": slack.webhook_url, "rate_limit": 0, "retry": FAST},
                "chat-gone": {"type": "slack", "webhook_url": f"{slack.base_url}/services/T0/B0/{slack_bad_secret}",
                              "rate_limit": 0, "retry": FAST},
                "hook": {"type": "webhook", "url": f"{sink.url}?token={url_secret}",
                         "headers": {"Authorization": f"Bearer {header_secret}"}, "retry": FAST},
                "mail": {"type": "email", "to": ["ops@example.test"], "from": "bridge@example.test",
                         "smtp": {**smtp_cfg, "password": smtp_secret}, "retry": FAST},
                "mail-wrong": {"type": "email", "to": ["ops@example.test"], "from": "bridge@example.test",
                               "smtp": {**smtp_cfg, "password": smtp_wrong_secret}, "retry": FAST},
            },
            routes=[{"name": "all", "to": ["chat", "chat-gone", "hook", "mail", "mail-wrong"]}],
        )
        assert keys.authorizations[-1] == f"Bearer {api_secret}"  # the token was really used
        t = datetime.now(UTC) - timedelta(minutes=2)
        for i, node in enumerate(("n1", "n2")):
            status, doc = await p.event(node, "FAILED", timestamp=t + timedelta(seconds=i))
            assert status == 200, doc
            answers.append(json.dumps(doc))
        bad = event_body("n3", "FAILED")
        for body, sig in ((bad, sign(bad, other_key)), (b"{]", sign(b"{]", signing_key)), (bad, None)):
            status, doc, _ = await p.post(body, signature=sig if sig else None)
            assert status >= 400
            answers.append(json.dumps(doc))

        def settled(text: str) -> bool:
            def total(receiver: str, *outcomes: str) -> float:
                return sum(series(text, "alert_bridge_deliveries_total", receiver=receiver, outcome=o)
                           for o in outcomes)

            return (total("chat", "delivered") == 2 and total("chat-gone", "dead") == 2
                    and total("hook", "dead") == 1 and total("hook", "delivered") == 1
                    and total("mail", "delivered") == 2 and total("mail-wrong", "dead", "retry") >= 2)

        metrics = ""
        for _ in range(200):
            metrics = await p.metrics()
            if settled(metrics):
                break
            await asyncio.sleep(0.05)
        assert settled(metrics), metrics

        # a rejected reload answers with every problem; none may quote a secret
        good = p.cfg
        cfg = yaml.safe_load(p.config_path.read_text())
        cfg["routes"].append({"name": "bad", "to": ["nobody"]})
        cfg["receivers"]["hook"]["timeout"] = "soon"
        p.write_config(cfg)
        async with aiohttp.ClientSession() as s, s.post(p.admin_url + "/-/reload", json={}) as resp:
            assert resp.status == 400
            answers.append(await resp.text())
        p.write_config(good)
        assert await p.terminate() == 0

    deliveries = await run_cli("deliveries", "list", "-c", str(p.config_path), "--json")
    assert deliveries.code == 0, deliveries
    errors = [d["last_error"] for d in json.loads(deliveries.out) if d["last_error"]]
    assert len(errors) >= 4, deliveries.out
    check = await run_cli("check", "-c", str(p.config_path))
    log_text = p.log()
    assert "delivery dead" in log_text and "retrying" in log_text and "public key refresh failed" in log_text
    if fmt == "json":
        json_lines(log_text)
    haystacks = {"log": log_text, "metrics": metrics, "answers": "\n".join(answers),
                 "deliveries": deliveries.out + deliveries.err, "check": check.out + check.err}
    for where, text in haystacks.items():
        for secret in all_secrets:
            assert secret not in text, f"a secret ({secret[:9]}…) leaked into {where}"
            # nor a large piece of it
            assert secret[-16:] not in text, f"part of a secret ({secret[:9]}…) leaked into {where}"
