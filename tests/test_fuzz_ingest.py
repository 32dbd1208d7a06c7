"""Bad input at the webhook port of the real ``python -m bridge serve`` process (hypothesis).

Every property posts generated requests over real sockets and checks, for every single one:

- the answer is the one the README's ingest table gives (an oracle written from the table, not
  from the code), and never a 5xx;
- a refused request (any answer but 200) changed nothing in storage (row counts of the SQLite
  file, read through a read-only connection), and an accepted one changed exactly what it should;
- the server still answers ``/healthz`` afterwards.

Bodies are signed with the test key so they get past verification to validation (and some are
sent unsigned). Example counts are bounded so the module stays under a minute.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import gzip
import http.client
import json
import random
import string
import zlib
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from bridge.payload import MAX_FIELD_LENGTH, MAX_ID_LENGTH
from bridge.testing import public_pem, sign
from tests.support.harness import BridgeProcess, base_config
from tests.support.reliability import record
from tests.support.under_fire import db_counts, db_path

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.filterwarnings("ignore:Generating overly large repr"),
]

MAX_BODY = 256 * 1024  # room for 100,000 '[' to reach the JSON parser
FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                           HealthCheck.function_scoped_fixture],
)
JSON_ERRORS = {400: "invalid_json", 401: "missing_signature", 403: ("invalid_signature", "node_rejected"),
               422: "invalid_field", 413: "body_too_large"}


# --- the server under test ----------------------------------------------------------------------------


class Target:
    """The real bridge process and a plain http.client to talk to it (one connection per request)."""

    def __init__(self, proc: BridgeProcess, key: rsa.RSAPrivateKey) -> None:
        self.proc = proc
        self.key = key
        host, _, port = proc.cfg["server"]["listen"].rpartition(":")
        self.host, self.port = host, int(port)
        self.db = db_path(proc.cfg)
        self.node_ids: set[str] = set()  # every nodeId sent, to look for in /metrics afterwards
        self.labels_at_start: set[str] = set()

    def request(self, path: str, body: bytes, headers: list[tuple[str, str | bytes]],
                method: str = "POST") -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            names = {k.lower() for k, _ in headers}
            for k, v in headers:
                conn.putheader(k, v)
            if "content-length" not in names:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def metric_labels(self) -> set[str]:
        """Every label value in the admin listener's /metrics."""
        host, _, port = self.proc.cfg["server"]["admin_listen"].rpartition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode()
        finally:
            conn.close()
        return {value for family in text_string_to_metric_families(text) for sample in family.samples
                for value in sample.labels.values()}

    def healthy(self) -> bool:
        status, _ = self.request("/healthz", b"", [], method="GET")
        return status == 200

    def counts(self) -> dict[str, int]:
        c = db_counts(self.db)
        return {k: v for k, v in c.items() if not k.startswith("jobs_")}  # job states move as jobs are sent

    def post(self, body: bytes, *, sign_it: bool = True, signature: str | None = None, path: str = "/webhook",
             content_type: str | None = "application/json",
             extra: list[tuple[str, str | bytes]] | None = None) -> tuple[int, Any]:
        """Post and check the invariants every answer must hold; (status, parsed body)."""
        headers: list[tuple[str, str | bytes]] = []
        if content_type is not None:
            headers.append(("Content-Type", content_type))
        if signature is not None:
            headers.append(("X-ThunderStack-Signature", signature))
        elif sign_it:
            headers.append(("X-ThunderStack-Signature", sign(body, self.key)))
        headers += extra or []
        before = self.counts()
        status, raw = self.request(path, body, headers)
        after = self.counts()
        assert status < 500, f"{status} for {body[:120]!r}: {raw[:300]!r}"
        doc: Any = None
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = raw.decode("utf-8", "replace")
        if status == 200:
            assert isinstance(doc, dict) and doc.get("status") in ("accepted", "duplicate", "ignored"), doc
            grew = {k: after[k] - before[k] for k in after}
            if doc["status"] == "duplicate":
                assert grew["events"] == 0 and grew["jobs"] == 0, (doc, grew)
            else:
                assert grew["events"] == 1, (doc, grew)
                assert grew["jobs"] == doc.get("deliveries", 0), (doc, grew)
        else:
            assert after == before, f"refused with {status} but storage changed: {before} -> {after}"
            if isinstance(doc, dict) and status in JSON_ERRORS:  # our answers; aiohttp's own 400s are text
                want = JSON_ERRORS[status]
                assert set(doc) == {"error", "detail"} and doc["error"] in (want if isinstance(want, tuple)
                                                                           else (want,)), doc
        assert self.healthy(), "the server stopped answering"
        return status, doc


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory, signing_key: rsa.RSAPrivateKey) -> Iterator[Target]:
    tmp = tmp_path_factory.mktemp("fuzz")
    key_file = tmp / "thunderstack.pem"
    key_file.write_bytes(public_pem(signing_key))
    cfg = base_config(
        tmp, key_file,
        server={"max_body_bytes": MAX_BODY, "body_timeout": "10s"},
        storage={"url": f"sqlite://{tmp}/fuzz.db", "prune_interval": "24h"},
        routes=[{"name": "all", "to": ["console"]}],
    )
    proc = BridgeProcess(tmp / "bridge", cfg, signing_key)
    asyncio.run(proc.start())
    try:
        target = Target(proc, signing_key)
        target.labels_at_start = target.metric_labels()
        yield target
    finally:
        proc.kill()


