"""Case 5: footprint: start-to-ready, RSS idle / after 1,000 / after 20,000 (every node known) /
after 100,000 events, DB size.

Pruning is on and fast (done and dead jobs kept 1 s, pruned every 2 s) so the database holds what
it must (dedup keys, node states, event history per retention) rather than delivered jobs. RSS is
the bridge process and its children, read from /proc once deliveries have drained (or after a
bounded wait, with the pending count reported). The bridge is
then restarted on its full database: start-to-ready with history.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from benchlib.bridge import Bridge, make_config, require_bridge, start_bridge
from benchlib.client import post_all
from benchlib.common import Invalid, Procs, rss_bytes
from benchlib.context import Context
from benchlib.events import NODES
from benchlib.servers import Sink, start_sink

PRUNE = {"prune_interval": "2s", "retention": {"done": "1s", "dead": "1s"}}
DRAIN_WAIT_S = 20.0
CHUNK = 20_000  # records read and sent per batch, to bound the harness's own memory


def db_bytes(db: Path) -> dict[str, int]:
    parts = {s: Path(str(db) + s) for s in ("", "-wal", "-shm")}
    sizes = {("db" + s.replace("-", "_")): p.stat().st_size for s, p in parts.items() if p.exists()}
    sizes["total"] = sum(sizes.values())
    return sizes


def send(ctx: Context, bridge: Bridge, sink: Sink, start: int, stop: int) -> dict[str, Any]:
    """Post events [start, stop) and give their deliveries a bounded time to catch up."""
    t0 = time.monotonic()
    for lo in range(start, stop, CHUNK):
        hi = min(stop, lo + CHUNK)
        res = post_all(bridge.url, ctx.events.records(lo, hi), concurrency=64)
        if res.ok != hi - lo:
            raise Invalid(f"events {lo}..{hi}: {res.ok} accepted ({res.first_error})")
    elapsed = time.monotonic() - t0
    # Deliveries trail ingest. RSS is read once they are done or after DRAIN_WAIT_S, whichever is
    # first, and what is still pending is reported: the drain case measures delivery speed, and
    # waiting here for a slow drain of 100,000 jobs could blow the run's 10 minutes.
    wait = max(5.0, min(DRAIN_WAIT_S, ctx.remaining(reserve=15)))
    st = sink.wait_delivered(stop, timeout=wait, stall=wait)
    return {
        "ingest_rate": (stop - start) / elapsed,
        "delivered": st["unique"],
        "pending": max(0, stop - st["unique"]),
        "drain_wait_s": time.monotonic() - t0 - elapsed,
    }


def run(ctx: Context) -> dict[str, Any]:
    require_bridge()
    m = ctx.mode
    if ctx.events.count < m.footprint_events:
        raise Invalid(f"only {ctx.events.count} signed events for {m.footprint_events}")
    db = ctx.workdir / "footprint.db"
    out: dict[str, Any] = {"events": m.footprint_events, "pruning": PRUNE}
    with Procs(ctx.log_dir) as procs:
        sink = start_sink(procs, "sink-footprint")
        cfg = make_config(
            public_key=ctx.public_key, storage_url=f"sqlite:///{db}", sink_url=sink.url, extra={"storage": PRUNE}
        )
        bridge = start_bridge(procs, "bridge-footprint", cfg, ctx.workdir)
        out["ready_s"] = bridge.ready_s
        time.sleep(2)
        out["rss_idle"] = rss_bytes(bridge.proc.pid)

        out["first"] = m.footprint_first
        out["at_first"] = send(ctx, bridge, sink, 0, m.footprint_first)
        time.sleep(1)
        out["rss_first"] = rss_bytes(bridge.proc.pid)

        # Every node seen twice (opened and resolved an incident): from here on what grows with the
        # node count (per-node state and its caches) is complete, so RSS from here to the end is
        # what grows with history alone.
        known = 2 * NODES
        start = m.footprint_first
        if known < m.footprint_events:
            out["known"] = known
            out["at_known"] = send(ctx, bridge, sink, start, known)
            time.sleep(1)
            out["rss_known"] = rss_bytes(bridge.proc.pid)
            start = known
        out["at_all"] = send(ctx, bridge, sink, start, m.footprint_events)
        time.sleep(5)  # two prune intervals
        bridge.check_alive()
        out["rss_all"] = rss_bytes(bridge.proc.pid)
        out["db_bytes"] = db_bytes(db)
        out["db_bytes_per_event"] = out["db_bytes"]["total"] / m.footprint_events

        procs.stop(bridge.proc)
        out["db_bytes_after_stop"] = db_bytes(db)  # a clean shutdown may checkpoint the WAL
        again = start_bridge(procs, "bridge-footprint-restart", cfg, ctx.workdir)
        out["ready_with_history_s"] = again.ready_s
    return out
