"""The reliability recorder: scenarios say what they tried and what happened; the session publishes it.

A scenario calls ``record(...)`` with its counts *before* it asserts, so a failing run is
published as failing instead of vanishing. Each call appends one JSON line to a results file for
this session; at the end of the session the lines, each joined with its test's result, are merged
into ``docs/reliability.json`` (scenarios of tests that did not run this time keep their earlier
entry, with its own date and commit) and ``docs/reliability.md`` is rendered from it by
``scripts/reliability_table.py``. Nothing in the table is written by hand.

Recording is opt-in, so a plain test run (``scripts/test``, CI) leaves the tree clean:
``ALERT_BRIDGE_RECORD_RELIABILITY=1`` (what ``scripts/reliability`` sets) writes the two docs files;
``RELIABILITY_JSON=/path/out.json`` writes elsewhere (and implies recording); without either, or
with ``RELIABILITY_JSON=off``, nothing is written.

The ``secret_guard`` fixture collects what a scenario's bridge printed and answered (log files,
captured log records, error bodies, metrics) and fails the test when any configured secret value
appears in it; the session's totals are published as one more scenario.

Registered from tests/conftest.py: ``pytest_plugins = ["tests.support.fakes", "tests.support.reliability"]``.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "docs" / "reliability.json"
RENDERER = ROOT / "scripts" / "reliability_table.py"

# Test module → the table's section.
AREAS = {
    "test_fuzz_ingest": "Bad input",
    "test_protocol_abuse": "Protocol abuse",
    "test_signature_abuse": "Signature abuse",
    "test_config_corpus": "Config abuse",
    "test_faults": "Faults",
    "test_soak": "Load",
    "test_security": "Security",
}


@dataclass
class _Session:
    results: Path | None = None
    started: float = 0.0
    outcomes: dict[str, str] = field(default_factory=dict)  # nodeid → passed / failed / skipped
    ran: set[str] = field(default_factory=set)  # nodeids of tests that ran (any outcome)
    guard: dict[str, int] = field(default_factory=lambda: {"tests": 0, "lines": 0, "bodies": 0, "metrics": 0,
                                                           "leaks": 0})
    secrets: set[str] = field(default_factory=set)  # every secret value any guard looked for


_session = _Session()


def _current_test() -> str:
    current = os.environ.get("PYTEST_CURRENT_TEST", "")
    return current.rsplit(" (", 1)[0] if current else ""


def _area(nodeid: str) -> str:
    module = Path(nodeid.split("::", 1)[0]).stem
    return AREAS.get(module, module or "other")


def record(
    scenario: str,
    *,
    tried: str,
    times: int,
    outcome: str,
    sent: int | None = None,
    accepted: int | None = None,
    delivered: dict[str, int] | int | None = None,
    twice: int | None = None,
    lost: int | None = None,
    bound: str | None = None,
    area: str | None = None,
    **details: Any,
) -> None:
    """One row of the table: what was tried (``tried``), how many times (``times``), what happened.

    ``sent``/``accepted``/``delivered`` (per receiver)/``twice``/``lost`` are the event counts of
    fault and load scenarios; ``bound`` says what ``twice`` may be at most and why; ``details``
    holds any other measurement (latencies, RSS, statuses seen) and is published as is.
    """
    nodeid = _current_test()
    row: dict[str, Any] = {
        "scenario": scenario,
        "area": area or _area(nodeid),
        "tried": tried,
        "times": times,
        "sent": sent,
        "accepted": accepted,
        "delivered": delivered,
        "twice": twice,
        "lost": lost,
        "bound": bound,
        "outcome": outcome,
        "details": details,
        "test": nodeid,
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    path = _session.results
    if path is None:  # used outside a pytest session (e.g. imported by a script): nothing to publish
        return
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row, default=str) + "\n")


# --- secrets ------------------------------------------------------------------------------------


class SecretGuard:
    """Collects what the bridge printed or answered during one test and looks for secret values."""

    def __init__(self) -> None:
        self.secrets: set[str] = set()
        self.files: list[Path] = []
        self.leaks: list[str] = []
        self.lines = 0
        self.bodies = 0
        self.metrics = 0

    def add_secrets(self, *values: str | None) -> None:
        self.secrets.update(v for v in values if v and len(v) >= 6)

    def watch_file(self, path: Path) -> None:
        """A log file to read at the end of the test (it may not exist yet)."""
        self.files.append(path)

    def _scan(self, where: str, text: str) -> None:
        for secret in self.secrets:
            if secret in text:
                self.leaks.append(f"{where}: contains the secret {secret[:3]}…")

    def check_body(self, where: str, body: str | bytes) -> None:
        """An HTTP answer of the bridge (error bodies included)."""
        self.bodies += 1
        self._scan(where, body.decode("utf-8", "replace") if isinstance(body, bytes) else body)

    def check_metrics(self, where: str, text: str) -> None:
        self.metrics += 1
        self._scan(where, text)

    def check_lines(self, where: str, lines: Iterable[str]) -> None:
        for i, line in enumerate(lines, 1):
            self.lines += 1
            self._scan(f"{where} line {i}", line)

    def finish(self, caplog_text: str) -> list[str]:
        for path in self.files:
            if path.exists():
                self.check_lines(str(path.name), path.read_text(errors="replace").splitlines())
        self.check_lines("captured log", caplog_text.splitlines())
        return self.leaks


@pytest.fixture
def secret_guard(caplog: pytest.LogCaptureFixture) -> Iterator[SecretGuard]:
    """Fails the test when a registered secret shows up in a watched log, body or metrics text."""
    guard = SecretGuard()
    yield guard
    leaks = guard.finish(caplog.text)
    totals = _session.guard
    totals["tests"] += 1
    _session.secrets |= guard.secrets
    totals["lines"] += guard.lines
    totals["bodies"] += guard.bodies
    totals["metrics"] += guard.metrics
    totals["leaks"] += len(leaks)
    if leaks:
        pytest.fail("secret values leaked:\n" + "\n".join(leaks[:20]), pytrace=False)


# --- pytest hooks -------------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    fd, name = tempfile.mkstemp(prefix="reliability-", suffix=".jsonl")
    os.close(fd)
    _session.results = Path(name)
    _session.started = time.time()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _session.ran.add(report.nodeid)
    previous = _session.outcomes.get(report.nodeid)
    if report.failed:
        _session.outcomes[report.nodeid] = "failed"
    elif report.skipped and previous != "failed":
        _session.outcomes[report.nodeid] = "skipped"
    elif report.when == "call" and report.passed and previous is None:
        _session.outcomes[report.nodeid] = "passed"


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def _machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "argv": " ".join(["pytest", *sys.argv[1:]]) if "pytest" in sys.argv[0] else " ".join(sys.argv),
    }


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = _session.results
    if path is None:
        return
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    path.unlink(missing_ok=True)
    guard = _session.guard
    if guard["tests"]:
        rows.append({
            "scenario": "no secret value in any log line, error body or metric label",
            "area": "Security",
            "tried": f"{len(_session.secrets)} configured secret values (Slack URL and token, SMTP password, webhook "
                     f"URL, header and signing secret, key API token) searched for in everything the bridge "
                     f"printed or answered in {guard['tests']} scenario tests",
            "times": guard["lines"] + guard["bodies"] + guard["metrics"],
            "outcome": f"{guard['lines']} log lines, {guard['bodies']} HTTP bodies, {guard['metrics']} metrics "
                       f"scrapes searched; {guard['leaks']} leaks",
            "details": {**guard, "secrets": len(_session.secrets)},
            "test": "secret_guard fixture",
            "test_result": "failed" if guard["leaks"] else "passed",
            "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        })
    if not rows:
        return
    target = os.environ.get("RELIABILITY_JSON", "")
    if target.lower() == "off" or not (target or os.environ.get("ALERT_BRIDGE_RECORD_RELIABILITY") == "1"):
        return
    out = Path(target) if target else DEFAULT_OUT
    for row in rows:
        row.setdefault("test_result", _session.outcomes.get(row.get("test", ""), "unknown"))
    run = {
        "started_at": datetime.fromtimestamp(_session.started, UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - _session.started, 1),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "worktree_dirty": bool(_git("status", "--porcelain")),
        **_machine(),
    }
    for row in rows:
        row["run"] = run["started_at"]
    previous: dict[str, Any] = {}
    if out.exists():
        try:
            previous = json.loads(out.read_text(encoding="utf-8"))
        except ValueError:
            previous = {}
    # Keep earlier rows only for tests that did not run this time (a rerun replaces its rows), and drop
    # rows of tests that no longer exist in a module that was collected (renamed or removed tests).
    ran = _session.ran | {"secret_guard fixture"} if guard["tests"] else _session.ran
    collected = {item.nodeid for item in session.items}
    modules = {nodeid.split("::", 1)[0] for nodeid in collected}
    kept = [r for r in previous.get("scenarios", []) if r.get("test") not in ran
            and not (str(r.get("test", "")).split("::", 1)[0] in modules and r.get("test") not in collected)]
    runs = {r["started_at"]: r for r in previous.get("runs", []) if any(k.get("run") == r["started_at"]
                                                                        for k in kept)}
    runs[run["started_at"]] = run
    doc = {
        "generated_by": "tests/support/reliability.py (pytest session); render with scripts/reliability_table.py",
        "runs": sorted(runs.values(), key=lambda r: r["started_at"]),
        "scenarios": kept + rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    _render(out)


def _render(json_path: Path) -> None:
    """Write the Markdown table next to the JSON, with scripts/reliability_table.py."""
    spec = importlib.util.spec_from_file_location("reliability_table", RENDERER)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.write(json_path, json_path.with_suffix(".md"))
