"""The result tables (plain text and Markdown) built from one run's results."""

from __future__ import annotations

import math
from typing import Any

from benchlib.common import human_bytes
from benchlib.report import Results, Table, get, rps


def _f(v: float | None, fmt: str = "{:,.0f}") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def _ratio(a: float | None, b: float | None) -> str:
    return _f(a / b if a and b else None, "{:.2f}")


def _state(r: dict[str, Any]) -> str | None:
    status = r.get("status", "ok")
    return None if status == "ok" else f"{status}: {r.get('reason', '')}"


def _events(r: dict[str, Any]) -> str:
    parts = [r.get("events", "")]
    if r.get("workers", 1) > 1:
        parts.append(f"{r['workers']} bridge processes on one Redis")
    if "delivered_during_rounds" in r:
        parts.append(f"{r['delivered_during_rounds']:,} delivered during the rounds")
    if r.get("non2xx"):
        parts.append(f"{r['non2xx']:,} non-2xx")
    if r.get("loop_check", "ok") != "ok":
        parts.append(f"LOOP MISMATCH: {r['loop_check']}")
    return "; ".join(p for p in parts if p)


def _verdicts(case: str, targets: list[dict[str, Any]]) -> str:
    out = [f"{t['short']} {t['result']}" for t in targets if t.get("row") == case]
    return ", ".join(out) or "-"


def ingest_table(results: Results, cases: tuple[str, ...], mode: dict[str, Any],
                 targets: list[dict[str, Any]]) -> Table:
    floor, seed, relay, ht_floor = (rps(c)(results) for c in ("aiohttp-floor", "node-seed", "aiohttp-relay",
                                                               "httptools-floor"))
    floor_cpu = get(results, "aiohttp-floor", "cpu_us_per_accepted")
    rows = []
    for case in cases:
        r = results.get(case, {"status": "skipped", "reason": "not selected"})
        state = _state(r)
        rate = get(results, case, "rps", "median")
        cpu = get(results, case, "cpu_us_per_accepted")
        spread = r.get("rps", {}).get("spread_pct")
        rows.append(
            [
                case,
                r.get("loop", "-"),
                _f(rate),
                "-" if spread is None else f"{spread:.1f}%",
                _f(get(results, case, "p50_ms", "median"), "{:.2f}"),
                _f(get(results, case, "p99_ms", "median"), "{:.2f}"),
                _f(cpu, "{:.0f}"),
                _ratio(cpu, floor_cpu),
                _ratio(rate, floor),
                _ratio(rate, ht_floor),
                _ratio(rate, relay),
                _ratio(rate, seed),
                _verdicts(case, targets),
                state or _events(r),
            ]
        )
    return Table(
        "Ingest (wrk, server pinned to core 0, wrk to core 1)",
        ["case", "loop", "req/s", "spread", "p50 ms", "p99 ms", "CPU us/event", "CPU x floor", "x floor",
         "x httptools-floor", "x relay", "x node-seed", "targets", "events / status"],
        rows,
        f"median of {mode['rounds']} x {mode['round_s']:g}s rounds after {mode['warmup_s']:g}s warm-up; "
        "spread = (max-min)/median across rounds; CPU us/event = CPU time of the server core's processes "
        "(the bridge with its Redis) over the rounds / events accepted, deliveries made meanwhile "
        "included; x httptools-floor = against the same verifying handler on the webhook listener's own "
        "stack (asyncio + httptools), not a target; x relay = against aiohttp-relay, the floor plus one "
        "delivery per event; -noroute: no "
        "receiver, no route (ingest only)",
    )


def e2e_table(results: Results) -> Table:
    e = results.get("e2e", {})
    state = _state(e) if e else "not run"
    if state:
        return Table("End-to-end latency", ["path", "p50 ms", "p99 ms", "note"], [["-", "-", "-", state]])
    rows = [
        ["bare aiohttp round trip", _f(e["bare_rtt"]["p50_ms"], "{:.2f}"), _f(e["bare_rtt"]["p99_ms"], "{:.2f}"),
         "reference, same client and rate"],
        ["bridge ingest round trip", _f(e["ingest_rtt"]["p50_ms"], "{:.2f}"), _f(e["ingest_rtt"]["p99_ms"], "{:.2f}"),
         "request sent -> 2xx"],
    ]
    for label in ("webhook", "slack"):
        c = e[label]
        rows.append([
            f"sent -> {label} sink", _f(c.get("p50_ms"), "{:.2f}"), _f(c.get("p99_ms"), "{:.2f}"),
            f"{c['received']}/{e['accepted']} received; max {_f(c.get('max_ms'), '{:.1f}')} ms"
            + (f"; {c['note']}" if "note" in c else ""),
        ])
    return Table(
        f"End-to-end latency at {e['rate']:,.0f} events/s",
        ["path", "p50 ms", "p99 ms", "note"],
        rows,
        f"rate = {e['rate_why']}; the bridge's core was {e['bridge_core_busy']:.0%} busy "
        f"({e['bridge_cpu_us_per_event']:,.0f} CPU us per event: its ingest and its two deliveries)"
        + ("; OVER HALF BUSY: the latencies include queueing" if e["bridge_core_busy"] > 0.5 else ""),
    )


