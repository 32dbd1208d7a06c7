"""Pure validation of a ThunderStack webhook body: bytes → parsed JSON → Event."""

from __future__ import annotations

import json
import json.scanner
import re
import sys
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from bridge.errors import FieldError, NodeRejected, PayloadError
from bridge.model import Event, parse_timestamp

MAX_ID_LENGTH = 256
MAX_FIELD_LENGTH = 1024
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")
_SURROGATE_HINT = ("contains a lone surrogate (half of a UTF-16 pair, e.g. an emoji cut in two), which is "
                   "not text and cannot be stored or sent on")


class _NotFinite(Exception):
    """A number literal past a double's range (1e400): JSON.parse makes it Infinity."""


_MAX_DOUBLE = sys.float_info.max


def _finite(text: str) -> float:
    value = float(text)
    if -_MAX_DOUBLE <= value <= _MAX_DOUBLE:
        return value
    raise _NotFinite(text)


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value (JSON has no NaN or Infinity)")


# NaN, Infinity and -Infinity are not JSON (json reads them unless told not to), and a number that
# overflows a double has no JSON spelling once read: neither may be stored or sent on, where a
# strict receiver would refuse the body on every retry. The C scanner calls these only for such a
# literal (parse_constant) or a number with a fraction or exponent (parse_float): a body of strings
# and integers, as events are, is read as fast as with json's defaults.
_DECODER = json.JSONDecoder(parse_float=_finite, parse_constant=_not_json)
_OVERFLOW = object()  # what an overflowing number reads as when looking for its path
_INT_DIGITS = sys.get_int_max_str_digits() or sys.maxsize  # longer integers: Python refuses to read them
_FIND_DECODER = json.JSONDecoder(
    parse_float=lambda text: v if -_MAX_DOUBLE <= (v := float(text)) <= _MAX_DOUBLE else _OVERFLOW,
    parse_int=lambda text: _OVERFLOW if len(text.lstrip("-")) > _INT_DIGITS else int(text),
    parse_constant=_not_json,
)

# json.loads(text) is this C scanner behind two Python layers (and two whitespace regexes) that cost
# more than the scan of a webhook body. A body that is one value from its first to its last
# character is read by the scanner alone; anything else (surrounding whitespace, an error) goes
# through the decoder's own decode, so every value and every error message is json.loads's.
_scan: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(_DECODER)  # type: ignore[arg-type]
# (typeshed types the C scanner's argument as itself)


_PLAIN_DECODER = json.JSONDecoder()  # floats unchecked: for node_hint only


