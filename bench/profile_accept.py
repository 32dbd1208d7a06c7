"""Where the accept path's time goes: the real ``python -m bridge serve`` under wrk, A/B between trees.

    python3 bench/profile_accept.py                                  this tree, bridge-sqlite with a route
    python3 bench/profile_accept.py --case sqlite-noroute --case redis --floor
    python3 bench/profile_accept.py --tree /tmp/base --tree . --rounds 3     alternating A/B
    python3 bench/profile_accept.py --case sqlite-noroute --floor --stage http --stage verify --stage event \
        --stage memory --stage full                      the accept path step by step (stage_bridge.py)
    python3 bench/profile_accept.py --py-spy out/            a py-spy profile (raw stacks + top table)

Each round of each (tree, case), the trees in reverse order on odd rounds: a fresh store (SQLite
file or redis-server), the bridge started as bench/run.py starts it (pinned to the server core, the
same config), a warm-up, then one wrk run of ``--seconds`` over pre-signed events it has not seen.
Reported per round: req/s and CPU µs per request of the server core's processes (the bridge, and
redis-server for the Redis case), from /proc, and of that the kernel's ("sys"). Trees and cases
alternate within a round, since other work on a shared machine moves every number; compare CPU µs
per request more than req/s. ``--loop`` sets ALERT_BRIDGE_LOOP for the
bridge (and the floor) processes. See bench/README.md, "Where the time goes".

Under wrk the dispatcher delivers only a fraction of what the bridge accepts (the rest right after),
so the window's CPU holds a share of the deliveries that varies with scheduling. ``--settle S``
waits for deliveries to stop (S quiet seconds) after the warm-up and after the window, and reports
``cpu_drained_us``: the window's requests and every alert they caused, delivered.
``--callgrind-drain`` (with ``--settle``) counts instructions per delivered alert over that drain
alone. ``--rate R`` sends at a fixed rate (open loop) instead of wrk's saturation.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import loop as loop_mod
from benchlib.bridge import compile_bridge, make_config
from benchlib.client import paced
from benchlib.common import (
    SERVER_CORE,
    Procs,
    cpu_seconds,
    cpu_split,
    percentile,
    pin_cmd,
    pin_self,
    python_cmd,
    wait_until_ready,
)
from benchlib.events import ensure_events, ensure_key
from benchlib.servers import start_baseline, start_redis, start_sink
from benchlib.wrk import ensure_wrk, run_wrk
from stage_bridge import STAGES

CASES = ("sqlite", "sqlite-noroute", "redis", "redis-noroute")
# --stage: where the accept path stops (stage_bridge.py), or "memory" (the whole path on the memory
# store: no outbox), or "full" (the case's store)
STAGE_CHOICES = (*STAGES, "memory", "full")


def _start_bridge(procs: Procs, tree: Path, name: str, cfg: dict[str, Any], workdir: Path,
                  env: dict[str, str], callgrind: bool, cg_dir: Path | None = None, stage: str | None = None) -> Any:
    import yaml

    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    full_env = {"PYTHONPATH": str(tree), "PYTHONUNBUFFERED": "1", **env}
    cmd = python_cmd("-m", "bridge", "serve", "-c", str(path))
    if stage in STAGES:  # the bridge stopped after that step (stage_bridge.py)
        cmd = python_cmd(str(Path(__file__).resolve().parent / "stage_bridge.py"), stage, *cmd[3:])
    if callgrind:
        # The interpreter itself (sys.executable may be a shim that execs it, which valgrind would
        # not follow); instrumentation off until the measured window.
        real = os.path.realpath(f"{sys.base_prefix}/bin/python{sys.version_info[0]}.{sys.version_info[1]}")
        out = f"--callgrind-out-file={cg_dir or workdir}/{name}.cg"
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", out, real, *cmd[1:]]
    proc = procs.start(name, pin_cmd(SERVER_CORE, cmd), env=full_env, cwd=workdir)
    listen = cfg["server"]["listen"]
    wait_until_ready(proc, [f"http://{listen}/readyz", f"http://{cfg['server']['admin_listen']}/readyz"],
                     600 if callgrind else 60)
    return proc


def _callgrind_control(pid: int, on: bool) -> None:
    subprocess.run(["callgrind_control", "-i", "on" if on else "off", str(pid)], check=True, capture_output=True)


def _collected(log: Path) -> int:
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if "Collected :" in line:
            return int(line.rsplit(":", 1)[1])
    raise RuntimeError(f"no callgrind total in {log}")


def _py_spy(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        ["py-spy", "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))), "--rate", "250",
         "--nonblocking", "--format", "raw", "--output", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def top_table(raw: Path, n: int = 25) -> str:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    self_: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].split("/")[-1] + ")"
                  if " (" in f else f for f in stack.split(";")]
        total += count
        self_[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    lines = [f"{total} samples", "self%  incl%  function"]
    for f, c in self_.most_common(n):
        lines.append(f"{100 * c / total:5.1f} {100 * incl[f] / total:6.1f}  {f}")
    lines.append("-- inclusive --")
    for f, c in incl.most_common(n):
        lines.append(f"{100 * self_[f] / total:5.1f} {100 * c / total:6.1f}  {f}")
    return "\n".join(lines)


def _io(pid: int) -> dict[str, int]:
    try:
        text = Path(f"/proc/{pid}/io").read_text()
    except OSError:
        return {}
    return {k: int(v) for k, _, v in (line.partition(": ") for line in text.splitlines())}


class _WalWatch:
    """Samples a WAL file's size every 50 ms on a thread; ``stop()`` gives the largest, in KiB."""

    def __init__(self, path: Path) -> None:
        self._path, self._max, self._done = path, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(0.05):
            with contextlib.suppress(OSError):
                self._max = max(self._max, self._path.stat().st_size)

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return self._max // 1024


