"""Start the servers the cases need: baselines, the sink, Redis. Each is pinned and logged."""

from __future__ import annotations

import json
import shutil
import socket
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib.common import (
    BENCH,
    LOAD_CORE,
    SERVER_CORE,
    Proc,
    Procs,
    Unavailable,
    bench_env,
    free_port,
    pin_cmd,
    python_cmd,
    wait_port,
)

BASELINES = BENCH / "baselines"


def start_baseline(
    procs: Procs, name: str, public_key: Path, forward_url: str | None = None
) -> tuple[Proc, str]:
    """node-seed, node-keyobject, aiohttp-floor, httptools-floor or aiohttp-relay (which forwards every event to
    ``forward_url``) on the server core; returns (process, base URL)."""
    port = free_port()
    if name.startswith("node-"):
        if not shutil.which("node"):
            raise Unavailable("node is not installed")
        script = BASELINES / ("node_seed.js" if name == "node-seed" else "node_keyobject.js")
        cmd = ["node", str(script), str(port), str(public_key)]
    elif name == "aiohttp-relay":
        assert forward_url is not None
        cmd = python_cmd(str(BASELINES / "aiohttp_relay.py"), str(port), str(public_key), forward_url)
    elif name.startswith("httptools-floor"):
        cmd = python_cmd(str(BASELINES / "httptools_floor.py"), str(port), str(public_key))
    else:
        cmd = python_cmd(str(BASELINES / "aiohttp_floor.py"), str(port), str(public_key))
    # The floors less their RSA check for profile_accept.py only; never inherited by run.py's floors.
    no_verify = "1" if name.endswith("-floor-noverify") else None
    env: dict[str, str | None] = {**bench_env(), "BENCH_FLOOR_NO_VERIFY": no_verify}
    proc = procs.start(name, pin_cmd(SERVER_CORE, cmd), env=env)
    wait_port(proc, port, timeout=20)
    return proc, f"http://127.0.0.1:{port}"


# --- the sink ----------------------------------------------------------------------------------------


@dataclass
class Sink:
    proc: Proc
    port: int
    smtp_port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _call(self, path: str, data: dict[str, Any] | None = None) -> Any:
        req = urllib.request.Request(
            self.url + path,
            data=None if data is None else json.dumps(data).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def control(self, **kw: Any) -> None:
        self._call("/_control", kw)

    def stats(self, channel: str = "hook") -> dict[str, Any]:
        return self._call("/_stats")["channels"][channel]

    def arrivals(self) -> dict[str, dict[str, float]]:
        return self._call("/_arrivals")

    @staticmethod
    def count(stats: dict[str, Any]) -> int:
        """Deliveries in a channel's stats: distinct webhook-ids, or every 2xx answered where senders
        set none (Slack's webhooks, the relay baseline)."""
        return int(stats["unique"] or stats["ok"])

    def delivered(self, channel: str = "hook") -> int:
        return self.count(self.stats(channel))

    def sample(self, channel: str = "hook") -> dict[str, Any] | None:
        return self._call(f"/_sample?channel={channel}")

    def wait_delivered(
        self, expect: int, *, timeout: float, stall: float = 10.0, channel: str = "hook"
    ) -> dict[str, Any]:
        """Poll until ``expect`` distinct deliveries arrived, nothing arrived for ``stall`` s, or timeout."""
        deadline = time.monotonic() + timeout
        last, last_change = -1, time.monotonic()
        while True:
            st = self.stats(channel)
            got = self.count(st)
            if got >= expect:
                return st
            if got != last:
                last, last_change = got, time.monotonic()
            if time.monotonic() > deadline or time.monotonic() - last_change > stall:
                return st
            time.sleep(0.1)


def start_sink(procs: Procs, name: str = "sink", core: int = LOAD_CORE, *, smtp: bool = False) -> Sink:
    """The sink on ``core``; with ``smtp`` also an SMTP server (channel "mail") on a port of its own."""
    port = free_port()
    smtp_port = free_port() if smtp else None
    args = [str(port)] + ([str(smtp_port)] if smtp_port else [])
    proc = procs.start(name, pin_cmd(core, python_cmd("-m", "benchlib.sink", *args)), env=bench_env())
    wait_port(proc, port, timeout=20)
    if smtp_port:
        wait_port(proc, smtp_port, timeout=20)
    return Sink(proc, port, smtp_port)


# --- Redis -------------------------------------------------------------------------------------------


@dataclass
class Redis:
    proc: Proc
    port: int


def start_redis(procs: Procs, workdir: Path, *, core: int = SERVER_CORE) -> Redis:
    """A throwaway redis-server on a free loopback port, no persistence, on the server core."""
    if not shutil.which("redis-server"):
        raise Unavailable("redis-server is not installed")
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [
        "redis-server",
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
        "--protected-mode",
        "yes",
        "--daemonize",
        "no",
    ]
    proc = procs.start(f"redis-{port}", pin_cmd(core, cmd))
    wait_port(proc, port, timeout=20)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # listening is not yet loaded: wait for PONG
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            if s.recv(64).startswith(b"+PONG"):
                return Redis(proc, port)
        time.sleep(0.05)
    raise RuntimeError(f"redis on {port} never answered PING")
