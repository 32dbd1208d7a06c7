"""The ingest contract, row by row, against the real server on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric import rsa

from bridge.testing import event_body, sign
from tests.support.harness import InProcessBridge
from tests.support.promtext import series as metric_value

NOW = datetime.now(UTC)


async def test_accepted_then_duplicate(bridge: Callable[..., Any]) -> None:
    b: InProcessBridge = await bridge()
    body = event_body("n1", "FAILED", timestamp=NOW)
    status, doc, _ = await b.post(body)
    assert status == 200 and doc["status"] == "accepted" and doc["id"].startswith("evt_")
    status, doc2, _ = await b.post(body)
    assert status == 200 and doc2 == {"status": "duplicate", "id": doc["id"]}


async def test_timestamp_spellings_are_one_event(bridge: Callable[..., Any]) -> None:
    b: InProcessBridge = await bridge()
    stamp = (NOW - timedelta(minutes=1)).replace(microsecond=0)
    base = stamp.strftime("%Y-%m-%dT%H:%M:%S")
    answers = []
    for spelling in (
        base + "Z",
        base + ".000Z",
        base + "+00:00",
        (stamp + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S") + "+02:00",
    ):
        status, doc = await b.event("n1", "FAILED", timestamp=spelling)
        assert status == 200
        answers.append(doc["status"])
    assert answers == ["accepted", "duplicate", "duplicate", "duplicate"]


async def test_stale_event_recorded_not_notified(bridge: Callable[..., Any]) -> None:
    b: InProcessBridge = await bridge(routes=[{"name": "all", "to": ["console"]}])
    status, doc = await b.event("n1", "FAILED", timestamp=NOW - timedelta(days=2))
    assert status == 200 and doc["status"] == "ignored" and doc["reason"] == "stale"
    assert (await b.app.store.stats(now=datetime.now(UTC))).pending == 0
    # the replay of a stale event is a duplicate, never a second record
    status, doc = await b.event("n1", "FAILED", timestamp=NOW - timedelta(days=2))
    assert doc["status"] == "duplicate"


async def test_future_event_accepted_and_flagged(bridge: Callable[..., Any], caplog: Any) -> None:
    b: InProcessBridge = await bridge()
    status, doc = await b.event("n1", "FAILED", timestamp=NOW + timedelta(hours=1))
    assert status == 200 and doc["status"] == "accepted"
    assert any("in the future" in r.getMessage() for r in caplog.records)


async def test_missing_signature_401(bridge: Callable[..., Any]) -> None:
    b: InProcessBridge = await bridge()
    status, doc, _ = await b.post(event_body(), signature=None)
    assert status == 401 and doc["error"] == "missing_signature"


async def test_invalid_signatures_403(bridge: Callable[..., Any], other_key: rsa.RSAPrivateKey) -> None:
    b: InProcessBridge = await bridge()
    body = event_body("n1", "FAILED", timestamp=NOW)
    good = sign(body, b.key)
    cases = {
        "other key": sign(body, other_key),
        "other body": sign(event_body("n1", "RUNNING", timestamp=NOW), b.key),
        "bad base64": "not*base64!",
        "truncated": good[:-8],
        "padded": good + "AAAA",
        "empty-ish": "====",
    }
    for what, sig in cases.items():
        status, doc, _ = await b.post(body, signature=sig)
        assert (status, doc["error"]) == (403, "invalid_signature"), what
    assert (await b.app.store.stats(now=datetime.now(UTC))).pending == 0


async def test_reserialized_signature_accepted(bridge: Callable[..., Any]) -> None:
    """ThunderStack's reference handler verifies JSON.stringify(parsed body): accept that form too."""
    b: InProcessBridge = await bridge()
    doc = json.loads(event_body("n1", "FAILED", timestamp=NOW))
    compact = json.dumps(doc, separators=(",", ":")).encode()
    pretty = json.dumps(doc, indent=2).encode()  # what goes over the wire
    status, reply, _ = await b.post(pretty, signature=sign(compact, b.key))
    assert status == 200 and reply["status"] == "accepted"


