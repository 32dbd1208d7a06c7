"""The receiver interface and the few helpers every receiver shares.

A receiver tries once: it returns on success or raises RetryLater / Permanent. Retrying is
decided in one place (the delivery module), so no receiver loops, sleeps or retries itself.

Reasons end up in logs, metrics and the store, so they must be safe to show: they never
include URLs, tokens, header values or passwords, and never the text of a library exception
(those often embed the request URL). ``bridge.redact.Redactor`` scrubs known secret values as a
second line of defence.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import re
import socket
import ssl
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from bridge.errors import DeliveryError, Permanent, RetryLater
from bridge.model import Alert
from bridge.redact import Redactor

USER_AGENT = "alert-bridge/0.1"


@runtime_checkable
class Receiver(Protocol):
    """A receiver whose class sets ``bounds_send_time = True`` holds every ``send`` to its
    ``timeout`` itself; the dispatcher then adds no timer of its own (one per send saved)."""

    name: str

    async def send(self, alert: Alert) -> None:
        """Deliver once. Raises RetryLater(reason, retry_after) or Permanent(reason)."""
        ...

    async def close(self) -> None:
        """Release what the receiver owns (not the shared HTTP session)."""
        ...


def redacted(exc: DeliveryError, redact: Redactor) -> DeliveryError:
    """The same failure with every known secret scrubbed from its reason."""
    reason = redact(exc.reason)
    if isinstance(exc, RetryLater):
        return RetryLater(reason, exc.retry_after)
    return Permanent(reason)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date. None if absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):  # delta-seconds (never "inf" or "nan")
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def http_failure(what: str, status: int, detail: str, retry_after: str | None) -> DeliveryError:
    """408, 425, 429 and 5xx are worth another try; any other non-2xx answer will not change."""
    reason = f"{what} answered {status}" + (f" {detail}" if detail else "")
    if status in (408, 425, 429) or status >= 500:
        return RetryLater(reason, parse_retry_after(retry_after))
    if 300 <= status < 400:
        return Permanent(reason + " (redirects are not followed; configure the final URL)")
    return Permanent(reason)


_TOKEN = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def safe_code(text: str | None) -> str:
    """A peer's short error code (e.g. Slack's ``no_service``) when it looks like one, else ''.

    Arbitrary bodies are dropped: an echoing proxy could reflect a header value back at us.
    """
    if not text:
        return ""
    text = text.strip()
    return text if _TOKEN.match(text) else ""


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and what it wraps (aiohttp and aiosmtplib keep the real OSError inside)."""
    seen: list[BaseException] = []
    cur: object = exc
    while isinstance(cur, BaseException) and cur not in seen:
        seen.append(cur)
        cur = cur.__cause__ or getattr(cur, "certificate_error", None) or getattr(cur, "os_error", None)
    return seen


def describe_exception(exc: BaseException) -> str:
    """What went wrong, without the exception's text (which may contain the URL)."""
    chain = _chain(exc)
    host = next((h for c in chain if isinstance(h := getattr(c, "host", None), str)), None)
    peer = f" for {host}" if host else ""
    # Innermost first: aiohttp's connector errors subclass the ssl errors without their attributes.
    for cause in reversed(chain):
        if isinstance(cause, socket.gaierror):
            return f"DNS lookup failed ({cause.strerror})"
        if isinstance(cause, ssl.SSLCertVerificationError):
            detail = getattr(cause, "verify_message", None) or getattr(cause, "reason", None)
            return f"TLS certificate not trusted{peer}" + (f" ({detail})" if detail else "")
        if isinstance(cause, ssl.SSLError):
            return f"TLS error{peer} ({getattr(cause, 'reason', None) or type(cause).__name__})"
    for cause in chain:
        if isinstance(cause, TimeoutError | asyncio.TimeoutError):
            return "timed out"
        if isinstance(cause, OSError) and cause.errno:
            return f"{type(exc).__name__}: {os.strerror(cause.errno)}"
    return type(exc).__name__


def transport_failure(what: str, exc: BaseException, timeout: float) -> RetryLater:
    """Connection refused, reset, DNS, TLS or timeout: the peer may be back later.

    A certificate that fails verification is usually configuration (a private CA, an expired or
    misnamed certificate), but it is also what a peer shows mid-renewal: it is retried like any
    transport failure, within the receiver's retry policy, and then kept as dead (retryable with
    ``deliveries retry`` once fixed) rather than dropped at the first attempt."""
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return RetryLater(f"{what}: no answer within {timeout:g}s")
    return RetryLater(f"{what}: {describe_exception(exc)}")
