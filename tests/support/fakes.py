"""Real loopback servers standing in for Slack, a webhook endpoint and an SMTP relay.

Everything listens on 127.0.0.1 on a free port, records what it received (with the time), and
can be told how to answer the next requests (``script`` / ``fail_next``). Use the classes as
async context managers, or the pytest fixtures at the bottom: add
``pytest_plugins = ["tests.support.fakes"]`` to a test module (or import the fixtures).

PYTEST_DONT_REWRITE: test modules import this module before pytest_plugins registers it, so
pytest could not rewrite it anyway; the marker silences that warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email
import email.policy
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

import aiohttp
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from multidict import CIMultiDict

from bridge.model import Alert, Event
from tests.support.slack_workspace import SlackChannel, SlackWorkspace

LOOPBACK = "127.0.0.1"
T0 = dt.datetime(2026, 4, 16, 12, 0, 0, tzinfo=dt.UTC)


def make_alert(
    *,
    node: str = "node-prod-1",
    status: str = "FAILED",
    previous: str | None = "RUNNING",
    held: dt.timedelta | None = dt.timedelta(hours=3, minutes=12),
    labels: dict[str, str] | None = None,
    details: dict[str, Any] | None = None,
    receiver: str = "ops",
    route: str = "prod-failures",
    delivery_id: str = "dlv_0123456789abcdef01234567",
) -> Alert:
    """An alert as routing would hand it over: node-prod-1 FAILED after 3h 12m RUNNING."""
    event = Event(
        event_type="NODE_STATUS_UPDATED",
        timestamp=T0,
        node_id=node,
        status=status,
        details=details or {"nodeId": node},
        labels=labels if labels is not None else {"env": "prod", "team": "core"},
        received_at=T0,
    )
    return Alert(
        event=event,
        route=route,
        receiver=receiver,
        delivery_id=delivery_id,
        previous_status=previous,
        previous_since=T0 - held if held is not None else None,
    )


def free_port() -> int:
    """A port nothing listens on (bound then released): connecting to it is refused."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


async def wait_until(predicate: Any, timeout: float = 5.0, what: str = "condition") -> None:
    """Poll ``predicate()`` until true; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


@dataclass
class Answer:
    """One scripted answer. ``error`` is Slack's error code (or an HTTP body for the sink)."""

    status: int = 200
    error: str | None = None
    retry_after: float | str | None = None
    delay: float = 0.0  # seconds to wait before answering (to provoke client timeouts)
    body: bytes | None = None
    reason: str | None = None  # HTTP reason phrase (WebhookSink)
    drop: bool = False  # close the connection without answering
    location: str | None = None  # a Location header (a redirect)


@dataclass
class Received:
    """One HTTP request as a fake saw it, and what it answered."""

    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]
    body: bytes
    at: float  # time.monotonic() on arrival
    received_at: dt.datetime
    status: int = 0
    accepted: bool = False  # the fake answered success (Slack: 200 "ok" / {"ok": true})
    kind: str = ""  # FakeSlack: "webhook" or "api"

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def payload(self) -> dict[str, Any]:
        """The JSON body as a dict ({} when it was not a JSON object)."""
        try:
            data = self.json()
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}


class _HTTPFake:
    """An aiohttp server on 127.0.0.1 with a queue of scripted answers."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self._script: deque[Answer] = deque()
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._closing = asyncio.Event()

    def _routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        app = web.Application()
        self._routes(app)
        # handler_cancellation: a client that gave up (timeout) must not keep a handler asleep.
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, LOOPBACK, 0)
        await site.start()
        self._port = self._runner.addresses[0][1]

    async def close(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> _HTTPFake:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self._port}"

    def script(self, *answers: Answer | int) -> None:
        """Answer the next requests like this, in order (an int is just a status)."""
        for a in answers:
            self._script.append(a if isinstance(a, Answer) else Answer(status=a))

    def fail_next(
        self,
        n: int = 1,
        *,
        status: int = 500,
        error: str | None = None,
        retry_after: float | str | None = None,
        delay: float = 0.0,
    ) -> None:
        self.script(*[Answer(status, error, retry_after, delay) for _ in range(n)])

    def delay_next(self, seconds: float, n: int = 1) -> None:
        """The next ``n`` answers come late (status 200), e.g. longer than a client's timeout."""
        self.script(*[Answer(status=200, delay=seconds) for _ in range(n)])

    async def _record(self, request: web.Request, kind: str = "") -> Received:
        body = await request.read()
        rec = Received(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=CIMultiDict(request.headers),
            body=body,
            at=time.monotonic(),
            received_at=dt.datetime.now(dt.UTC),
            kind=kind,
        )
        self.requests.append(rec)
        return rec

    async def _next_scripted(self, request: web.Request) -> Answer | None:
        if not self._script:
            return None
        answer = self._script.popleft()
        if answer.delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), answer.delay)
        if answer.drop and request.transport is not None:
            request.transport.close()  # the client sees the server disconnect without an answer
        return answer

    def drop_next(self, n: int = 1) -> None:
        """Close the connection instead of answering the next ``n`` requests."""
        self.script(*[Answer(status=500, drop=True) for _ in range(n)])

    async def wait_for(self, count: int = 1, timeout: float = 5.0) -> list[Received]:
        await wait_until(lambda: len(self.requests) >= count, timeout, f"{count} request(s)")
        return self.requests


