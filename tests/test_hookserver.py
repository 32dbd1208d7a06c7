"""The webhook listener's HTTP over raw sockets: framing, keep-alive, pipelining, routes and limits.

Abuse at scale (slowloris, bombs, thousands of idle connections) is test_protocol_abuse.py's, against
the real process; these are the protocol's ordinary corners, each one request or a few.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.http1 import LINGER, PIPELINE, SLICE, Connection
from bridge.testing import event_body, sign
from tests.support.fakes import make_cert
from tests.support.rawhttp import RawAnswer, closed_by_server, read_answer, request

pytestmark = [pytest.mark.timeout(30), pytest.mark.both_loops]


def signed(b: Any, node: str, status: str = "FAILED", path: str = "/webhook", **headers: str) -> bytes:
    body = event_body(node, status)
    return request("POST", path, {"X-ThunderStack-Signature": sign(body, b.key), **headers}, body)


async def exchange(b: Any, data: bytes, answers: int = 1, *, half_close: bool = False,
                   head_only: bool = False, wait: float = 0.5) -> tuple[list[RawAnswer | None], bool]:
    """Write ``data`` on one connection, read ``answers`` answers, and whether the server then closed
    within ``wait`` seconds (a refusal's linger is LINGER)."""
    host, _, port = b.base_url.removeprefix("http://").rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data)
        if half_close:
            writer.write_eof()
        await writer.drain()
        got = [await read_answer(reader, 5.0, head_only=head_only) for _ in range(answers)]
        return got, await closed_by_server(reader, wait)
    finally:
        writer.close()


async def test_pipelined_requests_are_answered_in_order(bridge: Callable[..., Any]) -> None:
    b = await bridge()
    data = b"".join(signed(b, f"pipe-{i}") for i in range(20)) + request("GET", "/healthz")
    got, closed = await exchange(b, data, 21)
    assert [a.status for a in got if a] == [200] * 21 and not closed
    nodes = []
    for a in got[:20]:
        assert a is not None
        doc = json.loads(a.body)
        assert doc["status"] == "accepted", doc
        nodes.append(doc["id"])
    # Each answer is its own request's: the ids follow the order the events were sent in.
    status, stored = await b.get(b.admin_url + "/api/v1/nodes")
    assert status == 200 and {n["node"] for n in stored["nodes"]} >= {f"pipe-{i}" for i in range(20)}
    assert json.loads(got[20].body) == {"status": "ok"}  # type: ignore[union-attr]
    assert len(set(nodes)) == 20


async def test_keep_alive_and_its_ends(bridge: Callable[..., Any]) -> None:
    b = await bridge()
    (a,), closed = await exchange(b, signed(b, "ka-1"))
    assert a is not None and a.status == 200 and not closed and "connection" not in a.headers
    assert a.headers["content-type"] == "application/json; charset=utf-8" and "date" in a.headers
    (a,), closed = await exchange(b, signed(b, "ka-2", Connection="close"))
    assert a is not None and a.status == 200 and a.headers["connection"] == "close" and closed
    body = event_body("ka-3", "FAILED")
    (a,), closed = await exchange(b, request("POST", "/webhook", {"X-ThunderStack-Signature": sign(body, b.key)},
                                             body, version="HTTP/1.0"))
    assert a is not None and a.status == 200 and closed, "HTTP/1.0 without keep-alive closes after the answer"
    body = event_body("ka-4", "FAILED")
    headers = {"X-ThunderStack-Signature": sign(body, b.key), "Connection": "keep-alive"}
    (a,), closed = await exchange(b, request("POST", "/webhook", headers, body, version="HTTP/1.0"))
    assert a is not None and a.status == 200 and a.headers["connection"] == "keep-alive" and not closed
    (a,), closed = await exchange(b, b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n", wait=LINGER + 1)
    assert a is not None and a.status == 505 and "HTTP/2.0" in json.loads(a.body)["detail"] and closed
    # A client that sends its event and half-closes still gets the answer.
    (a,), closed = await exchange(b, signed(b, "ka-4"), half_close=True)
    assert a is not None and a.status == 200 and json.loads(a.body)["status"] == "accepted" and closed


async def test_expect_100_continue(bridge: Callable[..., Any]) -> None:
    b = await bridge(server={"max_body_bytes": 4096})
    body = event_body("expect-1", "FAILED")
    head = request("POST", "/webhook", {"X-ThunderStack-Signature": sign(body, b.key), "Expect": "100-continue",
                                        "Content-Length": str(len(body))})
    host, _, port = b.base_url.removeprefix("http://").rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head)
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(body)
        a = await read_answer(reader, 5.0)
        assert a is not None and a.status == 200 and json.loads(a.body)["status"] == "accepted"
    finally:
        writer.close()
    # Too large for the limit: 413 instead of 100, and the body is never read.
    (a,), closed = await exchange(b, request("POST", "/webhook", {"Expect": "100-continue",
                                                                  "Content-Length": "100000"}), wait=LINGER + 1)
    assert a is not None and a.status == 413 and json.loads(a.body)["error"] == "body_too_large" and closed


