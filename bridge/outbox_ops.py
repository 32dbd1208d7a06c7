"""Operator actions on the outbox, over any Store: what the admin API, the console and the CLI share.

A retry leaves dead a delivery that is outdated (``decide.outdated``): a firing, a reminder (...) of an
incident that has ended since, or a flapping notice of an episode that has, would go out after
what closed it and re-open the page. Only dead ones: a pending job still has its place before
whatever closes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from bridge.decide import NodeRecord, outdated
from bridge.frozen import frozen
from bridge.model import Delivery, DeliveryState

DEAD_READ_LIMIT = 100_000  # dead deliveries one "retry every dead one" looks at
_CHUNK = 1000  # ids per store call


class Outbox(Protocol):
    """What a retry needs of a store."""

    async def list_deliveries(self, *, state: DeliveryState | None = None, limit: int = 100) -> list[Delivery]: ...

    async def get_delivery(self, delivery_id: str) -> Delivery | None: ...

    async def list_nodes(self) -> list[NodeRecord]: ...

    async def retry_deliveries(self, ids: Sequence[str] | None, *, now: datetime) -> int: ...


@frozen
class Retried:
    retried: int
    skipped: tuple[Delivery, ...] = ()  # outdated: what they speak of is over
    more: bool = False  # every dead one asked for, and more than DEAD_READ_LIMIT are dead: ask again

    def skipped_view(self) -> list[dict[str, str]]:
        return [{"id": d.id, "kind": d.alert.kind, "incident": d.alert.incident.id if d.alert.incident else "",
                 "node": d.alert.event.node_id} for d in self.skipped]


async def retry(store: Outbox, ids: Sequence[str] | None, *, now: datetime) -> Retried:
    """Queue dead (or pending) deliveries again, due now: ``ids``, or every dead one (None)."""
    if ids is None:
        targets = await store.list_deliveries(state="dead", limit=DEAD_READ_LIMIT)
    else:
        targets = [d for i in dict.fromkeys(ids) if (d := await store.get_delivery(i)) is not None]
    records = {}
    if any(d.state == "dead" and (d.alert.incident is not None or d.alert.kind == "flapping") for d in targets):
        records = {r.node_id: r for r in await store.list_nodes()}
    skipped = tuple(d for d in targets
                    if d.state == "dead" and outdated(d.alert, records.get(d.alert.event.node_id)))
    gone = {d.id for d in skipped}
    wanted = [d.id for d in targets if d.id not in gone]
    n = 0
    for i in range(0, len(wanted), _CHUNK):
        n += await store.retry_deliveries(wanted[i:i + _CHUNK], now=now)
    return Retried(n, skipped, ids is None and len(targets) >= DEAD_READ_LIMIT)
