"""Shared rig for the "under fire" scenarios (faults, load, security): every receiver on loopback,
a ThunderStack-like sender, and the bookkeeping that says what was delivered, twice or lost.

- ``Receivers``: FakeSlack (incoming webhook), WebhookSink, an SMTP relay with AUTH, and the log
  receiver, configured with secret values (so ``secret_guard`` has something to look for).
- ``Stream``: signed events from N nodes, each node's events one after the other; every event is
  retried until it is answered 200, as ThunderStack retries (connection errors, timeouts, 503).
- ``tally``: the delivery ids each receiver accepted, against the ones every accepted event
  should have produced (``bridge.model.delivery_id`` of the event id the bridge answered).
- ``db_counts``: row counts of the SQLite store, read through a read-only connection.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import resource
import sqlite3
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiosmtpd.smtp import SMTP, Envelope, Session
from cryptography.hazmat.primitives.asymmetric import rsa

from bridge.model import delivery_id, format_timestamp
from bridge.testing import event_body, sign
from tests.support.fakes import FakeSlack, SMTPServer, WebhookSink

RECEIVERS = ("slack", "webhook", "email", "log")
DLV = re.compile(r"dlv_[0-9a-f]{24}")
LOG_DLV = re.compile(r'"delivery_id":"(dlv_[0-9a-f]{24})"')

# Secret values the receivers are configured with: none may appear in a log, body or metric.
SLACK_PATH_SECRET = "sLkPathS3cr3tT0ken4Tests"
WEBHOOK_URL_SECRET = "whkUrlS3cr3tQ7x2"
WEBHOOK_HEADER_SECRET = "Bearer whk-header-s3cr3t-9Zt4"
WEBHOOK_SIGNING_SECRET = "whsec_" + base64.b64encode(b"signing-s3cr3t-for-webhooks-32b").decode()
SMTP_USER = ("alerts@example.test", "smtp-pw-s3cr3t-Xy12")


def raise_nofile(want: int) -> int:
    """Raise this process's open-file limit towards ``want`` (children inherit it); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


# --- the SQLite store, read-only ------------------------------------------------------------------


def db_path(cfg: Mapping[str, Any]) -> Path:
    url = str(cfg["storage"]["url"])
    assert url.startswith("sqlite://"), url
    return Path(url.removeprefix("sqlite://"))


