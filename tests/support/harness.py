"""Drive the bridge from tests: in-process (App on free ports) or as the real process."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from bridge import config as config_mod
from bridge.app import App
from bridge.testing import event_body, sign
from tests.support.fakes import LOOPBACK, WebhookSink, free_port

ROOT = Path(__file__).resolve().parents[2]


def base_config(tmp_path: Path, public_key_file: Path, **overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "server": {
            "listen": f"127.0.0.1:{free_port()}",
            "admin_listen": f"127.0.0.1:{free_port()}",
            "shutdown_grace": "5s",
        },
        "verification": {"public_key_file": str(public_key_file)},
        "storage": {"url": f"sqlite://{tmp_path}/bridge.db", "visibility_timeout": "5s"},
        "delivery": {"poll_interval": "200ms", "shutdown_grace": "2s"},
        "receivers": {"console": {"type": "log"}},
        "routes": [],
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


class _Client:
    """Signed posts and plain requests against a running bridge."""

    base_url: str
    admin_url: str
    key: rsa.RSAPrivateKey
    path = "/webhook"

    async def post(
        self,
        body: bytes,
        *,
        signature: str | bool | None = True,
        path: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, dict[str, str]]:
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        if signature is True:
            hdrs["X-ThunderStack-Signature"] = sign(body, self.key)
        elif isinstance(signature, str):
            hdrs["X-ThunderStack-Signature"] = signature
        async with (
            aiohttp.ClientSession() as s,
            s.post(self.base_url + (path or self.path), data=body, headers=hdrs) as r,
        ):
            text = await r.text()
            try:
                doc: Any = await r.json(content_type=None)
            except ValueError:
                doc = text
            return r.status, doc, dict(r.headers)

    async def event(
        self,
        node: str = "n1",
        status: str = "FAILED",
        *,
        timestamp: datetime | str | None = None,
        path: str | None = None,
        **extra: Any,
    ) -> tuple[int, Any]:
        body = event_body(node, status, timestamp=timestamp or datetime.now(UTC), **extra)
        status_code, doc, _ = await self.post(body, path=path)
        return status_code, doc

    async def get(self, url: str) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as s, s.get(url) as r:
            text = await r.text()
            try:
                return r.status, await r.json(content_type=None)
            except ValueError:
                return r.status, text

    async def metrics(self) -> str:
        async with aiohttp.ClientSession() as s, s.get(self.admin_url + "/metrics") as r:
            return await r.text()


class InProcessBridge(_Client):
    def __init__(self, cfg: dict[str, Any], key: rsa.RSAPrivateKey) -> None:
        self.config = config_mod.parse(cfg, env={})
        self.key = key
        self.app = App(self.config)

    async def start(self) -> None:
        await self.app.start()
        self.base_url = f"http://127.0.0.1:{self.app.webhook_port}"
        self.admin_url = f"http://127.0.0.1:{self.app.admin_port}"

    async def stop(self) -> None:
        await self.app.stop()


class BridgeProcess(_Client):
    """The real ``python -m bridge serve`` process, its config file and its log."""

    def __init__(self, directory: Path, cfg: dict[str, Any], key: rsa.RSAPrivateKey,
                 program: Sequence[str] = ("-m", "bridge")) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.program = list(program)  # what python runs before "serve -c CONFIG"
        self.dir = directory
        self.cfg = cfg
        self.key = key
        self.config_path = directory / "config.yaml"
        self.log_path = directory / "bridge.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.nofile: int | None = None  # the open-file limit (soft and hard) the process starts under
        self.write_config(cfg)
        self.base_url = "http://" + cfg["server"]["listen"]
        self.admin_url = "http://" + cfg["server"]["admin_listen"]

    def write_config(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.config_path.write_text(yaml.safe_dump(cfg))

    async def start(self, *, wait_ready: bool = True, timeout: float = 20.0) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, *self.program, "serve", "-c", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
            preexec_fn=None if self.nofile is None else functools.partial(
                resource.setrlimit, resource.RLIMIT_NOFILE, (self.nofile, self.nofile)),
        )
        log.close()
        await self.wait_http("/readyz" if wait_ready else "/healthz", timeout)

    async def wait_http(self, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"bridge exited with {self.proc.returncode}:\n{self.log()}")
            try:
                status, _ = await self.get(self.base_url + path)
                if status == 200:
                    return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        raise TimeoutError(f"bridge not answering {path} within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait_exit(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError("bridge did not exit")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    async def terminate(self) -> int:
        self.signal(signal.SIGTERM)
        return await self.wait_exit()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class ProbeSink(WebhookSink):
    """A WebhookSink for outbox tests. Each request's ``webhook-id`` is noted on arrival
    (``arrived``), then the request is held while ``hold()`` is on (from the n-th arrival),
    delayed by ``delay``, answered 503 when its event's node is in ``failing_nodes``, else
    recorded and answered as WebhookSink does. A request whose client went away while held or
    delayed is in ``arrived`` only. ``active``/``max_active`` count requests in progress.
    ``port``: listen there (to come back where a receiver that was down expects it).
    """

    def __init__(self, *, port: int = 0, delay: float = 0.0, failing_nodes: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.fixed_port = port
        self.delay = delay
        self.failing_nodes = set(failing_nodes)
        self.arrived: list[str] = []
        self.hold_from: int | None = None
        self._gate = asyncio.Event()
        self.active = 0
        self.max_active = 0

    async def __aenter__(self) -> ProbeSink:
        await self.start()
        return self

    async def start(self) -> None:
        if not self.fixed_port:
            await super().start()
            return
        app = web.Application()
        self._routes(app)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, LOOPBACK, self.fixed_port, reuse_address=True).start()
        self._port = self.fixed_port

    def hold(self, from_arrival: int = 0) -> None:
        """Arrivals from the ``from_arrival``-th on (0-based, over the sink's life) wait for release()."""
        self.hold_from = from_arrival
        self._gate.clear()

    def release(self) -> None:
        self.hold_from = None
        self._gate.set()

    def ids(self) -> list[str]:
        """The webhook-id of every delivered (2xx) request, in order."""
        return [r.headers["webhook-id"] for r in self.delivered]

    async def _handle(self, request: web.Request) -> web.Response:
        index = len(self.arrived)
        self.arrived.append(request.headers.get("webhook-id", ""))
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self.hold_from is not None and index >= self.hold_from:
                await self._gate.wait()
            if self.delay:
                await asyncio.sleep(self.delay)
            body = await request.read()
            try:
                event = json.loads(body).get("event")
            except (ValueError, AttributeError):
                event = None
            if isinstance(event, dict) and event.get("nodeId") in self.failing_nodes:
                rec = await self._record(request)
                rec.status = 503
                return web.Response(status=503)
            return await super()._handle(request)
        finally:
            self.active -= 1
