"""Command line: serve | check | route | send-test | deliveries | silence | keygen | emit | demo | healthcheck.

Exit status: 0 success, 1 the operation failed (e.g. a test alert did not arrive), 2 bad
config or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from bridge import __version__, commands, logs
from bridge import config as config_mod
from bridge.config import Config, format_duration
from bridge.errors import BridgeError, ConfigError, DeliveryError, Unavailable
from bridge.model import Event, NodeState

log = logging.getLogger("bridge.cli")


def _load(path: str) -> Config:
    return config_mod.load(path)


def _print_config_errors(exc: ConfigError) -> int:
    for problem in exc.problems:
        print(f"error: {problem}", file=sys.stderr)
    return 2


# --- serve ---------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    logs.setup(cfg.log, cfg)
    for warning in cfg.warnings:
        log.warning("config: %s", warning)
    return asyncio.run(_serve(cfg, args.config))


async def _serve(cfg: Config, path: str) -> int:
    from bridge.app import App

    app = App(cfg, config_path=path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)

    reloads: set[asyncio.Task[list[str]]] = set()

    def on_hup() -> None:
        task = asyncio.create_task(app.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    try:
        await app.start()
    except (BridgeError, OSError) as exc:
        log.error("cannot start: %s", getattr(exc, "detail", None) or exc)
        await app.stop()
        return 1
    await stop.wait()
    log.info("shutting down")
    await app.stop()
    return 0


# --- check ---------------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    from bridge.app import validate

    cfg = _load(args.config)
    rules = validate(cfg)
    for warning in (*cfg.warnings, *rules.router.warnings):
        print(f"warning: {warning}", file=sys.stderr)
    v = cfg.verification
    key = (
        "inline public_key" if v.public_key else f"public_key_file {v.public_key_file}"
        if v.public_key_file else f"public_key_url {v.public_key_url}"
    )
    print(f"config {cfg.source} is valid")
    print(f"  listen        {cfg.server.listen}{cfg.server.path} (admin {cfg.server.admin_listen})")
    print(f"  key           {key}")
    print(f"  storage       {cfg.storage.url.split('@')[-1]}")  # never print redis credentials
    print(f"  nodes         {'any' if cfg.nodes is None else len(cfg.nodes)}")
    print(f"  receivers     {', '.join(f'{n} ({r.type})' for n, r in cfg.receivers.items()) or 'none'}")
    print(f"  routes        {len(rules.router)}; default_to: {', '.join(cfg.default_to) or 'none'}")
    print(f"  replay window max_event_age {format_duration(v.max_event_age)}, "
          f"dedup_ttl {format_duration(cfg.storage.dedup_ttl)}")
    return 0


# --- route ---------------------------------------------------------------------------------------


def cmd_route(args: argparse.Namespace) -> int:
    from bridge.app import validate
    from bridge.decide import select_deliveries
    from bridge.routing import explain

    cfg = _load(args.config)
    rules = validate(cfg)
    labels = (cfg.nodes or {}).get(args.node)
    if cfg.nodes is not None and labels is None:
        print(f"note: node {args.node!r} is not in nodes: (the bridge would refuse it with 403)")
    now = datetime.now(UTC)
    event = Event(args.event_type, now, args.node, args.status, {"nodeId": args.node, "status": args.status},
                  labels.labels if labels else {}, now)
    prev = NodeState(args.node, args.previous_status, now, now, "evt_prev") if args.previous_status else None
    for name, matched, why in explain(rules.router, event, prev):
        print(f"  {'MATCH' if matched else '     '} {name}" + (f"  ({why})" if why else ""))
    matches = rules.router.match(event, prev)
    pairs, _ = select_deliveries(matches, {}, now.timestamp())
    if pairs:
        print("notified: " + ", ".join(f"{rcv} (via {route})" for route, rcv in pairs))
    else:
        print("notified: nobody (the event would only be recorded)")
    return 0


# --- send-test -----------------------------------------------------------------------------------


def cmd_send_test(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    if args.receiver not in cfg.receivers:
        print(f"error: no receiver named {args.receiver!r}; configured: {', '.join(cfg.receivers)}", file=sys.stderr)
        return 2
    logs.setup(cfg.log, cfg)
    return asyncio.run(_send_test(cfg, args))


async def _send_test(cfg: Config, args: argparse.Namespace) -> int:
    import aiohttp

    from bridge.model import Alert, delivery_id
    from bridge.receivers import build_receiver
    from bridge.render import Renderer

    now = datetime.now(UTC)
    labels = (cfg.nodes or {}).get(args.node)
    event = Event("NODE_STATUS_UPDATED", now, args.node, args.status, {"nodeId": args.node, "status": args.status},
                  labels.labels if labels else {}, now)
    alert = Alert(event, "send-test", args.receiver, delivery_id(event.id, args.receiver),
                  args.previous_status, now if args.previous_status else None)
    async with aiohttp.ClientSession() as session:
        receiver = build_receiver(args.receiver, cfg.receivers[args.receiver],
                                  renderer=Renderer.from_config(cfg), session=session)
        try:
            await receiver.send(alert)
        except DeliveryError as exc:
            kind = "temporary" if type(exc).__name__ == "RetryLater" else "permanent"
            print(f"FAILED ({kind}): {exc.reason}", file=sys.stderr)
            return 1
        finally:
            await receiver.close()
    print(f"sent: a test alert for {args.node} {args.status} was accepted by receiver {args.receiver!r}")
    return 0


# --- deliveries ----------------------------------------------------------------------------------


async def _with_store(cfg: Config, fn: Callable[[Any], Any]) -> Any:
    from bridge.store import open_store

    store = open_store(cfg.storage.url)
    await store.open()
    try:
        return await fn(store)
    finally:
        await store.close()


def cmd_deliveries(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    if args.action == "retry" and not args.ids and not args.dead:
        print("error: name delivery ids or --dead", file=sys.stderr)
        return 2
    result = asyncio.run(_deliveries(cfg, args))
    if args.action == "list":
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            for d in result:
                print(f"{d['id']}  {d['state']:8} {d['receiver']:16} {d['node']:20} {d['status']:10} "
                      f"attempts={d['attempts']} {d['last_error'] or ''}")
            print(f"{len(result)} deliveries", file=sys.stderr)
    elif args.action == "retry":
        print(f"{result} deliveries queued again")
    else:
        print(f"{result} dead deliveries purged")
    return 0


async def _deliveries(cfg: Config, args: argparse.Namespace) -> Any:
    """The running bridge's admin API when it answers (SQLite admits one process), else the store."""
    import aiohttp

    from bridge.commands import admin_base_url

    base = admin_base_url(cfg)
    if base is not None:
        if args.action == "list":
            state = f"&state={args.state}" if args.state else ""
            method, path, body, key = "GET", f"/-/deliveries?limit={args.limit}{state}", None, "deliveries"
        elif args.action == "retry":
            body = {"dead": True} if args.dead else {"ids": args.ids}
            method, path, key = "POST", "/-/deliveries/retry", "retried"
        else:
            method, path, body, key = "POST", "/-/deliveries/purge-dead", None, "purged"
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session, \
                    session.request(method, base + path, json=body) as resp:
                doc = await resp.json(content_type=None)
                if resp.status == 200 and isinstance(doc, dict) and key in doc:
                    return doc[key]
                detail = doc.get("detail") if isinstance(doc, dict) else None
                raise Unavailable(f"admin API at {base} answered {resp.status}: {detail or 'unexpected answer'}")
        except (aiohttp.ClientConnectionError, TimeoutError):
            pass  # no bridge running: open the store ourselves
        except ValueError:
            raise Unavailable(f"admin API at {base} answered something that is not JSON") from None

    async def on_store(store: Any) -> Any:
        if args.action == "list":
            return [d.summary() for d in await store.list_deliveries(state=args.state, limit=args.limit)]
        if args.action == "retry":
            return await store.retry_deliveries(None if args.dead else args.ids, now=datetime.now(UTC))
        return await store.purge_dead()

    return await _with_store(cfg, on_store)


