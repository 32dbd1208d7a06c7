"""Routes: which receivers an event goes to. Pure: no I/O, no asyncio, no clock.

``compile_routes(cfg)`` turns ``routes:`` into a :class:`Router` once per config. With the
``nodes:`` allow-list configured it checks that every route can match at least one configured
node; it also refuses a route placed behind an earlier ``stop: true`` route that certainly
matches everything it matches. Both would silently disable an alert.

``Router.match(event, prev)`` walks the routes in order: every matching route yields a
:class:`RouteMatch`; a matching route with ``stop: true`` ends the walk; when nothing matched the
``default_to`` receivers get the event under the route name ``"default"``.

Matching costs about the same with one route or a thousand. Whether a route matches depends on
two things only: the node (its id and labels) and the event's status, event type and previous
status. So the routes are bit masks over route positions:

- per node, the routes whose node and label conditions it meets: worked out the first time the
  node is seen (from an index, below) and remembered until the config is reloaded (a new Router);
  the memo is bounded, so unknown node ids cannot grow it without limit;
- per status, event type and previous status, the routes that accept that value (precomputed).

An event's matches are the AND of its node's mask and three value masks, cut after the first route
with ``stop: true``; each distinct result is built once into a tuple of :class:`RouteMatch` and
reused. The answer is exactly that of the plain in-order walk (which :func:`explain` performs).

To find a new node's routes without testing all of them, each route is filed in exactly one
index, under its most selective field: exact node id, node glob literal prefix or suffix, one
label, status, previous status, or else the catch-all list. A node looks at the node and label
buckets it selects, plus the routes filed by a status that have a node or label condition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from bridge.config import Config
from bridge.errors import ConfigError
from bridge.model import KNOWN_STATUSES, Event, NodeState, RouteMatch
from bridge.nodeindex import NodeIndex, RegexCache, is_glob, literal_prefix, literal_suffix
from bridge.nodes import NodeLabeler
from bridge.routes import CompiledRoute, Stoppers, check_route

__all__ = ["DEFAULT_ROUTE", "CompiledRoute", "Router", "compile_routes", "explain", "is_glob"]

DEFAULT_ROUTE = "default"


# --- the router ----------------------------------------------------------------------------------------

_Bucket = tuple[CompiledRoute, ...]
# Per node: the labels it was seen with, the routes its node and labels meet, those with stop: true.
_NodeEntry = tuple[Mapping[str, str], int, int]
_EMPTY: _Bucket = ()


class Router:
    """Compiled routes. Build with :func:`compile_routes`; immutable afterwards (but for the
    bounded per-node memo that makes :meth:`match` cheap, see the module docstring).

    ``routes`` holds the compiled routes in order, ``default_to`` the fallback receivers and
    ``warnings`` non-fatal findings (e.g. one entry of a node list that matches no configured node).
    """

    __slots__ = (
        "_always",
        "_bit_of",
        "_by_label",
        "_by_node",
        "_by_prefix",
        "_by_prev",
        "_by_status",
        "_by_suffix",
        "_generic",
        "_labels",
        "_loose",
        "_masks",
        "_memo_cap",
        "_nodes",
        "_prefix_lens",
        "_prev_any",
        "_prev_mask",
        "_prev_none",
        "_results",
        "_status_any",
        "_status_mask",
        "_stop_mask",
        "_suffix_lens",
        "_type_any",
        "_type_mask",
        "default",
        "default_to",
        "routes",
        "warnings",
    )

    #: At most this many node ids are remembered when no larger ``nodes:`` allow-list is configured;
    #: at most this many distinct results are kept (each is a tuple of shared RouteMatch objects).
    MEMO_NODES = 16_384
    MEMO_RESULTS = 4_096

    def __init__(
        self,
        routes: Sequence[CompiledRoute],
        default_to: Sequence[str] = (),
        warnings: Sequence[str] = (),
        nodes: Mapping[str, Mapping[str, str]] | NodeIndex | None = None,
    ) -> None:
        """``nodes`` (the allow-list with its labels) only guides which index each route goes in
        and how many node ids the memo keeps."""
        self.routes: tuple[CompiledRoute, ...] = tuple(routes)
        self.default_to: tuple[str, ...] = tuple(default_to)
        self.default: RouteMatch | None = RouteMatch(DEFAULT_ROUTE, self.default_to) if self.default_to else None
        self.warnings: tuple[str, ...] = tuple(warnings)
        stats = NodeIndex(nodes) if nodes is not None and not isinstance(nodes, NodeIndex) else nodes
        by_node: dict[str, list[CompiledRoute]] = {}
        by_prefix: dict[str, list[CompiledRoute]] = {}
        by_suffix: dict[str, list[CompiledRoute]] = {}
        by_label: dict[str, dict[str, list[CompiledRoute]]] = {}
        by_status: dict[str, list[CompiledRoute]] = {}
        by_prev: dict[str, list[CompiledRoute]] = {}
        generic: list[CompiledRoute] = []
        for r in self.routes:
            kind, node_keys, label = _choose_index(r, stats)
            if node_keys is not None:
                for n in node_keys.exact:
                    by_node.setdefault(n, []).append(r)
                for p in node_keys.prefixes:
                    by_prefix.setdefault(p, []).append(r)
                for t in node_keys.suffixes:
                    by_suffix.setdefault(t, []).append(r)
            elif label is not None:
                by_label.setdefault(label[0], {}).setdefault(label[1], []).append(r)
            elif kind == "status" and r.statuses is not None:
                for s in r.statuses:
                    by_status.setdefault(s, []).append(r)
            elif kind == "previous_status" and r.prev_statuses is not None:
                for s in r.prev_statuses:
                    by_prev.setdefault(s, []).append(r)
            else:
                generic.append(r)
        # Routes were appended in route order, so every bucket is sorted by index.
        self._by_node = {k: tuple(v) for k, v in by_node.items()}
        self._by_prefix = {k: tuple(v) for k, v in by_prefix.items()}
        self._prefix_lens = tuple(sorted({len(p) for p in by_prefix}))
        self._by_suffix = {k: tuple(v) for k, v in by_suffix.items()}
        self._suffix_lens = tuple(sorted({len(t) for t in by_suffix}))
        self._by_label = {k: {v: tuple(rs) for v, rs in d.items()} for k, d in by_label.items()}
        self._by_status = {k: tuple(v) for k, v in by_status.items()}
        self._by_prev = {k: tuple(v) for k, v in by_prev.items()}
        self._generic: _Bucket = tuple(generic)

        # Bit masks over route positions (bit i = self.routes[i]).
        self._bit_of = {id(r): 1 << i for i, r in enumerate(self.routes)}
        bit = self._bit_of
        node_filed = {id(r) for d in (self._by_node, self._by_prefix, self._by_suffix) for b in d.values() for r in b}
        node_filed.update(id(r) for d in self._by_label.values() for b in d.values() for r in b)
        # Routes not filed by node or label: without node and label conditions every node gets
        # them; with one, a new node tests them.
        self._always = 0
        loose: list[CompiledRoute] = []
        for r in self.routes:
            if id(r) in node_filed:
                continue
            if r.node_exact is None and r.labels is None:
                self._always |= bit[id(r)]
            else:
                loose.append(r)
        self._loose: _Bucket = tuple(loose)
        self._stop_mask = sum(bit[id(r)] for r in self.routes if r.stop)
        self._status_any, self._status_mask = self._value_masks(
            [r.statuses for r in self.routes], [r.not_statuses for r in self.routes])
        self._type_any, self._type_mask = self._value_masks([r.event_types for r in self.routes])
        self._prev_any, self._prev_mask = self._value_masks(
            [r.prev_statuses for r in self.routes], [r.not_prev_statuses for r in self.routes])
        self._prev_none = self._prev_any  # no previous status: only routes without that condition
        self._memo_cap = max(self.MEMO_NODES, len(stats.ids) if stats is not None else 0)
        self._nodes: dict[str, _NodeEntry] = {}
        self._masks: dict[int, int] = {}  # interned node masks: many nodes share one
        self._labels: dict[frozenset[tuple[str, str]], dict[str, str]] = {}  # interned label sets
        self._results: dict[int, tuple[RouteMatch, ...]] = {}

    @staticmethod
    def _value_masks(
        conditions: Sequence[frozenset[str] | None], exclusions: Sequence[frozenset[str]] = ()
    ) -> tuple[int, dict[str, int]]:
        """For one field: the mask of routes without a condition on it (they accept any value), and
        for each value some route names, the mask of the routes that accept it. A route with only
        exclusions (``status_not``) accepts any value but those: it is in the first mask, and its
        bit is cleared for each excluded value."""
        any_value = 0
        by_value: dict[str, int] = {}
        for i, values in enumerate(conditions):
            if values is None:
                any_value |= 1 << i
            else:
                for v in values:
                    by_value[v] = by_value.get(v, 0) | 1 << i
        masks = {v: m | any_value for v, m in by_value.items()}
        for i, excluded in enumerate(exclusions):
            for v in excluded:
                masks[v] = masks.get(v, any_value) & ~(1 << i)
        return any_value, masks

    def __len__(self) -> int:
        return len(self.routes)

    def _node_buckets(self, node_id: str, labels: Mapping[str, str]) -> list[_Bucket]:
        """The node and label buckets a node selects."""
        size = len(node_id)
        buckets: list[_Bucket] = []
        b = self._by_node.get(node_id)
        if b:
            buckets.append(b)
        for n in self._prefix_lens:
            if n > size:
                break
            b = self._by_prefix.get(node_id[:n])
            if b:
                buckets.append(b)
        for n in self._suffix_lens:
            if n > size:
                break
            b = self._by_suffix.get(node_id[size - n :])
            if b:
                buckets.append(b)
        if self._by_label and labels:
            by_label = self._by_label
            for key, value in labels.items():
                d = by_label.get(key)
                if d is not None:
                    b = d.get(value)
                    if b:
                        buckets.append(b)
        return buckets

    def _buckets(self, event: Event, prev: NodeState | None) -> list[_Bucket]:
        """The buckets an event looks at; together they hold every route that could match it."""
        buckets = self._node_buckets(event.node_id, event.labels)
        b = self._by_status.get(event.status)
        if b:
            buckets.append(b)
        if prev is not None and self._by_prev:
            b = self._by_prev.get(prev.status)
            if b:
                buckets.append(b)
        if self._generic:
            buckets.append(self._generic)
        return buckets

    def _learn(self, node_id: str, labels: Mapping[str, str]) -> _NodeEntry:
        """Work out and remember the mask of routes whose node and label conditions the node meets."""
        mask = self._always
        bit = self._bit_of
        for bucket in (*self._node_buckets(node_id, labels), self._loose):
            for r in bucket:
                if r.node_test(node_id, labels):
                    mask |= bit[id(r)]
        memo = self._nodes
        if len(memo) >= self._memo_cap:
            # Bounded: forget the node remembered longest ago (a node seen again is re-learned).
            del memo[next(iter(memo))]
            if len(self._masks) >= self._memo_cap:
                self._masks.clear()
            if len(self._labels) >= self._memo_cap:
                self._labels.clear()
        mask = self._masks.setdefault(mask, mask)
        items = frozenset(labels.items())
        copy = self._labels.get(items)
        if copy is None:
            copy = self._labels[items] = dict(labels)
        entry = memo[node_id] = (copy, mask, mask & self._stop_mask)
        return entry

    def _result(self, hits: int) -> tuple[RouteMatch, ...]:
        """The matches for a mask of matching routes (already cut after the first stop)."""
        if not hits:
            out: tuple[RouteMatch, ...] = (self.default,) if self.default is not None else ()
        else:
            routes = self.routes
            found = []
            m = hits
            while m:
                low = m & -m
                found.append(routes[low.bit_length() - 1].result)
                m ^= low
            out = tuple(found)
        if len(self._results) >= self.MEMO_RESULTS:
            self._results.clear()
        self._results[hits] = out
        return out

    def match(self, event: Event, prev: NodeState | None) -> list[RouteMatch]:
        """Every matching route, in route order, up to and including the first with stop: true;
        or the default route when none matched and ``default_to`` is set; or nothing."""
        labels = event.labels
        entry = self._nodes.get(event.node_id)
        if entry is None or entry[0] != labels:
            entry = self._learn(event.node_id, labels)
        hits = (
            entry[1]
            & self._status_mask.get(event.status, self._status_any)
            & self._type_mask.get(event.event_type, self._type_any)
            & (self._prev_none if prev is None else self._prev_mask.get(prev.status, self._prev_any))
        )
        if entry[2]:  # the node has routes with stop: true
            stops = hits & entry[2]
            if stops:
                hits &= ((stops & -stops) << 1) - 1  # nothing after the first matching stop route
        out = self._results.get(hits)
        if out is None:
            out = self._result(hits)
        return list(out)

    def candidates(self, event: Event, prev: NodeState | None) -> int:
        """How many route checks an event costs at most with the index alone (for benchmarks and
        tests); with the node's mask remembered, :meth:`match` checks none."""
        return sum(len(b) for b in self._buckets(event, prev))


