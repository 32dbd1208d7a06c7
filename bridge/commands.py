"""Operator commands beyond serve/check/route/send-test/deliveries.

``silence add|list|expire``, ``keygen``, ``emit``, ``demo`` and ``healthcheck``.

Silences and a running bridge
-----------------------------
Silences live in storage, so every replica sharing a Redis store sees them. The bridge owns
its SQLite file (an exclusive lock per process) and a ``memory://`` store exists only inside
the bridge, so the silence commands first ask the running bridge's admin listener
(``server.admin_listen``; ``POST/GET /-/silences``, ``POST /-/silences/{id}/expire``). A silence
made that way is in force at once. When nothing answers there (the bridge is stopped), they
open the configured store directly, and a bridge started later reads the silences from it;
running replicas on Redis re-read them within two seconds. ``--via admin|storage`` forces one
way, ``--admin-url`` names another admin listener (a port-forward, another host).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import yaml
from pydantic import ValidationError

from bridge import __version__
from bridge import config as config_mod
from bridge.adminclient import AdminClient, detail, through_bridge_or_store
from bridge.config import Config, ServerConfig, split_host_port
from bridge.errors import CommandError
from bridge.model import KNOWN_STATUSES, Silence, parse_timestamp
from bridge.verify import SIGNATURE_HEADER


def _unverified_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


CONFIG_ENV = "ALERT_BRIDGE_CONFIG"
DEFAULT_CONFIG = Path("/etc/alert-bridge/config.yaml")

EXAMPLES = {
    "serve": "example:\n  alert-bridge serve -c /etc/alert-bridge/config.yaml",
    "check": "examples:\n  alert-bridge check -c config.yaml\n  ALERT_BRIDGE_CONFIG=config.yaml alert-bridge check",
    "reload": "example:\n  alert-bridge reload -c /etc/alert-bridge/config.yaml",
    "route": "examples:\n  alert-bridge route -c config.yaml --node node-prod-1 --status FAILED\n"
             "  alert-bridge route -c config.yaml --node n1 --status RUNNING --previous-status FAILED --json",
    "send-test": "example:\n  alert-bridge send-test -c config.yaml --receiver oncall-slack",
    "deliveries": "examples:\n  alert-bridge deliveries list -c config.yaml --state dead\n"
                  "  alert-bridge deliveries retry -c config.yaml --dead",
    "deliveries list": "examples:\n  alert-bridge deliveries list -c config.yaml\n"
                       "  alert-bridge deliveries list -c config.yaml --state pending --json",
    "deliveries retry": "examples:\n  alert-bridge deliveries retry -c config.yaml dlv_0123456789abcdef01234567\n"
                        "  alert-bridge deliveries retry -c config.yaml --dead",
    "deliveries purge": "example:\n  alert-bridge deliveries purge -c config.yaml --dead",
    "silence": "examples:\n  alert-bridge silence add -c config.yaml --node 'db-*' --for 2h --comment upgrade\n"
               "  alert-bridge silence list -c config.yaml",
    "silence add": "examples:\n  alert-bridge silence add -c config.yaml --node 'db-*' --for 2h --comment upgrade\n"
                   "  alert-bridge silence add -c config.yaml --node n1 --status FAILED "
                   "--until 2026-05-01T06:00:00Z --comment move",
    "silence list": "examples:\n  alert-bridge silence list -c config.yaml\n"
                    "  alert-bridge silence list -c config.yaml --all --json",
    "silence expire": "example:\n  alert-bridge silence expire -c config.yaml sil_0123456789abcdef",
    "keygen": "example:\n  alert-bridge keygen --out keys",
    "emit": "example:\n  alert-bridge emit --private-key keys/private.pem --node n1 --status FAILED",
    "demo": "example:\n  alert-bridge demo",
    "healthcheck": "examples:\n  alert-bridge healthcheck -c /etc/alert-bridge/config.yaml\n"
                   "  alert-bridge healthcheck --port 8080 --path /healthz",
}


def add_config_argument(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``-c``: required unless $ALERT_BRIDGE_CONFIG is set or /etc/alert-bridge/config.yaml exists."""
    default = os.environ.get(CONFIG_ENV) or (str(DEFAULT_CONFIG) if DEFAULT_CONFIG.is_file() else None)
    sp.add_argument("-c", "--config", required=default is None, default=default,
                    help=f"YAML config file (default: ${CONFIG_ENV}, else {DEFAULT_CONFIG} when it exists)")
    return sp


