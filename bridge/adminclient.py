"""How a command reaches the bridge: its admin API when a bridge runs, else the store it uses.

One rule for every command that reads or changes what the bridge holds (silences, deliveries,
reload): ask the admin listener (``server.admin_listen``, or ``--admin-url``) whether a bridge
answers ``/healthz``. If one does, everything goes through its API, with
``Authorization: Bearer`` from ``server.admin_token`` when set: SQLite admits one process, and
a ``memory://`` store exists only inside the bridge. If nothing listens there, the command opens
the configured store itself (``--via storage`` forces that, ``--via admin`` forbids it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

import aiohttp

from bridge.config import Config, ServerConfig
from bridge.config.server import local_url
from bridge.errors import CommandError, StorageUnavailable

ADMIN_TIMEOUT = 5.0
Via = Literal["auto", "admin", "storage"]
T = TypeVar("T")


def admin_base_url(server: ServerConfig) -> str | None:
    """Where this host reaches the admin listener."""
    return local_url(server.admin_listen)


class AdminClient:
    """The running bridge's admin API. ``call`` returns (status, parsed JSON or None)."""

    def __init__(self, base_url: str, session: aiohttp.ClientSession, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.where = f"the running bridge at {self.base_url}"
        self._session = session
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        # Every mutating endpoint wants a JSON object (the CSRF defence): send {} when there is nothing to say.
        if method != "GET" and body is None:
            body = {}
        try:
            async with self._session.request(method, self.base_url + path, json=body,
                                             headers=self._headers) as resp:
                try:
                    doc = await resp.json(content_type=None)
                except ValueError:
                    doc = None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CommandError(f"admin API at {self.base_url} failed: {type(exc).__name__} {exc}") from None
        if resp.status == 401:
            raise CommandError(f"admin API at {self.base_url} wants a token: set server.admin_token "
                               "(or admin_token_file) in this config to the bridge's")
        return resp.status, doc

    async def expect(self, method: str, path: str, body: Any = None, *, status: int = 200) -> Any:
        """The answer's JSON when the status is ``status``; CommandError with its detail otherwise."""
        got, doc = await self.call(method, path, body)
        if got != status or not isinstance(doc, dict):
            raise CommandError(f"admin API answered {detail(got, doc)}")
        return doc

    async def reachable(self) -> bool:
        """True when a bridge answers on the admin listener; False when nothing listens there."""
        try:
            async with self._session.get(self.base_url + "/healthz") as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False


def detail(status: int, doc: Any) -> str:
    return str(doc.get("detail")) if isinstance(doc, dict) and doc.get("detail") else f"HTTP {status}"


def admin_token(server: ServerConfig) -> str | None:
    token = server.admin_token
    return token.get_secret_value() if token is not None else None


async def through_bridge_or_store(
    cfg: Config | ServerConfig, *, via: Via = "auto", admin_url: str | None = None,
    on_admin: Callable[[AdminClient], Awaitable[T]],
    on_store: Callable[[Any, str], Awaitable[T]] | None = None,
) -> T:
    """Run ``on_admin`` against the running bridge, else ``on_store(store, where)`` on the opened store.

    ``on_store=None``: the operation only exists in a running bridge (reload); then ``cfg`` may be
    only the ``server:`` section.
    """
    server = cfg if isinstance(cfg, ServerConfig) else cfg.server
    base = admin_url or admin_base_url(server)
    silent = None  # the admin listener asked and not answering, for the hint below
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=ADMIN_TIMEOUT)) as session:
        if via != "storage":
            if base is None:
                if via == "admin" or on_store is None:
                    raise CommandError("server.admin_listen has port 0; pass --admin-url", 2)
            else:
                admin = AdminClient(base, session, admin_token(server))
                if via == "admin" or on_store is None or await admin.reachable():
                    return await on_admin(admin)
                silent = base
    assert on_store is not None and isinstance(cfg, Config)
    url = cfg.storage.url
    where = f"storage {url.split('@')[-1]}"  # never print redis credentials
    if url.startswith("memory://"):
        raise CommandError(
            f"storage is {url}: it lives inside the running bridge, and no bridge answers at "
            f"{base or 'its admin listener'} (is it running? is --admin-url right?)"
        )
    from bridge.store import open_store

    store = open_store(url)
    try:
        await store.open()
    except StorageUnavailable as exc:
        hint = f"; a bridge seems to hold it, yet its admin listener {silent} does not answer" if silent else ""
        raise CommandError(f"{exc.detail}{hint}") from None
    try:
        return await on_store(store, where)
    finally:
        await store.close()


async def running_node(server: ServerConfig, node_id: str) -> dict[str, Any] | None:
    """The running bridge's record of ``node_id`` (``GET /api/v1/nodes/{id}``: view and record), or
    None when no bridge answers, it knows no such node, or it refuses us: ``route`` then explains
    without the node's state, as it always could."""
    from urllib.parse import quote

    base = admin_base_url(server)
    if base is None:
        return None
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=ADMIN_TIMEOUT)) as session:
            admin = AdminClient(base, session, admin_token(server))
            if not await admin.reachable():
                return None
            status, doc = await admin.call("GET", f"/api/v1/nodes/{quote(node_id, safe='')}")
    except (CommandError, aiohttp.ClientError, OSError, TimeoutError):
        return None
    return doc if status == 200 and isinstance(doc, dict) and isinstance(doc.get("record"), dict) else None
