"""Case 2: end-to-end latency at a steady rate: event sent to the bridge -> received by the sinks.

The rate is a fraction (E2E_LOAD) of the capacity of what is measured, in the same run: an e2e event
costs its ingest and two deliveries, so the capacity is one core's worth of the bridge's CPU per e2e
event, measured by a calibration pass (CALIBRATION_S of events, at E2E_LOAD of the ingest capacity:
the median req/s of ``bridge-sqlite`` when that case ran, else of a short probe of it run here) on the
same bridge before the measured pass. A fixed rate would saturate a slow machine (its latency is then
queueing, not the path) and idle a fast one; a share of the ingest capacity alone loaded the core more
as the ingest got cheaper than the deliveries. The bridge's CPU over the measurement says how busy its
core was.

Each event has a unique nodeId (12 random hex digits + a 12-digit sequence number); the sink finds
it in whatever body the receiver renders and stamps the arrival with CLOCK_MONOTONIC, which is the
same clock the sender uses (system-wide on Linux), so sender and sink can be separate processes.
Latency is counted from the moment the request is sent (so it includes the ingest round trip: an
upper bound on accepted -> received); the time from the 2xx answer is reported too.

Reference: the round trip of one bare aiohttp request (handler answers 200 at once, pinned where the
bridge ran, after the bridge is stopped), sent by the same client at the same rate in the same run.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from benchlib.bridge import make_config, require_bridge, start_bridge
from benchlib.cases import ingest
from benchlib.client import Sent, paced
from benchlib.common import SERVER_CORE, Invalid, Procs, cpu_seconds, percentile
from benchlib.context import Context
from benchlib.events import fresh_events
from benchlib.servers import start_sink

ARRIVAL_WAIT_S = 20.0
# Offered load: this share of the e2e capacity (one core over the bridge's CPU per e2e event: its ingest
# and its two deliveries, webhook and Slack), so the latency is the path's, not a queue's.
E2E_LOAD = 0.1
CALIBRATION_S = 2.0  # seconds of events (at least CALIBRATION_MIN) that measure the CPU per e2e event
CALIBRATION_MIN = 40
MIN_RATE, MAX_RATE = 20.0, 1000.0  # bounds: enough samples for a p99; events signed per run stay few
WORST = 10  # slowest samples kept in the JSON, with when they were sent (periodic stalls show up)


def ingest_capacity(ctx: Context) -> tuple[float, str]:
    """(req/s of bridge-sqlite in this run, where it came from): the calibration pass's rate."""
    r = ctx.result("bridge-sqlite")
    capacity = (r.get("rps") or {}).get("median") if r.get("status", "ok") == "ok" else None
    if capacity:
        return capacity, "bridge-sqlite req/s (median) measured in this run"
    ctx.log("  e2e: bridge-sqlite did not run: a short capacity probe first")
    probe = ingest.run(ctx, "bridge-sqlite", probe=True)
    return probe["rps"]["median"], f"a {probe['round_s']:g} s wrk capacity probe of bridge-sqlite in this run"


def _bounded(rate: float) -> float:
    return min(MAX_RATE, max(MIN_RATE, rate))


