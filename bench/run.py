#!/usr/bin/env python3
"""alert-bridge benchmark suite: the bridge side by side with its baselines, in one invocation.

    python bench/run.py            full run (< 12 minutes on a 2-core machine)
    python bench/run.py --quick    smoke mode for CI: every case, a few seconds each

Prints the tables and target verdicts and writes bench/results/latest.json and latest.md.
Exit status: 0 when the run completed (missed targets and cases that cannot run yet, such as the
bridge before it exists, are reported, not failures); 1 when the harness itself broke.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]  # benchlib, and the bridge package at the repo root

from benchlib import bridge as bridge_mod  # noqa: E402
from benchlib import loop, report, tables  # noqa: E402
from benchlib.bridge import bridge_status, compile_bridge  # noqa: E402
from benchlib.cases import delivery, drain, e2e, footprint, ingest, routing  # noqa: E402
from benchlib.common import LOAD_CORE, RESULTS, CpuMeter, Invalid, Unavailable, can_pin, pin_self  # noqa: E402
from benchlib.context import FULL, QUICK, Context  # noqa: E402
from benchlib.events import ensure_events, ensure_key  # noqa: E402

README_START, README_END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"


def cases() -> list[tuple[str, Callable[[Context], dict[str, Any]]]]:
    # The floor runs first: its rate sizes the event windows of the bridge cases.
    # bridge-sqlite's rate sizes the e2e case's (e2e probes it itself when it did not run).
    order = [
        "aiohttp-floor", "httptools-floor", "node-seed", "node-keyobject", "aiohttp-relay", "bridge-sqlite-noroute",
        "bridge-sqlite",
        "bridge-redis", "bridge-sqlite-dup",
    ]
    out: list[tuple[str, Callable[[Context], dict[str, Any]]]] = [
        (name, lambda ctx, name=name: ingest.run(ctx, name)) for name in order
    ]
    return [
        *out, ("e2e", e2e.run), ("delivery", delivery.run), ("routing", routing.run), ("drain", drain.run),
        ("footprint", footprint.run),
    ]


def _version(cmd: list[str]) -> str:
    if not shutil.which(cmd[0]):
        return "not installed"
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return ((done.stdout or done.stderr).strip().splitlines() or ["unknown"])[0][:80]


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    import aiohttp
    import cryptography

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "cryptography": cryptography.__version__,
        "node": _version(["node", "--version"]),
        "wrk": _version(["wrk", "--version"]).split(" [")[0],
        "redis": _version(["redis-server", "--version"]).split(" sha=")[0],
        "pinned": can_pin(),
    }


def render(payload: dict[str, Any]) -> tuple[str, str]:
    m = payload["machine"]
    mode = payload["mode"]
    head = (
        f"alert-bridge bench ({mode['name']}) {payload['started']}, {payload['elapsed_s']:.0f}s - "
        f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}, aiohttp {m['aiohttp']}, Node {m['node']}, {m['wrk']}, {m['redis']}; "
        f"event loop of the bridge and the Python baselines: {payload['loop']['name']} ({payload['loop']['why']})"
    )
    if payload["loop"]["mismatches"]:
        head += "; WARNING, loop not as asked: " + "; ".join(payload["loop"]["mismatches"])
    tabs = tables.tables(payload["cases"], ingest.CASES, mode, payload["targets"])
    tabs.append(report.target_table(payload["targets"]))
    text = "\n\n".join([head, *(t.text() for t in tabs)])
    md = "\n\n".join([f"_{head}_", *(t.markdown() for t in tabs)])
    return text, md


def choose_loop(asked: str | None, bridge_ok: bool, public_key: Path, workdir: Path, log_dir: Path) -> tuple[str, str]:
    """The event loop for the run and why: --loop, else the one the bridge picks by itself."""
    if asked:
        return asked, "--loop"
    if not bridge_ok:
        return "asyncio", "the bridge is unavailable"
    try:
        found = bridge_mod.default_loop(public_key, workdir, log_dir)
    except Exception as exc:  # the probe is a convenience: fall back rather than fail the run
        return "asyncio", f"could not tell the bridge's default ({type(exc).__name__}: {exc})"
    return found, "the bridge's default"


def update_readme(path: Path, md: str) -> None:
    """Replace what lies between the marker lines (markers alone on their line, not quoted in prose)."""
    text = path.read_text()
    pattern = re.compile(rf"^{re.escape(README_START)}$.*?^{re.escape(README_END)}$", re.S | re.M)
    if not pattern.search(text):
        raise SystemExit(f"{path}: no {README_START} ... {README_END} lines to replace")
    path.write_text(pattern.sub(lambda _: f"{README_START}\n{md}\n{README_END}", text, count=1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke mode: a few seconds per case (CI)")
    ap.add_argument("--only", help="comma-separated case names (default: all): " + ", ".join(n for n, _ in cases()))
    ap.add_argument(
        "--out",
        type=Path,
        default=RESULTS,
        help="where latest.json / latest.md go (latest-quick.* with --quick, *-partial.* with --only)",
    )
    ap.add_argument(
        "--update-readme",
        type=Path,
        metavar="FILE",
        action="append",
        default=[],
        help=f"also replace the {README_START} section of FILE with the Markdown tables (repeatable)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory (configs, databases)")
    ap.add_argument(
        "--loop",
        choices=loop.CHOICES,
        help=f"event loop of the bridge ({loop.ENV}) and of the Python baselines alike "
        "(default: the one the bridge runs when not told)",
    )
    ap.add_argument(
        "--workers",
        type=int,
        default=1,
        help="bridge processes (replicas on one Redis) in the bridge-redis case; must divide 10,000 (default 1)",
    )
    ap.add_argument(
        "--e2e-rate",
        type=float,
        help="events/s for the e2e case instead of 10%% of its measured capacity (for investigations)",
    )
    args = ap.parse_args(argv)
    if args.workers < 1 or 10_000 % args.workers:
        ap.error("--workers must be a divisor of 10,000 (1, 2, 4, 5, 8, 10, ...)")
    if args.loop and not loop.available(args.loop):
        ap.error(f"--loop {args.loop}: not installed (pip install {args.loop})")
    mode = QUICK if args.quick else FULL
    selected = cases()
    if args.only:
        names = {n.strip() for n in args.only.split(",")}
        unknown = names - {n for n, _ in selected}
        if unknown:
            ap.error(f"unknown case(s): {', '.join(sorted(unknown))}")
        selected = [(n, f) for n, f in selected if n in names]

    t_start = time.monotonic()
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    log_dir = args.out / "logs"
    shutil.rmtree(log_dir, ignore_errors=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="alert-bridge-bench-"))
    print(f"alert-bridge bench, {mode.name} mode; scratch {workdir}; logs {log_dir}", flush=True)
    try:
        return run(args, selected, workdir, log_dir, t_start, started)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def run(
    args: argparse.Namespace,
    selected: list[tuple[str, Callable[[Context], dict[str, Any]]]],
    workdir: Path,
    log_dir: Path,
    t_start: float,
    started: str,
) -> int:
    mode = QUICK if args.quick else FULL
    key = ensure_key()
    public_key = key.write_public(workdir)
    # Enough for the baselines' window, the drain and the footprint; bridge cases sign more if their
    # warm-up shows they need it.
    need = max(ingest.LOOP_WINDOW, mode.footprint_events, mode.drain_jobs)
    print(f"- events: need {need:,} signed events (key {key.fingerprint})", flush=True)
    events = ensure_events(key, need)
    pin_self(LOAD_CORE)  # the harness and its clients stay off the server's core
    ok, why = bridge_status()
    print(f"- bridge: {'available' if ok else 'UNAVAILABLE: ' + why}", flush=True)
    if ok:
        compile_bridge()
    loop_name, loop_why = choose_loop(args.loop, ok, public_key, workdir, log_dir)
    # Every process the harness starts inherits it: the bridge reads it, the baselines follow it.
    os.environ[loop.ENV] = loop_name
    print(f"- event loop: {loop_name} ({loop_why})", flush=True)

    ctx = Context(
        mode=mode, key=key, events=events, public_key=public_key, workdir=workdir, log_dir=log_dir, started=t_start,
        loop=loop_name, workers=args.workers, e2e_rate=args.e2e_rate,
    )
    broken = False
    for name, fn in selected:
        print(f"- {name} ...", flush=True)
        t0, meter = time.monotonic(), CpuMeter()
        try:
            result = {"status": "ok", **fn(ctx)}
        except Unavailable as exc:
            result = {"status": "unavailable", "reason": str(exc)}
        except Invalid as exc:
            result = {"status": "invalid", "reason": str(exc)}
        except Exception as exc:  # the harness broke: report it, finish the others, exit non-zero
            broken = True
            result = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"}
            (log_dir / f"error-{name}.txt").write_text(traceback.format_exc())
        result["seconds"] = round(time.monotonic() - t0, 1)
        result["background"] = meter.stop()
        ctx.results[name] = result
        summary = report.brief(name, result)
        print(f"  {result['status']} in {result['seconds']}s: {summary}", flush=True)

    payload = {
        "schema": 1,
        "started": started,
        "elapsed_s": round(time.monotonic() - t_start, 1),
        "mode": {"name": mode.name, **{k: v for k, v in vars(mode).items() if k != "name"}},
        "machine": machine(),
        "bridge": {"available": ok, "reason": why},
        "loop": {"name": loop_name, "why": loop_why, "mismatches": sorted(bridge_mod.mismatches)},
        "workers": args.workers,
        "events": {"file": ctx.events.path.name, "count": ctx.events.count},
        "cases": ctx.results,
        "targets": report.evaluate(ctx.results),
        "harness_ok": not broken,
    }
    text, md = render(payload)
    print("\n" + text)
    args.out.mkdir(parents=True, exist_ok=True)
    # Smoke and partial runs must not overwrite the published full results.
    stem = "latest" + ("-quick" if args.quick else "") + ("-partial" if args.only else "")
    (args.out / f"{stem}.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    (args.out / f"{stem}.md").write_text(md + "\n")
    for readme in args.update_readme:
        update_readme(readme, md)
    print(f"\nwrote {args.out / (stem + '.json')} and {args.out / (stem + '.md')}")
    if broken:
        print("harness error(s): see " + ", ".join(str(p) for p in log_dir.glob("error-*.txt")), file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
