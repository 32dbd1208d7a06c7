"""Discord: a channel webhook posting one embed, coloured by status, with ``?wait=true`` so a
refused message is an error here instead of silently dropped.

Every event value is markdown-escaped before any template sees it, and ``allowed_mentions``
is empty, so no node id can ping @everyone, a role or a user. A 429 carries ``retry_after``
(seconds, a float) in its JSON body and a Retry-After header; the longer wait is honoured.
"""

from __future__ import annotations

import re
from typing import Any

import aiohttp
from yarl import URL

from bridge.config import DiscordReceiverConfig
from bridge.digest_text import digest_of, wording
from bridge.model import Alert
from bridge.receivers.http import HTTPReceiver, alert_colour, cut, failure, post_json, safe_text, seconds
from bridge.redact import url_secrets
from bridge.render import Renderer

_MARKDOWN = re.compile(r"([\\*_~`|>#\[\]()<@:!-])")


def build(
    name: str, cfg: DiscordReceiverConfig, *, renderer: Renderer, session: aiohttp.ClientSession
) -> DiscordReceiver:
    return DiscordReceiver(name, cfg, renderer=renderer, session=session)


def discord_escape(value: str) -> str:
    """Backslash before every character Discord reads as markdown, a mention or an emoji."""
    return _MARKDOWN.sub(r"\\\1", value)


def discord_message(renderer: Renderer, alert: Alert, cfg: DiscordReceiverConfig) -> dict[str, Any]:
    if alert.kind == "digest":
        return discord_digest(alert)
    ctx, _ = renderer.context_and_overrides(alert, cfg, escape=discord_escape)
    fields = [("Node", ctx["node"]), ("Status", ctx["status"])]
    if ctx["previous_status"]:
        previous = ctx["previous_status"]
        if ctx["previous_duration_human"]:
            previous += f" for {ctx['previous_duration_human']}"
        fields.append(("Previous status", previous))
    if ctx["incident"]:
        fields.append(("Incident", ctx["incident"]["id"]))
        if ctx["incident"]["path"]:
            fields.append(("Path", ctx["incident"]["path"]))
    embed: dict[str, Any] = {
        "title": cut(ctx["title"], 256),
        "description": cut(ctx["text"], 4096),
        "color": int(alert_colour(alert)[1:], 16),
        "timestamp": alert.event.stamp,
        "fields": [{"name": name, "value": cut(value, 1024), "inline": True} for name, value in fields],
    }
    link = renderer.context(alert)["links"]["node"]  # unescaped: a URL, not markdown
    if link:
        embed["url"] = link
    return {"embeds": [embed], "allowed_mentions": {"parse": []}}


class DiscordReceiver(HTTPReceiver[DiscordReceiverConfig]):
    def _read_secrets(self) -> list[str]:
        assert self._cfg.url is not None  # the config model guarantees it
        url = self._cfg.url.get_secret_value()
        self._url = str(URL(url, encoded=True).update_query(wait="true"))
        return [*url_secrets(url), *url_secrets(self._url)]

    async def send(self, alert: Alert) -> None:
        body = discord_message(self._renderer, alert, self._cfg)
        answer = await post_json(self._session, self._url, body, what="discord", timeout=self._cfg.timeout,
                                 finite=alert.own_numbers)
        if answer.ok:
            return
        # 429: {"message": "You are being rate limited.", "retry_after": 0.5, "global": false}
        # 4xx: {"code": 10015, "message": "Unknown Webhook"}
        data = answer.json()
        detail = safe_text(data.get("message"))
        if isinstance(data.get("code"), int):
            detail = f"{detail} (code {data['code']})"
        raise failure("discord", answer, self._redact, detail=detail, retry_after=seconds(data.get("retry_after")))


def discord_digest(alert: Alert) -> dict[str, Any]:
    """A fleet digest: one embed, the count as its title and the capped list of nodes."""
    digest = digest_of(alert)
    w = wording(digest, discord_escape)
    embed = {"title": cut(w.title, 256), "description": cut(w.listing, 4096),
             "color": int(alert_colour(alert)[1:], 16), "timestamp": alert.event.stamp,
             "footer": {"text": cut(f"group {digest.id}", 2048)}}
    return {"embeds": [embed], "allowed_mentions": {"parse": []}}
