"""The Store contract: every backend (memory, sqlite, redis) passes the same tests.

``accept`` is the outbox's one transaction: dedup record, event, node state and the delivery
jobs that routing chose commit together, so a 200 answered after it means nothing is lost.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from bridge.config import RetentionConfig
from bridge.model import Delivery, DeliveryState, Event, NodeState, RouteMatch, Silence, context_fields

AcceptStatus = Literal["accepted", "duplicate", "stale", "out_of_order", "silenced"]

# Routing, given the node's previous state. Must be pure: a backend with optimistic concurrency
# (Redis) may call it more than once for one event.
Plan = Callable[[NodeState | None], Sequence[RouteMatch]]


@dataclass(frozen=True, slots=True)
class Acceptance:
    status: AcceptStatus
    event_id: str
    deliveries: tuple[str, ...] = ()  # ids of the jobs created
    previous: NodeState | None = None


@dataclass(frozen=True, slots=True)
class OutboxStats:
    pending: int
    inflight: int
    dead: int
    done: int
    oldest_pending_age: float  # seconds; 0 when nothing is pending


class Store(Protocol):
    """Storage for dedup records, events, node state, delivery jobs, silences and metadata."""

    durable: bool

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise StorageUnavailable when the store cannot be written."""

    async def accept(
        self,
        event: Event,
        plan: Plan,
        *,
        now: datetime,
        dedup_ttl: float,
        mode: Literal["notify", "stale", "silenced"] = "notify",
    ) -> Acceptance:
        """Record ``event`` once. Exactly one of many concurrent identical calls gets 'accepted'.

        mode="stale"/"silenced": recorded (dedup + event) but never notified; "stale" does not
        touch node state. An event older than the node's newest known one is 'out_of_order':
        recorded, not notified, node state unchanged. Otherwise ``plan(prev)`` names the routes;
        a route whose repeat_interval has not passed since it last fired for this node and status
        is skipped; each receiver gets one job (its first route)."""
        ...

    async def claim(
        self, *, now: datetime, limit: int, lease: float, receivers: Collection[str] | None = None
    ) -> list[Delivery]:
        """Take due jobs, oldest first, at most one in flight per (receiver, node), in event order.

        ``receivers``: only jobs for these receivers (the dispatcher asks per receiver with free
        capacity, so a slow receiver's jobs are not claimed only to wait in memory).

        A job stays 'inflight' until complete/reschedule/bury or until ``lease`` seconds pass (its
        worker died), when it is due again."""
        ...

    async def complete(self, delivery_id: str, *, now: datetime) -> None: ...

    async def reschedule(
        self, delivery_id: str, *, now: datetime, next_attempt_at: datetime, error: str
    ) -> None: ...

    async def bury(self, delivery_id: str, *, now: datetime, error: str) -> None:
        """Mark dead: attempts exhausted or permanent failure."""

    async def bury_receiver(self, receiver: str, *, now: datetime, error: str) -> int:
        """Every unfinished job for ``receiver`` goes dead (a reload removed it)."""
        ...

    async def get_delivery(self, delivery_id: str) -> Delivery | None: ...

    async def list_deliveries(
        self, *, state: DeliveryState | None = None, limit: int = 100
    ) -> list[Delivery]: ...

    async def retry_deliveries(self, ids: Sequence[str] | None, *, now: datetime) -> int:
        """Dead (or pending) jobs become due now; ``None`` means every dead job."""
        ...

    async def purge_dead(self) -> int: ...

    async def stats(self, *, now: datetime) -> OutboxStats: ...

    async def prune(self, *, now: datetime, retention: RetentionConfig) -> int:
        """Drop expired dedup records, old events, done and dead jobs. Returns rows removed."""
        ...

    async def node_state(self, node_id: str) -> NodeState | None: ...

    async def list_nodes(self) -> list[NodeState]:
        """Every node the store knows, in no particular order (the console's fleet page)."""
        ...

    async def add_silence(self, silence: Silence) -> None: ...

    async def list_silences(self, *, now: datetime, include_expired: bool = False) -> list[Silence]: ...

    async def expire_silence(self, silence_id: str, *, now: datetime) -> bool: ...

    async def get_meta(self, key: str) -> str | None: ...

    async def set_meta(self, key: str, value: str) -> None: ...


def select_deliveries(
    matches: Sequence[RouteMatch], last_fired: dict[str, float], now_ts: float
) -> tuple[list[tuple[str, str]], list[str]]:
    """Which (route, receiver) pairs get a job, and which routes fired.

    ``last_fired`` maps a route to when it last fired for this node and status (unix seconds).
    A route still inside its repeat_interval is skipped; a receiver named by several routes gets
    one job, under the first route that fired.
    """
    pairs: list[tuple[str, str]] = []
    fired: list[str] = []
    taken: set[str] = set()
    for m in matches:
        if m.repeat_interval > 0:
            last = last_fired.get(m.route)
            if last is not None and now_ts - last < m.repeat_interval:
                continue
        fired.append(m.route)
        for receiver in m.receivers:
            if receiver not in taken:
                taken.add(receiver)
                pairs.append((m.route, receiver))
    return pairs, fired


# Compact JSON, as stored in every backend (C encoder; no spaces to store or parse). ASCII-only:
# a body may carry a lone surrogate ("\\ud800"), which has no UTF-8 form to store.
compact_json = json.JSONEncoder(separators=(",", ":")).encode


def job_context(event_json: str, route: str, receiver: str, previous: NodeState | None) -> str:
    """``Alert.context()`` as JSON, around the event's JSON encoded once for all of its jobs."""
    rest = compact_json(
        context_fields(route, receiver, previous.status if previous else None, previous.since if previous else None)
    )
    return f'{{"event":{event_json},{rest[1:]}'
