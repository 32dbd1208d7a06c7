"""The CLI's own commands: route, send-test, check (the real `python -m bridge` process)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.fakes import WebhookSink, make_cert

ROOT = Path(__file__).resolve().parent.parent


async def run(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def write(tmp_path: Path, cfg: dict[str, Any]) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


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
    assert "notified: oncall (via failed-anywhere), audit (via failed-anywhere)" in out
    code, out, _ = await run("route", "-c", cfg, "--node", "node-dev-1", "--status", "RUNNING",
                             "--previous-status", "FAILED")
    assert code == 0 and "MATCH recoveries" in out and "notified: oncall (via recoveries)" in out
    code, out, _ = await run("route", "-c", cfg, "--node", "node-dev-1", "--status", "PAUSED")
    assert code == 0 and "notified: console (via default)" in out
    code, out, _ = await run("route", "-c", cfg, "--node", "stranger", "--status", "FAILED")
    assert code == 0 and "would refuse it with 403" in out


async def test_send_test_reports_arrival_and_failure(tmp_path: Path) -> None:
    async with WebhookSink() as sink:
        cfg = write(tmp_path, {"verification": {"public_key": "x"},
                               "receivers": {"hook": {"type": "webhook", "url": sink.url}}})
        code, out, _ = await run("send-test", "-c", cfg, "--receiver", "hook", "--node", "n7")
        assert code == 0 and "accepted by receiver 'hook'" in out
        [got] = sink.requests
        assert got.json()["event"]["nodeId"] == "n7" and got.json()["event"]["status"] == "FAILED"

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
    from tests.test_receivers_webhook import https_server

    async with https_server(make_cert(tmp_path / "tls")) as url:
        cfg = write(tmp_path, {"verification": {"public_key": "x"},
                               "receivers": {"hook": {"type": "webhook", "url": url}}})
        code, out, err = await run("send-test", "-c", cfg, "--receiver", "hook")
    assert code == 1, (out, err)
    assert "FAILED (temporary): webhook: TLS certificate not trusted for 127.0.0.1 (self-signed certificate)" in err
    assert "Traceback" not in err and "AttributeError" not in err
