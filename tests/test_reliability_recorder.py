"""The reliability recorder writes the docs only when asked: the README's test command must leave
a fresh clone clean."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.harness import ROOT

SCENARIO = '''
from tests.support.reliability import record

def test_scenario():
    record("recorder probe", tried="one call", times=1, outcome="recorded", area="Security")
'''


def _run(tmp_path: Path, **env: str) -> None:
    test = tmp_path / "test_probe.py"
    test.write_text(SCENARIO)
    clean = {k: v for k, v in os.environ.items() if k not in ("RELIABILITY_JSON", "ALERT_BRIDGE_RECORD_RELIABILITY")}
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.support.reliability",
         "--rootdir", str(tmp_path), str(test)],
        cwd=ROOT, env={**clean, "PYTHONPATH": str(ROOT), **env}, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def _digest() -> str:
    docs = ROOT / "docs"
    return "".join(hashlib.sha256((docs / n).read_bytes()).hexdigest() if (docs / n).exists() else "-"
                   for n in ("reliability.json", "reliability.md"))


def test_a_plain_run_records_nothing_and_asking_records(tmp_path: Path) -> None:
    before = _digest()
    _run(tmp_path)
    assert _digest() == before  # docs/reliability.* untouched
    out = tmp_path / "out" / "reliability.json"
    _run(tmp_path, ALERT_BRIDGE_RECORD_RELIABILITY="1", RELIABILITY_JSON=str(out))
    doc = json.loads(out.read_text())
    assert [s["scenario"] for s in doc["scenarios"]] == ["recorder probe"]
    assert (tmp_path / "out" / "reliability.md").exists()
    assert _digest() == before
