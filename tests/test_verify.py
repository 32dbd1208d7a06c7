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
from bridge.testing import sign
from bridge.verify import decode_signature, js_stringify, verify


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
