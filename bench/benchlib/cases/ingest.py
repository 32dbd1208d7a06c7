"""Case 1: ingest throughput and latency under wrk, for the baselines and the bridge.

Baselines are stateless, so they cycle over a fixed window of events ("loop"). Bridge cases get a
fresh store each and walk forward through the event file, so every request carries a
(nodeId, eventTimestamp) the store has never seen: dedup, decision and the enqueue do real work.
``bridge-sqlite-noroute`` has no receiver and no route (ingest only: verify, parse, dedup, decide,
store); ``bridge-sqlite`` and ``bridge-redis`` have one webhook route delivering to the sink while
wrk runs. The -dup case first stores a small set once, then sends only those again: 100% duplicates.
``bridge-redis`` runs ``ctx.workers`` bridge processes on one Redis (replicas), each wrk thread
sending to one of them.
"""

from __future__ import annotations

import secrets
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from benchlib.bridge import make_config, require_bridge, start_bridge
from benchlib.client import post_all
from benchlib.common import Invalid, Procs, Unavailable, cpu_seconds, server_cores, summarize
from benchlib.context import Context, Mode
from benchlib.events import NODES, ensure_events, fresh_events
from benchlib.servers import start_baseline, start_redis, start_sink
from benchlib.wrk import CONNECTIONS, THREADS, WrkResult, ensure_wrk, run_wrk

BASELINES = ("node-seed", "node-keyobject", "aiohttp-floor", "httptools-floor", "aiohttp-relay")
BRIDGES = ("bridge-sqlite-noroute", "bridge-sqlite", "bridge-redis", "bridge-sqlite-dup")
CASES = BASELINES + BRIDGES
LOOP_WINDOW = 50_000  # events the baselines cycle over
MAX_NON2XX = 0.01  # above this share of refused requests the throughput is not the path we meant


def preflight(ctx: Context, url: str) -> dict[str, Any]:
    """One freshly signed event before loading: a server that refuses it would make wrk numbers lie."""
    ((_, sig, body),) = fresh_events(ctx.key, 1, secrets.token_hex(6))
    res = post_all(url, [(sig, body)], concurrency=1, timeout=30)
    if res.ok != 1:
        raise Invalid(f"preflight event refused: {res.first_error or dict(res.statuses)}")
    return {"status": next(iter(res.statuses))}


def probe_mode(m: Mode) -> Mode:
    """A short run for the e2e case's capacity probe (when the ingest cases did not run)."""
    return replace(m, warmup_s=1, rounds=1, round_s=min(m.round_s, 3))


