"""serve's event loop: asyncio's own by default, uvloop on request, a clear error otherwise."""

from __future__ import annotations

import asyncio

import pytest

from bridge.errors import ConfigError
from bridge.eventloop import LOOP_ENV, choose, run


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
