"""The CLI's own commands: route, send-test, check (the real `python -m bridge` process)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import yaml

from tests.support.cli_runner import run, write
from tests.support.fakes import WebhookSink, make_cert
from tests.support.tls import https_server

ROUTED = {
    "verification": {"public_key": "unused-by-these-commands"},
    "nodes": {"node-prod-1": {"labels": {"env": "prod"}}, "node-dev-1": {"labels": {"env": "dev"}}},
    "receivers": {"oncall": {"type": "log"}, "audit": {"type": "log"}, "console": {"type": "log"}},
    "routes": [
        {"name": "failed-anywhere", "match": {"status": ["FAILED"]}, "to": ["oncall", "audit"]},
        {"name": "prod-failed", "match": {"labels": {"env": "prod"}, "status": ["FAILED"]}, "to": ["audit"],
         "stop": True},
        {"name": "recoveries", "match": {"status": ["RUNNING"], "previous_status": ["FAILED"]}, "to": ["oncall"]},
    ],
    "default_to": ["console"],
}


async def test_route_explains_matches_and_receivers(tmp_path: Path) -> None:
    cfg = write(tmp_path, ROUTED)
    code, out, _ = await run("route", "-c", cfg, "--node", "node-prod-1", "--status", "FAILED")
    assert code == 0
    assert "MATCH failed-anywhere" in out and "MATCH prod-failed" in out
    assert "notified: oncall (via failed-anywhere, firing), audit (via failed-anywhere, firing)" in out
    code, out, _ = await run("route", "-c", cfg, "--node", "node-dev-1", "--status", "RUNNING",
                             "--previous-status", "FAILED")
    assert code == 0 and "MATCH recoveries" in out and "notified: oncall (via recoveries, event)" in out
    code, out, _ = await run("route", "-c", cfg, "--node", "node-dev-1", "--status", "PAUSED")
    assert code == 0 and "notified: console (via default, event)" in out
    code, out, _ = await run("route", "-c", cfg, "--node", "stranger", "--status", "FAILED")
    assert code == 1 and "would refuse it with 403" in out and "notified:" not in out and "MATCH" not in out


async def test_route_says_a_grouped_firing_goes_in_a_digest(tmp_path: Path) -> None:
    grouped = {**ROUTED, "routes": [{**ROUTED["routes"][0], "group_wait": "30s", "group_by": ["env"]}]}
    cfg = write(tmp_path, grouped)
    code, out, _ = await run("route", "-c", cfg, "--node", "node-prod-1", "--status", "FAILED")
    assert code == 0
    assert ("notified: oncall (via failed-anywhere, firing, in a digest after 30s, env=prod), "
            "audit (via failed-anywhere, firing, in a digest after 30s, env=prod)") in out
    code, out, _ = await run("route", "-c", cfg, "--node", "node-prod-1", "--status", "FAILED", "--json")
    assert code == 0
    [first, _second] = json.loads(out)["notified"]
    assert first["digest"] == {"after": 30.0, "group_by": {"env": "prod"}}


async def test_send_test_reports_arrival_and_failure(tmp_path: Path) -> None:
    async with WebhookSink() as sink:
        cfg = write(tmp_path, {"verification": {"public_key": "x"},
                               "receivers": {"hook": {"type": "webhook", "url": sink.url}}})
        code, out, _ = await run("send-test", "-c", cfg, "--receiver", "hook", "--node", "n7")
        assert code == 0 and "accepted by receiver 'hook'" in out and "TEST" in out
        [got] = sink.requests
        assert got.json()["event"]["nodeId"] == "n7" and got.json()["event"]["status"] == "FAILED"
        assert got.json()["title"].startswith("TEST: ") and got.json()["route"] == "send-test", got.json()

        sink.script(400)
        code, _, err = await run("send-test", "-c", cfg, "--receiver", "hook")
        assert code == 1 and "FAILED (permanent)" in err and "400" in err
        sink.script(503)
        code, _, err = await run("send-test", "-c", cfg, "--receiver", "hook")
        assert code == 1 and "FAILED (temporary)" in err
        assert sink.url not in err  # the URL is a secret

        code, _, err = await run("send-test", "-c", cfg, "--receiver", "nope")
        assert code == 2 and "no receiver named 'nope'" in err


async def test_send_test_to_an_untrusted_https_receiver(tmp_path: Path) -> None:
    async with https_server(make_cert(tmp_path / "tls")) as url:
        cfg = write(tmp_path, {"verification": {"public_key": "x"},
                               "receivers": {"hook": {"type": "webhook", "url": url}}})
        code, out, err = await run("send-test", "-c", cfg, "--receiver", "hook")
    assert code == 1, (out, err)
    assert "FAILED (temporary): webhook: TLS certificate not trusted for 127.0.0.1 (self-signed certificate)" in err
    assert "Traceback" not in err and "AttributeError" not in err


async def test_route_json_exit_codes_without_the_secrets_env(tmp_path: Path) -> None:
    """``route`` sends nothing: it runs where ${SLACK_URL} and friends are not set (a laptop, CI)."""
    receivers: dict[str, Any] = {**ROUTED["receivers"],  # type: ignore[dict-item]
                                 "slack": {"type": "slack", "webhook_url": "${SLACK_URL}"}}
    cfg = write(tmp_path, {**ROUTED, "receivers": receivers,
                           "routes": [{"name": "to-slack", "match": {"status": ["FAILED"]}, "to": ["slack"]}],
                           "default_to": []})
    code, out, err = await run("route", "-c", cfg, "--node", "node-prod-1", "--status", "FAILED", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["notified"] == [{"receiver": "slack", "route": "to-slack", "kind": "firing"}] and doc["refused"] is None
    assert doc["routes"][0] == {"route": "to-slack", "matched": True, "reason": "matched"}
    code, out, _ = await run("route", "-c", cfg, "--node", "node-prod-1", "--status", "RUNNING", "--json")
    assert code == 1 and json.loads(out)["notified"] == []
    code, out, _ = await run("route", "-c", cfg, "--node", "stranger", "--status", "FAILED", "--json")
    doc = json.loads(out)
    assert code == 1 and doc["notified"] == [] and "403" in doc["refused"]
    # serve still insists on the variable
    code, _, err = await run("check", "-c", cfg)
    assert code == 2 and "SLACK_URL is not set" in err


async def test_config_from_the_environment_and_help_examples(tmp_path: Path) -> None:
    cfg = write(tmp_path, ROUTED)
    code, out, _ = await run("route", "--node", "node-prod-1", "--status", "FAILED",
                             env={"ALERT_BRIDGE_CONFIG": cfg}, cwd=tmp_path)
    assert code == 0 and "notified: oncall" in out
    code, _, err = await run("check", cwd=tmp_path)
    assert code == 2 and "-c/--config" in err  # no env, no /etc/alert-bridge/config.yaml here
    commands = (["serve"], ["check"], ["reload"], ["route"], ["send-test"], ["deliveries"],
                ["deliveries", "list"], ["deliveries", "retry"], ["deliveries", "purge"], ["silence"],
                ["silence", "add"], ["silence", "list"], ["silence", "expire"], ["keygen"], ["emit"],
                ["demo"], ["healthcheck"])
    slots = asyncio.Semaphore(4)  # a few processes at a time: each is a Python start-up

    async def help_of(command: list[str]) -> tuple[int, str]:
        async with slots:
            code, out, _ = await run(*command, "--help")
            return code, out

    for command, (code, out) in zip(commands, await asyncio.gather(*map(help_of, commands)), strict=True):
        assert code == 0 and "example" in out and f"alert-bridge {' '.join(command)}" in out, command


async def test_deliveries_list_retry_purge(bridge_process: Any, webhook_sink: WebhookSink) -> None:
    """Newest first, a header, the next attempt, plurals; an unknown id exits 1 naming it."""
    from tests.support.cli_runner import run_cli

    webhook_sink.script(400, 400)  # permanent: both deliveries go dead at once
    p = await bridge_process(receivers={"hook": {"type": "webhook", "url": webhook_sink.url}},
                             routes=[{"name": "all", "to": ["hook"]}])
    cfg = str(p.config_path)
    from datetime import UTC, datetime, timedelta

    t0 = datetime.now(UTC) - timedelta(minutes=5)
    assert (await p.event("old-node", "FAILED", timestamp=t0))[0] == 200
    await webhook_sink.wait_for(1, timeout=10)
    assert (await p.event("new-node", "FAILED", timestamp=t0 + timedelta(minutes=1)))[0] == 200
    await webhook_sink.wait_for(2, timeout=10)
    for _ in range(100):
        r = await run_cli("deliveries", "list", "-c", cfg, "--state", "dead", "--json")
        if len(json.loads(r.out)) == 2:
            break
        await asyncio.sleep(0.1)
    r = await run_cli("deliveries", "list", "-c", cfg)
    assert r.code == 0, r
    header, *rows = r.out.splitlines()
    assert header.split()[:3] == ["ID", "STATE", "RECEIVER"] and "NEXT ATTEMPT" in header
    assert [row.split()[3] for row in rows] == ["new-node", "old-node"], r.out  # newest first
    assert r.err.strip() == "2 deliveries"
    dead_id = rows[0].split()[0]
    r = await run_cli("deliveries", "retry", "-c", cfg, "dlv_nope")
    assert r.code == 1 and "dlv_nope" in r.err and r.out.strip() == "0 deliveries queued again", r
    webhook_sink.script(200)
    r = await run_cli("deliveries", "retry", "-c", cfg, dead_id)
    assert r.code == 0 and r.out.strip() == "1 delivery queued again", r
    await webhook_sink.wait_for(3, timeout=10)
    r = await run_cli("deliveries", "purge", "-c", cfg, "--dead")
    assert r.code == 0 and r.out.strip() in ("1 dead delivery purged", "0 dead deliveries purged"), r


async def test_reload_command(bridge_process: Any) -> None:
    from tests.support.cli_runner import run_cli

    p = await bridge_process()
    cfg = str(p.config_path)
    r = await run_cli("reload", "-c", cfg)
    assert r.code == 0 and "reloaded" in r.out, r
    text = p.config_path.read_text()
    # Replaced, not appended: a second routes: key is an error of its own now.
    p.config_path.write_text(yaml.safe_dump({**yaml.safe_load(text), "routes": [{"name": "x", "to": ["nobody"]}]}))
    r = await run_cli("reload", "-c", cfg)
    assert r.code == 1 and "nobody" in r.err and "running config stays" in r.err, r
    assert await p.terminate() == 0
    p.config_path.write_text(text)
    r = await run_cli("reload", "-c", cfg)
    assert r.code == 1 and "error: admin API" in r.err, r  # no bridge: nothing to reload, said so


async def test_route_explains_against_the_running_bridges_incident(bridge_process: Any,
                                                                   webhook_sink: WebhookSink) -> None:
    """With the bridge running, ``route`` decides on the node's stored state: a RUNNING for a node
    with an open incident is its resolution; for a node the bridge does not know, nobody is told."""
    from tests.support.cli_runner import run_cli

    p = await bridge_process(receivers={"hook": {"type": "webhook", "url": webhook_sink.url}},
                             routes=[{"name": "down", "match": {"status": ["FAILED"]}, "to": ["hook"]}])
    assert (await p.event("n1", "FAILED"))[0] == 200
    await webhook_sink.wait_for(1, timeout=10)
    iid = webhook_sink.delivered[0].json()["incident"]["id"]
    cfg = str(p.config_path)
    r = await run_cli("route", "-c", cfg, "--node", "n1", "--status", "RUNNING")
    assert r.code == 0, r
    assert f"now (running bridge): n1 is FAILED, incident {iid} open: FAILED " in r.out
    assert "notified: hook (via down, resolved)" in r.out
    r = await run_cli("route", "-c", cfg, "--node", "n1", "--status", "RUNNING", "--json")
    doc = json.loads(r.out)
    assert doc["current"]["incident"]["id"] == iid and doc["previous_status"] == "FAILED"
    r = await run_cli("route", "-c", cfg, "--node", "n9", "--status", "RUNNING")
    assert r.code == 1 and "running bridge" not in r.out and "notified: nobody" in r.out, r
    # Nothing was sent by asking.
    assert len(webhook_sink.delivered) == 1


async def test_every_command_reading_the_config_refuses_a_key_given_twice(tmp_path: Path) -> None:
    """check, route and serve read the config through the same loader: a second top-level receivers:
    (which YAML would let replace the first) is an error naming both lines, and nothing starts."""
    text = yaml.safe_dump({**ROUTED, "server": {"listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0"},
                           "storage": {"url": "memory://"}}, sort_keys=False)
    first = text.splitlines().index("receivers:") + 1
    path = tmp_path / "twice.yaml"
    path.write_text(text + "receivers: {console: {type: log}}\n")
    expected = (f"error: receivers: duplicate key, given twice on lines {first} and {len(text.splitlines()) + 1} "
                "(only the last would count); remove or rename one of them")
    for command, *extra in (("check",), ("route", "--node", "node-prod-1", "--status", "FAILED"), ("serve",)):
        code, out, err = await run(command, "-c", str(path), *extra)
        assert (code, err.strip(), out) == (2, expected, ""), (command, code, out, err)
