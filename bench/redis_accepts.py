"""Store-level A/B of RedisStore.accept: CPU per accept of the bridge process and of redis-server.

    python3 bench/redis_accepts.py                       this tree, 3 rounds
    python3 bench/redis_accepts.py --tree /tmp/base --tree . --rounds 4   alternating A/B

Each round of each tree: a fresh redis-server on a free loopback port, a child process importing
``bridge`` from that tree, ``--accepts`` accepts from ``--concurrency`` tasks over ``--nodes``
nodes (each accept routes to one receiver: one job), after a warm-up. The child reports its own CPU
(process_time) and redis-server's (/proc/<pid>/stat) per accept, in µs. Trees alternate within a
round, since other work on a shared machine moves every number. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

T0 = datetime(2026, 4, 16, 12, 0, tzinfo=UTC)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _child(url: str, redis_pid: int, accepts: int, concurrency: int, nodes: int) -> dict[str, float]:
    from bridge.decide import Policy, decider
    from bridge.model import Event, RouteMatch
    from bridge.store.redis import RedisStore

    policy = Policy(lambda e, prev: [RouteMatch("r", ("hook",))], (), 0.0, 300.0)
    store = RedisStore(url, prefix="ab:")
    await store.open()
    counter = iter(range(10**9))

    async def worker(n: int) -> None:
        for _ in range(n):
            i = next(counter)
            t = T0 + timedelta(milliseconds=i)
            status = "FAILED" if (i // nodes) % 2 == 0 else "RUNNING"
            event = Event("NODE_STATUS_UPDATED", t, f"node-{i % nodes}", status, details={"seq": i}, received_at=t)
            await store.accept(event, decider(event, policy, t), now=t, dedup_ttl=3600.0)

    async def run(total: int) -> None:
        per, extra = divmod(total, concurrency)
        await asyncio.gather(*(worker(per + (k < extra)) for k in range(concurrency)))

    await run(max(1000, accepts // 10))  # warm-up: connections, script cache, node records
    cpu0, rcpu0, wall0 = time.process_time(), _cpu_seconds(redis_pid), time.perf_counter()
    await run(accepts)
    cpu1, rcpu1, wall1 = time.process_time(), _cpu_seconds(redis_pid), time.perf_counter()
    await store.close()
    return {
        "bridge_us": (cpu1 - cpu0) / accepts * 1e6,
        "redis_us": (rcpu1 - rcpu0) / accepts * 1e6,
        "per_s": accepts / (wall1 - wall0),
    }


def _round(tree: Path, args: argparse.Namespace) -> dict[str, float]:
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="redis-accepts-") as work:
        cmd = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
               "--dir", work, "--protected-mode", "yes", "--daemonize", "no"]  # fmt: skip
        redis = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                        s.sendall(b"PING\r\n")
                        if s.recv(64).startswith(b"+PONG"):
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on {port} never answered PING")
                time.sleep(0.05)
            env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
            out = subprocess.run(
                [sys.executable, __file__, "--child", f"redis://127.0.0.1:{port}/0", str(redis.pid),
                 "--accepts", str(args.accepts), "--concurrency", str(args.concurrency), "--nodes", str(args.nodes)],
                env=env, check=True, capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            return dict(json.loads(out.stdout.strip().splitlines()[-1]))
        finally:
            redis.terminate()
            redis.wait(10)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tree", action="append", type=Path, help="a source tree to import bridge from (repeatable)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--accepts", type=int, default=20_000)
    p.add_argument("--concurrency", type=int, default=200)
    p.add_argument("--nodes", type=int, default=500)
    p.add_argument("--child", nargs=2, metavar=("URL", "REDIS_PID"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        url, pid = args.child
        print(json.dumps(asyncio.run(_child(url, int(pid), args.accepts, args.concurrency, args.nodes))))
        return 0
    if not shutil.which("redis-server"):
        print("redis-server is not installed", file=sys.stderr)
        return 1
    trees: list[Path] = args.tree or [Path(__file__).resolve().parent.parent]
    results: dict[Path, list[dict[str, float]]] = {t: [] for t in trees}
    for r in range(args.rounds):
        for tree in trees if r % 2 == 0 else trees[::-1]:
            res = _round(tree, args)
            results[tree].append(res)
            print(f"round {r + 1} {tree}: bridge {res['bridge_us']:.0f} µs, redis {res['redis_us']:.0f} µs, "
                  f"{res['per_s']:.0f} accepts/s", flush=True)  # fmt: skip
    print(f"\n{args.accepts} accepts, {args.concurrency} concurrent, {args.nodes} nodes; median (min-max) per accept")
    for tree, rows in results.items():

        def col(key: str, rows: list[dict[str, Any]] = rows) -> str:
            vals = [row[key] for row in rows]
            return f"{statistics.median(vals):.0f} ({min(vals):.0f}-{max(vals):.0f})"

        print(f"{tree}: bridge CPU {col('bridge_us')} µs, redis-server CPU {col('redis_us')} µs, "
              f"{col('per_s')} accepts/s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
