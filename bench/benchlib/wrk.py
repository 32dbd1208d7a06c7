"""Run wrk (pinned to the load core) with post_signed.lua and parse its BENCH_JSON line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from benchlib.common import BENCH, Unavailable, child_env, load_cores, pin_cmd_cores
from benchlib.events import EventFile

LUA = BENCH / "wrk" / "post_signed.lua"
THREADS = 2  # one core for wrk; two threads exercise the per-thread offsets and stay cheap
CONNECTIONS = 64  # enough in flight for the bridge to batch its commits; same for every case


def ensure_wrk(log=print) -> str:
    """Path to wrk, installing Debian's package if it is missing (the machine's ordinary client)."""
    path = shutil.which("wrk")
    if path:
        return path
    if os.geteuid() != 0:
        raise Unavailable("wrk is not installed and we are not root to apt-get install it")
    log("  wrk missing: apt-get install -y wrk")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "wrk"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise Unavailable(f"{' '.join(cmd)} failed: {done.stderr.strip()[-300:]}")
    path = shutil.which("wrk")
    if not path:
        raise Unavailable("wrk still missing after apt-get install")
    return path


@dataclass
class WrkResult:
    rps: float
    requests: int
    duration_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    non2xx: int
    socket_errors: int
    wraps: int
    max_used: int  # most events one thread took; the next window starts THREADS * max_used further
    loop: bool

    def as_dict(self) -> dict:
        return asdict(self)


def run_wrk(
    url: str,
    events: EventFile,
    *,
    duration: float,
    offset: int,
    limit: int,
    loop: bool,
    path: str,
    log_file: Path,
    threads: int = THREADS,
    connections: int = CONNECTIONS,
    ports: list[int] | None = None,
) -> WrkResult:
    """One wrk run over events [offset, offset + limit); each thread takes every ``threads``-th one.

    ``ports``: bridge replicas on 127.0.0.1; thread t sends to ports[t % len(ports)] (so each node's
    events still go to one replica, oldest first)."""
    limit = max(threads, min(limit, events.count - offset))
    cmd = pin_cmd_cores(
        load_cores(),
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--timeout",
            "10s",
            "--latency",
            "-s",
            str(LUA),
            url,
            "--",
            str(events.path),
            str(events.record_len),
            str(threads),
            str(offset),
            str(limit),
            "loop" if loop else "once",
            path,
        ],
    )
    env = child_env({"BENCH_PORTS": ",".join(map(str, ports)) if ports else None})
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, env=env)
    with open(log_file, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n{done.stdout}{done.stderr}\n")
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed (exit {done.returncode}): {(done.stderr or done.stdout)[-400:]}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    secs = data["duration_us"] / 1e6
    return WrkResult(
        rps=data["requests"] / secs if secs else 0.0,
        requests=data["requests"],
        duration_s=secs,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        p999_ms=data["p999_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        non2xx=data["non2xx"],
        socket_errors=data["connect_errors"] + data["read_errors"] + data["write_errors"] + data["timeouts"],
        wraps=data["wraps"],
        max_used=data["max_used"],
        loop=loop,
    )
