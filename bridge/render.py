"""Templating shared by every receiver: the alert context, the Jinja2 sandbox, config-time checks.

Receivers build their own wire format (bridge/receivers/<kind>.py) from the context made here.
Overrides are Jinja2 templates run in a sandbox with StrictUndefined, so a typo fails loudly.
They are compiled once per config and test-rendered against sample alerts at config-check
time. If an override still fails on a real event (a detail key that only some events carry),
the built-in default is used instead: an alert must never be lost to a template.

Event values are hostile input (a validly signed event can carry any node id). Each template
kind escapes what ``{{ ... }}`` writes for where it lands: ``html`` HTML-escapes, ``json`` writes
a string JSON-escaped (to sit inside quotes) and any other value as JSON, ``url`` (links)
percent-encodes every value as a path segment. ``| tojson``, ``| urlencode`` and ``| safe``
results are written as they are.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError, UndefinedError
from jinja2.filters import do_urlencode
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup

from bridge.config import Config, LinksConfig, ReceiverBase, TemplateKind, format_duration
from bridge.errors import ConfigError
from bridge.jsontext import ORJSON_STRICT, STRICT_JSON, compact_json, dumps, json_bytes
from bridge.model import TEST_ROUTE, Alert, Event

log = logging.getLogger("bridge.render")

Kind = TemplateKind | None  # None: the links env (url)

COLOURS = {"FAILED": "#d62728", "RUNNING": "#2ca02c"}
DEFAULT_COLOUR = "#ff9f1c"  # amber: anything neither healthy nor failed

_HINT = " (event.details and labels vary per event: use .get('key') or | default('...'))"

# Node ids and statuses a signed event may carry, to prove a JSON body stays JSON with one key set.
# No lone surrogate: ingest refuses those (422), and | urlencode cannot encode one.
HOSTILE_VALUES = ('x", "sev": "critical', "a\r\nb\t\x00", "back\\slash\\", "ünï ☃ \u2028")


# The default title and text: the one place that words a notification, per kind, from what the
# alert carries (kind, incident, facts). Written in Python, not as a Jinja default: every alert
# without a title/text override takes this path on every delivery.
def short_duration(seconds: float | None) -> str:
    """12m, 1h30m (as incident paths write durations); under a second reads 0s."""
    if seconds is None:
        return "?"
    return format_duration(round(seconds)) if seconds >= 1 else "0s"


def notification_title(kind: str, node: str, status: str, duration: float | None,
                       facts: Mapping[str, Any]) -> str:
    """The default title of a notification. ``duration``: the incident's, open so far or in total."""
    flap = facts.get("flap") or {}
    if kind == "resolved":
        return f"RESOLVED {node} after {short_duration(duration)}"
    if kind == "reminder":  # a plain route's reminder has no incident: the time in the status
        return f"still {status} after {short_duration(duration if duration is not None else facts.get('for'))}: {node}"
    if kind == "escalation":
        return f"ESCALATED {node}: {status}, open {short_duration(duration)}"
    if kind == "acknowledged":
        by = f" by {facts['by']}" if isinstance(facts.get("by"), str) and facts["by"] else ""
        return f"ACKNOWLEDGED {node}: {status}, open {short_duration(duration)}{by}"
    if kind == "update":
        return f"{node} now {status} (incident open {short_duration(duration)})"
    if kind == "flapping":
        return f"{node} is flapping ({flap.get('count')} status changes in {short_duration(flap.get('span'))})"
    if kind == "stable":
        return (f"{node} stable again: flapped {flap.get('count')} times in "
                f"{short_duration(flap.get('span'))}, now {status}")
    if kind == "event" and facts.get("held_for"):
        return f"{node} still {status} after {short_duration(facts['held_for'])}"
    return f"{node} is {status}"  # firing, and a plain route's status change


def _default_title(ctx: Mapping[str, Any]) -> str:
    inc = ctx["incident"]
    return notification_title(ctx["kind"], ctx["node"], ctx["status"], inc["duration"] if inc else None,
                              ctx["facts"])