def _other_threads_cpu(pid: int) -> float:
    """CPU-seconds of the process's threads but its main one (the SQLite checkpoint thread, executors)."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        if task.name != str(pid):
            with contextlib.suppress(OSError):
                stat = (task / "stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()
                total += (int(fields[11]) + int(fields[12])) / tick
    return total


def one(tree: Path, loop: str | None, case: str, args: argparse.Namespace, events: Any, key_pem: Path,
        workdir: Path, log_dir: Path, tag: str, stage: str | None = None) -> dict[str, Any]:
    env = {"ALERT_BRIDGE_LOOP": loop} if loop else {}
    with Procs(log_dir) as procs:
        sink = start_sink(procs, f"sink-{tag}")
        redis = None
        if stage == "memory":
            storage = "memory://"
        elif case.startswith("redis"):
            redis = start_redis(procs, workdir / f"redis-{tag}")
            storage = f"redis://127.0.0.1:{redis.port}/0"
        else:
            storage = f"sqlite:///{workdir / (tag + '.db')}"
        extra: dict[str, Any] = {}
        if case.endswith("noroute"):
            extra = {"default_to": []}
        cfg = make_config(public_key=key_pem, storage_url=storage, sink_url=sink.url, extra=extra)
        proc = _start_bridge(procs, tree, f"bridge-{tag}", cfg, workdir, env, args.callgrind or args.callgrind_drain,
                              args.callgrind_dir, stage)
        url = f"http://{cfg['server']['listen']}/webhook"
        offset = 0
        warm = run_wrk(url, events, duration=args.warmup, offset=offset, limit=events.count, loop=False,
                       path="/webhook", log_file=log_dir / f"wrk-{tag}.log")
        offset += 2 * warm.max_used
        if args.settle:
            sink.wait_delivered(1 << 60, timeout=180, stall=args.settle)  # the warm-up's backlog out of the window
        on_core = [proc.pid] + ([redis.proc.pid] if redis else [])
        spy = _py_spy(proc.pid, args.seconds, args.py_spy / f"{tag}.txt") if args.py_spy else None
        if args.callgrind:
            _callgrind_control(proc.pid, True)
        io0, threads0 = _io(proc.pid), _other_threads_cpu(proc.pid)
        delivered0 = sink.delivered()
        wal = _WalWatch(workdir / f"{tag}.db-wal") if storage.startswith("sqlite") else None
        sys0 = sum(cpu_split(p)[1] for p in on_core)
        cpu0 = sum(cpu_seconds(p) for p in on_core)
        if args.rate:
            res = _paced_run(url, events, offset, args.rate, args.seconds)
        else:
            res = run_wrk(url, events, duration=args.seconds, offset=offset, limit=events.count - offset,
                          loop=False, path="/webhook", log_file=log_dir / f"wrk-{tag}.log")
        cpu = sum(cpu_seconds(p) for p in on_core) - cpu0
        sys_cpu = sum(cpu_split(p)[1] for p in on_core) - sys0
        io = {k: v - io0.get(k, 0) for k, v in _io(proc.pid).items()}
        threads = _other_threads_cpu(proc.pid) - threads0
        delivered_in_window = sink.delivered() - delivered0
        cpu_drained = None
        if args.settle:  # then the alerts these requests owe, delivered: their whole cost
            if args.callgrind_drain:
                _callgrind_control(proc.pid, True)
            if spy is not None:  # the window's profile first; then one of the drain beside it
                spy.wait(60)
                spy = _py_spy(proc.pid, args.seconds, args.py_spy / f"{tag}-drain.txt")
            sink.wait_delivered(1 << 60, timeout=900 if args.callgrind_drain else 180, stall=args.settle)
            cpu_drained = sum(cpu_seconds(p) for p in on_core) - cpu0
        delivered_owed = sink.delivered() - delivered0
        wal_max = wal.stop() if wal else None
        if args.callgrind or args.callgrind_drain:
            _callgrind_control(proc.pid, False)
        if spy is not None:
            spy.wait(60)
        delivered = sink.delivered()
        proc.stop(grace=180)  # under callgrind, the exit writes the profile
    instructions = _collected(proc.log_path) / res.requests if args.callgrind and res.requests else None
    drained = delivered - delivered0 - delivered_in_window
    per_alert = _collected(proc.log_path) / drained if args.callgrind_drain and drained else None
    out = {
        "tree": str(tree) + (f" [{loop}]" if loop else "") + (f" {{{stage}}}" if stage else ""),
        "case": case, "rps": res.rps,
        "requests": res.requests, "p99_ms": res.p99_ms,
        "cpu_us": cpu / res.requests * 1e6 if res.requests else None, "non2xx": res.non2xx, "wraps": res.wraps,
        "sys_us": sys_cpu / res.requests * 1e6 if res.requests else None,  # of cpu_us: the kernel's (sockets, WAL)
        "threads_us": threads / res.requests * 1e6 if res.requests else None,  # of cpu_us: not the loop's thread
        # the bridge's reads and writes per request (sockets and files: /proc/<pid>/io's syscr, syscw, wchar)
        "io": {k: round(io.get(k, 0) / res.requests, 2) for k in ("syscr", "syscw", "wchar")} if res.requests else {},
        "delivered": delivered, "instructions": instructions,
        # alerts the sink received while wrk ran, per request: a tree that lets a backlog build under
        # saturation would spend less CPU per request inside the window than it owes
        "delivered_per_req": round(delivered_in_window / res.requests, 4) if res.requests else None,
        "delivered_owed_per_req": round(delivered_owed / res.requests, 4) if res.requests else None,
        "cpu_drained_us": cpu_drained / res.requests * 1e6 if cpu_drained and res.requests else None,
        "wal_max_kib": wal_max,  # the WAL file's largest size seen while wrk ran (SQLite cases)
        "drain_instructions_per_alert": per_alert,  # --callgrind-drain: the backlog's delivery alone
    }
    return out


@dataclasses.dataclass
class _Paced:
    requests: int
    rps: float
    p99_ms: float
    non2xx: int
    wraps: int = 0


def _paced_run(url: str, events: Any, offset: int, rate: float, seconds: float) -> _Paced:
    """Events at a fixed rate, open loop, instead of wrk's saturation: CPU per request where nothing queues."""
    count = int(rate * seconds)
    items = [(str(i), sig, body) for i, (sig, body) in enumerate(events.records(offset, offset + count))]
    t0 = time.monotonic()
    sent = paced(url, items, rate=rate)
    elapsed = time.monotonic() - t0
    bad = sum(1 for s in sent if not (isinstance(s.status, int) and 200 <= s.status < 300))
    return _Paced(len(sent), len(sent) / elapsed, 1000 * percentile([s.t_done - s.t_send for s in sent], 99), bad)


