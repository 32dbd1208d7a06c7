"""``alert-bridge keygen``, ``emit``, ``demo`` and ``healthcheck``: commands that need no config."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bridge import __version__
from bridge import config as config_mod
from bridge.commands.common import fail, server_section
from bridge.errors import CommandError


def _unverified_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx

def register(sub: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    """keygen, emit, demo, healthcheck."""
    s = command(sub, "keygen", "write a key pair for local trials (private.pem, public.pem)")
    s.add_argument("--out", required=True, help="directory to write private.pem (0600) and public.pem into")
    s.add_argument("--force", action="store_true", help="overwrite an existing key pair")
    s.set_defaults(fn=cmd_keygen)

    s = command(sub, "emit", "sign and post an event exactly as ThunderStack does")
    s.add_argument("--private-key", required=True, help="PEM private key (see keygen)")
    s.add_argument("--url", default="http://127.0.0.1:8080/webhook", help="the bridge's webhook URL")
    s.add_argument("--node", required=True, help="nodeId")
    s.add_argument("--status", required=True, help="e.g. FAILED, RUNNING")
    s.add_argument("--timestamp", help="eventTimestamp, sent as written (default: now, e.g. 2026-04-16T12:00:00.000Z)")
    s.add_argument("--event-type", default="NODE_STATUS_UPDATED")
    s.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    s.add_argument("--insecure", action="store_true", help="do not verify the bridge's TLS certificate")
    s.set_defaults(fn=cmd_emit)

    s = command(sub, "demo", "the whole flow in one command: a node fails and recovers, alerts print")
    s.add_argument("-v", "--verbose", action="store_true", help="also show the bridge's own log lines")
    s.set_defaults(fn=cmd_demo)

    s = command(sub, "healthcheck", "exit 0 when the local bridge answers /readyz with 200 (for HEALTHCHECK)")
    src = s.add_mutually_exclusive_group()
    src.add_argument("-c", "--config", help="take the port from this config's server.listen")
    src.add_argument("--port", type=int, help="webhook port on 127.0.0.1 (default 8080)")
    src.add_argument("--url", help="the full URL to probe")
    s.add_argument("--path", default="/readyz", help="/readyz (default) or /healthz")
    s.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    s.set_defaults(fn=cmd_healthcheck)



# --- keygen --------------------------------------------------------------------------------------


def cmd_keygen(args: argparse.Namespace) -> int:
    from bridge.testing import write_keypair

    out = Path(args.out)
    if (out / "private.pem").exists() and not args.force:
        print(f"error: {out / 'private.pem'} exists; pass --force to replace the key pair", file=sys.stderr)
        return 2
    try:
        priv, pub = write_keypair(out)
    except OSError as exc:
        print(f"error: cannot write to {out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"private key {priv} (mode 0600: signs events, keep it to yourself)")
    print(f"public key  {pub}")
    print("trust it in the config:  verification: {public_key_file: " + str(pub) + "}")
    print(f"send an event:           alert-bridge emit --private-key {priv} --node n1 --status FAILED")
    return 0


# --- emit ----------------------------------------------------------------------------------------


def post_signed(url: str, body: bytes, signature: str, *, timeout: float = 10.0,
                insecure: bool = False) -> tuple[int, Any]:
    """POST like ThunderStack: the raw JSON body and its signature header. (status, parsed answer)."""
    from bridge.verify import SIGNATURE_HEADER

    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json",
        SIGNATURE_HEADER: signature,
        "User-Agent": f"alert-bridge-emit/{__version__}",
    })
    ctx = _unverified_tls() if insecure else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=ctx) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def cmd_emit(args: argparse.Namespace) -> int:
    from bridge.testing import event_body, load_private_key, sign

    try:
        key = load_private_key(Path(args.private_key))
    except (OSError, ValueError) as exc:
        print(f"error: cannot load {args.private_key}: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
        return 2
    body = event_body(args.node, args.status, timestamp=args.timestamp, event_type=args.event_type)
    try:
        status, doc = post_signed(args.url, body, sign(body, key), timeout=args.timeout, insecure=args.insecure)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        print(f"error: cannot post to {args.url}: {reason}", file=sys.stderr)
        return 1
    print(f"HTTP {status}")
    print(json.dumps(doc) if not isinstance(doc, str) else doc)
    return 0 if 200 <= status < 300 else 1


# --- healthcheck ---------------------------------------------------------------------------------

def _health_base(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url)
    if args.config:
        from bridge.config.server import local_url

        server = server_section(args.config)
        url = local_url(server.listen, scheme="https" if server.tls else "http")
        if url is None:
            raise CommandError("server.listen has port 0; pass --url", 2)
        return url
    return f"http://127.0.0.1:{args.port or 8080}"


def cmd_healthcheck(args: argparse.Namespace) -> int:
    try:
        base = _health_base(args)
    except CommandError as exc:
        return fail(exc)
    url = base if args.url else base + args.path
    # Loopback probe of our own listener: a self-signed certificate is fine here.
    ctx = _unverified_tls() if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(url, timeout=args.timeout, context=ctx) as resp:
            status, body = resp.status, resp.read(512)
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read(512)
    except (urllib.error.URLError, OSError) as exc:
        print(f"unhealthy: {url}: {getattr(exc, 'reason', None) or exc}")
        return 1
    text = body.decode("utf-8", "replace").strip()
    print(f"{'healthy' if status == 200 else 'unhealthy'}: {url} answered {status} {text}")
    return 0 if status == 200 else 1


# --- demo ----------------------------------------------------------------------------------------


class _AlertPrinter(logging.Handler):
    """Collects what the demo's log receiver ("console") emits."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.alerts: list[tuple[str, dict[str, Any]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        alert = getattr(record, "alert", None)
        if isinstance(alert, dict):
            self.alerts.append((record.getMessage(), alert))

    def print(self, out: Any) -> None:
        for line, alert in self.alerts:
            print(f"  [{alert.get('receiver')}] {line}", file=out)
            print(f"      node={alert.get('node')} labels={json.dumps(alert.get('labels'))} "
                  f"event={alert.get('event_id')} delivery={alert.get('delivery_id')}", file=out)


