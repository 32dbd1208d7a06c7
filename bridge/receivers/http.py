"""One JSON POST with the receiver's timeout, and the pieces every HTTP API receiver shares.

Used by the paging and chat receivers (pagerduty, opsgenie, msteams, discord, telegram): each is an
``HTTPReceiver`` that builds its own payload and reads its service's own error and rate-limit form
from the answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

import aiohttp

from bridge.config import ReceiverBase
from bridge.errors import DeliveryError, RetryLater
from bridge.frozen import frozen
from bridge.model import Alert
from bridge.receivers.base import USER_AGENT, http_failure, redacted, transport_failure
from bridge.redact import Redactor
from bridge.render import COLOURS, Renderer, colour, json_bytes

# asyncio.timeout bounds the whole exchange; aiohttp's own timers would only add one per request.
_NO_CLIENT_TIMEOUT = aiohttp.ClientTimeout()
_MAX_ANSWER = 64 * 1024  # an error answer is small; a hostile peer must not make us buffer more
_SAFE_TEXT = re.compile(r"[^A-Za-z0-9 _.,:;'()/@#=+-]")

C = TypeVar("C", bound=ReceiverBase)


@frozen
class HTTPAnswer:
    status: int
    retry_after: str | None  # the Retry-After header, as sent
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> dict[str, Any]:
        """The answer as a JSON object ({} when it is not one)."""
        try:
            data = json.loads(self.body)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}


async def post_json(
    session: aiohttp.ClientSession,
    url: str,
    payload: Mapping[str, Any],
    *,
    what: str,
    timeout: float,
    headers: Mapping[str, str] | None = None,
    finite: bool = False,
) -> HTTPAnswer:
    """POST ``payload`` once. Transport failures raise RetryLater naming ``what``, never the URL.
    ``finite``: every number in ``payload`` is finite (``Alert.own_numbers``; see ``json_bytes``)."""
    body = json_bytes(payload, finite=finite)
    send_headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **(headers or {})}
    try:
        async with (
            asyncio.timeout(timeout),
            session.post(url, data=body, headers=send_headers, allow_redirects=False, raise_for_status=False,
                         timeout=_NO_CLIENT_TIMEOUT) as resp,
        ):
            data = await resp.content.read(_MAX_ANSWER)
            return HTTPAnswer(resp.status, resp.headers.get("Retry-After"), data)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise transport_failure(what, exc, timeout) from None


def safe_text(value: Any, limit: int = 160) -> str:
    """A peer's error message cut to plain characters: it goes into logs and the store."""
    if not isinstance(value, str):
        return ""
    return " ".join(_SAFE_TEXT.sub("", value).split())[:limit]


def failure(
    what: str, answer: HTTPAnswer, redact: Redactor, *, detail: str = "", retry_after: float | None = None
) -> DeliveryError:
    """The shared status classification (408/425/429/5xx retry later, other non-2xx permanent), with a
    service's own retry-after (a JSON field) honoured on top of the header: the longer of the two."""
    exc = http_failure(what, answer.status, detail, answer.retry_after)
    if isinstance(exc, RetryLater) and retry_after is not None:
        exc = RetryLater(exc.reason, max(retry_after, exc.retry_after or 0.0))
    return redacted(exc, redact)


def seconds(value: Any) -> float | None:
    """A JSON retry-after value (number of seconds) when it is a sane one."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 0 <= value <= 86400 else None


def correlation_key(alert: Alert) -> str:
    """What ties a resolution or an ack to its firing notification at the service.

    The incident's id when the alert belongs to one (always so for incident routes); else a key
    derived from the node id, stable per node, bounded in length and safe in a URL path. A flapping
    notice and its stable summary always take the node's key: the summary closes what the notice
    opened, whichever incidents came and went in between (the incident's own alert is opened by its
    firing)."""
    if alert.incident is not None and alert.kind not in ("flapping", "stable"):
        return alert.incident.id
    return "node-" + hashlib.sha256(alert.event.node_id.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def cut(text: str, limit: int) -> str:
    """Services refuse over-long fields; shorten instead of losing the alert."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def alert_colour(alert: Alert) -> str:
    """'#rrggbb': green once resolved or stable, else by the node's status."""
    return COLOURS["RUNNING"] if alert.kind in ("resolved", "stable") else colour(alert.event.status)


class HTTPReceiver(Generic[C]):
    """What the JSON API receivers share: their config, the renderer, the caller's HTTP session,
    and a Redactor over the secrets ``_read_secrets`` reads from the config."""

    bounds_send_time = True  # post_json runs under asyncio.timeout(cfg.timeout)

    def __init__(self, name: str, cfg: C, *, renderer: Renderer, session: aiohttp.ClientSession) -> None:
        self.name = name
        self._cfg = cfg
        self._renderer = renderer
        self._session = session
        self._redact = Redactor(self._read_secrets())

    def _read_secrets(self) -> list[str]:
        """Read the secret settings from ``self._cfg`` into what ``send`` needs; the values to redact."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    async def close(self) -> None:
        """Nothing to release: the HTTP session belongs to the caller."""
