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
from bridge.adminclient import AdminClient, admin_base_url, detail, through_bridge_or_store
from bridge.commands import EXAMPLES, add_config_argument, add_via_arguments, server_section
from bridge.config import Config, format_duration
from bridge.errors import BridgeError, CommandError, ConfigError, DeliveryError, Unavailable
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


class _Unset(dict[str, str]):
    """The environment, with a placeholder for every variable that is not set.

    ``route`` sends nothing, so it must run where the secrets' variables are absent (a laptop, CI).
    """

    def __contains__(self, key: object) -> bool:
        return True

    def __missing__(self, key: str) -> str:
        return f"unset-{key}"


def cmd_route(args: argparse.Namespace) -> int:
    import os

    from bridge.ingest import Rules
    from bridge.routing import explain
    from bridge.store.base import select_deliveries

    cfg = config_mod.load(args.config, env=_Unset(os.environ))
    rules = Rules.from_config(cfg)
    node_cfg = (cfg.nodes or {}).get(args.node)
    refused = cfg.nodes is not None and node_cfg is None
    now = datetime.now(UTC)
    event = Event(args.event_type, now, args.node, args.status, {"nodeId": args.node, "status": args.status},
                  node_cfg.labels if node_cfg else {}, now)
    prev = NodeState(args.node, args.previous_status, now, now, "evt_prev") if args.previous_status else None
    steps = explain(rules.router, event, prev)
    pairs = [] if refused else select_deliveries(rules.router.match(event, prev), {}, now.timestamp())[0]
    result = {
        "node": args.node, "status": args.status, "previous_status": args.previous_status,
        "refused": f"node {args.node!r} is not in nodes: the bridge would refuse it with 403" if refused else None,
        "routes": [{"route": name, "matched": matched, "reason": why} for name, matched, why in steps],
        "notified": [{"receiver": rcv, "route": route} for route, rcv in pairs],
    }
    if args.json:
        print(json.dumps(result, indent=2))
    elif refused:
        print(f"refused: {result['refused']}; nobody is notified")
    else:
        for name, matched, why in steps:
            print(f"  {'MATCH' if matched else '     '} {name}" + (f"  ({why})" if why else ""))
        if pairs:
            print("notified: " + ", ".join(f"{rcv} (via {route})" for route, rcv in pairs))
        else:
            print("notified: nobody (the event would only be recorded)")
    return 0 if pairs else 1


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

    from bridge.model import TEST_ROUTE, Alert, delivery_id
    from bridge.receivers import build_receiver
    from bridge.render import Renderer

    now = datetime.now(UTC)
    labels = (cfg.nodes or {}).get(args.node)
    event = Event("NODE_STATUS_UPDATED", now, args.node, args.status, {"nodeId": args.node, "status": args.status},
                  labels.labels if labels else {}, now)
    alert = Alert(event, TEST_ROUTE, args.receiver, delivery_id(event.id, args.receiver),
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
    print(f"sent: a TEST alert for {args.node} {args.status} was accepted by receiver {args.receiver!r}")
    return 0


# --- deliveries, reload ---------------------------------------------------------------------------


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def cmd_deliveries(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    if args.action == "retry" and not args.ids and not args.dead:
        print("error: name delivery ids or --dead", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(through_bridge_or_store(
            cfg, via=args.via, admin_url=args.admin_url,
            on_admin=lambda admin: _deliveries_admin(admin, args),
            on_store=lambda store, _where: _deliveries_store(store, args)))
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    if args.action == "list":
        rows = sorted(result, key=lambda d: (d["created_at"], d["id"]), reverse=True)  # newest first
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            print(f"{'ID':28} {'STATE':8} {'RECEIVER':16} {'NODE':20} {'STATUS':10} {'CREATED':20} "
                  f"{'NEXT ATTEMPT':20} {'ATTEMPTS':8} LAST ERROR")
            for d in rows:
                nxt = _when(d["next_attempt_at"]) if d["state"] in ("pending", "inflight") else "-"
                print(f"{d['id']:28} {d['state']:8} {d['receiver']:16} {d['node']:20} {d['status']:10} "
                      f"{_when(d['created_at']):20} {nxt:20} {d['attempts']:<8} {d['last_error'] or ''}")
            print(_plural(len(rows), "delivery", "deliveries"), file=sys.stderr)
        return 0
    if args.action == "retry":
        retried, unknown = result
        print(f"{_plural(retried, 'delivery', 'deliveries')} queued again")
        if unknown:
            print(f"error: no dead or pending delivery {', '.join(unknown)}", file=sys.stderr)
            return 1
        return 0
    print(f"{_plural(result, 'dead delivery', 'dead deliveries')} purged")
    return 0


def _when(stamp: str | None) -> str:
    if not stamp:
        return "-"
    from bridge.model import parse_timestamp

    return parse_timestamp(stamp).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


async def _retry_each(ids: Sequence[str], retry: Callable[[list[str]], Any]) -> tuple[int, list[str]]:
    """Retry ids one by one so an unknown one can be named."""
    done, unknown = 0, []
    for delivery_id in dict.fromkeys(ids):
        n = int(await retry([delivery_id]))
        done += n
        if not n:
            unknown.append(delivery_id)
    return done, unknown


async def _deliveries_admin(admin: AdminClient, args: argparse.Namespace) -> Any:
    if args.action == "list":
        state = f"&state={args.state}" if args.state else ""
        return (await admin.expect("GET", f"/-/deliveries?limit={args.limit}{state}"))["deliveries"]
    if args.action == "retry":
        if args.dead:
            return (await admin.expect("POST", "/-/deliveries/retry", {"dead": True}))["retried"], []

        async def one(ids: list[str]) -> int:
            return int((await admin.expect("POST", "/-/deliveries/retry", {"ids": ids}))["retried"])

        return await _retry_each(args.ids, one)
    return (await admin.expect("POST", "/-/deliveries/purge-dead", {}))["purged"]


async def _deliveries_store(store: Any, args: argparse.Namespace) -> Any:
    if args.action == "list":
        return [d.summary() for d in await store.list_deliveries(state=args.state, limit=args.limit)]
    if args.action == "retry":
        if args.dead:
            return await store.retry_deliveries(None, now=datetime.now(UTC)), []
        return await _retry_each(args.ids, lambda ids: store.retry_deliveries(ids, now=datetime.now(UTC)))
    return await store.purge_dead()


def cmd_reload(args: argparse.Namespace) -> int:
    async def on_admin(admin: AdminClient) -> tuple[int, Any]:
        return await admin.call("POST", "/-/reload", {})

    try:
        # Only server: is read here: the bridge checks the whole file and answers with every problem.
        server = server_section(args.config)
        status, doc = asyncio.run(through_bridge_or_store(server, admin_url=args.admin_url, on_admin=on_admin))
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    if status == 200:
        print(f"reloaded: the bridge at {args.admin_url or admin_base_url(server)} runs the config it read now")
        return 0
    for problem in (doc.get("errors") if isinstance(doc, dict) else None) or [detail(status, doc)]:
        print(f"error: {problem}", file=sys.stderr)
    print("the running config stays in force", file=sys.stderr)
    return 1


# --- parser --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alert-bridge", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--version", action="version", version=f"alert-bridge {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def command(parent: Any, name: str, help_text: str, key: str | None = None) -> argparse.ArgumentParser:
        sp: argparse.ArgumentParser = parent.add_parser(
            name, help=help_text, description=help_text, epilog=EXAMPLES.get(key or name),
            formatter_class=argparse.RawDescriptionHelpFormatter)
        return sp

    s = add_config_argument(command(sub, "serve", "run the bridge"))
    s.set_defaults(fn=cmd_serve)
    s = add_config_argument(command(sub, "check", "validate the config and print a summary"))
    s.set_defaults(fn=cmd_check)
    s = add_config_argument(command(sub, "reload", "make the running bridge re-read its config (POST /-/reload)"))
    s.add_argument("--admin-url", help="admin listener to use (default: from server.admin_listen)")
    s.set_defaults(fn=cmd_reload)

    s = add_config_argument(command(sub, "route", "show which routes and receivers an event would reach; "
                                                  "exit 1 when nobody would be notified"))
    s.add_argument("--node", required=True)
    s.add_argument("--status", required=True)
    s.add_argument("--previous-status")
    s.add_argument("--event-type", default="NODE_STATUS_UPDATED")
    s.add_argument("--json", action="store_true", help="print the result as JSON")
    s.set_defaults(fn=cmd_route)

    s = add_config_argument(command(sub, "send-test", "send a sample alert, marked TEST, through one receiver"))
    s.add_argument("--receiver", required=True)
    s.add_argument("--node", default="test-node")
    s.add_argument("--status", default="FAILED")
    s.add_argument("--previous-status", default="RUNNING")
    s.set_defaults(fn=cmd_send_test)

    d = command(sub, "deliveries", "inspect and operate the outbox")
    dsub = d.add_subparsers(dest="action", required=True)
    s = add_via_arguments(add_config_argument(command(dsub, "list", "deliveries, newest first",
                                                      "deliveries list")))
    s.add_argument("--state", choices=["pending", "inflight", "done", "dead"])
    s.add_argument("--limit", type=int, default=100)
    s.add_argument("--json", action="store_true")
    s = add_via_arguments(add_config_argument(command(dsub, "retry", "queue deliveries again",
                                                      "deliveries retry")))
    s.add_argument("ids", nargs="*")
    s.add_argument("--dead", action="store_true", help="every dead delivery")
    s = add_via_arguments(add_config_argument(command(dsub, "purge", "delete dead deliveries",
                                                      "deliveries purge")))
    s.add_argument("--dead", action="store_true", required=True)
    d.set_defaults(fn=cmd_deliveries)

    commands.register(sub, command)
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

