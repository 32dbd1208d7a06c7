"""Outgoing webhooks: POST JSON, signed per the Standard Webhooks spec when a secret is set.

https://www.standardwebhooks.com/ — ``webhook-id`` is the delivery id, the same on every retry,
so the receiving side can drop duplicates.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import time

import aiohttp
from multidict import CIMultiDict

from bridge.config import WebhookReceiverConfig
from bridge.errors import ConfigError
from bridge.model import Alert
from bridge.receivers.base import (
    USER_AGENT,
    Redactor,
    http_failure,
    redacted,
    transport_failure,
    url_secrets,
)
from bridge.render import Renderer

WHSEC_PREFIX = "whsec_"
# asyncio.timeout(cfg.timeout) bounds the whole exchange; aiohttp's own timers (the session's
# default 5-minute total) would only add a timer per request.
_NO_CLIENT_TIMEOUT = aiohttp.ClientTimeout()


def signing_key(secret: str) -> bytes:
    """``whsec_<base64>`` secrets carry the key base64-encoded (spec); any other is used as is."""
    if secret.startswith(WHSEC_PREFIX):
        return base64.b64decode(secret[len(WHSEC_PREFIX) :], validate=True)
    return secret.encode()


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
            try:
                self._key = signing_key(secret)
            except (binascii.Error, ValueError):
                raise ConfigError(
                    [f"receivers.{name}.signing_secret: a whsec_ secret must be base64 after the prefix"]
                ) from None

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
        body = self._renderer.webhook(alert, self._cfg)
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