# --- parser --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alert-bridge", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--version", action="version", version=f"alert-bridge {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("-c", "--config", required=True, help="YAML config file")
        return sp

    s = with_config(sub.add_parser("serve", help="run the bridge"))
    s.set_defaults(fn=cmd_serve)
    s = with_config(sub.add_parser("check", help="validate the config and print a summary"))
    s.set_defaults(fn=cmd_check)

    s = with_config(sub.add_parser("route", help="show which routes and receivers an event would reach"))
    s.add_argument("--node", required=True)
    s.add_argument("--status", required=True)
    s.add_argument("--previous-status")
    s.add_argument("--event-type", default="NODE_STATUS_UPDATED")
    s.set_defaults(fn=cmd_route)

    s = with_config(sub.add_parser("send-test", help="send a sample alert through one receiver"))
    s.add_argument("--receiver", required=True)
    s.add_argument("--node", default="test-node")
    s.add_argument("--status", default="FAILED")
    s.add_argument("--previous-status", default="RUNNING")
    s.set_defaults(fn=cmd_send_test)

    d = sub.add_parser("deliveries", help="inspect and operate the outbox")
    dsub = d.add_subparsers(dest="action", required=True)
    s = with_config(dsub.add_parser("list"))
    s.add_argument("--state", choices=["pending", "inflight", "done", "dead"])
    s.add_argument("--limit", type=int, default=100)
    s.add_argument("--json", action="store_true")
    s = with_config(dsub.add_parser("retry"))
    s.add_argument("ids", nargs="*")
    s.add_argument("--dead", action="store_true", help="every dead delivery")
    s = with_config(dsub.add_parser("purge"))
    s.add_argument("--dead", action="store_true", required=True)
    d.set_defaults(fn=cmd_deliveries)

    commands.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except ConfigError as exc:
        return _print_config_errors(exc)
    except Unavailable as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130

