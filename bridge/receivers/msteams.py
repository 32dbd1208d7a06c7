"""Microsoft Teams through a Workflows webhook ("post to a channel when a webhook request is
received"): a message with one Adaptive Card attachment. The retired Office 365 connector
MessageCard format is not used.

Adaptive Card text is a markdown subset: every event value is backslash-escaped before any
template sees it, and ``{{`` (the card's date functions) is broken up. 429 and 5xx retry later.
"""

from __future__ import annotations

import re
from typing import Any

import aiohttp

from bridge.config import MSTeamsReceiverConfig
from bridge.digest_text import digest_of, wording
from bridge.model import Alert
from bridge.receivers.http import HTTPReceiver, cut, failure, post_json, safe_text
from bridge.redact import url_secrets
from bridge.render import Renderer

_MARKDOWN = re.compile(r"([\\*_~`|>#\[\]()<!-])")
# Adaptive Card TextBlock colours: attention (red), good (green), warning (amber).
_COLOURS = {"FAILED": "attention", "RUNNING": "good"}


def build(
    name: str, cfg: MSTeamsReceiverConfig, *, renderer: Renderer, session: aiohttp.ClientSession
) -> MSTeamsReceiver:
    return MSTeamsReceiver(name, cfg, renderer=renderer, session=session)


def teams_escape(value: str) -> str:
    return _MARKDOWN.sub(r"\\\1", value).replace("{{", "{\u200b{")


def teams_message(renderer: Renderer, alert: Alert, cfg: MSTeamsReceiverConfig) -> dict[str, Any]:
    tone = "good" if alert.kind in ("resolved", "stable") else _COLOURS.get(alert.event.status, "warning")
    if alert.kind == "digest":
        return _card(teams_digest(alert, tone))
    ctx, _ = renderer.context_and_overrides(alert, cfg, escape=teams_escape)
    facts = [("Node", ctx["node"]), ("Status", ctx["status"])]
    if ctx["previous_status"]:
        facts.append(("Previous status", ctx["previous_status"]))
    if ctx["incident"]:
        facts += [("Incident", ctx["incident"]["id"]), ("Path", ctx["incident"]["path"])]
    facts.append(("Event time", ctx["event_time"]))
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": cut(ctx["title"], 500), "weight": "Bolder", "size": "Medium",
         "color": tone, "wrap": True},
        {"type": "TextBlock", "text": cut(ctx["text"], 10000), "wrap": True},
        {"type": "FactSet", "facts": [{"title": t, "value": cut(v, 1000)} for t, v in facts if v]},
    ]
    link = renderer.context(alert)["links"]["node"]
    return _card(body, [{"type": "Action.OpenUrl", "title": "Node", "url": link}] if link else None)


def _card(body: list[dict[str, Any]], actions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    }
    if actions:
        card["actions"] = actions
    return {"type": "message", "attachments": [
        {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
    ]}


def teams_digest(alert: Alert, tone: str) -> list[dict[str, Any]]:
    """A fleet digest's card body: the count, then the capped list of nodes."""
    digest = digest_of(alert)
    w = wording(digest, teams_escape)
    return [
        {"type": "TextBlock", "text": cut(w.title, 500), "weight": "Bolder", "size": "Medium", "color": tone,
         "wrap": True},
        {"type": "TextBlock", "text": cut(w.listing, 10000), "wrap": True},
        {"type": "TextBlock", "text": f"group {digest.id}", "isSubtle": True, "wrap": True},
    ]


class MSTeamsReceiver(HTTPReceiver[MSTeamsReceiverConfig]):
    def _read_secrets(self) -> list[str]:
        assert self._cfg.url is not None  # the config model guarantees it
        self._url = self._cfg.url.get_secret_value()
        return url_secrets(self._url)

    async def send(self, alert: Alert) -> None:
        body = teams_message(self._renderer, alert, self._cfg)
        answer = await post_json(self._session, self._url, body, what="msteams", timeout=self._cfg.timeout,
                                 finite=alert.own_numbers)
        if answer.ok:
            return
        error = answer.json().get("error")
        detail = safe_text(error.get("message")) if isinstance(error, dict) else ""
        raise failure("msteams", answer, self._redact, detail=detail)
