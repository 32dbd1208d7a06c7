"""The webhook listener: HTTP/1.1 over ``httptools`` (llhttp, the parser uvicorn and Node use).

Why not aiohttp, as on the admin listener: its server costs about three times the CPU of the RSA
check per request before the handler runs, and that listener serves every event (bench/README.md,
"The webhook listener on httptools"). This one does what the webhook port needs and nothing else:
``POST {path}`` and ``POST {path}/{node_id}`` to ``Ingest``, ``GET /healthz`` and ``/readyz``, JSON
everywhere, keep-alive and pipelining in order, and the limits the port has always had:

- a request line and headers within ``MAX_HEAD_BYTES`` / ``MAX_HEADERS`` and ``idle_timeout`` of
  the connection opening or of the last answer (slowloris), else closed without an answer (or 431);
- a body within ``max_body_bytes`` (413 before it is read) and ``body_timeout`` (408); a body
  without Content-Length 411 unless ``accept_chunked``; bodies are never decompressed;
- after a refusal before the body was read, what the client still sends is dropped unparsed for
  ``LINGER`` seconds (so it can read the answer), then the connection is closed;
- nothing leads to a 500: an unexpected error answers 503 with Retry-After so nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from email.utils import formatdate
from urllib.parse import unquote

import httptools

from bridge.errors import BodyTooLarge, LengthRequired, RequestError, Unavailable
from bridge.ingest import Ingest, Reply, error_reply

log = logging.getLogger("bridge.server")

ReadyCheck = Callable[[], Awaitable[str | None]]  # None when ready, else the reason

LINGER = 2.0  # seconds a refused request's unread body is dropped before the connection is closed
MAX_HEAD_BYTES = 16384  # request line and headers together (aiohttp: 8190 per line)
MAX_URL_BYTES = 8190
MAX_HEADERS = 100
PIPELINE = 16  # requests parsed ahead of the one being answered before reading pauses
_SWEEP = 0.25  # seconds between looks at the connections' deadlines

_REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 411: "Length Required",
            413: "Payload Too Large", 414: "URI Too Long", 422: "Unprocessable Content",
            431: "Request Header Fields Too Large", 503: "Service Unavailable"}
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


def render(reply: Reply, *, close: bool, head_only: bool = False) -> bytes:
    body = _encode(reply.body).encode()
    lines = [b"HTTP/1.1 %d %s\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: %d\r\n"
             b"Date: %s\r\nServer: alert-bridge\r\n" % (reply.status, _REASONS.get(reply.status, "Unknown").encode(),
                                                        len(body), _Clock.date())]
    for name, value in reply.headers.items():
        lines.append(f"{name}: {value}\r\n".encode("latin-1"))
    if close:
        lines.append(b"Connection: close\r\n")
    lines.append(b"\r\n")
    if not head_only:
        lines.append(body)
    return b"".join(lines)


def _refusal(status: int, code: str, detail: str, headers: Mapping[str, str] | None = None) -> Reply:
    return Reply(status, {"error": code, "detail": detail}, headers or {})


class _Request:
    __slots__ = (
        "body",
        "chunked",
        "expect",
        "headers",
        "keep_alive",
        "length",
        "method",
        "route",
        "signature",
        "size",
        "url",
    )

    def __init__(self) -> None:
        self.method = b""
        self.url = b""
        self.signature: bytes | None = None
        self.length: int | None = None
        self.chunked = False
        self.expect = False
        self.body: list[bytes] = []
        self.size = 0
        self.keep_alive = True
        self.headers = 0
        self.route: tuple[str, str | None] | Reply | None = None


class HookServer:
    """The webhook listener's routes and limits; one ``_Connection`` per client."""

    def __init__(self, ingest: Callable[[], Ingest], *, path: str, max_body_bytes: int, body_timeout: float,
                 idle_timeout: float, ready: ReadyCheck, accept_chunked: bool = False) -> None:
        self.ingest = ingest
        self.path = path.encode()
        self.node_prefix = path.rstrip("/").encode() + b"/"
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self.idle_timeout = idle_timeout
        self.ready = ready
        self.accept_chunked = accept_chunked
        self.connections: set[_Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()  # requests being answered, their clients gone or not
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port, ssl=ssl_context,
                                                backlog=1024, reuse_address=True)
        self._sweeper = loop.create_task(self._sweep(), name="webhook-deadlines")
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self, grace: float) -> None:
        """Stop listening, let requests in flight be answered (for at most ``grace``), close the rest."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.closing = True
            if conn.task is None:
                conn.close()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=grace)
        for task in list(self.tasks):
            task.cancel()
        for conn in list(self.connections):
            conn.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(_SWEEP)
            now = loop.time()
            for conn in [c for c in self.connections if c.deadline < now]:
                conn.expired()

    # --- routing ----------------------------------------------------------------------------------------

    def route(self, method: bytes, url: bytes) -> tuple[str, str | None] | Reply:
        """("event", node or None), ("healthz"|"readyz", None), or the refusal."""
        path = url.partition(b"?")[0]
        health = path in (b"/healthz", b"/readyz")
        if health and method in (b"GET", b"HEAD"):  # first: with ``path: /`` they are node paths too
            return path[1:].decode(), None
        if path == self.path or path.startswith(self.node_prefix):
            node: str | None = None
            if path != self.path:
                raw = path[len(self.node_prefix):]
                if not raw or b"/" in raw:
                    return _refusal(404, "not_found", "Not Found")
                try:
                    node = unquote(raw.decode("ascii"), errors="strict")
                except (UnicodeDecodeError, ValueError):
                    return _refusal(400, "bad_request", "the path is not percent-encoded UTF-8")
                if not node or "/" in node:
                    return _refusal(404, "not_found", "Not Found")
            if method != b"POST":
                return _refusal(405, "method_not_allowed", "Method Not Allowed", {"Allow": "POST"})
            return "event", node
        if health:
            return _refusal(405, "method_not_allowed", "Method Not Allowed", {"Allow": "GET,HEAD"})
        return _refusal(404, "not_found", "Not Found")

    async def answer(self, req: _Request, route: tuple[str, str | None]) -> Reply:
        what, node = route
        try:
            if what == "event":
                signature = None if req.signature is None else req.signature.decode("utf-8", "surrogateescape")
                return await self.ingest().handle(b"".join(req.body), signature, node)
            if what == "healthz":
                return Reply(200, {"status": "ok"})
            # The reason (a key-fetch error, a storage address) is for operators: it stays on the admin port.
            if await self.ready() is None:
                return Reply(200, {"status": "ready"})
            return Reply(503, {"status": "not_ready", "detail": "see /readyz on the admin listener"},
                         {"Retry-After": "5"})
        except asyncio.CancelledError:
            raise
        except Unavailable as exc:
            return _refusal(503, "unavailable", exc.detail, {"Retry-After": str(max(1, round(exc.retry_after)))})
        except Exception:
            log.exception("unexpected error handling %s %s", req.method.decode("latin-1"),
                          req.url[:200].decode("latin-1"))
            return _refusal(503, "internal", "unexpected error; retry later", {"Retry-After": "5"})

    def refuse(self, exc: RequestError) -> Reply:
        self.ingest().refuse(exc)
        return error_reply(exc)


class _Connection(asyncio.Protocol):
    """One client: parses requests as they arrive, answers them one at a time, in order."""

    def __init__(self, server: HookServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.req = _Request()
        self.head_bytes = 0
        self.in_head = True
        self.queue: deque[_Request] = deque()
        self.task: asyncio.Task[None] | None = None
        self.deadline = self.loop.time() + server.idle_timeout
        self.discarding = False  # a refusal was sent: what arrives is dropped until the linger ends
        self.closing = False
        self.paused = False

    # --- asyncio.Protocol --------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.transport = None  # a request being answered is still recorded: the sender may retry it

    def data_received(self, data: bytes) -> None:
        if self.discarding or self.transport is None:
            return
        if self.in_head:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # The request itself was complete: it is answered as HTTP/1.1 (the upgrade declined, as
            # HTTP allows), then the connection closes; what follows it is another protocol, dropped.
            self.discarding = self.closing = True
            self.deadline = self.loop.time() + LINGER
            if self.task is None and not self.queue:
                self.close()
        except httptools.HttpParserError as exc:
            if not self.discarding:
                detail = str(exc.args[0] if exc.args else exc)[:200] or "malformed request"
                self.refuse_early(_refusal(400, "bad_request", f"malformed HTTP request: {detail}"))
        if self.in_head and not self.discarding and self.head_bytes > MAX_HEAD_BYTES:
            self.refuse_early(_refusal(431, "headers_too_large",
                                       f"the request line and headers exceed {MAX_HEAD_BYTES} bytes"))

    def eof_received(self) -> bool | None:
        if self.task is None and not self.queue:
            return None  # nothing owed: close
        self.closing = True  # half-closed after its requests: answer them, then close
        return True

    # --- llhttp callbacks --------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.req = _Request()
        self.in_head = True

    def on_url(self, url: bytes) -> None:
        req = self.req
        req.url += url
        if len(req.url) > MAX_URL_BYTES:
            self.refuse_early(_refusal(414, "uri_too_long", f"the request target exceeds {MAX_URL_BYTES} bytes"))
            raise httptools.HttpParserError("refused")

    def on_header(self, name: bytes, value: bytes) -> None:
        req = self.req
        req.headers += 1
        if req.headers > MAX_HEADERS:
            self.refuse_early(_refusal(431, "headers_too_large", f"more than {MAX_HEADERS} header fields"))
            raise httptools.HttpParserError("refused")
        lower = name.lower()
        if lower == b"x-thunderstack-signature":
            if req.signature is None:
                req.signature = value
        elif lower == b"content-length":
            req.length = int(value)  # llhttp has checked the digits and refused a second, different one
        elif lower == b"transfer-encoding":
            req.chunked = True
        elif lower == b"expect":
            req.expect = value.lower() == b"100-continue"

    def on_headers_complete(self) -> None:
        req, server = self.req, self.server
        self.in_head = False
        self.head_bytes = 0
        req.method = self.parser.get_method()
        req.keep_alive = self.parser.should_keep_alive()
        self.deadline = self.loop.time() + server.body_timeout
        route = req.route = server.route(req.method, req.url)
        if isinstance(route, Reply):
            if req.length or req.chunked:
                self.refuse_early(route)
                raise httptools.HttpParserError("refused")
            return
        if route[0] == "event":
            exc: RequestError | None = None
            if req.length is not None and req.length > server.max_body_bytes:
                exc = BodyTooLarge(f"body of {req.length} bytes exceeds the limit of {server.max_body_bytes}")
            elif req.chunked and not server.accept_chunked:
                exc = LengthRequired("send the body with a Content-Length header (Transfer-Encoding: chunked "
                                     "is refused)")
            if exc is not None:
                self.refuse_early(server.refuse(exc))
                raise httptools.HttpParserError("refused")
            if req.expect and self.transport is not None:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, chunk: bytes) -> None:
        req = self.req
        req.size += len(chunk)
        if req.size > self.server.max_body_bytes:
            self.refuse_early(self.server.refuse(BodyTooLarge(
                f"body exceeds the limit of {self.server.max_body_bytes} bytes")))
            raise httptools.HttpParserError("refused")
        req.body.append(chunk)

    def on_message_complete(self) -> None:
        self.queue.append(self.req)
        self.in_head = True
        self.deadline = float("inf")
        if self.task is None:
            self.task = self.loop.create_task(self._answer_all())
            self.server.tasks.add(self.task)
        if len(self.queue) >= PIPELINE and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    # --- answering ---------------------------------------------------------------------------------------

    async def _answer_all(self) -> None:
        server = self.server
        try:
            while self.queue:
                req = self.queue.popleft()
                route = req.route
                assert route is not None
                reply = route if isinstance(route, Reply) else await server.answer(req, route)
                close = not req.keep_alive or (self.closing and not self.queue)
                if self.transport is None:
                    return
                self.transport.write(render(reply, close=close, head_only=req.method == b"HEAD"))
                if close:
                    self.close()
                    return
        finally:
            if self.task is not None:
                server.tasks.discard(self.task)
            self.task = None
        if self.transport is not None and not self.discarding:
            if self.in_head:  # else a body is arriving, on its own clock
                self.deadline = self.loop.time() + server.idle_timeout
            if self.paused:
                self.paused = False
                self.transport.resume_reading()

    def refuse_early(self, reply: Reply) -> None:
        """Answer before the body is read, then drop what arrives and close after LINGER."""
        if self.discarding or self.transport is None:
            return
        self.discarding = True
        self.deadline = self.loop.time() + LINGER
        if self.task is not None:  # answers owed to earlier pipelined requests go first
            last = _Request()
            last.route, last.keep_alive = reply, False
            self.queue.append(last)
            return
        self.transport.write(render(reply, close=True))

    def expired(self) -> None:
        if self.discarding or self.transport is None:
            self.close()
        elif self.in_head:
            if self.task is None:
                self.close()  # idle, or headers never finished: no answer owed
            else:
                self.deadline = float("inf")  # answering: the idle clock restarts after the answer
        else:
            self.refuse_early(_refusal(408, "body_timeout",
                                       f"body not received within {self.server.body_timeout:g}s"))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
