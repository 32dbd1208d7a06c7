"""The conversation log (``bridge.store.base.ConversationLog``) in Redis, shared by every replica.

Keys (``P`` = prefix; ``m`` = ``"<len(receiver)>:<receiver>:<key>"``, unambiguous whatever the
receiver's name holds)::

    P conv:<m>      string JSON {"ref": {...}, "exp": expires (unix s)}; PX = ttl + 1 d (backstop)
    P conv:idx      zset  m -> expires (unix s)        prune.lua drops the expired ones
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from datetime import datetime
from typing import cast

from redis.asyncio import Redis

from bridge.store.base import compact_json

_BACKSTOP_MS = 86_400_000  # the key outlives its logical expiry by a day, in case prune never runs


def member(receiver: str, key: str) -> str:
    return f"{len(receiver)}:{receiver}:{key}"


class RedisConversations:
    """Mixed into RedisStore, which provides the client, key names and the error guard."""

    _client: Callable[[], Redis]
    _k: Callable[..., str]
    _guard: Callable[[], AbstractContextManager[None]]

    async def get_conversation(self, receiver: str, key: str, *, now: datetime) -> dict[str, str] | None:
        r = self._client()
        with self._guard():
            raw = cast(str | None, await r.get(self._k("conv:", member(receiver, key))))
        if raw is None:
            return None
        data = json.loads(raw)
        return dict(data["ref"]) if float(data["exp"]) > now.timestamp() else None

    async def record_conversation(
        self, receiver: str, key: str, ref: Mapping[str, str], *, now: datetime, ttl: float
    ) -> None:
        m = member(receiver, key)
        expires = now.timestamp() + ttl
        r = self._client()
        with self._guard():
            async with r.pipeline(transaction=True) as pipe:  # value and index together
                pipe.set(self._k("conv:", m), compact_json({"ref": dict(ref), "exp": expires}),
                         px=max(1, round(ttl * 1000)) + _BACKSTOP_MS)
                pipe.zadd(self._k("conv:idx"), {m: expires})
                await pipe.execute()
