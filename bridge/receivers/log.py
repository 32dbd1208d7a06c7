"""The log receiver: one structured line per alert on the "bridge.alerts" logger."""

from __future__ import annotations

import logging

from bridge.config import LogReceiverConfig
from bridge.model import Alert
from bridge.render import Renderer, human_duration

alerts_log = logging.getLogger("bridge.alerts")


class LogReceiver:
    bounds_send_time = True  # send() does no I/O that could hang

    def __init__(self, name: str, cfg: LogReceiverConfig, *, renderer: Renderer) -> None:
        self.name = name
        self._cfg = cfg
        self._renderer = renderer

    def __repr__(self) -> str:
        return f"LogReceiver(name={self.name!r})"

    async def send(self, alert: Alert) -> None:
        fields = self._renderer.log(alert, self._cfg)
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
