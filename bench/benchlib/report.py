"""Targets (ratios measured in the same run) and the tables: plain text, Markdown, JSON."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchlib.common import human_bytes

Results = dict[str, dict[str, Any]]


def _get(results: Results, case: str, *path: str) -> float | None:
    node: Any = results.get(case, {})
    if node.get("status", "ok") != "ok":
        return None
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return float(node) if isinstance(node, int | float) and not math.isnan(node) else None


def _why(results: Results, *cases: str) -> str:
    for case in cases:
        r = results.get(case)
        if r is None:
            return f"{case} not run"
        if r.get("status", "ok") != "ok":
            return f"{case} {r['status']}"
    return "no value"


@dataclass(frozen=True)
class Target:
    label: str
    cases: tuple[str, str]
    value: Callable[[Results], float | None]
    reference: Callable[[Results], float | None]
    op: str  # ">=" (higher is better) or "<="
    bound: float
    unit: str

    def evaluate(self, results: Results) -> dict[str, Any]:
        a, b = self.value(results), self.reference(results)
        row: dict[str, Any] = {"target": self.label, "needs": f"{self.op} {self.bound:g}x"}
        if a is None or b is None or b == 0:
            return {**row, "result": "N/A", "why": _why(results, *self.cases)}
        ratio = a / b
        ok = ratio >= self.bound if self.op == ">=" else ratio <= self.bound
        return {
            **row,
            "value": a,
            "reference": b,
            "unit": self.unit,
            "ratio": ratio,
            "result": "PASS" if ok else "MISS",
        }


def _rps(case: str) -> Callable[[Results], float | None]:
    return lambda r: _get(r, case, "rps", "median")


TARGETS = (
    Target(
        "bridge-sqlite vs aiohttp-floor (req/s)",
        ("bridge-sqlite", "aiohttp-floor"),
        _rps("bridge-sqlite"),
        _rps("aiohttp-floor"),
        ">=",
        0.8,
        "req/s",
    ),
    Target(
        "bridge-sqlite vs node-seed (req/s)",
        ("bridge-sqlite", "node-seed"),
        _rps("bridge-sqlite"),
        _rps("node-seed"),
        ">=",
        2.0,
        "req/s",
    ),
    Target(
        "bridge-redis vs aiohttp-floor (req/s)",
        ("bridge-redis", "aiohttp-floor"),
        _rps("bridge-redis"),
        _rps("aiohttp-floor"),
        ">=",
        0.6,
        "req/s",
    ),
    Target(
        "e2e webhook p99 vs bare aiohttp round-trip p99",
        ("e2e", "e2e"),
        lambda r: _get(r, "e2e", "webhook", "p99_ms"),
        lambda r: _get(r, "e2e", "bare_rtt", "p99_ms"),
        "<=",
        3.0,
        "ms",
    ),
    Target(
        "e2e Slack p99 vs bare aiohttp round-trip p99",
        ("e2e", "e2e"),
        lambda r: _get(r, "e2e", "slack", "p99_ms"),
        lambda r: _get(r, "e2e", "bare_rtt", "p99_ms"),
        "<=",
        3.0,
        "ms",
    ),
    Target(
        "backlog drain vs delivery floor (deliveries/s)",
        ("drain", "drain"),
        lambda r: _get(r, "drain", "rate"),
        lambda r: _get(r, "drain", "floor", "rate"),
        ">=",
        0.5,
        "/s",
    ),
    Target(
        "routing 1,000 routes vs 1 route (us/event)",
        ("routing", "routing"),
        lambda r: _get(r, "routing", "by_routes", "1000", "us_per_event"),
        lambda r: _get(r, "routing", "by_routes", "1", "us_per_event"),
        "<=",
        2.0,
        "us",
    ),
    Target(
        "RSS after all events vs after 1,000",
        ("footprint", "footprint"),
        lambda r: _get(r, "footprint", "rss_all"),
        lambda r: _get(r, "footprint", "rss_first"),
        "<=",
        1.2,
        "B",
    ),
)


def evaluate(results: Results) -> list[dict[str, Any]]:
    return [t.evaluate(results) for t in TARGETS]


# --- tables ------------------------------------------------------------------------------------------


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""

    def text(self) -> str:
        widths = [max(len(str(c)) for c in col) for col in zip(self.headers, *self.rows, strict=True)]
        line = "  ".join("{:<%d}" % w for w in widths)  # noqa: UP031 - builds the format itself
        out = [self.title, line.format(*self.headers), line.format(*("-" * w for w in widths))]
        out += [line.format(*row) for row in self.rows]
        if self.note:
            out.append(self.note)
        return "\n".join(out)

    def markdown(self) -> str:
        out = [
            f"**{self.title}**",
            "",
            "| " + " | ".join(self.headers) + " |",
            "|" + "|".join("---" for _ in self.headers) + "|",
        ]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in self.rows]
        if self.note:
            out += ["", self.note]
        return "\n".join(out)


def _f(v: float | None, fmt: str = "{:,.0f}") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def _state(r: dict[str, Any]) -> str | None:
    status = r.get("status", "ok")
    return None if status == "ok" else f"{status}: {r.get('reason', '')}"


def _events(r: dict[str, Any]) -> str:
    parts = [r.get("events", "")]
    if "delivered_during_rounds" in r:
        parts.append(f"{r['delivered_during_rounds']:,} delivered during the rounds")
    if r.get("non2xx"):
        parts.append(f"{r['non2xx']:,} non-2xx")
    return "; ".join(p for p in parts if p)


def tables(results: Results, ingest_cases: tuple[str, ...], mode: dict[str, Any]) -> list[Table]:
    out = []
    floor, seed, relay = (_rps(c)(results) for c in ("aiohttp-floor", "node-seed", "aiohttp-relay"))
    rows = []
    for case in ingest_cases:
        r = results.get(case, {"status": "skipped", "reason": "not selected"})
        state = _state(r)
        rps = _get(results, case, "rps", "median")
        spread = r.get("rps", {}).get("spread_pct")
        rows.append(
            [
                case,
                _f(rps),
                "-" if spread is None else f"{spread:.1f}%",
                _f(_get(results, case, "p50_ms", "median"), "{:.2f}"),
                _f(_get(results, case, "p99_ms", "median"), "{:.2f}"),
                _f(_get(results, case, "cpu_us_per_request"), "{:.0f}"),
                _f(rps / floor if rps and floor else None, "{:.2f}"),
                _f(rps / relay if rps and relay else None, "{:.2f}"),
                _f(rps / seed if rps and seed else None, "{:.2f}"),
                state or _events(r),
            ]
        )
    out.append(
        Table(
            "Ingest (wrk, server pinned to core 0, wrk to core 1)",
            ["case", "req/s", "spread", "p50 ms", "p99 ms", "CPU us/req", "x floor", "x relay", "x node-seed",
             "events / status"],
            rows,
            f"median of {mode['rounds']} x {mode['round_s']:g}s rounds after {mode['warmup_s']:g}s warm-up; "
            "spread = (max-min)/median across rounds; CPU us/req = CPU time of the server core's processes "
            "(the bridge with its Redis) over the rounds / requests answered, deliveries made meanwhile "
            "included; x relay = against aiohttp-relay, the floor plus one delivery per event",
        )
    )

    e = results.get("e2e", {})
    state = _state(e) if e else "not run"
    if state:
        rows = [["-", "-", "-", state]]
    else:
        rows = [
            [
                "bare aiohttp round trip",
                _f(e["bare_rtt"]["p50_ms"], "{:.2f}"),
                _f(e["bare_rtt"]["p99_ms"], "{:.2f}"),
                "reference, same client and rate",
            ],
            [
                "bridge ingest round trip",
                _f(e["ingest_rtt"]["p50_ms"], "{:.2f}"),
                _f(e["ingest_rtt"]["p99_ms"], "{:.2f}"),
                "request sent -> 2xx",
            ],
        ]
        for label in ("webhook", "slack"):
            c = e[label]
            rows.append(
                [
                    f"sent -> {label} sink",
                    _f(c.get("p50_ms"), "{:.2f}"),
                    _f(c.get("p99_ms"), "{:.2f}"),
                    f"{c['received']}/{e['accepted']} received" + (f"; {c['note']}" if "note" in c else ""),
                ]
            )
    out.append(
        Table(f"End-to-end latency at {mode['e2e_rate']:g} events/s", ["path", "p50 ms", "p99 ms", "note"], rows)
    )

    d = results.get("drain", {})
    state = _state(d) if d else "not run"
    rows = (
        [["-", "-", "-", state]]
        if state
        else [
            [
                f"{d['jobs']:,} jobs",
                _f(d["rate"]),
                _f(d["floor"]["rate"]),
                f"{d['delivered']:,} delivered; first {d['first_after_s']:.2f}s after recovery; "
                f"{_f(d['rate_from_recovery'])}/s counted from recovery",
            ]
        ]
    )
    out.append(
        Table(
            "Backlog drain after an outage (deliveries/s)",
            ["backlog", "bridge", "floor (bare aiohttp client)", "note"],
            rows,
        )
    )

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
    out.append(
        Table(
            f"Routing cost over {results.get('routing', {}).get('nodes', 10_000):,} configured nodes",
            ["routes", "us/event", "compile ms", "matches/event", "range"],
            rows,
        )
    )

    f = results.get("footprint", {})
    state = _state(f) if f else "not run"
    if state:
        rows = [["-", state]]
    else:
        rows = [
            ["start to ready (fresh DB)", f"{f['ready_s']:.2f} s"],
            [f"start to ready ({f['events']:,} events stored)", f"{f['ready_with_history_s']:.2f} s"],
            ["RSS idle", human_bytes(f["rss_idle"])],
            [f"RSS after {f['first']:,} events", human_bytes(f["rss_first"])],
            [
                f"RSS after {f['events']:,} events",
                human_bytes(f["rss_all"])
                + (f" ({f['at_all']['pending']:,} deliveries still pending)" if f["at_all"]["pending"] else ""),
            ],
            [f"ingest rate while storing {f['events']:,} (Python client)", f"{f['at_all']['ingest_rate']:,.0f}/s"],
            [
                f"SQLite after {f['events']:,} events (pruning on)",
                f"{human_bytes(f['db_bytes']['total'])} ({f['db_bytes_per_event']:,.0f} B/event): "
                f"db {human_bytes(f['db_bytes'].get('db', 0))}, wal {human_bytes(f['db_bytes'].get('db_wal', 0))}",
            ],
            ["SQLite after a clean stop", human_bytes(f["db_bytes_after_stop"]["total"])],
        ]
    out.append(Table("Footprint (bridge-sqlite)", ["measure", "value"], rows))

    busy = [
        (name, r["background"])
        for name, r in results.items()
        if r.get("background", {}).get("other_cores", 0) >= 0.1 or r.get("background", {}).get("steal_cores", 0) >= 0.05
    ]
    rows = [
        [name, f"{b['other_cores']:.2f}", f"{b['steal_cores']:.2f}", f"{b['loadavg_1m']:.2f}"] for name, b in busy
    ] or [["none", "< 0.10", "< 0.05", "-"]]
    out.append(
        Table(
            "CPU taken by other processes during each case (cores; moves every number above)",
            ["case", "other processes", "hypervisor steal", "loadavg 1m"],
            rows,
        )
    )
    return out


def target_table(evaluated: list[dict[str, Any]]) -> Table:
    rows = []
    for t in evaluated:
        if t["result"] == "N/A":
            rows.append([t["target"], "-", t["needs"], f"N/A ({t['why']})"])
            continue
        a, b = (_unit(t[k], t["unit"]) for k in ("value", "reference"))
        rows.append([t["target"], f"{a} / {b} = {t['ratio']:.2f}x", t["needs"], t["result"]])
    return Table("Targets", ["target", "measured", "needs", "result"], rows)


def _unit(v: float, unit: str) -> str:
    return human_bytes(v) if unit == "B" else f"{v:,.2f} {unit}"


def brief(name: str, r: dict[str, Any]) -> str:
    """One progress line for a finished case."""
    if r.get("status", "ok") != "ok":
        return r.get("reason", "")
    try:
        if "rps" in r:
            return (
                f"{r['rps']['median']:,.0f} req/s (spread {r['rps']['spread_pct']:.1f}%), "
                f"p99 {r['p99_ms']['median']:.2f} ms, {r.get('events', '')}"
            )
        if name == "e2e":
            return (
                f"p99 webhook {r['webhook']['p99_ms']:.2f} ms, slack {r['slack']['p99_ms']:.2f} ms, "
                f"bare round trip {r['bare_rtt']['p99_ms']:.2f} ms"
            )
        if name == "routing":
            return ", ".join(f"{n} routes {s['us_per_event']:.2f} us" for n, s in r["by_routes"].items())
        if name == "drain":
            return f"{r['rate']:,.0f} deliveries/s vs floor {r['floor']['rate']:,.0f}/s"
        if name == "footprint":
            return (
                f"RSS {human_bytes(r['rss_idle'])} idle, {human_bytes(r['rss_first'])} -> "
                f"{human_bytes(r['rss_all'])}; DB {human_bytes(r['db_bytes']['total'])}; "
                f"ready {r['ready_s']:.2f} s"
            )
    except (KeyError, TypeError):
        pass
    return ""
