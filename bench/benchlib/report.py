"""Targets (ratios measured in the same run), their table, and the one-line progress summaries."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchlib.common import human_bytes

Results = dict[str, dict[str, Any]]


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


def get(results: Results, case: str, *path: str) -> float | None:
    node: Any = results.get(case, {})
    if node.get("status", "ok") != "ok":
        return None
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
        if isinstance(node, dict) and node.get("status", "ok") != "ok":  # a part of a case failed
            return None
    return float(node) if isinstance(node, int | float) and not math.isnan(node) else None


def _why(results: Results, *cases: str, part: tuple[str, ...] = ()) -> str:
    for case in cases:
        r = results.get(case)
        if r is None:
            return f"{case} not run"
        if r.get("status", "ok") != "ok":
            return f"{case} {r['status']}"
    node: Any = results.get(cases[0], {})
    for key in part:
        node = node.get(key, {}) if isinstance(node, dict) else {}
    if isinstance(node, dict) and node.get("status", "ok") != "ok":
        return f"{node['status']}: {node.get('reason', '')}"
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
    row: str = ""  # the ingest case whose row shows this verdict
    short: str = ""  # its name in that row
    part: tuple[str, ...] = ()  # path to the part of the case it reads (its status says why N/A)

    def evaluate(self, results: Results) -> dict[str, Any]:
        a, b = self.value(results), self.reference(results)
        row: dict[str, Any] = {"target": self.label, "needs": f"{self.op} {self.bound:g}x", "bound": self.bound,
                               "row": self.row, "short": self.short}
        if a is None or b is None or b == 0:
            return {**row, "result": "N/A", "why": _why(results, *self.cases, part=self.part)}
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


def rps(case: str) -> Callable[[Results], float | None]:
    return lambda r: get(r, case, "rps", "median")


def _cpu(case: str) -> Callable[[Results], float | None]:
    return lambda r: get(r, case, "cpu_us_per_accepted")


def _vs_floor(case: str, bound: float) -> Target:
    return Target(f"{case} vs aiohttp-floor (req/s)", (case, "aiohttp-floor"), rps(case), rps("aiohttp-floor"),
                  ">=", bound, "req/s", case, f"{bound:g}x floor")


def _vs_seed(case: str) -> Target:
    return Target(f"{case} vs node-seed (req/s)", (case, "node-seed"), rps(case), rps("node-seed"),
                  ">=", 2.0, "req/s", case, "2x node-seed")


def _cpu_vs_floor(case: str) -> Target:
    return Target(f"{case} CPU us per accepted event vs aiohttp-floor's", (case, "aiohttp-floor"), _cpu(case),
                  _cpu("aiohttp-floor"), "<=", 1.5, "us", case, "CPU 1.5x floor")


def _e2e(label: str, key: str) -> Target:
    return Target(f"e2e {label} p99 vs bare aiohttp round-trip p99", ("e2e", "e2e"),
                  lambda r: get(r, "e2e", key, "p99_ms"), lambda r: get(r, "e2e", "bare_rtt", "p99_ms"),
                  "<=", 3.0, "ms")


def _delivery(kind: str) -> Target:
    return Target(f"CPU us per delivered alert, {kind} vs bare client", ("delivery", "delivery"),
                  lambda r: get(r, "delivery", "by_receiver", kind, "cpu_us_per_alert"),
                  lambda r: get(r, "delivery", "by_receiver", kind, "floor", "cpu_us_per_send"),
                  "<=", 2.0, "us", part=("by_receiver", kind))


TARGETS = (
    _vs_floor("bridge-sqlite-noroute", 0.8),
    _vs_seed("bridge-sqlite-noroute"),
    _cpu_vs_floor("bridge-sqlite-noroute"),
    _vs_floor("bridge-sqlite", 0.6),
    _vs_seed("bridge-sqlite"),
    _cpu_vs_floor("bridge-sqlite"),
    _vs_floor("bridge-redis", 0.6),
    _cpu_vs_floor("bridge-redis"),
    _e2e("webhook", "webhook"),
    _e2e("Slack", "slack"),
    *(_delivery(kind) for kind in ("webhook", "slack", "pagerduty", "email")),
    Target(
        "backlog drain vs delivery floor (deliveries/s)",
        ("drain", "drain"),
        lambda r: get(r, "drain", "rate"),
        lambda r: get(r, "drain", "floor", "rate"),
        ">=",
        0.5,
        "/s",
    ),
    Target(
        "routing 1,000 routes vs 1 route (us/event)",
        ("routing", "routing"),
        lambda r: get(r, "routing", "by_routes", "1000", "us_per_event"),
        lambda r: get(r, "routing", "by_routes", "1", "us_per_event"),
        "<=",
        2.0,
        "us",
    ),
    Target(
        "RSS after all events vs after 1,000",
        ("footprint", "footprint"),
        lambda r: get(r, "footprint", "rss_all"),
        lambda r: get(r, "footprint", "rss_first"),
        "<=",
        1.2,
        "B",
    ),
)


def evaluate(results: Results) -> list[dict[str, Any]]:
    return [t.evaluate(results) for t in TARGETS]


def target_table(evaluated: list[dict[str, Any]]) -> Table:
    rows = []
    for t in evaluated:
        if t["result"] == "N/A":
            rows.append([t["target"], "-", t["needs"], f"N/A ({t['why']})"])
            continue
        a, b = (_unit(t[k], t["unit"]) for k in ("value", "reference"))
        # Three decimals where two would round onto the bound and hide which side of it the ratio is.
        digits = 3 if abs(t["ratio"] - t["bound"]) < 0.005 else 2
        rows.append([t["target"], f"{a} / {b} = {t['ratio']:.{digits}f}x", t["needs"], t["result"]])
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
                f"at {r['rate']:,.0f}/s (core {r['bridge_core_busy']:.0%} busy): p99 webhook "
                f"{r['webhook']['p99_ms']:.2f} ms, slack {r['slack']['p99_ms']:.2f} ms, "
                f"bare round trip {r['bare_rtt']['p99_ms']:.2f} ms"
            )
        if name == "delivery":
            return ", ".join(
                f"{k} {d['cpu_us_per_alert']:.0f} us/alert (floor {d['floor']['cpu_us_per_send']:.0f})"
                if "cpu_us_per_alert" in d else f"{k} {d.get('status')}"
                for k, d in r["by_receiver"].items()
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
