"""Typed configuration: YAML → validated objects, with the YAML path in every error.

Unknown keys are errors (a typo must never silently disable an alert). ``${VAR}`` and
``${VAR:-default}`` are replaced from the environment in string values; every secret has a
``*_file`` twin for Kubernetes secret mounts. Durations are written ``30s``, ``5m``, ``24h``.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bridge import config_lint
from bridge.errors import ConfigError
from bridge.model import parse_timestamp

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


# --- server, verification, nodes, storage -------------------------------------------------------


class TLSConfig(Strict):
    cert_file: FilePath
    key_file: FilePath


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
    public_key_file: FilePath | None = None
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
    public_key_file: FilePath | None = None
    public_key: str | None = None


class NodeLabelsConfig(Strict):
    """Labels for every node whose id matches a glob, allowed or not (``nodes:`` is the allow-list)."""

    match: StrList = Field(min_length=1)
    labels: dict[str, str] = Field(min_length=1)


class RetentionConfig(Strict):
    done: Duration = 86400.0
    dead: Duration = 7 * 86400.0
    events: Duration = 7 * 86400.0


class StorageConfig(SecretFiles):
    _secret_fields = ("url",)  # a redis:// URL may carry the password
    url: str = "sqlite:///var/lib/alert-bridge/bridge.db"
    url_file: str | None = None
    dedup_ttl: Duration = 48 * 3600.0
    retention: RetentionConfig = RetentionConfig()
    prune_interval: Duration = 60.0
    # A claimed job whose worker died (replica crash) is re-queued after this long.
    visibility_timeout: Duration = 120.0

    @field_validator("url")
    @classmethod
    def _url(cls, v: str, info: ValidationInfo) -> str:
        if not re.match(r"^(sqlite://.+|memory://.*|rediss?://.+)$", v):
            raise ValueError("expected sqlite:///path/to/bridge.db, memory:// or redis://host:port/db")
        if v.startswith("sqlite://"):  # sqlite://data/x.db is relative: next to the config file
            return "sqlite://" + str(resolve_path(v[len("sqlite://") :], _base_dir(info)))
        return v


# --- receivers -------------------------------------------------------------------------------------


class RetryConfig(Strict):
    max_attempts: int = Field(8, ge=1, le=1000)
    max_elapsed: Duration = 3600.0
    initial_backoff: Duration = 1.0
    max_backoff: Duration = 300.0


# How a template field renders: html escapes values, json JSON-escapes them (bridge/render.py).
TemplateKind = Literal["text", "html", "json"]


class ReceiverBase(SecretFiles):
    retry: RetryConfig = RetryConfig()
    timeout: Duration = 10.0
    concurrency: int = Field(4, ge=1, le=256)
    rate_limit: float = Field(0.0, ge=0.0)  # messages per second; 0 = unlimited
    title: str | None = None  # template overrides
    text: str | None = None

    def template_fields(self) -> dict[str, TemplateKind]:
        """The keys holding templates (checked by ``check``) and how each renders."""
        return {"title": "text", "text": "text"}


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
    ca_file: FilePath | None = None

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

    def template_fields(self) -> dict[str, TemplateKind]:
        return {**super().template_fields(), "subject": "text", "html": "html"}

    @field_validator("to")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        for addr in v:
            if "@" not in addr:
                raise ValueError(f"{addr!r} is not an email address")
        return v


WHSEC_PREFIX = "whsec_"


def signing_key(secret: str) -> bytes:
    """``whsec_<base64>`` secrets carry the key base64-encoded (Standard Webhooks); any other is
    used as is. Raises ValueError for an undecodable or empty key (``check`` and ``serve`` alike)."""
    if not secret.startswith(WHSEC_PREFIX):
        return secret.encode()
    try:
        key = base64.b64decode(secret[len(WHSEC_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a whsec_ secret must be base64 after the prefix") from None
    if not key:
        raise ValueError("a whsec_ secret needs a key after the prefix")
    return key


class WebhookReceiverConfig(ReceiverBase):
    _secret_fields = ("url", "signing_secret")
    type: Literal["webhook"]
    url: SecretStr | None = None
    url_file: str | None = None
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    headers_file: str | None = None  # YAML mapping, one "Name: value" per line
    signing_secret: SecretStr | None = None
    signing_secret_file: str | None = None
    body_template: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _read_headers_file(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict) or data.get("headers_file") is None:
            return data
        if data.get("headers"):
            raise ValueError("set headers or headers_file, not both")
        path = resolve_path(str(data["headers_file"]), _base_dir(info))
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ValueError(f"headers_file: cannot read {path}: {exc.strerror or exc}") from None
        except yaml.YAMLError:
            loaded = None
        pairs = loaded.items() if isinstance(loaded, dict) else None
        if pairs is None or not all(isinstance(k, str) and isinstance(v, str) for k, v in pairs):
            raise ValueError(f"headers_file: {path} must hold one 'Name: value' line per header") from None
        return {**data, "headers": loaded}

    def template_fields(self) -> dict[str, TemplateKind]:
        # A body is JSON unless a Content-Type header says the operator chose another format.
        types = [v.get_secret_value().lower() for k, v in self.headers.items() if k.lower() == "content-type"]
        body: TemplateKind = "json" if all("json" in t for t in types) else "text"
        return {**super().template_fields(), "body_template": body}

    @model_validator(mode="after")
    def _url_set(self) -> WebhookReceiverConfig:
        if self.url is None or not re.match(r"^https?://", self.url.get_secret_value()):
            raise ValueError("url must be set to an http:// or https:// URL")
        return self

    @field_validator("signing_secret")
    @classmethod
    def _decodable(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None:
            signing_key(v.get_secret_value())
        return v


class LogReceiverConfig(ReceiverBase):
    type: Literal["log"]


# --- paging and chat services (bridge/receivers/<type>.py); each URL is overridable for tests ----


def _require_url(value: str | None, key: str) -> None:
    if value is None or not re.match(r"^https?://[^/\s]+", value):
        raise ValueError(f"{key} must be set to an http:// or https:// URL")


PDSeverity = Literal["critical", "error", "warning", "info"]
_PD_SEVERITY: dict[str, PDSeverity] = {"FAILED": "critical", "RUNNING": "info"}


class PagerDutyReceiverConfig(ReceiverBase):
    """PagerDuty Events API v2: one integration's routing key (an "Events API V2" integration)."""

    _secret_fields = ("routing_key",)
    type: Literal["pagerduty"]
    routing_key: SecretStr | None = None
    routing_key_file: str | None = None
    api_url: str = "https://events.pagerduty.com/v2/enqueue"
    severity: dict[str, PDSeverity] = Field(default_factory=lambda: dict(_PD_SEVERITY))
    default_severity: PDSeverity = "warning"
    rate_limit: float = Field(2.0, ge=0.0)  # PagerDuty allows about 120 events a minute per routing key

    @model_validator(mode="after")
    def _set(self) -> PagerDutyReceiverConfig:
        if self.routing_key is None:
            raise ValueError("routing_key (or routing_key_file) must be set: the integration key of an "
                             "Events API v2 integration")
        _require_url(self.api_url, "api_url")
        return self


