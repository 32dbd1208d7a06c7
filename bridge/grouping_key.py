"""Which group a firing belongs to (fleet digests): its route and the values of the route's
``group_by`` labels. Pure; decide.py tags jobs with it, grouping.py batches them by it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

from bridge.model import GroupTag


def group_tag(route: str, group_by: Sequence[str], labels: Mapping[str, str], interval: float) -> GroupTag:
    """The group of a firing on ``route`` for a node with ``labels``. A node without one of the
    ``group_by`` labels groups with the others that lack it (value ""). The key is a hash: stores
    index it, and route names and label values may be long or hold any character."""
    values = {name: str(labels.get(name, "")) for name in group_by}
    raw = json.dumps([route, sorted(values.items())], ensure_ascii=True, separators=(",", ":"))
    key = "g_" + hashlib.sha256(raw.encode()).hexdigest()[:24]
    return GroupTag(key, interval, values)
