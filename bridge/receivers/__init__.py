"""Receivers deliver one alert once. The only module that names the concrete classes."""

from __future__ import annotations

import aiohttp

from bridge.config import (
    Config,
    EmailReceiverConfig,
    LogReceiverConfig,
    ReceiverConfig,
    SlackReceiverConfig,
    WebhookReceiverConfig,
)
from bridge.receivers.base import Receiver
from bridge.render import Renderer

__all__ = ["Receiver", "build_receiver", "build_receivers"]


def build_receiver(
    name: str,
    cfg: ReceiverConfig,
    *,
    renderer: Renderer,
    session: aiohttp.ClientSession,
) -> Receiver:
    """The receiver for one config entry. ``session`` is shared and stays the caller's to close.

    Raises ConfigError when something only checkable now is wrong (an unreadable CA file).
    """
    # Imported here so importing the package does not pull in every client library.
    if isinstance(cfg, SlackReceiverConfig):
        from bridge.receivers.slack import SlackReceiver

        return SlackReceiver(name, cfg, renderer=renderer, session=session)
    if isinstance(cfg, EmailReceiverConfig):
        from bridge.receivers.email import EmailReceiver

        return EmailReceiver(name, cfg, renderer=renderer)
    if isinstance(cfg, WebhookReceiverConfig):
        from bridge.receivers.webhook import WebhookReceiver

        return WebhookReceiver(name, cfg, renderer=renderer, session=session)
    if isinstance(cfg, LogReceiverConfig):
        from bridge.receivers.log import LogReceiver

        return LogReceiver(name, cfg, renderer=renderer)
    raise TypeError(f"unknown receiver config {type(cfg).__name__}")  # pragma: no cover


def build_receivers(config: Config, renderer: Renderer, session: aiohttp.ClientSession) -> dict[str, Receiver]:
    """Every configured receiver, by name."""
    return {
        name: build_receiver(name, rcv, renderer=renderer, session=session) for name, rcv in config.receivers.items()
    }
