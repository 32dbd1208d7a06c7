"""Outgoing webhooks: POST JSON, signed per the Standard Webhooks spec when a secret is set.

https://www.standardwebhooks.com/ — ``webhook-id`` is the delivery id, the same on every retry,
so the receiving side can drop duplicates.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import time
from typing import Any

import aiohttp
from multidict import CIMultiDict

from bridge.config import WebhookReceiverConfig, signing_key
from bridge.digest_text import digest_of, wording
from bridge.jsontext import STRICT_JSON, compact_json, json_bytes
from bridge.model import Alert
from bridge.receivers.base import (
    USER_AGENT,
    http_failure,
    redacted,
    transport_failure,
)
from bridge.redact import Redactor, url_secrets
from bridge.render import Renderer

log = logging.getLogger("bridge.receivers.webhook")
# asyncio.timeout(cfg.timeout) bounds the whole exchange; aiohttp's own timers (the session's
# default 5-minute total) would only add a timer per request.
_NO_CLIENT_TIMEOUT = aiohttp.ClientTimeout()


__all__ = ["WebhookReceiver", "build", "sign", "signing_key", "webhook_body"]


def build(
    name: str, cfg: WebhookReceiverConfig, *, renderer: Renderer, session: aiohttp.ClientSession
) -> WebhookReceiver:
    return WebhookReceiver(name, cfg, renderer=renderer, session=session)


def webhook_body(renderer: Renderer, alert: Alert, cfg: WebhookReceiverConfig) -> bytes:
    """``body_template`` rendered, else the normalised event plus context as compact JSON.

    A JSON body template JSON-escapes every value it writes; a result that still is not JSON
    (a value written with | safe) is never sent: the default body goes instead. A fleet digest
    has its own body (``digest_body``), whatever the template."""
    if alert.kind == "digest":
        return digest_body(alert)
    ctx = renderer.context(alert, cfg)
    kind = cfg.template_fields()["body_template"]
    body = renderer.override(kind, cfg.body_template, ctx, "body_template")
    if body is not None and kind == "json":
        try:
            STRICT_JSON.decode(body)  # NaN or Infinity (written with | safe) is not JSON either
        except ValueError as exc:
            log.warning("template body_template for receiver %s made invalid JSON (%s); using the default body",
                        alert.receiver, exc)
            body = None
    if body is not None:
        return body.encode("utf-8", "backslashreplace")  # a lone surrogate must not fail the delivery
    payload: dict[str, Any] = {
        "event": ctx["event"],
        "route": alert.route,
        "receiver": alert.receiver,
        "deliveryId": alert.delivery_id,
        "previousStatus": alert.previous_status,
        "previousDuration": alert.previous_duration,
        "previousDurationHuman": ctx["previous_duration_human"],
        "title": ctx["title"],
        "text": ctx["text"],
        "links": ctx["links"],
        # what the notification is (firing, resolved, reminder, ...) and the incident it belongs
        # to: machine consumers correlate on incident.id
        "kind": alert.kind,
        "incident": ctx["incident"],
        "facts": ctx["facts"],  # what the kind adds: flap count and span, escalation step, hold
    }
    if alert.digest is not None:  # a firing that is a group of one (fleet digests): later members refer to it
        payload["group"] = {"id": alert.digest.id, "update": alert.digest.update, "labels": dict(alert.digest.labels)}
    return json_bytes(payload, finite=alert.own_numbers)


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,`` + base64(HMAC-SHA256(key, "id.timestamp.body"))."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


class WebhookReceiver:
    bounds_send_time = True  # send() runs under asyncio.timeout(cfg.timeout)

    def __init__(
        self,
        name: str,
        cfg: WebhookReceiverConfig,
        *,
        renderer: Renderer,
        session: aiohttp.ClientSession,
    ) -> None:
        self.name = name
        self._cfg = cfg
        self._renderer = renderer
        self._session = session
        assert cfg.url is not None  # the config model guarantees it
        self._url = cfg.url.get_secret_value()
        self._headers = {k: v.get_secret_value() for k, v in cfg.headers.items()}
        secret = cfg.signing_secret.get_secret_value() if cfg.signing_secret else None
        self._redact = Redactor([*url_secrets(self._url), secret, *self._headers.values()])
        self._key: bytes | None = None
        if secret is not None:
            self._key = signing_key(secret)  # the config model has refused an undecodable one

    def __repr__(self) -> str:
        return f"WebhookReceiver(name={self.name!r}, signed={self._key is not None})"

    def headers(self, alert: Alert, body: bytes, now: float | None = None) -> CIMultiDict[str]:
        # Case-insensitive: a configured "content-type" replaces ours instead of doubling it.
        headers = CIMultiDict({"Content-Type": "application/json", "User-Agent": USER_AGENT})
        headers.update(self._headers)
        msg_id = alert.delivery_id
        headers["webhook-id"] = msg_id  # sent even unsigned: it is the idempotency key
        if self._key is not None:
            timestamp = int(time.time() if now is None else now)
            headers["webhook-timestamp"] = str(timestamp)
            headers["webhook-signature"] = sign(self._key, msg_id, timestamp, body)
        return headers

    async def send(self, alert: Alert) -> None:
        body = webhook_body(self._renderer, alert, self._cfg)
        headers = self.headers(alert, body)
        try:
            async with (
                asyncio.timeout(self._cfg.timeout),
                self._session.post(
                    self._url, data=body, headers=headers, allow_redirects=False, raise_for_status=False,
                    timeout=_NO_CLIENT_TIMEOUT,
                ) as resp,
            ):
                status, reason = resp.status, resp.reason or ""
                retry_after = resp.headers.get("Retry-After")
                await resp.read()  # read the answer so the connection can be reused
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise transport_failure("webhook", exc, self._cfg.timeout) from None
        if 200 <= status < 300:
            return
        raise redacted(http_failure("webhook", status, _phrase(reason), retry_after), self._redact)

    async def close(self) -> None:
        """Nothing to release: the HTTP session belongs to the caller."""


def _phrase(reason: str) -> str:
    # Only a plain reason phrase ("Service Unavailable"); never echo anything else the peer sent.
    text = reason.strip()[:64]
    return text if all(c.isalnum() or c in " -_." for c in text) else ""


def digest_body(alert: Alert) -> bytes:
    """One document for a fleet digest: the group and every member with its incident, so a
    consumer can correlate each member as it would the member's own firing (``incident.id``)."""
    digest = digest_of(alert)
    w = wording(digest)
    payload: dict[str, Any] = {
        "kind": "digest",
        "group": {"id": digest.id, "update": digest.update, "labels": dict(digest.labels)},
        "route": alert.route,
        "receiver": alert.receiver,
        "deliveryId": alert.delivery_id,
        "title": w.title,
        "text": w.headline,
        "count": len(digest.members),
        "members": [
            {"deliveryId": m.delivery_id, "nodeId": m.node_id, "status": m.status, "eventId": m.event_id,
             "incident": m.incident.to_dict() if m.incident is not None else None}
            for m in digest.members
        ],
    }
    return compact_json(payload).encode("utf-8", "backslashreplace")
