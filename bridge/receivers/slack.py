"""Slack: an incoming webhook URL, or a bot token posting with chat.postMessage."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bridge.config import SlackReceiverConfig
from bridge.errors import DeliveryError, Permanent, RetryLater
from bridge.model import Alert
from bridge.receivers.base import (
    http_failure,
    parse_retry_after,
    redacted,
    safe_code,
    transport_failure,
)
from bridge.redact import Redactor, url_secrets
from bridge.render import Renderer, colour, slack_escape

EMOJI = {"FAILED": ":red_circle:", "RUNNING": ":large_green_circle:"}
DEFAULT_EMOJI = ":large_orange_circle:"

# slack-sdk logs the full request URL (the webhook secret) at debug level whenever its logger's
# own level is NOTSET or DEBUG. Give it a logger of its own, pinned above DEBUG.
_SDK_LOG = logging.getLogger("bridge.receivers.slack.sdk")
_SDK_LOG.setLevel(logging.WARNING)

# Web API error codes that a later attempt can cure; every other code needs a human.
_TRANSIENT_ERRORS = frozenset(
    {"ratelimited", "rate_limited", "service_unavailable", "fatal_error", "internal_error", "request_timeout"}
)


class SlackReceiver:
    bounds_send_time = True  # send() runs under asyncio.timeout(cfg.timeout)

    def __init__(
        self,
        name: str,
        cfg: SlackReceiverConfig,
        *,
        renderer: Renderer,
        session: aiohttp.ClientSession,
    ) -> None:
        self.name = name
        self._cfg = cfg
        self._renderer = renderer
        timeout = max(1, math.ceil(cfg.timeout))  # the sdk wants whole seconds; asyncio.timeout is exact
        self._webhook: AsyncWebhookClient | None = None
        self._web: AsyncWebClient | None = None
        if cfg.webhook_url is not None:
            url = cfg.webhook_url.get_secret_value()
            self._redact = Redactor(url_secrets(url))
            # retry_handlers=[]: slack-sdk must not retry on its own; delivery decides.
            self._webhook = AsyncWebhookClient(
                url=url, timeout=timeout, session=session, logger=_SDK_LOG, retry_handlers=[]
            )
        else:
            token = cfg.token.get_secret_value() if cfg.token else None
            self._redact = Redactor([token])
            self._web = AsyncWebClient(
                token=token,
                base_url=cfg.api_url,
                timeout=timeout,
                session=session,
                logger=_SDK_LOG,
                retry_handlers=[],
            )

    @property
    def mode(self) -> str:
        return "webhook" if self._webhook is not None else "api"

    def __repr__(self) -> str:
        return f"SlackReceiver(name={self.name!r}, mode={self.mode!r})"

    async def send(self, alert: Alert) -> None:
        message = slack_message(self._renderer, alert, self._cfg)
        what = "slack webhook" if self._webhook is not None else "slack chat.postMessage"
        try:
            async with asyncio.timeout(self._cfg.timeout):
                if self._webhook is not None:
                    await self._post_webhook(self._webhook, message)
                else:
                    assert self._web is not None
                    await self._post_api(self._web, message)
        except DeliveryError:
            raise
        except SlackApiError as exc:
            raise self._api_failure(exc) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise transport_failure(what, exc, self._cfg.timeout) from None
        except SlackClientError as exc:
            raise Permanent(f"{what}: {type(exc).__name__}") from None

    async def _post_webhook(self, client: AsyncWebhookClient, message: Mapping[str, Any]) -> None:
        resp = await client.send_dict(dict(message))
        if 200 <= resp.status_code < 300:
            return
        failure = http_failure("slack webhook", resp.status_code, safe_code(resp.body), _header(resp.headers))
        raise redacted(failure, self._redact)

    async def _post_api(self, client: AsyncWebClient, message: Mapping[str, Any]) -> None:
        # Raises SlackApiError unless Slack answers 200 with ok: true.
        channel = self._cfg.channel or ""  # the config model requires a channel with a token
        await client.chat_postMessage(channel=channel, unfurl_links=False, **message)

    def _api_failure(self, exc: SlackApiError) -> DeliveryError:
        resp = exc.response
        # A SlackResponse has status_code; on an unreadable body slack-sdk passes aiohttp's response.
        status = int(getattr(resp, "status_code", None) or getattr(resp, "status", 0) or 0)
        data = getattr(resp, "data", None)
        code = safe_code(data.get("error")) if isinstance(data, dict) else ""
        retry_after = parse_retry_after(_header(getattr(resp, "headers", None)))
        reason = f"slack chat.postMessage answered {status}" + (f" {code}" if code else "")
        if status in (408, 429) or status >= 500 or code in _TRANSIENT_ERRORS:
            return redacted(RetryLater(reason, retry_after), self._redact)
        return redacted(Permanent(reason), self._redact)

    async def close(self) -> None:
        """Nothing to release: the HTTP session belongs to the caller."""


def build(name: str, cfg: SlackReceiverConfig, *, renderer: Renderer, session: aiohttp.ClientSession) -> SlackReceiver:
    return SlackReceiver(name, cfg, renderer=renderer, session=session)


def slack_message(renderer: Renderer, alert: Alert, cfg: SlackReceiverConfig) -> dict[str, Any]:
    """Fallback text, a headline block, and a coloured attachment with fields.

    Every event value is escaped (&, <, >) before any template or default sees it, so no node id
    or status can become a mention (<!channel>), a link or a date; the node link's values are
    percent-encoded path segments (bridge/render.py)."""
    ctx, used = renderer.context_and_overrides(alert, cfg, escape=slack_escape)
    headline = ctx["title"]
    if "title" not in used:  # an operator's own title may carry its own emoji
        headline = f"{EMOJI.get(alert.event.status, DEFAULT_EMOJI)} {headline}"
    fallback = headline
    if ctx["previous_status"]:
        fallback += f" (was {ctx['previous_status']}"
        if ctx["previous_duration_human"]:
            fallback += f" for {ctx['previous_duration_human']}"
        fallback += ")"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(headline, 150), "emoji": True}}
    ]
    if "text" in used:  # an override is mrkdwn written by the operator; fields cover the default
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(ctx["text"], 3000)}})
    where = f"route `{ctx['route']}` · receiver `{ctx['receiver']}` · {ctx['delivery_id']}"
    detail_blocks: list[dict[str, Any]] = [
        {"type": "section", "fields": _fields(alert, ctx)},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(where, 3000)}]},
    ]
    return {
        "text": fallback,
        "blocks": blocks,
        "attachments": [{"color": colour(alert.event.status), "fallback": fallback, "blocks": detail_blocks}],
    }


def _fields(alert: Alert, ctx: Mapping[str, Any]) -> list[dict[str, str]]:
    """The attachment's fields, from the escaped context."""
    node = ctx["node"]
    url = ctx["links"]["node"]
    if url:
        node = f"<{url}|{node}>"
    if ctx["previous_status"]:
        previous = ctx["previous_status"]
        if ctx["previous_duration_human"]:
            previous += f" for {ctx['previous_duration_human']}"
    else:
        previous = "none known"
    unix = int(alert.event.timestamp.timestamp())
    # Slack shows the time in each reader's zone; the fallback is UTC.
    when = f"<!date^{unix}^{{date_short_pretty}} {{time_secs}}|{ctx['event_time']}>"
    fields = [("Node", node), ("Status", ctx["status"]), ("Previous status", previous), ("Event time", when)]
    if ctx["labels"]:
        fields.append(("Labels", ", ".join(f"`{k}={v}`" for k, v in sorted(ctx["labels"].items()))))
    return [{"type": "mrkdwn", "text": _cut(f"*{name}*\n{value}", 2000)} for name, value in fields]


def _cut(text: str, limit: int) -> str:
    """Slack rejects over-long block text (invalid_blocks); shorten instead of losing the alert."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _header(headers: Any) -> str | None:
    if headers is None:
        return None
    value = headers.get("Retry-After") or headers.get("retry-after")
    return str(value) if value is not None else None