async def test_node_checks_403(bridge: Callable[..., Any]) -> None:
    b: InProcessBridge = await bridge(nodes={"node-a": {"labels": {"env": "prod"}}})
    status, doc = await b.event("node-b", "FAILED")
    assert (status, doc["error"]) == (403, "node_rejected")
    body = json.dumps(
        {
            "eventType": "NODE_STATUS_UPDATED",
            "eventTimestamp": NOW.isoformat(),
            "details": {"nodeId": "node-b", "status": "FAILED"},
            "nodeId": "node-a",
        }
    ).encode()
    status, doc, _ = await b.post(body)
    assert (status, doc["error"]) == (403, "node_rejected")
    status, doc = await b.event("node-a", "FAILED", path="/webhook/node-c")
    assert (status, doc["error"]) == (403, "node_rejected")
    status, doc = await b.event("node-a", "FAILED", path="/webhook/node-a")
    assert status == 200 and doc["status"] == "accepted"


async def test_not_json_400(bridge: Callable[..., Any]) -> None:
    b: InProcessBridge = await bridge()
    for body in (b"not json", b"[1,2]", b'"text"', b"\xff\xfe", b"[" * 60_000):
        status, doc, _ = await b.post(body)
        assert (status, doc["error"]) == (400, "invalid_json"), body[:10]


async def test_field_errors_422_name_the_field(bridge: Callable[..., Any]) -> None:
    b: InProcessBridge = await bridge()
    good = json.loads(event_body("n1", "FAILED", timestamp=NOW))
    cases: list[tuple[dict[str, Any], str]] = [
        ({k: v for k, v in good.items() if k != "eventType"}, "eventType"),
        ({**good, "eventTimestamp": "yesterday"}, "eventTimestamp"),
        ({**good, "eventTimestamp": "2026-04-16"}, "eventTimestamp"),
        ({**good, "nodeId": 7}, "nodeId"),
        ({**good, "details": "FAILED"}, "details"),
        ({**good, "details": {"nodeId": "n1"}}, "details.status"),
        ({**good, "details": {"status": "FAILED"}}, "details.nodeId"),
        ({**good, "nodeId": "x" * 300, "details": {"nodeId": "x" * 300, "status": "FAILED"}}, "nodeId"),
    ]
    for doc, field in cases:
        status, reply, _ = await b.post(json.dumps(doc).encode())
        assert status == 422, (field, reply)
        assert reply["error"] == "invalid_field" and reply["detail"].startswith(field + ":"), reply


async def test_unknown_status_and_type_accepted(bridge: Callable[..., Any]) -> None:
    b: InProcessBridge = await bridge()
    status, doc = await b.event("n1", "HIBERNATING", event_type="NODE_SOMETHING_NEW")
    assert status == 200 and doc["status"] == "accepted"
    assert metric_value(await b.metrics(), "alert_bridge_unknown_status_events_total") == 1.0


async def test_body_too_large_413(bridge: Callable[..., Any]) -> None:
    b: InProcessBridge = await bridge(server={"max_body_bytes": 1024})
    status, doc, _ = await b.post(b"{" + b" " * 5000 + b"}")
    assert (status, doc["error"]) == (413, "body_too_large")


async def test_body_without_content_length_411(bridge: Callable[..., Any]) -> None:
    """Chunked (no Content-Length): 411 with the JSON error body, the connection closed; even a
    validly signed event, which ThunderStack would have sent with its length."""
    b: InProcessBridge = await bridge(routes=[{"name": "all", "to": ["console"]}])
    body = event_body("n-chunked", "FAILED", timestamp=NOW)

    async def chunks() -> Any:  # aiohttp sends an async iterable chunked, without Content-Length
        for i in range(0, len(body), 7):
            yield body[i : i + 7]

    async with (
        aiohttp.ClientSession() as s,
        s.post(b.base_url + "/webhook", data=chunks(), headers={"X-ThunderStack-Signature": sign(body, b.key)}) as r,
    ):
        assert r.status == 411 and r.headers["Content-Type"].startswith("application/json")
        assert r.headers.get("Connection", "").lower() == "close"
        doc = await r.json()
    assert doc["error"] == "length_required" and "Content-Length" in doc["detail"]
    assert (await b.app.store.stats(now=datetime.now(UTC))).pending == 0
    assert metric_value(await b.metrics(), "alert_bridge_events_total", outcome="length_required") == 1
    status, accepted, _ = await b.post(body)  # the same bytes with their length
    assert status == 200 and accepted["status"] == "accepted"


