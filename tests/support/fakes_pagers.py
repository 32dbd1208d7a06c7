"""Loopback fakes for PagerDuty, Opsgenie, Teams Workflows, Discord and Telegram.

Each answers as its service documents: the success status and body, the error bodies, and its
own 429 form (PagerDuty: no Retry-After; Discord: JSON ``retry_after`` seconds plus a header;
Telegram: ``parameters.retry_after``). They keep the state a person would see (PagerDuty and
Opsgenie alerts by dedup key / alias, chat messages), so tests can check correlation.
``script(...)`` / ``fail_next(...)`` from tests/support/fakes.py force answers; ``rate_limit`` gives the
service's own 429.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import html.parser
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Self

import pytest
from aiohttp import web

from tests.support.fakes import Answer, Received, _HTTPFake

PD_ROUTING_KEY = "R0ut1ngKeyF0rTests0123456789abcd"  # 32 characters, as PagerDuty's are
OG_API_KEY = "0a1b2c3d-og-key-4e5f-6a7b8c9d0e1f"
TG_TOKEN = "123456789:AAFakeTelegramBotTokenForTests_xyz"
DISCORD_TOKEN = "DiscordWebhookT0kenForTests-abcdefXYZ"
TEAMS_SIG = "TeamsWorkflowSigForTests0123456789"


def _json(data: Any, status: int, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=json.dumps(data), content_type="application/json", headers=headers)


class _ServiceFake(_HTTPFake):
    """A fake whose scripted answers take the service's own body for their status."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    def _routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{rest:.*}", self._handle)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        answer = await self._next_scripted(request)
        resp = self._scripted(answer) if answer is not None else self.answer(request, rec)
        rec.status = resp.status
        rec.accepted = 200 <= resp.status < 300
        return resp

    def _scripted(self, answer: Answer) -> web.Response:
        if answer.body is not None:
            headers = {"Retry-After": str(answer.retry_after)} if answer.retry_after is not None else None
            return web.Response(status=answer.status, body=answer.body, headers=headers)
        return self.error(answer.status, answer.retry_after)

    def error(self, status: int, retry_after: float | str | None) -> web.Response:
        raise NotImplementedError

    def answer(self, request: web.Request, rec: Received) -> web.Response:
        raise NotImplementedError

    def rate_limit(self, n: int = 1, retry_after: float | None = None) -> None:
        self.script(*[Answer(status=429, retry_after=retry_after) for _ in range(n)])

    @property
    def accepted(self) -> list[Received]:
        return [r for r in self.requests if r.accepted]


class FakePagerDuty(_ServiceFake):
    """Events API v2: POST /v2/enqueue → 202 {"status": "success", "dedup_key": ...}."""

    def __init__(self, routing_key: str = PD_ROUTING_KEY) -> None:
        super().__init__()
        self.routing_key = routing_key
        self.alerts: dict[str, str] = {}  # dedup_key → triggered / acknowledged / resolved

    @property
    def url(self) -> str:
        return self.base_url + "/v2/enqueue"

    def error(self, status: int, retry_after: float | str | None) -> web.Response:
        if status == 429:  # documented without a Retry-After header
            return _json({"status": "throttle event", "message": "Requests for this service are arriving too "
                          "quickly.  Please retry later."}, 429)
        if status == 400:
            return _json({"status": "invalid event", "message": "Event object is invalid", "errors": []}, 400)
        return web.Response(status=status, text="Internal Server Error")

    def answer(self, request: web.Request, rec: Received) -> web.Response:
        if request.path != "/v2/enqueue" or request.method != "POST":
            return web.Response(status=404, text="Not Found")
        event = rec.payload
        errors = []
        if event.get("routing_key") != self.routing_key:
            errors.append("Invalid routing key")
        action = event.get("event_action")
        if action not in ("trigger", "acknowledge", "resolve"):
            errors.append("'event_action' is invalid (must be one of: trigger, acknowledge, resolve)")
        if action == "trigger":
            payload = event.get("payload") or {}
            for key in ("summary", "source", "severity"):
                if not payload.get(key):
                    errors.append(f"'payload.{key}' is missing or blank")
            if payload.get("severity") not in ("critical", "error", "warning", "info"):
                errors.append("'payload.severity' is invalid")
        elif not event.get("dedup_key"):
            errors.append("'dedup_key' is missing or blank")
        if errors:
            return _json({"status": "invalid event", "message": "Event object is invalid", "errors": errors}, 400)
        key = event.get("dedup_key") or uuid.uuid4().hex
        if action == "trigger":
            self.alerts[key] = "triggered"
        elif key in self.alerts and self.alerts[key] != "resolved":
            self.alerts[key] = {"acknowledge": "acknowledged", "resolve": "resolved"}[action]
        return _json({"status": "success", "message": "Event processed", "dedup_key": key}, 202)