# --- the oracle: what the README's table says ---------------------------------------------------------

REQUIRED = ("eventType", "eventTimestamp", "nodeId")


def _text_ok(value: Any, limit: int) -> bool:
    return (isinstance(value, str) and 0 < len(value) <= limit and "\x00" not in value
            and not any("\ud800" <= c <= "\udfff" for c in value))


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class _Overflow(Exception):
    pass


OVERFLOWED = "a number past a double's range"  # what server_json reads a body holding one as


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _Overflow(text)
    return value


def server_json(text: str) -> Any:
    """What the server parses: JSON as json reads it, but NaN and Infinity are not JSON (ValueError),
    and a body with a number past a double's range (1e999, even under a key a duplicate replaces) is
    refused whole: ``OVERFLOWED``, unless it is also nested deeper than JSON can be read (400: the
    server reads it whole to name where the number is, and finds the nesting)."""
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except _Overflow:
        try:
            json.loads(text, parse_constant=_no_constant)
        except RecursionError:
            return None
        return OVERFLOWED


def expected_for(doc: Any, stamp_ok: bool | None, path_node: str | None = None) -> int:
    """422 a number past a double's range; 400 not an object; 422 a required field missing or
    malformed; 403 nodeIds disagree; else 200."""
    if doc is OVERFLOWED:
        return 422
    if not isinstance(doc, dict):
        return 400
    if not _text_ok(doc.get("eventType"), MAX_FIELD_LENGTH) or not _text_ok(doc.get("eventTimestamp"), 64):
        return 422
    if not _text_ok(doc.get("nodeId"), MAX_ID_LENGTH):
        return 422
    details = doc.get("details")
    if not isinstance(details, dict) or not _text_ok(details.get("nodeId"), MAX_ID_LENGTH):
        return 422
    if not _text_ok(details.get("status"), 64):
        return 422
    if not stamp_ok:
        return 422
    if details["nodeId"] != doc["nodeId"] or (path_node is not None and path_node != doc["nodeId"]):
        return 403
    return 200


# --- strategies ---------------------------------------------------------------------------------------

NOW = datetime.now(UTC).replace(microsecond=123456)