def delivery_table(results: Results) -> Table:
    d = results.get("delivery", {})
    state = _state(d) if d else "not run"
    headers = ["receiver", "alerts", "concurrency", "payload B", "bridge CPU us/alert", "bare client CPU us/send",
               "x bare", "deliveries/s", "note"]
    if state:
        return Table("CPU per delivered alert", headers, [["-"] * 8 + [state]])
    rows = []
    for kind, r in d["by_receiver"].items():
        if "cpu_us_per_alert" not in r:
            rows.append([kind, *["-"] * 7, _state(r) or "no value"])
            continue
        fl = r["floor"]
        rows.append([
            kind, _f(r["alerts"]), str(r["concurrency"]), _f(r["payload_bytes"]), _f(r["cpu_us_per_alert"]),
            _f(fl["cpu_us_per_send"]), _ratio(r["cpu_us_per_alert"], fl["cpu_us_per_send"]), _f(r["rate"]),
            f"idle {r['idle_cpu_per_s'] * 1000:.1f} ms CPU/s subtracted over {r['window_s']:.1f}s",
        ])
    bare = "a bare aiohttp client (aiosmtplib for email)"
    return Table(
        "CPU per delivered alert (outbox filled during a receiver outage, then drained)",
        headers,
        rows,
        f"bridge: CPU of the bridge process from the sink's recovery to the last delivery recorded, less its "
        f"idle rate, / alerts; bare client: {bare} on the same core sending the captured delivery as often",
    )


def drain_table(results: Results) -> Table:
    d = results.get("drain", {})
    state = _state(d) if d else "not run"
    rows = (
        [["-", "-", "-", state]]
        if state
        else [[
            f"{d['jobs']:,} jobs",
            _f(d["rate"]),
            _f(d["floor"]["rate"]),
            f"{d['delivered']:,} delivered; first {d['first_after_s']:.2f}s after recovery; "
            f"{_f(d['rate_from_recovery'])}/s counted from recovery",
        ]]
    )
    return Table("Backlog drain after an outage (deliveries/s)", ["backlog", "bridge", "floor (bare aiohttp client)",
                                                                  "note"], rows)


def routing_table(results: Results) -> Table:
    rt = results.get("routing", {})
    state = _state(rt) if rt else "not run"
    if state:
        rows = [["-", "-", "-", "-", state]]
    else:
        rows = [
            [
                f"{int(n):,}",
                _f(s["us_per_event"], "{:.2f}"),
                _f(s["compile_ms"], "{:.1f}"),
                _f(s["matches_per_event"], "{:.2f}"),
                f"{s['us_min']:.2f}-{s['us_max']:.2f} us",
            ]
            for n, s in sorted(rt["by_routes"].items(), key=lambda kv: int(kv[0]))
        ]
    return Table(
        f"Routing cost over {rt.get('nodes', 10_000):,} configured nodes",
        ["routes", "us/event", "compile ms", "matches/event", "range"],
        rows,
    )


def footprint_table(results: Results) -> Table:
    f = results.get("footprint", {})
    state = _state(f) if f else "not run"
    if state:
        return Table("Footprint (bridge-sqlite)", ["measure", "value"], [["-", state]])
    rows = [
        ["start to ready (fresh DB)", f"{f['ready_s']:.2f} s"],
        [f"start to ready ({f['events']:,} events stored)", f"{f['ready_with_history_s']:.2f} s"],
        ["RSS idle", human_bytes(f["rss_idle"])],
        [f"RSS after {f['first']:,} events", human_bytes(f["rss_first"])],
        *([[f"RSS after {f['known']:,} events (all {f['known'] // 2:,} nodes known)", human_bytes(f["rss_known"])]]
          if "rss_known" in f else []),
        [
            f"RSS after {f['events']:,} events",
            human_bytes(f["rss_all"])
            + (f" ({f['at_all']['pending']:,} deliveries still pending)" if f["at_all"]["pending"] else ""),
        ],
        *([[f"RSS after {f['events']:,} vs after {f['known']:,} events (history alone)",
            f"{f['rss_all'] / f['rss_known']:.2f}x"]] if "rss_known" in f else []),
        [f"ingest rate while storing {f['events']:,} (Python client)", f"{f['at_all']['ingest_rate']:,.0f}/s"],
        [
            f"SQLite after {f['events']:,} events (pruning on)",
            f"{human_bytes(f['db_bytes']['total'])} ({f['db_bytes_per_event']:,.0f} B/event): "
            f"db {human_bytes(f['db_bytes'].get('db', 0))}, wal {human_bytes(f['db_bytes'].get('db_wal', 0))}",
        ],
        ["SQLite after a clean stop", human_bytes(f["db_bytes_after_stop"]["total"])],
    ]
    return Table("Footprint (bridge-sqlite)", ["measure", "value"], rows)


def background_table(results: Results) -> Table:
    busy = [
        (name, r["background"])
        for name, r in results.items()
        if r.get("background", {}).get("other_cores", 0) >= 0.1 or r.get("background", {}).get("steal_cores", 0) >= 0.05
    ]
    rows = [
        [name, f"{b['other_cores']:.2f}", f"{b['steal_cores']:.2f}", f"{b['loadavg_1m']:.2f}"] for name, b in busy
    ] or [["none", "< 0.10", "< 0.05", "-"]]
    return Table(
        "CPU taken by other processes during each case (cores; moves every number above)",
        ["case", "other processes", "hypervisor steal", "loadavg 1m"],
        rows,
    )


def tables(results: Results, ingest_cases: tuple[str, ...], mode: dict[str, Any],
           targets: list[dict[str, Any]]) -> list[Table]:
    return [
        ingest_table(results, ingest_cases, mode, targets),
        e2e_table(results),
        delivery_table(results),
        drain_table(results),
        routing_table(results),
        footprint_table(results),
        background_table(results),
    ]
