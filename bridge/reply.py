"""What the webhook listener answers: a status, a JSON body and headers, made from the outcome of a
request, and its HTTP/1.1 form (``render``). Its own module so that the HTTP layer (http1.py,
hookserver.py) and ingest share it without the HTTP layer depending on ingest."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import field
from email.utils import formatdate
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


def refusal(status: int, code: str, detail: str, headers: Mapping[str, str] | None = None) -> Reply:
    return Reply(status, {"error": code, "detail": detail}, headers or {})


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 408: "Request Timeout", 411: "Length Required", 413: "Payload Too Large",
            414: "URI Too Long", 417: "Expectation Failed", 422: "Unprocessable Content",
            431: "Request Header Fields Too Large", 503: "Service Unavailable",
            505: "HTTP Version Not Supported"}
_encode = json.JSONEncoder(separators=(",", ":")).encode


class _Clock:
    """The Date header, formatted once a second."""

    second = -1
    text = b""

    @classmethod
    def date(cls) -> bytes:
        now = int(time.time())
        if now != cls.second:
            cls.second, cls.text = now, formatdate(now, usegmt=True).encode()
        return cls.text


def render(reply: Reply, *, close: bool, head_only: bool = False, http10: bool = False) -> bytes:
    body = _encode(reply.body).encode()
    lines = [b"HTTP/1.1 %d %s\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: %d\r\n"
             b"Date: %s\r\nServer: alert-bridge\r\n" % (reply.status, _REASONS.get(reply.status, "Unknown").encode(),
                                                        len(body), _Clock.date())]
    for name, value in reply.headers.items():
        lines.append(f"{name}: {value}\r\n".encode("latin-1"))
    if close:
        lines.append(b"Connection: close\r\n")
    elif http10:  # an HTTP/1.0 client keeps the connection only when told so
        lines.append(b"Connection: keep-alive\r\n")
    lines.append(b"\r\n")
    if not head_only:
        lines.append(body)
    return b"".join(lines)