async def test_routes_methods_and_node_paths(bridge: Callable[..., Any]) -> None:
    b = await bridge()
    cases: list[tuple[bytes, int, str | None]] = [
        (request("GET", "/webhook"), 405, "method_not_allowed"),
        (request("POST", "/healthz", body=b"{}"), 405, "method_not_allowed"),
        (request("GET", "/nowhere"), 404, "not_found"),
        (request("GET", "/webhook/a/b"), 404, "not_found"),
        (request("GET", "/webhook/"), 404, "not_found"),
        (signed(b, "x", path="/webhook/%ff"), 400, "bad_request"),
        (signed(b, "node a", path="/webhook/node%20a"), 200, None),
        (signed(b, "n{1}", path="/webhook/n%7B1%7D"), 200, None),
        (signed(b, "node-b", path="/webhook/node-c"), 403, "node_rejected"),
        (signed(b, "q-1", path="/webhook?x=1"), 200, None),
        (signed(b, "abs-1", path="http://127.0.0.1/webhook"), 200, None),  # absolute-form, as proxies send
        (signed(b, "abs-2", path="http://127.0.0.1/webhook/abs-2"), 200, None),
        (request("GET", "http://127.0.0.1/healthz"), 200, None),
        (request("OPTIONS", "*"), 404, "not_found"),
    ]
    # Each on its own connection, all at once (an exchange waits to see whether the server closes).
    answers = await asyncio.gather(*(exchange(b, data) for data, _, _ in cases))
    for (data, status, code), ((a,), _) in zip(cases, answers, strict=True):
        assert a is not None and a.status == status, (data[:60], a)
        doc = json.loads(a.body)
        assert doc.get("error") == code, (data[:60], doc)
        if status == 405:
            assert a.headers["allow"] in ("POST", "GET,HEAD")
    (a,), _ = await exchange(b, request("HEAD", "/healthz"), head_only=True)
    assert a is not None and a.status == 200 and int(a.headers["content-length"]) > 0


