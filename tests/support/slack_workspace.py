"""What a Slack workspace shows for chat.postMessage and chat.update, as Slack documents them:
the state behind FakeSlack's Web API (tests/support/fakes.py).

- chat.postMessage takes a channel name ("#alerts") or ID and answers the channel's *ID* and the
  message's ``ts``; ``thread_ts`` makes it a reply in that root's thread (``thread_not_found`` when
  the root is unknown or deleted); ``reply_broadcast`` also shows the reply in the channel.
- chat.update takes only the channel ID (a "#name" answers ``channel_not_found``) and the ``ts`` of
  a message (``message_not_found`` when unknown or deleted, ``cant_update_message`` for a message
  someone else posted); blocks and attachments that are left out stay as they were.

Every channel records what a reader would see: its roots in order, each with its replies in order
and the edits it went through.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SlackMessage:
    ts: str
    payload: dict[str, Any]  # the content shown now (after any edits)
    thread_ts: str | None = None
    broadcast: bool = False
    foreign: bool = False  # posted by someone else: the bot cannot edit it
    deleted: bool = False
    edits: list[dict[str, Any]] = field(default_factory=list)  # chat.update payloads, in order
    replies: list[SlackMessage] = field(default_factory=list)

    @property
    def headline(self) -> str:
        """The header block's text (the text field when there is none)."""
        for block in self.payload.get("blocks") or []:
            if block.get("type") == "header":
                return str(block["text"]["text"])
        return str(self.payload.get("text", ""))

    @property
    def colour(self) -> str | None:
        attachments = self.payload.get("attachments") or []
        return str(attachments[0].get("color")) if attachments else None


@dataclass
class SlackChannel:
    id: str
    name: str
    roots: list[SlackMessage] = field(default_factory=list)
    by_ts: dict[str, SlackMessage] = field(default_factory=dict)

    def live_roots(self) -> list[SlackMessage]:
        return [m for m in self.roots if not m.deleted]


def channel_id(name: str) -> str:
    """A stable ID for a channel name; an ID-looking entry (C0FAKE) is its own ID."""
    if not name.startswith("#") and name[:1] in "CGD" and name.isupper():
        return name
    return "C" + hashlib.sha256(name.encode()).hexdigest()[:10].upper()


class SlackWorkspace:
    def __init__(self, channels: tuple[str, ...]) -> None:
        self.channels: dict[str, SlackChannel] = {}  # by ID
        self._names: dict[str, str] = {}  # "#name" / "name" / ID -> ID
        self._ts = itertools.count(1)
        for name in channels:
            self.add_channel(name)

    def add_channel(self, name: str) -> SlackChannel:
        cid = channel_id(name)
        channel = self.channels.setdefault(cid, SlackChannel(cid, name))
        self._names[name] = cid
        self._names[cid] = cid
        if name.startswith("#"):
            self._names[name[1:]] = cid
        return channel

    def channel(self, name_or_id: str) -> SlackChannel:
        return self.channels[self._names[name_or_id]]

    def _next_ts(self) -> str:
        n = next(self._ts)
        return f"{1_765_000_000 + n}.{n:06d}"

    def post_foreign(self, name_or_id: str, text: str) -> SlackMessage:
        """A message someone else posted (the bot may not edit it)."""
        channel = self.channel(name_or_id)
        msg = SlackMessage(self._next_ts(), {"text": text}, foreign=True)
        channel.roots.append(msg)
        channel.by_ts[msg.ts] = msg
        return msg

    def delete(self, name_or_id: str, ts: str) -> None:
        """A reader deleted the message (its thread's replies stay, as in Slack)."""
        self.channel(name_or_id).by_ts[ts].deleted = True

    def post_message(self, payload: dict[str, Any]) -> dict[str, Any]:
        cid = self._names.get(str(payload.get("channel")))
        if cid is None:
            return {"ok": False, "error": "channel_not_found"}
        if not (payload.get("text") or payload.get("blocks") or payload.get("attachments")):
            return {"ok": False, "error": "no_text"}
        channel = self.channels[cid]
        thread_ts = payload.get("thread_ts")
        root = None
        if thread_ts is not None:
            root = channel.by_ts.get(str(thread_ts))
            if root is None or root.deleted or root.thread_ts is not None:
                return {"ok": False, "error": "thread_not_found"}
        msg = SlackMessage(self._next_ts(), dict(payload), str(thread_ts) if thread_ts else None,
                           broadcast=bool(payload.get("reply_broadcast")))
        channel.by_ts[msg.ts] = msg
        if root is not None:
            root.replies.append(msg)
        else:
            channel.roots.append(msg)
        return {"ok": True, "channel": cid, "ts": msg.ts, "message": {"text": payload.get("text"), "ts": msg.ts}}

    def update(self, payload: dict[str, Any]) -> dict[str, Any]:
        cid = str(payload.get("channel"))
        if cid not in self.channels:  # chat.update takes the ID only, never the #name
            return {"ok": False, "error": "channel_not_found"}
        msg = self.channels[cid].by_ts.get(str(payload.get("ts")))
        if msg is None or msg.deleted:
            return {"ok": False, "error": "message_not_found"}
        if msg.foreign:
            return {"ok": False, "error": "cant_update_message"}
        if not (payload.get("text") or payload.get("blocks") or payload.get("attachments")):
            return {"ok": False, "error": "no_text"}
        msg.edits.append(dict(payload))
        msg.payload = {**msg.payload, **{k: v for k, v in payload.items() if k in ("text", "blocks", "attachments")}}
        return {"ok": True, "channel": cid, "ts": msg.ts, "text": payload.get("text")}
