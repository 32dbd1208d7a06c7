"""The JSON text the bridge sends to receivers: compact, always UTF-8, never NaN or Infinity.

Ingest refuses NaN, Infinity and numbers past a double's range (payload.py), but a job queued by an
older version, or a value a template computes, may still hold one. Python's json writes them as
``NaN``/``Infinity``, which is not JSON: a strict receiver refuses the body on every retry. Here
they are written as ``null``, as JavaScript's JSON.stringify writes them. The encoders refuse them
(``allow_nan=False``) at no cost to a finite value; only a value that holds one is walked again.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

# json.dumps(..., separators=(",", ":"), ensure_ascii=False, allow_nan=False) without building an
# encoder per call.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_SURROGATE = re.compile("[\ud800-\udfff]")


def finite_copy(value: Any) -> Any:
    """``value`` with every NaN and infinity (in dicts, lists and tuples) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_copy(v) for v in value]
    return value


def compact_json(value: Any) -> str:
    """Compact JSON text that always encodes to UTF-8 (a lone surrogate becomes a \\u escape) and is
    JSON (NaN and infinities become null)."""
    try:
        text = _COMPACT_JSON.encode(value)
    except ValueError:  # "Out of range float values are not JSON compliant" (or a circular value: again)
        text = _COMPACT_JSON.encode(finite_copy(value))
    if text.isascii() or not _SURROGATE.search(text):  # isascii() reads a flag; the search scans every character
        return text
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


# Reads JSON, and only JSON: json.loads reads NaN and Infinity too (a template's output is checked with it).
STRICT_JSON = json.JSONDecoder(parse_constant=_not_json)


def dumps(value: Any, **kwargs: Any) -> str:
    """json.dumps for the templates' ``| tojson`` (Jinja2's ``json.dumps_function`` policy): NaN and
    infinities become null."""
    try:
        return json.dumps(value, allow_nan=False, **kwargs)
    except ValueError:
        return json.dumps(finite_copy(value), allow_nan=False, **kwargs)


ORJSON_STRICT = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS


def json_bytes(value: Any, *, finite: bool = False) -> bytes:
    """``compact_json(value)`` as UTF-8. ``finite``: every float in ``value`` is finite (``Alert.own_numbers``);
    orjson writes it then, at a fraction of json's cost: the same JSON but for number spelling (1e-7
    for 1e-07; both write NaN and infinities as null). What orjson refuses (a lone surrogate, an
    integer past 64 bits, Markup: ``ORJSON_STRICT`` passes on str subclasses) goes to compact_json."""
    if finite:
        try:
            return orjson.dumps(value, option=ORJSON_STRICT)
        except TypeError:
            pass
    return compact_json(value).encode()


__all__ = ["ORJSON_STRICT", "STRICT_JSON", "compact_json", "dumps", "finite_copy", "json_bytes"]
