"""Composition root: builds everything from a Config, starts it, reloads it, stops it.

The only module (with receivers/__init__.py) that knows every concrete part.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bridge import config as config_mod
from bridge import incident_ops, logs
from bridge.config import Config, split_host_port
from bridge.console import Console
from bridge.conversations import conversation_source
from bridge.delivery import Dispatcher
from bridge.errors import BridgeError, ConfigError, Unavailable
from bridge.fdbudget import AcceptErrors, raise_soft_limit
from bridge.hookserver import HookServer
from bridge.http1 import LINGER
from bridge.ingest import Ingest, Rules
from bridge.keys import KeyManager
from bridge.metrics import Metrics
from bridge.model import Silence, utc_now
from bridge.receivers import build_receivers
from bridge.receivers.base import Receiver
from bridge.render import Renderer
from bridge.server import admin_app, ssl_context
from bridge.silences import is_active, silence_from_spec
from bridge.store import Store, open_store
from bridge.timers import TimerLoop

log = logging.getLogger("bridge.app")
_GC_YOUNG = 5_000  # allocations between young collections (Python's default: 700)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

def validate(cfg: Config) -> Rules:
    """Everything ``check`` proves beyond the schema: files readable, routes compile, templates render."""
    problems: list[str] = config_mod.unreadable_files(cfg)
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
        # Receivers that thread (Slack bot token) keep their conversations in the store.
        self._conversations = conversation_source(self.store, clock=clock, keep=cfg.storage.retention.conversations)
        self._runners: list[web.AppRunner] = []
        self._hook: HookServer | None = None
        self._background: list[asyncio.Task[None]] = []
        self._reload_lock = asyncio.Lock()
        self.webhook_port = 0
        self.admin_port = 0
        self.dispatcher = Dispatcher(
            self.store, metrics=self.metrics, clock=clock, lease=cfg.storage.visibility_timeout,
            poll_interval=cfg.delivery.poll_interval, batch_size=cfg.delivery.batch_size,
        )
        self.timers = TimerLoop(self.store, policy=lambda: self._ingest().policy, metrics=self.metrics, clock=clock,
                                poll_interval=cfg.delivery.poll_interval, on_enqueued=self.dispatcher.wake)
        self.keys: KeyManager | None = None
        self.ingest: Ingest | None = None
        self._key_failures_seen = 0
        self.last_reload: tuple[datetime, list[str]] | None = None  # the console shows it

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        rules = validate(cfg)
        for warning in rules.router.warnings:
            log.warning("config: %s", warning)
        if not self.store.durable:
            log.warning("storage is %s: not durable, a restart forgets pending alerts", cfg.storage.url)
        try:
            await self.store.open()
        except Unavailable as exc:
            if not cfg.storage.url.startswith(("redis://", "rediss://")):
                raise
            # Redis reconnects by itself: start not-ready (ingest answers 503, ThunderStack
            # retries) rather than exit and leave the restart to a supervisor.
            log.warning("storage unavailable at start, running not-ready until it answers: %s", exc.detail)
        self._session = aiohttp.ClientSession()
        self.keys = KeyManager(cfg, store=self.store, session=self._session)
        await self.keys.start()
        self.ingest = Ingest(rules, store=self.store, keys=self.keys, metrics=self.metrics, clock=self.clock,
                             on_enqueued=self.dispatcher.wake, on_timer_set=self.timers.timer_set,
                             store_silences=None)
        self._install_receivers(cfg)
        self.dispatcher.start()
        # Timers and events are decided with the stored silences, never before they are read (a
        # restart inside a silence would page what it covers): read now, or once storage answers.
        with contextlib.suppress(Unavailable):
            await self.refresh_silences()
        if self.ingest.silences_known:
            self.timers.start()
        else:
            self._spawn(self._start_timers_with_silences(), "timers-start")
        self.metrics.reload_timestamp.set(self.clock().timestamp())
        self.last_reload = (self.clock(), [])
        self._spawn(self._maintenance_loop(), "maintenance")
        self._spawn(self._silence_loop(), "silences")
        s = cfg.server
        host, port = split_host_port(s.listen)
        ctx = ssl_context(str(s.tls.cert_file), str(s.tls.key_file)) if s.tls else None
        self._hook = HookServer(lambda: self._ingest(), path=s.path, max_body_bytes=s.max_body_bytes,
                                body_timeout=s.body_timeout, idle_timeout=s.idle_timeout, ready=self.ready,
                                accept_chunked=s.accept_chunked)
        before, after = raise_soft_limit()
        if after != before:
            log.info("open-file limit raised from %d to %d", before, after)
        AcceptErrors.install(asyncio.get_running_loop())
        self.webhook_port = await self._hook.start(host, port, ctx)
        ahost, aport = split_host_port(s.admin_listen)
        token = s.admin_token.get_secret_value() if s.admin_token else None
        if token is None and not _loopback(ahost):
            log.warning("the admin listener %s is reachable from other hosts and has no server.admin_token: "
                        "anyone who can reach it can silence alerts and reload the config", s.admin_listen)
        admin = admin_app(metrics=self.scrape, reload=self.reload, ready=self.ready, silences=self, outbox=self.store,
                          token=token, metrics_public=s.metrics_public, incidents=self,
                          console=Console(self, token=token))
        self.admin_port = await self._serve(admin, ahost, aport, None)
        scheme = "https" if ctx else "http"
        log.info("listening on %s://%s:%d%s (admin on %s:%d)", scheme, host, self.webhook_port, s.path,
                 ahost, self.admin_port)
        # What exists now (modules, config, routes, clients) lives as long as the bridge. Left to
        # the collector, every full collection walks all of it: a pause on the event loop that
        # every request and delivery in flight waits out. Frozen, the collector only walks what was
        # allocated since. No gc.collect() first: start-up leaves next to no garbage. (Figures:
        # bench/README.md, "gc.freeze() after start-up".)
        gc.freeze()
        # A young collection walks every live object allocated since the last one: with the default
        # of 700 allocations that is mostly the requests in flight, walked again and again and then
        # promoted. After 5,000 most of them are gone (bench/README.md, "Measured figures behind
        # other constants").
        gc.set_threshold(_GC_YOUNG, *gc.get_threshold()[1:])

    async def _serve(self, app: web.Application, host: str, port: int, ctx: Any, **options: Any) -> int:
        runner = web.AppRunner(app, handle_signals=False, access_log=None, **options,
                               shutdown_timeout=self.config.server.shutdown_grace,
                               # aiohttp closes a connection without a complete request after this
                               # (from connect or from the last answer); its default is an hour.
                               keepalive_timeout=self.config.server.idle_timeout,
                               # After an answer given before the whole body arrived (413, 408), the
                               # rest is read and discarded for at most this long, so the client can
                               # still read the answer, then the connection is closed (default 10 s).
                               lingering_time=LINGER,
                               # Bodies are taken as sent: ThunderStack does not compress, and inflating
                               # a gzip bomb (even one refused with 413) costs the loop seconds of CPU.
                               auto_decompress=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=ctx, backlog=1024, reuse_address=True)
        await site.start()
        self._runners.append(runner)
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else port

    async def stop(self) -> None:
        """Stop accepting, finish requests in flight, give deliveries their grace, close."""
        if self._hook is not None:
            await self._hook.stop(self.config.server.shutdown_grace)
            self._hook = None
        for runner in self._runners:
            await runner.cleanup()  # stops listening, waits for handlers in flight
        self._runners.clear()
        await self.timers.stop()
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
        gc.unfreeze()  # whatever of it is garbage by now (a test's previous bridge) can be collected
        log.info("stopped")

    def _ingest(self) -> Ingest:
        assert self.ingest is not None
        return self.ingest

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self._background.append(asyncio.create_task(coro, name=name))

    def _build_receivers(self, cfg: Config) -> dict[str, Receiver]:
        """Raises ConfigError when something only checkable now is wrong (an unreadable CA file)."""
        assert self._session is not None
        return build_receivers(cfg, Renderer.from_config(cfg), self._session, self._conversations)

    def _install_receivers(self, cfg: Config, receivers: dict[str, Receiver] | None = None) -> None:
        self._receivers = receivers if receivers is not None else self._build_receivers(cfg)
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
        if self.ingest is not None and not self.ingest.silences_known:
            return "silences not read from storage yet"  # events get 503 until they are
        return None

    def render_metrics(self) -> bytes:
        self._sync_key_metrics()
        return self.metrics.render()

    async def scrape(self) -> bytes:
        """``GET /metrics``: outbox gauges read now (bounded), then everything rendered."""
        try:
            await asyncio.wait_for(self._update_outbox_gauges(), 2.0)
        except (Unavailable, TimeoutError) as exc:
            log.warning("metrics: outbox gauges not refreshed: %s", getattr(exc, "detail", "timed out"))
        return self.render_metrics()

    def _sync_key_metrics(self) -> None:
        if self.keys is None:
            return
        status = self.keys.status
        if status.loaded_at:
            self.metrics.key_loaded_at.set(status.loaded_at)
            self.metrics.key_age.set(max(0.0, time.time() - status.loaded_at))
        if status.refresh_failures > self._key_failures_seen:
            self.metrics.key_refresh_failures.inc(status.refresh_failures - self._key_failures_seen)
            self._key_failures_seen = status.refresh_failures

    async def _update_outbox_gauges(self) -> None:
        stats = await self.store.stats(now=self.clock())
        m = self.metrics
        m.pending.set(stats.pending)
        m.inflight.set(stats.inflight)
        m.dead.set(stats.dead)
        m.oldest_pending.set(stats.oldest_pending_age)
        m.incidents_open.set(stats.incidents_open)

    async def _maintenance_loop(self) -> None:
        """Outbox gauges every few seconds; pruning every prune_interval."""
        last_prune = 0.0
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self._update_outbox_gauges()
                self._sync_key_metrics()
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

    async def _start_timers_with_silences(self) -> None:
        while self.ingest is not None and not self.ingest.silences_known:
            await asyncio.sleep(0.5)  # the silence loop reads them once storage answers
        self.timers.start()

    async def _silence_loop(self) -> None:
        """Silences live in storage (shared by replicas, edited by the CLI): re-read them often."""
        while True:
            with contextlib.suppress(Unavailable):
                await self.refresh_silences()
            await asyncio.sleep(2.0)

    async def refresh_silences(self) -> None:
        if self.ingest is None:
            return
        now = self.clock()
        stored = tuple(await self.store.list_silences(now=now))
        self.ingest.store_silences = stored
        active = sum(is_active(s.starts_at, s.ends_at, now) for s in stored)
        active += sum(is_active(c.starts_at, c.ends_at, now) for c in self.config.silences)
        self.metrics.silences_active.set(active)

    # --- silences (the admin API; the CLI uses it while the bridge runs) -------------------------

    async def add_silence(self, spec: Mapping[str, Any]) -> Silence:
        silence = silence_from_spec(spec, now=self.clock())
        await self.store.add_silence(silence)
        await self.refresh_silences()  # in force now, not at the next 2 s refresh
        log.info("silence added: node %s status %s until %s (%s)", silence.node,
                 ",".join(silence.status) if silence.status else "any", silence.ends_at.isoformat(),
                 silence.comment, extra={"silence_id": silence.id})
        return silence

    async def list_silences(self, *, include_expired: bool = False) -> list[Silence]:
        return await self.store.list_silences(now=self.clock(), include_expired=include_expired)

    async def expire_silence(self, silence_id: str) -> bool:
        found = await self.store.expire_silence(silence_id, now=self.clock())
        if found:
            await self.refresh_silences()
            log.info("silence expired", extra={"silence_id": silence_id})
        return found

    # --- incidents and nodes (the admin API; the CLI uses it while the bridge runs) ---------------

    async def list_incidents(self, *, include_resolved: bool) -> list[dict[str, Any]]:
        return incident_ops.incidents(await self.store.list_nodes(), self.clock(), include_resolved=include_resolved)

    async def get_incident(self, incident_id: str) -> dict[str, Any] | None:
        hit = incident_ops.find(await self.store.list_nodes(), incident_id)
        return hit[1].view(self.clock()) if hit else None

    async def ack_incident(self, incident_id: str, by: str) -> tuple[str, dict[str, Any] | None]:
        out = await incident_ops.ack(self.store, incident_id, by=by, now=self.clock())
        if out.status == "acked":
            log.info("incident acknowledged by %s", by, extra={"incident": incident_id})
        return out.status, out.incident

    async def resolve_incident(self, incident_id: str, by: str) -> tuple[str, dict[str, Any] | None]:
        out = await incident_ops.resolve(self.store, incident_id, self._ingest().policy, by=by, now=self.clock())
        if out.decision is not None:
            for seconds in out.decision.resolved:
                self.metrics.incident_duration.observe(seconds)
            if out.decision.jobs:
                self.dispatcher.wake()
        if out.status == "resolved":
            log.info("incident resolved by hand by %s", by, extra={"incident": incident_id})
        return out.status, out.incident

    async def list_nodes(self) -> list[dict[str, Any]]:
        now = self.clock()
        return [incident_ops.node_view(r, now) for r in await self.store.list_nodes()]

    async def node_record(self, node_id: str) -> dict[str, Any] | None:
        """The node's view and its stored record (``route`` decides a what-if on it)."""
        rec = next((r for r in await self.store.list_nodes() if r.state.node_id == node_id), None)
        return None if rec is None else {"node": incident_ops.node_view(rec, self.clock()), "record": rec.to_json()}

    async def forget_node(self, node_id: str) -> bool:
        found = await self.store.forget_node(node_id)
        if found:
            log.info("node state forgotten by an operator", extra={"node": node_id})
        return found

    # --- reload --------------------------------------------------------------------------------

    async def reload(self) -> list[str]:
        """Re-read the config file. Returns the problems; on any, the running config stays."""
        async with self._reload_lock:
            if self.config_path is None:
                return ["no config file to reload from"]
            if self.ingest is None:
                return ["the bridge is not started"]
            old = self.config
            try:
                loaded = config_mod.load(self.config_path)
                new = loaded.model_copy(update={"server": old.server, "storage": old.storage,
                                                "verification": old.verification})
                rules = validate(new)
                # Built before anything is swapped: a receiver that cannot be built (an unreadable
                # CA file) rejects the whole reload instead of leaving half of it in force.
                receivers = self._build_receivers(new)
            except ConfigError as exc:
                self.metrics.reload_success.set(0)
                self.metrics.reloads.labels("failure").inc()
                for problem in exc.problems:
                    log.error("reload rejected, the running config stays: %s", problem)
                self.last_reload = (self.clock(), list(exc.problems))
                return exc.problems
            for warning in new.warnings:
                log.warning("config: %s", warning)
            for section in ("server", "storage", "verification"):
                if getattr(old, section) != getattr(loaded, section):
                    log.warning("reload: changes to %s: take effect at the next restart", section)
            removed = set(old.receivers) - set(new.receivers)
            old_receivers = self._receivers
            self.config = new
            logs.reconfigure(new)
            self._install_receivers(new, receivers)
            assert self.ingest is not None
            self.ingest.rules = rules
            for name in removed:
                try:
                    n = await self.store.bury_receiver(name, now=self.clock(), error="receiver removed by reload")
                    if n:
                        self.metrics.count_deliveries(name, "dead", n)
                    log.warning("receiver %s removed by reload: %d pending deliveries are dead", name, n)
                except BridgeError as exc:
                    log.error("could not retire deliveries of removed receiver %s: %s", name, exc)
            for name, receiver in old_receivers.items():
                if self._receivers.get(name) is not receiver:
                    with contextlib.suppress(Exception):
                        await receiver.close()
            self.metrics.reload_success.set(1)
            self.metrics.reloads.labels("success").inc()
            self.metrics.reload_timestamp.set(self.clock().timestamp())
            self.last_reload = (self.clock(), [])
            log.info("config reloaded from %s", self.config_path)
            return []
