"""Which event loop ``serve`` runs on: asyncio's own unless told otherwise.

``ALERT_BRIDGE_LOOP`` chooses: ``asyncio`` (the default), ``uvloop`` (refuse to start without it)
or ``auto`` (uvloop on Linux when it is installed, else asyncio). Why asyncio by default: uvloop
saves a few percent of CPU per request, but its p99 under saturation was longer (2.4-3.8x with the
aiohttp listener), and against a floor on the same loop it gains nothing (bench/README.md, "Event
loop" and "The afternoon of 2026-12-02").
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

from bridge.errors import ConfigError

LOOP_ENV = "ALERT_BRIDGE_LOOP"
LOOP_CHOICES = ("auto", "uvloop", "asyncio")

T = TypeVar("T")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def choose(env: Mapping[str, str]) -> tuple[str, LoopFactory | None]:
    """(the loop's name, its factory; None: asyncio's default). ConfigError for a bad choice."""
    wanted = env.get(LOOP_ENV, "").strip().lower() or "asyncio"
    if wanted not in LOOP_CHOICES:
        raise ConfigError([f"{LOOP_ENV}={env[LOOP_ENV][:40]!r}: expected one of {', '.join(LOOP_CHOICES)}"])
    if wanted == "asyncio" or (wanted == "auto" and not sys.platform.startswith("linux")):
        return "asyncio", None
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        if wanted == "uvloop":
            raise ConfigError([f"{LOOP_ENV}=uvloop but uvloop is not installed: pip install uvloop, "
                               f"or set {LOOP_ENV}=asyncio"]) from None
        return "asyncio", None
    factory: LoopFactory = uvloop.new_event_loop
    return "uvloop", factory


def run(main: Coroutine[Any, Any, T], factory: LoopFactory | None) -> T:
    """``asyncio.run(main)`` on the chosen loop."""
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
