"""Receivers deliver one alert once, each in its own wire format.

A receiver type is one module, ``bridge/receivers/<type>.py`` (named by the config's ``type``),
with a ``build(name, cfg, *, renderer, session)`` function, and one config model in
bridge/config/receivers.py. Nothing else names the concrete classes.
"""

from __future__ import annotations

import importlib
from typing import Protocol, cast

import aiohttp

from bridge.config import Config, ReceiverConfig
from bridge.receivers.base import Receiver
from bridge.render import Renderer

__all__ = ["Receiver", "build_receiver", "build_receivers"]


class _Build(Protocol):
    def __call__(
        self, name: str, cfg: ReceiverConfig, *, renderer: Renderer, session: aiohttp.ClientSession
    ) -> Receiver: ...


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
    # Imported on use, so importing the package does not pull in every client library.
    module = importlib.import_module(f"{__name__}.{cfg.type}")
    build = cast(_Build, module.build)
    return build(name, cfg, renderer=renderer, session=session)


def build_receivers(config: Config, renderer: Renderer, session: aiohttp.ClientSession) -> dict[str, Receiver]:
    """Every configured receiver, by name."""
    return {
        name: build_receiver(name, rcv, renderer=renderer, session=session) for name, rcv in config.receivers.items()
    }
