"""One config model per receiver type (bridge/receivers/<type>.py), their shared base, and the
``type``-tagged union ``receivers:`` entries are validated against.
"""

from __future__ import annotations

import base64
import binascii
import re
from email import message_from_string
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8, default
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bridge.config import yamlsource
from bridge.config.base import Duration, FilePath, SecretFiles, Strict, _base_dir, resolve_path
from bridge.config.lint import bare_var_fix


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

    def rendered_problem(self, field: str, value: str) -> str | None:
        """What is wrong with ``field`` as rendered for one alert (``check`` renders every template
        against sample alerts; the receiver checks the same at send time); None when it is usable."""
        return None


# Slack channel names are lowercase letters, digits, '-' and '_' (80 at most); IDs are C/G/D + A-Z0-9.
_SLACK_CHANNEL = re.compile(r"#?[a-z0-9][a-z0-9_.-]{0,79}|[CGDZ][A-Z0-9]{2,30}")
_SLACK_MENTION = re.compile(r"<@[UW][A-Z0-9]{2,30}>|<!subteam\^S[A-Z0-9]{2,30}(\|[^<>&|]{1,80})?>|<!(here|channel)>")
SLACK_TEMPLATE_MARKS = ("{{", "{%")


def slack_channel_problem(value: str) -> str | None:
    """Why ``value`` (a configured or rendered channel) is no channel chat.postMessage can take."""
    if not value.strip():
        return "is empty; give a channel name such as '#node-alerts' or a channel ID such as C0123ABCD"
    if _SLACK_CHANNEL.fullmatch(value) is None:
        shown = value if len(value) <= 80 else value[:77] + "..."
        return (f"{shown!r} is not a Slack channel: a name is '#' and up to 80 lowercase letters, digits, '-' "
                "or '_' (a template can use | lower), an ID is like C0123ABCD")
    return None


def _slack_mention(value: str) -> str:
    if _SLACK_MENTION.fullmatch(value) is None:
        raise ValueError(f"{value!r} is not a Slack mention; write <@U0123ABCD> for a user, "
                         "<!subteam^S0123ABCD> for a user group, or <!here> / <!channel>")
    return value


class SlackReceiverConfig(ReceiverBase):
    _secret_fields = ("webhook_url", "token")
    type: Literal["slack"]
    webhook_url: SecretStr | None = None
    webhook_url_file: str | None = None
    token: SecretStr | None = None
    token_file: str | None = None
    channel: str | None = None  # a name, an ID, or a template rendered per alert ("#{{ labels.team }}-alerts")
    api_url: str = "https://slack.com/api/"
    concurrency: int = Field(1, ge=1, le=256)
    rate_limit: float = Field(1.0, ge=0.0)  # Slack allows about one message a second per channel
    # Added to the firing and escalation notifications only.
    mentions: list[Annotated[str, AfterValidator(_slack_mention)]] = Field(default_factory=list)
    broadcast_resolved: bool = False  # the resolution's thread reply also shows in the channel

    @model_validator(mode="after")
    def _mode(self) -> SlackReceiverConfig:
        if (self.webhook_url is None) == (self.token is None):
            raise ValueError("set exactly one of webhook_url (incoming webhook) or token (bot token)")
        if self.token is not None and not self.channel:
            raise ValueError("token needs channel, e.g. channel: '#node-alerts'")
        if self.webhook_url is not None:  # else every alert would be retried against a bad URL
            _require_url(self.webhook_url.get_secret_value(), "webhook_url")
        _require_url(self.api_url, "api_url")
        return self

    @field_validator("channel")
    @classmethod
    def _channel(cls, v: str | None) -> str | None:
        if v is not None and not any(mark in v for mark in SLACK_TEMPLATE_MARKS):
            problem = slack_channel_problem(v)
            if problem:
                raise ValueError(problem)
        return v

    @property
    def channel_is_template(self) -> bool:
        return self.channel is not None and any(mark in self.channel for mark in SLACK_TEMPLATE_MARKS)

    @property
    def threads(self) -> bool:
        """Bot-token mode: one thread per incident, its root edited on resolution."""
        return self.token is not None

    def template_fields(self) -> dict[str, TemplateKind]:
        fields = super().template_fields()
        if self.channel_is_template:
            fields["channel"] = "text"
        return fields

    def rendered_problem(self, field: str, value: str) -> str | None:
        return slack_channel_problem(value.strip()) if field == "channel" else None


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
        problem = address_header_problem("To", ", ".join(v))
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("from_")
    @classmethod
    def _sender(cls, v: str) -> str:
        problem = address_header_problem("From", v)
        if problem:
            raise ValueError(problem)
        return v


