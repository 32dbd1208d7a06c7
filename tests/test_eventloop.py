"""serve's event loop: asyncio's own by default, uvloop on request, a clear error otherwise."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from bridge.errors import ConfigError
from bridge.eventloop import LOOP_ENV, choose, run
from bridge.testing import event_body


def test_asyncio_by_default() -> None:
    assert choose({}) == ("asyncio", None)
    assert choose({LOOP_ENV: " "}) == ("asyncio", None)
    assert choose({LOOP_ENV: "asyncio"}) == ("asyncio", None)


def test_uvloop_on_request_and_auto_picks_it_on_linux() -> None:
    name, factory = choose({LOOP_ENV: "uvloop"})
    assert name == "uvloop" and factory is not None
    assert choose({LOOP_ENV: " Auto "})[0] == "uvloop"


def test_a_bad_value_names_the_variable_and_the_choices() -> None:
    with pytest.raises(ConfigError) as err:
        choose({LOOP_ENV: "libev"})
    (problem,) = err.value.problems
    assert problem.startswith(f"{LOOP_ENV}='libev'") and "auto, uvloop, asyncio" in problem


def test_run_uses_the_chosen_loop() -> None:
    async def loop_type() -> str:
        return type(asyncio.get_running_loop()).__module__

    _, factory = choose({LOOP_ENV: "uvloop"})
    assert run(loop_type(), factory).startswith("uvloop")
    assert run(loop_type(), None).startswith("asyncio")


async def test_serve_on_uvloop_answers_and_records(bridge_process: Callable[..., Any],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # The real process on the opt-in loop: its transports are not asyncio's (the listener once
    # asserted they were, and refused every connection under uvloop).
    monkeypatch.setenv(LOOP_ENV, "uvloop")
    p = await bridge_process()
    body = event_body("uv-1", "FAILED")
    status, doc, _ = await p.post(body)
    assert status == 200 and doc["status"] == "accepted", doc
    status, doc, _ = await p.post(body)
    assert status == 200 and doc["status"] == "duplicate", doc
    status, nodes = await p.get(p.admin_url + "/api/v1/nodes")
    assert status == 200 and [n["node"] for n in nodes["nodes"]] == ["uv-1"]
    assert "event loop: uvloop" in p.log()
