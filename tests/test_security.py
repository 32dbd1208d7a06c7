"""Security against the real ``python -m bridge serve`` process.

- HTTPS with ``server.tls``, tested with real TLS clients (trusting, not trusting, too old).
- The admin endpoints (metrics, reload, silences) are absent from the webhook listener, however
  the request is spelt, over HTTP and HTTPS.
- No secret value in any log line, error body or metric label: every receiver is configured with
  secrets and driven into its error paths (wrong token, an echoing proxy, an SMTP reply quoting the
  password, a failing key endpoint, a password in the Redis URL); ``secret_guard`` reads what came out.

(The container running as non-root is tested with the container, elsewhere.)
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client.parser import text_string_to_metric_families

from bridge.testing import event_body, sign
from tests.support.fakes import Answer, FakeSlack, free_port, make_cert
from tests.support.harness import ROOT, BridgeProcess
from tests.support.keyserver import KeyEndpoint
from tests.support.reliability import SecretGuard, record
from tests.support.under_fire import SMTP_USER, Receivers, db_counts, db_path

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning"),
]

ADMIN_REQUESTS = [
    ("GET", "/metrics"), ("POST", "/-/reload"), ("GET", "/-/silences"), ("POST", "/-/silences"),
    ("POST", "/-/silences/sil_x/expire"), ("GET", "/metrics/"), ("GET", "/METRICS"), ("GET", "//metrics"),
    ("GET", "/metrics?format=prometheus"), ("GET", "/%6detrics"), ("GET", "/webhook/../metrics"),
    ("GET", "/webhook/%2e%2e/metrics"), ("GET", "/./metrics"), ("POST", "/-/reload/"), ("POST", "//-/reload"),
    ("POST", "/webhook/../-/reload"), ("GET", "/-/"), ("OPTIONS", "/metrics"), ("HEAD", "/metrics"),
    ("GET", "http://127.0.0.1/metrics"),  # absolute-form request target
]


def raw_request(host: str, port: int, method: str, target: str, *, tls: ssl.SSLContext | None = None) -> tuple[
        int, bytes]:
    """One request exactly as written (no client-side normalisation of the path)."""
    with socket.create_connection((host, port), timeout=10) as sock:
        conn: socket.socket = tls.wrap_socket(sock, server_hostname="localhost") if tls else sock
        body = b"{}" if method == "POST" else b""
        conn.sendall(f"{method} {target} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: {len(body)}\r\n"
                     f"Connection: close\r\n\r\n".encode() + body)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.partition(b"\r\n\r\n")[2]


def _host_port(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host, int(port)


# --- TLS ------------------------------------------------------------------------------------------------


class TLSBridge(BridgeProcess):
    """The real process serving HTTPS; the harness's readiness polling goes through a trusting client."""

    tls: ssl.SSLContext

    async def get(self, url: str) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as s, s.get(url, ssl=self.tls) as r:
            return r.status, await r.json(content_type=None)


async def test_https_with_server_tls(make_config: Callable[..., dict[str, Any]], tmp_path: Path,
                                     signing_key: rsa.RSAPrivateKey, secret_guard: SecretGuard) -> None:
    cert = make_cert(tmp_path / "tls")
    trusting = ssl.create_default_context(cafile=str(cert.cert_file))
    cfg = make_config(server={"tls": {"cert_file": str(cert.cert_file), "key_file": str(cert.key_file)}},
                      routes=[{"name": "all", "to": ["console"]}])
    p = TLSBridge(tmp_path / "tls-bridge", cfg, signing_key)
    p.tls = trusting
    p.base_url = "https://" + cfg["server"]["listen"]
    secret_guard.watch_file(p.log_path)
    try:
        await p.start()
        await _exercise_tls(p, trusting, signing_key, secret_guard)
    finally:
        p.kill()


