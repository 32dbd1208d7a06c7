"""Pure signature verification: base64 RSA-SHA256 (PKCS#1 v1.5) over the request body.

ThunderStack's reference handler verifies ``JSON.stringify(req.body)``, not the raw bytes, so
when the raw bytes fail we also try that compact re-serialisation (``js_stringify``).
"""

from __future__ import annotations

import binascii
import json
import math
import re
from collections.abc import Iterable
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from bridge.errors import MissingSignature, VerificationError

SIGNATURE_HEADER = "X-ThunderStack-Signature"
_B64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
_PAD = padding.PKCS1v15()
_SHA256 = hashes.SHA256()


def decode_signature(header: str | None) -> bytes:
    """The signature bytes from the header; MissingSignature / VerificationError otherwise."""
    if header is None or not header.strip():
        raise MissingSignature(f"{SIGNATURE_HEADER} header is missing")
    text = header.strip()
    if len(text) > 4096 or len(text) % 4 or not _B64.match(text):
        raise VerificationError(f"{SIGNATURE_HEADER} is not valid base64")
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except binascii.Error:
        raise VerificationError(f"{SIGNATURE_HEADER} is not valid base64") from None


def verify_bytes(data: bytes, signature: bytes, keys: Iterable[rsa.RSAPublicKey]) -> bool:
    for key in keys:
        try:
            key.verify(signature, data, _PAD, _SHA256)
            return True
        except InvalidSignature:
            continue
    return False


def verify(body: bytes, parsed: Any, signature: bytes, keys: Iterable[rsa.RSAPublicKey]) -> bool:
    """True when ``signature`` matches ``body`` (or its JSON.stringify form) under any key."""
    keys = list(keys)
    if verify_bytes(body, signature, keys):
        return True
    if parsed is None:
        return False
    try:
        compact = js_stringify(parsed).encode("utf-8")
    except (ValueError, RecursionError):
        return False
    return compact != body and verify_bytes(compact, signature, keys)


# --- JSON.stringify-compatible serialisation --------------------------------------------------------

_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _js_number(value: int | float) -> str:
    """Number.prototype.toString for what JSON.parse would have produced."""
    if isinstance(value, int) and abs(value) < 2**53:
        return str(value)
    f = float(value)
    if math.isnan(f) or math.isinf(f):
        return "null"  # JSON.stringify(NaN/Infinity)
    if f == 0:
        return "0"
    # Python's repr gives the shortest round-trip digits, as does JavaScript; only the layout differs.
    digits = repr(abs(f)).lower()
    if "e" in digits:
        mant, _, exp_text = digits.partition("e")
        exponent = int(exp_text)
    else:
        mant, exponent = digits, None
    int_part, _, frac = mant.partition(".")
    frac = frac.rstrip("0")
    if exponent is None:
        # positional repr ("0.000123", "123.5"): normalise to significant digits + exponent
        all_digits = (int_part + frac).lstrip("0")
        exponent = len(int_part) - 1 if int_part != "0" else -(len(frac) - len(frac.lstrip("0")) + 1)
        sig = all_digits.rstrip("0") or "0"
    else:
        sig = (int_part + frac).rstrip("0") or "0"
    k = len(sig)
    n = exponent + 1  # position of the decimal point relative to the digits
    sign = "-" if f < 0 else ""
    if k <= n <= 21:
        return sign + sig + "0" * (n - k)
    if 0 < n <= 21:
        return sign + sig[:n] + "." + sig[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * (-n) + sig
    exp10 = n - 1
    body = sig[0] + ("." + sig[1:] if k > 1 else "")
    return f"{sign}{body}e{'+' if exp10 > 0 else '-'}{abs(exp10)}"


def _js_string(value: str) -> str:
    out = json.dumps(value, ensure_ascii=False)
    # JSON.stringify escapes lone surrogates (ES2019); Python would emit them raw.
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", out)


def js_stringify(value: Any) -> str:
    """What JavaScript's JSON.stringify(JSON.parse(text)) returns, for the parsed ``value``."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int | float):
        return _js_number(value)
    if isinstance(value, str):
        return _js_string(value)
    if isinstance(value, list):
        return "[" + ",".join(js_stringify(v) for v in value) + "]"
    if isinstance(value, dict):
        # Integer-like keys come first in ascending order in JavaScript objects.
        keys = list(value)
        index_keys = sorted((k for k in keys if _array_index(k)), key=int)
        if index_keys:
            keys = index_keys + [k for k in keys if not _array_index(k)]
        return "{" + ",".join(_js_string(k) + ":" + js_stringify(value[k]) for k in keys) + "}"
    raise ValueError(f"not JSON: {type(value).__name__}")


_INDEX = re.compile(r"^(0|[1-9][0-9]{0,9})$")


def _array_index(key: str) -> bool:
    return bool(_INDEX.match(key)) and int(key) < 2**32 - 1