OGPriority = Literal["P1", "P2", "P3", "P4", "P5"]
_OG_PRIORITY: dict[str, OGPriority] = {"FAILED": "P1"}


class OpsgenieReceiverConfig(ReceiverBase):
    """Opsgenie Alert API with an API integration's key; ``api_url`` https://api.eu.opsgenie.com for EU."""

    _secret_fields = ("api_key",)
    type: Literal["opsgenie"]
    api_key: SecretStr | None = None
    api_key_file: str | None = None
    api_url: str = "https://api.opsgenie.com"
    priority: dict[str, OGPriority] = Field(default_factory=lambda: dict(_OG_PRIORITY))
    default_priority: OGPriority = "P3"
    tags: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _set(self) -> OpsgenieReceiverConfig:
        if self.api_key is None:
            raise ValueError("api_key (or api_key_file) must be set: the key of an Opsgenie API integration")
        _require_url(self.api_url, "api_url")
        return self


class MSTeamsReceiverConfig(ReceiverBase):
    """A Teams Workflows "post to a channel when a webhook request is received" URL."""

    _secret_fields = ("url",)
    type: Literal["msteams"]
    url: SecretStr | None = None
    url_file: str | None = None
    concurrency: int = Field(1, ge=1, le=256)
    rate_limit: float = Field(1.0, ge=0.0)

    @model_validator(mode="after")
    def _set(self) -> MSTeamsReceiverConfig:
        _require_url(self.url.get_secret_value() if self.url else None, "url")
        return self


class DiscordReceiverConfig(ReceiverBase):
    """A Discord channel webhook URL (https://discord.com/api/webhooks/<id>/<token>)."""

    _secret_fields = ("url",)
    type: Literal["discord"]
    url: SecretStr | None = None
    url_file: str | None = None
    concurrency: int = Field(1, ge=1, le=256)
    rate_limit: float = Field(1.0, ge=0.0)

    @model_validator(mode="after")
    def _set(self) -> DiscordReceiverConfig:
        _require_url(self.url.get_secret_value() if self.url else None, "url")
        return self


