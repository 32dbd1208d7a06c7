"""Which nodes are let in and which labels they carry. Pure: no I/O.

Two separate choices in the config: ``nodes:`` is the allow-list (when set, any other node id is
refused with 403; its entries may carry labels and a per-node key), and ``node_labels:`` gives
labels by node glob to every node that is let in, listed or not. For one node, the matching
``node_labels`` entries apply in order (a later entry overrides a key), then its ``nodes:`` labels.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from fnmatch import translate

from bridge.config import Config, NodeConfig, NodeLabelsConfig

__all__ = ["NodeLabeler"]


class NodeLabeler:
    """Labels for a node id, remembered per id (bounded: unknown ids cannot grow it without limit)."""

    MEMO = 16_384

    def __init__(self, node_labels: Sequence[NodeLabelsConfig], nodes: Mapping[str, NodeConfig] | None) -> None:
        self._rules = tuple(
            (re.compile("|".join(translate(g) for g in entry.match)), dict(entry.labels)) for entry in node_labels
        )
        self._nodes = nodes
        self._memo: dict[str, dict[str, str]] = {}

    @classmethod
    def from_config(cls, cfg: Config) -> NodeLabeler:
        return cls(cfg.node_labels, cfg.nodes)

    def labels_for(self, node_id: str) -> dict[str, str]:
        found = self._memo.get(node_id)
        if found is not None:
            return found
        labels: dict[str, str] = {}
        for rx, extra in self._rules:
            if rx.match(node_id):
                labels.update(extra)
        node = self._nodes.get(node_id) if self._nodes is not None else None
        if node is not None:
            labels.update(node.labels)
        if len(self._memo) >= self.MEMO:
            self._memo.clear()
        self._memo[node_id] = labels
        return labels
