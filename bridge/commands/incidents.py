"""``alert-bridge incidents list|show|ack|resolve`` and ``alert-bridge nodes list|forget``.

Same rule as the other commands (bridge/adminclient.py): the running bridge's admin API
(``/api/v1/incidents``, ``/api/v1/nodes``) when one answers, else the configured store, opened by
this process. Ack and resolve commit through ``Store.apply`` either way (bridge/incident_ops.py).
"""

from __future__ import annotations

import argparse
import getpass
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from bridge import config as config_mod
from bridge.commands.common import add_config_argument, add_via_arguments, fail
from bridge.errors import CommandError

if TYPE_CHECKING:
    from bridge.adminclient import AdminClient

EXAMPLES = {
    "incidents": "examples:\n  alert-bridge incidents list -c config.yaml\n"
                 "  alert-bridge incidents ack -c config.yaml inc_0123456789abcdef0123 --by alice",
    "incidents list": "examples:\n  alert-bridge incidents list -c config.yaml\n"
                      "  alert-bridge incidents list -c config.yaml --all --json",
    "incidents show": "example:\n  alert-bridge incidents show -c config.yaml inc_0123456789abcdef0123",
    "incidents ack": "example:\n  alert-bridge incidents ack -c config.yaml inc_0123456789abcdef0123 --by alice",
    "incidents resolve": "example:\n  alert-bridge incidents resolve -c config.yaml inc_0123456789abcdef0123 "
                         "--by alice",
    "nodes": "examples:\n  alert-bridge nodes list -c config.yaml\n  alert-bridge nodes forget -c config.yaml node-7",
    "nodes list": "example:\n  alert-bridge nodes list -c config.yaml --json",
    "nodes forget": "example:\n  alert-bridge nodes forget -c config.yaml node-7\n"
                    "  (drops the node's status, open incident and timers; its events stay)",
}


def register(sub: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    def common(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        return add_via_arguments(add_config_argument(sp))

    p = command(sub, "incidents", "open incidents: list, show, acknowledge, resolve by hand")
    isub = p.add_subparsers(dest="action", required=True)
    s = common(command(isub, "list", "open incidents (--all: each node's last resolved one too)", "incidents list"))
    s.add_argument("--all", action="store_true")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_incidents)
    s = common(command(isub, "show", "one incident as JSON", "incidents show"))
    s.add_argument("id")
    s.set_defaults(fn=cmd_incidents)
    for action, what in (("ack", "acknowledge: reminders and escalations stop, the resolution still goes out"),
                         ("resolve", "resolve by hand: the resolution goes out now")):
        s = common(command(isub, action, what, f"incidents {action}"))
        s.add_argument("id")
        s.add_argument("--by", default=None, help="who (default: this user's login name)")
        s.set_defaults(fn=cmd_incidents)

    p = command(sub, "nodes", "what the bridge remembers of each node")
    nsub = p.add_subparsers(dest="action", required=True)
    s = common(command(nsub, "list", "every known node: status, since, open incident", "nodes list"))
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_nodes)
    s = common(command(nsub, "forget", "reset a node: drop its state, open incident and timers", "nodes forget"))
    s.add_argument("node")
    s.set_defaults(fn=cmd_nodes)


def _who(args: argparse.Namespace) -> str:
    if args.by:
        return str(args.by)
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "cli"


def cmd_incidents(args: argparse.Namespace) -> int:
    import asyncio

    try:
        return asyncio.run(_incidents(args))
    except CommandError as exc:
        return fail(exc)


def cmd_nodes(args: argparse.Namespace) -> int:
    import asyncio

    try:
        return asyncio.run(_nodes(args))
    except CommandError as exc:
        return fail(exc)


async def _incidents(args: argparse.Namespace) -> int:
    from bridge import incident_ops
    from bridge.adminclient import detail, through_bridge_or_store

    cfg = config_mod.load(args.config)
    action = args.action

    async def on_admin(admin: AdminClient) -> tuple[int, Any]:
        if action == "list":
            doc = await admin.expect("GET", "/api/v1/incidents" + ("?all=1" if args.all else ""))
            return 200, doc["incidents"]
        path = f"/api/v1/incidents/{quote(args.id, safe='')}"
        if action == "show":
            status, doc = await admin.call("GET", path)
        else:
            status, doc = await admin.call("POST", f"{path}/{action}", {"by": _who(args)})
        if status == 404:
            return 404, None
        if status != 200 or not isinstance(doc, dict):
            raise CommandError(f"admin API answered {detail(status, doc)}")
        return 200, doc.get("incident") if action == "show" else doc

    async def on_store(store: Any, where: str) -> tuple[int, Any]:
        now = datetime.now(UTC)
        if action == "list":
            return 200, incident_ops.incidents(await store.list_nodes(), now, include_resolved=args.all)
        if action == "show":
            hit = incident_ops.find(await store.list_nodes(), args.id)
            return (200, hit[1].view(now)) if hit else (404, None)
        if action == "ack":
            out = await incident_ops.ack(store, args.id, by=_who(args), now=now)
        else:
            from bridge.ingest import Rules

            policy = Rules.from_config(cfg).policy(tuple(await store.list_silences(now=now)))
            out = await incident_ops.resolve(store, args.id, policy, by=_who(args), now=now)
        return (404, None) if out.status == "not_found" else (200, {"status": out.status, "incident": out.incident})

    code, result = await through_bridge_or_store(cfg, via=args.via, admin_url=args.admin_url,
                                                 on_admin=on_admin, on_store=on_store)
    if code == 404:
        raise CommandError(f"no open incident {args.id}", 1)
    if action == "list":
        if args.json:
            print(json.dumps(result, indent=2))
        elif not result:
            print("no open incidents")
        for inc in result if not args.json else ():
            ack = f", acked by {inc['acked_by']}" if inc.get("acked_by") else ""
            print(f"{inc['id']}  {inc['node']}  {inc['state']}  {inc['path_text']}{ack}")
        return 0
    print(json.dumps(result, indent=2) if action == "show" else f"{result['status']}: {args.id}")
    return 0


async def _nodes(args: argparse.Namespace) -> int:
    from bridge import incident_ops
    from bridge.adminclient import detail, through_bridge_or_store

    cfg = config_mod.load(args.config)

    async def on_admin(admin: AdminClient) -> Any:
        if args.action == "list":
            return (await admin.expect("GET", "/api/v1/nodes"))["nodes"]
        status, doc = await admin.call("POST", f"/api/v1/nodes/{quote(args.node, safe='')}/forget")
        if status not in (200, 404):
            raise CommandError(f"admin API answered {detail(status, doc)}")
        return status == 200

    async def on_store(store: Any, where: str) -> Any:
        if args.action == "list":
            now = datetime.now(UTC)
            return [incident_ops.node_view(r, now) for r in await store.list_nodes()]
        return await store.forget_node(args.node)

    result = await through_bridge_or_store(cfg, via=args.via, admin_url=args.admin_url,
                                           on_admin=on_admin, on_store=on_store)
    if args.action == "forget":
        if not result:
            raise CommandError(f"no record of node {args.node}", 1)
        print(f"forgotten: {args.node} (its next event starts it afresh)")
        return 0
    if args.json:
        print(json.dumps(result, indent=2))
    for n in result if not args.json else ():
        inc = n["incident"]
        print(f"{n['node']}  {n['status']} since {n['since']}" + (f"  incident {inc['id']}" if inc else ""))
    return 0