def _valid_stamps(when: datetime, form: int) -> str:
    """Odd but valid ISO-8601 spellings ThunderStack's peers use, all meaning ``when``."""
    plus530 = when.astimezone(timezone(timedelta(hours=5, minutes=30)))
    minus8 = when.astimezone(timezone(timedelta(hours=-8)))
    base = when.strftime("%Y-%m-%dT%H:%M:%S")
    forms = [
        base + "Z",
        base + f".{when.microsecond // 1000:03d}Z",
        base + f".{when.microsecond:06d}123Z",  # nanoseconds
        base + ".1Z",
        base + "+00:00",
        base.replace("T", " ") + "Z",
        base.replace("T", "t") + "z",
        plus530.strftime("%Y-%m-%dT%H:%M:%S") + "+05:30",
        plus530.strftime("%Y-%m-%dT%H:%M:%S") + "+0530",
        minus8.strftime("%Y-%m-%dT%H:%M:%S") + "-08",
        when.strftime("%Y-%m-%dT%H:%M") + "Z",  # no seconds
        "9999-12-31T23:59:59Z",  # far future: accepted, flagged
        "0001-01-01T00:00:00Z",  # far past: recorded as stale
        "2000-02-29T12:00:00Z",  # leap day
    ]
    return forms[form % len(forms)]


INVALID_STAMPS = [
    "", "yesterday", "2026-04-16", "2026-04-16T12:00:00", "12:00:00Z", "2026-13-01T00:00:00Z",
    "2026-02-30T00:00:00Z", "2026-04-16T24:00:01Z", "2026-04-16T23:59:60Z", "2026-04-16T12:00:00+24:00",
    "2026-04-16T12:00:00+99", "0000-01-01T00:00:00Z", "9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+01:00",
    "2026-W16-4T12:00:00Z", "2026-106T12:00:00Z", "20260416T120000Z", "2026-04-16T12:00:00.Z",
    "2026-04-16T12:00:00.1234567890Z", "2026-04-16T12:00:00Z ", " 2026-04-16T12:00:00Z", "2026-04-16T12:00:00\x00Z",
    "\uff12\uff10\uff12\uff16-04-16T12:00:00Z", "2026-04-16T12:00:00+05:30:00", "1" * 65,
]

