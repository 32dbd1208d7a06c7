"""``alert-bridge deliveries list|retry|purge`` and ``alert-bridge reload``: the outbox and the config
of the running bridge, through bridge/adminclient.py."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bridge import config as config_mod
from bridge.commands.common import add_config_argument, add_via_arguments, server_section
from bridge.errors import CommandError

if TYPE_CHECKING:
    from bridge.adminclient import AdminClient


def register(sub: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    s = add_config_argument(command(sub, "reload", "make the running bridge re-read its config (POST /-/reload)"))
    s.add_argument("--admin-url", help="admin listener to use (default: from server.admin_listen)")
    s.set_defaults(fn=cmd_reload)

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



# --- deliveries, reload ---------------------------------------------------------------------------


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def cmd_deliveries(args: argparse.Namespace) -> int:
    import asyncio

    from bridge.adminclient import through_bridge_or_store

    cfg = config_mod.load(args.config)
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
        retried, unknown, skipped, more = result
        print(f"{_plural(retried, 'delivery', 'deliveries')} queued again")
        if skipped:
            print(f"{_plural(len(skipped), 'delivery', 'deliveries')} left dead: what it says is over (its "
                  f"incident resolved, or its flapping ended), and sent now it would re-open the page: "
                  + ", ".join(f"{d['id']} ({d['kind']} of {d['incident'] or 'the node'}, node {d['node']})"
                              for d in skipped),
                  file=sys.stderr)
        if more:
            print("more dead deliveries than one retry reads: run it again", file=sys.stderr)
        if unknown:
            print(f"error: no dead or pending delivery {', '.join(unknown)}", file=sys.stderr)
        return 1 if unknown or (skipped and not args.dead) else 0
    print(f"{_plural(result, 'dead delivery', 'dead deliveries')} purged")
    return 0


def _when(stamp: str | None) -> str:
    from bridge.model import parse_timestamp

    if not stamp:
        return "-"
    return parse_timestamp(stamp).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


Retry = tuple[int, list[str], list[dict[str, str]], bool]  # retried, unknown ids, skipped, more (outbox_ops)


async def _retry_each(ids: Sequence[str], retry: Callable[[list[str]], Awaitable[Retry]]) -> Retry:
    """Retry ids one by one so an unknown one can be named."""
    done, unknown, skipped = 0, [], []
    for delivery_id in dict.fromkeys(ids):
        n, _, left, _ = await retry([delivery_id])
        done += n
        skipped += left
        if not n and not left:
            unknown.append(delivery_id)
    return done, unknown, skipped, False


async def _deliveries_admin(admin: AdminClient, args: argparse.Namespace) -> Any:
    if args.action == "list":
        state = f"&state={args.state}" if args.state else ""
        return (await admin.expect("GET", f"/-/deliveries?limit={args.limit}{state}"))["deliveries"]
    if args.action == "retry":
        async def post(doc: dict[str, Any]) -> Retry:
            answer = await admin.expect("POST", "/-/deliveries/retry", doc)
            return int(answer["retried"]), [], list(answer.get("skipped") or ()), bool(answer.get("more"))

        if args.dead:
            return await post({"dead": True})
        return await _retry_each(args.ids, lambda ids: post({"ids": ids}))
    return (await admin.expect("POST", "/-/deliveries/purge-dead", {}))["purged"]


async def _deliveries_store(store: Any, args: argparse.Namespace) -> Any:
    if args.action == "list":
        return [d.summary() for d in await store.list_deliveries(state=args.state, limit=args.limit)]
    if args.action == "retry":
        from bridge import outbox_ops

        async def retry(ids: list[str] | None) -> Retry:
            done = await outbox_ops.retry(store, ids, now=datetime.now(UTC))
            return done.retried, [], done.skipped_view(), done.more

        if args.dead:
            return await retry(None)
        return await _retry_each(args.ids, retry)
    return await store.purge_dead()


def cmd_reload(args: argparse.Namespace) -> int:
    import asyncio

    from bridge.adminclient import admin_base_url, detail, through_bridge_or_store

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


