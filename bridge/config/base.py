"""The building blocks every config section shares: strict models, ``*_file`` secret twins,
durations, host:port, paths relative to the config file, and one-or-many string lists.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationInfo,
    model_validator,
)

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(value: Any) -> float:
    """'1h30m' → 5400.0 seconds. Plain numbers are seconds; 0 means off where a field allows it."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m or 24h")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return _bounded(float(value))
    if not isinstance(value, str):
        raise ValueError("expected a duration such as 30s, 5m or 24h")
    text = value.strip()
    if text == "0":
        return 0.0
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"{value!r} is not a duration; write e.g. 30s, 5m, 24h or 1h30m")
    return _bounded(total)


MAX_DURATION = 100 * 365 * 86400.0  # longer is a typo; and every duration must fit a datetime sum


class DurationTooLong(ValueError):
    """A duration past MAX_DURATION (or not finite); a caller with a tighter bound may say its own."""


def _bounded(seconds: float) -> float:
    if not math.isfinite(seconds) or seconds > MAX_DURATION:
        raise DurationTooLong("a duration must be finite and at most 100 years (36500d)")
    return seconds


def _timer_duration(value: Any) -> float:
    seconds = parse_duration(value)
    if 0 < seconds < 1:
        raise ValueError("an incident timer (for, repeat_interval, escalate.after, flapping.window) is 0 (off) "
                         "or at least 1s")
    return seconds


def format_duration(seconds: float) -> str:
    if seconds == 0:
        return "0"
    parts, rest = [], int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts) or f"{seconds:g}s"


Duration = Annotated[float, BeforeValidator(parse_duration)]
TimerDuration = Annotated[float, BeforeValidator(_timer_duration)]  # 0 or >= 1 s: timers never spin


def _host_port(value: Any) -> str:
    if not isinstance(value, str) or ":" not in value:
        raise ValueError("expected host:port, e.g. 127.0.0.1:8080")
    host, _, port = value.rpartition(":")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"port {port!r} is not a number from 0 to 65535")
    if not host:
        raise ValueError("expected host:port with a host, e.g. 0.0.0.0:8080")
    return value


HostPort = Annotated[str, BeforeValidator(_host_port)]


def split_host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def _base_dir(info: ValidationInfo | None) -> Path | None:
    """The config file's directory, passed by load() as validation context."""
    context = info.context if info is not None else None
    base = context.get("base_dir") if isinstance(context, dict) else None
    return base if isinstance(base, Path) else None


def resolve_path(path: str | Path, base: Path | None) -> Path:
    """A relative path in a config file means next to that file (as in Prometheus), not the cwd."""
    p = Path(path).expanduser()
    return p if p.is_absolute() or base is None else base / p


def _resolve_file(value: Path, info: ValidationInfo) -> Path:
    return resolve_path(value, _base_dir(info))


FilePath = Annotated[Path, AfterValidator(_resolve_file)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SecretFiles(Strict):
    """Reads ``<name>_file`` into ``<name>`` for each field listed in ``_secret_fields``."""

    _secret_fields: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        base = _base_dir(info)
        for name in cls._secret_fields.default:  # type: ignore[attr-defined]
            file_key = f"{name}_file"
            path = data.get(file_key)
            if path is None:
                continue
            if data.get(name) not in (None, ""):
                raise ValueError(f"set {name} or {file_key}, not both")
            try:
                data[name] = resolve_path(str(path), base).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(f"{file_key}: cannot read {path}: {exc.strerror or exc}") from None
            if not data[name]:  # an empty Kubernetes secret would fail every delivery, silently until then
                raise ValueError(f"{file_key}: {path} is empty")
        return data


def _str_or_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


StrList = Annotated[list[str], BeforeValidator(_str_or_list)]