def _retry_headers(answer: Answer) -> dict[str, str]:
    headers = {"Retry-After": str(answer.retry_after)} if answer.retry_after is not None else {}
    if answer.location is not None:
        headers["Location"] = answer.location
    return headers


class FakeSlack(_HTTPFake):
    """Slack's incoming webhooks (POST /services/...) and the Web API's chat.postMessage and
    chat.update over a workspace that records what each channel shows (``workspace``:
    tests/support/slack_workspace.py)."""

    def __init__(
        self,
        *,
        token: str = "xoxb-fake-0123456789-token",
        channels: Iterable[str] = ("#alerts", "C0FAKE"),
        webhook_path: str = "/services/T0FAKE/B0FAKE/s3cr3tWebhookPathPart",
    ) -> None:
        super().__init__()
        self.token = token
        self.workspace = SlackWorkspace(tuple(channels))
        self.webhook_path = webhook_path

    async def __aenter__(self) -> FakeSlack:
        await self.start()
        return self

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/services/{rest:.*}", self._webhook)
        app.router.add_post("/api/{method}", self._api)

    @property
    def webhook_url(self) -> str:
        return self.base_url + self.webhook_path

    @property
    def api_url(self) -> str:
        return self.base_url + "/api/"

    @property
    def messages(self) -> list[Received]:
        """Messages Slack accepted (answered 200 ok)."""
        return [r for r in self.requests if r.accepted]

    def rate_limit(self, n: int = 1, retry_after: float = 2) -> None:
        """The next ``n`` requests get 429 with Retry-After (rate_limited / ratelimited)."""
        self.fail_next(n, status=429, retry_after=retry_after)

    async def _webhook(self, request: web.Request) -> web.Response:
        rec = await self._record(request, "webhook")
        answer = await self._next_scripted(request)
        if answer is not None:
            default = {429: "rate_limited", 200: "ok"}.get(answer.status, "internal_error")
            resp = web.Response(status=answer.status, text=answer.error or default, headers=_retry_headers(answer))
        elif request.path != self.webhook_path:
            resp = web.Response(status=404, text="no_service")
        elif not isinstance(rec.payload, dict) or not (rec.payload.get("text") or rec.payload.get("blocks")):
            resp = web.Response(status=400, text="invalid_payload" if not rec.payload else "no_text")
        else:
            resp = web.Response(status=200, text="ok")
        rec.status = resp.status
        rec.accepted = resp.status == 200 and resp.text == "ok"
        return resp

    async def _api(self, request: web.Request) -> web.Response:
        rec = await self._record(request, "api")
        answer = await self._next_scripted(request)
        if answer is not None:
            default = {429: "ratelimited", 200: None}.get(answer.status, "internal_error")
            error = answer.error or default
            data: dict[str, Any] = {"ok": error is None}
            if error:
                data["error"] = error
            resp = web.json_response(data, status=answer.status, headers=_retry_headers(answer))
        else:
            data = self._api_answer(request, rec)
            resp = web.json_response(data)
        rec.status = resp.status
        rec.accepted = bool(data.get("ok")) and resp.status == 200
        return resp

    def _api_answer(self, request: web.Request, rec: Received) -> dict[str, Any]:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return {"ok": False, "error": "not_authed"}
        if auth.removeprefix("Bearer ") != self.token:
            return {"ok": False, "error": "invalid_auth"}
        method = request.match_info["method"]
        if method == "chat.postMessage":
            return self.workspace.post_message(rec.payload)
        if method == "chat.update":
            return self.workspace.update(rec.payload)
        return {"ok": False, "error": "unknown_method"}

    def channel(self, name_or_id: str) -> SlackChannel:
        """What the channel shows: its roots in order, their replies and edits."""
        return self.workspace.channel(name_or_id)


class WebhookSink(_HTTPFake):
    """Records every request; answers ``default_status`` unless scripted (``script``/``flap``)."""

    def __init__(self, *, path: str = "/hook", default_status: int = 200) -> None:
        super().__init__()
        self.path = path
        self.default_status = default_status

    async def __aenter__(self) -> WebhookSink:
        await self.start()
        return self

    def _routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{rest:.*}", self._handle)

    @property
    def url(self) -> str:
        return self.base_url + self.path

    def flap(self, statuses: Iterable[int], times: int = 1) -> None:
        """Repeat a status pattern, e.g. flap([503, 200], times=3)."""
        pattern = list(statuses)
        for _ in range(times):
            self.script(*pattern)

    @property
    def delivered(self) -> list[Received]:
        return [r for r in self.requests if r.accepted]

    async def _handle(self, request: web.Request) -> web.Response:
        rec = await self._record(request)
        answer = await self._next_scripted(request) or Answer(status=self.default_status)
        rec.status = answer.status
        rec.accepted = 200 <= answer.status < 300
        return web.Response(
            status=answer.status, reason=answer.reason, body=answer.body or b"", headers=_retry_headers(answer)
        )


