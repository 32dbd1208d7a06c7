"""The local receiving end: a webhook sink, Slack and PagerDuty test servers and an SMTP server.

    python -m benchlib.sink PORT [SMTP_PORT]

POST /hook                    webhook receiver target (counts deliveries, unique by webhook-id)
POST /services/{T}/{B}/{X}    Slack incoming webhook: answers "ok" like Slack does
POST /v2/enqueue              PagerDuty Events API v2: answers 202 {"status": "success", ...}
SMTP on SMTP_PORT (aiosmtpd)  every message is a delivery on channel "mail"; during an outage the
                              DATA command is answered 451 (a temporary failure: the bridge retries)
POST /bare                    answers 200 at once: the bare aiohttp round trip the e2e case compares to
GET  /_stats                  counters per channel (times are time.monotonic(): CLOCK_MONOTONIC is
                              system-wide on Linux, so they compare with the harness's own clock)
POST /_control                {"status": 503} starts an outage, {"status": 200} ends it,
                              {"track": REGEX} records arrival time per first regex group, {"reset": true}
GET  /_arrivals               {channel: {id: arrival time}} for tracked ids
GET  /_sample?channel=C       one delivery of channel C (default hook) as received (body and
                              headers; for mail the raw message and envelope), for the delivery
                              floor client to send the same thing
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from typing import Any

from aiohttp import web

from benchlib import loop

CHANNELS = ("hook", "slack", "pagerduty", "mail")


class Sink:
    def __init__(self) -> None:
        self.status = 200
        self.track: re.Pattern[bytes] | None = None
        self.samples: dict[str, dict[str, Any]] = {}
        self.reset()

    def reset(self) -> None:
        self.counts = {c: {"ok": 0, "failed": 0, "first_ok": None, "last_ok": None} for c in CHANNELS}
        self.unique: dict[str, set[str]] = {c: set() for c in CHANNELS}
        self.arrivals: dict[str, dict[str, float]] = {c: {} for c in CHANNELS}

    def arrive(self, channel: str, body: bytes, delivery: str | None) -> bool:
        """Count one arrival; False during an outage (the caller answers with a failure)."""
        now = time.monotonic()
        if self.track is not None:
            m = self.track.search(body)
            if m:
                self.arrivals[channel].setdefault(m.group(1).decode(), now)
        stats = self.counts[channel]
        if self.status != 200:
            stats["failed"] += 1
            return False
        stats["ok"] += 1
        stats["first_ok"] = stats["first_ok"] or now
        stats["last_ok"] = now
        if delivery:
            self.unique[channel].add(delivery)
        return True

    async def receive(self, channel: str, request: web.Request) -> web.Response:
        body = await request.read()
        if not self.arrive(channel, body, request.headers.get("webhook-id")):
            return web.Response(status=self.status, text="outage")
        if channel not in self.samples:
            keep = ("Content-Type", "User-Agent", "webhook-id", "webhook-timestamp", "webhook-signature")
            self.samples[channel] = {
                "body": body.decode(errors="replace"),
                "headers": {k: v for k, v in request.headers.items() if k in keep},
            }
        if channel == "pagerduty":
            answer = {"status": "success", "message": "Event processed", "dedup_key": "bench"}
            return web.json_response(answer, status=202)
        return web.Response(text="ok")  # Slack's incoming webhooks answer the two letters "ok"


class MailHandler:
    """aiosmtpd handler: each message is one delivery on channel "mail"."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        body = envelope.content if isinstance(envelope.content, bytes) else envelope.content.encode()
        m = re.search(rb"Message-ID: <([^@>]+)@", body)
        if not self.sink.arrive("mail", body, m.group(1).decode() if m else None):
            return "451 4.3.0 outage, try again later"
        if "mail" not in self.sink.samples:
            self.sink.samples["mail"] = {
                "body": body.decode(errors="replace"),
                "mail_from": envelope.mail_from,
                "rcpt_tos": list(envelope.rcpt_tos),
            }
        return "250 OK"


def make_app(sink: Sink | None = None) -> web.Application:
    sink = sink or Sink()

    async def hook(request: web.Request) -> web.Response:
        return await sink.receive("hook", request)

    async def slack(request: web.Request) -> web.Response:
        return await sink.receive("slack", request)

    async def pagerduty(request: web.Request) -> web.Response:
        return await sink.receive("pagerduty", request)

    async def bare(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="OK")

    async def stats(request: web.Request) -> web.Response:
        out = {c: {**sink.counts[c], "unique": len(sink.unique[c])} for c in CHANNELS}
        return web.json_response({"status": sink.status, "channels": out})

    async def control(request: web.Request) -> web.Response:
        data = await request.json()
        if data.get("reset"):
            sink.reset()
        if "status" in data:
            sink.status = int(data["status"])
        if "track" in data:
            sink.track = re.compile(data["track"].encode()) if data["track"] else None
        return web.json_response({"status": sink.status})

    async def arrivals(request: web.Request) -> web.Response:
        return web.json_response(sink.arrivals)

    async def sample(request: web.Request) -> web.Response:
        return web.json_response(sink.samples.get(request.query.get("channel", "hook")))

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/hook", hook)
    app.router.add_post("/services/{team}/{bot}/{secret}", slack)
    app.router.add_post("/v2/enqueue", pagerduty)
    app.router.add_post("/bare", bare)
    app.router.add_get("/_stats", stats)
    app.router.add_post("/_control", control)
    app.router.add_get("/_arrivals", arrivals)
    app.router.add_get("/_sample", sample)
    return app


async def serve(port: int, smtp_port: int | None) -> None:
    sink = Sink()
    runner = web.AppRunner(make_app(sink), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    if smtp_port:
        from aiosmtpd.smtp import SMTP

        handler = MailHandler(sink)
        await asyncio.get_running_loop().create_server(lambda: SMTP(handler), "127.0.0.1", smtp_port)
    await asyncio.Event().wait()  # until the harness stops us


if __name__ == "__main__":
    loop.run(serve(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else None))
