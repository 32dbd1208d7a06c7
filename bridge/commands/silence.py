"""``alert-bridge silence add|list|expire``.

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
import json
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from bridge import config as config_mod
from bridge.commands.common import add_config_argument, add_via_arguments, fail
from bridge.errors import CommandError

if TYPE_CHECKING:
    from bridge.adminclient import AdminClient
    from bridge.config import Config
    from bridge.model import Silence


def register(sub: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
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
        from bridge.adminclient import detail
        from bridge.model import Silence

        status, doc = await self._admin.call("POST", "/-/silences", dict(spec))
        if status in (400, 422):
            raise ValueError(detail(status, doc))
        if status != 201 or not isinstance(doc, dict):
            raise CommandError(f"admin API answered {detail(status, doc)}")
        return Silence.from_dict(doc["silence"])

    async def list(self, *, include_expired: bool) -> list[Silence]:
        from bridge.model import Silence

        doc = await self._admin.expect("GET", "/-/silences" + ("?all=1" if include_expired else ""))
        return [Silence.from_dict(d) for d in doc["silences"]]

    async def expire(self, silence_id: str) -> bool:
        from bridge.adminclient import detail

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
    from bridge.adminclient import through_bridge_or_store

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
    import asyncio

    from bridge.model import KNOWN_STATUSES, parse_timestamp
    from bridge.nodeindex import NodeIndex

    cfg = config_mod.load(args.config)

    async def add(backend: SilenceBackend) -> int:
        for status in args.status or []:
            if status.upper() not in KNOWN_STATUSES:
                print(f"warning: {status!r} is not a known status ({', '.join(sorted(KNOWN_STATUSES))})",
                      file=sys.stderr)
        if cfg.nodes is not None and not NodeIndex({n: {} for n in cfg.nodes}).pattern_matches_any(args.node):
            # the same test check applies to a route's node patterns
            print(f"warning: --node {args.node!r} matches none of the configured nodes (nodes:): "
                  "this silence mutes nothing", file=sys.stderr)
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
        return fail(exc)