async def test_framing_limits(bridge: Callable[..., Any]) -> None:
    b = await bridge()
    refused = LINGER + 1  # a refusal closes the connection after its linger

    # Each refusal on its own connection, all at once: every one waits out its linger.
    async def refuse(data: bytes, *, head_only: bool = False) -> tuple[RawAnswer, dict[str, Any]]:
        (a,), closed = await exchange(b, data, head_only=head_only, wait=refused)
        assert a is not None and closed, data[:40]
        return a, json.loads(a.body) if a.body else {}

    upgrade = signed(b, "up-1", Connection="Upgrade", Upgrade="h2c") + b"\x81\x05hello"
    got = await asyncio.gather(
        refuse(request("POST", "/webhook", {f"X-H{i}": "v" for i in range(101)}, b"{}")),
        refuse(request("GET", "/webhook?" + "q" * 9000)),
        # An upgrade is refused: llhttp would hand the body to the new protocol (an event read as empty).
        refuse(upgrade),
        # The head's limit holds when it arrives in one read, and the request line's too.
        refuse(request("GET", "/healthz", {"X-Big": "a" * 17_000})),
        refuse(b"GET /healthz HTTP/1.1\r\n\r\n"),
        refuse(request("GET", "/healthz", {"Expect": "something"})),
        refuse(request("HEAD", "/nope", {"Content-Length": "5"}, b"hello"), head_only=True),
        # An HTTP/2 client with prior knowledge is told which version to speak.
        refuse(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"),
        refuse(b"GARBAGE\r\n\r\n"),
    )
    assert [a.status for a, _ in got] == [431, 414, 400, 431, 400, 417, 404, 505, 400]
    assert "Upgrade" in got[2][1]["detail"]
    assert "Host" in got[4][1]["detail"]
    assert "HTTP/1.1" in got[7][1]["detail"]
    assert got[8][1]["error"] == "bad_request"
    # A refused request with a body is answered before the body is read, then the connection closes.
    (a,), _ = await exchange(b, request("POST", "/nowhere", {"Content-Length": "10"}, b"0123456789"))
    assert a is not None and a.status == 404 and a.headers["connection"] == "close"


async def test_a_chunked_body_within_the_limit_when_allowed(bridge: Callable[..., Any]) -> None:
    b = await bridge(server={"accept_chunked": True, "max_body_bytes": 4096})
    body = event_body("chunk-1", "FAILED")
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 7]), body[i:i + 7]) for i in range(0, len(body), 7))
    data = request("POST", "/webhook", {"X-ThunderStack-Signature": sign(body, b.key),
                                        "Transfer-Encoding": "chunked"}) + chunks + b"0\r\n\r\n"
    (a,), closed = await exchange(b, data)
    assert a is not None and a.status == 200 and json.loads(a.body)["status"] == "accepted" and not closed
    big = b"1000\r\n" + b" " * 4096 + b"\r\n" + b"1\r\n \r\n0\r\n\r\n"
    (a,), closed = await exchange(b, request("POST", "/webhook", {"Transfer-Encoding": "chunked"}) + big,
                                 wait=LINGER + 1)
    assert a is not None and a.status == 413 and closed


async def test_a_refusal_behind_pipelined_events_keeps_their_order(bridge: Callable[..., Any]) -> None:
    """An event, then a request refused on its head: the event's answer comes first, then the refusal."""
    b = await bridge(server={"max_body_bytes": 4096})
    data = signed(b, "order-1") + signed(b, "order-2") + request("POST", "/webhook", {"Content-Length": "100000"})
    got, closed = await exchange(b, data, 3, wait=LINGER + 1)
    assert [a.status if a else None for a in got] == [200, 200, 413] and closed
    assert [json.loads(a.body).get("status") for a in got[:2] if a] == ["accepted", "accepted"]


async def test_the_webhook_at_the_root_path_keeps_the_probes(bridge: Callable[..., Any]) -> None:
    """``path: /`` makes every one-segment path a node's: GET /healthz stays the probe."""
    b = await bridge(server={"path": "/"})
    (a,), _ = await exchange(b, request("GET", "/healthz"))
    assert a is not None and a.status == 200 and json.loads(a.body) == {"status": "ok"}
    (a,), _ = await exchange(b, request("GET", "/readyz"))
    assert a is not None and a.status == 200 and json.loads(a.body) == {"status": "ready"}
    (a,), _ = await exchange(b, signed(b, "root-1", path="/"))
    assert a is not None and a.status == 200 and json.loads(a.body)["status"] == "accepted"
    (a,), _ = await exchange(b, signed(b, "root-2", path="/root-2"))
    assert a is not None and a.status == 200 and json.loads(a.body)["status"] == "accepted"


def _hold_write_lock(db: Path, seconds: float) -> threading.Thread:
    """Storage slow to answer: another connection holds SQLite's write lock for ``seconds``."""
    ready = threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        ready.set()
        time.sleep(seconds)
        conn.execute("COMMIT")
        conn.close()

    t = threading.Thread(target=hold, daemon=True)
    t.start()
    ready.wait(5)
    return t


