"""Receivers deliver one alert once, each in its own wire format.

A receiver type is one module, ``bridge/receivers/<type>.py`` (named by the config's ``type``),
with a ``build(name, cfg, *, renderer, session)`` function, and one config model in
bridge/config/receivers.py. Nothing else names the concrete classes. A module that keeps
conversations (threads) sets ``USES_CONVERSATIONS = True`` and its ``build`` also takes
``conversations``: the receiver's view of the conversation log (bridge/conversations.py).
"""

from __future__ import annotations

import importlib
from typing import Protocol, cast

import aiohttp

from bridge.config import Config, ReceiverConfig
from bridge.conversations import Conversations, ConversationSource
from bridge.receivers.base import Receiver
from bridge.render import Renderer

__all__ = ["Receiver", "build_receiver", "build_receivers"]


class _Build(Protocol):
    def __call__(
        self, name: str, cfg: ReceiverConfig, *, renderer: Renderer, session: aiohttp.ClientSession
    ) -> Receiver: ...


class _BuildThreaded(Protocol):
    def __call__(
        self, name: str, cfg: ReceiverConfig, *, renderer: Renderer, session: aiohttp.ClientSession,
        conversations: Conversations,
    ) -> Receiver: ...


def build_receiver(
    name: str,
    cfg: ReceiverConfig,
    *,
    renderer: Renderer,
    session: aiohttp.ClientSession,
    conversations: ConversationSource | None = None,
) -> Receiver:
    """The receiver for one config entry. ``session`` is shared and stays the caller's to close.
    ``conversations``: where receivers that thread keep their conversations (None: they do not
    thread, e.g. ``send-test``).

    Raises ConfigError when something only checkable now is wrong (an unreadable CA file).
    """
    # Imported on use, so importing the package does not pull in every client library.
    module = importlib.import_module(f"{__name__}.{cfg.type}")
    if conversations is not None and getattr(module, "USES_CONVERSATIONS", False):
        threaded = cast(_BuildThreaded, module.build)
        return threaded(name, cfg, renderer=renderer, session=session, conversations=conversations(name))
    build = cast(_Build, module.build)
    return build(name, cfg, renderer=renderer, session=session)


def build_receivers(
    config: Config, renderer: Renderer, session: aiohttp.ClientSession,
    conversations: ConversationSource | None = None,
) -> dict[str, Receiver]:
    """Every configured receiver, by name."""
    return {
        name: build_receiver(name, rcv, renderer=renderer, session=session, conversations=conversations)
        for name, rcv in config.receivers.items()
    }
