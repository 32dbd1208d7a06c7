"""What every case gets: the run's mode (full or quick), key, events, scratch and log directories."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib.events import EventFile, Key


@dataclass(frozen=True)
class Mode:
    name: str
    warmup_s: float  # per ingest case, before the measured rounds
    rounds: int
    round_s: float
    dup_events: int  # the 100%-duplicates case cycles over this many already-accepted events
    e2e_s: float  # seconds of paced events for each end-to-end measurement
    delivery_alerts: int  # alerts per receiver type in the delivery-CPU case
    drain_jobs: int
    drain_timeout_s: float
    routing_sizes: tuple[int, ...]
    routing_nodes: int
    routing_repeats: int
    footprint_first: int
    footprint_events: int
    budget_s: float  # the whole run; open-ended waits (deliveries) give up before it runs out


FULL = Mode(
    name="full",
    warmup_s=3,
    rounds=3,
    round_s=8,
    dup_events=5_000,
    e2e_s=10,
    delivery_alerts=3_000,
    drain_jobs=20_000,
    drain_timeout_s=150,
    routing_sizes=(1, 100, 1_000),
    routing_nodes=10_000,
    routing_repeats=5,
    footprint_first=1_000,
    footprint_events=100_000,
    budget_s=660,
)
# CI smoke: every code path once, a few seconds per case; the numbers are only indicative.
QUICK = Mode(
    name="quick",
    warmup_s=1,
    rounds=1,
    round_s=2,
    dup_events=1_000,
    e2e_s=3,
    delivery_alerts=300,
    drain_jobs=2_000,
    drain_timeout_s=40,
    routing_sizes=(1, 100, 1_000),
    routing_nodes=10_000,
    routing_repeats=3,
    footprint_first=1_000,
    footprint_events=10_000,
    budget_s=180,
)


@dataclass
class Context:
    mode: Mode
    key: Key
    events: EventFile
    public_key: Path  # PEM of the bench key, for the servers
    workdir: Path  # scratch: configs, databases, Redis dirs (deleted after the run)
    log_dir: Path  # server and wrk logs of this run (bench/results/logs)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    log: Any = print
    started: float = field(default_factory=time.monotonic)
    loop: str = "asyncio"  # the event loop of the bridge and the Python baselines (ALERT_BRIDGE_LOOP)
    workers: int = 1  # bridge processes in the bridge-redis case (replicas on one Redis)
    e2e_rate: float | None = None  # --e2e-rate: a fixed e2e rate instead of the derived one

    def remaining(self, reserve: float = 0.0) -> float:
        """Seconds left of the run's budget, less ``reserve`` for what must still follow."""
        return self.mode.budget_s - (time.monotonic() - self.started) - reserve

    def result(self, name: str) -> dict[str, Any]:
        return self.results.get(name, {})
