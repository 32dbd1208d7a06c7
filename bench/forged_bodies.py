"""What a forged request costs the event loop before its signature is refused, by body shape.

    python bench/forged_bodies.py [--max-body 65536] [--rounds 5]

For each worst shape (within ``server.max_body_bytes``) it times, in µs per request, the raw
RSA-SHA256 check over the bytes, the parse, and the JSON.stringify second try (``stringified``)
against the old all-Python serialiser (``js_stringify`` on every body, as before issue #11).
Prints a Markdown table for bench/README.md. Nothing here is asserted: speed lives in ratios.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.payload import parse_json
from bridge.testing import event_body, generate_key, sign
from bridge.verify import (
    MAX_INEXACT_NUMBERS,
    MAX_STRINGIFY_BYTES,
    MAX_STRINGIFY_VALUES,
    decode_signature,
    js_stringify,
    needs_parse,
    stringified,
    verify_bytes,
)

EXPONENT = "1.2345678901234567e-300"  # the costliest spelling to convert to JavaScript's (a probe's find)


def fill(unit: str, limit: int, head: str = "[", tail: str = "]", sep: str = ",") -> bytes:
    n = max(1, (limit - len(head) - len(tail)) // (len(unit) + len(sep)))
    return (head + sep.join([unit] * n) + tail).encode()


def shapes(limit: int) -> list[tuple[str, bytes]]:
    depth = 900  # below the parser's recursion limit: the deepest body that parses
    return [
        ("a real event", event_body("node-prod-1", "FAILED")),
        ("many small objects", fill('{"a":1}', limit)),
        ("many empty objects", fill("{}", limit)),
        ("deep nesting", ("[" * depth + "]" * depth).encode()),
        ("huge integers (4,000 digits)", fill("7" * 4000, limit)),
        ("huge integers, nested", fill("[[[[" + "7" * 400 + "]]]]", limit)),
        ("floats", fill("1.5", limit)),
        (f"floats, {MAX_STRINGIFY_VALUES - 1} values", fill("1.5", 4 * MAX_STRINGIFY_VALUES - 3)),
        (f"floats with exponents, {MAX_STRINGIFY_VALUES - 1} values",
         fill(EXPONENT, (len(EXPONENT) + 1) * (MAX_STRINGIFY_VALUES - 1) + 1)),
        (f"floats with exponents, {MAX_INEXACT_NUMBERS} values",
         fill(EXPONENT, (len(EXPONENT) + 1) * MAX_INEXACT_NUMBERS + 1)),
        (f"21-digit integers, {MAX_STRINGIFY_VALUES - 1} values", fill("1" * 21, 22 * (MAX_STRINGIFY_VALUES - 1) + 1)),
        ("floats with exponents", fill(EXPONENT, limit)),
        (f"small objects, {MAX_STRINGIFY_VALUES // 2 - 1} of them",
         fill('{"a":1}', 8 * (MAX_STRINGIFY_VALUES // 2 - 1) + 1)),
        (f"integer-like keys, {MAX_STRINGIFY_VALUES // 2 - 1} of them",
         fill('"1":1', 6 * (MAX_STRINGIFY_VALUES // 2 - 1) + 1, "{", "}")),
        ("deep nesting, 250 levels", ("[" * 250 + "]" * 250).encode()),
        ("huge integers, 255 of 250 digits", fill("7" * 250, 251 * 255 + 1)),
        ("integer-like keys", fill('"1":1', limit, "{", "}")),
        ("long strings with escapes", fill(json.dumps("\n\"\\\u0001é\u2028" * 8), limit)),
        # Few separators, so the value count lets them through: only MAX_STRINGIFY_BYTES bounds the scans.
        ("one long string", one_string("x", limit)),
        ("one long string of \\u escapes", one_string("\\u00e9", limit)),
        (f"one long string, {MAX_STRINGIFY_BYTES:,} bytes", one_string("x", MAX_STRINGIFY_BYTES)),
    ]


def one_string(unit: str, limit: int) -> bytes:
    """{"a":"<unit repeated>"}: one value, as long as ``limit`` allows."""
    return ('{"a":"' + unit * ((limit - 8) // len(unit)) + '"}').encode()


def per_call(fn: Callable[[], Any], rounds: int) -> float:
    """Best of ``rounds`` batches, µs per call (best: the least disturbed by the other helpers' load)."""
    best = float("inf")
    for _ in range(rounds):
        n, started = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            elapsed = time.perf_counter() - started
            if elapsed > 0.05:
                break
        best = min(best, elapsed / n)
    return best * 1e6


def old_fallback(parsed: Any) -> None:
    try:
        js_stringify(parsed)
    except (ValueError, RecursionError, OverflowError):
        pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--max-body", type=int, default=65536)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    key = generate_key()
    forged = decode_signature(sign(b"something else", key))
    keys = [key.public_key()]
    print("| body shape | bytes | raw RSA check µs | parse µs | stringify second try µs (x raw) "
          "| old all-Python second try µs (x raw) | before the 403, no node keys µs (x raw) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, body in shapes(args.max_body):
        assert len(body) <= args.max_body, name
        parsed = parse_json(body)
        raw = per_call(lambda b=body: verify_bytes(b, forged, keys), args.rounds)  # type: ignore[misc]
        parse = per_call(lambda b=body: parse_json(b), args.rounds)  # type: ignore[misc]
        second = per_call(lambda b=body, p=parsed: stringified(b, p), args.rounds)  # type: ignore[misc]
        old = per_call(lambda p=parsed: old_fallback(p), args.rounds)  # type: ignore[misc]
        # What ingest spends on it before answering 403 (no node has a key of its own): the parse and
        # the second try only for a body they could apply to (verify.needs_parse).
        total = raw + (parse + second if needs_parse(body) else 0)
        print(f"| {name} | {len(body):,} | {raw:,.0f} | {parse:,.0f} | {second:,.0f} ({second / raw:.1f}x) "
              f"| {old:,.0f} ({old / raw:.1f}x) | {total:,.0f} ({total / raw:.1f}x) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
