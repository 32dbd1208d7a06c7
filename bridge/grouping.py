"""Fleet digests at send time: the firings of one group, claimed together, go out as one message.

How a group forms (the why is in docs/configuration.md, "Fleet digests"):

- decide.py tags each firing of a route with ``group_wait`` with its group (route and ``group_by``
  label values: ``Alert.group``) and holds it that long (the job's first attempt is due then). The
  job is in the outbox like any other: nothing accepted depends on this process's memory.
- When the first of them comes due, ``Store.claim(group_limit=...)`` takes, in the same atomic
  step, every other job of the receiver with that tag (pending, whatever its due time; in flight
  past its lease) that is the head of its order key. So all firings that arrived within
  ``group_wait`` of the first are claimed together, by one replica, and two replicas never split
  a group between them.
- :func:`plan_send` (pure) turns those jobs into one send: a ``digest`` alert listing them, or,
  for a group of one, the member's own firing (a user expects a plain alert for one node). The
  group's state per receiver (its id, when its latest message was claimed, the oldest member of its
  first and of its latest message) is kept in the store's metadata: members that arrive within
  ``group_interval`` of the group's latest message join it as a follow-up (``Digest.update``, same
  ``Digest.id``), later ones start a new group. A message sent again (a failed send, a crashed
  replica) is recognised by its oldest member and keeps its id and kind.
- The digest's outcome is each member's: delivered, retried or buried together. A SIGKILL leaves
  the members in flight; their lease runs out (SQLite: at the next start) and they are claimed
  again, together with whatever joined meanwhile.

Resolutions, reminders, escalations and acks stay per incident: only firings are grouped.
Receivers that cannot merge incidents (pagers: one event per dedup key) set
``sends_digests = False`` and get each member's own firing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from bridge.errors import Unavailable
from bridge.frozen import frozen
from bridge.model import Delivery, Digest, DigestMember, format_timestamp, parse_timestamp
from bridge.store import Store

log = logging.getLogger("bridge.grouping")

MAX_MEMBERS = 200  # jobs in one digest (docs/configuration.md says so); more go in a follow-up
# Store.claim's group_limit: the mates claimed with a group's due job, which is a member too.
MATES = MAX_MEMBERS - 1


@frozen
class GroupState:
    """A group as one receiver last heard of it (stored as JSON under :func:`meta_key`). A message
    is known by its oldest member: ``first`` for the group's first message, ``last`` for its latest
    (equal until a follow-up), so a resend of either keeps its id and its kind."""

    id: str
    at: datetime  # when its latest message was claimed
    first: str  # the delivery id of the oldest member of the group's first message
    last: str  # the same for its latest message

    def to_json(self) -> str:
        return json.dumps({"id": self.id, "at": format_timestamp(self.at), "first": self.first,
                           "last": self.last}, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> GroupState:
        data = json.loads(raw)
        return cls(str(data["id"]), parse_timestamp(data["at"]), str(data["first"]), str(data["last"]))


def meta_key(receiver: str, group_key: str) -> str:
    return f"group:{receiver}|{group_key}"


def group_id(receiver: str, group_key: str, first: str) -> str:
    """A new group's id: stable for its first message's oldest member, so a resend keeps it."""
    return "grp_" + hashlib.sha256(f"{receiver}|{group_key}|{first}".encode()).hexdigest()[:20]


def digest_delivery_id(members: Sequence[Delivery]) -> str:
    """The digest's own id (webhook-id, Message-ID): the same for the same members on a resend."""
    joined = "|".join(sorted(m.id for m in members))
    return "dgs_" + hashlib.sha256(joined.encode()).hexdigest()[:24]


@frozen
class Send:
    """What to send for one claimed group: ``unit`` (a digest, or the lone member with its group
    noted) and the jobs it settles."""

    unit: Delivery
    members: tuple[Delivery, ...]
    state: GroupState