def _default_text(ctx: Mapping[str, Any]) -> str:
    parts = []
    if ctx["kind"] not in ("firing", "event"):  # the status line alone would not say what happened
        parts.append(_default_title(ctx) + ".\n")
    parts.append(f"{ctx['node']} is {ctx['status']}")
    if ctx["previous_status"]:
        parts.append(f" (was {ctx['previous_status']}")
        if ctx["previous_duration_human"]:
            parts.append(f" for {ctx['previous_duration_human']}")
        parts.append(")")
    parts.append(".\n")
    inc = ctx["incident"]
    if inc:
        total = short_duration(inc["duration"])
        how = f"{total} in total" if ctx["kind"] == "resolved" else f"open {total}"
        parts.append(f"Incident {inc['id']}: {inc['path']} ({how}).\n")
    parts.append(f"Event time: {ctx['event_time']}\n")
    labels = ctx["labels"]
    if labels:
        # Jinja's dictsort order: by key, case-insensitively, stable.
        items = sorted(labels.items(), key=_dictsort_key)
        parts.append("Labels: " + ", ".join(f"{k}={v}" for k, v in items) + "\n")
    node_link = ctx["links"]["node"]
    if node_link:
        parts.append(f"Node: {node_link}\n")
    parts.append(f"Route: {ctx['route']}, receiver: {ctx['receiver']}, delivery: {ctx['delivery_id']}")
    return "".join(parts)


def _dictsort_key(item: tuple[Any, Any]) -> Any:
    key = item[0]
    return key.lower() if isinstance(key, str) else key


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
    text = value if type(value) is str else str(value)
    if "&" in text or "<" in text or ">" in text:  # most values have none: no copies then
        return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text


def map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    """``value`` with ``fn`` applied to every string inside it (dict keys included)."""
    kind = type(value)  # exact types first: a context is plain str, dict, None and numbers
    if kind is str:
        return fn(value)
    if kind is dict:
        return {fn(k) if type(k) is str else map_strings(k, fn): map_strings(v, fn) for k, v in value.items()}
    if value is None or kind is int or kind is float or kind is bool:
        return value
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {map_strings(k, fn): map_strings(v, fn) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [map_strings(v, fn) for v in value]
    return value


def _json_finalize(value: Any) -> Any:
    # A string is written JSON-escaped without its quotes ("{{ node }}"); anything else as JSON.
    if isinstance(value, Markup):
        return value
    if isinstance(value, str):
        return compact_json(value)[1:-1]
    return compact_json(value)


def _url_finalize(value: Any) -> Any:
    # Every value is one path segment: "/", "?", "#", "|", "<" and spaces cannot reshape the link.
    return value if isinstance(value, Markup) else quote(str(value), safe="")


def _environment(kind: Kind) -> SandboxedEnvironment:
    finalize = {"json": _json_finalize, None: _url_finalize}.get(kind)
    env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=kind == "html", finalize=finalize)
    env.filters["duration"] = human_duration
    env.filters["slack_escape"] = slack_escape
    env.policies["json.dumps_function"] = dumps  # | tojson: NaN and infinities as null, never bare
    if kind is None:  # already encoded: not twice
        env.filters["urlencode"] = lambda value: Markup(do_urlencode(value))
    return env


def _event_time(event: Event) -> str:
    # strftime("%Y-%m-%d %H:%M:%S UTC") (years unpadded, as strftime leaves them), at half the cost.
    t = event.timestamp.astimezone(UTC)
    return f"{t.year}-{t.month:02d}-{t.day:02d} {t.hour:02d}:{t.minute:02d}:{t.second:02d} UTC"


def base_context(alert: Alert) -> dict[str, Any]:
    """The variables every template sees (links added once rendered).

    ``test`` is true for an alert made by ``send-test`` (the default title then says so)."""
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
        "test": alert.route == TEST_ROUTE,
        "links": {"node": None},
        "kind": alert.kind,
        "incident": alert.incident.to_dict() if alert.incident else None,
        "facts": dict(alert.facts),  # per kind: flap counts, escalation step, hold length, ...
    }


