"""keygen, emit, demo, healthcheck and silence add/list/expire, run as real commands."""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from bridge.testing import load_private_key, private_pem, write_keypair
from tests.support.cli_runner import run_cli
from tests.support.fakes import WebhookSink, free_port
from tests.support.harness import BridgeProcess, InProcessBridge
from tests.support.promtext import series as metric_value

pytestmark = pytest.mark.timeout(90)

FAILED_TO_HOOK = [{"name": "failed", "match": {"status": ["FAILED"]}, "to": ["hook"]}]


def key_file(tmp_path: Path, key: rsa.RSAPrivateKey) -> Path:
    path = tmp_path / "thunderstack-private.pem"
    path.write_bytes(private_pem(key))
    return path


# --- keygen ----------------------------------------------------------------------------------------


async def test_keygen_writes_a_working_pair_and_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "keys"
    r = await run_cli("keygen", "--out", str(out))
    assert r.code == 0, r
    priv, pub = out / "private.pem", out / "public.pem"
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    key = load_private_key(priv)
    public = serialization.load_pem_public_key(pub.read_bytes())
    assert isinstance(public, rsa.RSAPublicKey)
    sig = key.sign(b"body", padding.PKCS1v15(), hashes.SHA256())
    public.verify(sig, b"body", padding.PKCS1v15(), hashes.SHA256())  # raises if they do not pair
    assert str(pub) in r.out and "public_key_file" in r.out

    before = priv.read_bytes()
    again = await run_cli("keygen", "--out", str(out))
    assert again.code == 2 and "--force" in again.err
    assert priv.read_bytes() == before
    forced = await run_cli("keygen", "--out", str(out), "--force")
    assert forced.code == 0 and priv.read_bytes() != before


# --- emit ------------------------------------------------------------------------------------------


