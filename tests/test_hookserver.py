"""The webhook listener's HTTP over raw sockets: framing, keep-alive, pipelining, routes and limits.

Abuse at scale (slowloris, bombs, thousands of idle connections) is test_protocol_abuse.py's, against
the real process; these are the protocol's ordinary corners, each one request or a few.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from bridge.hookserver import LINGER
from bridge.testing import event_body, sign
from tests.support.rawhttp import RawAnswer, closed_by_server, read_answer, request

pytestmark = pytest.mark.timeout(30)


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
    ]
    for data, status, code in cases:
        (a,), _ = await exchange(b, data)
        assert a is not None and a.status == status, (data[:60], a)
        doc = json.loads(a.body)
        assert doc.get("error") == code, (data[:60], doc)
        if status == 405:
            assert a.headers["allow"] in ("POST", "GET,HEAD")
    (a,), _ = await exchange(b, request("HEAD", "/healthz"), head_only=True)
    assert a is not None and a.status == 200 and int(a.headers["content-length"]) > 0


async def test_framing_limits(bridge: Callable[..., Any]) -> None:
    b = await bridge()
    too_many = request("POST", "/webhook", {f"X-H{i}": "v" for i in range(101)}, b"{}")
    (a,), closed = await exchange(b, too_many, wait=LINGER + 1)
    assert a is not None and a.status == 431 and closed
    (a,), closed = await exchange(b, request("GET", "/webhook?" + "q" * 9000), wait=LINGER + 1)
    assert a is not None and a.status == 414 and closed
    # An upgrade is declined: the request is answered as HTTP/1.1, then the connection closes.
    (a,), closed = await exchange(b, request("GET", "/healthz", {"Connection": "Upgrade", "Upgrade": "websocket"})
                                  + b"\x81\x05hello", wait=LINGER + 1)
    assert a is not None and a.status == 200 and a.headers["connection"] == "close" and closed
    (a,), closed = await exchange(b, b"GARBAGE\r\n\r\n", wait=LINGER + 1)
    assert a is not None and a.status == 400 and json.loads(a.body)["error"] == "bad_request" and closed
    # A refused request with a body is answered before the body is read, then the connection closes.
    (a,), closed = await exchange(b, request("POST", "/nowhere", {"Content-Length": "10"}, b"0123456789"))
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
