"""Pure signature verification: base64 RSA-SHA256 (PKCS#1 v1.5) over the request body.

ThunderStack's reference handler verifies ``JSON.stringify(req.body)``, not the raw bytes, so
when the raw bytes fail we also try that compact re-serialisation (``stringified``).

That second try runs before any signature holds, on whatever a stranger sends, so it must never
raise and must cost about what the parse already did: the json module's C encoder produces
JSON.stringify's text for everything but numbers that are not small integers and integer-like
object keys (JavaScript formats and orders those differently). Only a body holding those takes
the exact Python serialiser, and only with at most ``MAX_INEXACT_NUMBERS`` such numbers. Either
way only a body of at most ``MAX_STRINGIFY_BYTES`` bytes and fewer than ``MAX_STRINGIFY_VALUES``
values gets a second try: the reference serialiser's events are a few hundred bytes and about ten
values, and a forged body past either bound is refused without the work, and unparsed unless a
node has a key of its own (``needs_parse``). Every check before the bounds reads the body at C
speed; the scans that follow cost about a microsecond per 100 bytes, so the byte bound is what caps
them. bench/forged_bodies.py measures the worst shapes.
"""

from __future__ import annotations

import binascii
import itertools
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
_PAD = padding.PKCS1v15()
_SHA256 = hashes.SHA256()


def decode_signature(header: str | None) -> bytes:
    """The signature bytes from the header; MissingSignature / VerificationError otherwise."""
    if header is None or not header.strip():
        raise MissingSignature(f"{SIGNATURE_HEADER} header is missing")
    text = header.strip()
    # strict_mode refuses what is not the base64 alphabet (whitespace, url-safe letters, non-ASCII
    # text: ValueError) and padding anywhere but the end; it accepts more than two "=" there.
    if len(text) > 4096 or len(text) % 4 or "===" in text:
        raise VerificationError(f"{SIGNATURE_HEADER} is not valid base64")
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except ValueError:
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
    compact = stringified(body, parsed)
    return compact is not None and compact != body and verify_bytes(compact, signature, keys)


# A value the C encoder writes differently from JavaScript: a number with a fraction or exponent, an
# integer of 16 or more digits (JavaScript's are doubles past 2**53), an integer-like object key.
# Each pattern starts with a character class and no alternative, so the regex engine skips to the
# next candidate separator at C speed; a body that is a bare number is the separate _LEADING_NUMBER
# (an alternative anchored with ^ made the engine try every position: ~50x slower over a long string).
# Possessive (``*+``, ``++``): no backtracking into a run of digits, so each number is read once
# (backtracking made a body of 21-digit numbers cost ~1.5 µs a number).
_INEXACT_NUMBER = re.compile(rb"[:\[,][ \t\r\n]*+-?(?:[0-9]++[.eE]|[0-9]{16})")
# JSON.stringify writes no number longer than 21 digits (past that, an exponent): a longer one in the
# body means the reference serialiser did not write it, and would cost a slow conversion to check.
_LONG_NUMBER = re.compile(rb"[:\[,][ \t\r\n]*+-?[0-9]{22}")
_LEADING_NUMBER = re.compile(rb"[ \t\r\n]*-?([0-9]+)")  # .match: the body is one number
_INDEX_KEY = re.compile(r'[{,]"(?:0|[1-9][0-9]{0,9})":')
# The reference serialiser's events hold about ten values in a few hundred bytes; a body with more
# of either is refused the second try without it being computed, which bounds its cost
# (bench/README.md, "Forged bodies"). 4 KiB is 10-25 times a real event, 64 values six times.
MAX_STRINGIFY_VALUES = 64
MAX_STRINGIFY_BYTES = 4096
# Numbers JavaScript spells its own way each cost several µs in Python (an exponent's layout); an
# event's are its own few (ThunderStack's documented ones hold none).
MAX_INEXACT_NUMBERS = 8
_c_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False,
                             check_circular=False).encode


def too_many_values(body: bytes) -> bool:
    """Whether ``body`` may hold MAX_STRINGIFY_VALUES values or more: an upper bound on their number,
    counted at C speed before any per-value work."""
    values = 0
    for c in (b",", b":", b"[", b"{"):
        values += body.count(c)
        if values >= MAX_STRINGIFY_VALUES:
            return True
    return False


def needs_parse(body: bytes) -> bool:
    """Whether the second try could apply to ``body`` (so it is parsed before the signature check)."""
    # Not counted in a body as short as an event: one of 4 * MAX_STRINGIFY_VALUES bytes holds at most
    # that many numbers with a fraction or exponent (``1e5,``), whose parse costs a Python call each.
    return len(body) <= MAX_STRINGIFY_BYTES and (len(body) <= 4 * MAX_STRINGIFY_VALUES or not too_many_values(body))


def stringified(body: bytes, parsed: Any) -> bytes | None:
    """JSON.stringify(JSON.parse(body)) as UTF-8, or None when it is not worth (or not possible) to compute.

    Never raises: whatever a forged body holds, the answer is at worst "no second try" (403).
    """
    if len(body) > MAX_STRINGIFY_BYTES or too_many_values(body):
        return None
    try:
        lead = _LEADING_NUMBER.match(body)
        if lead is not None:  # the body is one number: JavaScript's spelling, unless longer than it writes
            return None if len(lead.group(1)) >= 22 else js_stringify(parsed).encode("utf-8")
        if _LONG_NUMBER.search(body):
            return None
        inexact = sum(1 for _ in itertools.islice(_INEXACT_NUMBER.finditer(body), MAX_INEXACT_NUMBERS + 1))
        if not inexact:
            text = _c_encode(parsed)
            if not _INDEX_KEY.search(text):
                # JavaScript escapes a lone surrogate as \udxxx, lower case: what backslashreplace writes.
                return text.encode("utf-8", "backslashreplace")
        elif inexact > MAX_INEXACT_NUMBERS:
            return None
        return js_stringify(parsed).encode("utf-8")
    except (ValueError, TypeError, OverflowError, RecursionError, MemoryError):
        return None


# --- JSON.stringify-compatible serialisation --------------------------------------------------------

_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _js_number(value: int | float) -> str:
    """Number.prototype.toString for what JSON.parse would have produced."""
    if isinstance(value, int) and abs(value) < 2**53:
        return str(value)
    if isinstance(value, int) and value.bit_length() > 1024:
        return "null"  # past the largest double: Infinity in JavaScript, which JSON.stringify writes as null
    f = float(value)
    if math.isnan(f) or math.isinf(f):
        return "null"  # JSON.stringify(NaN/Infinity)
    if f == 0:
        return "0"
    if 1e-4 <= abs(f) < 1e16:  # both write these positionally; only JavaScript drops a trailing ".0"
        text = repr(f)
        return text[:-2] if text.endswith(".0") else text
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


_quote = json.encoder.encode_basestring  # json.dumps(s, ensure_ascii=False) without an encoder per call


def _js_string(value: str) -> str:
    out: str = _quote(value)
    # JSON.stringify escapes lone surrogates (ES2019); Python would emit them raw.
    if _LONE_SURROGATE.search(out):
        return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", out)
    return out


def js_stringify(value: Any) -> str:
    """What JavaScript's JSON.stringify(JSON.parse(text)) returns, for the parsed ``value``."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    kind = type(value)
    if kind is str:
        return _js_string(value)
    if kind is int or kind is float:
        return _js_number(value)
    if kind is list:
        return "[" + ",".join(js_stringify(v) for v in value) + "]"
    if kind is dict:
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