node_ids = st.one_of(
    st.text(string.ascii_letters + string.digits + "-_.", min_size=1, max_size=40),
    st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s),  # any unicode (no NUL)
    st.integers(MAX_ID_LENGTH - 2, MAX_ID_LENGTH + 2).map(lambda n: "n" * n),  # around the limit
    st.integers(1000, 20000).map(lambda n: "x" * n),  # very long
)
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30), st.just(10**300), st.just(-(2**63)), st.just("\x00"),
)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)
wrong_types = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.lists(st.integers(),
                        max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@st.composite
def mutated_events(draw: st.DrawFn) -> tuple[bytes, Any, bool | None, str | None, list[str]]:
    """A ThunderStack event with 0-3 mutations: (body, parsed-as-the-server-sees-it, stamp valid, path node, what)."""
    node = draw(st.text(string.ascii_lowercase + string.digits, min_size=12, max_size=12).map(lambda s: "fz-" + s))
    when = NOW - timedelta(seconds=draw(st.integers(0, 3600)))
    doc: dict[str, Any] = {
        "eventType": "NODE_STATUS_UPDATED",
        "eventTimestamp": _valid_stamps(when, 0),
        "details": {"nodeId": node, "status": draw(st.sampled_from(["FAILED", "RUNNING", "PAUSED", "HIBERNATING"]))},
        "nodeId": node,
    }
    valid_stamps = {doc["eventTimestamp"]}
    what: list[str] = []
    path_node: str | None = None
    raw_suffix = ""  # text spliced into the JSON object (duplicate keys, deep nesting, huge numbers)
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["missing", "wrong_type", "extra", "duplicate", "nul", "node_id", "mismatch",
                                     "stamp_valid", "stamp_invalid", "huge_number", "deep", "path", "empty"]))
        what.append(kind)
        if kind == "missing":
            field = draw(st.sampled_from([*REQUIRED, "details", "details.nodeId", "details.status"]))
            (doc["details"] if field.startswith("details.") and isinstance(doc.get("details"), dict) else doc).pop(
                field.removeprefix("details."), None)
        elif kind == "wrong_type":
            field = draw(st.sampled_from([*REQUIRED, "details", "details.nodeId", "details.status"]))
            value = draw(wrong_types)
            if field.startswith("details.") and isinstance(doc.get("details"), dict):
                doc["details"][field.removeprefix("details.")] = value
            elif not field.startswith("details."):
                doc[field] = value
        elif kind == "extra":
            doc[draw(st.text(min_size=1, max_size=10))] = draw(json_values)
            if isinstance(doc.get("details"), dict):
                doc["details"][draw(st.text(min_size=1, max_size=10))] = draw(json_values)
        elif kind == "duplicate":  # an earlier spelling of a key; the last one wins (as in JSON.parse)
            key = draw(st.sampled_from([*REQUIRED, "details"]))
            raw_suffix += f',"{key}":' + json.dumps(draw(wrong_types))
        elif kind == "nul":
            field = draw(st.sampled_from(["eventType", "nodeId", "details.status"]))
            target = doc["details"] if field.startswith("details.") and isinstance(doc.get("details"), dict) else doc
            name = field.removeprefix("details.")
            if isinstance(target.get(name), str):
                target[name] = target[name] + "\x00"
        elif kind == "node_id":
            new = draw(node_ids)
            doc["nodeId"] = new
            if isinstance(doc.get("details"), dict):
                doc["details"]["nodeId"] = new
        elif kind == "mismatch" and isinstance(doc.get("details"), dict):
            doc["details"]["nodeId"] = str(doc.get("nodeId")) + "-other"
        elif kind == "stamp_valid":
            doc["eventTimestamp"] = _valid_stamps(when, draw(st.integers(0, 100)))
            valid_stamps.add(doc["eventTimestamp"])
        elif kind == "stamp_invalid":
            doc["eventTimestamp"] = draw(st.sampled_from(INVALID_STAMPS))
        elif kind == "huge_number":
            raw_suffix += ',"big":' + draw(st.sampled_from(["1e999", "-1e999", "1" * 400, "123456789" * 40 + ".5e-999",
                                                             "0." + "0" * 500 + "1"]))
        elif kind == "deep":
            raw_suffix += ',"deep":' + _nested(draw(st.sampled_from([50, 200, 5000, 100_000])))
        elif kind == "path":
            path_node = draw(st.one_of(st.just(str(doc.get("nodeId"))), node_ids))
            if "/" in path_node or path_node in ("", ".", "..") or len(path_node) > 200:
                path_node = "elsewhere"  # not addressable as one path segment within the request-line limit
        elif kind == "empty":
            doc[draw(st.sampled_from(REQUIRED))] = ""
    text = json.dumps(doc, ensure_ascii=draw(st.booleans()))
    if raw_suffix:
        # duplicate keys come first, so the generated (last) values win
        text = "{" + raw_suffix.lstrip(",") + ("," + text[1:] if len(text) > 2 else "}")
    body = text.encode("utf-8", "surrogatepass")
    try:
        seen: Any = server_json(body.decode("utf-8"))  # what the server parses (same Python, same limits)
    except (ValueError, RecursionError):
        seen = None
    stamp = seen.get("eventTimestamp") if isinstance(seen, dict) else None
    stamp_ok = isinstance(stamp, str) and stamp in valid_stamps
    return body, seen, stamp_ok, path_node, what


def _url_path(node: str) -> str:
    from urllib.parse import quote

    return "/webhook/" + quote(node, safe="")


# --- properties -----------------------------------------------------------------------------------------


