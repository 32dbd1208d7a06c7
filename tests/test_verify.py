"""Signature verification and the JSON.stringify-compatible re-serialisation."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.errors import MissingSignature, VerificationError
from bridge.payload import parse_json
from bridge.testing import event_body, sign
from bridge.verify import (
    MAX_INEXACT_NUMBERS,
    MAX_STRINGIFY_BYTES,
    MAX_STRINGIFY_VALUES,
    decode_signature,
    js_stringify,
    needs_parse,
    stringified,
    verify,
)


def test_decode_signature() -> None:
    with pytest.raises(MissingSignature):
        decode_signature(None)
    with pytest.raises(MissingSignature):
        decode_signature("  ")
    for bad in ("abc", "a*bc", "AAAA=A==", "x" * 5000):
        with pytest.raises(VerificationError):
            decode_signature(bad)
    assert decode_signature("AAAA") == b"\0\0\0"


def test_verify_raw_and_compact(signing_key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey) -> None:
    doc = {"eventType": "E", "n": 1.0, "s": "é\u2028"}
    raw = json.dumps(doc, indent=1).encode()
    compact = js_stringify(doc).encode()
    pub, other = signing_key.public_key(), other_key.public_key()
    sig_raw = decode_signature(sign(raw, signing_key))
    sig_compact = decode_signature(sign(compact, signing_key))
    assert verify(raw, doc, sig_raw, [pub])
    assert verify(raw, doc, sig_compact, [pub])
    assert verify(raw, doc, sig_compact, [other, pub])  # any configured key may match
    assert not verify(raw, doc, sig_compact, [other])
    assert not verify(raw, None, sig_compact, [pub])  # not JSON: raw bytes only


def test_second_try_only_for_a_body_of_at_most_max_stringify_bytes(signing_key: rsa.RSAPrivateKey) -> None:
    """A pretty-printed body whose JSON.stringify form is signed verifies up to MAX_STRINGIFY_BYTES
    and not past it, whatever it holds (one long string: few values, so only the size bounds it)."""
    pub = signing_key.public_key()

    def pretty(size: int) -> tuple[bytes, object]:
        doc = {"eventType": "E", "s": ""}
        filler = size - len(json.dumps(doc, indent=1).encode())
        doc["s"] = "x" * filler
        body = json.dumps(doc, indent=1).encode()
        assert len(body) == size
        return body, doc

    for size, holds in ((MAX_STRINGIFY_BYTES, True), (MAX_STRINGIFY_BYTES + 1, False)):
        body, doc = pretty(size)
        sig = decode_signature(sign(js_stringify(doc).encode(), signing_key))
        assert verify(body, parse_json(body), sig, [pub]) is holds, size
        assert (stringified(body, parse_json(body)) is not None) is holds


def test_second_try_only_for_a_few_numbers_javascript_spells_its_own_way(signing_key: rsa.RSAPrivateKey) -> None:
    """Each such number costs several µs in Python: a body with more than MAX_INEXACT_NUMBERS of them
    gets no second try (an event holds its own few)."""
    pub = signing_key.public_key()
    for count, holds in ((MAX_INEXACT_NUMBERS, True), (MAX_INEXACT_NUMBERS + 1, False)):
        doc = {"eventType": "E", "v": [1.2345678901234567e-300] * count}
        body = json.dumps(doc, indent=1).encode()
        sig = decode_signature(sign(js_stringify(doc).encode(), signing_key))
        assert verify(body, parse_json(body), sig, [pub]) is holds, count


def test_what_is_parsed_before_the_signature_check() -> None:
    """Only a body the second try could use: not one past MAX_STRINGIFY_BYTES, nor a longer one with
    MAX_STRINGIFY_VALUES values or more (thousands of floats would cost milliseconds to parse)."""
    assert needs_parse(event_body("node-prod-1", "FAILED"))
    many = ("[" + ",".join(["1e5"] * MAX_STRINGIFY_VALUES) + "]").encode()
    assert len(many) > 4 * MAX_STRINGIFY_VALUES and not needs_parse(many)
    assert needs_parse(("[" + ",".join(["1e5"] * (MAX_STRINGIFY_VALUES - 2)) + "]").encode())
    assert not needs_parse(b'{"a":"' + b"x" * MAX_STRINGIFY_BYTES + b'"}')
    assert needs_parse(b"[" * 100 + b"]" * 100)  # short: parsed (and refused the second try by its count)


@pytest.mark.parametrize(("body", "expected"), [
    (b" 12", b"12"), (b"-1.50", b"-1.5"), (b"1e21", b"1e+21"), (b"1" + b"0" * 21, None), (b"[1.50]", b"[1.5]"),
    (b'{"a": 2.0, "b":[1,  10000000000000000]}', b'{"a":2,"b":[1,10000000000000000]}'),
    (b'{"a":' + b"1" * 22 + b"}", None), (b'{"a": "' + b"1" * 30 + b'"}', b'{"a":"' + b"1" * 30 + b'"}'),
])
def test_stringified_spells_numbers_as_javascript(body: bytes, expected: bytes | None) -> None:
    assert stringified(body, parse_json(body)) == expected


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is the reference for JSON.stringify")
@settings(max_examples=40, deadline=None)
@given(st.lists(json_values, min_size=1, max_size=8))
def test_js_stringify_matches_node(values: list[object]) -> None:
    assert shutil.which("node"), "node (the reference JSON.stringify) must be installed"
    text = json.dumps(values)
    out = subprocess.run(
        ["node", "-e", "process.stdout.write(JSON.stringify(JSON.parse(require('fs').readFileSync(0, 'utf8'))))"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert js_stringify(json.loads(text)) == out.stdout


def test_the_node_hint_reads_the_top_level_node_id_and_never_raises() -> None:
    from bridge.payload import node_hint

    assert node_hint(event_body("node-a", "FAILED")) == "node-a"
    assert node_hint(b'{"nodeId": 5, "details": {"nodeId": "x"}}') is None
    for bad in (b"\xff", b"[" * 100_000, b"{", b"1e400", b'{"nodeId":"n","v":1e400}'):
        assert node_hint(bad) in (None, "n")