def db_counts(path: Path) -> dict[str, int]:
    """Rows per table and jobs per state; read-only, safe while the bridge runs or after a kill."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                  for t in ("events", "dedup", "nodes", "jobs", "fired", "silences") if t in tables}
        for state, n in conn.execute("SELECT state, count(*) FROM jobs GROUP BY state"):
            counts[f"jobs_{state}"] = n
        return counts
    finally:
        conn.close()


# --- receivers ------------------------------------------------------------------------------------


class FlakySMTP(SMTPServer):
    """SMTPServer that can also drop the connection in the middle of DATA (no reply at all)."""

    def __init__(self, *, port: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if port is not None:  # come back where the bridge was told to find the relay
            self.port = self._controller.port = port
        self.drop_data = 0
        self.dropped = 0
        self._drop_lock = threading.Lock()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._drop_lock:
            drop = self.drop_data > 0
            if drop:
                self.drop_data -= 1
                self.dropped += 1
        if drop and server.transport is not None:
            server.transport.abort()  # the client waits for the reply to DATA and sees the connection die
            return "421 4.4.2 connection dropped"
        return await super().handle_DATA(server, session, envelope)


class Receivers:
    """Every receiver kind on loopback, and what each accepted, by delivery id."""

    def __init__(self) -> None:
        self.slack = FakeSlack(webhook_path=f"/services/T0FIRE/B0FIRE/{SLACK_PATH_SECRET}")
        self.sink = WebhookSink(path=f"/hook/{WEBHOOK_URL_SECRET}")
        self.smtp = FlakySMTP(auth=SMTP_USER)
        self.log_files: list[Path] = []
        self._earlier_mail: list[Any] = []  # messages of relays replaced by smtp_outage()

    async def __aenter__(self) -> Receivers:
        await self.slack.start()
        await self.sink.start()
        await asyncio.to_thread(self.smtp.start)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.slack.close()
        await self.sink.close()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.smtp.stop)

    async def smtp_outage(self, seconds: float) -> None:
        """The relay goes away (connections refused) for ``seconds``, then a new one listens on its port."""
        port = self.smtp.port
        await asyncio.to_thread(self.smtp.stop)
        self._earlier_mail += self.smtp.messages
        await asyncio.sleep(seconds)
        self.smtp = FlakySMTP(auth=SMTP_USER, port=port)
        await asyncio.to_thread(self.smtp.start)

    @property
    def secrets(self) -> list[str]:
        return [self.slack.webhook_url, SLACK_PATH_SECRET, self.sink.url, WEBHOOK_URL_SECRET,
                WEBHOOK_HEADER_SECRET, WEBHOOK_SIGNING_SECRET, SMTP_USER[1]]

    def config(self, *, kinds: Iterable[str] = RECEIVERS, **per_kind: dict[str, Any]) -> dict[str, Any]:
        fast = {"retry": {"initial_backoff": "200ms", "max_backoff": "2s", "max_attempts": 1000,
                          "max_elapsed": "10m"}, "timeout": "2s"}
        every: dict[str, dict[str, Any]] = {
            "slack": {"type": "slack", "webhook_url": self.slack.webhook_url, "rate_limit": 0, "concurrency": 1},
            "webhook": {"type": "webhook", "url": self.sink.url, "headers": {"Authorization": WEBHOOK_HEADER_SECRET},
                        "signing_secret": WEBHOOK_SIGNING_SECRET, "concurrency": 8},
            "email": {"type": "email", "to": ["oncall@example.test"], "from": "bridge@example.test",
                      "smtp": {"host": "127.0.0.1", "port": self.smtp.port, "security": "none",
                               "username": SMTP_USER[0], "password": SMTP_USER[1]}, "concurrency": 4},
            "log": {"type": "log"},
        }
        out: dict[str, Any] = {}
        for kind in kinds:
            cfg = {**fast, **every[kind], **per_kind.get(kind, {})}
            if "retry" in per_kind.get(kind, {}):
                cfg["retry"] = {**fast["retry"], **per_kind[kind]["retry"]}
            out[kind] = cfg
        return out

    def received(self) -> dict[str, Counter[str]]:
        """Delivery ids each receiver accepted, with how many times."""
        got: dict[str, Counter[str]] = {k: Counter() for k in RECEIVERS}
        for r in self.slack.messages:
            got["slack"].update(set(DLV.findall(r.body.decode("utf-8", "replace"))))
        for r in self.sink.delivered:
            got["webhook"][r.headers.get("webhook-id", "?")] += 1
        for m in [*self._earlier_mail, *self.smtp.messages]:
            found = DLV.search(str(m.message["X-Alert-Bridge-Delivery"] or ""))
            got["email"][found.group() if found else "?"] += 1
        for path in self.log_files:
            if path.exists():
                for line in path.read_text(errors="replace").splitlines():
                    if "bridge.alerts" in line and (m := LOG_DLV.search(line)):
                        got["log"][m.group(1)] += 1
        return got


# --- the sender -----------------------------------------------------------------------------------


@dataclass
class Sent:
    node: str
    stamp: str
    body: bytes
    status: str = ""
    first_sent: float = 0.0
    attempts: int = 0
    event_id: str | None = None  # set once answered 200
    answer: str | None = None  # accepted / duplicate / ignored
    answered_at: float = 0.0
    latency: float = 0.0  # last attempt: request → 200


@dataclass
class Stream:
    """ThunderStack as a sender: each node's events in order, each retried until answered 200."""

    url: str
    key: rsa.RSAPrivateKey
    nodes: int = 8
    prefix: str = "fire"
    request_timeout: float = 3.0
    give_up_after: float = 120.0  # per event
    events: list[Sent] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)  # HTTP status (or error kind) of every attempt
    refused: list[tuple[int, str]] = field(default_factory=list)  # 4xx answers (none expected)
    max_retry_after: float = 1.0  # honour Retry-After, capped so a test stays short
    on_body: Callable[[str, str], None] | None = None  # sees every answer (e.g. SecretGuard.check_body)

    @property
    def accepted(self) -> list[Sent]:
        return [e for e in self.events if e.event_id is not None]

    async def run(self, *, rate: float, stop: asyncio.Event, session: aiohttp.ClientSession | None = None) -> None:
        """Send until ``stop`` is set (each node about ``rate / nodes`` events a second); then finish
        the events already started."""
        own = session is None
        sess = session or aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self.nodes * 2))
        try:
            await asyncio.gather(*(self._node(i, rate, stop, sess) for i in range(self.nodes)))
        finally:
            if own:
                await sess.close()

    async def _node(self, index: int, rate: float, stop: asyncio.Event, session: aiohttp.ClientSession) -> None:
        node = f"{self.prefix}-{index}"
        interval = self.nodes / rate
        loop = asyncio.get_running_loop()
        next_at = loop.time() + index * (interval / self.nodes)
        last = datetime.now(UTC) - timedelta(seconds=1)
        n = 0
        while not stop.is_set():
            delay = next_at - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    break
            next_at = max(next_at + interval, loop.time())
            stamp_dt = max(datetime.now(UTC), last + timedelta(milliseconds=1))
            last = stamp_dt
            stamp = format_timestamp(stamp_dt)[:-4] + "Z"
            status = "FAILED" if n % 2 == 0 else "RUNNING"
            n += 1
            sent = Sent(node, stamp, event_body(node, status, timestamp=stamp), status)
            self.events.append(sent)
            await self.deliver(sent, session)

    async def deliver(self, sent: Sent, session: aiohttp.ClientSession) -> None:
        headers = {"Content-Type": "application/json", "X-ThunderStack-Signature": sign(sent.body, self.key)}
        loop = asyncio.get_running_loop()
        sent.first_sent = loop.time()
        while loop.time() - sent.first_sent < self.give_up_after:
            sent.attempts += 1
            started = loop.time()
            wait = 0.1
            try:
                async with session.post(self.url, data=sent.body, headers=headers,
                                        timeout=aiohttp.ClientTimeout(total=self.request_timeout)) as r:
                    text = await r.text()
                    self.statuses[str(r.status)] += 1
                    if self.on_body is not None:
                        self.on_body(f"answer {r.status}", text)
                    if r.status == 200:
                        doc = await r.json(content_type=None)
                        sent.event_id, sent.answer = doc["id"], doc["status"]
                        sent.answered_at = loop.time()
                        sent.latency = sent.answered_at - started
                        return
                    if r.status < 500:
                        self.refused.append((r.status, text[:200]))
                        return
                    retry_after = r.headers.get("Retry-After", "")
                    wait = min(float(retry_after), self.max_retry_after) if retry_after.isdigit() else 0.2
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                self.statuses[type(exc).__name__] += 1
            await asyncio.sleep(wait)


