"""Shared fixtures: a signing key, config builders, the bridge in-process and as a real process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from bridge.testing import generate_key, public_pem
from tests.support.harness import BridgeProcess, InProcessBridge, base_config

pytest_plugins = ["tests.support.fakes", "tests.support.reliability"]

# serve runs on asyncio's loop unless ALERT_BRIDGE_LOOP=uvloop (bridge/eventloop.py), and a transport of
# either can break the listener: tests marked ``both_loops`` run on each; the rest on asyncio's.
_ASYNCIO_LOOP: dict[str, Callable[[], Any]] = {"asyncio": asyncio.new_event_loop}
try:
    import uvloop
except ImportError:  # a dependency on Linux only: elsewhere the marked tests run on asyncio's loop alone
    _BOTH_LOOPS = _ASYNCIO_LOOP
else:
    _BOTH_LOOPS = {**_ASYNCIO_LOOP, "uvloop": uvloop.new_event_loop}


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], Any]]:
    return _BOTH_LOOPS if item.get_closest_marker("both_loops") else _ASYNCIO_LOOP


@pytest.fixture(scope="session")
def signing_key() -> rsa.RSAPrivateKey:
    return generate_key()


@pytest.fixture(scope="session")
def other_key() -> rsa.RSAPrivateKey:
    return generate_key()


@pytest.fixture
def public_key_file(tmp_path: Path, signing_key: rsa.RSAPrivateKey) -> Path:
    path = tmp_path / "thunderstack.pem"
    path.write_bytes(public_pem(signing_key))
    return path


@pytest.fixture
def make_config(tmp_path: Path, public_key_file: Path) -> Callable[..., dict[str, Any]]:
    """A config dict on free loopback ports, trusting ``signing_key``; keyword args override sections."""

    def build(**overrides: Any) -> dict[str, Any]:
        return base_config(tmp_path, public_key_file, **overrides)

    return build


@pytest.fixture
async def bridge(
    make_config: Callable[..., dict[str, Any]], signing_key: rsa.RSAPrivateKey
) -> AsyncIterator[Callable[..., Any]]:
    """Start the app in this process: ``b = await bridge(receivers=..., routes=...)``."""
    started: list[InProcessBridge] = []

    async def start(**overrides: Any) -> InProcessBridge:
        b = InProcessBridge(make_config(**overrides), signing_key)
        await b.start()
        started.append(b)
        return b

    yield start
    for b in reversed(started):
        await b.stop()


@pytest.fixture
async def bridge_process(
    tmp_path: Path, make_config: Callable[..., dict[str, Any]], signing_key: rsa.RSAPrivateKey
) -> AsyncIterator[Callable[..., Any]]:
    """Start the real ``alert-bridge serve`` process: ``p = await bridge_process(storage=...)``."""
    started: list[BridgeProcess] = []

    async def start(*, wait_ready: bool = True, **overrides: Any) -> BridgeProcess:
        p = BridgeProcess(tmp_path / f"bridge{len(started)}", make_config(**overrides), signing_key)
        started.append(p)  # before start(): a start that times out must still be killed
        await p.start(wait_ready=wait_ready)
        return p

    yield start
    for p in started:
        p.kill()
