"""The config sections other than receivers and server (server.py): verification, nodes, storage,
routes, incidents, silences, links, log, delivery; and the top-level ``Config``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bridge.config.base import (
    Duration,
    FilePath,
    SecretFiles,
    Strict,
    StrList,
    TimerDuration,
    _base_dir,
    resolve_path,
)
from bridge.config.lint import bare_var_fix
from bridge.config.receivers import ReceiverConfig
from bridge.config.server import ServerConfig
from bridge.model import parse_timestamp

DEFAULT_KEY_URL = "https://cloud-api.thunderstack.org/api/webhook-public-key"


# --- verification, nodes, storage ------------------------------------------------------------------


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
    # A conversation's reference (Slack thread root) after the last message in it (bridge/conversations.py).
    conversations: Duration = 30 * 86400.0


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
            raise ValueError("expected sqlite:///path/to/bridge.db, memory:// or redis://host:port/db"
                             + bare_var_fix(v))
        if v.startswith("sqlite://"):  # sqlite://data/x.db is relative: next to the config file
            return "sqlite://" + str(resolve_path(v[len("sqlite://") :], _base_dir(info)))
        return v


# --- routes, silences, links, log ------------------------------------------------------------------


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
    after: TimerDuration  # since the incident opened (bridge clock)
    to: StrList = Field(min_length=1)


class RouteConfig(Strict):
    name: str
    match: MatchConfig = MatchConfig()
    to: StrList = Field(min_length=1)
    stop: bool = False
    # Incident lifecycle (docs/incidents.md). ``for``: notify only if the condition still holds after
    # this long; repeat_interval: remind while it holds and nobody acknowledged it (0 = never).
    for_: TimerDuration = Field(0.0, alias="for")
    repeat_interval: TimerDuration = 0.0
    escalate: list[EscalationConfig] = Field(default_factory=list)
    send_resolved: bool = True
    send_updates: bool = False
    # Fleet digests (bridge/grouping.py): firings of this route that come due within group_wait of
    # each other go to each receiver as one digest; group_interval: how long after a group's last
    # message new firings join it as follow-ups; group_by: labels that split the route into groups.
    group_wait: Duration = 0.0
    group_interval: Duration = 300.0
    group_by: StrList = Field(default_factory=list)

    @field_validator("group_wait", "group_interval")
    @classmethod
    def _group_duration(cls, v: float) -> float:
        if 0 < v < 1:
            raise ValueError("must be 0 (off) or at least 1s")
        return v

    @field_validator("group_by")
    @classmethod
    def _group_by(cls, v: list[str]) -> list[str]:
        for label in v:
            if not label.strip():
                raise ValueError("a label name cannot be empty")
        if len(set(v)) != len(v):
            raise ValueError("lists a label twice")
        return v


class FlappingConfig(Strict):
    transitions: int = Field(0, ge=0, le=1000)  # status changes within window that make a node flapping; 0 = off
    window: TimerDuration = 600.0

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
    # How often a firing a silence withheld is tried again: the longest a node still down when its
    # silence ends (or is expired early) waits for its page.
    silence_recheck: TimerDuration = 60.0

    @field_validator("silence_recheck")
    @classmethod
    def _recheck(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be 1s or longer (a firing a silence withheld is tried again this often), "
                             "e.g. silence_recheck: 1m")
        return v


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
