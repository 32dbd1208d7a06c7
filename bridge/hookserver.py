"""The webhook listener: its routes and its life, on HTTP/1.1 connections from http1.py.

Why not aiohttp, as on the admin listener: its server costs about twice the RSA check in CPU per
request before a handler runs, and this listener serves every event (bench/README.md, "The webhook
listener on httptools"). It does what the webhook port needs and nothing else: ``POST {path}`` and
``POST {path}/{node_id}`` go to ``Ingest``, ``GET /healthz`` and ``/readyz`` answer the probes,
every answer is JSON, and nothing leads to a 500 (an unexpected error answers 503 with
Retry-After, so the sender retries and nothing is lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from urllib.parse import unquote

import httptools

from bridge.errors import BodyTooLarge, LengthRequired, RequestError, Unavailable
from bridge.fdbudget import THROTTLE, connection_cap
from bridge.http1 import Connection, Request
from bridge.ingest import Ingest
from bridge.reply import Reply, error_reply, refusal, unavailable_reply

log = logging.getLogger("bridge.server")

ReadyCheck = Callable[[], Awaitable[str | None]]  # None when ready, else the reason

_SWEEP = 0.25  # seconds between looks at the connections' deadlines
_CAP_FROM = 64  # connections held before the open-file limit is read at each new one
_PROBES = {b"/healthz": "healthz", b"/readyz": "readyz"}
_NOT_FOUND = refusal(404, "not_found", "Not Found")


class HookServer:
    """The webhook listener: routes and limits for its ``Connection``s, start and graceful stop."""

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
        self.connections: set[Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()  # requests being answered, their clients gone or not
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.shed = 0  # connections closed (or refused) to stay under the open-file limit
        self._shed_logged = -THROTTLE

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None) -> int:
        loop = asyncio.get_running_loop()
        # A TLS client that never finishes its handshake is cut off like one that never sends a head.
        self._server = await loop.create_server(
            lambda: Connection(self), host, port, ssl=ssl_context, backlog=1024, reuse_address=True,
            ssl_handshake_timeout=self.idle_timeout if ssl_context is not None else None)
        self._sweeper = loop.create_task(self._sweep(), name="webhook-deadlines")
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self, grace: float) -> None:
        """Stop listening, let requests in flight be answered (for at most ``grace``), close the rest."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            # Only what is queued, or has its body arriving, is answered (the last answer says
            # Connection: close); nothing new is read, so nothing new is recorded whose answer the
            # stop could cut off. A sender cut off mid-body would have to send again.
            if conn.finish_last():
                continue
            conn.pause()
            if conn.task is None:
                conn.close()
        loop = asyncio.get_running_loop()
        end = loop.time() + grace
        reading_until = end - min(1.0, grace / 4)  # the rest of the grace answers the last bodies read
        while (left := end - loop.time()) > 0:
            if loop.time() < reading_until and any(c.receiving_last for c in self.connections):
                await asyncio.sleep(min(0.05, left))  # its body completes, or body_timeout refuses it
            elif self.tasks:
                await asyncio.wait(list(self.tasks), timeout=left)
            elif any(c.lingering_last for c in self.connections):
                await asyncio.sleep(min(0.05, left))  # the last answers read before the connections close
            else:
                break
        late = list(self.tasks)
        for task in late:
            task.cancel()
        if late:  # before the store they write to is closed
            await asyncio.gather(*late, return_exceptions=True)
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
            for conn in [c for c in self.connections if c.due(now)]:
                try:
                    conn.expired()
                except Exception:  # one connection's failure must not stop every timeout
                    log.exception("unexpected error at a connection's deadline")
                    conn.abort()

    # --- what http1.Connection asks ---------------------------------------------------------------------

    def admit(self, conn: Connection) -> None:
        conns = self.connections
        if len(conns) >= _CAP_FROM and len(conns) >= (cap := connection_cap()):
            # At the cap (fdbudget.py): the longest-idle connection makes room (a keep-alive
            # client opens another when it has something to send); with none idle, the new one is
            # refused (its sender retries).
            idle = [c for c in conns if c.sheddable()]
            victim = min(idle, key=lambda c: c.deadline) if idle else conn
            self.shed += 1
            now = time.monotonic()
            if now - self._shed_logged >= THROTTLE:
                self._shed_logged = now
                log.warning("webhook listener at its limit of %d connections (an eighth of the open-file limit "
                            "kept for the rest): %s (%d so far); raise the limit (LimitNOFILE, ulimit -n) if "
                            "these clients are legitimate", cap,
                            "closing the longest-idle one" if idle else "refusing new ones", self.shed)
            conns.discard(victim)
            victim.abort()
            if victim is conn:
                return
        conns.add(conn)

    def route(self, req: Request) -> tuple[str, str | None] | Reply:
        """("event", node or None), ("healthz"|"readyz", None), or the refusal."""
        url, method = req.url, req.method
        if not url.startswith(b"/"):
            if not url.startswith((b"http://", b"https://")):
                return _NOT_FOUND  # "*" (OPTIONS), authority-form (CONNECT)
            try:
                url = httptools.parse_url(url).path or b"/"  # absolute-form, as a proxy sends it
            except httptools.HttpParserInvalidURLError:
                return refusal(400, "bad_request", "the request target is not a valid URL")
        path = url.partition(b"?")[0].partition(b"#")[0]
        probe = _PROBES.get(path)
        if probe is not None and method in (b"GET", b"HEAD"):  # first: with ``path: /`` they are node paths too
            return probe, None
        if path == self.path or path.startswith(self.node_prefix):
            node: str | None = None
            if path != self.path:
                raw = path[len(self.node_prefix):]
                if not raw or b"/" in raw:
                    return _NOT_FOUND
                try:
                    node = unquote(raw.decode("ascii"), errors="strict")
                except (UnicodeDecodeError, ValueError):
                    return refusal(400, "bad_request", "the path is not percent-encoded UTF-8")
                if not node or "/" in node:
                    return _NOT_FOUND
            if method != b"POST":
                return refusal(405, "method_not_allowed", "Method Not Allowed", {"Allow": "POST"})
            return "event", node
        if probe is not None:
            return refusal(405, "method_not_allowed", "Method Not Allowed", {"Allow": "GET,HEAD"})
        return _NOT_FOUND

    def refuse_body(self, req: Request) -> Reply | None:
        if req.route == ("healthz", None) or req.route == ("readyz", None):
            return None
        if req.length is not None and req.length > self.max_body_bytes:
            return self._refuse(BodyTooLarge(f"body of {req.length} bytes exceeds the limit of {self.max_body_bytes}"))
        if req.chunked and not self.accept_chunked:
            return self._refuse(LengthRequired("send the body with a Content-Length header (Transfer-Encoding: "
                                               "chunked is refused)"))
        return None

    def too_large(self) -> Reply:
        return self._refuse(BodyTooLarge(f"body exceeds the limit of {self.max_body_bytes} bytes"))

    def _refuse(self, exc: RequestError) -> Reply:
        self.ingest().refuse(exc)
        return error_reply(exc)

    async def answer(self, req: Request) -> Reply:
        route: tuple[str, str | None] = req.route  # type: ignore[assignment]  # route() made it, not a Reply
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
            return unavailable_reply(exc)
        except Exception:
            log.exception("unexpected error handling %s %s", req.method.decode("latin-1"),
                          req.url[:200].decode("latin-1"))
            return refusal(503, "internal", "unexpected error; retry later", {"Retry-After": "5"})