def _db(b: Any) -> Path:
    return Path(b.config.storage.url.removeprefix("sqlite://"))


async def test_slow_answers_keep_their_place_and_stop_no_clock(bridge: Callable[..., Any]) -> None:
    """While earlier answers wait on slow storage, a later refusal waits its turn (it used to close the
    connection after LINGER with nothing answered), and a body paused behind them gets no 408."""
    b = await bridge(server={"max_body_bytes": 4096, "body_timeout": "1s"})
    held = _hold_write_lock(_db(b), LINGER + 1.0)
    data = signed(b, "slow-1") + request("POST", "/webhook", {"Content-Length": "100000"})
    got, closed = await exchange(b, data, 2, wait=LINGER + 1)
    held.join()
    assert [a.status if a else None for a in got] in ([200, 413], [503, 413]) and closed

    held = _hold_write_lock(_db(b), 2.0)  # twice body_timeout
    pipelined = b"".join(signed(b, f"paused-{i}") for i in range(PIPELINE))
    last = signed(b, "paused-last")
    host, _, port = b.base_url.removeprefix("http://").rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(pipelined + last[:-20])
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(last[-20:])
        statuses = [a.status if a else None for a in [await read_answer(reader, 10.0) for _ in range(PIPELINE + 1)]]
    finally:
        writer.close()
        held.join()
    assert 408 not in statuses and None not in statuses, statuses


async def test_a_client_that_reads_no_answers_is_paused_then_dropped(bridge: Callable[..., Any]) -> None:
    """Pipelined requests from a client that never reads: reading stops once its answers fill the
    buffer (memory stays bounded), and after idle_timeout without reading it is cut off."""
    b = await bridge(server={"idle_timeout": "1s"})
    host, _, port = b.base_url.removeprefix("http://").rpartition(":")
    _reader, writer = await asyncio.open_connection(host, int(port), limit=1024)
    one = request("GET", "/healthz")
    sent = 0

    async def flood() -> None:
        nonlocal sent
        with contextlib.suppress(ConnectionError):
            while sent < 20_000_000:
                writer.write(one * 2000)
                await writer.drain()
                sent += len(one) * 2000

    task = asyncio.create_task(flood())
    await asyncio.sleep(0.5)
    buffered = sum(c.transport.get_write_buffer_size() for c in b.app._hook.connections if c.transport)
    assert buffered < 1 << 20, f"{buffered} bytes of answers buffered for a client that reads none"
    assert not task.done() and sent < 10_000_000, "the server kept reading requests whose answers nobody reads"
    # Reading nothing for idle_timeout: the server resets the connection, which ends the flood.
    await asyncio.wait_for(task, 5.0)
    assert not b.app._hook.connections, "a client that reads nothing was never dropped"
    writer.close()


async def test_trailers_are_bounded(bridge: Callable[..., Any]) -> None:
    b = await bridge(server={"accept_chunked": True, "max_body_bytes": 4096})
    head = request("POST", "/webhook", {"Transfer-Encoding": "chunked"}) + b"1\r\na\r\n0\r\nX-Big: "
    (a,), closed = await exchange(b, head + b"a" * 2_000_000, wait=LINGER + 1)
    assert a is not None and a.status in (413, 431) and closed


async def test_tls_handshake_within_idle_timeout(bridge: Callable[..., Any], tmp_path: Path) -> None:
    cert = make_cert(tmp_path / "tls")
    b = await bridge(server={"idle_timeout": "1s", "tls": {"cert_file": str(cert.cert_file),
                                                           "key_file": str(cert.key_file)}})
    host, _, port = b.base_url.removeprefix("http://").rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))  # TCP only: no ClientHello
    started = time.monotonic()
    assert await closed_by_server(reader, 10.0)
    assert time.monotonic() - started < 5.0
    writer.close()