class _NodeKeys(NamedTuple):
    exact: list[str]
    prefixes: list[str]
    suffixes: list[str]


def _node_keys(r: CompiledRoute) -> _NodeKeys | None:
    """Index keys for a route's node patterns: exact ids, and for each glob its literal prefix or
    else its literal suffix. None when a glob has neither (``*``, ``*db*``): then the route is
    filed by another field. Keys that another key of the route already covers are dropped
    (a node id that still finds the route twice is de-duplicated when buckets are merged)."""
    if r.node_exact is None:
        return None
    prefixes: set[str] = set()
    suffixes: set[str] = set()
    for g in r.node_globs:
        if p := literal_prefix(g):
            prefixes.add(p)
        elif t := literal_suffix(g):
            suffixes.add(t)
        else:
            return None
    pre = tuple(sorted(p for p in prefixes if not any(q != p and p.startswith(q) for q in prefixes)))
    suf = tuple(sorted(t for t in suffixes if not any(q != t and t.endswith(q) for q in suffixes)))
    exact = sorted(n for n in r.node_exact if not n.startswith(pre) and not n.endswith(suf))
    return _NodeKeys(exact, list(pre), list(suf))


def _choose_index(r: CompiledRoute, nodes: NodeIndex | None) -> tuple[str, _NodeKeys | None, tuple[str, str] | None]:
    """File the route under its most selective field: the smallest expected share of events that
    reach its buckets. Node and label shares come from the configured nodes; a status list counts
    as its share of the known statuses. Ties go to node, then label, status, previous_status.

    Returns (kind, node keys when kind is "node", (key, value) when kind is "label")."""
    n_nodes = len(nodes.ids) if nodes is not None else 0
    best_share, kind = 2.0, "generic"
    node_keys = _node_keys(r)
    label: tuple[str, str] | None = None
    if node_keys is not None:
        if nodes is None or n_nodes == 0:
            return "node", node_keys, None
        count = sum(1 for n in node_keys.exact if n in nodes.ids)
        count += sum(nodes.count_prefix(p) for p in node_keys.prefixes)
        count += sum(nodes.count_suffix(t) for t in node_keys.suffixes)
        best_share, kind = count / n_nodes, "node"
    if r.labels is not None and nodes is not None and n_nodes:
        for item in r.labels:
            share = len(nodes.by_label.get(item, ())) / n_nodes
            if share < best_share:
                best_share, kind, label = share, "label", item
    for name, values in (("status", r.statuses), ("previous_status", r.prev_statuses)):
        if values is not None:
            share = min(1.0, len(values) / len(KNOWN_STATUSES))
            if share < best_share:
                best_share, kind = share, name
    return kind, node_keys if kind == "node" else None, label if kind == "label" else None