async def _exercise_tls(p: TLSBridge, trusting: ssl.SSLContext, signing_key: rsa.RSAPrivateKey,
                        secret_guard: SecretGuard) -> None:
    host, port = _host_port(p.cfg["server"]["listen"])
    url = p.base_url
    outcome: dict[str, str] = {}

    # a real TLS client that trusts the certificate: events are accepted over HTTPS
    async with aiohttp.ClientSession() as s:
        statuses = []
        for i in range(20):
            body = event_body(f"tls-{i}", "FAILED")
            async with s.post(url + "/webhook", data=body, ssl=trusting,
                              headers={"X-ThunderStack-Signature": sign(body, signing_key)}) as r:
                statuses.append(r.status)
                secret_guard.check_body("https answer", await r.text())
        outcome["trusting client, 20 signed events"] = f"{sorted(set(statuses))}"
        assert statuses == [200] * 20

    # what the handshake negotiated
    with socket.create_connection((host, port)) as sock, trusting.wrap_socket(sock, server_hostname="localhost") as t:
        version = t.version()
        outcome["negotiated"] = f"{version} {t.cipher()[0] if t.cipher() else ''}"
    assert version in ("TLSv1.2", "TLSv1.3")

    # a client that does not trust it refuses; a TLS 1.1 client is refused; plain HTTP gets nothing
    untrusting = ssl.create_default_context()
    with pytest.raises(ssl.SSLCertVerificationError), socket.create_connection((host, port)) as sock, \
            untrusting.wrap_socket(sock, server_hostname="localhost"):
        pass
    outcome["untrusting client"] = "certificate verify failed"
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
    try:
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("ALL:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        pass
    with pytest.raises((ssl.SSLError, ConnectionError)), socket.create_connection((host, port)) as sock, \
            old.wrap_socket(sock, server_hostname="localhost"):
        pass
    outcome["TLS 1.0/1.1 client"] = "handshake refused"
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        try:
            reply = sock.recv(1024)
        except ConnectionError:
            reply = b""
    outcome["plain HTTP to the TLS port"] = "no HTTP answer" if not reply.startswith(b"HTTP/") else repr(reply[:40])
    # the admin listener stays plain HTTP on its own port; the webhook port over TLS has no admin paths
    tls_admin = {t: raw_request(host, port, m, t, tls=trusting)[0] for m, t in ADMIN_REQUESTS[:5]}
    outcome["admin paths over HTTPS"] = f"{sorted(set(tls_admin.values()))}"
    record("HTTPS with server.tls", tried="self-signed certificate for 127.0.0.1; a trusting TLS client, an "
           "untrusting one, a TLS 1.0/1.1-only one, plain HTTP to the TLS port, admin paths over HTTPS", times=24,
           outcome="; ".join(f"{k}: {v}" for k, v in outcome.items()))
    assert not reply.startswith(b"HTTP/1.1 200")
    assert all(s in (404, 405) for s in tls_admin.values()), tls_admin


# --- admin endpoints ------------------------------------------------------------------------------------


async def test_admin_endpoints_absent_from_the_webhook_listener(
    bridge_process: Callable[..., Any], secret_guard: SecretGuard
) -> None:
    p: BridgeProcess = await bridge_process()
    secret_guard.watch_file(p.log_path)
    host, port = _host_port(p.cfg["server"]["listen"])
    ahost, aport = _host_port(p.cfg["server"]["admin_listen"])
    on_webhook = {}
    for method, target in ADMIN_REQUESTS:
        status, body = await asyncio.to_thread(raw_request, host, port, method, target)
        on_webhook[f"{method} {target}"] = status
        secret_guard.check_body(f"{method} {target}", body)
        assert b"alert_bridge_" not in body and b"# HELP" not in body, (method, target, body[:200])
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://{ahost}:{aport}/metrics") as r:
            metrics_status, metrics = r.status, await r.text()
        async with s.post(f"http://{ahost}:{aport}/-/reload", json={}) as r:
            reload_status = r.status
        async with s.get(f"http://{ahost}:{aport}/metrics") as r:
            after = await r.text()
    reloads = [s.value for f in text_string_to_metric_families(after) for s in f.samples
               if s.name == "alert_bridge_config_reloads_total" and s.labels.get("outcome") == "success"]
    record("admin endpoints absent from the webhook listener", tried=f"{len(ADMIN_REQUESTS)} spellings of the admin "
           "requests (metrics, reload, silences; trailing slash, case, //, %-encoding, ../ traversal, absolute "
           "form, HEAD/OPTIONS) sent to the webhook port", times=len(ADMIN_REQUESTS),
           outcome=f"webhook port answered {sorted(set(on_webhook.values()))}, never metrics or a reload; admin "
                   f"port: /metrics {metrics_status}, POST /-/reload {reload_status}; reloads counted: {reloads}",
           answers=on_webhook)
    assert all(s in (400, 404, 405) for s in on_webhook.values()), on_webhook
    assert metrics_status == 200 and "alert_bridge_events_total" in metrics and reload_status == 200
    assert reloads == [1.0], "only the admin port's reload happened"


# --- secrets --------------------------------------------------------------------------------------------

SLACK_TOKEN = "xoxb-sEcReT-t0ken-0123456789"
KEY_API_TOKEN = "key-api-t0ken-S3CRET-security"
REDIS_PASSWORD = "redis-pAssw0rd-s3cret"


async def test_no_secret_in_logs_error_bodies_or_metrics(
    bridge_process: Callable[..., Any], make_config: Callable[..., dict[str, Any]], signing_key: rsa.RSAPrivateKey,
    secret_guard: SecretGuard, tmp_path: Path,
) -> None:
    async with Receivers() as rcv, FakeSlack(token="xoxb-the-right-one-000") as api_slack, \
            KeyEndpoint(signing_key) as keys:
        keys.failures = 10**6  # the key endpoint is down: every refresh fails (401-like 503s)
        receivers = rcv.config(kinds=("slack", "webhook", "email", "log"),
                               slack={"retry": {"max_attempts": 3}}, webhook={"retry": {"max_attempts": 3}},
                               email={"retry": {"max_attempts": 3}})
        receivers["slack_api"] = {"type": "slack", "token": SLACK_TOKEN, "channel": "#alerts",
                                  "api_url": api_slack.api_url, "rate_limit": 0}
        # every error path: Slack answers 404 no_service and 500 echoing its URL; the webhook sink (an echoing
        # proxy) answers 400 with the secret header in its body and reason; SMTP quotes the password back
        rcv.slack.script(Answer(status=404, error="no_service"), Answer(status=500, error=rcv.slack.webhook_url))
        echo = f"Bearer {rcv.sink.url} {SMTP_USER[1]}"
        rcv.sink.script(Answer(status=400, body=echo.encode(), reason=f"Bad {rcv.secrets[3]}"),
                        Answer(status=503, body=echo.encode()))
        rcv.smtp.fail_next(f"535 5.7.8 bad credentials for {SMTP_USER[0]} / {SMTP_USER[1]}", 1, stage="mail")
        p: BridgeProcess = await bridge_process(
            receivers=receivers,
            routes=[{"name": "all", "to": ["slack", "webhook", "email", "log", "slack_api"]}],
            verification={"public_key_file": None, "public_key": None, "public_key_url": keys.url,
                          "api_token": KEY_API_TOKEN, "failure_refresh_interval": "1s"},
            log={"format": "json", "level": "debug"},
            wait_ready=False,
        )
        rcv.log_files.append(p.log_path)
        secrets = [*rcv.secrets, SLACK_TOKEN, KEY_API_TOKEN]
        secret_guard.add_secrets(*secrets)
        secret_guard.watch_file(p.log_path)
        _, ready = await p.get(p.base_url + "/readyz")  # not ready: the key endpoint fails
        secret_guard.check_body("/readyz", json.dumps(ready))
        keys.failures = 0
        await p.wait_http("/readyz", 30)
        keys.failures = 10**6
        async with aiohttp.ClientSession() as s:
            for i in range(6):
                body = event_body(f"sec-{i}", "FAILED")
                for sig in (sign(body, signing_key), "AAAA", None):  # accepted, 403 (+ failed refresh), 401
                    headers = {"X-ThunderStack-Signature": sig} if sig else {}
                    async with s.post(p.base_url + "/webhook", data=body, headers=headers) as r:
                        secret_guard.check_body(f"answer {r.status}", await r.text())
                await asyncio.sleep(0.3)
            await asyncio.sleep(4.0)  # retries, dead deliveries
            for path in ("/readyz", "/healthz"):
                async with s.get(p.admin_url + path) as r:
                    secret_guard.check_body(path, await r.text())
            async with s.get(p.admin_url + "/metrics") as r:
                metrics = await r.text()
            secret_guard.check_metrics("/metrics", metrics)
            labels = [v for f in text_string_to_metric_families(metrics) for smp in f.samples
                      for v in smp.labels.values()]
        counts = db_counts(db_path(p.cfg))
        assert await p.terminate() == 0
        listing = subprocess.run([sys.executable, "-m", "bridge", "deliveries", "list", "--json", "-c",
                                  str(p.config_path)], capture_output=True, text=True, cwd=ROOT, timeout=30)
        secret_guard.check_body("deliveries list --json", listing.stdout + listing.stderr)
        check = subprocess.run([sys.executable, "-m", "bridge", "check", "-c", str(p.config_path)],
                               capture_output=True, text=True, cwd=ROOT, timeout=30)
        secret_guard.check_body("check", check.stdout + check.stderr)
        errors = [d["last_error"] for d in json.loads(listing.stdout or "[]") if d.get("last_error")]

    # the Redis URL's password: not a SecretStr; Redis is down, so the bridge says why and exits
    redis_url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0"
    secret_guard.add_secrets(REDIS_PASSWORD)
    r = BridgeProcess(tmp_path / "redis-bridge", make_config(storage={"url": redis_url}), signing_key)
    secret_guard.watch_file(r.log_path)
    try:
        await r.start(wait_ready=False, timeout=20)
        redis_outcome = "started"
    except RuntimeError:
        redis_outcome = f"refused to start (exit {r.proc.returncode if r.proc else '?'})"
    finally:
        r.kill()
    rcheck = subprocess.run([sys.executable, "-m", "bridge", "check", "-c", str(r.config_path)],
                            capture_output=True, text=True, cwd=ROOT, timeout=30)
    secret_guard.check_body("redis check", rcheck.stdout + rcheck.stderr)

    record("secrets through every error path", tried="Slack URL and bot token, webhook URL/header/signing secret, "
           "SMTP password, key API token, Redis password; Slack 404/500 echoing its URL, invalid_auth, a proxy "
           "echoing the Authorization header in body and reason, SMTP 535 quoting the password, key endpoint "
           "down, Redis down; JSON debug logs", times=len(secrets) + 1,
           outcome=f"{len(p.log().splitlines())} log lines, {len(errors)} last_error values, {len(labels)} metric "
                   f"label values, CLI output and every answer searched: leaks are failures of this test "
                   f"(secret_guard); deliveries: {counts}; with Redis down the bridge {redis_outcome}",
           last_errors=errors[:10])
    assert any("invalid_auth" in e for e in errors), errors  # the error paths were really taken
    assert any("535" in e for e in errors) and any("400" in e for e in errors), errors


def test_the_secret_guard_can_fail() -> None:
    """The fixture the suite relies on notices a secret in a log line, a body and a metrics text."""
    guard = SecretGuard()
    guard.add_secrets("hunter2-s3cret")
    guard.check_lines("log", ["ok", "token=hunter2-s3cret leaked"])
    guard.check_body("body", b'{"detail": "hunter2-s3cret"}')
    guard.check_metrics("metrics", 'x{receiver="hunter2-s3cret"} 1')
    assert len(guard.leaks) == 3
    assert guard.finish("") == guard.leaks


# --- the admin API: CSRF defence and the bearer token (issue #11, item 8) ------------------------------

TOKEN = "tok-" + "3f9a" * 8
PROBE = {"node": "*", "ends_at": "9999-12-31T23:59:59Z"}


async def _admin(s: aiohttp.ClientSession, method: str, url: str, *, token: str | None = None,
                 **kwargs: Any) -> tuple[int, Any]:
    headers = {**kwargs.pop("headers", {}), **({"Authorization": f"Bearer {token}"} if token else {})}
    async with s.request(method, url, headers=headers, **kwargs) as r:
        return r.status, await r.json(content_type=None)


async def test_a_cross_site_post_cannot_silence_alerts(bridge_process: Callable[..., Any]) -> None:
    """The outside probe, exactly: a text/plain POST from a foreign page to /-/silences. No token is set."""
    p: BridgeProcess = await bridge_process(routes=[{"name": "all", "to": ["console"]}])
    url = p.admin_url + "/-/silences"
    async with aiohttp.ClientSession() as s:
        status, doc = await _admin(s, "POST", url, data=json.dumps(PROBE),
                                   headers={"Content-Type": "text/plain", "Origin": "https://evil.example"})
        assert status == 403 and doc["error"] == "foreign_origin"
        # a foreign Origin is refused whatever the content type; text/plain without an Origin too
        status, doc = await _admin(s, "POST", url, json={"node": "*", "duration": "1h"},
                                   headers={"Origin": "https://evil.example"})
        assert status == 403
        status, doc = await _admin(s, "POST", url, data=json.dumps({"node": "*", "duration": "1h"}),
                                   headers={"Content-Type": "text/plain"})
        assert status == 415 and doc["error"] == "unsupported_media_type"
        # DNS rebinding: a name other than localhost is foreign even when it equals the Host header
        host = p.cfg["server"]["admin_listen"]
        status, _ = await _admin(s, "POST", url, json={"node": "*", "duration": "1h"},
                                 headers={"Origin": f"http://rebound.example:{host.rpartition(':')[2]}",
                                          "Host": f"rebound.example:{host.rpartition(':')[2]}"})
        assert status == 403
        # reload, purge and retry want a JSON object too: a bare POST (what a form can send) does nothing
        for path in ("/-/reload", "/-/deliveries/purge-dead", "/-/deliveries/retry"):
            status, _ = await _admin(s, "POST", p.admin_url + path)
            assert status == 415, path
            status, _ = await _admin(s, "POST", p.admin_url + path, data="x",
                                     headers={"Content-Type": "application/json"})
            assert status == 400, path
        # the listener's own origin (a page it served) may call it
        status, doc = await _admin(s, "POST", p.admin_url + "/-/reload", json={},
                                   headers={"Origin": p.admin_url})
        assert status == 200 and doc["status"] == "reloaded"
        status, doc = await _admin(s, "GET", url)
        assert status == 200 and doc["silences"] == []
    # and the event after the probe is notified, not silenced
    status, doc = await p.event("n1", "FAILED")
    assert status == 200 and doc["status"] == "accepted" and doc["deliveries"] == 1 and "silenced" not in doc


async def test_dns_rebinding_cannot_read_an_admin_listener_without_a_token(
    bridge_process: Callable[..., Any],
) -> None:
    """A page at rebound.example:PORT resolving to 127.0.0.1 is same-origin to the browser, which then
    sends GETs without an Origin: with no admin token, only IP literals and localhost are answered."""
    p: BridgeProcess = await bridge_process(routes=[{"name": "all", "to": ["console"]}])
    port = p.cfg["server"]["admin_listen"].rpartition(":")[2]
    rebound = {"Host": f"rebound.example:{port}"}
    async with aiohttp.ClientSession() as s:
        for path in ("/-/silences", "/-/deliveries", "/fleet", "/config", "/"):
            async with s.get(p.admin_url + path, headers=rebound, allow_redirects=False) as r:
                body = await r.text()
                assert r.status == 403, (path, r.status, body)
                assert "admin_token" in body and "csrf" not in body, (path, body)
        async with s.post(p.admin_url + "/-/silences", json={"node": "*", "duration": "1h"},
                          headers=rebound) as r:
            assert r.status == 403 and (await r.json())["error"] == "foreign_host"
        # probes and a Prometheus scraping by name still work; so do IP literals and localhost
        for path in ("/healthz", "/readyz", "/metrics"):
            async with s.get(p.admin_url + path, headers=rebound) as r:
                assert r.status == 200, path
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "127.0.0.1"):
            async with s.get(p.admin_url + "/-/silences", headers={"Host": host}) as r:
                assert r.status == 200, host
    status, doc = await p.event("n1", "FAILED")
    assert status == 200 and doc["deliveries"] == 1 and "silenced" not in doc


