"""Command line: serve | check | route | send-test | reload | deliveries | silence | keygen | emit | demo | healthcheck.

Exit status: 0 success, 1 the operation failed (e.g. a test alert did not arrive), 2 bad
config or usage.

Each command imports what it needs when it runs: building the parser (``--help``) and
``healthcheck`` must not load the config models, aiohttp or the receivers, since the container's
HEALTHCHECK starts this every 30 s (tests/test_cli_imports.py holds that).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bridge import __version__, commands
from bridge import config as config_mod
from bridge.commands import EXAMPLES, add_config_argument
from bridge.errors import BridgeError, ConfigError, DeliveryError, Unavailable

if TYPE_CHECKING:
    from bridge.config import Config

log = logging.getLogger("bridge.cli")


def _load(path: str) -> Config:
    return config_mod.load(path)


def _print_config_errors(exc: ConfigError) -> int:
    for problem in exc.problems:
        print(f"error: {problem}", file=sys.stderr)
    return 2


# --- serve ---------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from bridge import eventloop, logs

    cfg = _load(args.config)
    loop_name, loop_factory = eventloop.choose(os.environ)
    logs.setup(cfg.log, cfg)
    for warning in cfg.warnings:
        log.warning("config: %s", warning)
    log.info("event loop: %s (%s=asyncio|uvloop chooses)", loop_name, eventloop.LOOP_ENV)
    return eventloop.run(_serve(cfg, args.config), loop_factory)


async def _serve(cfg: Config, path: str) -> int:
    import asyncio
    import signal

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
    from bridge.config import format_duration

    cfg = _load(args.config)
    rules = validate(cfg)
    warnings = (*cfg.warnings, *rules.router.warnings)
    for warning in warnings:
        print(f"{'error' if args.strict else 'warning'}: {warning}", file=sys.stderr)
    if args.strict and warnings:
        print(f"config {cfg.source}: {len(warnings)} warning{'s' if len(warnings) != 1 else ''} "
              f"made fatal by --strict", file=sys.stderr)
        return 2
    v = cfg.verification
    key = (
        "inline public_key" if v.public_key else f"public_key_file {v.public_key_file}"
        if v.public_key_file else f"public_key_url {v.public_key_url}"
    )
    print(f"config {cfg.source} is valid")
    auth = "bearer token" if cfg.server.admin_token else "no token"
    print(f"  listen        {cfg.server.listen}{cfg.server.path} (admin {cfg.server.admin_listen}, {auth})")
    print(f"  key           {key}")
    print(f"  storage       {cfg.storage.url.split('@')[-1]}")  # never print redis credentials
    print(f"  nodes         {'any' if cfg.nodes is None else f'{len(cfg.nodes)} (allow-list: others get 403)'}"
          + (f"; {len(cfg.node_labels)} node_labels rules" if cfg.node_labels else ""))
    print(f"  receivers     {', '.join(f'{n} ({r.type})' for n, r in cfg.receivers.items()) or 'none'}")
    print(f"  routes        {len(rules.router)}; default_to: {', '.join(cfg.default_to) or 'none'}")
    for r in (r for r in cfg.routes if r.group_wait):
        by = f" by {', '.join(r.group_by)}" if r.group_by else ""
        print(f"  grouping      {r.name}: digests{by}, group_wait {format_duration(r.group_wait)}, "
              f"group_interval {format_duration(r.group_interval)}")
    print(f"  replay window max_event_age {format_duration(v.max_event_age)}, "
          f"dedup_ttl {format_duration(cfg.storage.dedup_ttl)}")
    return 0


# --- route ---------------------------------------------------------------------------------------


class _Unset(dict[str, str]):
    """The environment, with a placeholder for every variable that is not set.

    ``route`` sends nothing, so it must run where the secrets' variables are absent (a laptop, CI).
    The placeholder is URL-shaped (a reserved .invalid host): most secrets are webhook URLs, which
    the config checks as URLs; it is never sent anywhere.
    """

    def __contains__(self, key: object) -> bool:
        return True

    def __missing__(self, key: str) -> str:
        return f"https://unset.invalid/{key}"


def cmd_route(args: argparse.Namespace) -> int:
    import asyncio

    from bridge.config import format_duration
    from bridge.ingest import Rules
    from bridge.whatif import route_answer

    cfg = config_mod.load(args.config, env=_Unset(os.environ))
    record = None
    current = None
    if args.previous_status is None:  # the running bridge's state of the node, when it answers
        from bridge.adminclient import running_node
        from bridge.decide import NodeRecord

        current = asyncio.run(running_node(cfg.server, args.node))
        record = NodeRecord.from_json(args.node, current["record"]) if current else None
    result = route_answer(Rules.from_config(cfg), args.node, args.status, now=datetime.now(UTC),
                          previous_status=args.previous_status, event_type=args.event_type, record=record)
    result.pop("labels")  # the CLI's JSON stays as it was
    if current is not None:
        result["current"] = current["node"]
    refused = result["refused"] is not None
    steps = [(r["route"], r["matched"], r["reason"]) for r in result["routes"]]
    pairs = [(n["route"], n["receiver"], n["kind"] + _digest_note(n)) for n in result["notified"]]
    later: list[dict[str, Any]] = result["timers"]
    if args.json:
        print(json.dumps(result, indent=2))
    elif refused:
        print(f"refused: {result['refused']}; nobody is notified")
    else:
        if current is not None:
            print(f"now (running bridge): {args.node} is {result['previous_status']}" + _incident_line(current["node"]))
        for name, matched, why in steps:
            print(f"  {'MATCH' if matched else '     '} {name}" + (f"  ({why})" if why else ""))
        if pairs:
            print("notified: " + ", ".join(f"{rcv} (via {route}, {kind})" for route, rcv, kind in pairs))
        else:
            print("notified: nobody now (the event would be recorded)")
        for t in later:
            print(f"  later: {t['kind']} of route {t['route']} in {format_duration(round(t['after']))}")
    return 0 if pairs else 1


def _digest_note(notified: dict[str, Any]) -> str:
    from bridge.config import format_duration

    digest = notified.get("digest")
    if not isinstance(digest, dict):
        return ""
    by = "".join(f", {k}={v}" for k, v in sorted(digest["group_by"].items()))
    return f", in a digest after {format_duration(round(digest['after']))}{by}"


def _incident_line(view: dict[str, Any]) -> str:
    inc = view.get("incident")
    if not isinstance(inc, dict):
        return ", no open incident"
    ack = f", acked by {inc['acked_by']}" if inc.get("acked_by") else ""
    return f", incident {inc.get('id')} open: {inc.get('path_text')}{ack}"


# --- send-test -----------------------------------------------------------------------------------


def cmd_send_test(args: argparse.Namespace) -> int:
    import asyncio

    from bridge import logs

    cfg = _load(args.config)
    if args.receiver not in cfg.receivers:
        print(f"error: no receiver named {args.receiver!r}; configured: {', '.join(cfg.receivers)}", file=sys.stderr)
        return 2
    logs.setup(cfg.log, cfg)
    return asyncio.run(_send_test(cfg, args))


async def _send_test(cfg: Config, args: argparse.Namespace) -> int:
    import aiohttp

    from bridge.model import TEST_ROUTE, Alert, Event, delivery_id
    from bridge.nodes import NodeLabeler
    from bridge.receivers import build_receiver
    from bridge.render import Renderer

    now = datetime.now(UTC)

    event = Event("NODE_STATUS_UPDATED", now, args.node, args.status, {"nodeId": args.node, "status": args.status},
                  NodeLabeler.from_config(cfg).labels_for(args.node), now)
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
    s.add_argument("--strict", action="store_true",
                   help="treat every warning as an error (exit 2), e.g. in CI")
    s.set_defaults(fn=cmd_check)
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

