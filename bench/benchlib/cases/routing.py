"""Case 4: routing cost (in-process micro-benchmark), run in a child pinned to the server core."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from benchlib.common import REPO, SERVER_CORE, Unavailable, bench_env, child_env, pin_cmd, python_cmd
from benchlib.context import Context

MISSING = ("ModuleNotFoundError", "ImportError", "cannot import name")


def run(ctx: Context) -> dict[str, Any]:
    m = ctx.mode
    cmd = pin_cmd(
        SERVER_CORE,
        python_cmd(
            "-m", "benchlib.routing_micro", str(m.routing_nodes), str(m.routing_repeats), *map(str, m.routing_sizes)
        ),
    )
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO, env=child_env(bench_env()))
    (ctx.log_dir / "routing.log").write_text(f"$ {' '.join(cmd)}\n{done.stdout}{done.stderr}")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        if any(s in done.stderr for s in MISSING) and "bridge" in done.stderr:
            raise Unavailable(f"bridge.routing not importable yet: {last}")
        if "ConfigError" in done.stderr:  # our routing config no longer matches bridge.config
            raise RuntimeError(f"routing config rejected by bridge.config: {last}")
        # The router exists but failed on our events: a router bug (or work in progress), reported.
        raise Unavailable(f"routing micro-benchmark failed: {last}")
    data = json.loads(done.stdout.strip().splitlines()[-1])
    return {"nodes": data["nodes"], "by_routes": {str(s["routes"]): s for s in data["sizes"]}}