def _chat_id(value: Any) -> Any:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class TelegramReceiverConfig(ReceiverBase):
    """A Telegram bot (token from @BotFather) posting to one chat with sendMessage."""

    _secret_fields = ("bot_token",)
    type: Literal["telegram"]
    bot_token: SecretStr | None = None
    bot_token_file: str | None = None
    chat_id: Annotated[str, BeforeValidator(_chat_id)] = Field(min_length=1)
    api_url: str = "https://api.telegram.org"
    concurrency: int = Field(1, ge=1, le=256)
    rate_limit: float = Field(1.0, ge=0.0)  # Telegram: about one message a second per chat

    @model_validator(mode="after")
    def _set(self) -> TelegramReceiverConfig:
        if self.bot_token is None:
            raise ValueError("bot_token (or bot_token_file) must be set: the token @BotFather gave the bot")
        if not re.fullmatch(r"[0-9]+:[A-Za-z0-9_-]+", self.bot_token.get_secret_value()):
            raise ValueError("bot_token does not look like a bot token (digits, ':', then letters and digits)")
        _require_url(self.api_url, "api_url")
        return self


ReceiverConfig = Annotated[
    SlackReceiverConfig | EmailReceiverConfig | WebhookReceiverConfig | LogReceiverConfig
    | PagerDutyReceiverConfig | OpsgenieReceiverConfig | MSTeamsReceiverConfig | DiscordReceiverConfig
    | TelegramReceiverConfig,
    Field(discriminator="type"),
]
RECEIVER_TYPES = ("slack", "email", "webhook", "log", "pagerduty", "opsgenie", "msteams", "discord", "telegram")


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
    # "Anything but": a status ThunderStack adds later still matches.
    status_not: StrList | None = None
    previous_status_not: StrList | None = None

    @model_validator(mode="after")
    def _not_both(self) -> MatchConfig:
        for key in ("status", "previous_status"):
            if getattr(self, key) is not None and getattr(self, f"{key}_not") is not None:
                raise ValueError(f"set {key} or {key}_not, not both")
        return self


class EscalationConfig(Strict):
    after: Duration  # since the incident opened (bridge clock)
    to: StrList = Field(min_length=1)


class RouteConfig(Strict):
    name: str
    match: MatchConfig = MatchConfig()
    to: StrList = Field(min_length=1)
    stop: bool = False
    # Incident lifecycle (docs/incidents.md). ``for``: notify only if the condition still holds after
    # this long; repeat_interval: remind while it holds and nobody acknowledged it (0 = never).
    for_: Duration = Field(0.0, alias="for")
    repeat_interval: Duration = 0.0
    escalate: list[EscalationConfig] = Field(default_factory=list)
    send_resolved: bool = True
    send_updates: bool = False


class FlappingConfig(Strict):
    transitions: int = Field(0, ge=0, le=1000)  # status changes within window that make a node flapping; 0 = off
    window: Duration = 600.0

    @model_validator(mode="after")
    def _sensible(self) -> FlappingConfig:
        if self.transitions == 1:
            raise ValueError("transitions: 1 would call every status change flapping; use 2 or more, or 0 for off")
        if self.transitions and self.window <= 0:
            raise ValueError("window must be longer than 0 when transitions is set")
        return self


class IncidentsConfig(Strict):
    open_on: StrList = Field(default_factory=lambda: ["FAILED"])
    resolve_on: StrList = Field(default_factory=lambda: ["RUNNING"])
    flapping: FlappingConfig = FlappingConfig()


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
    # The allow-list: when set, any other node id is refused with 403.
    nodes: dict[str, NodeConfig] | None = None
    node_labels: list[NodeLabelsConfig] = Field(default_factory=list)
    storage: StorageConfig = StorageConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    receivers: dict[str, ReceiverConfig] = Field(default_factory=dict)
    routes: list[RouteConfig] = Field(default_factory=list)
    default_to: StrList = Field(default_factory=list)
    silences: list[SilenceConfig] = Field(default_factory=list)
    incidents: IncidentsConfig = IncidentsConfig()
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
            allowed = config_lint.model_keys_at(Config, tuple(err["loc"][:-1]))
            hint = config_lint.did_you_mean(str(err["loc"][-1]), allowed)
            msg = f"unknown key (check the spelling; unknown keys are not ignored){hint}"
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
    label_keys = {k for entry in cfg.node_labels for k in entry.labels}
    label_keys.update(k for node in (cfg.nodes or {}).values() for k in node.labels)
    if not cfg.routes and not cfg.default_to:
        warnings.append("routes: no route and no default_to: every event is recorded and nobody is notified")
    for i, route in enumerate(cfg.routes):
        where = f"routes[{i}]"
        if route.name == "default" and cfg.default_to:
            problems.append(f"{where}.name: 'default' is the name of default_to's route; choose another")
        if route.name in seen_routes:
            problems.append(f"{where}.name: duplicate route name {route.name!r}")
        seen_routes.add(route.name)
        for j, rcv in enumerate(route.to):
            if rcv not in names:
                problems.append(f"{where}.to[{j}]: unknown receiver {rcv!r}{config_lint.did_you_mean(rcv, names)}")
        for key in ("status", "previous_status", "status_not", "previous_status_not"):
            p, w = config_lint.status_findings(f"{where}.match.{key}", getattr(route.match, key) or [])
            problems += p
            warnings += w
        for key in sorted(route.match.labels or {}):  # with nodes:, routing checks each node's labels
            if cfg.nodes is None and key not in label_keys:
                problems.append(f"{where}.match.labels.{key}: no node_labels entry and no nodes: entry sets "
                                f"the label {key!r}, so the route can never match")
        for key in ("node", "status", "event_type", "previous_status", "status_not", "previous_status_not"):
            if getattr(route.match, key) == []:
                problems.append(f"{where}.match.{key}: an empty list can never match; omit the key instead")
    _incident_problems(cfg, names, problems, warnings)
    for j, rcv in enumerate(cfg.default_to):
        if rcv not in names:
            problems.append(f"default_to[{j}]: unknown receiver {rcv!r}{config_lint.did_you_mean(rcv, names)}")
    warnings += config_lint.secret_dollar_warnings(cfg)
    v = cfg.verification
    # The replay window: a captured event is "stale" after max_event_age (+ skew) and a duplicate
    # within dedup_ttl, so dedup_ttl must cover the whole window; with no age limit nothing can.
    if v.max_event_age == 0:
        problems.append(
            "verification.max_event_age: 0 (no age limit) lets a captured event alert again once "
            "storage.dedup_ttl has passed; set an age limit such as 24h (dedup_ttl must be at least "
            "max_event_age + max_clock_skew)"
        )
    elif cfg.storage.dedup_ttl < v.max_event_age + v.max_clock_skew:
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


