"""Case 3: backlog drain after a receiver outage, against the delivery floor.

The sink answers 503 while DRAIN_JOBS events are accepted (one webhook job each), so the jobs pile
up and fail over and over; retries are configured to back off at most 1 s so the measurement is the
drain, not the backoff schedule. Then the sink answers 200 and we time the distinct deliveries
(webhook-id) the sink counts from its first 200 to its last. The floor is the same count of the
same request body posted by a bare aiohttp client loop to the same sink.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from benchlib.bridge import make_config, require_bridge, start_bridge
from benchlib.client import post_all
from benchlib.common import SERVER_CORE, Invalid, Procs, bench_env, child_env, pin_cmd, python_cmd
from benchlib.context import Context
from benchlib.servers import start_sink

RETRY = {"max_attempts": 1000, "max_elapsed": "1h", "initial_backoff": "200ms", "max_backoff": "1s"}


def receiver_concurrency() -> int:
    try:
        from bridge.config import WebhookReceiverConfig

        return int(WebhookReceiverConfig.model_fields["concurrency"].default)
    except Exception:  # the config model is being edited concurrently; 4 is its documented default
        return 4


def run(ctx: Context) -> dict[str, Any]:
    require_bridge()
    n = ctx.mode.drain_jobs
    if ctx.events.count < n:
        raise Invalid(f"only {ctx.events.count} signed events for {n} jobs")
    out: dict[str, Any] = {"jobs": n, "retry": RETRY}
    with Procs(ctx.log_dir) as procs:
        sink = start_sink(procs, "sink-drain")
        sink.control(status=503)
        cfg = make_config(
            public_key=ctx.public_key,
            storage_url=f"sqlite:///{ctx.workdir / 'drain.db'}",
            sink_url=sink.url,
            extra={"receivers": {"sink": {"retry": RETRY}}},
        )
        bridge = start_bridge(procs, "bridge-drain", cfg, ctx.workdir)
        fill = post_all(bridge.url, ctx.events.records(0, n), concurrency=32)
        if fill.ok != n:
            raise Invalid(f"filling the backlog: {fill.ok} of {n} accepted ({fill.first_error})")
        out["fill_s"] = fill.elapsed
        time.sleep(1.5)  # let every job meet the outage at least once
        out["failed_attempts_during_outage"] = sink.stats()["failed"]

        sink.control(status=200, reset=True)
        t_back = time.monotonic()
        # Leave the footprint case (last) the time it needs: ~100 s for 100,000 events.
        budget = ctx.remaining(reserve=30 + ctx.mode.footprint_events / 1000)
        st = sink.wait_delivered(n, timeout=max(10.0, min(ctx.mode.drain_timeout_s, budget)), stall=15)
        bridge.check_alive()
        delivered = st["unique"]
        out.update(delivered=delivered, requests=st["ok"], first_after_s=(st["first_ok"] or t_back) - t_back)
        if delivered == 0:
            raise Invalid("no delivery arrived after the outage ended")
        span = max(st["last_ok"] - st["first_ok"], 1e-3)
        out["rate"] = delivered / span  # steady drain rate, first delivery to last
        out["rate_from_recovery"] = delivered / max(st["last_ok"] - t_back, 1e-3)
        out["complete"] = delivered >= n
        sample = sink.sample()
        procs.stop(bridge.proc)

        # The floor: same sink, same body, bare aiohttp client with the receiver's concurrency.
        conc = receiver_concurrency()
        sample_path = ctx.workdir / "drain-sample.json"
        sample_path.write_text(json.dumps(sample))
        sink.control(reset=True)
        cmd = pin_cmd(
            SERVER_CORE,
            python_cmd("-m", "benchlib.floor_client", f"{sink.url}/hook", str(n), str(conc), str(sample_path)),
        )
        done = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=ctx.mode.drain_timeout_s + 60,
            env=child_env(bench_env()),
        )
        if done.returncode != 0:
            raise RuntimeError(f"floor client failed: {done.stderr[-400:]}")
        floor = json.loads(done.stdout.strip().splitlines()[-1])
        fst = sink.stats()
        floor_span = max(fst["last_ok"] - fst["first_ok"], 1e-3)
        out["floor"] = {
            "rate": fst["ok"] / floor_span,
            "client": floor,
            "concurrency": conc,
            "body_bytes": len(sample["body"]),
        }
    return out