async def _pair(b: Any) -> tuple[Connection, socket.socket]:
    """A Connection of the running listener over a real socket pair; the other end for the test."""
    ours, theirs = socket.socketpair()
    _, conn = await asyncio.get_running_loop().connect_accepted_socket(lambda: Connection(b.app._hook), ours)
    theirs.setblocking(False)
    return conn, theirs


async def test_one_read_of_many_requests_is_parsed_a_slice_at_a_time(bridge: Callable[..., Any]) -> None:
    """A read carrying thousands of pipelined requests queues about PIPELINE of them; the rest waits
    unparsed, and all are answered in order as the queue drains."""
    b = await bridge()
    conn, theirs = await _pair(b)
    one = request("GET", "/healthz")
    count = 262_144 // len(one)
    conn.data_received(one * count)  # what the transport does with one read of 256 KiB
    assert len(conn.queue) <= PIPELINE + SLICE // len(one) + 1, len(conn.queue)
    assert conn.held and conn.paused
    got = b""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while got.count(b"HTTP/1.1 200 OK") < count and loop.time() < deadline:
        with contextlib.suppress(BlockingIOError):
            got += theirs.recv(1 << 20)
        await asyncio.sleep(0.001)
    assert got.count(b"HTTP/1.1 200 OK") == count and b"HTTP/1.1 4" not in got
    assert not conn.held and not conn.paused and len(conn.queue) == 0
    theirs.close()


async def test_reading_resumes_when_the_client_catches_up(bridge: Callable[..., Any]) -> None:
    """A full write buffer with nothing being answered (a 100 Continue did it) pauses reading; when
    the transport says the client caught up, reading resumes (it used to stay paused: a false 408)."""
    b = await bridge()
    conn, theirs = await _pair(b)
    assert conn.transport is not None
    conn.pause_writing()
    assert conn.paused and not conn.transport.is_reading()
    conn.resume_writing()
    assert not conn.paused and conn.transport.is_reading()
    theirs.close()


async def test_a_refusal_behind_a_paused_pipeline_drains_then_closes_cleanly(bridge: Callable[..., Any]) -> None:
    """PIPELINE events wait on slow storage (reading paused), then a request refused on its head
    whose body keeps coming: after the answers the body is read and dropped during LINGER, and the
    connection ends with a FIN, not a reset (a reset can destroy answers still in flight)."""
    b = await bridge(server={"max_body_bytes": 4096})
    held = _hold_write_lock(_db(b), 1.5)
    host, _, port = b.base_url.removeprefix("http://").rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"".join(signed(b, f"drain-{i}") for i in range(PIPELINE))
                     + request("POST", "/webhook", {"Content-Length": "300000"}) + b" " * 100_000)
        await writer.drain()
        statuses = [a.status if a else None for a in [await read_answer(reader, 10.0) for _ in range(PIPELINE + 1)]]
        assert statuses[-1] == 413 and set(statuses[:-1]) <= {200, 503}, statuses
        writer.write(b" " * 10_000)  # the body goes on: unread at the close, it would make a reset
        await writer.drain()
        ended = "open"
        try:
            ended = "eof" if not await asyncio.wait_for(reader.read(), LINGER + 3) else "data"
        except ConnectionResetError:
            ended = "reset"
        assert ended == "eof", ended
    finally:
        writer.close()
        held.join()


async def test_http_1_0_expectations_are_ignored(bridge: Callable[..., Any]) -> None:
    b = await bridge()
    body = event_body("old-1", "FAILED")
    data = request("POST", "/webhook", {"X-ThunderStack-Signature": sign(body, b.key), "Expect": "100-continue"},
                   body, version="HTTP/1.0")
    (a,), _ = await exchange(b, data)
    assert a is not None and a.status == 200, "HTTP/1.0 gets no 100 Continue: the first answer is the 200"


async def test_a_stop_answers_what_is_queued_and_reads_nothing_new(bridge: Callable[..., Any]) -> None:
    b = await bridge()
    conn, theirs = await _pair(b)
    conn.data_received(request("GET", "/healthz"))
    stopping = asyncio.create_task(b.app._hook.stop(2.0))
    await asyncio.sleep(0)
    assert conn.paused and conn.closing, "a stopping listener kept reading requests"
    await stopping
    got = b""
    with contextlib.suppress(BlockingIOError):
        got = theirs.recv(65536)
    assert got.count(b"HTTP/1.1 200 OK") == 1  # answered (before or during the stop), then closed
    theirs.close()