def sample_alerts(cfg: Config, receiver: str) -> list[Alert]:
    """Alerts to test-render with: a first sighting and a transition, on a configured node if any."""
    nodes = cfg.nodes or {}
    node_id = next(iter(nodes), "node-sample-1")
    labels: dict[str, str] = {}
    for node in nodes.values():  # every configured label key, so {{ labels.team }} can be checked
        for key, value in node.labels.items():
            labels.setdefault(key, value)
    for entry in cfg.node_labels:  # and those given by glob
        for key, value in entry.labels.items():
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


def _hostile(ctx: dict[str, Any], value: str) -> dict[str, Any]:
    """``ctx`` with ``value`` as node id, status and previous status, as a signed event may carry."""
    event = {**ctx["event"], "nodeId": value, "status": value, "details": {"nodeId": value, "status": value}}
    return {**ctx, "event": event, "node": value, "status": value, "previous_status": value}


def _key_paths(value: Any, path: str = "") -> set[str]:
    """Every object key in a JSON value, as a path: what an injected key would change."""
    if isinstance(value, dict):
        out = {f"{path}.{k}" for k in value}
        for k, v in value.items():
            out |= _key_paths(v, f"{path}.{k}")
        return out
    if isinstance(value, list):
        return set().union(*(_key_paths(v, f"{path}[]") for v in value))
    return set()


