"""One HTTP/1.1 connection over ``httptools`` (llhttp): framing, limits, timeouts, order, backpressure.

What a request means is the ``Site``'s (hookserver.py); this module only gets requests in and
answers out, and keeps one client from costing more than its share:

- the request line and headers within ``MAX_HEAD_BYTES`` and ``MAX_HEADERS`` (431) and the target
  within ``MAX_URL_BYTES`` (414), and within ``idle_timeout`` of the connection opening or of its
  last answer (else closed without an answer: slowloris, idle keep-alive);
- a body within ``max_body_bytes`` (413 before it is read, or as soon as it passes the limit) and
  ``body_timeout`` (408); a chunked body, trailers included, within a bound of its own;
- answers in the order the requests came (pipelining), none written while the client is not
  reading them: reading stops until it does (and the idle clock closes it if it never does);
- after a refusal before the body was read, what the client still sends is dropped unparsed for
  ``LINGER`` seconds, so it can read the answer; then the connection is closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Protocol, cast

import httptools

from bridge.reply import Reply, refusal, render

log = logging.getLogger("bridge.server")

LINGER = 2.0  # seconds a refused request's unread body is dropped before the connection is closed
MAX_HEAD_BYTES = 16384  # request line and headers together (aiohttp: 8190 per line)
MAX_URL_BYTES = 8190
MAX_HEADERS = 100
PIPELINE = 16  # requests parsed ahead of the one being answered before reading pauses
SLICE = 16384  # bytes parsed at a time from one read: at most PIPELINE requests and one slice wait parsed
# A chunked body's framing (sizes, extensions, trailers) may take this many times the body limit:
# 1-byte chunks take 6 bytes each on the wire; a trailer has no other bound.
CHUNKED_OVERHEAD = 8
_INF = float("inf")

class Request:
    """What the site sees of one request: method, target, the signature header, the body."""

    __slots__ = ("body", "chunked", "expect", "has_host", "head_size", "header_count", "http10", "keep_alive", "length",
                 "method", "refused", "route", "signature", "size", "url")

    def __init__(self) -> None:
        self.method = b""
        self.url = b""
        self.signature: bytes | None = None
        self.length: int | None = None
        self.chunked = False
        self.expect: bytes | None = None
        self.has_host = False
        self.body: list[bytes] = []
        self.size = 0
        self.head_size = 0
        self.keep_alive = True
        self.http10 = False
        self.header_count = 0
        self.route: object = None  # the site's, from ``Site.route``; a Reply answers without the site
        self.refused = False  # answered before its body was read: the connection lingers, then closes


class Site(Protocol):
    """What a connection needs from the server it belongs to."""

    max_body_bytes: int
    accept_chunked: bool
    body_timeout: float
    idle_timeout: float
    connections: set[Connection]
    tasks: set[asyncio.Task[None]]

    def admit(self, conn: Connection) -> None:
        """A new connection: into ``connections``, or aborted when there is no room for it."""
        ...

    def route(self, req: Request) -> object:
        """What ``answer`` needs to answer ``req``, or the Reply that refuses it (headers only seen)."""
        ...

    def refuse_body(self, req: Request) -> Reply | None:
        """A refusal before the body is read (413, 411), counted and logged; None to read it."""
        ...

    def too_large(self) -> Reply:
        """The 413 for a body that passed the limit while it arrived."""
        ...

    async def answer(self, req: Request) -> Reply: ...


class Connection(asyncio.Protocol):
    """One client: parses requests as they arrive, answers them one at a time, in order."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.req = Request()
        self.head_bytes = 0  # bytes received while a head is incomplete
        self.body_bytes = 0  # bytes received while a chunked body is incomplete
        self.in_head = True
        self.queue: deque[Request] = deque()
        self.task: asyncio.Task[None] | None = None
        self.deadline = self.loop.time() + site.idle_timeout
        self.discarding = False  # a refusal is owed or sent: what arrives is dropped
        self.closing = False
        self.last = False  # stopping: the request whose body is arriving is the last one read
        self.paused = False  # reading paused: PIPELINE requests wait, or the client reads no answers
        self.writable: asyncio.Future[None] | None = None  # set while the transport's buffer is full
        self.held = b""  # read but not parsed yet: PIPELINE requests were waiting
        self.stalled_until = _INF

    # --- asyncio.Protocol --------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports are not asyncio.Transport subclasses.
        self.transport = cast(asyncio.Transport, transport)
        self.site.admit(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.site.connections.discard(self)
        self.transport = None  # a request being answered is still recorded: the sender may retry it
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)

    def pause_writing(self) -> None:
        # The client is not reading its answers: stop reading its requests until it does, and drop
        # it if it has not read for idle_timeout.
        self.writable = self.loop.create_future()
        self.stalled_until = self.loop.time() + self.site.idle_timeout
        self.pause()

    def resume_writing(self) -> None:
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)
        self.writable = None
        if self.task is None:  # else the answering task resumes reading when it is done
            self._resume()

    def data_received(self, data: bytes) -> None:
        if self.discarding or self.transport is None or (self.last and self.in_head):
            return
        if self.held:  # the rest of a read that came while paused
            self.held += data
            return
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        """Parse ``data`` a slice at a time, holding back what follows once PIPELINE requests wait:
        one read can carry thousands of requests, and parsing them all would queue them all."""
        while data:
            piece, data = data[:SLICE], data[SLICE:]
            if self.in_head:
                self.head_bytes += len(piece)
            elif self.req.chunked:
                self.body_bytes += len(piece)
            try:
                self.parser.feed_data(piece)
            except httptools.HttpParserError as exc:
                if self.discarding or (self.last and self.in_head):  # refused by a callback (_stop), an
                    return  # upgrade refused, or the last request read before a stop (on_message_complete)
                if isinstance(exc, httptools.HttpParserCallbackError):
                    # Our own code failed, not the client's request: a 4xx would make the sender drop
                    # a valid event, so it is a 503 to retry, as anywhere else.
                    log.error("unexpected error parsing a request", exc_info=exc.__context__ or exc)
                    self.refuse_early(refusal(503, "internal", "unexpected error; retry later", {"Retry-After": "5"}))
                elif self.req.url == b"*" and self.parser.get_method() == b"PRI":
                    # An HTTP/2 client with prior knowledge: its preface is not HTTP/1.1 at all.
                    self.refuse_early(refusal(505, "http_version_not_supported",
                                              "HTTP/2 is not spoken on this port: send HTTP/1.1"))
                else:
                    detail = str(exc.args[0] if exc.args else exc)[:200] or "malformed request"
                    self.refuse_early(refusal(400, "bad_request", f"malformed HTTP request: {detail}"))
                return
            if self.discarding:
                return
            if self.in_head and self.head_bytes > MAX_HEAD_BYTES:
                self.refuse_early(refusal(431, "headers_too_large",
                                          f"the request line and headers exceed {MAX_HEAD_BYTES} bytes"))
                return
            if not self.in_head and self.body_bytes > CHUNKED_OVERHEAD * self.site.max_body_bytes + MAX_HEAD_BYTES:
                self.refuse_early(self.site.too_large())
                return
            if data and len(self.queue) >= PIPELINE:
                self.held = data
                self.pause()
                return

    def _resume(self) -> None:
        """Read again once the answers owed are few and the client reads them: what was held first."""
        if self.discarding and self.transport is not None and self.writable is None:
            self.held, self.paused = b"", False
            self.transport.resume_reading()  # lingering: what arrives is read and dropped
            return
        if (not self.paused or self.writable is not None or self.transport is None or self.discarding
                or len(self.queue) >= PIPELINE):
            return
        self.paused = False
        if self.held:
            held, self.held = self.held, b""
            self._feed(held)
            if self.transport is None or (self.paused and not self.discarding):
                return
        self.transport.resume_reading()  # refused meanwhile: what follows is read and dropped

    def eof_received(self) -> bool | None:
        if not self.in_head:
            self.last = False  # a body cut short by the client: a stop need not wait for it
        if self.task is None and not self.queue:
            return None  # nothing owed: close
        self.closing = True  # half-closed after its requests: answer them, then close
        return True

    # --- llhttp callbacks --------------------------------------------------------------------------------

    def _stop(self, reply: Reply) -> None:
        self.refuse_early(reply)
        raise httptools.HttpParserError("refused")  # stops the parser; data_received drops the rest

    def on_message_begin(self) -> None:
        self.req = Request()
        self.in_head = True
        self.head_bytes = self.body_bytes = 0

    def on_url(self, url: bytes) -> None:
        req = self.req
        if not req.url:
            req.method = self.parser.get_method()  # for a refusal before the head is complete (HEAD: no body)
        req.url += url
        if len(req.url) > MAX_URL_BYTES:
            self._stop(refusal(414, "uri_too_long", f"the request target exceeds {MAX_URL_BYTES} bytes"))

    def on_header(self, name: bytes, value: bytes) -> None:
        req = self.req
        req.header_count += 1
        req.head_size += len(name) + len(value) + 4
        if req.header_count > MAX_HEADERS:
            self._stop(refusal(431, "headers_too_large", f"more than {MAX_HEADERS} header fields"))
        if req.head_size + len(req.url) > MAX_HEAD_BYTES:
            self._stop(refusal(431, "headers_too_large", f"the request line and headers exceed {MAX_HEAD_BYTES} "
                                                         "bytes"))
        if not self.in_head:
            return  # a trailer: counted and bounded, never read
        lower = name.lower()
        if lower == b"x-thunderstack-signature":
            if req.signature is None:
                req.signature = value
        elif lower == b"content-length":
            req.length = int(value)  # llhttp has checked the digits and refused a second, different one
        elif lower == b"transfer-encoding":
            req.chunked = True
        elif lower == b"expect":
            req.expect = value.lower()
        elif lower == b"host":
            req.has_host = True

    def on_headers_complete(self) -> None:
        req, site, parser = self.req, self.site, self.parser
        self.in_head = False
        req.method = parser.get_method()
        req.keep_alive = parser.should_keep_alive()
        if parser.should_upgrade():
            # llhttp hands what follows an upgrade to the new protocol, the body included.
            self._stop(refusal(400, "bad_request", "protocol upgrades are not supported: send HTTP/1.1 without "
                                                   "Upgrade"))
        version = parser.get_http_version()
        http11 = version == "1.1"
        req.http10 = version == "1.0"
        if not (http11 or req.http10):
            self._stop(refusal(505, "http_version_not_supported", f"HTTP/{version[:8]} is not spoken on this port: "
                                                                  "send HTTP/1.1"))
        if not req.has_host and http11:
            self._stop(refusal(400, "bad_request", "an HTTP/1.1 request needs a Host header"))
        if req.expect is not None and not http11:
            req.expect = None  # HTTP/1.0 knows no expectations: ignored (RFC 9110)
        if req.expect is not None and req.expect != b"100-continue":
            self._stop(refusal(417, "expectation_failed", "only Expect: 100-continue is supported"))
        self.deadline = self.loop.time() + site.body_timeout if self.task is None else _INF
        route = req.route = site.route(req)
        if isinstance(route, Reply):
            if req.length or req.chunked:
                self._stop(route)
            return
        refused = site.refuse_body(req)
        if refused is not None:
            self._stop(refused)
        if req.expect is not None and self.task is None and self.transport is not None:
            # Not while earlier answers are owed: they go first, and the client sends its body
            # anyway after a wait (RFC 9110 lets a server omit the 100).
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, chunk: bytes) -> None:
        req = self.req
        req.size += len(chunk)
        if req.size > self.site.max_body_bytes:
            self._stop(self.site.too_large())
        req.body.append(chunk)

    def on_message_complete(self) -> None:
        self.queue.append(self.req)
        self.req = Request()  # a refusal of what follows must not touch this one
        self.in_head = True
        self.head_bytes = self.body_bytes = 0
        self.deadline = _INF
        if self.task is None:
            self.task = self.loop.create_task(self._answer_all())
            self.site.tasks.add(self.task)
        if self.last:  # the listener is stopping: what follows this request is read and dropped
            raise httptools.HttpParserError("stopping")
        if len(self.queue) >= PIPELINE:
            self.pause()

    # --- answering ---------------------------------------------------------------------------------------

    def sheddable(self) -> bool:
        """Owes nothing and is owed nothing but a head: idle, or a head still dribbling in."""
        return (self.in_head and self.task is None and not self.queue and not self.held and not self.discarding
                and self.transport is not None)

    def finish_last(self) -> bool:
        """The listener is stopping: read the request whose body is arriving to its end (answered with
        Connection: close), and nothing after it. False when no body is arriving."""
        self.closing = True
        if self.in_head or self.discarding or self.transport is None:
            return False
        self.last = True
        return True

    @property
    def receiving_last(self) -> bool:
        return self.last and not self.in_head and not self.discarding and self.transport is not None

    @property
    def lingering_last(self) -> bool:
        return self.last and self.discarding and self.transport is not None

    def pause(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    async def _answer_all(self) -> None:
        site = self.site
        try:
            await self._answer_queue()
        except Exception:
            # Our own failure (an answer that would not render, say): the client retries elsewhere or
            # later; a connection left with nobody answering it would hang until the client gives up.
            log.exception("unexpected error answering a request")
            self.discarding = True  # this connection is done: nothing more is read or answered
            self.abort()
        finally:
            if self.task is not None:
                site.tasks.discard(self.task)
            self.task = None
        if self.transport is None or self.discarding:
            return
        if self.closing and not self.queue and not self.receiving_last:  # half-closed or stopping, all answered
            self.close()
            return
        # Both clocks restart from the last answer: while answers were owed, neither ran.
        self.deadline = self.loop.time() + (site.idle_timeout if self.in_head else site.body_timeout)
        self._resume()

    async def _answer_queue(self) -> None:
        site = self.site
        answered = 0
        while self.queue:
            req = self.queue.popleft()
            route = req.route
            reply = route if isinstance(route, Reply) else await site.answer(req)
            if self.transport is None:
                return
            if req.refused:  # its body was never read: linger (reading and dropping), then close
                self.transport.write(render(reply, close=True, head_only=req.method == b"HEAD"))
                self.queue.clear()
                self.held = b""
                self.deadline = self.loop.time() + LINGER
                if self.paused and self.writable is None:
                    self.paused = False
                    self.transport.resume_reading()
                return
            close = not req.keep_alive or (self.closing and not self.queue and not self.receiving_last)
            self.transport.write(render(reply, close=close, head_only=req.method == b"HEAD", http10=req.http10))
            if close:
                if self.last and self.transport.can_write_eof():
                    self._linger_after_last()
                else:
                    self.close()
                return
            answered += 1
            if self.writable is not None:
                await self.writable  # the client reads its answers before more are made
            elif answered % PIPELINE == 0:
                await asyncio.sleep(0)  # a long pipeline of instant answers: let others in

    def _linger_after_last(self) -> None:
        """A stop's last answer: its FIN now, and what the client still sends is read and dropped for
        LINGER (closing with input unread would reset the connection, and lose the answer)."""
        assert self.transport is not None
        self.transport.write_eof()
        self.discarding = True
        self.deadline = self.loop.time() + LINGER
        if self.paused and self.writable is None:
            self.paused = False
            self.transport.resume_reading()

    def refuse_early(self, reply: Reply) -> None:
        """Answer before the body is read (after answers still owed), drop what arrives, close after LINGER."""
        if self.discarding or self.transport is None:
            return
        self.discarding = True
        last = self.req
        last.route, last.refused, last.keep_alive = reply, True, False
        if self.task is not None:  # answers owed to earlier pipelined requests go first
            self.queue.append(last)
            self.deadline = _INF  # the linger starts when the refusal is written
            return
        self.transport.write(render(reply, close=True, head_only=last.method == b"HEAD"))
        self.deadline = self.loop.time() + LINGER

    def due(self, now: float) -> bool:
        return self.deadline < now or (self.writable is not None and self.stalled_until < now)

    def expired(self) -> None:
        """A deadline passed: the linger ended, a client idled, dribbled or stopped reading, or a body is late."""
        if self.transport is None:
            return
        if self.writable is not None and self.stalled_until < self.loop.time():
            self.transport.abort()  # answers it never read: not worth waiting for
        elif self.discarding:
            self._drop()
        elif self.task is not None:
            self.deadline = _INF  # re-armed when the answers owed are written
        elif self.in_head:
            self._drop()  # idle, or headers never finished: no answer owed
        else:
            self.refuse_early(refusal(408, "body_timeout", f"body not received within {self.site.body_timeout:g}s"))

    def close(self) -> None:
        """After an answer: it is written out first."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _drop(self) -> None:
        """At a deadline: what the client has not read by now, it is not waiting for."""
        t = self.transport
        if t is None:
            return
        # Closed at an earlier deadline and not gone yet: a TLS close waits for the client's
        # close_notify (asyncio: up to 30 s), which a client that went quiet never sends.
        if t.is_closing() or t.get_write_buffer_size():
            t.abort()
        else:
            t.close()
            self.deadline = self.loop.time() + LINGER

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