async def test_emit_against_the_real_server(
    bridge_process: Callable[..., Any], webhook_sink: WebhookSink, signing_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    p: BridgeProcess = await bridge_process(
        receivers={"hook": {"type": "webhook", "url": webhook_sink.url}}, routes=FAILED_TO_HOOK
    )
    key = key_file(tmp_path, signing_key)
    url = p.base_url + "/webhook"
    stamp = (datetime.now(UTC) - timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    args = ["emit", "--private-key", str(key), "--url", url, "--node", "n-emit", "--status", "FAILED",
            "--timestamp", stamp]

    r = await run_cli(*args)
    assert r.code == 0, r
    lines = r.out.strip().splitlines()
    assert lines[0] == "HTTP 200"
    answer = json.loads(lines[1])
    assert answer["status"] == "accepted" and answer["deliveries"] == 1
    await webhook_sink.wait_for(1, timeout=10)
    delivered = webhook_sink.requests[0].payload["event"]
    assert delivered["nodeId"] == "n-emit" and delivered["status"] == "FAILED"
    assert delivered["id"] == answer["id"]

    # the same event again is a duplicate; still a 2xx, so exit 0
    r = await run_cli(*args)
    assert r.code == 0 and json.loads(r.out.splitlines()[1]) == {"status": "duplicate", "id": answer["id"]}

    # a key the bridge does not trust: 403 and exit 1, with the bridge's JSON answer printed
    other = write_keypair(tmp_path / "other")[0]
    r = await run_cli("emit", "--private-key", str(other), "--url", url, "--node", "n-emit", "--status", "RUNNING")
    assert r.code == 1
    assert r.out.splitlines()[0] == "HTTP 403"
    assert json.loads(r.out.splitlines()[1])["error"] == "invalid_signature"

    # nobody listening: exit 1 with a reason
    r = await run_cli("emit", "--private-key", str(key), "--url", f"http://127.0.0.1:{free_port()}/webhook",
                      "--node", "n", "--status", "FAILED")
    assert r.code == 1 and "cannot post" in r.err
    assert len(webhook_sink.requests) == 1


# --- demo ------------------------------------------------------------------------------------------


async def test_demo_finishes_with_the_alerts_printed() -> None:
    r = await run_cli("demo", timeout=30)
    assert r.code == 0, r
    alerts = [line for line in r.out.splitlines() if line.strip().startswith("[console] ALERT")]
    assert len(alerts) == 2, r.out
    assert "demo-node-1 is FAILED" in alerts[0] and "was RUNNING" in alerts[0]
    assert "RESOLVED demo-node-1 after " in alerts[1] and "was FAILED" in alerts[1]
    assert '"status": "duplicate"' in r.out
    assert "2 alerts delivered" in r.out


# --- healthcheck -----------------------------------------------------------------------------------


async def test_healthcheck_follows_the_config_and_fails_when_down(bridge_process: Callable[..., Any]) -> None:
    p: BridgeProcess = await bridge_process()
    r = await run_cli("healthcheck", "-c", str(p.config_path))
    assert r.code == 0, r
    assert "200" in r.out and p.cfg["server"]["listen"] in r.out
    # A later mistake elsewhere in the file does not make the running bridge look dead.
    text = p.config_path.read_text()
    p.config_path.write_text(text + "\nroutes: [{name: x, to: [nobody]}]\nbogus_key: 1\n")
    assert (await run_cli("healthcheck", "-c", str(p.config_path))).code == 0
    assert await p.terminate() == 0
    r = await run_cli("healthcheck", "-c", str(p.config_path))
    assert r.code == 1 and "unhealthy" in r.out
    r = await run_cli("healthcheck", "--url", f"http://127.0.0.1:{free_port()}/readyz")
    assert r.code == 1


# --- silences --------------------------------------------------------------------------------------


async def _delivered_nodes(sink: WebhookSink) -> list[tuple[str, str]]:
    return [(r.payload["event"]["nodeId"], r.payload["event"]["id"]) for r in sink.requests]


async def test_silence_add_list_expire_through_the_running_bridge(
    bridge_process: Callable[..., Any], webhook_sink: WebhookSink
) -> None:
    p: BridgeProcess = await bridge_process(
        receivers={"hook": {"type": "webhook", "url": webhook_sink.url}}, routes=FAILED_TO_HOOK
    )
    cfg = str(p.config_path)
    t0 = datetime.now(UTC) - timedelta(minutes=10)

    r = await run_cli("silence", "add", "-c", cfg, "--node", "db-*", "--status", "failed", "--for", "1h",
                      "--comment", "disk swap")
    assert r.code == 0, r
    silence_id = r.out.strip()
    assert silence_id.startswith("sil_") and "\n" not in silence_id  # only the id on stdout
    assert "the running bridge" in r.err

    r = await run_cli("silence", "list", "-c", cfg, "--json")
    assert r.code == 0, r
    [row] = json.loads(r.out)
    assert row["id"] == silence_id and row["state"] == "active" and row["source"] == "storage"
    assert row["node"] == "db-*" and row["status"] == ["FAILED"] and row["comment"] == "disk swap"

    # silenced: recorded (200, counted) but not notified; another node is not affected
    status, doc = await p.event("db-1", "FAILED", timestamp=t0)
    assert status == 200 and doc["status"] == "accepted" and doc["deliveries"] == 0
    assert doc["silenced"] == silence_id
    status, doc = await p.event("web-1", "FAILED", timestamp=t0)
    assert status == 200 and doc["deliveries"] == 1
    await webhook_sink.wait_for(1, timeout=10)
    metrics = await p.metrics()
    assert metric_value(metrics, "alert_bridge_events_total", outcome="silenced") == 1
    assert metric_value(metrics, "alert_bridge_silences_active") == 1
    status, doc = await p.event("db-1", "FAILED", timestamp=t0)
    assert doc["status"] == "duplicate"  # it was recorded

    r = await run_cli("silence", "expire", "-c", cfg, silence_id)
    assert r.code == 0 and silence_id in r.out, r
    r = await run_cli("silence", "list", "-c", cfg, "--json")
    assert json.loads(r.out) == []
    r = await run_cli("silence", "list", "-c", cfg, "--all")
    assert silence_id in r.out and "expired" in r.out

    # Incidents (issue 13): the silenced FAILED opened the incident muted, and a repeat of FAILED
    # after the expiry is no news; once the node recovers, its next failure notifies at once.
    status, doc = await p.event("db-1", "FAILED", timestamp=t0 + timedelta(seconds=30))
    assert status == 200 and doc["deliveries"] == 0 and "silenced" not in doc
    status, doc = await p.event("db-1", "RUNNING", timestamp=t0 + timedelta(seconds=40))
    assert status == 200 and doc["deliveries"] == 0  # its firing was never sent: nor is its resolution
    status, doc = await p.event("db-1", "FAILED", timestamp=t0 + timedelta(minutes=1))
    assert status == 200 and doc["deliveries"] == 1 and "silenced" not in doc
    await webhook_sink.wait_for(2, timeout=10)
    await asyncio.sleep(0.5)  # nothing else trickles in
    assert [n for n, _ in await _delivered_nodes(webhook_sink)] == ["web-1", "db-1"]
    assert metric_value(await p.metrics(), "alert_bridge_silences_active") == 0

    r = await run_cli("silence", "expire", "-c", cfg, "sil_nonexistent")
    assert r.code == 1 and "no silence" in r.err
    r = await run_cli("silence", "add", "-c", cfg, "--node", "x", "--for", "soon", "--comment", "c")
    assert r.code == 2 and "duration" in r.err
    r = await run_cli("silence", "add", "-c", cfg, "--node", "x", "--for", "999999999d", "--comment", "c")
    assert r.code == 2 and "error: duration: at most 366 days" in r.err and "Traceback" not in r.err, r
    r = await run_cli("silence", "add", "-c", cfg, "--node", "*", "--until", "9999-12-31T23:59:59Z", "--comment", "c")
    assert r.code == 2 and "error: ends_at:" in r.err, r
    r = await run_cli("silence", "list", "-c", cfg, "--json")
    assert json.loads(r.out) == []


async def test_silence_without_a_running_bridge_uses_the_store(
    bridge_process: Callable[..., Any], webhook_sink: WebhookSink
) -> None:
    """Bridge stopped: the CLI opens the SQLite file itself; the next bridge obeys the silence."""
    first: BridgeProcess = await bridge_process(
        receivers={"hook": {"type": "webhook", "url": webhook_sink.url}}, routes=FAILED_TO_HOOK
    )
    cfg = str(first.config_path)
    # While it runs, the store is locked: forcing the direct way fails and says why.
    r = await run_cli("silence", "list", "-c", cfg, "--via", "storage")
    assert r.code == 1 and "in use by another alert-bridge process" in r.err
    assert await first.terminate() == 0

    r = await run_cli("silence", "add", "-c", cfg, "--node", "n1", "--for", "30m", "--comment", "offline")
    assert r.code == 0, r
    silence_id = r.out.strip()
    assert "storage" in r.err
    r = await run_cli("silence", "list", "-c", cfg)
    assert r.code == 0 and silence_id in r.out and "active" in r.out

    second: BridgeProcess = await bridge_process(
        receivers={"hook": {"type": "webhook", "url": webhook_sink.url}}, routes=FAILED_TO_HOOK
    )
    assert second.cfg["storage"] == first.cfg["storage"]
    status, doc = await second.event("n1", "FAILED")
    assert status == 200 and doc.get("silenced") == silence_id and doc["deliveries"] == 0
    status, doc = await second.event("n2", "FAILED")
    assert doc["deliveries"] == 1
    await webhook_sink.wait_for(1, timeout=10)
    assert [n for n, _ in await _delivered_nodes(webhook_sink)] == ["n2"]


async def test_silence_with_memory_storage_needs_the_bridge(bridge_process: Callable[..., Any]) -> None:
    p: BridgeProcess = await bridge_process(storage={"url": "memory://"})
    cfg = str(p.config_path)
    r = await run_cli("silence", "add", "-c", cfg, "--node", "n*", "--for", "5m", "--comment", "x")
    assert r.code == 0, r
    assert await p.terminate() == 0
    r = await run_cli("silence", "list", "-c", cfg)
    assert r.code == 1 and "memory://" in r.err


async def test_silence_api_validates(bridge: Callable[..., Any]) -> None:
    b: InProcessBridge = await bridge()
    async with aiohttp.ClientSession() as s:
        for body, word in [({"duration": "1h"}, "node"), ({"node": "n", "duration": "0"}, "duration"),
                           ({"node": "n"}, "ends_at or duration"),
                           ({"node": "n", "ends_at": "2001-01-01T00:00:00Z"}, "after starts_at"),
                           ({"node": "n", "duration": "1h", "status": []}, "status"),
                           ({"node": "n", "duration": "999999999d"}, "duration:"),
                           ({"node": "*", "ends_at": "9999-12-31T23:59:59Z"}, "ends_at:"),
                           ({"node": "n", "duration": "1h", "bogus": 1}, "bogus: unknown field"),
                           ({"node": "a b", "duration": "1h"}, "node:")]:
            async with s.post(b.admin_url + "/-/silences", json=body) as resp:
                assert resp.status == 422, body
                assert word in (await resp.json())["detail"]
        async with s.post(b.admin_url + "/-/silences", data=b"[",
                          headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 400
        starts = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        async with s.post(b.admin_url + "/-/silences",
                          json={"node": "n1", "starts_at": starts, "duration": 60, "comment": "later"}) as resp:
            assert resp.status == 201
            later = (await resp.json())["silence"]
        async with s.post(b.admin_url + "/-/silences/nope/expire", json={}) as resp:
            assert resp.status == 404
    # a silence that starts later does not silence now
    status, doc = await b.event("n1", "FAILED")
    assert status == 200 and "silenced" not in doc
    assert later["id"] in [s.id for s in await b.app.list_silences()]


async def test_silence_for_a_pattern_no_configured_node_matches_warns(
    bridge_process: Callable[..., Any], webhook_sink: WebhookSink
) -> None:
    """With an allow-list, a silence whose node pattern matches no listed node mutes nothing: say so."""
    p: BridgeProcess = await bridge_process(
        receivers={"hook": {"type": "webhook", "url": webhook_sink.url}}, routes=FAILED_TO_HOOK,
        nodes={"prod-1": {}, "prod-2": {}},
    )
    cfg = str(p.config_path)
    r = await run_cli("silence", "add", "-c", cfg, "--node", "prdo-*", "--for", "30m", "--comment", "typo")
    assert r.code == 0, r
    assert "warning: --node 'prdo-*' matches none of the configured nodes" in r.err
    r = await run_cli("silence", "add", "-c", cfg, "--node", "prod-*", "--for", "30m", "--comment", "maintenance")
    assert r.code == 0 and "warning" not in r.err, r


async def test_storage_unreachable_hint_names_the_admin_listener_only_when_it_was_asked(
        tmp_path: Path, make_config: Callable[..., dict[str, Any]]) -> None:
    """Redis down and no bridge running: asked both ways, the CLI says the admin listener did not
    answer; with --via storage it did not ask it, and does not say so."""
    import yaml

    cfg = make_config(storage={"url": f"redis://127.0.0.1:{free_port()}/0"})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = await run_cli("silence", "list", "-c", str(path))
    assert r.code == 1 and "does not answer" in r.err and "Traceback" not in r.err, r
    r = await run_cli("silence", "list", "-c", str(path), "--via", "storage")
    assert r.code == 1 and "redis" in r.err and "does not answer" not in r.err, r