def test_every_timestamp_form(target: Target) -> None:
    """Not left to chance: each odd-but-valid spelling is accepted, each invalid one is a 422."""
    seen: Counter[str] = Counter()
    when = NOW - timedelta(minutes=5)
    for i in range(14):
        stamp = _valid_stamps(when, i)
        node = f"ts-valid-{i}-{random.randrange(10**9)}"
        body = json.dumps({"eventType": "NODE_STATUS_UPDATED", "eventTimestamp": stamp,
                           "details": {"nodeId": node, "status": "FAILED"}, "nodeId": node}).encode()
        status, doc = target.post(body)
        seen[str(status)] += 1
        assert status == 200 and doc["status"] in ("accepted", "ignored"), (stamp, status, doc)
    for stamp in INVALID_STAMPS:
        node = f"ts-invalid-{random.randrange(10**9)}"
        body = json.dumps({"eventType": "NODE_STATUS_UPDATED", "eventTimestamp": stamp,
                           "details": {"nodeId": node, "status": "FAILED"}, "nodeId": node}).encode()
        status, doc = target.post(body)
        seen[str(status)] += 1
        assert status == 422 and doc["detail"].startswith("eventTimestamp:"), (stamp, status, doc)
    record("every timestamp form", tried="14 odd-but-valid ISO-8601 spellings (offsets, nanoseconds, no seconds, "
           "lower case, space, years 1 and 9999) and 25 invalid ones (no zone, bare date, month 13, Feb 30, "
           "leap second, +24:00, year 0, year 10000 in UTC, week dates, fullwidth digits)", times=sum(seen.values()),
           outcome=_outcome(seen), statuses=dict(seen))


def test_random_bytes_signed_and_unsigned(target: Target) -> None:
    seen: Counter[str] = Counter()

    @settings(FUZZ, max_examples=250)
    @given(
        body=st.one_of(
            st.binary(max_size=2048),
            st.binary(max_size=200).map(lambda b: b"\xff\xfe" + b),  # invalid UTF-8
            st.binary(max_size=200).map(lambda b: b'{"nodeId": "' + b + b'\xc3\x28"}'),  # invalid UTF-8 inside JSON
            st.just(b"[" * 100_000),
            st.just(b'{"a":' * 40_000 + b"1" + b"}" * 40_000),
            st.just(b"\x00" * 1000),
            st.just(b""),
        ),
        signed=st.booleans(),
        content_type=st.sampled_from([None, "application/json", "text/plain", "application/octet-stream",
                                      "multipart/form-data; boundary=x", "application/x-www-form-urlencoded",
                                      "application/json; charset=latin-1", "*/*", "x/y; q=\"\\\""]),
    )
    def prop(body: bytes, signed: bool, content_type: str | None) -> None:
        status, doc = target.post(body, sign_it=signed, content_type=content_type)
        if not signed:
            want = 401
        else:
            try:
                parsed: Any = server_json(body.decode("utf-8"))
            except (ValueError, RecursionError):
                parsed = None
            want = 400 if parsed is None else expected_for(parsed, False)
        seen[str(status)] += 1
        assert status == want, (body[:80], status, doc)

    try:
        prop()
    finally:
        record("random bytes", tried="random and invalid-UTF-8 bytes, 100,000 '[', 40,000 nested objects, NUL runs, "
               "empty; signed and unsigned; 9 content types", times=sum(seen.values()),
               outcome=_outcome(seen), statuses=dict(seen))


def test_json_that_is_not_an_event(target: Target) -> None:
    seen: Counter[str] = Counter()

    @settings(FUZZ, max_examples=250)
    @given(value=json_values)
    def prop(value: Any) -> None:
        body = json.dumps(value).encode()  # NaN and Infinity included, as Python writes them: not JSON (400)
        status, doc = target.post(body)
        seen[str(status)] += 1
        try:
            want = expected_for(server_json(body.decode()), False)
        except ValueError:
            want = 400
        assert status == want, (body[:80], status, doc)

    try:
        prop()
    finally:
        record("JSON that is not an event", tried="arbitrary JSON values: scalars, arrays, objects without the event "
               "fields, NaN/Infinity, 10^300, -2^63, NUL strings", times=sum(seen.values()),
               outcome=_outcome(seen), statuses=dict(seen))