# --- TLS material --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CertFiles:
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


def make_cert(directory: Path, *, name: str = "localhost") -> CertFiles:
    """A self-signed certificate for localhost and 127.0.0.1 (it is its own CA)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / f"{name}.crt", directory / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return CertFiles(cert_file, key_file)


# --- SMTP -----------------------------------------------------------------------------------------

Stage = Literal["mail", "rcpt", "data"]


@dataclass
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: bool  # the session was encrypted (STARTTLS or implicit TLS)
    login: str | None  # the AUTH user, if any
    at: float
    message: EmailMessage = field(init=False)

    def __post_init__(self) -> None:
        msg = email.message_from_bytes(self.data, policy=email.policy.default)
        if not isinstance(msg, EmailMessage):  # pragma: no cover - policy.default makes one
            raise TypeError("expected an EmailMessage")
        self.message = msg

    def part(self, subtype: str) -> str:
        """The text/<subtype> body ("plain" or "html")."""
        found = self.message.get_body(preferencelist=(subtype,))
        if found is None or found.get_content_subtype() != subtype:
            raise AssertionError(f"no text/{subtype} part")
        content: str = found.get_content()
        return content


class SMTPServer:
    """An aiosmtpd relay on 127.0.0.1. ``security``: none, starttls (required) or tls (implicit).

    ``auth=(user, password)`` requires AUTH. ``fail_next("451 4.3.0 try later")`` makes the next
    MAIL/RCPT/DATA (``stage``) answer that reply instead.
    """

    def __init__(
        self,
        *,
        security: Literal["none", "starttls", "tls"] = "none",
        cert: CertFiles | None = None,
        auth: tuple[str, str] | None = None,
    ) -> None:
        if security != "none" and cert is None:
            raise ValueError("TLS needs cert=make_cert(...)")
        self.security = security
        self.auth = auth
        self.messages: list[ReceivedMail] = []
        self.auth_attempts: list[tuple[str, bool]] = []
        self._failures: dict[Stage, deque[str]] = {"mail": deque(), "rcpt": deque(), "data": deque()}
        self._lock = threading.Lock()  # the server runs in its own thread
        self.port = free_port()
        self.host = LOOPBACK
        tls = cert.server_context() if cert else None
        kwargs: dict[str, Any] = {}
        if security == "starttls":
            kwargs.update(tls_context=tls, require_starttls=True)
        if security == "tls":
            kwargs.update(ssl_context=tls)
        if auth is not None:
            kwargs.update(authenticator=self._authenticate, auth_required=True)
            kwargs.update(auth_require_tls=security != "none")
        self._controller = Controller(
            self, hostname=LOOPBACK, port=self.port, server_hostname="localhost", ready_timeout=5.0, **kwargs
        )

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    async def __aenter__(self) -> SMTPServer:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    def fail_next(self, reply: str, n: int = 1, *, stage: Stage = "data") -> None:
        with self._lock:
            self._failures[stage].extend([reply] * n)

    async def wait_for(self, count: int = 1, timeout: float = 5.0) -> list[ReceivedMail]:
        await wait_until(lambda: len(self.messages) >= count, timeout, f"{count} mail(s)")
        return self.messages

    def _scripted(self, stage: Stage) -> str | None:
        with self._lock:
            queue = self._failures[stage]
            return queue.popleft() if queue else None

    # aiosmtpd handler hooks ------------------------------------------------------------------

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword) or self.auth is None:
            return AuthResult(success=False, handled=False)
        user, password = data.login.decode(), data.password.decode()
        ok = (user, password) == self.auth
        self.auth_attempts.append((user, ok))
        return AuthResult(success=ok, handled=False, auth_data=user if ok else None)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = self._scripted("mail")
        if reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = self._scripted("rcpt")
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        reply = self._scripted("data")
        if reply:
            return reply
        content = envelope.original_content or b""
        login = session.auth_data if isinstance(session.auth_data, str) else None
        self.messages.append(
            ReceivedMail(
                mail_from=str(envelope.mail_from),
                rcpt_tos=list(envelope.rcpt_tos),
                data=content,
                tls=server.transport is not None and server.transport.get_extra_info("ssl_object") is not None,
                login=login,
                at=time.monotonic(),
            )
        )
        return "250 Message accepted for delivery"


# --- pytest fixtures ------------------------------------------------------------------------------


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as slack:
        yield slack


@pytest.fixture
async def webhook_sink() -> AsyncIterator[WebhookSink]:
    async with WebhookSink() as sink:
        yield sink


@pytest.fixture
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def smtp_server() -> Iterator[SMTPServer]:
    """Plain SMTP, no TLS, no AUTH."""
    server = SMTPServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


SMTP_USER = ("alerts@example.test", "smtp-s3cret-password")


@pytest.fixture
def smtp_tls_server(tls_cert: CertFiles) -> Iterator[SMTPServer]:
    """STARTTLS required, AUTH required with SMTP_USER."""
    server = SMTPServer(security="starttls", cert=tls_cert, auth=SMTP_USER)
    server.start()
    try:
        yield server
    finally:
        server.stop()