def plan_send(members: Sequence[Delivery], state: GroupState | None, now: datetime) -> Send:
    """One send for the jobs of one group claimed together (oldest first), given the group's
    stored state for their receiver (None: unknown). Pure."""
    first = members[0]
    tag = first.alert.group
    assert tag is not None, "only jobs with a group tag are planned"
    receiver = first.receiver
    if state is not None and first.id == state.first:  # its first message again (a retry, a crash)
        gid, update, new_state = state.id, False, replace(state, at=max(state.at, now))
    elif state is not None and (first.id == state.last or (
            tag.interval and first.created_at <= state.at + timedelta(seconds=tag.interval))):
        # a follow-up (or its resend): these joined a group already told
        gid, update, new_state = state.id, True, replace(state, at=max(state.at, now), last=first.id)
    else:
        gid, update = group_id(receiver, tag.key, first.id), False
        new_state = GroupState(gid, now, first.id, first.id)
    digest = Digest(gid, tuple(_member(m) for m in members), update, dict(tag.labels))
    if len(members) == 1 and not update:
        unit = replace(first, alert=replace(first.alert, digest=digest))
        return Send(unit, (first,), new_state)
    alert = replace(first.alert, delivery_id=digest_delivery_id(members), kind="digest", incident=None,
                    previous_status=None, previous_since=None, facts={}, digest=digest)
    unit = Delivery(alert.delivery_id, alert, "inflight", max(m.attempts for m in members),
                    min(m.created_at for m in members), now, None, now)
    return Send(unit, tuple(members), new_state)


def _member(job: Delivery) -> DigestMember:
    a = job.alert
    return DigestMember(job.id, a.event.node_id, a.event.status, a.incident, a.event.id)


class Grouper:
    """Turns claimed jobs into sends, remembering which jobs each digest settles."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._members: dict[str, tuple[str, ...]] = {}  # a digest's id -> its members' job ids

    def ids(self, unit: Delivery) -> tuple[str, ...]:
        """The ids of the jobs a send settles: a digest's members', else the job's own."""
        return self._members.get(unit.id) or (unit.id,)

    def forget(self, unit: Delivery) -> None:
        self._members.pop(unit.id, None)

    async def bundle(self, jobs: Sequence[Delivery], *, now: datetime, digests: bool) -> list[Delivery]:
        """The sends for jobs as one claim returned them (a grouped job's mates follow it).
        ``digests`` False (pagers): every job goes alone, as it is."""
        groups: dict[str, list[Delivery]] = {}
        order: list[Delivery | list[Delivery]] = []
        for job in jobs:
            tag = job.alert.group
            if tag is None or not digests:
                order.append(job)
                continue
            members = groups.get(tag.key)
            # Full: a claim that took two due jobs of one group, each with its mates. The rest is
            # a follow-up (planned after this one, it finds the group's state this one recorded).
            if members is None or len(members) >= MAX_MEMBERS:
                members = groups[tag.key] = []
                order.append(members)
            members.append(job)
        out: list[Delivery] = []
        for item in order:
            out.append(await self._plan(item, now) if isinstance(item, list) else item)
        return out

    async def _plan(self, members: list[Delivery], now: datetime) -> Delivery:
        first = members[0]
        assert first.alert.group is not None
        key = meta_key(first.receiver, first.alert.group.key)
        state: GroupState | None = None
        try:
            raw = await self._store.get_meta(key)
            state = GroupState.from_json(raw) if raw else None
        except Unavailable as exc:  # the storage's blip must not hold the alerts: a new group
            log.warning("cannot read the state of group %s: %s", key, exc.detail)
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable state of group %s; starting a new group", key)
        send = plan_send(members, state, now)
        try:
            await self._store.set_meta(key, send.state.to_json())
        except Unavailable as exc:
            log.warning("cannot record the state of group %s: %s", key, exc.detail)
        # a digest (of one, too, as a follow-up): its members settle with it
        if [m.id for m in send.members] != [send.unit.id]:
            self._members[send.unit.id] = tuple(m.id for m in send.members)
        return send.unit
