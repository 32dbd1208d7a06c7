"""Logging setup: human-readable text by default, one JSON object per line with ``format: json``.

Extra fields passed as ``extra={...}`` become JSON keys. A redaction filter replaces every
configured secret value with ``<secret>`` as a last line of defence: secrets are never logged
on purpose, and this makes sure an exception text cannot leak one either.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from bridge.config import Config, LogConfig
from bridge.redact import Redactor, config_secrets

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        doc.update(_extras(record))
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:  # already formatted (and scrubbed) by the RedactingFilter
            doc["exception"] = record.exc_text
        if record.stack_info:
            doc["stack"] = record.stack_info
        text = json.dumps(doc, default=str, ensure_ascii=False)
        # json escapes C0 controls; DEL, C1, line separators and lone surrogates (which no stream can
        # encode) it writes raw: make those \uXXXX too.
        return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text) if _UNSAFE.search(text) else text


# Control characters (CR and LF first), Unicode line breaks, bidirectional overrides and lone
# surrogates, written as escapes: a signed node id "n1\r\n2026-... ERROR ..." must not start a log
# line of its own, nor "\u202e" display the rest of the line reversed in a terminal or log viewer.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2028\u2029\u2066-\u2069\ud800-\udfff]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_one(m: re.Match[str]) -> str:
    c = m.group()
    return _ESCAPES.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def escape_text(text: str) -> str:
    """``text`` on one line: control characters, line separators and lone surrogates escaped."""
    return _UNSAFE.sub(_escape_one, text) if _UNSAFE.search(text) else text


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        # Only the message: a traceback is appended after this and keeps its own lines.
        record.message = escape_text(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        if extras:
            head, sep, tail = line.partition("\n")  # keep a traceback below the fields
            line = head + " " + " ".join(f"{escape_text(str(k))}={_text_value(v)}" for k, v in extras.items()) \
                + sep + tail
        return line


def _text_value(value: Any) -> str:
    # Structured extras (the log receiver's ``alert``) as compact JSON, so the line stays one line.
    if isinstance(value, dict | list | tuple):
        return escape_text(json.dumps(value, separators=(",", ":"), default=str, ensure_ascii=False))
    return escape_text(str(value))


class RedactingFilter(logging.Filter):
    """Replace secret values in the final message, extra fields, exception and stack text."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.redact = Redactor(secrets, mask="<secret>")

    def _clean_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {k: self._clean_value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean_value(v) for v in value]
        return value

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.redact:
            return True
        msg = record.getMessage()
        cleaned = self.redact(msg)
        if cleaned != msg:
            record.msg, record.args = cleaned, None
        for key, value in _extras(record).items():
            if isinstance(value, str | dict | list | tuple):
                setattr(record, key, self._clean_value(value))
        if record.exc_info and record.exc_info[1] is not None:
            text = self.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info, record.exc_text = None, text
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


def _formatter(log_cfg: LogConfig) -> logging.Formatter:
    return JSONFormatter() if log_cfg.format == "json" else TextFormatter()


def setup(log_cfg: LogConfig, config: Config | None = None, *, stream: Any = None) -> None:
    """(Re)configure the root logger. Safe to call again on reload."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_alert_bridge", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._alert_bridge = True  # type: ignore[attr-defined]
    handler.setFormatter(_formatter(log_cfg))
    handler.addFilter(RedactingFilter(config_secrets(config) if config is not None else []))
    root.addHandler(handler)
    root.setLevel(log_cfg.level.upper())
    # aiohttp's access log would print one more line per request; ours already says what matters.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def reconfigure(config: Config) -> None:
    """Apply a reloaded config to the handlers ``setup`` installed: format, level, new secrets.

    Does nothing when ``setup`` was never called (an embedding application owns its logging).
    """
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "_alert_bridge", False)]
    for handler in ours:
        handler.setFormatter(_formatter(config.log))
        for f in handler.filters:
            if isinstance(f, RedactingFilter):
                f.redact.add(config_secrets(config))
    if ours:
        root.setLevel(config.log.level.upper())
