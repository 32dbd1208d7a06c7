"""One route compiled into a small predicate, and the compile-time checks on routes: a route
behind a ``stop: true`` route that certainly matches everything it matches, and (with ``nodes:``)
node patterns or labels that no configured node satisfies. Pure."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from bridge.config import RouteConfig
from bridge.model import Event, NodeState, RouteMatch
from bridge.nodeindex import NodeIndex, RegexCache, globs_regex, is_glob, literal_prefix


def _fmt_values(values: Iterable[str]) -> str:
    return "[" + ", ".join(values) + "]"



# --- compiled routes ---------------------------------------------------------------------------------


class CompiledRoute:
    """One route as a small predicate. ``None`` in a field means "any"."""

    __slots__ = (
        "event_types",
        "glob_prefixes",
        "index",
        "label_set",
        "labels",
        "name",
        "node_exact",
        "node_globs",
        "node_patterns",
        "node_re",
        "not_prev_statuses",
        "not_statuses",
        "prev_statuses",
        "result",
        "star_prefixes",
        "statuses",
        "stop",
    )

    def __init__(self, index: int, route: RouteConfig, regex_cache: RegexCache | None = None) -> None:
        m = route.match
        self.index = index
        self.name = route.name
        self.stop = route.stop
        self.result = RouteMatch(route.name, tuple(route.to), route.repeat_interval)
        self.node_patterns: tuple[str, ...] | None = tuple(m.node) if m.node is not None else None
        # node_exact is None exactly when the route has no node condition.
        self.node_exact: frozenset[str] | None = None
        self.node_globs: tuple[str, ...] = ()
        self.node_re: re.Pattern[str] | None = None
        if m.node is not None:
            self.node_exact = frozenset(p for p in m.node if not is_glob(p))
            self.node_globs = tuple(dict.fromkeys(p for p in m.node if is_glob(p)))
            self.node_re = globs_regex(self.node_globs, {} if regex_cache is None else regex_cache)
        self.glob_prefixes = tuple(literal_prefix(g) for g in self.node_globs)
        # Globs of the form 'P*' with P literal (for the shadowing check).
        self.star_prefixes = tuple(g[:-1] for g in self.node_globs if g.endswith("*") and not is_glob(g[:-1]))
        self.labels: tuple[tuple[str, str], ...] | None = tuple(m.labels.items()) if m.labels else None
        self.label_set = frozenset(self.labels or ())
        self.statuses = frozenset(m.status) if m.status is not None else None
        self.event_types = frozenset(m.event_type) if m.event_type is not None else None
        self.prev_statuses = frozenset(m.previous_status) if m.previous_status is not None else None
        # status_not / previous_status_not: excluded values (empty = no exclusion).
        self.not_statuses = frozenset(m.status_not or ())
        self.not_prev_statuses = frozenset(m.previous_status_not or ())

    def node_matches(self, node_id: str) -> bool:
        exact = self.node_exact
        if exact is None or node_id in exact:
            return True
        rx = self.node_re
        return rx is not None and rx.match(node_id) is not None

    def node_test(self, node_id: str, labels: Mapping[str, str]) -> bool:
        """The node and label conditions only (what a node's mask is made of)."""
        if self.node_exact is not None and not self.node_matches(node_id):
            return False
        return all(labels.get(key) == value for key, value in self.labels or ())

    def why_not(self, event: Event, prev: NodeState | None) -> str | None:
        """The first condition that fails, in words; ``None`` when the route matches."""
        if self.statuses is not None and event.status not in self.statuses:
            return f"status {event.status!r} is not in {_fmt_values(sorted(self.statuses))}"
        if event.status in self.not_statuses:
            return f"status {event.status!r} is in status_not {_fmt_values(sorted(self.not_statuses))}"
        if prev is not None and prev.status in self.not_prev_statuses:
            return (f"previous_status {prev.status!r} is in previous_status_not "
                    f"{_fmt_values(sorted(self.not_prev_statuses))}")
        if self.event_types is not None and event.event_type not in self.event_types:
            return f"event_type {event.event_type!r} is not in {_fmt_values(sorted(self.event_types))}"
        if self.prev_statuses is not None:
            want = _fmt_values(sorted(self.prev_statuses))
            if prev is None:
                return f"previous_status: the node has no previous status (route wants {want})"
            if prev.status not in self.prev_statuses:
                return f"previous_status {prev.status!r} is not in {want}"
        if self.node_patterns is not None and not self.node_matches(event.node_id):
            return f"node {event.node_id!r} matches none of {_fmt_values(self.node_patterns)}"
        for key, value in self.labels or ():
            have = event.labels.get(key)
            if have is None:
                return f"labels: the node has no label {key!r} (route wants {key}={value!r})"
            if have != value:
                return f"labels: the node has {key}={have!r}, route wants {key}={value!r}"
        return None

    def __repr__(self) -> str:
        return f"CompiledRoute({self.index}, {self.name!r})"


def _covers(outer: frozenset[str] | None, inner: frozenset[str] | None) -> bool:
    """Every value ``inner`` accepts, ``outer`` accepts too (None = any value)."""
    return outer is None or (inner is not None and inner <= outer)


def _excludes_less(outer_not: frozenset[str], inner: frozenset[str] | None, inner_not: frozenset[str]) -> bool:
    """No value ``inner`` accepts is excluded by ``outer_not``."""
    if not outer_not:
        return True
    return not (inner & outer_not) if inner is not None else outer_not <= inner_not


def _node_covers(outer: CompiledRoute, inner: CompiledRoute) -> bool:
    """Certainly every node id ``inner`` accepts, ``outer`` accepts. False when unsure."""
    if outer.node_exact is None:
        return True
    if inner.node_exact is None:
        return False
    if not all(outer.node_matches(n) for n in inner.node_exact):
        return False
    # A glob inside a glob, conservatively: the same glob, or an outer 'P*' (P literal) and an
    # inner glob whose literal prefix starts with P.
    star = outer.star_prefixes
    for g, prefix in zip(inner.node_globs, inner.glob_prefixes, strict=True):
        if g not in outer.node_globs and not (star and prefix.startswith(star)):
            return False
    return True


def _shadows(earlier: CompiledRoute, later: CompiledRoute) -> bool:
    """``earlier`` (which has stop: true) certainly matches every event ``later`` matches."""
    return (
        _covers(earlier.statuses, later.statuses)
        and _excludes_less(earlier.not_statuses, later.statuses, later.not_statuses)
        and _excludes_less(earlier.not_prev_statuses, later.prev_statuses, later.not_prev_statuses)
        and _covers(earlier.prev_statuses, later.prev_statuses)
        and _covers(earlier.event_types, later.event_types)
        and earlier.label_set <= later.label_set
        and _node_covers(earlier, later)
    )


class Stoppers:
    """The ``stop: true`` routes seen so far, indexed so that a later route is compared only with
    those that could cover its node condition."""

    def __init__(self) -> None:
        self.any_node: list[CompiledRoute] = []  # no node condition
        self.by_exact: dict[str, list[CompiledRoute]] = {}
        self.by_glob: dict[str, list[CompiledRoute]] = {}
        self.with_globs: list[CompiledRoute] = []  # can cover an exact id
        self.with_star: list[CompiledRoute] = []  # can cover another glob

    def add(self, r: CompiledRoute) -> None:
        if r.node_exact is None:
            self.any_node.append(r)
            return
        for n in r.node_exact:
            self.by_exact.setdefault(n, []).append(r)
        for g in r.node_globs:
            self.by_glob.setdefault(g, []).append(r)
        if r.node_globs:
            self.with_globs.append(r)
        if r.star_prefixes:
            self.with_star.append(r)

    def shadowing(self, r: CompiledRoute) -> CompiledRoute | None:
        """The earliest stop route that certainly matches every event ``r`` matches, if any."""
        candidates: Iterable[CompiledRoute] = self.any_node
        if r.node_exact is not None:
            # Whatever covers r must cover one of its patterns in particular.
            if r.node_exact:
                some = self.by_exact.get(next(iter(r.node_exact)), [])
                extra = self.with_globs
            else:
                some = self.by_glob.get(r.node_globs[0], [])
                extra = self.with_star
            candidates = [*self.any_node, *some, *extra]
        found: CompiledRoute | None = None
        for s in candidates:
            if (found is None or s.index < found.index) and _shadows(s, r):
                found = s
        return found


def check_route(r: CompiledRoute, nodes: NodeIndex, problems: list[str], warnings: list[str]) -> None:
    where = f"routes[{r.index}].match"
    node_ok = True
    if r.node_patterns is not None:
        dead = [(j, p) for j, p in enumerate(r.node_patterns) if not nodes.pattern_matches_any(p)]
        if len(dead) == len(r.node_patterns):
            node_ok = False
            if len(dead) == 1:
                problems.append(f"{where}.node: {dead[0][1]!r} matches none of the configured nodes")
            else:
                for j, p in dead:
                    problems.append(f"{where}.node[{j}]: {p!r} matches none of the configured nodes")
        else:
            for j, p in dead:
                warnings.append(f"{where}.node[{j}]: {p!r} matches none of the configured nodes")
    if r.labels is None:
        return
    sets: list[set[str]] = []
    for key, value in r.labels:
        ids = nodes.by_label.get((key, value))
        if ids is not None:
            sets.append(ids)
            continue
        known = sorted(nodes.values.get(key, ()))
        if not known:
            problems.append(f"{where}.labels.{key}: no configured node has the label {key!r}")
        else:
            shown = ", ".join(repr(v) for v in known[:5]) + (", ..." if len(known) > 5 else "")
            problems.append(f"{where}.labels.{key}: no configured node has {key}={value!r} (values in use: {shown})")
    if len(sets) < len(r.labels):
        return
    sets.sort(key=len)
    both = sets[0].intersection(*sets[1:])
    if not both:
        wanted = ", ".join(f"{k}={v!r}" for k, v in r.labels)
        problems.append(f"{where}.labels: no configured node has all of {wanted}")
        return
    if node_ok and r.node_patterns is not None and not any(r.node_matches(n) for n in both):
        problems.append(
            f"{where}: no configured node matches both node {_fmt_values(r.node_patterns)} "
            f"and labels {_fmt_values(f'{k}={v}' for k, v in r.labels)}"
        )
