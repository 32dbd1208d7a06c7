"""File descriptors: the process's open-file limit, and the share the webhook listener may hold.

Every connection holds a descriptor. Under a low limit (systemd's default soft limit is 1,024) a
client opening idle connections could take them all: accepts would fail (EMFILE), valid senders
would time out, and asyncio logs a traceback for every failed accept, hundreds a second. So:

- at start the soft limit is raised to the hard one, as Go's runtime and nginx's
  ``worker_rlimit_nofile`` do (``raise_soft_limit``);
- the webhook listener keeps its connections under ``connection_cap``, read from the limit in
  force when it nears it (``prlimit`` can lower it at run time), and sheds its longest-idle
  connection to admit a new one (hookserver.py);
- failed accepts are logged once per ``THROTTLE`` seconds, counted (``AcceptErrors``).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from typing import Any

log = logging.getLogger("bridge.server")

RESERVE_MIN = 64  # descriptors kept for the store, the admin listener, receivers' sockets, logs
UNLIMITED_CAP = 1 << 20
THROTTLE = 10.0  # seconds between two log lines about failed accepts
_ACCEPT_FAILED = "socket.accept() out of system resource"


def raise_soft_limit() -> tuple[int, int]:
    """Raise the soft open-file limit to the hard one; (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):  # RLIM_INFINITY refused (macOS): keep what there is
            return soft, soft
    return soft, resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def connection_cap(soft: int | None = None) -> int:
    """How many connections the webhook listener may hold under the soft limit ``soft`` (now's
    when None): an eighth of it, at least RESERVE_MIN, stays for everything else."""
    if soft is None:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY or soft > UNLIMITED_CAP:
        return UNLIMITED_CAP
    return max(16, soft - max(RESERVE_MIN, soft // 8))


class AcceptErrors:
    """A loop exception handler that logs failed accepts (out of descriptors or memory) once per
    THROTTLE seconds with their count, and hands everything else to the handler it replaced."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.previous = loop.get_exception_handler()
        self.count = 0
        self.logged_at = -THROTTLE

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != _ACCEPT_FAILED:
            if self.previous is not None:
                self.previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        self.count += 1
        now = time.monotonic()
        if now - self.logged_at >= THROTTLE:
            self.logged_at = now
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            log.error("cannot accept connections: %s (%d failed accepts so far; open-file limit %s): raise "
                      "the limit (LimitNOFILE, ulimit -n) or find what holds the descriptors",
                      context.get("exception") or "out of resources", self.count, soft)

    @classmethod
    def install(cls, loop: asyncio.AbstractEventLoop) -> AcceptErrors:
        """The loop's handler; installed once per loop (bridges started again on it share it)."""
        current = loop.get_exception_handler()
        if isinstance(current, cls):
            return current
        handler = cls(loop)
        loop.set_exception_handler(handler)
        return handler