def _incident_problems(cfg: Config, names: set[str], problems: list[str], warnings: list[str]) -> None:
    """The incident keys: escalation receivers and steps, open_on/resolve_on, pointless reminders."""
    resolve_on = set(cfg.incidents.resolve_on)
    for i, route in enumerate(cfg.routes):
        statuses = route.match.status
        if route.repeat_interval and statuses and resolve_on.issuperset(statuses):
            # The old suppression meaning of repeat_interval on a recovery route now means reminding.
            warnings.append(
                f"routes[{i}].repeat_interval: the route matches only {', '.join(statuses)} (incidents.resolve_on), "
                f"so it would remind every {format_duration(route.repeat_interval)} that the node is still healthy; "
                "drop repeat_interval here (repeat_interval now reminds, it no longer suppresses; "
                "send_resolved on the route that matches the failure sends the recovery)"
            )
        last = 0.0
        for j, step in enumerate(route.escalate):
            where = f"routes[{i}].escalate[{j}]"
            if step.after <= 0:
                problems.append(f"{where}.after: must be longer than 0 (the firing notification is step zero)")
            elif step.after <= last:
                problems.append(
                    f"{where}.after: {format_duration(step.after)} is not after the previous step's "
                    f"{format_duration(last)}; list the steps in increasing order"
                )
            last = max(last, step.after)
            if 0 < step.after <= route.for_:
                warnings.append(
                    f"{where}.after: {format_duration(step.after)} is not longer than the route's for "
                    f"({format_duration(route.for_)}): the escalation goes out before the first notification"
                )
            for k, rcv in enumerate(step.to):
                if rcv not in names:
                    problems.append(f"{where}.to[{k}]: unknown receiver {rcv!r}{config_lint.did_you_mean(rcv, names)}")
    inc = cfg.incidents
    for key in ("open_on", "resolve_on"):
        p, w = config_lint.status_findings(f"incidents.{key}", getattr(inc, key))
        problems += p
        warnings += w
    for j, status in enumerate(inc.resolve_on):
        if status in inc.open_on:
            problems.append(
                f"incidents.resolve_on[{j}]: {status!r} is also in open_on; a status cannot both open and "
                f"resolve an incident (remove it from one of the lists)"
            )
    if inc.open_on and not inc.resolve_on:
        warnings.append("incidents.resolve_on: empty; incidents are resolved only by hand")


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


def parse(
    data: Any, *, env: Mapping[str, str] | None = None, source: str = "<memory>", base_dir: Path | None = None
) -> Config:
    """Validate already-loaded YAML data. Raises ConfigError listing every problem.

    Relative file paths (``*_file``, ``public_key_file``, ``ca_file``, TLS files, a relative
    ``sqlite://`` path) are taken relative to ``base_dir``: load() passes the config file's directory."""
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
        base = base_dir.absolute() if base_dir is not None else None
        cfg = Config.model_validate(data, context={"base_dir": base})
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
    return parse(data, env=env, source=str(path), base_dir=path.parent)