# --- bookkeeping ----------------------------------------------------------------------------------


@dataclass
class Tally:
    sent: int
    accepted: int
    unaccepted: int  # events the sender gave up on
    expected: dict[str, int]
    delivered: dict[str, int]  # distinct expected deliveries each receiver accepted
    twice: dict[str, int]  # deliveries accepted more than once
    lost: dict[str, int]
    unexpected: dict[str, int]  # accepted ids no accepted event produced

    @property
    def total_twice(self) -> int:
        return sum(self.twice.values())

    @property
    def total_lost(self) -> int:
        return sum(self.lost.values())

    def missing(self) -> str:
        return ", ".join(f"{k}: {v}" for k, v in self.lost.items() if v) or "none"


Wants = Callable[[Sent], Iterable[str]]  # which receivers an event's routes reach


def expected_ids(events: Iterable[Sent], receivers: Iterable[str], wants: Wants | None = None) -> dict[str, set[str]]:
    kinds = list(receivers)
    accepted = [e for e in events if e.event_id is not None and e.answer in ("accepted", "duplicate")]
    out: dict[str, set[str]] = {r: set() for r in kinds}
    for e in accepted:
        for r in wants(e) if wants is not None else kinds:
            out[r].add(delivery_id(e.event_id or "", r))
    return out


def tally(stream: Stream, got: Mapping[str, Counter[str]], receivers: Iterable[str],
          wants: Wants | None = None) -> Tally:
    kinds = list(receivers)
    want = expected_ids(stream.events, kinds, wants)
    return Tally(
        sent=len(stream.events),
        accepted=len(stream.accepted),
        unaccepted=len(stream.events) - len(stream.accepted),
        expected={r: len(want[r]) for r in kinds},
        delivered={r: len(want[r] & set(got[r])) for r in kinds},
        twice={r: sum(1 for i, n in got[r].items() if n > 1) for r in kinds},
        lost={r: len(want[r] - set(got[r])) for r in kinds},
        unexpected={r: len(set(got[r]) - want[r]) for r in kinds},
    )


async def wait_all_delivered(rcv: Receivers, stream: Stream, kinds: Iterable[str], timeout: float,
                             settle: float = 1.0, wants: Wants | None = None) -> Tally:
    """Poll until every expected delivery arrived (or ``timeout``); then wait ``settle`` for late repeats."""
    kinds = list(kinds)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        t = tally(stream, rcv.received(), kinds, wants)
        if t.total_lost == 0:
            break
        await asyncio.sleep(0.25)
    await asyncio.sleep(settle)
    return tally(stream, rcv.received(), kinds, wants)


def latency_summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {"p50_ms": round(percentile(values, 50) * 1000, 1), "p99_ms": round(percentile(values, 99) * 1000, 1),
            "max_ms": round(max(values) * 1000, 1), "mean_ms": round(statistics.fmean(values) * 1000, 1)}
