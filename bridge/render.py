"""Turn an Alert into what each receiver sends. Pure templating: no I/O.

Overrides are Jinja2 templates run in a sandbox with StrictUndefined, so a typo fails loudly.
They are compiled once per config and test-rendered against sample alerts at config-check
time. If an override still fails on a real event (a detail key that only some events carry),
the built-in default is used instead: an alert must never be lost to a template.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from bridge.config import (
    Config,
    EmailReceiverConfig,
    LinksConfig,
    ReceiverBase,
    SlackReceiverConfig,
    WebhookReceiverConfig,
)
from bridge.errors import ConfigError
from bridge.model import TEST_ROUTE, Alert, Event, format_timestamp

log = logging.getLogger("bridge.render")

Kind = Literal["text", "html"]

COLOURS = {"FAILED": "#d62728", "RUNNING": "#2ca02c"}
DEFAULT_COLOUR = "#ff9f1c"  # amber: anything neither healthy nor failed
EMOJI = {"FAILED": ":red_circle:", "RUNNING": ":large_green_circle:"}
DEFAULT_EMOJI = ":large_orange_circle:"

DEFAULT_TITLE = "{{ node }} is {{ status }}"
DEFAULT_TEXT = """\
{{ node }} is {{ status }}
{%- if previous_status %} (was {{ previous_status }}
{%- if previous_duration_human %} for {{ previous_duration_human }}{% endif %})
{%- endif %}.
Event time: {{ event_time }}
{% if labels %}Labels: {% for k, v in labels | dictsort %}{{ k }}={{ v }}{{ ", " if not loop.last }}\
{% endfor %}
{% endif %}{% if links.node %}Node: {{ links.node }}
{% endif %}Route: {{ route }}, receiver: {{ receiver }}, delivery: {{ delivery_id }}
"""
DEFAULT_SUBJECT = "[alert-bridge] {{ title }}"
DEFAULT_HTML = """\
<!doctype html>
<html><body style="font-family: sans-serif">
<div style="border-left: 6px solid {{ colour }}; padding: 4px 12px">
<h2 style="margin: 4px 0">{{ title }}</h2>
<table cellpadding="4">
<tr><th align="left">Node</th><td>
{%- if links.node %}<a href="{{ links.node }}">{{ node }}</a>{% else %}{{ node }}{% endif %}</td></tr>
<tr><th align="left">Status</th><td>{{ status }}</td></tr>
<tr><th align="left">Previous status</th><td>
{%- if previous_status %}{{ previous_status }}
{%- if previous_duration_human %} for {{ previous_duration_human }}{% endif %}
{%- else %}none known{% endif %}</td></tr>
<tr><th align="left">Event time</th><td>{{ event_time }}</td></tr>
{% if labels %}<tr><th align="left">Labels</th><td>
{%- for k, v in labels | dictsort %}{{ k }}={{ v }}{{ ", " if not loop.last }}{% endfor %}</td></tr>
{% endif -%}
</table>
<p style="color: #777; font-size: small">route {{ route }} &middot; receiver {{ receiver }} &middot;
delivery {{ delivery_id }}</p>
</div>
</body></html>
"""

_HINT = " (event.details and labels vary per event: use .get('key') or | default('...'))"

# json.dumps(..., separators=(",", ":"), ensure_ascii=False) without building an encoder per call.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


# The default title and text, written out in Python: they must render what DEFAULT_TITLE and
# DEFAULT_TEXT render, character for character (keep the two in step), at a fraction of a Jinja
# render's cost. Every alert without a title/text override takes this path on every delivery.
def _default_title(ctx: Mapping[str, Any]) -> str:
    return f"{ctx['node']} is {ctx['status']}"


def _default_text(ctx: Mapping[str, Any]) -> str:
    parts = [f"{ctx['node']} is {ctx['status']}"]
    if ctx["previous_status"]:
        parts.append(f" (was {ctx['previous_status']}")
        if ctx["previous_duration_human"]:
            parts.append(f" for {ctx['previous_duration_human']}")
        parts.append(")")
    parts.append(f".\nEvent time: {ctx['event_time']}\n")
    labels = ctx["labels"]
    if labels:
        # Jinja's dictsort: by key, case-insensitively, stable.
        items = sorted(labels.items(), key=_dictsort_key)
        parts.append("Labels: " + ", ".join(f"{k}={v}" for k, v in items) + "\n")
    node_link = ctx["links"]["node"]
    if node_link:
        parts.append(f"Node: {node_link}\n")
    # (Jinja drops the template's final newline.)
    parts.append(f"Route: {ctx['route']}, receiver: {ctx['receiver']}, delivery: {ctx['delivery_id']}")
    return "".join(parts)


def _dictsort_key(item: tuple[Any, Any]) -> Any:
    key = item[0]
    return key.lower() if isinstance(key, str) else key


@dataclass(frozen=True, slots=True)
class EmailContent:
    subject: str
    text: str
    html: str


def human_duration(seconds: float | None) -> str | None:
    """3h 12m: the two most significant units, which is what a reader wants at a glance."""
    if seconds is None:
        return None
    rest = int(seconds)
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    for i, (unit, size) in enumerate(units):
        if rest >= size or unit == "s":
            major, rest = divmod(rest, size)
            text = f"{major}{unit}"
            if i + 1 < len(units):
                minor_unit, minor_size = units[i + 1]
                minor = rest // minor_size
                if minor:
                    text += f" {minor}{minor_unit}"
            return text
    raise AssertionError("unreachable")  # pragma: no cover


def colour(status: str) -> str:
    return COLOURS.get(status, DEFAULT_COLOUR)


def slack_escape(value: Any) -> str:
    """Slack mrkdwn treats &, < and > as control characters."""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _event_time(event: Event) -> str:
    # strftime("%Y-%m-%d %H:%M:%S UTC") (years unpadded, as strftime leaves them), at half the cost.
    t = event.timestamp.astimezone(UTC)
    return f"{t.year}-{t.month:02d}-{t.day:02d} {t.hour:02d}:{t.minute:02d}:{t.second:02d} UTC"


def _environment(autoescape: bool) -> SandboxedEnvironment:
    env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=autoescape)
    env.filters["duration"] = human_duration
    env.filters["slack_escape"] = slack_escape
    return env


def base_context(alert: Alert) -> dict[str, Any]:
    """The variables every template sees (links added once rendered)."""
    event = alert.event
    return {
        "event": event.to_dict(),
        "node": event.node_id,
        "status": event.status,
        "labels": dict(event.labels),
        "previous_status": alert.previous_status,
        "previous_duration": alert.previous_duration,
        "previous_duration_human": human_duration(alert.previous_duration),
        "event_time": _event_time(event),
        "route": alert.route,
        "receiver": alert.receiver,
        "delivery_id": alert.delivery_id,
        "colour": colour(event.status),
        "links": {"node": None},
    }


def sample_alerts(cfg: Config, receiver: str) -> list[Alert]:
    """Alerts to test-render with: a first sighting and a transition, on a configured node if any."""
    nodes = cfg.nodes or {}
    node_id = next(iter(nodes), "node-sample-1")
    labels: dict[str, str] = {}
    for node in nodes.values():  # every configured label key, so {{ labels.team }} can be checked
        for key, value in node.labels.items():
            labels.setdefault(key, value)
    ts = datetime(2026, 4, 16, 12, 0, 0, tzinfo=UTC)
    event = Event(
        event_type="NODE_STATUS_UPDATED",
        timestamp=ts,
        node_id=node_id,
        status="FAILED",
        details={"nodeId": node_id, "status": "FAILED"},
        labels=labels,
        received_at=ts,
    )
    route = cfg.routes[0].name if cfg.routes else "default"
    first = Alert(event=event, route=route, receiver=receiver, delivery_id="dlv_sample")
    transition = Alert(
        event=event,
        route=route,
        receiver=receiver,
        delivery_id="dlv_sample",
        previous_status="RUNNING",
        previous_since=ts - timedelta(hours=3, minutes=12),
    )
    return [first, transition]


class Renderer:
    """Compiled templates for one config. Build with ``Renderer.from_config``."""

    def __init__(self, links: LinksConfig | None = None) -> None:
        self._links = links or LinksConfig()
        self._envs: dict[Kind, SandboxedEnvironment] = {
            "text": _environment(autoescape=False),
            "html": _environment(autoescape=True),
        }
        self._compiled: dict[tuple[Kind, str], Template] = {}

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def from_config(cls, cfg: Config) -> Renderer:
        """Compile and test-render every template; ConfigError lists each one that fails."""
        renderer = cls(cfg.links)
        problems: list[str] = []
        for source in (DEFAULT_TITLE, DEFAULT_TEXT, DEFAULT_SUBJECT):
            renderer._template("text", source)
        renderer._template("html", DEFAULT_HTML)
        if cfg.links.node is not None:
            problems += renderer._check("links.node", "text", cfg.links.node, cfg, "sample", "links")
        if problems:  # every receiver check would repeat the links problem
            raise ConfigError(problems)
        for name, rcv in cfg.receivers.items():
            found: list[str] = []
            for field, kind in _override_fields(rcv):
                source = getattr(rcv, field)
                if source is not None:
                    found += renderer._check(f"receivers.{name}.{field}", kind, source, cfg, name, field)
            # A JSON body is only worth checking once every template renders.
            if not found and isinstance(rcv, WebhookReceiverConfig) and _wants_json_check(rcv):
                found += renderer._check_json(name, rcv, cfg)
            problems += found
        if problems:
            raise ConfigError(problems)
        return renderer

    def _template(self, kind: Kind, source: str) -> Template:
        # Normally filled by from_config; compiling here covers configs built another way.
        key = (kind, source)
        template = self._compiled.get(key)
        if template is None:
            template = self._envs[kind].from_string(source)
            self._compiled[key] = template
        return template

    def _check(self, path: str, kind: Kind, source: str, cfg: Config, receiver: str, field: str) -> list[str]:
        try:
            template = self._template(kind, source)
        except TemplateSyntaxError as exc:
            return [f"{path}: template error: line {exc.lineno}: {exc.message}"]
        for alert in sample_alerts(cfg, receiver):
            ctx = self._context_for(alert, field)
            try:
                template.render(ctx)
            except UndefinedError as exc:
                return [f"{path}: template error: {exc}{_HINT}"]
            except TemplateError as exc:  # e.g. the sandbox refusing an attribute
                return [f"{path}: template error: {exc}"]
            except Exception as exc:  # e.g. None / 60 on a first sighting
                return [f"{path}: template error: {type(exc).__name__}: {exc}"]
        return []

    def _check_json(self, name: str, rcv: WebhookReceiverConfig, cfg: Config) -> list[str]:
        for alert in sample_alerts(cfg, name):
            try:
                json.loads(self.webhook(alert, rcv))
            except ValueError as exc:
                return [
                    f"receivers.{name}.body_template: does not render valid JSON ({exc}); "
                    "use | tojson for values, or set a Content-Type header for other formats"
                ]
        return []

    def _context_for(self, alert: Alert, field: str) -> dict[str, Any]:
        """Context as it is when ``field`` renders: later fields see earlier results."""
        ctx = base_context(alert)
        if field == "links":
            return ctx
        ctx["links"] = {"node": self._node_link(ctx)}
        if field == "title":
            return ctx
        ctx["title"] = "sample title"
        if field == "text":
            return ctx
        ctx["text"] = "sample text"
        return ctx

    # --- rendering ----------------------------------------------------------------------------

    def _override(self, kind: Kind, source: str | None, ctx: Mapping[str, Any], what: str) -> str | None:
        """The rendered override; None when there is none or it failed (then the default is used)."""
        if source is None:
            return None
        try:
            return self._template(kind, source).render(ctx)
        except Exception as exc:  # any template failure: fall back rather than drop the alert
            log.warning(
                "template %s failed for receiver %s (%s: %s); using the default",
                what,
                ctx.get("receiver"),
                type(exc).__name__,
                exc,
            )
            return None

    def _render(self, kind: Kind, source: str | None, default: str, ctx: Mapping[str, Any], what: str) -> str:
        text = self._override(kind, source, ctx, what)
        return text if text is not None else self._template(kind, default).render(ctx)

    def _node_link(self, ctx: Mapping[str, Any]) -> str | None:
        if self._links.node is None:
            return None
        try:
            url = self._template("text", self._links.node).render(ctx).strip()
        except Exception as exc:
            log.warning("template links.node failed (%s: %s); no node link", type(exc).__name__, exc)
            return None
        return url or None

    def context(self, alert: Alert, cfg: ReceiverBase | None = None) -> dict[str, Any]:
        """Full context: base variables, links, then the rendered title and text."""
        return self._context(alert, cfg)[0]

    def _context(self, alert: Alert, cfg: ReceiverBase | None) -> tuple[dict[str, Any], set[str]]:
        """The context, and which of the title/text overrides rendered (vs. fell back)."""
        ctx = base_context(alert)
        ctx["links"] = {"node": self._node_link(ctx)}
        used: set[str] = set()
        title = self._override("text", cfg.title if cfg else None, ctx, "title")
        if title is not None:
            used.add("title")
        else:
            title = _default_title(ctx)
        ctx["title"] = " ".join(title.split())
        if alert.route == TEST_ROUTE:  # ``alert-bridge send-test``: nobody may take it for an incident
            ctx["title"] = "TEST: " + ctx["title"]
        text = self._override("text", cfg.text if cfg else None, ctx, "text")
        if text is not None:
            used.add("text")
        else:
            text = _default_text(ctx)
        ctx["text"] = text
        return ctx, used

    def slack(self, alert: Alert, cfg: SlackReceiverConfig) -> dict[str, Any]:
        """Slack message: fallback text, a headline block, and a coloured attachment with fields."""
        ctx, used = self._context(alert, cfg)
        status = alert.event.status
        headline = ctx["title"]
        if "title" not in used:  # an operator's own title may carry its own emoji
            headline = f"{EMOJI.get(status, DEFAULT_EMOJI)} {headline}"
        fallback = headline
        if alert.previous_status:
            fallback += f" (was {alert.previous_status}"
            if ctx["previous_duration_human"]:
                fallback += f" for {ctx['previous_duration_human']}"
            fallback += ")"
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": _cut(headline, 150), "emoji": True}}
        ]
        if "text" in used:  # an override is mrkdwn written by the operator; fields cover the default
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(ctx["text"], 3000)}})
        detail_blocks: list[dict[str, Any]] = [
            {"type": "section", "fields": _slack_fields(alert, ctx)},
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": _cut(
                            f"route `{slack_escape(alert.route)}` · receiver `{slack_escape(alert.receiver)}`"
                            f" · {slack_escape(alert.delivery_id)}",
                            3000,
                        ),
                    }
                ],
            },
        ]
        return {
            "text": fallback,
            "blocks": blocks,
            "attachments": [{"color": colour(status), "fallback": fallback, "blocks": detail_blocks}],
        }

    def email(self, alert: Alert, cfg: EmailReceiverConfig) -> EmailContent:
        ctx = self.context(alert, cfg)
        subject = self._render("text", cfg.subject, DEFAULT_SUBJECT, ctx, "subject")
        html = self._render("html", cfg.html, DEFAULT_HTML, ctx, "html")
        # A header cannot hold line breaks; fold any whitespace into single spaces.
        return EmailContent(subject=" ".join(subject.split()), text=ctx["text"], html=html)

    def webhook(self, alert: Alert, cfg: WebhookReceiverConfig) -> bytes:
        ctx = self.context(alert, cfg)
        if cfg.body_template is not None:
            try:
                return self._template("text", cfg.body_template).render(ctx).encode()
            except Exception as exc:
                log.warning(
                    "template body_template failed for receiver %s (%s: %s); using the default body",
                    alert.receiver,
                    type(exc).__name__,
                    exc,
                )
        payload = {
            "event": ctx["event"],
            "route": alert.route,
            "receiver": alert.receiver,
            "deliveryId": alert.delivery_id,
            "previousStatus": alert.previous_status,
            "previousDuration": alert.previous_duration,
            "previousDurationHuman": ctx["previous_duration_human"],
            "title": ctx["title"],
            "text": ctx["text"],
            "links": ctx["links"],
        }
        return _COMPACT_JSON.encode(payload).encode()

    def log(self, alert: Alert, cfg: ReceiverBase | None = None) -> dict[str, Any]:
        """Fields for one structured log line."""
        ctx = self.context(alert, cfg)
        event = alert.event
        return {
            "msg": ctx["title"],
            "node": event.node_id,
            "status": event.status,
            "previous_status": alert.previous_status,
            "previous_duration": alert.previous_duration,
            "event_type": event.event_type,
            "event_time": format_timestamp(event.timestamp),
            "event_id": event.id,
            "labels": dict(event.labels),
            "route": alert.route,
            "receiver": alert.receiver,
            "delivery_id": alert.delivery_id,
            "node_url": ctx["links"]["node"],
        }


def _override_fields(rcv: ReceiverBase) -> list[tuple[str, Kind]]:
    fields: list[tuple[str, Kind]] = [("title", "text"), ("text", "text")]
    if isinstance(rcv, EmailReceiverConfig):
        fields += [("subject", "text"), ("html", "html")]
    if isinstance(rcv, WebhookReceiverConfig):
        fields.append(("body_template", "text"))
    return fields


def _wants_json_check(rcv: WebhookReceiverConfig) -> bool:
    # A Content-Type header means the operator chose another format on purpose.
    return rcv.body_template is not None and not any(h.lower() == "content-type" for h in rcv.headers)


def _slack_fields(alert: Alert, ctx: Mapping[str, Any]) -> list[dict[str, str]]:
    node = slack_escape(alert.event.node_id)
    url = ctx["links"]["node"]
    if url:
        node = f"<{url}|{node}>"
    if alert.previous_status:
        previous = slack_escape(alert.previous_status)
        if ctx["previous_duration_human"]:
            previous += f" for {ctx['previous_duration_human']}"
    else:
        previous = "none known"
    unix = int(alert.event.timestamp.timestamp())
    # Slack shows the time in each reader's zone; the fallback is UTC.
    when = f"<!date^{unix}^{{date_short_pretty}} {{time_secs}}|{ctx['event_time']}>"
    fields = [
        ("Node", node),
        ("Status", slack_escape(alert.event.status)),
        ("Previous status", previous),
        ("Event time", when),
    ]
    if alert.event.labels:
        labels = ", ".join(f"`{slack_escape(k)}={slack_escape(v)}`" for k, v in sorted(alert.event.labels.items()))
        fields.append(("Labels", labels))
    return [{"type": "mrkdwn", "text": _cut(f"*{name}*\n{value}", 2000)} for name, value in fields]


def _cut(text: str, limit: int) -> str:
    """Slack rejects over-long block text (invalid_blocks); shorten instead of losing the alert."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = [
    "COLOURS",
    "DEFAULT_COLOUR",
    "EmailContent",
    "Renderer",
    "base_context",
    "human_duration",
    "sample_alerts",
    "slack_escape",
]
