"""HTTP over a raw socket, for tests about framing: exactly the bytes written, answers read as sent."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass


@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes


async def read_answer(reader: asyncio.StreamReader, timeout: float, *, head_only: bool = False) -> RawAnswer | None:
    """The next HTTP response, or None when the server closed the connection without one."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    body = b""
    if "content-length" in headers and not head_only:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), timeout)
    return RawAnswer(status, headers, body)


async def closed_by_server(reader: asyncio.StreamReader, timeout: float) -> bool:
    """True once the server closes (EOF or reset) within ``timeout``."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            data = await asyncio.wait_for(reader.read(65536), deadline - time.monotonic())
            if not data:
                return True
    except ConnectionError:
        return True
    except TimeoutError:
        return False
    return False


def request(method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b"",
            version: str = "HTTP/1.1") -> bytes:
    """One request as bytes; Content-Length is added for a body unless the headers frame it."""
    fields = {"Host": "127.0.0.1", **(headers or {})}
    if body and "Content-Length" not in fields and "Transfer-Encoding" not in fields:
        fields["Content-Length"] = str(len(body))
    lines = [f"{method} {target} {version}", *(f"{k}: {v}" for k, v in fields.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
