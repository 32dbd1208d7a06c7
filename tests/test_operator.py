"""The operator's config, through the real ``alert-bridge`` process: relative paths, status typos,
``check --strict``, ``status_not``, labels by node glob without an allow-list, and the refused
node's id in the log line."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.cli_runner import run_cli
from tests.support.harness import ROOT, BridgeProcess


def check(config: Path, *args: str, cwd: str | Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "bridge", "check", "-c", str(config), *args],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=60)


def write(path: Path, cfg: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_relative_paths_are_next_to_the_config_file_whatever_the_working_directory(
    tmp_path: Path, public_key_file: Path
) -> None:
    etc = tmp_path / "etc" / "alert-bridge"
    (etc / "keys").mkdir(parents=True)
    (etc / "keys" / "public.pem").write_bytes(public_key_file.read_bytes())
    (etc / "secrets").mkdir()
    (etc / "secrets" / "hook").write_text("https://hooks.example/services/x\n")
    config = write(etc / "config.yaml", {
        "verification": {"public_key_file": "keys/public.pem"},
        "storage": {"url": "sqlite://data/bridge.db"},
        "receivers": {"oncall": {"type": "slack", "webhook_url_file": "secrets/hook"}},
        "default_to": ["oncall"],
    })
    r = check(config, cwd="/")
    assert r.returncode == 0, r.stderr
    assert f"storage       sqlite://{etc}/data/bridge.db" in r.stdout
    assert "warning" not in r.stderr
    # The same file, moved away from its key: the error names the resolved path.
    (etc / "keys" / "public.pem").unlink()
    r = check(config, cwd="/")
    assert r.returncode == 2
    assert f"error: verification.public_key_file: cannot read {etc}/keys/public.pem" in r.stderr


def test_the_shipped_example_config_checks_from_another_directory() -> None:
    r = check(ROOT / "config.example.yaml", "--strict", cwd="/")
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr


def check_env(config: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, "-m", "bridge", "check", "-c", str(config), *args],
                          capture_output=True, text=True, cwd="/", env=full, timeout=60)


def test_the_deploy_configs_pass_check_strict(tmp_path: Path) -> None:
    env = {"ALERT_BRIDGE_ADMIN_TOKEN": "admin-token-0123456789", "THUNDERSTACK_API_TOKEN": "ts-token-0123"}
    r = check_env(ROOT / "deploy" / "config.container.yaml", env, "--strict")
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    # The ConfigMap's config, with its secret mounts pointed at files here.
    configmap = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "configmap.yaml").read_text())
    text = configmap["data"]["config.yaml"]
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name, value in (("admin-token", "admin-token-0123456789"), ("thunderstack-api-token", "ts-token-0123"),
                        ("slack-webhook-url", "https://hooks.slack.com/services/T0/B0/abcdefghijkl")):
        (secrets / name).write_text(value + "\n")
    config = tmp_path / "config.yaml"
    config.write_text(text.replace("/run/secrets/alert-bridge/", f"{secrets}/"))
    r = check_env(config, {}, "--strict")
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr


def test_check_warns_about_repeat_interval_on_a_route_matching_only_resolve_on(
    tmp_path: Path, public_key_file: Path
) -> None:
    base = {"verification": {"public_key_file": str(public_key_file)}, "storage": {"url": "memory://"},
            "receivers": {"ops": {"type": "log"}}}
    recovery = {"name": "recovered", "to": "ops", "match": {"status": ["RUNNING"]}, "repeat_interval": "10m"}
    config = write(tmp_path / "c.yaml", {**base, "routes": [recovery]})
    r = check(config)
    assert r.returncode == 0, r.stderr
    assert ("warning: routes[0].repeat_interval: the route matches only RUNNING (incidents.resolve_on), so it "
            "would remind every 10m that the node is still healthy; drop repeat_interval here") in r.stderr
    assert check(config, "--strict").returncode == 2
    # A route that can match a failure, or one without reminders, is fine.
    failing = {**recovery, "match": {"status": ["RUNNING", "FAILED"]}}
    quiet = {k: v for k, v in recovery.items() if k != "repeat_interval"}
    for route in (failing, quiet):
        r = check(write(tmp_path / "ok.yaml", {**base, "routes": [route]}), "--strict")
        assert r.returncode == 0 and "repeat_interval" not in r.stderr, r.stderr
    # resolve_on decides what "healthy" is.
    custom = write(tmp_path / "custom.yaml", {**base, "routes": [recovery],
                                              "incidents": {"resolve_on": ["RUNNING", "PAUSED"]}})
    r = check(custom)
    assert "routes[0].repeat_interval" in r.stderr


def test_a_status_in_the_wrong_case_is_an_error_and_strict_makes_warnings_fatal(tmp_path: Path,
                                                                               public_key_file: Path) -> None:
    base = {"verification": {"public_key_file": str(public_key_file)}, "storage": {"url": "memory://"},
            "receivers": {"ops": {"type": "log"}}}
    typo = write(tmp_path / "typo.yaml",
                 {**base, "routes": [{"name": "r", "to": "ops", "match": {"status": "Failed"}}]})
    r = check(typo)
    assert r.returncode == 2
    assert ("error: routes[0].match.status[0]: 'Failed' is not a known status (statuses are case-sensitive); "
            "did you mean FAILED?") in r.stderr
    unknown = write(tmp_path / "unknown.yaml",
                    {**base, "routes": [{"name": "r", "to": "ops", "match": {"status": "DEGRADED"}}]})
    r = check(unknown)
    assert r.returncode == 0, r.stderr
    assert "warning: routes[0].match.status[0]: 'DEGRADED' is not a known status" in r.stderr
    r = check(unknown, "--strict")
    assert r.returncode == 2
    assert "error: routes[0].match.status[0]: 'DEGRADED' is not a known status" in r.stderr
    assert "1 warning made fatal by --strict" in r.stderr
    clean = write(tmp_path / "clean.yaml", {**base, "default_to": ["ops"]})
    assert check(clean, "--strict").returncode == 0


async def test_route_status_not_catches_a_status_added_later(tmp_path: Path, public_key_file: Path) -> None:
    config = write(tmp_path / "c.yaml", {
        "verification": {"public_key_file": str(public_key_file)}, "storage": {"url": "memory://"},
        "receivers": {"ops": {"type": "log"}},
        "routes": [{"name": "anything-wrong", "to": "ops", "match": {"status_not": ["RUNNING"]}}],
    })
    for status, matched in (("FAILED", True), ("DECOMMISSIONED", True), ("RUNNING", False)):
        r = await run_cli("route", "-c", str(config), "--node", "n1", "--status", status)
        assert r.code == (0 if matched else 1), r  # route exits 1 when nobody would be notified
        assert ("MATCH anything-wrong" in r.out) is matched, r
        if not matched:
            assert "status 'RUNNING' is in status_not [RUNNING]" in r.out


async def test_labels_by_glob_without_an_allow_list_reach_routes(
    bridge_process: Callable[..., Any], tmp_path: Path
) -> None:
    p: BridgeProcess = await bridge_process(
        receivers={"console": {"type": "log"}, "audit": {"type": "log"}},
        node_labels=[{"match": "prod-*", "labels": {"env": "prod"}},
                     {"match": ["prod-db-*"], "labels": {"team": "data"}}],
        routes=[{"name": "prod-data", "to": "console", "match": {"labels": {"env": "prod", "team": "data"}}},
                {"name": "prod", "to": "audit", "match": {"labels": {"env": "prod"}}}],
    )
    # No nodes: allow-list, so a node nobody listed is accepted and labelled by its id.
    assert (await p.event("prod-db-7", "FAILED"))[0] == 200
    status, doc = await p.event("staging-1", "FAILED")
    assert (status, doc["deliveries"]) == (200, 0)  # accepted, no label: no route
    alerts: list[str] = []
    for _ in range(200):
        alerts = [line for line in p.log().splitlines() if " ALERT " in line]
        if len(alerts) >= 2:
            break
        await asyncio.sleep(0.05)
    assert sorted(line.split(" ALERT ", 1)[1].split(" alert=")[0] for line in alerts) == [
        "prod-db-7 is FAILED (route prod)", "prod-db-7 is FAILED (route prod-data)"], p.log()[-3000:]
    assert all('"labels":{"env":"prod","team":"data"}' in line for line in alerts)


async def test_a_refused_node_is_named_in_the_log_line(bridge_process: Callable[..., Any]) -> None:
    p: BridgeProcess = await bridge_process(
        nodes={"prod-1": {"labels": {"env": "prod"}}}, default_to=["console"],
        log={"format": "json", "level": "info"},
    )
    status, doc = await p.event("new-node-9", "FAILED")
    assert (status, doc["error"]) == (403, "node_rejected")
    refused = []
    for _ in range(100):
        refused = [json.loads(line) for line in p.log().splitlines()
                   if line.startswith("{") and "refused" in line]
        if refused:
            break
        await asyncio.sleep(0.05)
    assert refused and refused[0]["node"] == "new-node-9", p.log()[-2000:]


@pytest.mark.parametrize("form", ["url_file"])
def test_storage_url_file(tmp_path: Path, public_key_file: Path, form: str) -> None:
    (tmp_path / "storage-url").write_text("sqlite://state/bridge.db\n")
    config = write(tmp_path / "c.yaml", {"verification": {"public_key_file": str(public_key_file)},
                                         "storage": {form: "storage-url"}, "receivers": {"ops": {"type": "log"}},
                                         "default_to": ["ops"]})
    r = check(config, cwd="/")
    assert r.returncode == 0, r.stderr
    assert f"sqlite://{tmp_path}/state/bridge.db" in r.stdout