def run(ctx: Context, name: str, *, probe: bool = False) -> dict[str, Any]:
    ensure_wrk(ctx.log)
    m = probe_mode(ctx.mode) if probe else ctx.mode
    out: dict[str, Any] = {
        "wrk": f"-t{THREADS} -c{CONNECTIONS}",
        "warmup_s": m.warmup_s,
        "rounds_planned": m.rounds,
        "round_s": m.round_s,
    }
    wrk_log = ctx.log_dir / f"wrk-{name}{'-probe' if probe else ''}.log"
    with Procs(ctx.log_dir) as procs:
        sink = bridge = None
        redis = None
        bridges: list[Any] = []
        workers, ports = 1, []
        if name in BASELINES:
            if name == "aiohttp-relay":
                sink = start_sink(procs, f"sink-{name}")
            server, base = start_baseline(procs, name, ctx.public_key, sink.url + "/hook" if sink else None)
            url, path = base + "/webhook", "/webhook"
            out["loop"] = "node" if name.startswith("node-") else ctx.loop
        else:
            require_bridge()  # before starting a sink and Redis for nothing
            routed = not name.endswith("-noroute")
            sink = start_sink(procs, f"sink-{name}") if routed else None
            workers = ctx.workers if name == "bridge-redis" else 1
            cores = server_cores()
            if name == "bridge-redis":
                redis = start_redis(procs, ctx.workdir / name, core=cores[workers % len(cores)])
                storage = f"redis://127.0.0.1:{redis.port}/0"
            else:
                storage = f"sqlite:///{ctx.workdir / (name + '.db')}"
            sink_url = sink.url if sink else "http://127.0.0.1:9"
            bridges = []
            for k in range(workers):
                cfg = make_config(public_key=ctx.public_key, storage_url=storage, sink_url=sink_url,
                                  receivers=None if routed else {})
                label = name if workers == 1 else f"{name}-w{k}"
                bridges.append(start_bridge(procs, label, cfg, ctx.workdir, core=cores[k % len(cores)]))
            bridge = bridges[0]
            server, url, path = bridge.proc, bridge.url, bridge.config["server"]["path"]
            out["ready_s"] = bridge.ready_s
            out["storage"] = storage.split(":")[0]
            out["routes"] = 1 if routed else 0
            out["workers"] = workers
            out["loop"] = bridge.loop or "default"
            out["loop_check"] = bridge.loop_check
            if workers > 1:
                ports = [int(urlsplit(b.url).port or 0) for b in bridges]
                for b in bridges:
                    preflight(ctx, b.url)
        out["preflight"] = preflight(ctx, url)

        # Which events each wrk run sends: (offset, limit, loop).
        offset, used, loop = 0, 0, name in BASELINES or name.endswith("-dup")
        threads = THREADS
        if name in BRIDGES and workers > 1:
            if NODES % workers:
                raise Invalid(f"--workers {workers}: must divide {NODES} (each node's events go to one replica)")
            threads = max(THREADS, workers)
        out["wrk"] = f"-t{threads} -c{CONNECTIONS}"
        if name.endswith("-dup"):
            primed = post_all(url, ctx.events.records(0, m.dup_events), concurrency=32)
            if primed.ok != m.dup_events:
                raise Invalid(f"priming {m.dup_events} events: {primed.first_error}")
            out["duplicate_set"] = m.dup_events

        def one(duration: float, seconds_left: float) -> WrkResult:
            """One wrk run; ``seconds_left`` is this run's and every later run's duration."""
            nonlocal offset, used
            if server.popen.poll() is not None:
                raise Unavailable(f"{name} exited during the case: {server.log_tail(6)}")
            if not loop and offset + 100 * threads > ctx.events.count:
                # Out of distinct events: start over (the bridge sees duplicates; reported as a wrap).
                out["file_wraps"] = out.get("file_wraps", 0) + 1
                offset = 0
            if name in BASELINES:
                limit = min(LOOP_WINDOW, ctx.events.count)
            elif loop:
                limit = m.dup_events
            else:
                # Share what is left of the file among this run and the later ones, by duration. The
                # window only bounds a run (events are read lazily), so the bigger the safer.
                limit = int((ctx.events.count - offset) * duration / seconds_left)
            res = run_wrk(
                url, ctx.events, duration=duration, offset=offset, limit=limit, loop=loop, path=path, log_file=wrk_log,
                threads=threads, ports=ports if name in BRIDGES and workers > 1 else None,
            )
            if not loop:
                offset += threads * res.max_used
                used += threads * res.max_used
            return res

        total_s = m.warmup_s + m.rounds * m.round_s
        warm = one(m.warmup_s, total_s)
        if not loop:
            # Now the bridge's own rate is known: sign more events if the rounds could run out.
            # (Sizing from the floor up front would sign far more than a slower bridge uses.)
            need = offset + int(warm.rps * 1.5 * m.rounds * m.round_s) + 10 * CONNECTIONS
            if need > ctx.events.count:
                ctx.log(f"  {name}: {warm.rps:,.0f} req/s in warm-up, signing up to {need:,} events")
                ctx.events = ensure_events(ctx.key, need, log=ctx.log)
        # CPU of everything on the server core that serves the case (Redis shares it with the bridge).
        on_core = [server.pid] + [b.proc.pid for b in bridges[1:]] + ([redis.proc.pid] if redis else [])
        before = {p: cpu_seconds(p) for p in on_core}
        cpu_before = sum(before.values())
        delivered_before = sink.delivered() if sink else 0
        rounds = [one(m.round_s, (m.rounds - i) * m.round_s) for i in range(m.rounds)]
        if server.popen.poll() is not None:
            raise Unavailable(f"{name} exited during the case: {server.log_tail(6)}")
        after = {p: cpu_seconds(p) for p in on_core}
        cpu = sum(after.values()) - cpu_before
        if redis is not None:
            out["redis_cpu_share"] = (after[redis.proc.pid] - before[redis.proc.pid]) / cpu if cpu else None
        if sink is not None:
            out["delivered_during_case"] = sink.delivered()
            out["delivered_during_rounds"] = out["delivered_during_case"] - delivered_before

    total = sum(r.requests for r in rounds)
    non2xx = sum(r.non2xx for r in rounds)
    out.update(
        rps=summarize([r.rps for r in rounds]),
        p50_ms=summarize([r.p50_ms for r in rounds]),
        p99_ms=summarize([r.p99_ms for r in rounds]),
        requests=total,
        non2xx=non2xx,
        socket_errors=sum(r.socket_errors for r in rounds),
        # Per answered request: what the server core spent on it, deliveries made meanwhile included.
        cpu_us_per_request=cpu / total * 1e6 if total else None,
        cpu_us_per_accepted=cpu / (total - non2xx) * 1e6 if total > non2xx else None,
        warmup=warm.as_dict(),
        round_results=[r.as_dict() for r in rounds],
    )
    if name in BASELINES:
        out["events"] = "cycled (stateless server)"
    elif loop:
        out["events"] = f"100% duplicates of {m.dup_events:,} stored events"
    else:
        # Only the measured rounds count: the warm-up's window is sized before the bridge's rate is
        # known, and a warm-up that wraps sends duplicates nobody measures.
        wraps = sum(r.wraps for r in rounds)
        wraps += out.get("file_wraps", 0)
        out["warmup_wraps"] = warm.wraps
        out["events"] = f"{used:,} distinct" + (f", WRAPPED {wraps}x" if wraps else "")
        out["wrapped"] = wraps
        out["distinct_events_used"] = used
    if total and non2xx / total > MAX_NON2XX:
        out["status"] = "invalid"
        out["reason"] = f"{non2xx:,} of {total:,} requests answered non-2xx (see {wrk_log.name})"
    return out

