"""Read one series out of Prometheus text, whatever order the labels are rendered in."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def series(text: str, name: str, **labels: str) -> float:
    """The value of the sample ``name`` whose labels are exactly ``labels``; 0.0 when absent."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def present(text: str, name: str, **labels: str) -> bool:
    """Whether the sample exists at all (a zero is present; a missing series is not)."""
    return any(
        sample.name == name and sample.labels == labels
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    )
