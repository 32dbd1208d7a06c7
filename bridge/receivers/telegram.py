"""Telegram: a bot posting to one chat with sendMessage, HTML parse mode.

Every event value is HTML-escaped before any template sees it, so a node id cannot open a tag or
a link. The bot token is part of the request path (/bot<token>/sendMessage): it never reaches a
reason (transport errors are described without their URL) and is redacted as a second line.
Telegram answers {"ok": false, "error_code": 429, "parameters": {"retry_after": N}} when a chat is
sent to too fast; that wait is honoured.
"""

from __future__ import annotations

import html
import re
from typing import Any

import aiohttp

from bridge.config import TelegramReceiverConfig
from bridge.digest_text import digest_of, wording
from bridge.errors import Permanent
from bridge.model import Alert
from bridge.receivers.base import redacted
from bridge.receivers.http import HTTPReceiver, failure, post_json, safe_text, seconds
from bridge.render import Renderer

LIMIT = 4096  # characters of text per message
_OPEN_END = re.compile(r"(&[^;\s]*|<[^>]*)$")  # a cut entity or tag at the end


def build(
    name: str, cfg: TelegramReceiverConfig, *, renderer: Renderer, session: aiohttp.ClientSession
) -> TelegramReceiver:
    return TelegramReceiver(name, cfg, renderer=renderer, session=session)


def html_escape(value: str) -> str:
    return html.escape(value, quote=True)


def telegram_message(renderer: Renderer, alert: Alert, cfg: TelegramReceiverConfig) -> dict[str, Any]:
    """The sendMessage body: bold title, then the text, every event value escaped once."""
    if alert.kind == "digest":  # a fleet digest: the count, then the capped list of nodes
        w = wording(digest_of(alert), html_escape)
        head, text = f"<b>{w.title}</b>\n", w.listing
    else:
        ctx, _ = renderer.context_and_overrides(alert, cfg, escape=html_escape)
        head = f"<b>{ctx['title']}</b>\n"
        text = ctx["text"]
    if len(head) + len(text) > LIMIT:
        text = _OPEN_END.sub("", text[: LIMIT - len(head) - 1]) + "…"
    chat: int | str = int(cfg.chat_id) if re.fullmatch(r"-?\d+", cfg.chat_id) else cfg.chat_id
    return {"chat_id": chat, "text": head + text, "parse_mode": "HTML",
            "link_preview_options": {"is_disabled": True}}


class TelegramReceiver(HTTPReceiver[TelegramReceiverConfig]):
    def _read_secrets(self) -> list[str]:
        assert self._cfg.bot_token is not None  # the config model guarantees it
        token = self._cfg.bot_token.get_secret_value()
        self._url = f"{self._cfg.api_url.rstrip('/')}/bot{token}/sendMessage"
        return [token, token.partition(":")[2]]

    def __repr__(self) -> str:
        return f"TelegramReceiver(name={self.name!r}, chat_id={self._cfg.chat_id!r})"

    async def send(self, alert: Alert) -> None:
        body = telegram_message(self._renderer, alert, self._cfg)
        answer = await post_json(self._session, self._url, body, what="telegram", timeout=self._cfg.timeout,
                                 finite=alert.own_numbers)
        data = answer.json()
        if answer.ok and data.get("ok", True) is not False:
            return
        raw = data.get("parameters")
        params: dict[str, Any] = raw if isinstance(raw, dict) else {}
        detail = safe_text(data.get("description"))
        migrated = params.get("migrate_to_chat_id")
        if isinstance(migrated, int) and not isinstance(migrated, bool):
            reason = (f"telegram answered {answer.status} {detail} "
                      f"(the group is now a supergroup: set chat_id: {migrated})")
            raise redacted(Permanent(reason), self._redact)
        raise failure("telegram", answer, self._redact, detail=detail, retry_after=seconds(params.get("retry_after")))