def _lat_stats(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    return {
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else float("nan"),
        "samples": len(ms),
    }


def _deliver(bridge: Any, sink: Any, items: list[Any], rate: float) -> tuple[list[Sent], dict[str, dict[str, float]],
                                                                          float, float]:
    """Send ``items`` at ``rate`` and wait for both deliveries of each accepted one: (accepted, arrivals
    per channel, the bridge's CPU seconds over it, the span from the first send to the last arrival)."""
    count = len(items)
    cpu0 = cpu_seconds(bridge.proc.pid)
    sent = paced(bridge.url, items, rate=rate)
    accepted = [s for s in sent if isinstance(s.status, int) and 200 <= s.status < 300]
    if len(accepted) < 0.99 * count:
        codes = sorted({str(s.status) for s in sent})
        raise Invalid(f"bridge accepted {len(accepted)} of {count} events (answers: {', '.join(codes)})")
    deadline = time.monotonic() + ARRIVAL_WAIT_S
    while time.monotonic() < deadline:
        arrivals = sink.arrivals()
        if all(len(arrivals[c]) >= len(accepted) for c in ("hook", "slack")):
            break
        time.sleep(0.2)
    bridge.check_alive()
    cpu = cpu_seconds(bridge.proc.pid) - cpu0
    t_first = min(s.t_send for s in sent)
    span = max(max(arrivals[c].values(), default=t_first) for c in ("hook", "slack")) - t_first
    return accepted, arrivals, cpu, span


def run(ctx: Context) -> dict[str, Any]:
    require_bridge()
    m = ctx.mode
    out: dict[str, Any] = {"load": E2E_LOAD}
    # The ingest capacity first, while nothing else runs (a wrk probe when bridge-sqlite did not run).
    known = None if ctx.e2e_rate else ingest_capacity(ctx)
    with Procs(ctx.log_dir) as procs:
        # The bridge with a webhook receiver and a Slack receiver (rate limit off), both local.
        sink = start_sink(procs, "sink-e2e")
        slack_url = f"{sink.url}/services/T000BENCH/B000BENCH/XXXXBENCH"
        cfg = make_config(
            public_key=ctx.public_key,
            storage_url=f"sqlite:///{ctx.workdir / 'e2e.db'}",
            sink_url=sink.url,
            extra={
                "receivers": {"slack": {"type": "slack", "webhook_url": slack_url, "rate_limit": 0}},
                "default_to": ["sink", "slack"],
            },
        )
        bridge = start_bridge(procs, "bridge-e2e", cfg, ctx.workdir)
        out["ready_s"] = bridge.ready_s

        # 1. The rate: E2E_LOAD of what one core gives e2e events, measured on this bridge.
        if known is None:
            rate, why = ctx.e2e_rate, "fixed by --e2e-rate (not derived from capacity)"
        else:
            ingest_rps, source = known
            calib_rate = _bounded(E2E_LOAD * ingest_rps)
            calib_prefix = secrets.token_hex(6)
            calib = fresh_events(ctx.key, max(CALIBRATION_MIN, int(min(CALIBRATION_S, m.e2e_s) * calib_rate)),
                                 calib_prefix)
            sink.control(reset=True, track=f"({calib_prefix}[0-9]{{12}})")
            accepted, calib_arrivals, cpu, _ = _deliver(bridge, sink, calib, calib_rate)
            late = {c: len(accepted) - len(calib_arrivals[c]) for c in ("hook", "slack")}
            if any(n > 0 for n in late.values()):
                # Their CPU would be missing from the figure, and the rate derived from it too high.
                raise Invalid(f"calibration at {calib_rate:,.0f}/s: of {len(accepted)} events, deliveries still "
                              f"missing after {ARRIVAL_WAIT_S:g} s: webhook {late['hook']}, Slack {late['slack']}")
            per_event_us = cpu / max(len(accepted), 1) * 1e6
            capacity = 1e6 / max(per_event_us, 1.0)
            rate = _bounded(E2E_LOAD * capacity)
            why = (f"{E2E_LOAD:.0%} of {capacity:,.0f} e2e events/s: one core over {per_event_us:,.0f} CPU us per "
                   f"e2e event, measured by {len(calib)} events at {calib_rate:,.0f}/s ({E2E_LOAD:.0%} of "
                   f"{ingest_rps:,.0f} req/s, {source})")
            if rate != E2E_LOAD * capacity:
                why += f", bounded to {MIN_RATE:g}..{MAX_RATE:g}/s"
            out.update(capacity=capacity, calibration={"events": len(calib), "rate": calib_rate,
                                                       "cpu_us_per_event": per_event_us, "ingest_rps": ingest_rps,
                                                       "ingest_source": source})
        count = int(m.e2e_s * rate)
        ctx.log(f"  e2e at {rate:,.0f} events/s: {why}")
        out.update(rate=rate, rate_why=why, events=count)
        prefix = secrets.token_hex(6)
        items = fresh_events(ctx.key, count, prefix)

        # 2. The events through the bridge.
        sink.control(reset=True, track=f"({prefix}[0-9]{{12}})")
        accepted, arrivals, cpu, span = _deliver(bridge, sink, items, rate)
        out["accepted"] = len(accepted)
        out["ingest_rtt"] = _lat_stats([s.t_done - s.t_send for s in accepted])
        t_first = min(s.t_send for s in accepted)
        # How busy the bridge's core was while it took the events and delivered them.
        out["bridge_core_busy"] = cpu / max(span, 1e-3)
        out["bridge_cpu_us_per_event"] = cpu / max(len(accepted), 1) * 1e6
        for channel, label in (("hook", "webhook"), ("slack", "slack")):
            out[label] = _channel(accepted, arrivals[channel], sink.stats(channel), t_first)

        # 3. The reference: bare aiohttp round trips, same client, same rate, same bodies, on the core the
        # bridge had, with the bridge stopped (nothing of it left to run there).
        procs.stop(bridge.proc)
        bare = start_sink(procs, "bare-aiohttp", core=SERVER_CORE)
        bare_sent = paced(bare.url + "/bare", items, rate=rate)
        rtt = [s.t_done - s.t_send for s in bare_sent if s.status == 200]
        if len(rtt) < count:
            raise Invalid(f"bare aiohttp server answered {len(rtt)} of {count} requests with 200")
        out["bare_rtt"] = _lat_stats(rtt)
    return out


def _by_second(accepted: list[Sent], arrivals: dict[str, float], t0: float) -> list[list[float]]:
    """[second sent, p50 ms, max ms] per second of the run: latency that grows second by second is a
    backlog (the offered rate exceeds what the bridge's core gives it); isolated spikes are stalls."""
    buckets: dict[int, list[float]] = {}
    for s in accepted:
        if s.ident in arrivals:
            buckets.setdefault(int(s.t_send - t0), []).append((arrivals[s.ident] - s.t_send) * 1000)
    return [[sec, round(percentile(v, 50), 2), round(max(v), 2)] for sec, v in sorted(buckets.items())]


def _channel(accepted: list[Sent], arrivals: dict[str, float], stats: dict[str, Any], t0: float) -> dict[str, Any]:
    from_send = [arrivals[s.ident] - s.t_send for s in accepted if s.ident in arrivals]
    worst = sorted(((arrivals[s.ident] - s.t_send, s.t_send - t0) for s in accepted if s.ident in arrivals),
                   reverse=True)[:WORST]
    from_accept = [arrivals[s.ident] - s.t_done for s in accepted if s.ident in arrivals]
    res: dict[str, Any] = {
        **_lat_stats(from_send),
        "received": len(from_send),
        "missing": len(accepted) - len(from_send),
        "requests_seen": stats["ok"],
        "worst": [{"ms": round(lat * 1000, 2), "sent_at_s": round(at, 3)} for lat, at in worst],
        "by_second": _by_second(accepted, arrivals, t0),
    }
    if from_accept:
        # Can be negative: a delivery may land before the client has read the 2xx.
        res["from_2xx_p50_ms"] = percentile([v * 1000 for v in from_accept], 50)
        res["from_2xx_p99_ms"] = percentile([v * 1000 for v in from_accept], 99)
    if not from_send and stats["ok"]:
        res["note"] = "deliveries arrived but none named the event's nodeId"
    return res