class FakeOpsgenie(_ServiceFake):
    """Alert API: create, close and acknowledge by alias, GenieKey auth, 202 + requestId."""

    def __init__(self, api_key: str = OG_API_KEY) -> None:
        super().__init__()
        self.api_key = api_key
        self.alerts: dict[str, str] = {}  # alias → open / acked / closed

    def error(self, status: int, retry_after: float | str | None) -> web.Response:
        messages = {429: "You are making too many requests! To avoid errors, we recommend you limit requests.",
                    422: "Request body is not processable. Please check the errors.",
                    401: "Could not authenticate", 404: "Alert not found"}
        return _json({"message": messages.get(status, "Internal Server Error"), "took": 0.001,
                      "requestId": str(uuid.uuid4())}, status)

    def answer(self, request: web.Request, rec: Received) -> web.Response:
        if request.headers.get("Authorization") != f"GenieKey {self.api_key}":
            return self.error(401, None)
        parts = request.path.strip("/").split("/")
        body = rec.payload
        if request.method != "POST" or parts[:2] != ["v2", "alerts"]:
            return self.error(404, None)
        if len(parts) == 2:
            if not body.get("message") or len(body["message"]) > 130:
                return self.error(422, None)
            alias = body.get("alias") or str(uuid.uuid4())
            if self.alerts.get(alias) in (None, "closed"):
                self.alerts[alias] = "open"
        elif len(parts) == 4 and parts[3] in ("close", "acknowledge"):
            if request.query.get("identifierType") != "alias":
                return self.error(404, None)  # the id of an alert that does not exist
            alias = parts[2]
            if alias in self.alerts:
                self.alerts[alias] = "closed" if parts[3] == "close" else "acked"
        else:
            return self.error(404, None)
        return _json({"result": "Request will be processed", "took": 0.002, "requestId": str(uuid.uuid4())}, 202)


class FakeTeams(_ServiceFake):
    """A Workflows webhook: 202 for a message with an Adaptive Card attachment, 400 otherwise."""

    PATH = "/workflows/0f1e2d3c/triggers/manual/paths/invoke"

    @property
    def url(self) -> str:
        return f"{self.base_url}{self.PATH}?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sig={TEAMS_SIG}"

    @property
    def cards(self) -> list[dict[str, Any]]:
        return [r.payload["attachments"][0]["content"] for r in self.accepted]

    def error(self, status: int, retry_after: float | str | None) -> web.Response:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        code = {429: "TooManyRequests", 400: "InvalidRequestContent", 401: "DirectApiAuthorizationRequired"}
        return _json({"error": {"code": code.get(status, "ServiceError"), "message": "The request failed."}},
                     status, headers)

    def answer(self, request: web.Request, rec: Received) -> web.Response:
        if request.path != self.PATH or request.query.get("sig") != TEAMS_SIG:
            return self.error(401, None)
        attachments = rec.payload.get("attachments") or [{}]
        first = attachments[0] if isinstance(attachments[0], dict) else {}
        content = first.get("content") or {}
        card_type = first.get("contentType")
        if (rec.payload.get("type") != "message" or card_type != "application/vnd.microsoft.card.adaptive"
                or content.get("type") != "AdaptiveCard" or not content.get("body")):
            return self.error(400, None)
        return web.Response(status=202)