async def test_a_chunked_body_is_read_when_the_operator_allows_it(bridge: Callable[..., Any]) -> None:
    """Behind a proxy that forwards requests chunked: ``server.accept_chunked: true``."""
    b: InProcessBridge = await bridge(routes=[{"name": "all", "to": ["console"]}], server={"accept_chunked": True})
    body = event_body("n-chunked", "FAILED", timestamp=NOW)

    async def chunks() -> Any:
        for i in range(0, len(body), 7):
            yield body[i : i + 7]

    async with (
        aiohttp.ClientSession() as s,
        s.post(b.base_url + "/webhook", data=chunks(), headers={"X-ThunderStack-Signature": sign(body, b.key)}) as r,
    ):
        assert r.status == 200 and (await r.json())["status"] == "accepted"


async def test_numbers_json_cannot_carry_are_refused(bridge: Callable[..., Any], webhook_sink: Any) -> None:
    """NaN and Infinity are not JSON (400, as any body that is not); a number past a double's range
    (JSON.parse makes it Infinity) is 422 naming its path. Neither is recorded or sent on. A huge
    integer is JSON: accepted, and delivered as the same JSON number."""
    b: InProcessBridge = await bridge(
        receivers={"hook": {"type": "webhook", "url": webhook_sink.url}},
        routes=[{"name": "all", "to": ["hook"]}])

    def body(node: str, extra: str) -> bytes:
        stamp = NOW.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        return (f'{{"eventType":"NODE_STATUS_UPDATED","eventTimestamp":"{stamp}",'
                f'"details":{{"nodeId":"{node}","status":"FAILED"{extra}}},"nodeId":"{node}"}}').encode()

    for literal in ("NaN", "Infinity", "-Infinity"):
        status, doc, _ = await b.post(body("n-nan", f',"v":{literal}'))
        assert (status, doc["error"]) == (400, "invalid_json"), (literal, doc)
        assert doc["detail"].startswith("body is not JSON: ") and literal in doc["detail"], doc
    for number, where in (("1e400", "details.v"), ("-1e400", "details.v"), ("[1, 2.5e308]", "details.v[1]"),
                          ("1" + "0" * 400 + ".5", "details.v")):
        status, doc, _ = await b.post(body("n-inf", f',"v":{number}'))
        assert (status, doc["error"]) == (422, "invalid_field"), (number, doc)
        assert doc["detail"].startswith(f"{where}: ") and "too large for a double" in doc["detail"], doc
    # An integer longer than Python reads (4,300 digits): refused as a field, not as "not JSON"
    status, doc, _ = await b.post(body("n-long", f',"v":[1,{"7" * 4301}]'))
    assert (status, doc["error"]) == (422, "invalid_field"), doc
    assert doc["detail"].startswith("details.v[1]: an integer longer than 4300 digits"), doc
    assert (await b.app.store.stats(now=datetime.now(UTC))).pending == 0

    huge = "9" * 4000
    status, doc, _ = await b.post(body("n-int", f',"v":{huge},"f":1.5e300,"tiny":1e-400'))
    assert status == 200 and doc["status"] == "accepted", doc
    [received] = await webhook_sink.wait_for(1, timeout=10)
    event = json.loads(received.body, parse_constant=_not_json)["event"]
    assert event["details"]["v"] == int(huge) and event["details"]["f"] == 1.5e300 and event["details"]["tiny"] == 0


def _not_json(name: str) -> Any:
    raise AssertionError(f"{name} in a body sent to a receiver")


async def test_no_key_yet_503_with_retry_after(bridge: Callable[..., Any], signing_key: rsa.RSAPrivateKey) -> None:
    # a key URL that is down: the bridge starts, says not ready, and asks ThunderStack to retry
    from tests.support.fakes import free_port

    url = f"http://127.0.0.1:{free_port()}/api/webhook-public-key"
    b: InProcessBridge = await bridge(verification={"public_key_url": url, "public_key_file": None})
    status, doc, headers = await b.post(event_body())
    assert status == 503 and doc["error"] == "unavailable" and int(headers["Retry-After"]) >= 1
    # the webhook port says not ready, and nothing of why (the key URL, the fetch error) to anyone
    status, ready = await b.get(b.base_url + "/readyz")
    assert status == 503 and ready["status"] == "not_ready" and "reason" not in ready
    assert "127.0.0.1" not in json.dumps(ready) and "Connect" not in json.dumps(ready)
    # the admin port keeps the reason for operators
    status, ready = await b.get(b.admin_url + "/readyz")
    assert status == 503 and "public key" in ready["reason"] and "Connect" in ready["reason"]