async def test_admin_token_required_when_set(bridge_process: Callable[..., Any], tmp_path: Path) -> None:
    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN + "\n")
    p: BridgeProcess = await bridge_process(server={"admin_token_file": str(token_file)},
                                            routes=[{"name": "all", "to": ["console"]}])
    a = p.admin_url
    async with aiohttp.ClientSession() as s:
        for method, path, body in [("GET", "/-/silences", None), ("GET", "/metrics", None),
                                   ("GET", "/-/deliveries", None), ("POST", "/-/reload", {}),
                                   ("POST", "/-/silences", PROBE), ("GET", "/nowhere", None)]:
            for token in (None, "wrong-" + TOKEN, TOKEN + "x"):
                status, doc = await _admin(s, method, a + path, token=token, json=body)
                assert status == 401 and doc["error"] == "unauthorized", (method, path, token)
        for path in ("/healthz", "/readyz"):  # probes need no token
            assert (await _admin(s, "GET", a + path))[0] == 200
        status, _ = await _admin(s, "GET", a + "/-/silences", token=TOKEN)
        assert status == 200
        async with s.get(a + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 200 and "alert_bridge_events_total" in await r.text()
        # the token does not make a foreign origin acceptable
        status, _ = await _admin(s, "POST", a + "/-/silences", token=TOKEN, json=PROBE,
                                 headers={"Origin": "https://evil.example"})
        assert status == 403
        status, _ = await _admin(s, "POST", a + "/-/reload", token=TOKEN, json={})
        assert status == 200
    status, doc = await p.event("n1", "FAILED")
    assert doc["deliveries"] == 1 and "silenced" not in doc
    assert TOKEN not in p.log()


async def test_metrics_public_leaves_only_metrics_open(bridge_process: Callable[..., Any]) -> None:
    p: BridgeProcess = await bridge_process(server={"admin_token": TOKEN, "metrics_public": True})
    async with aiohttp.ClientSession() as s:
        async with s.get(p.admin_url + "/metrics") as r:
            assert r.status == 200
        assert (await _admin(s, "GET", p.admin_url + "/-/silences"))[0] == 401


async def test_cli_commands_send_the_token(bridge_process: Callable[..., Any],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support.cli_runner import run_cli

    # As the deploy files do: the token comes from a Secret through the environment.
    monkeypatch.setenv("ALERT_BRIDGE_ADMIN_TOKEN", TOKEN)
    p: BridgeProcess = await bridge_process(server={"admin_token": "${ALERT_BRIDGE_ADMIN_TOKEN}"},
                                            routes=[{"name": "all", "to": ["console"]}])
    c = str(p.config_path)
    r = await run_cli("silence", "add", "-c", c, "--node", "db-*", "--for", "1h", "--comment", "swap")
    assert r.code == 0 and "the running bridge" in r.err, r
    r = await run_cli("silence", "list", "-c", c, "--json")
    assert r.code == 0 and json.loads(r.out)[0]["node"] == "db-*", r
    r = await run_cli("silence", "expire", "-c", c, json.loads(r.out)[0]["id"])
    assert r.code == 0, r
    r = await run_cli("deliveries", "list", "-c", c)
    assert r.code == 0 and "0 deliveries" in r.err, r
    r = await run_cli("deliveries", "purge", "-c", c, "--dead")
    assert r.code == 0 and "0 dead deliveries purged" in r.out, r
    r = await run_cli("reload", "-c", c)
    assert r.code == 0 and "reloaded" in r.out, r
    # a config with another token: the CLI says what is missing and does not open the store behind it
    r = await run_cli("silence", "list", "-c", c, env={"ALERT_BRIDGE_ADMIN_TOKEN": "x" * 20})
    assert r.code == 1 and "wants a token" in r.err, r
    r = await run_cli("reload", "-c", c, env={"ALERT_BRIDGE_ADMIN_TOKEN": "x" * 20})
    assert r.code == 1 and "wants a token" in r.err, r
    assert TOKEN not in p.log() and TOKEN not in r.err


async def test_an_exposed_admin_listener_without_a_token_is_warned_about(bridge_process: Callable[..., Any]) -> None:
    p: BridgeProcess = await bridge_process(server={"admin_listen": f"0.0.0.0:{free_port()}"},
                                            storage={"url": "memory://"})
    assert "has no server.admin_token" in p.log()
    q: BridgeProcess = await bridge_process(server={"admin_token": TOKEN, "admin_listen": f"0.0.0.0:{free_port()}"},
                                            storage={"url": "memory://"})
    assert "has no server.admin_token" not in q.log()
    r: BridgeProcess = await bridge_process(storage={"url": "memory://"})  # loopback: no warning
    assert "has no server.admin_token" not in r.log()
