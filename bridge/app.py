"""Composition root: builds everything from a Config, starts it, reloads it, stops it.

The only module (with receivers/__init__.py) that knows every concrete part.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bridge import config as config_mod
from bridge.config import Config, split_host_port
from bridge.delivery import Dispatcher
from bridge.errors import BridgeError, ConfigError, Unavailable
from bridge.ingest import Ingest, Rules
from bridge.keys import KeyManager
from bridge.metrics import Metrics
from bridge.receivers import build_receivers
from bridge.receivers.base import Receiver
from bridge.render import Renderer
from bridge.server import admin_app, ssl_context, webhook_app
from bridge.store import Store, open_store

log = logging.getLogger("bridge.app")


def utc_now() -> datetime:
    return datetime.now(UTC)


def validate(cfg: Config) -> Rules:
    """Everything ``check`` proves beyond the schema: routes compile, templates render."""
    problems: list[str] = []
    rules = None
    try:
        rules = Rules.from_config(cfg)
    except ConfigError as exc:
        problems += exc.problems
    try:
        Renderer.from_config(cfg)
    except ConfigError as exc:
        problems += exc.problems
    if problems or rules is None:
        raise ConfigError(problems)
    return rules


class App:
    def __init__(self, cfg: Config, *, config_path: str | Path | None = None,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.config = cfg
        self.config_path = Path(config_path) if config_path else None
        self.clock = clock
        self.metrics = Metrics()
        self.store: Store = open_store(cfg.storage.url)
        self._session: aiohttp.ClientSession | None = None
        self._receivers: dict[str, Receiver] = {}
        self._runners: list[web.AppRunner] = []
        self._background: list[asyncio.Task[None]] = []
        self._reload_lock = asyncio.Lock()
        self.webhook_port = 0
        self.admin_port = 0
        self.dispatcher = Dispatcher(
            self.store, metrics=self.metrics, clock=clock, lease=cfg.storage.visibility_timeout,
            poll_interval=cfg.delivery.poll_interval, batch_size=cfg.delivery.batch_size,
        )
        self.keys: KeyManager | None = None
        self.ingest: Ingest | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        rules = validate(cfg)
        for warning in rules.router.warnings:
            log.warning("config: %s", warning)
        if not self.store.durable:
            log.warning("storage is %s: not durable, a restart forgets pending alerts", cfg.storage.url)
        await self.store.open()
        self._session = aiohttp.ClientSession()
        self.keys = KeyManager(cfg, store=self.store, session=self._session)
        await self.keys.start()
        self.ingest = Ingest(rules, store=self.store, keys=self.keys, metrics=self.metrics, clock=self.clock,
                             on_enqueued=self.dispatcher.wake)
        self._install_receivers(cfg)
        self.dispatcher.start()
        self._spawn(self._maintenance_loop(), "maintenance")
        self._spawn(self._silence_loop(), "silences")
        s = cfg.server
        host, port = split_host_port(s.listen)
        ctx = ssl_context(str(s.tls.cert_file), str(s.tls.key_file)) if s.tls else None
        hook = webhook_app(lambda: self._ingest(), path=s.path, max_body_bytes=s.max_body_bytes,
                           body_timeout=s.body_timeout, ready=self.ready)
        self.webhook_port = await self._serve(hook, host, port, ctx)
        ahost, aport = split_host_port(s.admin_listen)
        admin = admin_app(metrics=self.render_metrics, reload=self.reload, ready=self.ready)
        self.admin_port = await self._serve(admin, ahost, aport, None)
        scheme = "https" if ctx else "http"
        log.info("listening on %s://%s:%d%s (admin on %s:%d)", scheme, host, self.webhook_port, s.path,
                 ahost, self.admin_port)

    async def _serve(self, app: web.Application, host: str, port: int, ctx: Any) -> int:
        runner = web.AppRunner(app, handle_signals=False, access_log=None,
                               shutdown_timeout=self.config.server.shutdown_grace)
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=ctx, backlog=1024, reuse_address=True)
        await site.start()
        self._runners.append(runner)
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else port

    async def stop(self) -> None:
        """Stop accepting, finish requests in flight, give deliveries their grace, close."""
        for runner in self._runners:
            await runner.cleanup()  # stops listening, waits for handlers in flight
        self._runners.clear()
        await self.dispatcher.stop(self.config.delivery.shutdown_grace)
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._background.clear()
        if self.keys is not None:
            await self.keys.stop()
        for receiver in self._receivers.values():
            with contextlib.suppress(Exception):
                await receiver.close()
        if self._session is not None:
            await self._session.close()
        await self.store.close()
        log.info("stopped")

    def _ingest(self) -> Ingest:
        assert self.ingest is not None
        return self.ingest

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self._background.append(asyncio.create_task(coro, name=name))

    def _install_receivers(self, cfg: Config) -> None:
        assert self._session is not None
        renderer = Renderer.from_config(cfg)
        self._receivers = build_receivers(cfg, renderer, self._session)
        self.dispatcher.set_receivers(self._receivers, dict(cfg.receivers))
        self.metrics.for_receivers(list(cfg.receivers))

    # --- health, metrics -----------------------------------------------------------------------

    async def ready(self) -> str | None:
        if self.keys is None or not self.keys.ready:
            return "public key not loaded yet" + (
                f" ({self.keys.status.last_error})" if self.keys and self.keys.status.last_error else ""
            )
        try:
            await asyncio.wait_for(self.store.ping(), 2.0)
        except (Unavailable, TimeoutError) as exc:
            return f"storage unavailable: {getattr(exc, 'detail', 'timed out')}"
        return None

    def render_metrics(self) -> bytes:
        if self.keys is not None and self.keys.status.loaded_at:
            self.metrics.key_loaded_at.set(self.keys.status.loaded_at)
        return self.metrics.render()

    async def _maintenance_loop(self) -> None:
        """Outbox gauges every few seconds; pruning every prune_interval."""
        last_prune = 0.0
        loop = asyncio.get_running_loop()
        key_failures_seen = 0
        while True:
            try:
                stats = await self.store.stats(now=self.clock())
                m = self.metrics
                m.pending.set(stats.pending)
                m.inflight.set(stats.inflight)
                m.dead.set(stats.dead)
                m.oldest_pending.set(stats.oldest_pending_age)
                if self.keys is not None and self.keys.status.refresh_failures > key_failures_seen:
                    m.key_refresh_failures.inc(self.keys.status.refresh_failures - key_failures_seen)
                    key_failures_seen = self.keys.status.refresh_failures
                if loop.time() - last_prune >= self.config.storage.prune_interval:
                    last_prune = loop.time()
                    removed = await self.store.prune(now=self.clock(), retention=self.config.storage.retention)
                    if removed:
                        log.debug("pruned %d records", removed)
            except Unavailable as exc:
                log.warning("maintenance skipped: %s", exc.detail)
            except Exception:
                log.exception("maintenance failed")
            await asyncio.sleep(min(5.0, self.config.storage.prune_interval))

    async def _silence_loop(self) -> None:
        """Silences live in storage (shared by replicas, edited by the CLI): re-read them often."""
        while True:
            with contextlib.suppress(Unavailable):
                await self.refresh_silences()
            await asyncio.sleep(2.0)

    async def refresh_silences(self) -> None:
        if self.ingest is not None:
            self.ingest.store_silences = tuple(await self.store.list_silences(now=self.clock()))

    # --- reload --------------------------------------------------------------------------------

    async def reload(self) -> list[str]:
        """Re-read the config file. Returns the problems; on any, the running config stays."""
        async with self._reload_lock:
            if self.config_path is None:
                return ["no config file to reload from"]
            try:
                new = config_mod.load(self.config_path)
                rules = validate(new)
            except ConfigError as exc:
                self.metrics.reload_success.set(0)
                for problem in exc.problems:
                    log.error("reload rejected: %s", problem)
                return exc.problems
            old = self.config
            for section in ("server", "storage", "verification"):
                if getattr(old, section) != getattr(new, section):
                    log.warning("reload: changes to %s: take effect at the next restart", section)
            new = new.model_copy(update={"server": old.server, "storage": old.storage,
                                         "verification": old.verification})
            removed = set(old.receivers) - set(new.receivers)
            old_receivers = self._receivers
            self.config = new
            self._install_receivers(new)
            assert self.ingest is not None
            self.ingest.rules = rules
            for name in removed:
                try:
                    n = await self.store.bury_receiver(name, now=self.clock(), error="receiver removed by reload")
                    log.warning("receiver %s removed by reload: %d pending deliveries are dead", name, n)
                except BridgeError as exc:
                    log.error("could not retire deliveries of removed receiver %s: %s", name, exc)
            for name, receiver in old_receivers.items():
                if self._receivers.get(name) is not receiver:
                    with contextlib.suppress(Exception):
                        await receiver.close()
            self.metrics.reload_success.set(1)
            self.metrics.reload_timestamp.set(self.clock().timestamp())
            log.info("config reloaded from %s", self.config_path)
            return []
