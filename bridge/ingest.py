"""The front door's logic, without HTTP: verify → validate → node checks → age → record.

``Ingest.handle`` turns one request's raw parts into a ``Reply`` (reply.py); hookserver.py only adapts
it to HTTP. Keeping it here lets the whole decision table be tested without sockets.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import field
from datetime import datetime
from typing import Any

from bridge.config import Config, NodeConfig
from bridge.decide import Policy, decider
from bridge.errors import FieldError, NodeRejected, PayloadError, RequestError, Unavailable, VerificationError
from bridge.frozen import frozen
from bridge.incident_state import Policy as IncidentPolicy
from bridge.keys import KeyManager
from bridge.metrics import Metrics
from bridge.model import KNOWN_EVENT_TYPES, KNOWN_STATUSES, Event, Silence, utc_now
from bridge.nodes import NodeLabeler
from bridge.payload import node_hint, parse_json, to_event
from bridge.reply import Reply, error_reply, unavailable_reply
from bridge.routing import Router, compile_routes
from bridge.store import Store
from bridge.verify import decode_signature, needs_parse, verify

log = logging.getLogger("bridge.ingest")


@frozen
class Rules:
    """What ingest needs from one config; swapped whole on reload."""

    nodes: Mapping[str, NodeConfig] | None
    router: Router
    labeler: NodeLabeler
    config_silences: Sequence[Any]
    max_event_age: float
    max_clock_skew: float
    dedup_ttl: float
    incidents: IncidentPolicy = field(default_factory=IncidentPolicy)

    def policy(self, store_silences: Sequence[Silence]) -> Policy:
        """What ``decide`` needs, with the store's silences after the config's."""
        return Policy(self.router.match, (*self.config_silences, *store_silences), self.max_event_age,
                      self.max_clock_skew, self.incidents, self.labeler.labels_for)

    @classmethod
    def from_config(cls, cfg: Config) -> Rules:
        return cls(
            nodes=cfg.nodes,
            router=compile_routes(cfg),
            labeler=NodeLabeler.from_config(cfg),
            config_silences=tuple(cfg.silences),
            max_event_age=cfg.verification.max_event_age,
            max_clock_skew=cfg.verification.max_clock_skew,
            dedup_ttl=cfg.storage.dedup_ttl,
            incidents=IncidentPolicy.from_config(cfg),
        )


def _log_ids(event: Event) -> dict[str, str]:
    return {"event_id": event.id, "node": event.node_id, "node_status": event.status}


class Ingest:
    def __init__(
        self,
        rules: Rules,
        *,
        store: Store,
        keys: KeyManager,
        metrics: Metrics,
        clock: Callable[[], datetime] = utc_now,
        on_enqueued: Callable[[], None] = lambda: None,
        on_timer_set: Callable[[datetime], None] = lambda due: None,
        store_silences: Sequence[Silence] | None = (),
    ) -> None:
        self._rules = rules
        # None: the store's silences are not read yet (a start): nothing is decided without them,
        # or an event a stored silence covers would page (503 until ``store_silences`` is set).
        self._silences_known = store_silences is not None
        self._store_silences: Sequence[Silence] = store_silences or ()
        self._policy = rules.policy(())
        self._store = store
        self._keys = keys
        self._metrics = metrics
        self._clock = clock
        self._on_enqueued = on_enqueued
        self._on_timer_set = on_timer_set

    @property
    def policy(self) -> Policy:
        """The decision's policy in force (config and store silences): the timer loop uses it too."""
        return self._policy

    # Both swapped whole (reload, silence refresh): the policy is rebuilt once, not per request.
    @property
    def rules(self) -> Rules:
        return self._rules

    @rules.setter
    def rules(self, rules: Rules) -> None:
        self._rules = rules
        self._policy = rules.policy(self._store_silences)

    @property
    def silences_known(self) -> bool:
        """Whether the store's silences have been read (see ``__init__``)."""
        return self._silences_known

    @property
    def store_silences(self) -> Sequence[Silence]:
        return self._store_silences

    @store_silences.setter
    def store_silences(self, silences: Sequence[Silence]) -> None:
        self._silences_known = True
        self._store_silences = silences
        self._policy = self._rules.policy(silences)

    def refuse(self, exc: RequestError) -> None:
        """Count and log a request refused before it reached ``handle`` (e.g. body too large)."""
        self._metrics.count_event(exc.code)
        extra: dict[str, Any] = {"status": exc.status, "error": exc.code}
        if isinstance(exc, NodeRejected) and exc.node is not None:
            extra["node"] = exc.node  # which node was refused (the text format escapes it)
        log.info("refused: %s", exc.detail, extra=extra)

    async def handle(self, body: bytes, signature: str | None, path_node: str | None = None) -> Reply:
        try:
            return await self._handle(body, signature, path_node)
        except RequestError as exc:
            self.refuse(exc)
            return error_reply(exc)
        except Unavailable as exc:
            self._metrics.count_event("unavailable")
            log.warning("answering 503: %s", exc.detail)
            return unavailable_reply(exc)

    async def _handle(self, body: bytes, signature_header: str | None, path_node: str | None) -> Reply:
        signature = decode_signature(signature_header)
        # A body the second try would refuse (verify.needs_parse: too large, too many values) needs
        # nothing parsed for its signature but the node whose own key may sign it, read at C speed:
        # a forged one is refused before the full parse (thousands of floats cost milliseconds there).
        verified = not needs_parse(body)
        if verified:
            # (A node in the path needs no hint: a body naming another node is refused whatever signs it.)
            hint = node_hint(body) if self._keys.per_node and path_node is None else None
            await self._verify(body, None, signature, (path_node, hint))
        try:
            doc: Any = parse_json(body)
            parse_error: RequestError | None = None
        except (PayloadError, FieldError) as exc:  # FieldError: a number past a double's range (422)
            doc, parse_error = None, exc
        body_node = doc.get("nodeId") if isinstance(doc, dict) else None
        if not isinstance(body_node, str):
            body_node = None
        if not verified:
            await self._verify(body, doc, signature, (path_node, body_node))
        if parse_error is not None:
            raise parse_error

        rules = self.rules
        now = self._clock()
        if rules.nodes is not None and body_node is not None and body_node not in rules.nodes:
            raise NodeRejected("nodeId is not one of the configured nodes", node=body_node)
        labels = rules.labeler.labels_for(body_node) if body_node is not None else None
        event = to_event(doc, path_node=path_node, labels=labels or None, received_at=now, escaped=b"\\u" in body)
        return await self._record(event, now, rules)

    async def _verify(
        self, body: bytes, doc: Any, signature: bytes, nodes: tuple[str | None, str | None]
    ) -> None:
        started = time.perf_counter()
        ok = verify(body, doc, signature, self._keys.keys_for(nodes))
        self._metrics.verify_seconds.observe(time.perf_counter() - started)
        # The key may have been rotated: refresh (rate-limited) and try once more.
        if not ok and await self._keys.refresh_after_failure():
            ok = verify(body, doc, signature, self._keys.keys_for(nodes))
        if not ok:
            raise VerificationError("signature does not match the body under any configured key")

    async def _record(self, event: Event, now: datetime, rules: Rules) -> Reply:
        if not self._silences_known:
            raise Unavailable("silences not read from storage yet", retry_after=2.0)
        age = (now - event.timestamp).total_seconds()
        if event.status not in KNOWN_STATUSES or event.event_type not in KNOWN_EVENT_TYPES:
            self._metrics.unknown_status.inc()
            log.info(
                "undocumented status or event type %r/%r accepted", event.status, event.event_type,
                extra=_log_ids(event),
            )
        if -age > rules.max_clock_skew:
            log.warning("event dated %.0fs in the future (clock skew?); accepted, ordered as if dated "
                        "at its arrival", -age, extra=_log_ids(event))

        result = await self._store.accept(
            event, decider(event, self._policy, now), now=now, dedup_ttl=rules.dedup_ttl
        )
        self._metrics.count_event(result.status)
        for seconds in result.resolved:
            self._metrics.incident_duration.observe(seconds)
        if result.next_due is not None:
            self._on_timer_set(result.next_due)
        if log.isEnabledFor(logging.INFO):  # the extra dict is per request: skip it when nobody reads it
            log.info("event %s", result.status, extra={**_log_ids(event), "deliveries": len(result.deliveries)})
        if result.status == "duplicate":
            return Reply(200, {"status": "duplicate", "id": result.event_id})
        if result.status == "stale":
            return Reply(200, {"status": "ignored", "reason": "stale", "id": result.event_id})
        reply: dict[str, Any] = {"status": "accepted", "id": result.event_id, "deliveries": len(result.deliveries)}
        if result.status == "out_of_order":
            reply["note"] = "older than the node's newest event: recorded, not notified"
        elif result.status == "silenced":
            reply["silenced"] = result.silenced_by
        if len(result.deliveries) > result.handed_off:  # handed-off jobs are being sent already
            self._on_enqueued()
        return Reply(200, reply)
