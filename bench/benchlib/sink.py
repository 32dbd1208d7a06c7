"""The local receiving end: a webhook sink and a Slack incoming-webhook test server in one aiohttp app.

    python -m benchlib.sink PORT

POST /hook                    webhook receiver target (counts deliveries, unique by webhook-id)
POST /services/{T}/{B}/{X}    Slack incoming webhook: answers "ok" like Slack does
POST /bare                    answers 200 at once: the bare aiohttp round trip the e2e case compares to
GET  /_stats                  counters per channel (times are time.monotonic(): CLOCK_MONOTONIC is
                              system-wide on Linux, so they compare with the harness's own clock)
POST /_control                {"status": 503} starts an outage, {"status": 200} ends it,
                              {"track": REGEX} records arrival time per first regex group, {"reset": true}
GET  /_arrivals               {channel: {id: arrival time}} for tracked ids
GET  /_sample                 one webhook delivery as received (body size and headers), for the
                              delivery-floor client to post the same thing
"""

from __future__ import annotations

import re
import sys
import time
from typing import Any

from aiohttp import web

CHANNELS = ("hook", "slack")


class Sink:
    def __init__(self) -> None:
        self.status = 200
        self.track: re.Pattern[bytes] | None = None
        self.sample: dict[str, Any] | None = None
        self.reset()

    def reset(self) -> None:
        self.counts = {c: {"ok": 0, "failed": 0, "first_ok": None, "last_ok": None} for c in CHANNELS}
        self.unique: dict[str, set[str]] = {c: set() for c in CHANNELS}
        self.arrivals: dict[str, dict[str, float]] = {c: {} for c in CHANNELS}

    async def receive(self, channel: str, request: web.Request) -> web.Response:
        body = await request.read()
        now = time.monotonic()
        if self.track is not None:
            m = self.track.search(body)
            if m:
                self.arrivals[channel].setdefault(m.group(1).decode(), now)
        stats = self.counts[channel]
        if self.status != 200:
            stats["failed"] += 1
            return web.Response(status=self.status, text="outage")
        stats["ok"] += 1
        stats["first_ok"] = stats["first_ok"] or now
        stats["last_ok"] = now
        delivery = request.headers.get("webhook-id")
        if delivery:
            self.unique[channel].add(delivery)
        if self.sample is None and channel == "hook":
            keep = ("Content-Type", "User-Agent", "webhook-id")
            self.sample = {
                "body": body.decode(errors="replace"),
                "headers": {k: v for k, v in request.headers.items() if k in keep},
            }
        return web.Response(text="ok")  # Slack's incoming webhooks answer the two letters "ok"


def make_app() -> web.Application:
    sink = Sink()

    async def hook(request: web.Request) -> web.Response:
        return await sink.receive("hook", request)

    async def slack(request: web.Request) -> web.Response:
        return await sink.receive("slack", request)

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
        return web.json_response(sink.sample)

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/hook", hook)
    app.router.add_post("/services/{team}/{bot}/{secret}", slack)
    app.router.add_post("/bare", bare)
    app.router.add_get("/_stats", stats)
    app.router.add_post("/_control", control)
    app.router.add_get("/_arrivals", arrivals)
    app.router.add_get("/_sample", sample)
    return app


if __name__ == "__main__":
    web.run_app(make_app(), host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
