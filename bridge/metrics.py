"""Prometheus metrics. One ``Metrics`` per app, on its own registry (passed in, never global).

Label values come only from the config (receiver names) or fixed sets (outcomes), never from
request data, so a sender cannot blow up cardinality.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from bridge import __version__

EVENT_OUTCOMES = (
    "accepted", "duplicate", "stale", "out_of_order", "silenced", "missing_signature", "invalid_signature",
    "node_rejected", "invalid_json", "invalid_field", "body_too_large", "length_required", "unavailable",
)
DELIVERY_OUTCOMES = ("delivered", "retry", "dead")
RELOAD_OUTCOMES = ("success", "failure")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter("alert_bridge_events_total", "Webhook requests by outcome", ["outcome"], registry=r)
        # Label children bound once (see _child), per request and per delivery.
        self._children: dict[tuple[Any, ...], Any] = {}
        for outcome in EVENT_OUTCOMES:
            self._child(self.events, outcome)
        self.unknown_status = Counter(
            "alert_bridge_unknown_status_events_total", "Accepted events whose status or type is not documented",
            registry=r,
        )
        self.verify_seconds = Histogram(
            "alert_bridge_verification_seconds", "Time spent verifying a signature",
            buckets=(0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.005, 0.05, 1.0), registry=r,
        )
        self.deliveries = Counter(
            "alert_bridge_deliveries_total", "Delivery attempts by receiver and outcome", ["receiver", "outcome"],
            registry=r,
        )
        self.delivery_seconds = Histogram(
            "alert_bridge_delivery_seconds", "Time a receiver took to send", ["receiver"], registry=r,
        )
        self.pending = Gauge("alert_bridge_deliveries_pending", "Jobs waiting to be sent", registry=r)
        self.inflight = Gauge("alert_bridge_deliveries_inflight", "Jobs being sent", registry=r)
        self.dead = Gauge("alert_bridge_deliveries_dead", "Jobs that gave up", registry=r)
        self.oldest_pending = Gauge(
            "alert_bridge_oldest_pending_seconds", "Age of the oldest unsent job", registry=r
        )
        self.key_loaded_at = Gauge(
            "alert_bridge_public_key_loaded_timestamp_seconds", "When the public key was last loaded", registry=r
        )
        self.key_age = Gauge(
            "alert_bridge_public_key_age_seconds", "Seconds since the public key was last loaded or confirmed",
            registry=r,
        )
        self.key_refresh_failures = Counter(
            "alert_bridge_public_key_refresh_failures_total", "Failed public key fetches", registry=r
        )
        self.reload_success = Gauge(
            "alert_bridge_config_last_reload_successful", "1 if the last config reload succeeded", registry=r
        )
        self.reload_timestamp = Gauge(
            "alert_bridge_config_last_reload_success_timestamp_seconds", "When the config was last loaded",
            registry=r,
        )
        self.reloads = Counter(
            "alert_bridge_config_reloads_total", "Config reloads (SIGHUP, POST /-/reload) by outcome", ["outcome"],
            registry=r,
        )
        for outcome in RELOAD_OUTCOMES:
            self.reloads.labels(outcome)
        self.silences_active = Gauge(
            "alert_bridge_silences_active", "Silences in force now (storage and config)", registry=r
        )
        self.incidents_open = Gauge("alert_bridge_incidents_open", "Incidents open now (all nodes)", registry=r)
        self.incident_duration = Histogram(
            "alert_bridge_incident_duration_seconds", "How long incidents were open, observed on resolution",
            buckets=(30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400), registry=r,
        )
        self.timers_fired = Counter(
            "alert_bridge_timer_applies_total", "Nodes whose due timers (for, reminders, escalations) were applied",
            registry=r,
        )
        self.build_info = Gauge("alert_bridge_build_info", "Always 1; the version is a label", ["version"],
                                registry=r)
        self.build_info.labels(__version__).set(1)
        self.reload_success.set(1)

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once: ``labels()`` validates and locks on every
        call, and costs more than the increment that follows it."""
        key = (id(metric), *labels)  # the metrics live as long as this object
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def count_event(self, outcome: str) -> None:
        self._child(self.events, outcome).inc()

    def count_deliveries(self, receiver: str, outcome: str, n: int = 1) -> None:
        self._child(self.deliveries, receiver, outcome).inc(n)

    def observe_delivery(self, receiver: str, seconds: float) -> None:
        self._child(self.delivery_seconds, receiver).observe(seconds)

    def for_receivers(self, names: list[str]) -> None:
        """Create every (receiver, outcome) series up front so dashboards see zeros, not gaps."""
        for name in names:
            for outcome in DELIVERY_OUTCOMES:
                self.deliveries.labels(name, outcome)

    def render(self) -> bytes:
        return generate_latest(self.registry)