async def test_a_refusal_after_a_head_request_keeps_its_body(bridge: Callable[..., Any]) -> None:
    b = await bridge()
    host, _, port = b.base_url.removeprefix("http://").rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request("HEAD", "/healthz") + b"GARBAGE\r\n\r\n")
        first = await read_answer(reader, 5.0, head_only=True)
        second = await read_answer(reader, 5.0)
        assert first is not None and first.status == 200
        assert second is not None and second.status == 400 and json.loads(second.body)["error"] == "bad_request"
    finally:
        writer.close()


async def _half_sent(b: Any, node: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """A connection with an event's head and the start of its body sent; the rest of the request."""
    host, _, port = b.base_url.removeprefix("http://").rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    data = signed(b, node)
    cut = data.index(b"\r\n\r\n") + 10
    writer.write(data[:cut])
    await writer.drain()
    await asyncio.sleep(0.1)
    return reader, writer, data[cut:]


async def test_a_stop_reads_a_body_already_arriving_to_its_end_and_nothing_after(bridge: Callable[..., Any]) -> None:
    """A rolling restart's SIGTERM lands while an event's body is on the wire: that event is read,
    recorded and answered (Connection: close); what the client pipelines after it is not read."""
    b = await bridge()
    reader, writer, rest = await _half_sent(b, "mid-body-1")
    stopping = asyncio.create_task(b.app._hook.stop(5.0))
    await asyncio.sleep(0.1)
    assert not stopping.done(), "the stop did not wait for a body that was arriving"
    writer.write(rest + signed(b, "mid-body-2"))
    await writer.drain()
    a = await read_answer(reader, 5.0)
    assert a is not None and a.status == 200 and a.headers["connection"] == "close"
    assert json.loads(a.body)["status"] == "accepted"
    assert await closed_by_server(reader, 2.0)
    await asyncio.wait_for(stopping, 5.0)
    writer.close()
    status, stored = await b.get(b.admin_url + "/api/v1/nodes")
    nodes = {n["node"] for n in stored["nodes"]}
    assert status == 200 and "mid-body-1" in nodes and "mid-body-2" not in nodes


async def test_a_stop_cuts_off_a_body_that_never_completes_at_its_grace(bridge: Callable[..., Any]) -> None:
    b = await bridge()
    reader, writer, _ = await _half_sent(b, "mid-body-3")
    await asyncio.wait_for(b.app._hook.stop(0.5), 5.0)
    assert await closed_by_server(reader, 2.0)
    writer.close()


async def test_a_stop_closes_a_connection_with_a_head_half_sent(bridge: Callable[..., Any]) -> None:
    """Only a body already arriving is waited for: a head not finished is not a request yet."""
    b = await bridge()
    host, _, port = b.base_url.removeprefix("http://").rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(signed(b, "mid-head")[:20])
    await writer.drain()
    await asyncio.sleep(0.1)
    await asyncio.wait_for(b.app._hook.stop(5.0), 1.0)  # no wait for its grace
    assert await closed_by_server(reader, 2.0)
    writer.close()


async def test_a_stop_behind_pipelined_answers_still_reads_the_body_arriving(bridge: Callable[..., Any]) -> None:
    b = await bridge()
    conn, theirs = await _pair(b)
    second = signed(b, "mid-body-4")
    cut = second.index(b"\r\n\r\n") + 10
    conn.data_received(signed(b, "mid-body-3b") + second[:cut])
    stopping = asyncio.create_task(b.app._hook.stop(5.0))
    await asyncio.sleep(0)  # the stop begins while the first event waits for its commit
    assert conn.task is not None and conn.closing, "the stop was meant to find an answer owed"
    await asyncio.sleep(0.1)
    conn.data_received(second[cut:] + signed(b, "mid-body-5"))
    await asyncio.wait_for(stopping, 5.0)
    got = b""
    with contextlib.suppress(BlockingIOError):
        got = theirs.recv(65536)
    theirs.close()
    assert got.count(b"HTTP/1.1 200 OK") == 2 and got.count(b"Connection: close") == 1, got
    assert got.rindex(b"Connection: close") > got.rindex(b"HTTP/1.1 200 OK")
    _, stored = await b.get(b.admin_url + "/api/v1/nodes")
    nodes = {n["node"] for n in stored["nodes"]}
    assert {"mid-body-3b", "mid-body-4"} <= nodes and "mid-body-5" not in nodes


async def test_a_quiet_tls_client_is_dropped_at_its_idle_timeout_without_errors(
        bridge: Callable[..., Any], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A TLS keep-alive client that goes quiet (never reads again, never answers close_notify) is
    closed at idle_timeout and cut off a linger later; the deadline sweep logs nothing."""
    import ssl

    cert = make_cert(tmp_path / "tls")
    b = await bridge(server={"idle_timeout": "1s", "tls": {"cert_file": str(cert.cert_file),
                                                           "key_file": str(cert.key_file)}})
    host, _, port = b.base_url.removeprefix("http://").rpartition(":")
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE

    def quiet_client() -> ssl.SSLSocket:
        s = ctx.wrap_socket(socket.create_connection((host, int(port))))
        s.sendall(request("GET", "/healthz"))
        assert b"200 OK" in s.recv(4096)
        return s

    clients = [await asyncio.to_thread(quiet_client) for _ in range(3)]
    hook = b.app._hook
    assert len(hook.connections) == 3
    deadline = time.monotonic() + 1 + LINGER + 3
    while hook.connections and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert not hook.connections, "quiet TLS clients were held past idle_timeout and the linger"
    assert not [r for r in caplog.records if r.levelname == "ERROR"], [r.getMessage() for r in caplog.records]
    for s in clients:
        s.close()


async def test_a_stop_s_last_answer_survives_what_the_client_sends_after_it(bridge: Callable[..., Any]) -> None:
    """The client pipelines more after the last body a stop reads, and reads its answer late: the
    answer is there (FIN, then what follows read and dropped), not lost to a reset."""
    b = await bridge()
    reader, writer, rest = await _half_sent(b, "mid-body-6")
    stopping = asyncio.create_task(b.app._hook.stop(5.0))
    await asyncio.sleep(0.1)
    body = b"x" * 300_000
    writer.write(rest + request("POST", "/webhook", {"X-ThunderStack-Signature": "AAAA"}, body))
    await asyncio.sleep(0.3)  # the answer waits unread while more arrives
    writer.write(b"y" * 100_000)
    a = await read_answer(reader, 5.0)
    assert a is not None and a.status == 200 and a.headers["connection"] == "close"
    writer.close()
    await asyncio.wait_for(stopping, 6.0)


async def test_a_stop_does_not_wait_for_a_body_the_client_cut_short(bridge: Callable[..., Any]) -> None:
    b = await bridge()
    conn, theirs = await _pair(b)
    second = signed(b, "mid-body-7")
    conn.data_received(signed(b, "mid-body-7a") + second[:second.index(b"\r\n\r\n") + 10])
    stopping = asyncio.create_task(b.app._hook.stop(5.0))
    await asyncio.sleep(0)
    theirs.shutdown(socket.SHUT_WR)  # half-closed mid-body: that body can never complete
    await asyncio.wait_for(stopping, 2.0)
    # The first event is answered and the connection closed. Its answer says Connection: close only
    # when the half-close was read before the answer was ready: which comes first is the scheduler's.
    got, ended = b"", False
    while not ended:
        try:
            chunk = theirs.recv(65536)
        except BlockingIOError:
            break  # still open: the assertion below says so
        got += chunk
        ended = not chunk
    theirs.close()
    assert got.count(b"HTTP/1.1 200 OK") == 1 and ended, got