def add_via_arguments(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
    sp.add_argument("--via", choices=["auto", "admin", "storage"], default="auto",
                    help="auto (default): the running bridge's admin API if it answers, else the store")
    sp.add_argument("--admin-url", help="admin listener to use (default: from server.admin_listen)")
    return sp


def register(sub: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add this module's subcommands to the ``alert-bridge`` parser (``command`` makes one with examples)."""
    _register_silence(sub, command)

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


def _fail(exc: CommandError) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return exc.code


# --- silence -------------------------------------------------------------------------------------


def _register_silence(sub: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    p = command(sub, "silence", "maintenance windows: matching events are recorded, not notified")
    ssub = p.add_subparsers(dest="action", required=True)

    def common(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        return add_via_arguments(add_config_argument(sp))

    s = common(command(ssub, "add", "silence a node glob (optionally only some statuses); prints the id",
                       "silence add"))
    s.add_argument("--node", required=True, help="node id or glob, e.g. 'node-prod-*'")
    s.add_argument("--status", action="extend", nargs="+", metavar="S",
                   help="only these statuses (default: any), e.g. --status FAILED PAUSED")
    until = s.add_mutually_exclusive_group(required=True)
    until.add_argument("--for", dest="duration", help="how long, e.g. 30m, 2h, 1d")
    until.add_argument("--until", dest="ends_at", help="end time, ISO-8601 with a zone")
    s.add_argument("--starts-at", help="start time, ISO-8601 with a zone (default: now)")
    s.add_argument("--comment", required=True, help="why (shown by silence list)")
    s.set_defaults(fn=cmd_silence)

    s = common(command(ssub, "list", "silences in force or starting later (--all: expired too)", "silence list"))
    s.add_argument("--all", action="store_true", help="include expired silences")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_silence)

    s = common(command(ssub, "expire", "end a silence now", "silence expire"))
    s.add_argument("id")
    s.set_defaults(fn=cmd_silence)


class SilenceBackend(Protocol):
    where: str

    async def add(self, spec: Mapping[str, Any]) -> Silence: ...

    async def list(self, *, include_expired: bool) -> list[Silence]: ...

    async def expire(self, silence_id: str) -> bool: ...


class AdminSilences:
    """The running bridge's admin API."""

    def __init__(self, admin: AdminClient) -> None:
        self.where = admin.where
        self._admin = admin

    async def add(self, spec: Mapping[str, Any]) -> Silence:
        status, doc = await self._admin.call("POST", "/-/silences", dict(spec))
        if status in (400, 422):
            raise ValueError(detail(status, doc))
        if status != 201 or not isinstance(doc, dict):
            raise CommandError(f"admin API answered {detail(status, doc)}")
        return Silence.from_dict(doc["silence"])

    async def list(self, *, include_expired: bool) -> list[Silence]:
        doc = await self._admin.expect("GET", "/-/silences" + ("?all=1" if include_expired else ""))
        return [Silence.from_dict(d) for d in doc["silences"]]

    async def expire(self, silence_id: str) -> bool:
        status, doc = await self._admin.call("POST", f"/-/silences/{quote(silence_id, safe='')}/expire")
        if status == 404:
            return False
        if status != 200:
            raise CommandError(f"admin API answered {detail(status, doc)}")
        return True


class StoreSilences:
    """The configured store, opened by this process (the bridge is not running)."""

    def __init__(self, store: Any, where: str) -> None:
        self._store = store
        self.where = where

    async def add(self, spec: Mapping[str, Any]) -> Silence:
        from bridge.silences import silence_from_spec

        silence = silence_from_spec(spec, now=datetime.now(UTC))
        await self._store.add_silence(silence)
        return silence

    async def list(self, *, include_expired: bool) -> list[Silence]:
        result: list[Silence] = await self._store.list_silences(now=datetime.now(UTC),
                                                                 include_expired=include_expired)
        return result

    async def expire(self, silence_id: str) -> bool:
        found: bool = await self._store.expire_silence(silence_id, now=datetime.now(UTC))
        return found


async def _with_silences(args: argparse.Namespace, cfg: Config,
                         fn: Callable[[SilenceBackend], Awaitable[int]]) -> int:
    async def on_admin(admin: AdminClient) -> int:
        return await fn(AdminSilences(admin))

    async def on_store(store: Any, where: str) -> int:
        return await fn(StoreSilences(store, where))

    return await through_bridge_or_store(cfg, via=args.via, admin_url=args.admin_url,
                                         on_admin=on_admin, on_store=on_store)


def _spec(args: argparse.Namespace) -> dict[str, Any]:
    spec: dict[str, Any] = {"node": args.node, "comment": args.comment}
    if args.status:
        spec["status"] = [s.upper() for s in args.status]
    if args.duration is not None:
        spec["duration"] = args.duration
    if args.ends_at is not None:
        spec["ends_at"] = args.ends_at
    if args.starts_at is not None:
        spec["starts_at"] = args.starts_at
    return spec


def _when(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _state(starts_at: datetime | None, ends_at: datetime, now: datetime) -> str:
    def aware(dt: datetime) -> datetime:
        return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt

    if now >= aware(ends_at):
        return "expired"
    if starts_at is not None and now < aware(starts_at):
        return "pending"
    return "active"


def _silence_rows(stored: Sequence[Silence], cfg: Config, include_expired: bool) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    rows = [{**s.to_dict(), "source": "storage", "state": _state(s.starts_at, s.ends_at, now)} for s in stored]
    for i, c in enumerate(cfg.silences):
        state = _state(c.starts_at, c.ends_at, now)
        if state == "expired" and not include_expired:
            continue
        rows.append({
            "id": f"config:silences[{i}]", "node": c.node, "status": c.status,
            "starts_at": c.starts_at.isoformat() if c.starts_at else None, "ends_at": c.ends_at.isoformat(),
            "comment": c.comment, "created_at": None, "source": "config", "state": state,
        })
    return rows


def cmd_silence(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config)

    async def add(backend: SilenceBackend) -> int:
        for status in args.status or []:
            if status.upper() not in KNOWN_STATUSES:
                print(f"warning: {status!r} is not a known status ({', '.join(sorted(KNOWN_STATUSES))})",
                      file=sys.stderr)
        silence = await backend.add(_spec(args))
        print(silence.id)
        print(f"silenced node {silence.node} status {','.join(silence.status) if silence.status else 'any'} "
              f"from {_when(silence.starts_at)} until {_when(silence.ends_at)} in {backend.where}", file=sys.stderr)
        return 0

    async def list_(backend: SilenceBackend) -> int:
        stored = await backend.list(include_expired=args.all)
        rows = _silence_rows(stored, cfg, args.all)
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        print(f"{'ID':26} {'STATE':8} {'NODE':20} {'STATUS':16} {'STARTS':21} {'ENDS':21} COMMENT")
        for r in rows:
            starts = _when(parse_timestamp(r["starts_at"])) if r["starts_at"] else "-"
            print(f"{r['id']:26} {r['state']:8} {r['node']:20} {','.join(r['status'] or ['any']):16} "
                  f"{starts:21} {_when(parse_timestamp(r['ends_at'])):21} {r['comment']}")
        print(f"{len(rows)} silences (from {backend.where} and the config)", file=sys.stderr)
        return 0

    async def expire(backend: SilenceBackend) -> int:
        if args.id.startswith("config:"):
            raise CommandError("a silence from the config file ends when you remove it there and reload", 2)
        if not await backend.expire(args.id):
            raise CommandError(f"no silence {args.id} in {backend.where}")
        print(f"expired {args.id}")
        return 0

    action = {"add": add, "list": list_, "expire": expire}[args.action]
    try:
        return asyncio.run(_with_silences(args, cfg, action))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except CommandError as exc:
        return _fail(exc)


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


def server_section(path: str) -> ServerConfig:
    """Only ``server:`` of a config file, read leniently: a mistake elsewhere in the file must not stop a
    probe of (or a reload for) a bridge still running its last good config."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        problems: list[str] = []
        section = config_mod.interpolate(raw.get("server") or {}, os.environ, ("server",), problems)
        if problems:
            raise CommandError(f"cannot read server: from {path}: {problems[0]}")
        return ServerConfig.model_validate(section)
    except (OSError, yaml.YAMLError, ValidationError, AttributeError) as exc:
        raise CommandError(f"cannot read server: from {path}: {type(exc).__name__}") from None


def _health_base(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url)
    if args.config:
        server = server_section(args.config)
        host, port = split_host_port(server.listen)
        scheme = "https" if server.tls else "http"
        if host in ("0.0.0.0", "", "::"):
            host = "127.0.0.1"
        return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"
    return f"http://127.0.0.1:{args.port or 8080}"


def cmd_healthcheck(args: argparse.Namespace) -> int:
    try:
        base = _health_base(args)
    except CommandError as exc:
        return _fail(exc)
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
    return asyncio.run(_demo(verbose=args.verbose, out=sys.stdout))


async def _demo(*, verbose: bool, out: Any, timeout: float = 10.0) -> int:
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
    print("next: alert-bridge keygen --out keys; alert-bridge serve -c config.example.yaml; "
          "alert-bridge emit --private-key examples/dev-keys/private.pem --node node-prod-1 --status FAILED",
          file=out)
    if len(printer.alerts) < 2:
        print("error: the demo expected 2 alerts (failed, recovered)", file=sys.stderr)
        return 1
    with contextlib.suppress(Exception):
        out.flush()
    return 0
