"""Typed configuration: YAML → validated objects, with the YAML path in every error.

Unknown keys are errors (a typo must never silently disable an alert). ``${VAR}`` and
``${VAR:-default}`` are replaced from the environment in string values; every secret has a
``*_file`` twin for Kubernetes secret mounts. Durations are written ``30s``, ``5m``, ``24h``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from bridge.errors import ConfigError
from bridge.model import KNOWN_STATUSES, parse_timestamp

DEFAULT_KEY_URL = "https://cloud-api.thunderstack.org/api/webhook-public-key"

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(value: Any) -> float:
    """'1h30m' → 5400.0 seconds. Plain numbers are seconds; 0 means off where a field allows it."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m or 24h")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
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
    return total


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


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SecretFiles(Strict):
    """Reads ``<name>_file`` into ``<name>`` for each field listed in ``_secret_fields``."""

    _secret_fields: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name in cls._secret_fields.default:  # type: ignore[attr-defined]
            file_key = f"{name}_file"
            path = data.get(file_key)
            if path is None:
                continue
            if data.get(name) not in (None, ""):
                raise ValueError(f"set {name} or {file_key}, not both")
            try:
                data[name] = Path(str(path)).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(f"{file_key}: cannot read {path}: {exc.strerror or exc}") from None
            if not data[name]:  # an empty Kubernetes secret would fail every delivery, silently until then
                raise ValueError(f"{file_key}: {path} is empty")
        return data


# --- server, verification, nodes, storage -------------------------------------------------------


class TLSConfig(Strict):
    cert_file: Path
    key_file: Path


