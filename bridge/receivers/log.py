"""The log receiver: one structured line per alert on the "bridge.alerts" logger."""

from __future__ import annotations

import logging
from typing import Any

from bridge.config import LogReceiverConfig, ReceiverBase
from bridge.digest_text import digest_of, wording
from bridge.model import Alert, format_timestamp
from bridge.render import Renderer, human_duration

alerts_log = logging.getLogger("bridge.alerts")


def build(name: str, cfg: LogReceiverConfig, *, renderer: Renderer, session: object = None) -> LogReceiver:
    return LogReceiver(name, cfg, renderer=renderer)


def log_fields(renderer: Renderer, alert: Alert, cfg: ReceiverBase | None = None) -> dict[str, Any]:
    """Fields for one structured log line."""
    ctx = renderer.context(alert, cfg)
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


class LogReceiver:
    bounds_send_time = True  # send() does no I/O that could hang

    def __init__(self, name: str, cfg: LogReceiverConfig, *, renderer: Renderer) -> None:
        self.name = name
        self._cfg = cfg
        self._renderer = renderer

    def __repr__(self) -> str:
        return f"LogReceiver(name={self.name!r})"

    async def send(self, alert: Alert) -> None:
        if alert.kind == "digest":
            digest = digest_of(alert)
            extra = {"msg": wording(digest).title, "group": digest.id, "update": digest.update,
                     "route": alert.route, "receiver": alert.receiver, "delivery_id": alert.delivery_id,
                     "members": [m.to_dict() for m in digest.members]}
            # %r: node ids are hostile input; the repr keeps a CR/LF in one from forging a log line
            alerts_log.warning("ALERT DIGEST %s: %r (route %s)", extra["msg"],
                               [m.node_id for m in digest.members], alert.route, extra={"alert": extra})
            return
        fields = log_fields(self._renderer, alert, self._cfg)
        level = logging.WARNING if alert.event.status == "FAILED" else logging.INFO
        # A readable headline for people; the fields go in ``extra`` for the JSON formatter
        # (and as compact JSON after the headline for the text one).
        was = ""
        if alert.previous_status:
            held = human_duration(alert.previous_duration)
            was = f" (was {alert.previous_status}" + (f" for {held}" if held else "") + ")"
        alerts_log.log(level, "ALERT %s%s (route %s)", fields["msg"], was, alert.route, extra={"alert": fields})

    async def close(self) -> None:
        """Nothing to release."""
