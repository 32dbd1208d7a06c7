"""What a CLI start imports (bridge/cli.py): ``--help`` and ``healthcheck`` stay light.

The container's HEALTHCHECK runs ``alert-bridge healthcheck`` every 30 s; importing the config
models, aiohttp and the receivers made each run cost about a second of CPU (bench/README.md, "CLI
start-up"). Each case runs ``bridge.cli.main`` in a fresh interpreter and lists which of the heavy
modules it loaded; the speed itself is measured in bench/cli_startup.py, not asserted here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.support.fakes import free_port

ROOT = Path(__file__).resolve().parent.parent

# Never for --help, nor for a healthcheck of any kind.
HEAVY = ("aiohttp", "jinja2", "cryptography", "redis", "slack_sdk", "bridge.app", "bridge.receivers",
         "bridge.store", "bridge.render", "bridge.verify", "bridge.adminclient", "bridge.config.model",
         "bridge.config.receivers", "bridge.config.loader", "bridge.logs", "bridge.eventloop")
# Nor, when no config is read (--help, healthcheck --port/--url): server: needs pydantic and YAML.
CONFIG = ("pydantic", "yaml", "asyncio", "bridge.config.base", "bridge.config.server", "bridge.model")

# Runs main() for each argv in turn and reports, after each, the listed modules loaded so far.
PROBE = """
import argparse, contextlib, io, json, sys
from bridge.cli import build_parser, main

watched, runs = json.loads(sys.argv[1]), json.loads(sys.argv[2])

def helps(parser, prefix):
    yield [*prefix, "--help"]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from helps(sub, [*prefix, name])

if runs == "every --help":
    runs = list(helps(build_parser(), []))
report = []
for argv in runs:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    loaded = sorted(m for m in sys.modules if any(m == w or m.startswith(w + ".") for w in watched))
    report.append({"argv": argv, "code": code, "out": out.getvalue(), "loaded": loaded})
print(json.dumps(report))
"""


def probe(runs: list[list[str]] | str) -> list[dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if k != "ALERT_BRIDGE_CONFIG"}
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps([*HEAVY, *CONFIG]), json.dumps(runs)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report: list[dict[str, Any]] = json.loads(done.stdout)
    return report


def heavy(loaded: list[str]) -> list[str]:
    return [m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY)]


def test_help_of_every_command_imports_no_command_code() -> None:
    report = probe("every --help")
    assert len(report) > 25 and ["silence", "add", "--help"] in [r["argv"] for r in report]
    for r in report:
        assert r["code"] == 0 and "usage: alert-bridge" in r["out"], r
        assert r["loaded"] == [], (r["argv"], r["loaded"])


def test_healthcheck_imports_only_what_reading_server_takes(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there: the probe fails, as when the bridge is down
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"server": {"listen": f"127.0.0.1:{port}"},
                                      "verification": {"public_key": "not read by healthcheck"}}))
    url = f"http://127.0.0.1:{port}/readyz"
    for r in probe([["healthcheck", "--port", str(port)], ["healthcheck", "--url", url]]):
        assert r["code"] == 1 and r["out"].startswith(f"unhealthy: {url}: "), r
        assert r["loaded"] == [], (r["argv"], r["loaded"])
    [r] = probe([["healthcheck", "-c", str(config)]])
    assert r["code"] == 1 and r["out"].startswith(f"unhealthy: {url}: "), r
    assert heavy(r["loaded"]) == [], r["loaded"]
    assert "bridge.config.server" in r["loaded"] and "pydantic" in r["loaded"]  # server: is still validated