_HEADER_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def address_header_problem(name: str, value: str) -> str | None:
    """Why ``value`` cannot be the ``name`` header of every message (From, To), or None.

    The email receiver folds these once when it is built (bridge/receivers/mime.py): what the email
    package refuses there (a line break, also one inside an encoded word) or folds to a line over
    RFC 5322's 998 characters must be reported by ``check`` and refuse a reload, not fail the build."""
    probe = EmailMessage()
    try:
        probe[name] = value
        header = probe[name]
        utf8 = not "".join(a.addr_spec for a in header.addresses).isascii()
        folded = (SMTPUTF8 if utf8 else SMTP).fold_binary(name, header)
    except (ValueError, TypeError, IndexError) as exc:
        return f"{value!r} cannot be a {name} header: {exc}"
    if max(map(len, folded.split(b"\r\n"))) > 998:
        return f"{name} would hold a line over 998 characters (RFC 5322); shorten the display name or address"
    # The folder writes what an encoded word decodes to as it is: "=?utf-8?q?Ops=2C_x=40y?= <a@b>"
    # went out as "Ops, x@y <a@b>", three addresses for a reader; a NUL went out raw.
    # Display names compared without whitespace: the parser keeps some between the encoded words
    # the folder cut a long non-ASCII name into.
    want = [("".join(a.display_name.split()), a.addr_spec) for a in header.addresses]
    back = message_from_string(folded.decode("utf-8", "replace") + "\r\n", policy=default)[name]
    got = [("".join(a.display_name.split()), a.addr_spec) for a in back.addresses] if back is not None else []
    if got != want or _HEADER_CONTROL.search(folded.replace(b"\r\n ", b" ").removesuffix(b"\r\n")):
        return (f"{value!r} does not read back as the same {name} header (sent as {folded.strip()!r}); "
                "write a display name as plain text, in double quotes if it holds , < > @ or ;")
    return None


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
            doc = yamlsource.read(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ValueError(f"headers_file: cannot read {path}: {exc.strerror or exc}") from None
        except yaml.YAMLError:
            doc = yamlsource.Document(None)
        if doc.duplicates:  # header names only: the values are secrets
            raise ValueError(f"headers_file: {path}: {doc.duplicates[0].problem()}")
        loaded = doc.data
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
    """An http(s) URL with a host, no whitespace and a usable port; the message never shows the
    value (a webhook URL is a secret)."""
    problem = ValueError(f"{key} must be set to an http:// or https:// URL{bare_var_fix(value)}")
    if value is None or not re.match(r"https?://[^/\s]+\S*\Z", value):
        raise problem
    try:
        urlsplit(value).port  # noqa: B018 - raises for a port out of range or an unclosed IPv6 bracket
    except ValueError:
        raise problem from None


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


class _ChannelWebhookConfig(ReceiverBase):
    """A chat channel's incoming webhook: one secret URL, one message at a time."""

    _secret_fields = ("url",)
    type: str  # each subclass's Literal (declared here too, so it stays the first key)
    url: SecretStr | None = None
    url_file: str | None = None
    concurrency: int = Field(1, ge=1, le=256)
    rate_limit: float = Field(1.0, ge=0.0)

    @model_validator(mode="after")
    def _set(self) -> _ChannelWebhookConfig:
        _require_url(self.url.get_secret_value() if self.url else None, "url")
        return self


class MSTeamsReceiverConfig(_ChannelWebhookConfig):
    """A Teams Workflows "post to a channel when a webhook request is received" URL."""

    type: Literal["msteams"]


class DiscordReceiverConfig(_ChannelWebhookConfig):
    """A Discord channel webhook URL (https://discord.com/api/webhooks/<id>/<token>)."""

    type: Literal["discord"]


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
            raise ValueError("bot_token does not look like a bot token (digits, ':', then letters and digits)"
                             + bare_var_fix(self.bot_token.get_secret_value()))
        _require_url(self.api_url, "api_url")
        return self


ReceiverConfig = Annotated[
    SlackReceiverConfig | EmailReceiverConfig | WebhookReceiverConfig | LogReceiverConfig
    | PagerDutyReceiverConfig | OpsgenieReceiverConfig | MSTeamsReceiverConfig | DiscordReceiverConfig
    | TelegramReceiverConfig,
    Field(discriminator="type"),
]
RECEIVER_TYPES = ("slack", "email", "webhook", "log", "pagerduty", "opsgenie", "msteams", "discord", "telegram")
