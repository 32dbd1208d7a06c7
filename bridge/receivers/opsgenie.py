"""Opsgenie Alert API: create an alert per incident (``alias`` = incident id), close it on
resolution, acknowledge it when acked here.

Opsgenie processes alert requests asynchronously and answers 202 with a requestId; 429 means
the integration sends too fast (retry later), 4xx other than that will not change (permanent).
``api_url`` is https://api.eu.opsgenie.com for accounts in the EU region.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp

from bridge.config import OpsgenieReceiverConfig
from bridge.model import Alert
from bridge.receivers.http import HTTPReceiver, correlation_key, cut, failure, post_json, safe_text
from bridge.render import Renderer

# Alert kind → action; anything else (a kind added later) creates, which Opsgenie dedups by alias.
ACTIONS = {"resolved": "close", "stable": "close", "acknowledged": "acknowledge"}
DEFAULT_ACTION = "create"


def build(
    name: str, cfg: OpsgenieReceiverConfig, *, renderer: Renderer, session: aiohttp.ClientSession
) -> OpsgenieReceiver:
    return OpsgenieReceiver(name, cfg, renderer=renderer, session=session)


def opsgenie_request(renderer: Renderer, alert: Alert, cfg: OpsgenieReceiverConfig) -> tuple[str, dict[str, Any]]:
    """(path and query, JSON body) of the request for this alert."""
    alias = correlation_key(alert)
    action = ACTIONS.get(alert.kind, DEFAULT_ACTION)
    ctx = renderer.context(alert, cfg)
    if action != "create":
        # The alias is a path segment: percent-encode everything.
        path = f"/v2/alerts/{quote(alias, safe='')}/{action}?identifierType=alias"
        return path, {"source": "alert-bridge", "note": cut(ctx["title"], 25000)}
    details = {"node": alert.event.node_id, "status": alert.event.status, "kind": alert.kind, "route": alert.route,
               "previous_status": alert.previous_status or "", "delivery_id": alert.delivery_id}
    if alert.incident is not None:
        details["incident"] = alert.incident.id
        details["incident_path"] = alert.incident.path
    details.update({f"label.{k}": v for k, v in alert.event.labels.items()})
    body: dict[str, Any] = {
        "message": cut(ctx["title"], 130),
        "alias": alias,
        "description": cut(ctx["text"], 15000),
        "entity": cut(alert.event.node_id, 512),
        "source": "alert-bridge",
        "priority": cfg.priority.get(alert.event.status, cfg.default_priority),
        # Opsgenie details are a string → string map.
        "details": {cut(k, 8000): cut(str(v), 8000) for k, v in details.items()},
    }
    if cfg.tags:
        body["tags"] = cfg.tags
    return "/v2/alerts", body


class OpsgenieReceiver(HTTPReceiver[OpsgenieReceiverConfig]):
    # One event per incident (its dedup key / alias is the incident id): grouped firings are sent
    # one by one, never merged into a digest (bridge/grouping.py).
    sends_digests = False

    def _read_secrets(self) -> list[str]:
        assert self._cfg.api_key is not None  # the config model guarantees it
        self._key = self._cfg.api_key.get_secret_value()
        self._base = self._cfg.api_url.rstrip("/")
        return [self._key]

    async def send(self, alert: Alert) -> None:
        path, body = opsgenie_request(self._renderer, alert, self._cfg)
        answer = await post_json(self._session, self._base + path, body, what="opsgenie", timeout=self._cfg.timeout,
                                 headers={"Authorization": f"GenieKey {self._key}"}, finite=alert.own_numbers)
        if answer.ok:
            return
        # {"message": "Request body is not processable...", "took": 0.0, "requestId": "..."}
        raise failure("opsgenie", answer, self._redact, detail=safe_text(answer.json().get("message")))
