"""A store, real receivers on one HTTP session and a Dispatcher over them: the delivery tests' rig,
shared by tests that drive deliveries through the dispatcher (test_delivery, test_receivers_pagers)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from bridge.config import Config, parse
from bridge.decide import Policy, decider
from bridge.delivery import Dispatcher
from bridge.metrics import Metrics
from bridge.model import Delivery, Event, NodeState, RouteMatch
from bridge.receivers import build_receivers
from bridge.render import Renderer
from bridge.store import Store


def real_clock() -> datetime:
    return datetime.now(UTC)


@dataclass
class Rig:
    """A store, real receivers on one HTTP session, and a Dispatcher over them."""

    store: Store
    dispatcher: Dispatcher
    clock: Callable[[], datetime]
    config: Config
    next_ts: datetime = field(default_factory=lambda: datetime.now(UTC) - timedelta(minutes=5))

    async def enqueue(self, node: str, status: str, to: Sequence[str] = ("hook",)) -> list[str]:
        """Accept one event (newer than every earlier one) routed to ``to``; the job ids."""
        self.next_ts += timedelta(milliseconds=10)
        event = Event("NODE_STATUS_UPDATED", self.next_ts, node, status, {"nodeId": node, "status": status}, {},
                      self.clock())

        def routes(event: Event, prev: NodeState | None) -> list[RouteMatch]:
            return [RouteMatch("r", tuple(to))]

        now = self.clock()
        result = await self.store.accept(event, decider(event, Policy(routes), now), now=now, dedup_ttl=3600)
        assert result.status == "accepted"
        if len(result.deliveries) > result.handed_off:  # as ingest does: jobs wait in the store
            self.dispatcher.wake()
        return list(result.deliveries)

    async def job(self, job_id: str) -> Delivery:
        found = await self.store.get_delivery(job_id)
        assert found is not None
        return found


RigFactory = Callable[..., Awaitable[Rig]]


async def open_rig(
    store: Store,
    receivers: dict[str, Any],
    session: aiohttp.ClientSession,
    *,
    clock: Callable[[], datetime] = real_clock,
    lease: float = 30.0,
    poll: float = 0.05,
) -> Rig:
    cfg = parse({"verification": {"public_key": "unused"}, "receivers": receivers}, env={})
    await store.open()
    dispatcher = Dispatcher(store, metrics=Metrics(), clock=clock, lease=lease, poll_interval=poll)
    dispatcher.set_receivers(build_receivers(cfg, Renderer.from_config(cfg), session), dict(cfg.receivers))
    return Rig(store, dispatcher, clock, cfg)


async def close_rig(rig: Rig) -> None:
    await rig.dispatcher.stop(0)
    await rig.store.close()


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def hook(url: str, **settings: Any) -> dict[str, Any]:
    """A webhook receiver's config posting to ``url`` (``settings``: its other keys)."""
    return {"type": "webhook", "url": url, **settings}
