"""The open-file budget (bridge.fdbudget): the raised limit, the listener's cap, failed accepts logged once."""

from __future__ import annotations

import asyncio
import functools
import logging
import resource
import subprocess
import sys

import pytest

from bridge.fdbudget import RESERVE_MIN, UNLIMITED_CAP, AcceptErrors, connection_cap
from tests.support.harness import ROOT


@pytest.mark.parametrize(("soft", "cap"), [(1024, 896), (256, 192), (100, 36), (20, 16), (1 << 20, (1 << 20) - 131072),
                                           (resource.RLIM_INFINITY, UNLIMITED_CAP)])
def test_the_cap_keeps_an_eighth_of_the_limit_and_at_least_the_reserve(soft: int, cap: int) -> None:
    assert connection_cap(soft) == cap
    if 0 < soft < UNLIMITED_CAP:
        assert soft - connection_cap(soft) >= min(RESERVE_MIN, soft - 16)


def test_the_soft_limit_is_raised_to_the_hard_one_at_start() -> None:
    code = "from bridge.fdbudget import raise_soft_limit; print(*raise_soft_limit())"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         preexec_fn=functools.partial(resource.setrlimit, resource.RLIMIT_NOFILE, (64, 128)))
    assert out.stdout.split() == ["64", "128"]


def test_failed_accepts_are_logged_once_per_interval_with_their_count(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.new_event_loop()
    try:
        handler = AcceptErrors.install(loop)
        assert AcceptErrors.install(loop) is handler  # a second bridge on the loop: not wrapped twice
        with caplog.at_level(logging.ERROR):
            for _ in range(500):
                loop.call_exception_handler({"message": "socket.accept() out of system resource",
                                             "exception": OSError(24, "Too many open files")})
            ours = [r for r in caplog.records if r.name == "bridge.server"]
            assert len(ours) == 1 and "cannot accept connections" in ours[0].getMessage()
            assert handler.count == 500
            handler.logged_at -= 60  # the interval has passed: the next one is logged, with the count
            loop.call_exception_handler({"message": "socket.accept() out of system resource"})
            ours = [r for r in caplog.records if r.name == "bridge.server"]
            assert len(ours) == 2 and "501 failed accepts" in ours[1].getMessage()
            # anything else still goes to asyncio's own handler
            loop.call_exception_handler({"message": "something else broke"})
            assert any(r.name == "asyncio" and "something else broke" in r.getMessage() for r in caplog.records)
    finally:
        loop.close()