def cmd_demo(args: argparse.Namespace) -> int:
    import asyncio

    return asyncio.run(_demo(verbose=args.verbose, out=sys.stdout))


async def _demo(*, verbose: bool, out: Any, timeout: float = 10.0) -> int:
    import asyncio

    from bridge import logs
    from bridge.app import App
    from bridge.testing import event_body, generate_key, public_pem, sign

    started = time.monotonic()
    key = generate_key()
    node = "demo-node-1"
    cfg = config_mod.parse({
        "server": {"listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0", "shutdown_grace": "2s"},
        "verification": {"public_key": public_pem(key).decode()},
        "nodes": {node: {"labels": {"env": "demo", "team": "you"}}},
        "storage": {"url": "memory://"},
        "delivery": {"poll_interval": "100ms", "shutdown_grace": "2s"},
        "receivers": {"console": {"type": "log"}},
        "routes": [
            {"name": "failures", "match": {"status": ["FAILED"]}, "to": ["console"]},
            {"name": "recoveries", "match": {"status": ["RUNNING"], "previous_status": ["FAILED"]},
             "to": ["console"]},
        ],
        "log": {"level": "info" if verbose else "error"},
    }, env={}, source="<demo>")
    logs.setup(cfg.log, cfg, stream=sys.stderr)
    alerts_log = logging.getLogger("bridge.alerts")
    printer = _AlertPrinter()
    saved = (alerts_log.level, alerts_log.propagate)
    alerts_log.addHandler(printer)
    alerts_log.setLevel(logging.INFO)
    alerts_log.propagate = verbose

    app = App(cfg)
    print("alert-bridge demo: a throw-away signing key, memory storage, a log receiver named 'console'", file=out)
    try:
        await app.start()
        url = f"http://127.0.0.1:{app.webhook_port}{cfg.server.path}"
        print(f"bridge listening on {url} (admin on 127.0.0.1:{app.admin_port})\n", file=out)
        print("ThunderStack would send (signed with the throw-away key):", file=out)
        now = datetime.now(UTC).replace(microsecond=0)
        failed = event_body(node, "FAILED", timestamp=now - timedelta(minutes=2))
        steps = [
            ("RUNNING", event_body(node, "RUNNING", timestamp=now - timedelta(minutes=5)), "first news of the node"),
            ("FAILED", failed, "the node fails"),
            ("FAILED", failed, "ThunderStack retries the same event"),
            ("RUNNING", event_body(node, "RUNNING", timestamp=now - timedelta(seconds=30)), "the node recovers"),
        ]
        answers = []
        for status, body, what in steps:
            code, doc = await asyncio.to_thread(post_signed, url, body, sign(body, key), timeout=5.0)
            answers.append(doc)
            print(f"  {node} {status:8} {what:38} -> HTTP {code} {json.dumps(doc)}", file=out)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stats = await app.store.stats(now=datetime.now(UTC))
            if len(printer.alerts) >= 2 and stats.pending == 0 and stats.inflight == 0:
                break
            await asyncio.sleep(0.05)
        print("\nalerts on the console receiver:", file=out)
        printer.print(out)
    finally:
        await app.stop()
        alerts_log.removeHandler(printer)
        alerts_log.setLevel(saved[0])
        alerts_log.propagate = saved[1]
    duplicates = sum(1 for a in answers if isinstance(a, dict) and a.get("status") == "duplicate")
    print(f"\n{len(printer.alerts)} alerts delivered, {duplicates} duplicate recorded once and not notified "
          f"again ({time.monotonic() - started:.1f}s).", file=out)
    # The example config trusts examples/dev-keys/public.pem: emit signs with its private half.
    print("next: alert-bridge serve -c config.example.yaml, then in another terminal: "
          "alert-bridge emit --private-key examples/dev-keys/private.pem --url http://127.0.0.1:8080/webhook "
          "--node node-prod-1 --status FAILED", file=out)
    if len(printer.alerts) < 2:
        print("error: the demo expected 2 alerts (failed, recovered)", file=sys.stderr)
        return 1
    with contextlib.suppress(Exception):
        out.flush()
    return 0
