"""Protocol abuse over raw sockets against the real ``python -m bridge serve`` process.

Oversized bodies (with and without Content-Length, compressed), chunked bodies that never end,
oversized headers, request smuggling shapes, slowloris (a byte a second), and a thousand idle
connections. Each must be cut off by a limit or a timeout, while valid signed events posted at the
same time keep getting 200 quickly.

The bridge runs with ``max_body_bytes: 65536``, ``body_timeout: 2s`` and ``idle_timeout: 3s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from bridge.app import LINGER
from bridge.testing import event_body, public_pem, sign
from tests.support.fakes import WebhookSink, wait_until
from tests.support.harness import ROOT, BridgeProcess, base_config
from tests.support.rawhttp import RawAnswer as Answer
from tests.support.rawhttp import closed_by_server, read_answer
from tests.support.reliability import record
from tests.support.under_fire import latency_summary, raise_nofile, rss_mib

pytestmark = pytest.mark.timeout(120)

LIMIT = 65536
BODY_TIMEOUT = 2.0
IDLE_TIMEOUT = 3.0


@dataclass
class Server:
    proc: BridgeProcess
    key: rsa.RSAPrivateKey
    host: str
    port: int

    @property
    def pid(self) -> int:
        assert self.proc.proc is not None
        return self.proc.proc.pid

    def open_fds(self) -> int:
        return len(list(Path(f"/proc/{self.pid}/fd").iterdir()))

    def alive(self) -> bool:
        return self.proc.proc is not None and self.proc.proc.poll() is None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, signing_key: rsa.RSAPrivateKey) -> Iterator[Server]:
    raise_nofile(8192)  # before the bridge starts: it inherits the limit
    tmp = tmp_path_factory.mktemp("abuse")
    key_file = tmp / "thunderstack.pem"
    key_file.write_bytes(public_pem(signing_key))
    cfg = base_config(tmp, key_file,
                      server={"max_body_bytes": LIMIT, "body_timeout": f"{BODY_TIMEOUT:g}s",
                              "idle_timeout": f"{IDLE_TIMEOUT:g}s"},
                      routes=[{"name": "all", "to": ["console"]}])
    proc = BridgeProcess(tmp / "bridge", cfg, signing_key)
    asyncio.run(proc.start())
    host, _, port = cfg["server"]["listen"].rpartition(":")
    try:
        yield Server(proc, signing_key, host, int(port))
    finally:
        proc.kill()


# --- valid traffic alongside the abuse ------------------------------------------------------------------


@dataclass
class Valid:
    statuses: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def check(self) -> str:
        """Every valid request answered 200 within the client's timeout; the latencies are reported in
        the reliability table, not asserted (speed targets live in bench/)."""
        assert self.statuses, "no valid traffic was sent"
        assert not self.errors, f"valid requests failed: {self.errors[:3]}"
        assert set(self.statuses) == {200}, f"valid requests answered {sorted(set(self.statuses))}"
        lat = latency_summary(self.latencies)
        return (f"{len(self.statuses)} valid events posted meanwhile, all 200 "
                f"(p50 {lat['p50_ms']} ms, max {lat['max_ms']} ms)")


@contextlib.asynccontextmanager
async def valid_traffic(server: Server, prefix: str, interval: float = 0.05) -> AsyncIterator[Valid]:
    """Signed events from two senders every ``interval`` until the block ends."""
    result = Valid()
    stop = asyncio.Event()

    async def sender(n: int) -> None:
        async with aiohttp.ClientSession() as s:
            i = 0
            while not stop.is_set():
                body = event_body(f"{prefix}-{n}-{i}", "FAILED")
                i += 1
                started = time.monotonic()
                try:
                    async with s.post(f"http://{server.host}:{server.port}/webhook", data=body,
                                      headers={"X-ThunderStack-Signature": sign(body, server.key)},
                                      timeout=aiohttp.ClientTimeout(total=10)) as r:
                        await r.read()
                        result.statuses.append(r.status)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    result.errors.append(type(exc).__name__)
                result.latencies.append(time.monotonic() - started)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)

    tasks = [asyncio.create_task(sender(n)) for n in range(2)]
    try:
        yield result
    finally:
        stop.set()
        await asyncio.gather(*tasks)


# --- raw sockets ----------------------------------------------------------------------------------------


async def connect(server: Server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(server.host, server.port)


async def timed(answer: Awaitable[Answer | None]) -> tuple[Answer | None, float]:
    """The answer and when it arrived."""
    got = await answer
    return got, time.monotonic()


def request_head(server: Server, headers: dict[str, str], path: str = "/webhook") -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {server.host}:{server.port}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.close()


# --- bodies ---------------------------------------------------------------------------------------------


async def test_body_over_limit_with_content_length(server: Server) -> None:
    """Content-Length says 10 MB: 413 at once, without waiting for (or reading) the body."""
    clients = 40
    answers: list[Answer | None] = []
    waits: list[float] = []
    closes: list[bool] = []

    async def one() -> None:
        reader, writer = await connect(server)
        started = time.monotonic()
        writer.write(request_head(server, {"Content-Length": str(10_000_000), "X-ThunderStack-Signature": "AAAA",
                                           "Content-Type": "application/json"}) + b"{" + b" " * 1000)
        await writer.drain()
        answers.append(await read_answer(reader, 5.0))
        waits.append(time.monotonic() - started)
        closes.append(await closed_by_server(reader, LINGER + 2.0))
        _close(writer)

    async with valid_traffic(server, "cl") as valid:
        await asyncio.gather(*(one() for _ in range(clients)))
    statuses = [a.status if a else None for a in answers]
    bodies = [json.loads(a.body) for a in answers if a]
    record("body over the limit, with Content-Length", tried=f"{clients} clients announcing 10 MB (limit 64 KiB) "
           "and sending 1 KB", times=clients,
           outcome=f"answers {sorted(set(map(str, statuses)))}, within {max(waits):.2f} s without the body; "
                   f"{sum(closes)} connections closed by the server (after at most {LINGER:g} s of waiting for "
                   f"the body it will not read); {valid.check()}")
    assert statuses == [413] * clients and all(b["error"] == "body_too_large" for b in bodies)
    assert max(waits) < 1.5 and sum(closes) == clients


async def test_body_over_limit_chunked_and_compressed(server: Server) -> None:
    """No Content-Length (chunked, in big chunks or one-byte ones), and a gzip bomb: 411 at once, the
    body unparsed; a client that keeps sending is read (and what it sends dropped) for at most LINGER
    seconds, so it can still read the 411, then cut off."""
    rss_before = rss_mib(server.pid)
    results: dict[str, tuple[int | None, int, float, bool]] = {}  # answer, bytes sent, cut off after s, closed

    async def chunked(name: str, chunks: Iterator[bytes], *, encoding: str | None = None,
                      pace: float = 0.0) -> None:
        reader, writer = await connect(server)
        headers = {"Transfer-Encoding": "chunked", "X-ThunderStack-Signature": "AAAA"}
        if encoding:
            headers["Content-Encoding"] = encoding
        writer.write(request_head(server, headers))
        started = time.monotonic()
        sent = 0
        with contextlib.suppress(ConnectionError):
            for chunk in chunks:
                writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                await writer.drain()
                sent += len(chunk)
                if pace:
                    await asyncio.sleep(pace)
                if reader.at_eof() or time.monotonic() - started > 15:
                    break
        cut = time.monotonic() - started
        answer = await read_answer(reader, 5.0)
        results[name] = (answer.status if answer else None, sent, cut, await closed_by_server(reader, 5.0))
        _close(writer)

    def pieces(data: bytes, size: int = 8192) -> Iterator[bytes]:
        return (data[i : i + size] for i in range(0, len(data), size))

    def endless(size: int = 65536) -> Iterator[bytes]:
        while True:
            yield b" " * size

    async with valid_traffic(server, "chunked") as valid:
        await chunked("128 KiB, then waits for the answer", pieces(b" " * 131072))
        await chunked("60 KB in 1-byte chunks", pieces(b" " * 60_000, 1))
        await chunked("pushes 6 MB/s without end", endless(), pace=0.01)
        await chunked("gzip bomb (200 MB of zeros in 194 KiB)", pieces(gzip.compress(b"{" + b" " * 200_000_000)),
                      encoding="gzip")
    rss_after = rss_mib(server.pid)
    record("body over the limit, chunked and compressed", tried="no Content-Length: 128 KiB then wait; 60 KB "
           "in 1-byte chunks; a body pushed at 6 MB/s without end; a gzip bomb inflating to 200 MB (limit 64 KiB)",
           times=len(results),
           outcome="; ".join(f"{k}: {v[0] or 'connection reset'}, {v[1] // 1024} KiB sent, cut off after "
                             f"{v[2]:.1f} s" + ("" if v[3] else " LEFT OPEN") for k, v in results.items())
                   + f"; server RSS {rss_before:.0f} -> {rss_after:.0f} MiB; {valid.check()}")
    waited, tiny, pushed, bomb = results.values()
    assert waited[0] == 411 and waited[3]
    assert tiny[0] in (411, None) and tiny[3], tiny
    assert pushed[0] in (411, None) and pushed[2] < LINGER + 2.0 and pushed[3], pushed
    assert bomb[0] in (411, None) and bomb[3], bomb
    assert rss_after - rss_before < 50, "the body was buffered or inflated in memory"


async def test_compression_bombs(server: Server) -> None:
    """Ten gzip bombs at once (194 KiB each, 200 MB inflated): refused, and never inflated."""
    bomb = gzip.compress(b"{" + b" " * 200_000_000)
    rss_before = rss_mib(server.pid)

    async def one(with_length: bool) -> int | None:
        reader, writer = await connect(server)
        headers = {"Content-Encoding": "gzip", "X-ThunderStack-Signature": "AAAA"}
        headers.update({"Content-Length": str(len(bomb))} if with_length else {"Transfer-Encoding": "chunked"})
        writer.write(request_head(server, headers))
        with contextlib.suppress(ConnectionError):
            if with_length:
                writer.write(bomb)
            else:
                for i in range(0, len(bomb), 16384):
                    writer.write(f"{len(bomb[i:i + 16384]):x}\r\n".encode() + bomb[i : i + 16384] + b"\r\n")
                writer.write(b"0\r\n\r\n")
            await writer.drain()
        answer = await read_answer(reader, 10.0)
        _close(writer)
        return answer.status if answer else None

    async with valid_traffic(server, "bomb", interval=0.02) as valid:
        await asyncio.sleep(0.2)
        answers = await asyncio.gather(*(one(i % 2 == 0) for i in range(10)))
        await asyncio.sleep(1.0)
    rss_after = rss_mib(server.pid)
    record("compression bombs", tried="10 gzip bombs at once (194 KiB inflating to 200 MB each), with and "
           "without Content-Length", times=len(answers),
           outcome=f"answers {sorted({str(a) for a in answers})}; bodies are not inflated; server RSS "
                   f"{rss_before:.0f} -> {rss_after:.0f} MiB; {valid.check()}")
    assert all(a in (413, 411, None) for a in answers) and answers.count(413) + answers.count(411) >= 5, answers
    assert rss_after - rss_before < 30


async def test_chunked_body_that_never_ends(server: Server) -> None:
    """A chunk every half second, never the last one: 411 (no Content-Length) without waiting for the
    body, connection closed. (A body with a Content-Length sent too slowly gets 408: test_slowloris.)"""
    clients = 30
    outcome: list[tuple[int | None, float, bool]] = []

    async def one() -> None:
        reader, writer = await connect(server)
        writer.write(request_head(server, {"Transfer-Encoding": "chunked", "X-ThunderStack-Signature": "AAAA"}))
        started = time.monotonic()
        answer_task = asyncio.create_task(timed(read_answer(reader, BODY_TIMEOUT + 5)))
        with contextlib.suppress(ConnectionError):
            while not answer_task.done() and time.monotonic() - started < BODY_TIMEOUT + 5:
                writer.write(b"1\r\n \r\n")
                await writer.drain()
                await asyncio.sleep(0.5)
        answer, at = await answer_task
        outcome.append((answer.status if answer else None, at - started, await closed_by_server(reader, 3.0)))
        _close(writer)

    async with valid_traffic(server, "never") as valid:
        await asyncio.gather(*(one() for _ in range(clients)))
    times = [t for _, t, _ in outcome]
    record("chunked body that never ends", tried=f"{clients} clients sending a 1-byte chunk every 0.5 s, never the "
           f"last chunk (body_timeout {BODY_TIMEOUT:g} s)", times=clients,
           outcome=f"answers {sorted({str(s) for s, _, _ in outcome})} after {min(times):.1f}-{max(times):.1f} s, "
                   f"{sum(c for _, _, c in outcome)} closed; {valid.check()}")
    assert all(s == 411 for s, _, _ in outcome) and all(c for _, _, c in outcome), outcome


# --- headers and framing --------------------------------------------------------------------------------


async def test_headers_over_size_and_smuggling_shapes(server: Server) -> None:
    cases = {
        "one 100 KB header": request_head(server, {"X-Big": "a" * 100_000, "Content-Length": "2"}) + b"{}",
        "1,000 headers": request_head(server, {**{f"X-H{i}": "v" for i in range(1000)}, "Content-Length": "2"})
        + b"{}",
        "100 KB request line": request_head(server, {"Content-Length": "2"}, path="/webhook?" + "q" * 100_000)
        + b"{}",
        "header name with a space": b"POST /webhook HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\nContent-Length: 2\r\n\r\n{}",
        "Content-Length and Transfer-Encoding": request_head(server, {"Content-Length": "2",
                                                                      "Transfer-Encoding": "chunked"})
        + b"0\r\n\r\n",
        "two different Content-Lengths": b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
        b"Content-Length: 40\r\n\r\n{}",
        "negative Content-Length": request_head(server, {"Content-Length": "-1"}) + b"{}",
        "bad chunk size": request_head(server, {"Transfer-Encoding": "chunked"}) + b"zz\r\n{}\r\n0\r\n\r\n",
        "TLS handshake bytes on the plain port": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 500
        + b"\r\n\r\n",
    }
    results: dict[str, tuple[int | None, bool]] = {}

    async def one(name: str, data: bytes) -> None:
        reader, writer = await connect(server)
        with contextlib.suppress(ConnectionError):
            writer.write(data)
            await writer.drain()
        answer = await read_answer(reader, 5.0)
        results[name] = (answer.status if answer else None, await closed_by_server(reader, 5.0))
        _close(writer)

    async with valid_traffic(server, "hdr") as valid:
        await asyncio.gather(*(one(k, v) for k, v in cases.items()))
    record("oversized headers and ambiguous framing", tried=", ".join(cases), times=len(cases),
           outcome="; ".join(f"{k}: {s}{'' if c else ' (left open)'}" for k, (s, c) in results.items())
                   + f"; {valid.check()}")
    for name, (status, was_closed) in results.items():
        assert status is not None and 400 <= status < 500 and was_closed, (name, status, was_closed)


# --- slow and idle clients ------------------------------------------------------------------------------


async def test_slowloris(server: Server) -> None:
    """Headers a byte a second, and a body a byte a second: cut off at idle_timeout / body_timeout."""
    clients = 40
    header_clients: list[tuple[float, int, bool, bool]] = []  # (after s, bytes sent, answered, closed)
    body_clients: list[tuple[int | None, float]] = []
    head = request_head(server, {"Content-Length": "100", "X-ThunderStack-Signature": "AAAA", "X-Pad": "p" * 100})

    async def slow_headers() -> None:
        reader, writer = await connect(server)
        started = time.monotonic()
        sent, answered, closed = 0, False, False
        try:
            for byte in head[:-4]:  # never finishes the headers
                if time.monotonic() - started > IDLE_TIMEOUT + 10:
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                sent += 1
                try:
                    data = await asyncio.wait_for(reader.read(1024), 1.0)  # a byte a second
                except TimeoutError:
                    continue
                answered, closed = bool(data), True
                break
        except ConnectionError:
            closed = True
        header_clients.append((time.monotonic() - started, sent, answered, closed))
        _close(writer)

    async def slow_body() -> None:
        reader, writer = await connect(server)
        writer.write(head)
        await writer.drain()
        started = time.monotonic()
        task = asyncio.create_task(timed(read_answer(reader, BODY_TIMEOUT + 10)))
        with contextlib.suppress(ConnectionError):
            for _ in range(100):
                if task.done():
                    break
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(1.0)
        answer, at = await task
        body_clients.append((answer.status if answer else None, at - started))
        _close(writer)

    async with valid_traffic(server, "slow") as valid:
        await asyncio.gather(*(slow_headers() for _ in range(clients)), *(slow_body() for _ in range(clients)))
    cut = [t for t, _, _, _ in header_clients]
    record("slowloris", tried=f"{clients} clients sending headers a byte a second (idle_timeout {IDLE_TIMEOUT:g} s) "
           f"and {clients} sending the body a byte a second (body_timeout {BODY_TIMEOUT:g} s)", times=2 * clients,
           outcome=f"header dribblers closed after {min(cut):.1f}-{max(cut):.1f} s having sent "
                   f"{max(b for _, b, _, _ in header_clients)} bytes at most; body dribblers answered "
                   f"{sorted({str(s) for s, _ in body_clients})} after "
                   f"{min(t for _, t in body_clients):.1f}-{max(t for _, t in body_clients):.1f} s; {valid.check()}")
    assert all(closed and not answered for _, _, answered, closed in header_clients), header_clients
    assert all(t < IDLE_TIMEOUT + 2.0 for t in cut), cut
    assert all(s == 408 and t < BODY_TIMEOUT + 1.5 for s, t in body_clients), body_clients


async def test_thousands_of_idle_connections(server: Server) -> None:
    soft = raise_nofile(8192)
    count = max(100, min(1500, soft - 400))
    fds_before = server.open_fds()
    rss_before = rss_mib(server.pid)
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    opened_at = time.monotonic()
    async with valid_traffic(server, "idle") as valid:
        for batch in range(0, count, 100):
            conns += await asyncio.gather(*(connect(server) for _ in range(min(100, count - batch))))
        open_for = time.monotonic() - opened_at
        fds_peak = server.open_fds()
        rss_peak = rss_mib(server.pid)
        closed = await asyncio.gather(*(closed_by_server(r, IDLE_TIMEOUT + 6) for r, _ in conns))
        closed_after = time.monotonic() - opened_at
    for _, w in conns:
        _close(w)
    await asyncio.sleep(0.5)
    fds_after = server.open_fds()
    record("thousands of idle connections", tried=f"{count} TCP connections opened in {open_for:.1f} s that never "
           f"send a byte (open-file limit {soft}; idle_timeout {IDLE_TIMEOUT:g} s)", times=count,
           outcome=f"{sum(closed)} closed by the server within {closed_after:.1f} s of the first; server fds "
                   f"{fds_before} -> {fds_peak} -> {fds_after}, RSS {rss_before:.0f} -> {rss_peak:.0f} MiB; "
                   f"{valid.check()}")
    assert all(closed), f"{closed.count(False)} idle connections left open"
    assert fds_after <= fds_before + 10
    assert server.alive()


async def test_idle_connections_past_the_open_file_limit(
        tmp_path: Path, signing_key: rsa.RSAPrivateKey) -> None:
    """Under an open-file limit of 256 (soft and hard: it cannot raise it), 600 connections that never
    send a byte: the listener sheds the longest-idle ones to stay under its cap, so valid senders are
    answered throughout, and it says so once, not with a traceback per failed accept."""
    raise_nofile(4096)
    key_file = tmp_path / "thunderstack.pem"
    key_file.write_bytes(public_pem(signing_key))
    cfg = base_config(tmp_path, key_file, server={"idle_timeout": "60s"}, routes=[{"name": "all", "to": ["console"]}])
    proc = BridgeProcess(tmp_path / "bridge", cfg, signing_key)
    proc.nofile = 256
    await proc.start()
    assert proc.proc is not None
    host, _, port = cfg["server"]["listen"].rpartition(":")
    server = Server(proc, signing_key, host, int(port))
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        async with valid_traffic(server, "fdcap") as valid:
            for _ in range(6):
                conns += await asyncio.gather(*(connect(server) for _ in range(100)))
                await asyncio.sleep(0.2)
            fds_peak = server.open_fds()
            await asyncio.sleep(1.0)
        shed = sum(await asyncio.gather(*(closed_by_server(r, 0.2) for r, _ in conns)))
        log = proc.log()
        assert valid.check()
        assert fds_peak <= 256 and server.alive()
        assert "out of system resource" not in log and "Traceback" not in log, log[-2000:]
        assert 1 <= log.count("webhook listener at its limit of 192 connections") <= 2, log[-2000:]
        record("idle connections past the open-file limit",
               tried="600 TCP connections that never send a byte, open-file limit 256 (soft and hard)", times=600,
               outcome=f"{shed} of the oldest shed to stay under the cap (192), server fds at most {fds_peak}; "
                       f"one warning in the log; {valid.check()}")
    finally:
        for _, w in conns:
            _close(w)
        proc.kill()


# --- replays ---------------------------------------------------------------------------------------------


async def test_replayed_event_alerts_once(tmp_path: Path, signing_key: rsa.RSAPrivateKey) -> None:
    """The same signed bytes, sent again inside and after dedup_ttl, alert once (issue 11.3).

    The replay window is max_event_age + max_clock_skew: inside it a copy is a duplicate (dedup_ttl
    must cover it, which check enforces), after it a copy is stale. With no age limit
    (max_event_age: 0) nothing would cover it, so check refuses that."""
    key_file = tmp_path / "thunderstack.pem"
    key_file.write_bytes(public_pem(signing_key))
    async with WebhookSink() as sink:
        cfg = base_config(tmp_path, key_file, verification={"max_event_age": "1s", "max_clock_skew": "1s"},
                          storage={"url": f"sqlite://{tmp_path}/bridge.db", "dedup_ttl": "2s"},
                          receivers={"hook": {"type": "webhook", "url": sink.url}},
                          routes=[{"name": "all", "to": ["hook"]}])
        refused = {**cfg, "verification": {**cfg["verification"], "max_event_age": 0}}
        proc = BridgeProcess(tmp_path / "bridge", refused, signing_key)
        check = subprocess.run([sys.executable, "-m", "bridge", "check", "-c", str(proc.config_path)],
                               cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert check.returncode == 2, check
        assert "verification.max_event_age: 0 (no age limit) lets a captured event alert again" in check.stderr
        assert "Traceback" not in check.stderr

        proc.write_config(cfg)
        await proc.start()
        try:
            body = event_body("replayed", "FAILED")  # timestamped now
            answers = [(await proc.post(body))[:2]]
            answers.append((await proc.post(body))[:2])  # at once: a duplicate
            await asyncio.sleep(3.0)  # past dedup_ttl (2s) and the age limit: the copy is stale now
            answers.append((await proc.post(body))[:2])
            assert [status for status, _ in answers] == [200, 200, 200]
            assert answers[1][1]["status"] == "duplicate"
            assert answers[2][1] == {"status": "ignored", "reason": "stale", "id": answers[1][1]["id"]}
            status, _ = await proc.event("sentinel", "FAILED")  # delivered after whatever came before it
            assert status == 200
            await wait_until(lambda: any(b"sentinel" in r.body for r in sink.delivered), 20, "the sentinel alert")
            replayed = [r for r in sink.delivered if b"replayed" in r.body]
        finally:
            proc.kill()
    assert len(replayed) == 1
    record("replayed signed event", tried="the same signed bytes 3 times: at once, and after dedup_ttl "
           "(max_event_age 1s, max_clock_skew 1s, dedup_ttl 2s); check with max_event_age 0", times=3,
           outcome="one alert: the copy inside the window is a duplicate, the copy after it stale; "
           "check refuses max_event_age 0", sent=3, accepted=1, delivered={"hook": 1}, twice=0, lost=0)


# --- a future-dated event (issue 11): it may not mute its node beyond max_clock_skew --------------------


async def test_far_future_event_hides_nothing_that_comes_after_it(
    tmp_path: Path, signing_key: rsa.RSAPrivateKey, webhook_sink: WebhookSink
) -> None:
    """A FAILED pages; a copy dated 9999 arrives (an upstream clock bug); the real RUNNING right after
    still resolves, and the node goes on notifying: a far-future event hides no event sent after it."""
    key_file = tmp_path / "thunderstack.pem"
    key_file.write_bytes(public_pem(signing_key))
    cfg = base_config(tmp_path, key_file, verification={"public_key_file": str(key_file), "max_clock_skew": "5m"},
                      receivers={"hook": {"type": "webhook", "url": webhook_sink.url}},
                      routes=[{"name": "all", "to": ["hook"]}])
    proc = BridgeProcess(tmp_path / "bridge", cfg, signing_key)
    await proc.start()
    try:
        seen = []
        for status_name, timestamp in (("FAILED", None), ("FAILED", "9999-12-31T23:59:59Z"), ("RUNNING", None),
                                       ("FAILED", None), ("RUNNING", None)):
            await asyncio.sleep(0.01)  # distinct event times
            status, doc, _ = await proc.post(event_body("skewed", status_name, timestamp=timestamp))
            seen.append((status, doc["status"], doc["deliveries"], "note" in doc))
        # the far-future copy is a repeat of FAILED: recorded, quiet; nothing after it is out of order
        assert seen == [(200, "accepted", 1, False), (200, "accepted", 0, False)] + [(200, "accepted", 1, False)] * 3
        await webhook_sink.wait_for(4, timeout=20)
        kinds = [json.loads(r.body)["kind"] for r in webhook_sink.delivered]
        assert kinds == ["firing", "resolved", "firing", "resolved"], kinds
        # A FAILED dated 9999 opens an incident; the RUNNING sent right after it, dated a moment
        # before it arrived, resolves it (not "older than the node's newest").
        failed = event_body("skewed-2", "FAILED", timestamp="9999-12-31T23:59:59Z")
        running = event_body("skewed-2", "RUNNING", timestamp=datetime.now(UTC) - timedelta(seconds=0.3))
        for body in (failed, running):
            status, doc, _ = await proc.post(body)
            assert (status, doc["status"], doc["deliveries"], "note" in doc) == (200, "accepted", 1, False), doc
        await webhook_sink.wait_for(6, timeout=20)
        kinds = [json.loads(r.body)["kind"] for r in webhook_sink.delivered]
        assert kinds[4:] == ["firing", "resolved"], kinds
    finally:
        proc.kill()
    record("A 9999-12-31 event among correctly dated ones of the same node",
           tried="FAILED, a FAILED dated 9999-12-31, then RUNNING, FAILED, RUNNING (max_clock_skew 5m); on another "
                 "node a FAILED dated 9999-12-31, then a RUNNING dated 0.3 s before it arrived", times=1,
           outcome="the far-future copy is a quiet repeat; every later event notified: firing, resolved, firing, "
                   "resolved; the far-future FAILED pages and the RUNNING right after it resolves",
           sent=7, accepted=7, delivered={"hook": 6}, lost=0, twice=0)