def node_hint(body: bytes) -> str | None:
    """The body's top-level ``nodeId``, read at C speed (no range check per number) to find a node's
    own key before the signature check; None when there is none or the body is not JSON. Never raises."""
    try:
        doc = _PLAIN_DECODER.decode(body.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    node = doc.get("nodeId") if isinstance(doc, dict) else None
    return node if isinstance(node, str) else None


def parse_json(body: bytes) -> Any:
    """The parsed body, or PayloadError (not UTF-8, not JSON, nested too deep), or FieldError
    naming the path of a number too large for a double (``details.v: ...``)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadError("body is not valid UTF-8") from None
    try:
        try:
            value, end = _scan(text, 0)
            if end == len(text):
                return value
        except (StopIteration, ValueError):
            pass
        if text.startswith("\ufeff"):  # what json.loads says before it decodes
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        return _DECODER.decode(text)
    except RecursionError:
        raise PayloadError("body is nested too deeply") from None
    except ValueError as exc:
        if "integer string conversion" not in str(exc):
            raise PayloadError(f"body is not JSON: {exc}") from None
        number = ""  # an integer longer than Python reads (sys.get_int_max_str_digits)
    except _NotFinite as exc:
        number = str(exc)
    # Only for a body with such a number: read it again to name where the number is.
    try:
        doc = _FIND_DECODER.decode(text)
    except RecursionError:  # further on
        raise PayloadError("body is nested too deeply") from None
    except ValueError as exc:  # a NaN further on
        raise PayloadError(f"body is not JSON: {exc}") from None
    try:
        where = _overflow_at(doc, "") or "body"
    except RecursionError:  # parsed, but deeper than this walk can go
        where = "body"
    if not number:
        raise FieldError(_excerpt(where, 200), f"an integer longer than {_INT_DIGITS} digits is more than this "
                                               "bridge reads (Python's guard against slow conversions)")
    raise FieldError(_excerpt(where, 200), f"the number {_excerpt(number, 40)} is too large for a double "
                                           "(JSON.parse makes it Infinity, which JSON cannot carry)")


def _excerpt(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit // 2]}...{text[-limit // 4:]} ({len(text)} characters)"


def _overflow_at(value: Any, where: str) -> str | None:
    """The path of the first number under ``value`` that overflowed (read as ``_OVERFLOW``)."""
    if value is _OVERFLOW:
        return where
    if isinstance(value, dict):
        for k, v in value.items():
            key = k.encode("utf-8", "backslashreplace").decode()  # a lone surrogate stays printable
            found = _overflow_at(v, f"{where}.{key}" if where else key)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = _overflow_at(v, f"{where}[{i}]")
            if found is not None:
                return found
    return None


def _string(obj: Mapping[str, Any], key: str, where: str, limit: int = MAX_FIELD_LENGTH, escaped: bool = True) -> str:
    if key not in obj:
        raise FieldError(where, "is required")
    value = obj[key]
    if not isinstance(value, str):
        raise FieldError(where, f"must be a string, not {_json_type(value)}")
    if not value:
        raise FieldError(where, "must not be empty")
    if len(value) > limit:
        raise FieldError(where, f"is longer than {limit} characters")
    if "\x00" in value:
        raise FieldError(where, "must not contain NUL characters")
    if escaped and _LONE_SURROGATE.search(value):
        raise FieldError(where, _SURROGATE_HINT)
    return value


def _surrogate_at(value: Any, where: str) -> str | None:
    """The path of the first key or string under ``value`` holding a lone surrogate."""
    if isinstance(value, str):
        return where if _LONE_SURROGATE.search(value) else None
    if isinstance(value, dict):
        for k, v in value.items():
            if _LONE_SURROGATE.search(k):
                return f"{where}.{k.encode('utf-8', 'backslashreplace').decode()}"
            found = _surrogate_at(v, f"{where}.{k}")
            if found:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = _surrogate_at(v, f"{where}[{i}]")
            if found:
                return found
    return None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "a string"


def to_event(
    doc: Any,
    *,
    path_node: str | None = None,
    labels: Mapping[str, str] | None = None,
    received_at: datetime,
    escaped: bool = True,
) -> Event:
    """Validate a parsed body. PayloadError (400), FieldError (422), NodeRejected (403).

    ``escaped=False``: the body held no ``\\u`` escape, the only way JSON text carries a lone
    surrogate (UTF-8 cannot encode one), so there is none to look for."""
    if not isinstance(doc, dict):
        raise PayloadError(f"body must be a JSON object, not {_json_type(doc)}")
    event_type = _string(doc, "eventType", "eventType", MAX_FIELD_LENGTH, escaped)
    stamp = _string(doc, "eventTimestamp", "eventTimestamp", 64, escaped)
    node_id = _string(doc, "nodeId", "nodeId", MAX_ID_LENGTH, escaped)
    if "details" not in doc:
        raise FieldError("details", "is required")
    details = doc["details"]
    if not isinstance(details, dict):
        raise FieldError("details", f"must be an object, not {_json_type(details)}")
    details_node = _string(details, "nodeId", "details.nodeId", MAX_ID_LENGTH, escaped)
    status = _string(details, "status", "details.status", 64, escaped)
    # Stored and sent on whole: a lone surrogate anywhere in it would fail there, on every retry.
    bad = _surrogate_at(details, "details") if escaped else None
    if bad is not None:
        raise FieldError(bad, _SURROGATE_HINT)
    try:
        timestamp = parse_timestamp(stamp)
    except ValueError as exc:
        raise FieldError("eventTimestamp", str(exc)) from None
    if details_node != node_id:
        raise NodeRejected("details.nodeId does not match nodeId")
    if path_node is not None and path_node != node_id:
        raise NodeRejected("nodeId does not match the node in the URL path")
    return Event(
        event_type=event_type,
        timestamp=timestamp,
        node_id=node_id,
        status=status,
        details=details,
        labels=dict(labels or {}),
        received_at=received_at,
    )