class FakeDiscord(_ServiceFake):
    """POST /api/webhooks/{id}/{token}[?wait=true]: 200 with the message (wait) or 204."""

    WEBHOOK_ID = "112233445566778899"

    def __init__(self) -> None:
        super().__init__()
        self._retry_header: str | None = None

    @property
    def url(self) -> str:
        return f"{self.base_url}/api/webhooks/{self.WEBHOOK_ID}/{DISCORD_TOKEN}"

    def rate_limit(self, n: int = 1, retry_after: float | None = 1.5, header: str | None = None) -> None:
        """429 with JSON retry_after (seconds, float); the Retry-After header only if ``header``."""
        self._retry_header = header
        self.script(*[Answer(status=429, retry_after=retry_after) for _ in range(n)])

    def error(self, status: int, retry_after: float | str | None) -> web.Response:
        if status == 429:
            headers = {"Retry-After": self._retry_header} if self._retry_header else None
            return _json({"message": "You are being rate limited.", "retry_after": retry_after, "global": False},
                         429, headers)
        known = {400: (50006, "Cannot send an empty message"), 401: (50027, "Invalid Webhook Token"),
                 404: (10015, "Unknown Webhook")}
        if status in known:
            code, message = known[status]
            return _json({"message": message, "code": code}, status)
        return _json({"message": "500: Internal Server Error", "code": 0}, status)

    def answer(self, request: web.Request, rec: Received) -> web.Response:
        parts = request.path.strip("/").split("/")
        if parts[:3] != ["api", "webhooks", self.WEBHOOK_ID] or len(parts) != 4:
            return self.error(404, None)
        if parts[3] != DISCORD_TOKEN:
            return self.error(401, None)
        if not (rec.payload.get("content") or rec.payload.get("embeds")):
            return self.error(400, None)
        if request.query.get("wait") == "true":
            return _json({"id": str(len(self.requests)), "embeds": rec.payload.get("embeds")}, 200)
        return web.Response(status=204)


_ALLOWED_TAG = re.compile(r"</?(b|strong|i|em|u|ins|s|strike|del|a|code|pre|blockquote|tg-spoiler|span|tg-emoji)"
                          r"( [^<>]*)?>")


class _TelegramHTML(html.parser.HTMLParser):
    """Telegram's HTML parse mode: a few tags; every other '<' must be written &lt;."""

    ALLOWED = frozenset({"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre",
                         "blockquote", "tg-spoiler", "span", "tg-emoji"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.bad: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.ALLOWED:
            self.bad.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


class FakeTelegram(_ServiceFake):
    """Bot API sendMessage: {"ok": true, "result": message} or {"ok": false, "error_code", ...}."""

    def __init__(self, token: str = TG_TOKEN, chat_id: int = -1001234567890) -> None:
        super().__init__()
        self.token = token
        self.chat_id = chat_id
        self.texts: list[str] = []  # what people saw: the text after HTML parsing

    @property
    def api_url(self) -> str:
        return self.base_url

    def error(self, status: int, retry_after: float | str | None) -> web.Response:
        descriptions = {429: f"Too Many Requests: retry after {retry_after}", 400: "Bad Request: chat not found",
                        401: "Unauthorized", 403: "Forbidden: bot was blocked by the user"}
        data: dict[str, Any] = {"ok": False, "error_code": status,
                                "description": descriptions.get(status, "Internal Server Error")}
        if status == 429 and retry_after is not None:
            data["parameters"] = {"retry_after": retry_after}
        return _json(data, status)

    def answer(self, request: web.Request, rec: Received) -> web.Response:
        if request.path != f"/bot{self.token}/sendMessage":
            return _json({"ok": False, "error_code": 401 if request.path.endswith("/sendMessage") else 404,
                          "description": "Unauthorized" if request.path.endswith("/sendMessage") else "Not Found"},
                         401 if request.path.endswith("/sendMessage") else 404)
        body = rec.payload
        if body.get("chat_id") != self.chat_id:
            return self.error(400, None)
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            return _json({"ok": False, "error_code": 400, "description": "Bad Request: message text is empty"}, 400)
        if body.get("parse_mode") == "HTML":
            parser = _TelegramHTML()
            parser.feed(text)
            parser.close()
            if parser.bad or "<" in _ALLOWED_TAG.sub("", text):
                return _json({"ok": False, "error_code": 400, "description": "Bad Request: can't parse entities: "
                              "Unsupported start tag"}, 400)
            text = "".join(parser.text)
        if len(text) > 4096:
            return _json({"ok": False, "error_code": 400, "description": "Bad Request: message is too long"}, 400)
        self.texts.append(text)
        return _json({"ok": True, "result": {"message_id": len(self.texts), "chat": {"id": self.chat_id},
                                             "date": int(time.time()), "text": text}}, 200)


@pytest.fixture
async def fake_pagerduty() -> AsyncIterator[FakePagerDuty]:
    async with FakePagerDuty() as fake:
        yield fake


@pytest.fixture
async def fake_opsgenie() -> AsyncIterator[FakeOpsgenie]:
    async with FakeOpsgenie() as fake:
        yield fake


@pytest.fixture
async def fake_teams() -> AsyncIterator[FakeTeams]:
    async with FakeTeams() as fake:
        yield fake


@pytest.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as fake:
        yield fake


@pytest.fixture
async def fake_telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake
