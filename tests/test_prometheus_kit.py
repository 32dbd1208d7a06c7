"""deploy/prometheus and deploy/grafana: promtool accepts and tests the rules, and every metric
they name is one a real bridge process exports (a renamed metric would silence an alert)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.harness import ROOT, BridgeProcess

pytestmark = pytest.mark.timeout(90)

RULES = ROOT / "deploy/prometheus/alert-bridge-rules.yaml"
RULE_TESTS = ROOT / "deploy/prometheus/alert-bridge-rules.test.yaml"
DASHBOARD = ROOT / "deploy/grafana/alert-bridge.json"
METRIC = re.compile(r"\balert_bridge_[a-z0-9_]+")
PROMTOOL = shutil.which("promtool") or "promtool"  # scripts/test installs Debian's prometheus package


def promtool(*args: str) -> str:
    done = subprocess.run([PROMTOOL, *args], cwd=RULES.parent, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_promtool_checks_and_tests_the_rules() -> None:
    out = promtool("check", "rules", RULES.name)
    assert "SUCCESS: 6 rules found" in out
    assert "SUCCESS" in promtool("test", "rules", RULE_TESTS.name)


def test_the_rule_tests_cover_every_alert() -> None:
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    tested = {t["alertname"] for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for t in case["alert_rule_test"] if t.get("exp_alerts")}
    assert alerts == tested


def _exprs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("expr", "query", "definition") and isinstance(v, str):
                yield v
            else:
                yield from _exprs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _exprs(v)


async def test_every_metric_named_by_the_kit_is_exported(bridge_process: Callable[..., Any]) -> None:
    rule_names = {m for e in _exprs(yaml.safe_load(RULES.read_text())) for m in METRIC.findall(e)}
    dash_names = {m for e in _exprs(json.loads(DASHBOARD.read_text())) for m in METRIC.findall(e)}
    assert len(rule_names) >= 5 and len(dash_names) >= 10
    assert {"alert_bridge_incidents_open", "alert_bridge_incident_duration_seconds_bucket"} <= dash_names
    # "open too long" is the bridge's own job (reminders, escalations): no rule pages on incidents twice
    assert not {m for m in rule_names if m.startswith("alert_bridge_incident")}
    # One delivered event, so the per-receiver histogram has a series to scrape.
    p: BridgeProcess = await bridge_process(routes=[{"name": "all", "to": ["console"]}])
    status, _ = await p.event("kit-1", "FAILED")
    assert status == 200
    exported: set[str] = set()
    for _ in range(100):
        text = await p.metrics()
        exported = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
        if "alert_bridge_delivery_seconds_bucket" in exported:
            break
        await asyncio.sleep(0.1)
    assert not rule_names - exported, f"rules name metrics the bridge does not export: {rule_names - exported}"
    assert not dash_names - exported, f"the dashboard names metrics the bridge does not export: {dash_names - exported}"