class Renderer:
    """Compiled templates for one config. Build with ``Renderer.from_config``."""

    def __init__(self, links: LinksConfig | None = None) -> None:
        self._links = links or LinksConfig()
        self._envs: dict[Kind, SandboxedEnvironment] = {k: _environment(k) for k in ("text", "html", "json", None)}
        self._compiled: dict[tuple[Kind, str], Template] = {}

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def from_config(cls, cfg: Config) -> Renderer:
        """Compile and test-render every template; ConfigError lists each one that fails."""
        renderer = cls(cfg.links)
        problems: list[str] = []
        if cfg.links.node is not None:
            problems += renderer._check("links.node", None, cfg.links.node, cfg, "sample", "links")
        if problems:  # every receiver check would repeat the links problem
            raise ConfigError(problems)
        for name, rcv in cfg.receivers.items():
            for field, kind in rcv.template_fields().items():
                source = getattr(rcv, field)
                if source is not None:
                    problems += renderer._check(f"receivers.{name}.{field}", kind, source, cfg, name, field, rcv)
        if problems:
            raise ConfigError(problems)
        return renderer

    def compile(self, kind: Kind, source: str) -> Template:
        """The compiled template (compiled on first use, then kept for this config)."""
        key = (kind, source)
        template = self._compiled.get(key)
        if template is None:
            template = self._envs[kind].from_string(source)
            self._compiled[key] = template
        return template

    def _check(self, path: str, kind: Kind, source: str, cfg: Config, receiver: str, field: str,
               rcv: ReceiverBase | None = None) -> list[str]:
        try:
            template = self.compile(kind, source)
        except TemplateSyntaxError as exc:
            return [f"{path}: template error: line {exc.lineno}: {exc.message}"]
        samples = sample_alerts(cfg, receiver)
        for alert in samples:
            try:
                rendered = template.render(self._context_for(alert, field))
                problem = rcv.rendered_problem(field, rendered) if rcv is not None else None
                if problem:
                    node = alert.event.node_id
                    return [f"{path}: for the sample alert of node {node!r}, the rendered value {problem}"]
            except UndefinedError as exc:
                return [f"{path}: template error: {exc}{_HINT}"]
            except TemplateError as exc:  # e.g. the sandbox refusing an attribute
                return [f"{path}: template error: {exc}"]
            except Exception as exc:  # e.g. None / 60 on a first sighting
                return [f"{path}: template error: {type(exc).__name__}: {exc}"]
        return self._check_json(path, template, samples, field) if kind == "json" else []

    def _check_json(self, path: str, template: Template, samples: list[Alert], field: str) -> list[str]:
        """Valid JSON for every sample, and hostile node ids/statuses add or remove no key."""
        for alert in samples:
            try:
                ctx = self._context_for(alert, field)
                keys = _key_paths(STRICT_JSON.decode(template.render(ctx)))
            except ValueError as exc:
                return [
                    f"{path}: does not render valid JSON ({exc}); use | tojson for values, "
                    "or set a Content-Type header for other formats"
                ]
            for value in HOSTILE_VALUES:
                try:
                    changed = _key_paths(STRICT_JSON.decode(template.render(_hostile(ctx, value)))) != keys
                except ValueError as exc:
                    return [
                        f"{path}: does not render valid JSON for the node id/status {value!r} ({exc}); "
                        'write string values inside quotes ("{{ node }}") or use | tojson'
                    ]
                except Exception as exc:  # a template written for sane values only
                    return [f"{path}: fails for the node id/status {value!r} ({type(exc).__name__}: {exc})"]
                if changed:
                    return [
                        f"{path}: the node id/status {value!r} changes the JSON keys; write string values "
                        'as "{{ node }}" or {{ node | tojson }}, never | safe'
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

    def override(self, kind: Kind, source: str | None, ctx: Mapping[str, Any], what: str) -> str | None:
        """The rendered override; None when there is none or it failed (then the default is used)."""
        if source is None:
            return None
        try:
            return self.compile(kind, source).render(ctx)
        except Exception as exc:  # any template failure: fall back rather than drop the alert
            log.warning(
                "template %s failed for receiver %s (%s: %s); using the default",
                what,
                ctx.get("receiver"),
                type(exc).__name__,
                exc,
            )
            return None

    def render(self, kind: Kind, source: str | None, default: str, ctx: Mapping[str, Any], what: str) -> str:
        """The override if it renders, else ``default`` (a template too)."""
        text = self.override(kind, source, ctx, what)
        return text if text is not None else self.compile(kind, default).render(ctx)

    def _node_link(self, ctx: Mapping[str, Any]) -> str | None:
        if self._links.node is None:
            return None
        try:
            url = self.compile(None, self._links.node).render(ctx).strip()
        except Exception as exc:
            log.warning("template links.node failed (%s: %s); no node link", type(exc).__name__, exc)
            return None
        return url or None

    def context(self, alert: Alert, cfg: ReceiverBase | None = None) -> dict[str, Any]:
        """Full context: base variables, links, then the rendered title and text."""
        return self.context_and_overrides(alert, cfg)[0]

    def context_and_overrides(
        self, alert: Alert, cfg: ReceiverBase | None, *, escape: Callable[[str], str] | None = None
    ) -> tuple[dict[str, Any], frozenset[str]]:
        """The context, and which of the title/text overrides rendered (vs. fell back).

        ``escape`` is applied to every value a template or default sees (the link included) before
        title and text render, so each event value is escaped exactly once for its receiver. The raw
        event document (``event``, most of the context's strings) is only for overrides to read: with
        ``escape`` and no title/text override it is left out of the context, not left unescaped."""
        ctx = base_context(alert)
        ctx["links"] = {"node": self._node_link(ctx)}
        if escape is not None:
            templated = cfg is not None and (cfg.title is not None or cfg.text is not None)
            ctx = {k: v if k in ("test", "colour") else map_strings(v, escape)
                   for k, v in ctx.items() if templated or k != "event"}
        used: set[str] = set()
        title = self.override("text", cfg.title if cfg else None, ctx, "title")
        if title is not None:
            used.add("title")
        else:
            title = _default_title(ctx)
        ctx["title"] = " ".join(title.split())
        if alert.route == TEST_ROUTE:  # ``alert-bridge send-test``: nobody may take it for an incident
            ctx["title"] = "TEST: " + ctx["title"]
        text = self.override("text", cfg.text if cfg else None, ctx, "text")
        if text is not None:
            used.add("text")
        else:
            text = _default_text(ctx)
        ctx["text"] = text
        return ctx, frozenset(used)


def precompile(renderer: Renderer, sources: Iterable[tuple[Kind, str]]) -> None:
    """Compile a receiver's default templates when it is built, not on its first alert."""
    for kind, source in sources:
        renderer.compile(kind, source)


__all__ = [
    "COLOURS",
    "DEFAULT_COLOUR",
    "HOSTILE_VALUES",
    "ORJSON_STRICT",
    "Renderer",
    "base_context",
    "colour",
    "compact_json",
    "human_duration",
    "json_bytes",
    "map_strings",
    "notification_title",
    "sample_alerts",
    "short_duration",
    "slack_escape",
]
