"""The log receiver: one structured line per alert on the "bridge.alerts" logger."""

from __future__ import annotations

import json
import logging

from bridge.config import LogReceiverConfig
from bridge.model import Alert
from bridge.render import Renderer

alerts_log = logging.getLogger("bridge.alerts")


class LogReceiver:
    def __init__(self, name: str, cfg: LogReceiverConfig, *, renderer: Renderer) -> None:
        self.name = name
        self._cfg = cfg
        self._renderer = renderer

    def __repr__(self) -> str:
        return f"LogReceiver(name={self.name!r})"

    async def send(self, alert: Alert) -> None:
        fields = self._renderer.log(alert, self._cfg)
        level = logging.WARNING if alert.event.status == "FAILED" else logging.INFO
        # The message is the JSON line (greppable with any formatter); ``extra`` serves a
        # structured formatter that wants the fields themselves.
        line = json.dumps(fields, separators=(",", ":"), ensure_ascii=False, default=str)
        alerts_log.log(level, "%s", line, extra={"alert": fields})

    async def close(self) -> None:
        """Nothing to release."""
