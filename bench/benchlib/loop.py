"""One event loop for the bridge and the Python baselines, so their ratios compare like with like.

The harness picks the loop (``--loop``) and passes it to every Python process it starts in
``ALERT_BRIDGE_LOOP`` (``asyncio`` or ``uvloop``): the bridge reads that variable itself, the
baselines, the sink and the delivery floor call ``install()`` below. Whether the bridge really runs
uvloop is checked from outside: a process that runs it has uvloop's extension module mapped
(``/proc/PID/maps``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

ENV = "ALERT_BRIDGE_LOOP"
CHOICES = ("asyncio", "uvloop")
T = TypeVar("T")


def available(name: str) -> bool:
    if name == "asyncio":
        return True
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def chosen() -> str:
    """The loop this process was asked to run (``asyncio`` when unset or unknown)."""
    name = os.environ.get(ENV, "asyncio").strip().lower()
    return name if name in CHOICES else "asyncio"


def install() -> str:
    """Make asyncio.run / aiohttp's run_app use the chosen loop in this process; returns its name."""
    name = chosen()
    if name == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return name


def run(coro: Coroutine[Any, Any, T]) -> T:
    install()
    return asyncio.run(coro)


def uvloop_mapped(pid: int) -> bool | None:
    """True when process ``pid`` has uvloop's extension loaded, None when that cannot be read."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return None
    return "/uvloop/loop." in maps


def verify(pid: int, expected: str) -> str:
    """'ok', or why the process does not run the loop we asked for (asked once it is ready)."""
    mapped = uvloop_mapped(pid)
    if mapped is None:
        return "ok"  # no /proc: cannot tell
    if expected == "uvloop" and not mapped:
        return f"{ENV}=uvloop was set but the process has not loaded uvloop (it runs asyncio)"
    if expected == "asyncio" and mapped:
        return f"{ENV}=asyncio was set but the process loaded uvloop"
    return "ok"