class ServerConfig(SecretFiles):
    _secret_fields = ("admin_token",)
    listen: HostPort = "127.0.0.1:8080"
    admin_listen: HostPort = "127.0.0.1:9091"
    path: str = "/webhook"
    max_body_bytes: int = Field(65536, ge=256, le=16 * 1024 * 1024)
    tls: TLSConfig | None = None
    # A client that has not sent its whole body by then is cut off (slowloris).
    body_timeout: Duration = 10.0
    # A connection that has not sent a complete request line and headers for this long is closed:
    # idle keep-alive connections, and clients that never finish their headers (slowloris).
    idle_timeout: Duration = 15.0
    shutdown_grace: Duration = 10.0
    # Bearer token for the admin listener (all but /healthz, /readyz and, when metrics_public, /metrics).
    admin_token: SecretStr | None = None
    admin_token_file: str | None = None
    metrics_public: bool = False

    @field_validator("admin_token")
    @classmethod
    def _token(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and (len(v.get_secret_value()) < 16 or not v.get_secret_value().isprintable()
                              or " " in v.get_secret_value()):
            raise ValueError("must be at least 16 printable characters without spaces "
                             "(e.g. the output of: openssl rand -hex 32)")
        return v

    @field_validator("idle_timeout", "body_timeout")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be longer than 0 (a client could otherwise hold a connection forever)")
        return v

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/") or (v.endswith("/") and v != "/"):
            raise ValueError("must start with '/' and not end with '/', e.g. /webhook")
        return v


class VerificationConfig(SecretFiles):
    _secret_fields = ("api_token",)
    public_key_url: str | None = DEFAULT_KEY_URL
    api_token: SecretStr | None = None
    api_token_file: str | None = None
    public_key_file: Path | None = None
    public_key: str | None = None
    refresh_interval: Duration = 3600.0
    fetch_timeout: Duration = 10.0
    max_event_age: Duration = 86400.0
    max_clock_skew: Duration = 300.0
    # At most one refresh per this interval when signatures fail (a flood must not hammer the key URL).
    failure_refresh_interval: Duration = 60.0

    @model_validator(mode="after")
    def _one_source(self) -> VerificationConfig:
        if self.public_key_file and self.public_key:
            raise ValueError("set public_key or public_key_file, not both")
        return self

    @property
    def uses_url(self) -> bool:
        return self.public_key is None and self.public_key_file is None and bool(self.public_key_url)


class NodeConfig(Strict):
    labels: dict[str, str] = Field(default_factory=dict)
    public_key_file: Path | None = None
    public_key: str | None = None


class RetentionConfig(Strict):
    done: Duration = 86400.0
    dead: Duration = 7 * 86400.0
    events: Duration = 7 * 86400.0


class StorageConfig(Strict):
    url: str = "sqlite:///var/lib/alert-bridge/bridge.db"
    dedup_ttl: Duration = 48 * 3600.0
    retention: RetentionConfig = RetentionConfig()
    prune_interval: Duration = 60.0
    # A claimed job whose worker died (replica crash) is re-queued after this long.
    visibility_timeout: Duration = 120.0

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^(sqlite://.+|memory://.*|rediss?://.+)$", v):
            raise ValueError("expected sqlite:///path/to/bridge.db, memory:// or redis://host:port/db")
        return v


# --- receivers -------------------------------------------------------------------------------------


class RetryConfig(Strict):
    max_attempts: int = Field(8, ge=1, le=1000)
    max_elapsed: Duration = 3600.0
    initial_backoff: Duration = 1.0
    max_backoff: Duration = 300.0


class ReceiverBase(SecretFiles):
    retry: RetryConfig = RetryConfig()
    timeout: Duration = 10.0
    concurrency: int = Field(4, ge=1, le=256)
    rate_limit: float = Field(0.0, ge=0.0)  # messages per second; 0 = unlimited
    title: str | None = None  # template overrides
    text: str | None = None


class SlackReceiverConfig(ReceiverBase):
    _secret_fields = ("webhook_url", "token")
    type: Literal["slack"]
    webhook_url: SecretStr | None = None
    webhook_url_file: str | None = None
    token: SecretStr | None = None
    token_file: str | None = None
    channel: str | None = None
    api_url: str = "https://slack.com/api/"
    concurrency: int = Field(1, ge=1, le=256)
    rate_limit: float = Field(1.0, ge=0.0)  # Slack allows about one message a second per channel

    @model_validator(mode="after")
    def _mode(self) -> SlackReceiverConfig:
        if (self.webhook_url is None) == (self.token is None):
            raise ValueError("set exactly one of webhook_url (incoming webhook) or token (bot token)")
        if self.token is not None and not self.channel:
            raise ValueError("token needs channel, e.g. channel: '#node-alerts'")
        return self


class SMTPConfig(SecretFiles):
    _secret_fields = ("password",)
    host: str
    port: int = Field(587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    password_file: str | None = None
    # Trust this CA bundle instead of the system's (private relays, tests).
    ca_file: Path | None = None

    @model_validator(mode="after")
    def _auth(self) -> SMTPConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        return self


class EmailReceiverConfig(ReceiverBase):
    type: Literal["email"]
    to: list[str] = Field(min_length=1)
    from_: str = Field(alias="from")
    smtp: SMTPConfig
    subject: str | None = None
    html: str | None = None

    @field_validator("to")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        for addr in v:
            if "@" not in addr:
                raise ValueError(f"{addr!r} is not an email address")
        return v


class WebhookReceiverConfig(ReceiverBase):
    _secret_fields = ("url", "signing_secret")
    type: Literal["webhook"]
    url: SecretStr | None = None
    url_file: str | None = None
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    signing_secret: SecretStr | None = None
    signing_secret_file: str | None = None
    body_template: str | None = None

    @model_validator(mode="after")
    def _url_set(self) -> WebhookReceiverConfig:
        if self.url is None or not re.match(r"^https?://", self.url.get_secret_value()):
            raise ValueError("url must be set to an http:// or https:// URL")
        return self


class LogReceiverConfig(ReceiverBase):
    type: Literal["log"]


ReceiverConfig = Annotated[
    SlackReceiverConfig | EmailReceiverConfig | WebhookReceiverConfig | LogReceiverConfig,
    Field(discriminator="type"),
]
RECEIVER_TYPES = ("slack", "email", "webhook", "log")


# --- routes, silences, links, log ------------------------------------------------------------------


def _str_or_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


StrList = Annotated[list[str], BeforeValidator(_str_or_list)]


class MatchConfig(Strict):
    node: StrList | None = None  # ids or globs
    labels: dict[str, str] | None = None
    status: StrList | None = None
    event_type: StrList | None = None
    previous_status: StrList | None = None


class RouteConfig(Strict):
    name: str
    match: MatchConfig = MatchConfig()
    to: StrList = Field(min_length=1)
    stop: bool = False
    repeat_interval: Duration = 0.0


class SilenceConfig(Strict):
    node: str = "*"
    status: StrList | None = None
    starts_at: datetime | None = None
    ends_at: datetime
    comment: str = ""

    @field_validator("starts_at", "ends_at", mode="before")
    @classmethod
    def _ts(cls, v: Any) -> Any:
        if isinstance(v, datetime) and v.tzinfo is None:
            raise ValueError("give the time with a zone, e.g. 2026-04-16T12:00:00Z")
        return parse_timestamp(v) if isinstance(v, str) else v


class LinksConfig(Strict):
    node: str | None = None  # template, e.g. https://cloud.thunderstack.org/nodes/{{ event.nodeId }}


class LogConfig(Strict):
    format: Literal["text", "json"] = "text"
    level: Literal["debug", "info", "warning", "error"] = "info"


class DeliveryConfig(Strict):
    # Jobs in flight at SIGTERM get this long to finish; the rest stay pending for the next start.
    shutdown_grace: Duration = 10.0
    poll_interval: Duration = 1.0
    batch_size: int = Field(64, ge=1, le=10000)


class Config(Strict):
    server: ServerConfig = ServerConfig()
    verification: VerificationConfig = VerificationConfig()
    nodes: dict[str, NodeConfig] | None = None
    storage: StorageConfig = StorageConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    receivers: dict[str, ReceiverConfig] = Field(default_factory=dict)
    routes: list[RouteConfig] = Field(default_factory=list)
    default_to: StrList = Field(default_factory=list)
    silences: list[SilenceConfig] = Field(default_factory=list)
    links: LinksConfig = LinksConfig()
    log: LogConfig = LogConfig()

    # Filled by load(): where the config came from and non-fatal findings.
    source: str = Field("<memory>", exclude=True)
    warnings: list[str] = Field(default_factory=list, exclude=True)


# --- loading -----------------------------------------------------------------------------------------

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def format_path(loc: tuple[Any, ...] | list[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<root>"


def interpolate(value: Any, env: Mapping[str, str], path: tuple[Any, ...], problems: list[str]) -> Any:
    """Replace ${VAR} / ${VAR:-default} in every string value; a missing variable is a problem."""
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            problems.append(f"{format_path(path)}: environment variable {name} is not set")
            return ""

        return _VAR.sub(sub, value.replace("$${", "\0")).replace("\0", "${")
    if isinstance(value, dict):
        return {k: interpolate(v, env, (*path, k), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, (*path, i), problems) for i, v in enumerate(value)]
    return value


def _strip_union_tag(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    # pydantic puts the discriminator value into the path: receivers.x.slack.token → receivers.x.token
    if len(loc) >= 3 and loc[0] == "receivers" and loc[2] in RECEIVER_TYPES:
        return (*loc[:2], *loc[3:])
    return tuple(p for p in loc if p not in ("function-after[_str_or_list(), list[str]]",))


def _pydantic_problems(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = _strip_union_tag(tuple(err["loc"]))
        msg = err["msg"]
        # A *_file problem is raised by its model's validator: name the file key in the path.
        file_key = re.match(r"^Value error, (\w+_file): (.*)$", msg)
        if file_key:
            loc, msg = (*loc, file_key.group(1)), "Value error, " + file_key.group(2)
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; unknown keys are not ignored)"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        elif err["type"] == "union_tag_invalid":
            msg = f"unknown receiver type; expected one of {', '.join(RECEIVER_TYPES)}"
        elif err["type"] == "union_tag_not_found":
            msg = f"missing 'type'; expected one of {', '.join(RECEIVER_TYPES)}"
        problems.append(f"{format_path(loc)}: {msg}")
    return problems


def _semantic_problems(cfg: Config) -> tuple[list[str], list[str]]:
    problems: list[str] = []
    warnings: list[str] = []
    names = set(cfg.receivers)
    seen_routes: set[str] = set()
    for i, route in enumerate(cfg.routes):
        where = f"routes[{i}]"
        if route.name == "default" and cfg.default_to:
            problems.append(f"{where}.name: 'default' is the name of default_to's route; choose another")
        if route.name in seen_routes:
            problems.append(f"{where}.name: duplicate route name {route.name!r}")
        seen_routes.add(route.name)
        for j, rcv in enumerate(route.to):
            if rcv not in names:
                problems.append(f"{where}.to[{j}]: unknown receiver {rcv!r}")
        for key in ("status", "previous_status"):
            values = getattr(route.match, key) or []
            for j, status in enumerate(values):
                if status not in KNOWN_STATUSES:
                    warnings.append(
                        f"{where}.match.{key}[{j}]: {status!r} is not a known status "
                        f"({', '.join(sorted(KNOWN_STATUSES))}); kept, in case ThunderStack added it"
                    )
        if route.match.labels and cfg.nodes is None:
            problems.append(f"{where}.match.labels: labels come from 'nodes:', which is not configured")
        for key in ("node", "status", "event_type", "previous_status"):
            if getattr(route.match, key) == []:
                problems.append(f"{where}.match.{key}: an empty list can never match; omit the key instead")
    for j, rcv in enumerate(cfg.default_to):
        if rcv not in names:
            problems.append(f"default_to[{j}]: unknown receiver {rcv!r}")
    v = cfg.verification
    if v.max_event_age and cfg.storage.dedup_ttl < v.max_event_age + v.max_clock_skew:
        problems.append(
            f"storage.dedup_ttl: {format_duration(cfg.storage.dedup_ttl)} is shorter than "
            f"verification.max_event_age + max_clock_skew "
            f"({format_duration(v.max_event_age + v.max_clock_skew)}): a replayed event could alert twice"
        )
    if v.uses_url and v.public_key_url and not re.match(r"^https?://", v.public_key_url):
        problems.append("verification.public_key_url: must be an http:// or https:// URL")
    if not v.uses_url and v.public_key is None and v.public_key_file is None:
        problems.append("verification: set one of public_key_url, public_key_file or public_key")
    for node_id, node in (cfg.nodes or {}).items():
        if node.public_key_file and node.public_key:
            problems.append(f"nodes.{node_id}: set public_key or public_key_file, not both")
    for i, silence in enumerate(cfg.silences):
        if silence.starts_at and silence.starts_at >= silence.ends_at:
            problems.append(f"silences[{i}].ends_at: must be after starts_at")
    return problems, warnings


def unreadable_files(cfg: Config) -> list[str]:
    """Files read only when the bridge starts (TLS pair, public keys, CA bundle) that cannot be read now.

    Not part of ``parse`` (a config may be built before its files exist); ``check``, ``serve`` and
    reload run it through ``app.validate``."""
    files: list[tuple[str, Path]] = []
    if cfg.server.tls is not None:
        files += [("server.tls.cert_file", cfg.server.tls.cert_file), ("server.tls.key_file", cfg.server.tls.key_file)]
    if cfg.verification.public_key_file is not None:
        files.append(("verification.public_key_file", cfg.verification.public_key_file))
    for node_id, node in (cfg.nodes or {}).items():
        if node.public_key_file is not None:
            files.append((f"nodes.{node_id}.public_key_file", node.public_key_file))
    for name, rcv in cfg.receivers.items():
        if isinstance(rcv, EmailReceiverConfig) and rcv.smtp.ca_file is not None:
            files.append((f"receivers.{name}.smtp.ca_file", rcv.smtp.ca_file))
    problems = []
    for where, path in files:
        try:
            with open(path, "rb") as f:
                f.read(1)
        except OSError as exc:
            problems.append(f"{where}: cannot read {path}: {exc.strerror or exc}")
    return problems


def parse(data: Any, *, env: Mapping[str, str] | None = None, source: str = "<memory>") -> Config:
    """Validate already-loaded YAML data. Raises ConfigError listing every problem."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: the top level must be a mapping (server:, verification:, ...)"])
    problems = [f"{key}: unknown key (check the spelling; unknown keys are not ignored)"
                for key in ("source", "warnings") if key in data]  # load()'s own fields, not YAML keys
    data = interpolate(data, os.environ if env is None else env, (), problems)
    if problems:
        raise ConfigError(problems)
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_pydantic_problems(exc)) from None
    problems, warnings = _semantic_problems(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg.model_copy(update={"source": source, "warnings": warnings})


def load(path: str | Path, *, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a YAML config file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{path}:{where}: not valid YAML: {problem}"]) from None
    return parse(data, env=env, source=str(path))
