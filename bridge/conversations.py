"""What a receiver may know and write of its conversations: the one interface between receivers
and the store's conversation log (bridge/store/base.py, ``ConversationLog``).

A receiver gets a ``Conversations`` bound to its own name (the app builds one per receiver), so
it reads and writes only its own records, on the bridge's clock, kept for
``storage.retention.conversations`` after the last message of the conversation. Jobs of one
(receiver, node) go out one at a time in event order (the store's claim), so the firing's
reference is recorded before that node's updates and resolution are sent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime

from bridge.errors import RetryLater, Unavailable
from bridge.store.base import ConversationLog

log = logging.getLogger("bridge.conversations")


class Conversations:
    def __init__(self, store: ConversationLog, receiver: str, *, clock: Callable[[], datetime], keep: float) -> None:
        self._store = store
        self.receiver = receiver
        self._clock = clock
        self._keep = keep

    async def root(self, key: str) -> dict[str, str] | None:
        """The reference recorded for ``key`` (an incident id), or None. Storage away: RetryLater
        (nothing was sent yet, so the attempt can simply come again)."""
        try:
            return await self._store.get_conversation(self.receiver, key, now=self._clock())
        except Unavailable as exc:
            raise RetryLater(f"conversation log unavailable: {exc.detail}") from None

    async def set_root(self, key: str, ref: Mapping[str, str]) -> bool:
        """Record (or refresh) ``key``'s reference; a digest calls this once per member incident
        with the same reference, marked with a ``"digest"`` entry (Slack then threads each member's
        messages under it but leaves editing the shared root to the digest). A failure is logged,
        not raised: the message it refers to is already out, and sending it again would duplicate
        it; the next message of the incident then starts a new conversation."""
        try:
            await self._store.record_conversation(self.receiver, key, ref, now=self._clock(), ttl=self._keep)
        except Unavailable as exc:
            log.warning("receiver %s: could not record the conversation of %s (%s); its next message "
                        "starts a new one", self.receiver, key, exc.detail)
            return False
        return True


ConversationSource = Callable[[str], Conversations]
"""Receiver name → its ``Conversations`` (what the app hands to ``build_receivers``)."""


def conversation_source(store: ConversationLog, *, clock: Callable[[], datetime], keep: float) -> ConversationSource:
    def for_receiver(name: str) -> Conversations:
        return Conversations(store, name, clock=clock, keep=keep)

    return for_receiver
