"""Slack: an incoming webhook URL, or a bot token posting with chat.postMessage.

Bot-token mode keeps one conversation per incident (bridge/conversations.py): the incident's
first message at this receiver (normally the firing) is the root; updates, reminders,
escalations and acks are replies in its thread (``thread_ts``); the resolution
edits the root in place (``chat.update`` with the channel *ID* chat.postMessage answered, which
chat.update requires) and adds a reply (``reply_broadcast`` with ``broadcast_resolved``). A root
that is gone (deleted, channel gone, no longer editable) is replaced by a new message, logged.
A flapping notice is the root of a conversation of its own, keyed by the node as pagers key it: its
stable summary edits it green and replies under it.
Incoming webhooks cannot thread or edit: every notification is a message of its own.

Retries stay with the dispatcher: every failure is RetryLater or Permanent. A resolution retried
after its chat.update went through edits the root again to the same content (harmless) and then
adds the reply; a firing retried after its root was posted and recorded is not posted again.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Mapping
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bridge.config import SlackReceiverConfig
from bridge.conversations import Conversations
from bridge.digest_text import wording
from bridge.errors import DeliveryError, Permanent, RetryLater
from bridge.model import Alert, Digest
from bridge.receivers.base import (
    http_failure,
    parse_retry_after,
    redacted,
    safe_code,
    transport_failure,
)
from bridge.receivers.http import correlation_key, post_json
from bridge.receivers.slack_blocks import DEFAULT_EMOJI, EMOJI, digest_progress, slack_message
from bridge.redact import Redactor, url_secrets
from bridge.render import Renderer, base_context, slack_escape

__all__ = ["DEFAULT_EMOJI", "EMOJI", "SlackReceiver", "build", "slack_message"]

USES_CONVERSATIONS = True  # build() takes the receiver's Conversations (bridge/receivers/__init__.py)

log = logging.getLogger("bridge.receivers.slack")

# slack-sdk logs the full request URL (the webhook secret) at debug level whenever its logger's
# own level is NOTSET or DEBUG. Give it a logger of its own, pinned above DEBUG.
_SDK_LOG = logging.getLogger("bridge.receivers.slack.sdk")
_SDK_LOG.setLevel(logging.WARNING)

_WEBHOOK_HEADERS = {"Content-Type": "application/json; charset=utf-8"}

# Web API error codes that a later attempt can cure; every other code needs a human.
_TRANSIENT_ERRORS = frozenset(
    {"ratelimited", "rate_limited", "service_unavailable", "fatal_error", "internal_error", "request_timeout"}
)
# Answers to a thread reply or a root edit that mean the root is gone: post a new message instead.
_ROOT_GONE = frozenset(
    {"message_not_found", "thread_not_found", "channel_not_found", "cant_update_message", "edit_window_closed"}
)


class _RootGone(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class SlackReceiver:
    bounds_send_time = True  # send() runs under asyncio.timeout(cfg.timeout)

    def __init__(
        self,
        name: str,
        cfg: SlackReceiverConfig,
        *,
        renderer: Renderer,
        session: aiohttp.ClientSession,
        conversations: Conversations | None = None,
    ) -> None:
        self.name = name
        self._cfg = cfg
        self._renderer = renderer
        self._conversations = conversations if cfg.threads else None
        timeout = max(1, math.ceil(cfg.timeout))  # the sdk wants whole seconds; asyncio.timeout is exact
        self._webhook_url: str | None = None
        self._web: AsyncWebClient | None = None
        if cfg.channel_is_template and cfg.channel is not None:
            renderer.compile("text", cfg.channel)  # checked by Renderer.from_config; compiled once
        self._session = session
        if cfg.webhook_url is not None:
            # An incoming webhook is one JSON POST: sent as the other HTTP receivers send theirs
            # (bridge/receivers/http.py), not through slack-sdk's client, whose per-request work
            # (body rebuilt, retry state, response objects, a timer of its own) cost more than the
            # POST itself (bench/README.md, "CPU per delivered alert").
            self._webhook_url = cfg.webhook_url.get_secret_value()
            self._redact = Redactor(url_secrets(self._webhook_url))
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
        return "webhook" if self._webhook_url is not None else "api"

    def __repr__(self) -> str:
        return f"SlackReceiver(name={self.name!r}, mode={self.mode!r})"

    async def send(self, alert: Alert) -> None:
        if self._webhook_url is not None:  # post_json holds the POST to cfg.timeout itself
            await self._post_webhook(self._webhook_url, slack_message(self._renderer, alert, self._cfg),
                                     alert.own_numbers)
            return
        what = "slack api"
        try:
            async with asyncio.timeout(self._cfg.timeout):
                await self._send_api(alert)
        except DeliveryError:
            raise
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise transport_failure(what, exc, self._cfg.timeout) from None
        except SlackClientError as exc:
            raise Permanent(f"{what}: {type(exc).__name__}") from None

    async def _post_webhook(self, url: str, message: Mapping[str, Any], finite: bool = False) -> None:
        answer = await post_json(self._session, url, message, what="slack webhook", timeout=self._cfg.timeout,
                                 headers=_WEBHOOK_HEADERS, finite=finite)
        if answer.ok:
            return
        # Slack answers a plain-text code (no_service, invalid_payload, rate_limited, ...).
        code = safe_code(answer.body.decode("utf-8", "replace"))
        raise redacted(http_failure("slack webhook", answer.status, code, answer.retry_after), self._redact)

    # --- bot-token mode: one conversation per incident ------------------------------------------

    async def _send_api(self, alert: Alert) -> None:
        message = slack_message(self._renderer, alert, self._cfg)
        conv, incident = self._conversations, alert.incident
        if conv is not None and alert.digest is not None and alert.kind == "digest":
            await self._send_digest(conv, alert, message)
            return
        # A flapping notice is the root of its own conversation, keyed by the node (as pagers key it):
        # the stable summary turns it green and replies under it, whichever incidents came and went.
        if conv is not None and alert.kind in ("flapping", "stable"):
            # One conversation per episode: the notice and its summary carry the same start.
            flap = alert.facts.get("flap")
            since = flap.get("since") if isinstance(flap, dict) else None
            key = f"{correlation_key(alert)}/{since}"
        elif conv is not None and incident is not None:
            key = incident.id
        else:  # a plain route's event (or no log): a message of its own
            await self._post(self._channel(alert), message)
            return
        ends = alert.kind in ("resolved", "stable")
        root = await conv.root(key)
        if root is None:
            await self._start(conv, key, alert, message)
            return
        if alert.kind in ("firing", "flapping"):  # a retry after the root went out and was recorded
            log.info("receiver %s: the %s of %s is already posted; not posted again", self.name, alert.kind, key)
            return
        try:
            # A root several incidents share (a digest: its ref carries "digest") is edited by
            # whoever owns the digest, never with one member's resolution.
            if ends and "digest" not in root:
                await self._update(root, message)
            elif ends:
                await self._digest_recovered(conv, root, key)
            broadcast = ends and self._cfg.broadcast_resolved
            await self._post(root["channel"], message, thread_ts=root["ts"], reply_broadcast=broadcast)
        except _RootGone as gone:
            log.warning("receiver %s: the thread of %s is gone (%s); posting a new message", self.name,
                        key, gone.code)
            await self._start(conv, key, alert, message)
            return
        await _shielded(conv.set_root(key, root))  # kept for a while after its last message

    async def _start(self, conv: Conversations, key: str, alert: Alert, message: Mapping[str, Any]) -> None:
        """Post ``message`` as a new root and record it for the incident's later messages."""
        data = await self._post(self._channel(alert), message)
        channel, ts = data.get("channel"), data.get("ts")
        if isinstance(channel, str) and isinstance(ts, str):
            await _shielded(conv.set_root(key, {"channel": channel, "ts": ts}))
            if alert.digest is not None:  # a group of one: its group's follow-ups thread under it
                await _shielded(conv.set_root(alert.digest.id, {"channel": channel, "ts": ts,
                                                                "digest": alert.digest.id}))
        else:
            log.warning("receiver %s: chat.postMessage answered no channel/ts; %s will not thread", self.name, key)

    async def _send_digest(self, conv: Conversations, alert: Alert, message: Mapping[str, Any]) -> None:
        """A fleet digest is the thread root of every incident it lists: each member's later
        messages (its resolution among them) are replies under it; a follow-up digest of the same
        group is a reply too. The shared ref carries "digest", so no member's resolution edits it."""
        digest = alert.digest
        assert digest is not None
        root = await conv.root(digest.id)
        if root is not None and not digest.update:
            ref: dict[str, str] | None = _root_ref(root)  # a retry after the digest went out and was recorded
        elif root is not None:
            try:
                await self._post(root["channel"], message, thread_ts=root["ts"], reply_broadcast=False)
                ref = _root_ref(root)
            except _RootGone as gone:
                log.warning("receiver %s: the digest thread %s is gone (%s); posting a new message",
                            self.name, digest.id, gone.code)
                ref = await self._post_root(alert, message, digest.id)
        else:
            ref = await self._post_root(alert, message, digest.id)
        if ref is None:
            return
        group = await self._group_record(conv, digest, ref)
        await _shielded(conv.set_root(digest.id, group))
        for member in digest.members:
            if member.incident is not None:
                await _shielded(conv.set_root(member.incident.id, ref))

    async def _group_record(self, conv: Conversations, digest: Digest, ref: Mapping[str, str]) -> dict[str, str]:
        """The group's own record: its root, the first digest's wording and its members' incident
        ids (follow-ups add theirs), so each resolution can edit the root to "3 of 5 recovered"."""
        group = dict(await conv.root(digest.id) or {})
        members = [m for m in group.get("members", "").split(",") if m]
        ids = [m.incident.id for m in digest.members if m.incident is not None]
        if group.get("ts") != ref["ts"] or "title" not in group:  # a new root: start the record over
            w = wording(digest, slack_escape)
            group = {"title": w.title, "listing": w.listing, "resolved": ""}
            members = []
        elif digest.update:
            w = wording(digest, slack_escape)
            if w.listing not in group["listing"]:
                group["listing"] = f"{group['listing']}, {w.listing}"[:3000]
        group.update(ref)
        group["members"] = ",".join(dict.fromkeys([*members, *ids]))
        return group

    async def _digest_recovered(self, conv: Conversations, root: Mapping[str, str], incident_id: str) -> None:
        """A member of a digest resolved: edit the shared root to count the recovered members.
        Replayed by a retry, it counts the same member once (the record is a set of ids)."""
        group = await conv.root(root["digest"])
        if group is None or not group.get("members") or group.get("ts") != root["ts"]:
            return
        members = group["members"].split(",")
        resolved = [r for r in group.get("resolved", "").split(",") if r]
        if incident_id in members and incident_id not in resolved:
            resolved.append(incident_id)
        try:
            await self._update(group, digest_progress(group.get("title", ""), group.get("listing", ""),
                                                      len(resolved), len(members)))
        except _RootGone as gone:
            log.warning("receiver %s: the digest root of %s is gone (%s); not edited", self.name,
                        root["digest"], gone.code)
            return
        await _shielded(conv.set_root(root["digest"], {**group, "resolved": ",".join(resolved)}))

    async def _post_root(self, alert: Alert, message: Mapping[str, Any], group: str) -> dict[str, str] | None:
        data = await self._post(self._channel(alert), message)
        channel, ts = data.get("channel"), data.get("ts")
        if isinstance(channel, str) and isinstance(ts, str):
            return {"channel": channel, "ts": ts, "digest": group}
        log.warning("receiver %s: chat.postMessage answered no channel/ts; digest %s will not thread", self.name, group)
        return None

    def _channel(self, alert: Alert) -> str:
        """The configured channel, or its template rendered for ``alert`` (Permanent when unusable)."""
        channel = self._cfg.channel or ""  # the config model requires a channel with a token
        if not self._cfg.channel_is_template:
            return channel
        try:
            rendered = self._renderer.compile("text", channel).render(base_context(alert)).strip()
        except Exception as exc:  # a label this node lacks: nothing to post to, and no default
            raise Permanent(f"receivers.{self.name}.channel: template failed for this alert "
                            f"({type(exc).__name__}: {exc})") from None
        problem = self._cfg.rendered_problem("channel", rendered)
        if problem:
            raise Permanent(f"receivers.{self.name}.channel: the rendered value {problem}")
        return rendered

    async def _post(self, channel: str, message: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
        assert self._web is not None
        threaded = "thread_ts" in extra
        if not extra.get("reply_broadcast", True):
            del extra["reply_broadcast"]
        try:
            resp = await self._web.chat_postMessage(channel=channel, unfurl_links=False, **message, **extra)
        except SlackApiError as exc:
            raise self._api_failure("chat.postMessage", exc, root_gone=threaded) from None
        return dict(resp.data) if isinstance(resp.data, dict) else {}

    async def _update(self, root: Mapping[str, str], message: Mapping[str, Any]) -> None:
        assert self._web is not None
        try:
            # Blocks and attachments are sent whole: chat.update keeps the old ones when omitted.
            await self._web.chat_update(channel=root["channel"], ts=root["ts"], **message)
        except SlackApiError as exc:
            raise self._api_failure("chat.update", exc, root_gone=True) from None

    def _api_failure(self, method: str, exc: SlackApiError, *, root_gone: bool) -> Exception:
        resp = exc.response
        # A SlackResponse has status_code; on an unreadable body slack-sdk passes aiohttp's response.
        status = int(getattr(resp, "status_code", None) or getattr(resp, "status", 0) or 0)
        data = getattr(resp, "data", None)
        code = safe_code(data.get("error")) if isinstance(data, dict) else ""
        if root_gone and code in _ROOT_GONE:
            return _RootGone(code)
        retry_after = parse_retry_after(_header(getattr(resp, "headers", None)))
        reason = f"slack {method} answered {status}" + (f" {code}" if code else "")
        if status in (408, 429) or status >= 500 or code in _TRANSIENT_ERRORS:
            return redacted(RetryLater(reason, retry_after), self._redact)
        return redacted(Permanent(reason), self._redact)

    async def close(self) -> None:
        """Nothing to release: the HTTP session belongs to the caller."""


def _root_ref(record: Mapping[str, str]) -> dict[str, str]:
    """What a digest's members record: where the shared root is, not the group's counts."""
    return {k: record[k] for k in ("channel", "ts", "digest") if k in record}


async def _shielded(write: Awaitable[bool]) -> None:
    """A record that must not be cut off by the send's timeout once the message is out."""
    await asyncio.shield(write)


def build(
    name: str,
    cfg: SlackReceiverConfig,
    *,
    renderer: Renderer,
    session: aiohttp.ClientSession,
    conversations: Conversations | None = None,
) -> SlackReceiver:
    return SlackReceiver(name, cfg, renderer=renderer, session=session, conversations=conversations)


def _header(headers: Any) -> str | None:
    if headers is None:
        return None
    value = headers.get("Retry-After") or headers.get("retry-after")
    return str(value) if value is not None else None
