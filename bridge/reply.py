"""What the webhook listener answers: a status, a JSON body and headers, made from the outcome of a
request. Its own module so that the HTTP layer (http1.py, hookserver.py) and ingest share it without
the HTTP layer depending on ingest."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from typing import Any

from bridge.errors import RequestError, Unavailable
from bridge.frozen import frozen


@frozen
class Reply:
    status: int
    body: dict[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)


def error_reply(exc: RequestError) -> Reply:
    return Reply(exc.status, {"error": exc.code, "detail": exc.detail})


def unavailable_reply(exc: Unavailable) -> Reply:
    seconds = max(1, round(exc.retry_after))
    return Reply(503, {"error": "unavailable", "detail": exc.public or exc.detail}, {"Retry-After": str(seconds)})