@contextlib.contextmanager
def _loop_env(name: str | None) -> Iterator[None]:
    """ALERT_BRIDGE_LOOP for the baselines started inside (benchlib.loop.install reads it)."""
    if name is None:
        yield
        return
    before = os.environ.get(loop_mod.ENV)
    os.environ[loop_mod.ENV] = name
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(loop_mod.ENV, None)
        else:
            os.environ[loop_mod.ENV] = before


def floor_round(args: argparse.Namespace, events: Any, key_pem: Path, log_dir: Path, tag: str,
                name: str = "aiohttp-floor") -> dict[str, Any]:
    with Procs(log_dir) as procs:
        proc, base = start_baseline(procs, name, key_pem)
        url = base + "/webhook"
        run_wrk(url, events, duration=args.warmup, offset=0, limit=50_000, loop=True, path="/webhook",
                log_file=log_dir / f"wrk-{tag}.log")
        cpu0 = cpu_seconds(proc.pid)
        res = run_wrk(url, events, duration=args.seconds, offset=0, limit=50_000, loop=True, path="/webhook",
                      log_file=log_dir / f"wrk-{tag}.log")
        cpu = cpu_seconds(proc.pid) - cpu0
    return {"tree": "-", "case": name, "rps": res.rps, "requests": res.requests, "p99_ms": res.p99_ms,
            "cpu_us": cpu / res.requests * 1e6, "non2xx": res.non2xx, "wraps": 0, "delivered": 0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", action="append", type=Path, help="a source tree to import bridge from (repeat)")
    ap.add_argument("--case", action="append", choices=CASES)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--settle", type=float, default=0.0,
                    help="wait for deliveries to stop (this many quiet seconds) after the warm-up and after the "
                         "window; cpu_drained_us then counts the window's requests and every alert they caused")
    ap.add_argument("--rate", type=float, help="send at this fixed rate (open loop) instead of saturating with wrk")
    ap.add_argument("--floor", action="store_true", help="also measure aiohttp-floor each round")
    ap.add_argument("--floor-no-verify", action="store_true",
                    help="also measure aiohttp-floor without its RSA check each round (aiohttp alone)")
    ap.add_argument("--httptools-floor", action="store_true",
                    help="also measure httptools-floor (with --floor-no-verify: and without its RSA check) each round")
    ap.add_argument("--loop", action="append", choices=("asyncio", "uvloop"),
                    help="ALERT_BRIDGE_LOOP for the bridge (repeat: each loop is a variant, like --tree)")
    ap.add_argument("--stage", action="append", choices=STAGE_CHOICES,
                    help="stop the bridge's accept path after this step (repeat: each stage is a variant, like "
                         "--tree): http, verify, event (stage_bridge.py), memory (the whole path, memory store), "
                         "full (the case's store)")
    ap.add_argument("--py-spy", type=Path, help="record a py-spy profile of each bridge run into this directory")
    ap.add_argument("--json", type=Path, help="write the rounds here")
    ap.add_argument("--callgrind-drain", action="store_true",
                    help="with --settle: run the bridge under callgrind, instrumented only while the window's "
                         "backlog is delivered (instructions per delivered alert)")
    ap.add_argument("--callgrind-dir", type=Path, help="keep the callgrind profiles here (callgrind_annotate)")
    ap.add_argument("--callgrind", action="store_true",
                    help="run the bridge under callgrind: instructions per request over the wrk run (slow, "
                         "but the same on a busy machine; Redis's own work is not counted)")
    args = ap.parse_args()
    trees = [t.resolve() for t in (args.tree or [Path(__file__).resolve().parent.parent])]
    for tree in trees:
        compile_bridge(tree)  # every tree starts from bytecode, as installed
    cases = args.case or ["sqlite"]
    ensure_wrk()
    pin_self(1)
    key = ensure_key()
    events = ensure_events(key, 100_000)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="profile-accept-") as tmp:
        workdir = Path(tmp)
        key_pem = key.write_public(workdir)
        log_dir = workdir / "logs"
        log_dir.mkdir()
        for r in range(args.rounds):
            for lp in args.loop or [None]:  # the floors on each loop the bridge runs (--loop), as run.py does
                with _loop_env(lp):
                    for flag, name, tag in ((args.floor, "aiohttp-floor", "floor"),
                                            (args.floor_no_verify, "aiohttp-floor-noverify", "floor-nv"),
                                            (args.httptools_floor, "httptools-floor", "ht-floor"),
                                            (args.httptools_floor and args.floor_no_verify, "httptools-floor-noverify",
                                             "ht-floor-nv")):
                        if flag:
                            row = floor_round(args, events, key_pem, log_dir, f"{tag}-{lp or ''}-{r}", name)
                            row["tree"] = f"- [{lp}]" if lp else "-"
                            results.append(row)
                            print(json.dumps(row), flush=True)
            variants = list(enumerate((t, lp, st) for t in trees for lp in (args.loop or [None])
                                      for st in (args.stage or [None])))
            if r % 2:  # odd rounds in reverse order: running first or second is no advantage
                variants.reverse()
            for case in cases:
                for i, (tree, loop, stage) in variants:
                    tag = f"{case}-{i}-{r}"
                    results.append(one(tree, loop, case, args, events, key_pem, workdir, log_dir, tag, stage))
                    print(json.dumps(results[-1]), flush=True)
                    if args.py_spy:
                        for raw in (args.py_spy / f"{tag}.txt", args.py_spy / f"{tag}-drain.txt"):
                            if raw.exists():
                                table = top_table(raw)
                                raw.with_suffix(".top").write_text(table + "\n")
                                print(table)
    print("\ncase              tree                                   req/s   CPU us/req (median of rounds)"
          "   instructions/req")
    groups: dict[tuple[str, str], list[dict[str, Any]]] = collections.defaultdict(list)
    for row in results:
        groups[(row["case"], row["tree"])].append(row)
    for (case, tree), rows in groups.items():
        rps = statistics.median(r["rps"] for r in rows)
        cpu = statistics.median(r["cpu_us"] for r in rows)
        spread = ", ".join(f"{r['cpu_us']:.0f}" for r in rows)
        instr = [r["instructions"] for r in rows if r.get("instructions")]
        per = f"   {statistics.median(instr):,.0f}" if instr else ""
        kernel = [r["sys_us"] for r in rows if r.get("sys_us") is not None]
        sys_part = f"  sys {statistics.median(kernel):.0f}" if kernel else ""
        print(f"{case:17} {tree[-38:]:38} {rps:8,.0f}   {cpu:6.1f}  ({spread}){sys_part}{per}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