# --- compiling, with the "can never match" checks ------------------------------------------------------

def compile_routes(cfg: Config) -> Router:
    """Compile ``cfg.routes`` once per config.

    Raises ConfigError (one ``path: message`` per problem) for a route that can never match: with
    ``nodes:`` configured, node patterns or labels that no configured node satisfies; and a route
    behind an earlier ``stop: true`` route that certainly matches every event it matches.
    Non-fatal findings (one dead entry in a node list) go to ``Router.warnings``."""
    cache: RegexCache = {}
    routes = [CompiledRoute(i, r, cache) for i, r in enumerate(cfg.routes)]
    problems: list[str] = []
    warnings: list[str] = []
    labeler = NodeLabeler.from_config(cfg)
    nodes = NodeIndex({k: labeler.labels_for(k) for k in cfg.nodes}, cache) if cfg.nodes is not None else None
    if nodes is not None:
        for r in routes:
            check_route(r, nodes, problems, warnings)
    stoppers = Stoppers()
    for r in routes:
        s = stoppers.shadowing(r)
        if s is not None:
            problems.append(
                f"routes[{r.index}]: can never match: routes[{s.index}] ({s.name!r}) has stop: true "
                f"and matches every event this route matches"
            )
        if r.stop:
            stoppers.add(r)
    if problems:
        raise ConfigError(problems)
    return Router(routes, cfg.default_to, warnings, nodes)


# --- explain and receivers -------------------------------------------------------------------------------


def explain(router: Router, event: Event, prev: NodeState | None) -> list[tuple[str, bool, str]]:
    """The plain in-order walk, with reasons: (route name, matched, reason) for every route, then
    the default route when no route matched. Agrees with ``router.match``."""
    out: list[tuple[str, bool, str]] = []
    stopped_by: CompiledRoute | None = None
    any_matched = False
    for r in router.routes:
        if stopped_by is not None:
            out.append((r.name, False, f"not checked: {stopped_by.name!r} matched and has stop: true"))
            continue
        reason = r.why_not(event, prev)
        if reason is not None:
            out.append((r.name, False, reason))
            continue
        any_matched = True
        if r.stop:
            stopped_by = r
            out.append((r.name, True, "matched; stop: true ends the walk"))
        else:
            out.append((r.name, True, "matched"))
    if not any_matched:
        if router.default_to:
            out.append((DEFAULT_ROUTE, True, "no route matched; sent to default_to"))
        else:
            out.append((DEFAULT_ROUTE, False, "no route matched and default_to is empty: no alert"))
    return out