async def test_concurrent_duplicates_exactly_one_accepted(bridge: Callable[..., Any]) -> None:
    b: InProcessBridge = await bridge(routes=[{"name": "all", "to": ["console"]}])
    body = event_body("n1", "FAILED", timestamp=NOW)
    sig = sign(body, b.key)
    results = await asyncio.gather(*(b.post(body, signature=sig) for _ in range(50)))
    statuses = sorted(doc["status"] for _, doc, _ in results)
    assert statuses.count("accepted") == 1 and statuses.count("duplicate") == 49
    assert all(code == 200 for code, _, _ in results)


async def test_health_endpoints(bridge: Callable[..., Any]) -> None:
    b: InProcessBridge = await bridge()
    assert (await b.get(b.base_url + "/healthz"))[0] == 200
    assert (await b.get(b.base_url + "/readyz")) == (200, {"status": "ready"})
    # admin endpoints are not on the webhook listener
    assert (await b.get(b.base_url + "/metrics"))[0] == 404
    assert (await b.get(b.admin_url + "/metrics"))[0] == 200


async def test_wrong_method_and_path_are_json(bridge: Callable[..., Any]) -> None:
    b: InProcessBridge = await bridge()
    status, doc = await b.get(b.base_url + "/webhook")
    assert status == 405 and doc["error"] == "method_not_allowed"
    status, doc = await b.get(b.base_url + "/nope")
    assert status == 404 and doc["error"] == "not_found"


async def test_outbox_admin_api(bridge: Callable[..., Any]) -> None:
    b: InProcessBridge = await bridge(routes=[{"name": "all", "to": ["console"]}])
    await b.event("n1", "FAILED")
    async with aiohttp.ClientSession() as s:
        async with s.get(b.admin_url + "/-/deliveries?state=bogus") as r:
            assert r.status == 400 and (await r.json())["error"] == "invalid_state"
        async with s.post(b.admin_url + "/-/deliveries/retry", json={"ids": "dlv_x"}) as r:
            assert r.status == 400 and (await r.json())["error"] == "invalid_request"
        async with s.post(b.admin_url + "/-/deliveries/retry", json={"dead": True}) as r:
            assert r.status == 200 and (await r.json()) == {"retried": 0, "skipped": [], "more": False}
        async with s.get(b.admin_url + "/-/deliveries?limit=5") as r:
            [row] = (await r.json())["deliveries"]
            assert row["node"] == "n1" and row["receiver"] == "console" and row["id"].startswith("dlv_")
    # the outbox API is not on the webhook listener
    assert (await b.get(b.base_url + "/-/deliveries"))[0] == 404


async def test_no_event_is_decided_before_the_stored_silences_are_read(
    make_config: Callable[..., dict[str, Any]], signing_key: rsa.RSAPrivateKey,
) -> None:
    """A start reads the silences before it decides anything; until then (storage slow to answer),
    events get 503 and are retried, rather than paging what a stored silence covers."""
    from bridge.config import parse
    from bridge.ingest import Ingest, Rules
    from bridge.keys import KeyManager
    from bridge.metrics import Metrics
    from bridge.store import open_store

    cfg = parse({**make_config(routes=[{"name": "all", "to": ["console"]}]), "storage": {"url": "memory://"}}, env={})
    store = open_store(cfg.storage.url)
    await store.open()
    keys = KeyManager(cfg, store=store, session=None)  # type: ignore[arg-type]  # a key file: no fetch
    await keys.start()
    ingest = Ingest(Rules.from_config(cfg), store=store, keys=keys, metrics=Metrics(), store_silences=None)
    body = event_body("n1", "FAILED", timestamp=NOW)
    early = await ingest.handle(body, sign(body, signing_key))
    assert early.status == 503 and early.headers["Retry-After"] == "2" and "silences" in early.body["detail"]
    assert await store.node_state("n1") is None
    ingest.store_silences = ()
    assert (await ingest.handle(body, sign(body, signing_key))).status == 200
    await store.close()
