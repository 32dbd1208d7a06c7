"""PagerDuty Events API v2: trigger, acknowledge and resolve one alert per incident.

``dedup_key`` is the incident id (bridge/receivers/http.py ``correlation_key``), so the resolution
and an ack made here reach the alert the firing notification opened. PagerDuty answers 202 when it
took the event, 400 when the event is invalid (permanent), 429 when the routing key sends too fast
(no Retry-After: the delivery backoff decides) and 5xx when it should be sent again.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from bridge.config import PagerDutyReceiverConfig
from bridge.model import Alert
from bridge.receivers.http import HTTPReceiver, correlation_key, cut, failure, post_json, safe_text
from bridge.render import Renderer

# Alert kind → event_action. Anything not listed (a kind added later) triggers: better a page too many.
ACTIONS = {"resolved": "resolve", "stable": "resolve", "acknowledged": "acknowledge"}
DEFAULT_ACTION = "trigger"


def build(
    name: str, cfg: PagerDutyReceiverConfig, *, renderer: Renderer, session: aiohttp.ClientSession
) -> PagerDutyReceiver:
    return PagerDutyReceiver(name, cfg, renderer=renderer, session=session)


def pagerduty_event(renderer: Renderer, alert: Alert, cfg: PagerDutyReceiverConfig, routing_key: str) -> dict[str, Any]:
    """The Events API v2 body. Values are JSON strings: PagerDuty shows them as plain text."""
    action = ACTIONS.get(alert.kind, DEFAULT_ACTION)
    event: dict[str, Any] = {"routing_key": routing_key, "event_action": action, "dedup_key": correlation_key(alert)}
    if action != "trigger":  # acknowledge and resolve need only the key
        return event
    ctx = renderer.context(alert, cfg)
    status = alert.event.status
    details: dict[str, Any] = {
        "text": ctx["text"], "node": ctx["node"], "status": status, "previous_status": ctx["previous_status"],
        "labels": ctx["labels"], "kind": alert.kind, "route": alert.route, "delivery_id": alert.delivery_id,
    }
    if ctx["incident"]:
        details["incident"] = ctx["incident"]
    event["payload"] = {
        "summary": cut(ctx["title"], 1024),
        "source": cut(alert.event.node_id, 255) or "alert-bridge",
        "severity": cfg.severity.get(status, cfg.default_severity),
        "timestamp": alert.event.stamp,
        "component": cut(alert.event.node_id, 255),
        "group": cut(alert.route, 255),
        "class": cut(status, 255),
        "custom_details": details,
    }
    event["client"] = "alert-bridge"
    if ctx["links"]["node"]:
        event["client_url"] = ctx["links"]["node"]
        event["links"] = [{"href": ctx["links"]["node"], "text": "Node"}]
    return event


class PagerDutyReceiver(HTTPReceiver[PagerDutyReceiverConfig]):
    # One event per incident (its dedup key / alias is the incident id): grouped firings are sent
    # one by one, never merged into a digest (bridge/grouping.py).
    sends_digests = False

    def _read_secrets(self) -> list[str]:
        assert self._cfg.routing_key is not None  # the config model guarantees it
        self._key = self._cfg.routing_key.get_secret_value()
        return [self._key]

    async def send(self, alert: Alert) -> None:
        body = pagerduty_event(self._renderer, alert, self._cfg, self._key)
        answer = await post_json(self._session, self._cfg.api_url, body, what="pagerduty", timeout=self._cfg.timeout,
                                 finite=alert.own_numbers)
        if answer.ok:
            return
        data = answer.json()
        # 400: {"status": "invalid event", "message": "Event object is invalid", "errors": [...]}
        errors = data.get("errors")
        listed = safe_text("; ".join(e for e in errors if isinstance(e, str))) if isinstance(errors, list) else ""
        detail = ": ".join(filter(None, [safe_text(data.get("message")), listed]))
        raise failure("pagerduty", answer, self._redact, detail=detail)