def test_mutated_events(target: Target) -> None:
    seen: Counter[str] = Counter()
    kinds: Counter[str] = Counter()

    @settings(FUZZ, max_examples=300)
    @given(case=mutated_events())
    def prop(case: tuple[bytes, Any, bool | None, str | None, list[str]]) -> None:
        body, parsed, stamp_ok, path_node, what = case
        if isinstance(parsed, dict) and isinstance(parsed.get("nodeId"), str):
            target.node_ids.add(parsed["nodeId"])
        path = "/webhook" if path_node is None else _url_path(path_node)
        status, doc = target.post(body, path=path)
        want = (413 if len(body) > MAX_BODY else 400 if parsed is None
                else expected_for(parsed, stamp_ok, path_node))
        seen[str(status)] += 1
        kinds.update(what or ["none (valid event)"])
        assert status == want, (what, body[:200], status, doc)
        if want == 422 and parsed is OVERFLOWED:  # named by its path, or "body" when a duplicate key hid it
            assert doc["detail"].split(":")[0] in ("big", "body") and "too large for a double" in doc["detail"], doc
        elif want == 422:
            assert doc["detail"].split(":")[0] in (*REQUIRED, "details", "details.nodeId", "details.status"), doc

    try:
        prop()
    finally:
        record("events with missing, extra, duplicate and malformed fields",
               tried="valid events with 0-3 mutations: missing or wrong-typed fields, extra fields, duplicate keys, "
               "NUL bytes, node ids up to 20,000 chars and any unicode, nodeId mismatches (body, details, URL "
               "path), 14 odd-but-valid and 25 invalid timestamps, "
               "huge numbers, nesting 50-100,000 deep", times=sum(seen.values()),
               outcome=_outcome(seen), statuses=dict(seen), mutations=dict(kinds))


def test_header_sets_and_encodings(target: Target) -> None:
    seen: Counter[str] = Counter()
    token = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
    reserved = {"content-length", "transfer-encoding", "content-encoding", "host", "x-thunderstack-signature",
                "connection", "expect", "upgrade"}

    @settings(FUZZ, max_examples=200)
    @given(
        extra=st.lists(st.tuples(st.text(token, min_size=1, max_size=20).filter(lambda k: k.lower() not in reserved),
                                 st.binary(max_size=60).map(lambda b: bytes(c for c in b if c >= 0x20 and c != 0x7f))),
                       max_size=20),
        signature_form=st.sampled_from(["valid", "spaces", "missing", "bogus", "valid+bogus", "bogus+valid"]),
        encoding=st.sampled_from([None, "identity", "gzip", "deflate", "gzip-bogus", "deflate-bogus", "unknown"]),
        content_type=st.sampled_from([None, "application/json", "text/plain; charset=utf-8", "application/xml"]),
    )
    def prop(extra: list[tuple[str, bytes]], signature_form: str, encoding: str | None,
             content_type: str | None) -> None:
        node = "hdr-" + "".join(random.choices(string.ascii_lowercase, k=12))
        body = json.dumps({"eventType": "NODE_STATUS_UPDATED", "eventTimestamp": NOW.isoformat(),
                           "details": {"nodeId": node, "status": "FAILED"}, "nodeId": node}).encode()
        good = sign(body, target.key)
        headers: list[tuple[str, str | bytes]] = [(k, v) for k, v in extra]
        sigs = {"valid": [good], "spaces": [f"  {good}\t"], "missing": [], "bogus": ["AAAA"],
                "valid+bogus": [good, "AAAA"], "bogus+valid": ["AAAA", good]}[signature_form]
        headers += [("X-ThunderStack-Signature", s) for s in sigs]
        wire = body
        if encoding == "gzip":
            wire = gzip.compress(body)
        elif encoding == "deflate":
            wire = zlib.compress(body)
        elif encoding in ("gzip-bogus", "deflate-bogus"):
            wire = b"definitely not compressed " + body
        if encoding is not None:
            headers.append(("Content-Encoding", encoding.removesuffix("-bogus")))
        status, doc = target.post(wire, sign_it=False, content_type=content_type, extra=headers)
        seen[str(status)] += 1
        # Bodies are not inflated (a compressed body is not the signed one), so any real or bogus
        # gzip/deflate body fails verification; identity and unknown codings leave the bytes alone.
        if signature_form == "missing":
            want = {401}
        elif signature_form in ("bogus", "bogus+valid") or wire != body:
            want = {403}
        else:
            want = {200}
        assert status in want, (signature_form, encoding, status, doc)

    try:
        prop()
    finally:
        record("header sets, content types and encodings", tried="up to 20 random extra headers (obs-text values), "
               "4 content types, signature header missing/padded with spaces/bogus/repeated, Content-Encoding "
               "gzip/deflate (real and bogus: not inflated, so refused 403)/identity/unknown", times=sum(seen.values()),
               outcome=_outcome(seen), statuses=dict(seen))


def test_signature_headers(target: Target) -> None:
    seen: Counter[str] = Counter()
    alphabet = string.ascii_letters + string.digits + "+/="

    @settings(FUZZ, max_examples=250)
    @given(
        form=st.sampled_from(["text", "b64-random", "flip", "truncate", "pad", "urlsafe", "inner-space", "empty",
                              "other-body", "valid"]),
        text=st.text(max_size=400),
        raw=st.binary(max_size=600),
        pos=st.integers(0, 10_000),
        n=st.integers(1, 12),
    )
    def prop(form: str, text: str, raw: bytes, pos: int, n: int) -> None:
        node = "sig-" + "".join(random.choices(string.ascii_lowercase, k=12))
        body = json.dumps({"eventType": "NODE_STATUS_UPDATED", "eventTimestamp": NOW.isoformat(),
                           "details": {"nodeId": node, "status": "FAILED"}, "nodeId": node}).encode()
        good = sign(body, target.key)
        i = pos % len(good)
        sig = {
            "text": "".join(c for c in text if (" " <= c <= "~") or "\xa0" <= c <= "\xff" or c == "\t"),
            "b64-random": base64.b64encode(raw).decode(),
            "flip": good[:i] + random.choice([c for c in alphabet if c != good[i]]) + good[i + 1:],
            "truncate": good[:-n],
            "pad": good + "=" * n if n % 2 else good + "A" * n,
            "urlsafe": good.replace("+", "-").replace("/", "_"),
            "inner-space": good[:i] + " " + good[i:],
            "empty": " " * (n - 1),
            "other-body": sign(body + b" ", target.key),
            "valid": good,
        }[form]
        status, doc = target.post(body, signature=sig)
        seen[str(status)] += 1
        stripped = sig.strip(" \t")
        if not stripped:
            want = 401
        else:
            try:
                same = binascii.a2b_base64(stripped, strict_mode=True) == base64.b64decode(good)
            except (binascii.Error, ValueError):  # not base64, or not even ASCII
                same = False
            want = 200 if same else 403
        assert status == want, (form, sig[:60], status, doc)

    try:
        prop()
    finally:
        record("signature header values", tried="random text, base64 of random bytes, a valid signature with a "
               "character flipped, truncated, padded, base64url alphabet, an inner space, blank, over another body",
               times=sum(seen.values()), outcome=_outcome(seen), statuses=dict(seen))


def test_lone_surrogates_are_422_naming_the_field(target: Target) -> None:
    """Half an emoji (what a JavaScript upstream that cuts a string produces) in a validly signed event:
    422 naming the field on every retry, never a 503 loop; a whole emoji is fine."""
    seen: Counter[str] = Counter()
    cases: list[tuple[str, dict[str, Any]]] = []
    for bad in ("\ud800", "node-\udc00", "cut \ud83d"):
        cases += [
            ("eventType", {"eventType": bad}),
            ("nodeId", {"nodeId": bad, "details": {"nodeId": bad, "status": "FAILED"}}),
            ("details.status", {"details": {"nodeId": "sur-1", "status": bad}}),
            ("details.nodeId", {"details": {"nodeId": bad, "status": "FAILED"}}),
            ("details.extra.note", {"details": {"nodeId": "sur-1", "status": "FAILED", "extra": {"note": bad}}}),
            ("details.list[1]", {"details": {"nodeId": "sur-1", "status": "FAILED", "list": ["ok", bad]}}),
        ]
    for field, change in cases:
        doc: dict[str, Any] = {"eventType": "NODE_STATUS_UPDATED", "eventTimestamp": NOW.isoformat(),
                               "nodeId": "sur-1", "details": {"nodeId": "sur-1", "status": "FAILED"}, **change}
        body = json.dumps(doc).encode()  # ASCII: the surrogate travels as a \ud800 escape
        for _ in range(2):  # ThunderStack retries: the same answer, nothing stored
            status, answer = target.post(body)
            seen[str(status)] += 1
            assert status == 422, (field, answer)
            assert answer["detail"].startswith(f"{field}: contains a lone surrogate"), (field, answer)
    emoji = "sur-\U0001f600"
    whole = json.dumps({"eventType": "NODE_STATUS_UPDATED", "eventTimestamp": NOW.isoformat(), "nodeId": emoji,
                        "details": {"nodeId": emoji, "status": "FAILED"}}).encode()
    status, answer = target.post(whole)
    assert status == 200 and answer["status"] in ("accepted", "duplicate"), answer
    record("lone surrogates in signed events", tried="a lone UTF-16 surrogate in eventType, nodeId, details.status, "
           "details.nodeId and nested details values, each sent twice", times=sum(seen.values()),
           outcome=f"every one 422 naming the field ({_outcome(seen)}); a whole emoji accepted")


def test_after_the_fuzzing(target: Target) -> None:
    """Every accepted fuzzed event was delivered; no request data became a metric label; still alive."""
    import time

    deadline = time.monotonic() + 30
    counts = db_counts(target.db)
    while time.monotonic() < deadline and counts.get("jobs_pending", 0) + counts.get("jobs_inflight", 0):
        time.sleep(0.2)
        counts = db_counts(target.db)
    status, _ = target.request("/metrics", b"", [], method="GET")
    assert status == 404  # not on the webhook port
    labels = target.metric_labels()
    leaked = sorted(target.node_ids & (labels - target.labels_at_start))
    alive = target.proc.proc is not None and target.proc.proc.poll() is None
    record("after all bad input", tried="outbox and metrics checked after the fuzzing above",
           times=counts.get("jobs", 0),
           outcome=f"{counts.get('jobs_done', 0)} of {counts.get('jobs', 0)} deliveries of accepted fuzzed events "
                   f"done, {counts.get('jobs_dead', 0)} dead; {len(target.node_ids)} fuzzed node ids, {len(leaked)} "
                   f"among the {len(labels - target.labels_at_start)} label values /metrics gained; process "
                   f"{'alive' if alive else 'DEAD'}", db=counts)
    assert alive
    assert counts.get("jobs_dead", 0) == 0 and counts.get("jobs_done", 0) == counts.get("jobs", 0), counts
    assert leaked == []


def _outcome(seen: Counter[str]) -> str:
    parts = ", ".join(f"{k} x{v}" for k, v in sorted(seen.items()))
    fives = sum(v for k, v in seen.items() if k.startswith("5"))
    return f"answers {parts}; {fives} 5xx; healthz answered after every request; refused ones changed no row"

