"""Routing rules, compile-time checks, explain, receiver assignment and silences (bridge.routing)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.config import Config, RouteConfig, parse
from bridge.errors import ConfigError
from bridge.model import Event, NodeState, RouteMatch, Silence
from bridge.routing import CompiledRoute, Router, compile_routes, explain
from bridge.silences import silenced

T0 = datetime(2026, 4, 16, 12, 0, tzinfo=UTC)

NODES: dict[str, dict[str, str]] = {
    "prd-db-1": {"env": "prod", "team": "db"},
    "prd-db-2": {"env": "prod", "team": "db"},
    "prd-web-1": {"env": "prod", "team": "web"},
    "stg-db-1": {"env": "staging", "team": "db"},
    "dev-box": {},
}
RECEIVERS = ("ops", "db", "web", "pager", "fallback")


def make_cfg(
    routes: list[dict[str, Any]],
    *,
    nodes: dict[str, dict[str, str]] | None = NODES,
    default_to: list[str] | None = None,
    silences: list[dict[str, Any]] | None = None,
) -> Config:
    data: dict[str, Any] = {
        "receivers": {name: {"type": "log"} for name in RECEIVERS},
        "routes": routes,
    }
    if nodes is not None:
        data["nodes"] = {node_id: {"labels": labels} for node_id, labels in nodes.items()}
    if default_to is not None:
        data["default_to"] = default_to
    if silences is not None:
        data["silences"] = silences
    return parse(data, env={})


def router(routes: list[dict[str, Any]], **kw: Any) -> Router:
    return compile_routes(make_cfg(routes, **kw))


def event(
    node: str = "prd-db-1",
    status: str = "FAILED",
    event_type: str = "NODE_STATUS_UPDATED",
    labels: dict[str, str] | None = None,
) -> Event:
    return Event(
        event_type=event_type,
        timestamp=T0,
        node_id=node,
        status=status,
        labels=NODES.get(node, {}) if labels is None else labels,
    )


def prev_state(status: str, node: str = "prd-db-1") -> NodeState:
    return NodeState(node, status, T0 - timedelta(hours=1), T0 - timedelta(minutes=1), "evt_prev")


def names(matches: list[RouteMatch]) -> list[str]:
    return [m.route for m in matches]


def route(name: str, to: str | list[str] = "ops", **match: Any) -> dict[str, Any]:
    stop = match.pop("stop", False)
    repeat = match.pop("repeat_interval", None)
    r: dict[str, Any] = {"name": name, "to": to, "match": match, "stop": stop}
    if repeat is not None:
        r["repeat_interval"] = repeat
    return r


# --- order, every match, stop, default ----------------------------------------------------------------


def test_every_matching_route_in_config_order() -> None:
    r = router(
        [
            route("c-first", "ops", status="FAILED"),
            route("a-no", "web", status="RUNNING"),
            route("b-second", ["db", "pager"], node="prd-*", repeat_interval="5m"),
            route("z-third", "web"),
        ]
    )
    assert r.match(event(), None) == [
        RouteMatch("c-first", ("ops",), 0.0),
        RouteMatch("b-second", ("db", "pager"), 300.0),
        RouteMatch("z-third", ("web",), 0.0),
    ]


def test_stop_ends_the_walk_after_a_matching_route() -> None:
    r = router(
        [
            route("before", "ops", node="prd-db-1"),
            route("stopper", "db", status="FAILED", stop=True),
            route("after", "web", node="prd-db-1"),
        ]
    )
    assert names(r.match(event("prd-db-1", "FAILED"), None)) == ["before", "stopper"]
    # A stop route that does not match stops nothing.
    assert names(r.match(event("prd-db-1", "RUNNING"), None)) == ["before", "after"]


def test_first_matching_stop_wins_even_across_index_buckets() -> None:
    # The routes land in different indexes (node id, label, status, catch-all); the merged answer
    # must still be exactly the in-order walk.
    r = router(
        [
            route("by-status", "ops", status="FAILED"),
            route("by-label-stop", "db", labels={"team": "db"}, stop=True),
            route("by-node", "web", node="prd-db-1"),
            route("catch-all", "pager"),
        ]
    )
    assert names(r.match(event("prd-db-1"), None)) == ["by-status", "by-label-stop"]
    assert names(r.match(event("prd-web-1"), None)) == ["by-status", "catch-all"]


def test_default_to_only_when_no_route_matched() -> None:
    routes = [route("failed", "ops", status="FAILED")]
    r = router(routes, default_to=["fallback", "pager"])
    assert r.match(event(status="RUNNING"), None) == [RouteMatch("default", ("fallback", "pager"))]
    assert names(r.match(event(status="FAILED"), None)) == ["failed"]


def test_no_match_and_no_default_to_is_empty() -> None:
    r = router([route("failed", "ops", status="FAILED")])
    assert r.match(event(status="RUNNING"), None) == []


def test_no_routes_at_all_uses_default_to() -> None:
    r = router([], default_to=["fallback"])
    assert r.match(event(), None) == [RouteMatch("default", ("fallback",))]


# --- each match key -----------------------------------------------------------------------------------


def test_node_exact_id() -> None:
    r = router([route("one", node="prd-db-1")])
    assert names(r.match(event("prd-db-1"), None)) == ["one"]
    assert r.match(event("prd-db-2"), None) == []


def test_node_glob_fnmatch_semantics() -> None:
    r = router(
        [
            route("star", node="prd-*"),
            route("question", node="prd-db-?"),
            route("set", node="[ps]*-db-1"),
            route("suffix", node="*-1"),
            route("infix", node="*-db-*"),
        ]
    )
    assert names(r.match(event("prd-db-1"), None)) == ["star", "question", "set", "suffix", "infix"]
    assert names(r.match(event("stg-db-1"), None)) == ["set", "suffix", "infix"]
    assert names(r.match(event("prd-web-1"), None)) == ["star", "suffix"]
    assert r.match(event("dev-box"), None) == []


def test_node_glob_is_case_sensitive() -> None:
    r = router([route("upper", node="PRD-*"), route("lower", node="prd-*")], nodes=None)
    assert names(r.match(event("prd-db-1"), None)) == ["lower"]
    assert names(r.match(event("PRD-db-1", labels={}), None)) == ["upper"]


def test_glob_whose_literal_part_is_the_whole_id() -> None:
    r = router([route("prefix", node="prd-db-1*"), route("suffix", node="*prd-db-1")])
    assert names(r.match(event("prd-db-1"), None)) == ["prefix", "suffix"]


def test_route_reached_through_two_index_keys_matches_once() -> None:
    # 'prd-*' files the route under a prefix, '*-1' under a suffix: prd-db-1 finds it under both.
    r = router([route("both", node=["prd-*", "*-1"]), route("other", node="prd-db-1")])
    assert names(r.match(event("prd-db-1"), None)) == ["both", "other"]
    assert names(r.match(event("stg-db-1"), None)) == ["both"]


def test_node_list_mixes_ids_and_globs() -> None:
    r = router([route("list", node=["dev-box", "stg-*"])])
    assert names(r.match(event("dev-box"), None)) == ["list"]
    assert names(r.match(event("stg-db-1"), None)) == ["list"]
    assert r.match(event("prd-db-1"), None) == []


def test_labels_all_must_hold() -> None:
    r = router([route("prod-db", labels={"env": "prod", "team": "db"})])
    assert names(r.match(event("prd-db-2"), None)) == ["prod-db"]
    assert r.match(event("prd-web-1"), None) == []  # team differs
    assert r.match(event("stg-db-1"), None) == []  # env differs
    assert r.match(event("dev-box"), None) == []  # no labels at all


def test_status_list() -> None:
    r = router([route("bad", status=["FAILED", "PAUSED"])])
    assert names(r.match(event(status="PAUSED"), None)) == ["bad"]
    assert names(r.match(event(status="FAILED"), None)) == ["bad"]
    assert r.match(event(status="RUNNING"), None) == []


def test_event_type() -> None:
    r = router([route("typed", event_type="NODE_STATUS_UPDATED")])
    assert names(r.match(event(), None)) == ["typed"]
    assert r.match(event(event_type="NODE_DELETED"), None) == []


def test_previous_status() -> None:
    r = router([route("recovered", status="RUNNING", previous_status=["FAILED", "PAUSED"])])
    assert names(r.match(event(status="RUNNING"), prev_state("FAILED"))) == ["recovered"]
    assert r.match(event(status="RUNNING"), prev_state("STARTING")) == []


def test_previous_status_required_but_no_previous_state() -> None:
    r = router([route("transition", previous_status="RUNNING"), route("any")])
    assert names(r.match(event(), None)) == ["any"]
    assert names(r.match(event(), prev_state("RUNNING"))) == ["transition", "any"]


def test_unknown_future_status_is_routed() -> None:
    cfg = make_cfg([route("new", "ops", status="HIBERNATING"), route("all", "web")])
    assert any("'HIBERNATING' is not a known status" in w for w in cfg.warnings)
    r = compile_routes(cfg)
    assert names(r.match(event(status="HIBERNATING"), None)) == ["new", "all"]
    assert names(r.match(event(status="REBOOTING"), prev_state("HIBERNATING"))) == ["all"]


def test_all_keys_together() -> None:
    r = router(
        [
            route(
                "strict",
                node="prd-*",
                labels={"team": "db"},
                status="RUNNING",
                event_type="NODE_STATUS_UPDATED",
                previous_status="FAILED",
            )
        ]
    )
    ok = event("prd-db-1", "RUNNING")
    assert names(r.match(ok, prev_state("FAILED"))) == ["strict"]
    assert r.match(event("prd-web-1", "RUNNING"), prev_state("FAILED")) == []
    assert r.match(event("prd-db-1", "FAILED"), prev_state("FAILED")) == []
    assert r.match(event("prd-db-1", "RUNNING", event_type="X"), prev_state("FAILED")) == []
    assert r.match(ok, prev_state("PAUSED")) == []
    assert r.match(ok, None) == []


# --- receivers named by several routes ----------------------------------------------------------------


def problems_of(routes: list[dict[str, Any]], **kw: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        router(routes, **kw)
    return info.value.problems


def test_node_glob_matching_no_configured_node() -> None:
    routes = [route("a"), route("b", status="FAILED"), route("c", node="prod-*")]
    assert problems_of(routes) == ["routes[2].match.node: 'prod-*' matches none of the configured nodes"]


def test_node_exact_id_not_configured() -> None:
    assert problems_of([route("a", node="prd-db-9")]) == [
        "routes[0].match.node: 'prd-db-9' matches none of the configured nodes"
    ]


def test_node_list_where_every_entry_is_dead_names_each_entry() -> None:
    assert problems_of([route("a", node=["prd-db-9", "*-cache-*"])]) == [
        "routes[0].match.node[0]: 'prd-db-9' matches none of the configured nodes",
        "routes[0].match.node[1]: '*-cache-*' matches none of the configured nodes",
    ]


def test_node_list_with_one_dead_entry_is_a_warning() -> None:
    r = router([route("a", node=["prd-db-1", "prd-db-9"])])
    assert r.warnings == ("routes[0].match.node[1]: 'prd-db-9' matches none of the configured nodes",)
    assert names(r.match(event("prd-db-1"), None)) == ["a"]


def test_node_checks_are_skipped_without_an_allow_list() -> None:
    r = router([route("a", node="prod-*")], nodes=None)
    assert r.warnings == ()
    assert names(r.match(event("prod-x", labels={}), None)) == ["a"]


def test_label_value_no_node_has() -> None:
    routes = [route("a"), route("b", labels={"env": "production"})]
    assert problems_of(routes) == [
        "routes[1].match.labels.env: no configured node has env='production' (values in use: 'prod', 'staging')"
    ]


def test_label_key_no_node_has() -> None:
    assert problems_of([route("a", labels={"region": "eu"})]) == [
        "routes[0].match.labels.region: no configured node has the label 'region'"
    ]


def test_labels_no_single_node_has_together() -> None:
    assert problems_of([route("a", labels={"env": "staging", "team": "web"})]) == [
        "routes[0].match.labels: no configured node has all of env='staging', team='web'"
    ]


def test_node_and_labels_that_exclude_each_other() -> None:
    assert problems_of([route("a", node="stg-*", labels={"env": "prod"})]) == [
        "routes[0].match: no configured node matches both node [stg-*] and labels [env=prod]"
    ]


def test_route_behind_a_stop_route_that_covers_it() -> None:
    routes = [
        route("failed-stop", status=["FAILED", "PAUSED"], stop=True),
        route("ok", status="RUNNING"),
        route("shadowed", status="FAILED", node="prd-*", labels={"team": "db"}),
    ]
    assert problems_of(routes) == [
        "routes[2]: can never match: routes[0] ('failed-stop') has stop: true "
        "and matches every event this route matches"
    ]


def test_route_behind_a_catch_all_stop_route() -> None:
    problems = problems_of([route("all", stop=True), route("x", node="prd-db-1"), route("y")])
    assert [p.split(":")[0] for p in problems] == ["routes[1]", "routes[2]"]


def test_route_behind_a_prefix_glob_stop_route() -> None:
    problems = problems_of([route("prd", node="prd-*", stop=True), route("db", node=["prd-db-?", "prd-web-1"])])
    assert problems == [
        "routes[1]: can never match: routes[0] ('prd') has stop: true and matches every event this route matches"
    ]


@pytest.mark.parametrize(
    ("stopper", "later"),
    [
        ({"status": "FAILED"}, {}),  # later also matches other statuses
        ({"status": "FAILED"}, {"status": ["FAILED", "PAUSED"]}),
        ({"node": "prd-db-*"}, {"node": "prd-*"}),
        ({"labels": {"team": "db"}}, {"labels": {"env": "prod"}}),
        ({"previous_status": "RUNNING"}, {}),  # later matches with no previous state too
        ({"event_type": "NODE_STATUS_UPDATED"}, {"status": "FAILED"}),
    ],
)
def test_no_shadow_error_when_not_certain(stopper: dict[str, Any], later: dict[str, Any]) -> None:
    r = router([route("stopper", stop=True, **stopper), route("later", **later)])
    assert [x.name for x in r.routes] == ["stopper", "later"]


def test_shadow_check_ignores_routes_before_the_stop_route_and_non_stop_routes() -> None:
    r = router([route("first"), route("not-stop", status="FAILED"), route("same", status="FAILED")])
    assert len(r) == 3


def test_every_problem_is_reported_at_once() -> None:
    problems = problems_of([route("a", node="nope-*"), route("b", labels={"env": "qa"})])
    assert len(problems) == 2
    assert problems[0].startswith("routes[0].match.node:")
    assert problems[1].startswith("routes[1].match.labels.env:")


# --- explain --------------------------------------------------------------------------------------------


def test_explain_gives_a_reason_per_route() -> None:
    r = router(
        [
            route("status", status="RUNNING"),
            route("types", event_type="OTHER"),
            route("prev", previous_status="RUNNING"),
            route("node", node="stg-*"),
            route("label", labels={"team": "web"}),
            route("hit"),
            route("stop", node="prd-db-1", stop=True),
            route("late"),
        ]
    )
    assert explain(r, event("prd-db-1", "FAILED"), None) == [
        ("status", False, "status 'FAILED' is not in [RUNNING]"),
        ("types", False, "event_type 'NODE_STATUS_UPDATED' is not in [OTHER]"),
        ("prev", False, "previous_status: the node has no previous status (route wants [RUNNING])"),
        ("node", False, "node 'prd-db-1' matches none of [stg-*]"),
        ("label", False, "labels: the node has team='db', route wants team='web'"),
        ("hit", True, "matched"),
        ("stop", True, "matched; stop: true ends the walk"),
        ("late", False, "not checked: 'stop' matched and has stop: true"),
    ]


def test_explain_previous_status_and_missing_label_and_default() -> None:
    r = router([route("prev", previous_status="RUNNING"), route("label", labels={"team": "db"})], default_to=["ops"])
    assert explain(r, event("dev-box"), prev_state("PAUSED", "dev-box")) == [
        ("prev", False, "previous_status 'PAUSED' is not in [RUNNING]"),
        ("label", False, "labels: the node has no label 'team' (route wants team='db')"),
        ("default", True, "no route matched; sent to default_to"),
    ]


def test_explain_without_default_to() -> None:
    r = router([route("x", status="RUNNING")])
    assert explain(r, event(), None)[-1] == ("default", False, "no route matched and default_to is empty: no alert")


# --- the index agrees with the plain walk ------------------------------------------------------------------

IDS = ["a1", "a2", "b1", "b22", "prd-db-1", "prd-web-1", "stg-db-1", "x"]
LABELS = {
    n: {"env": "prod" if n.startswith(("prd", "a")) else "stg", "team": "db" if "db" in n else "web"} for n in IDS
}
STATUSES = ["RUNNING", "FAILED", "PAUSED", "HIBERNATING"]
PATTERNS = [*IDS, "a*", "a1*", "b?", "b*2", "*b22", "prd-*", "*-db-*", "*1", "[ab]1", "*", "?", "[!a]*", "a[1"]


def _opt(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | values


_route_strategy = st.fixed_dictionaries(
    {
        "node": _opt(st.lists(st.sampled_from(PATTERNS), min_size=1, max_size=3)),
        "labels": _opt(
            st.dictionaries(st.sampled_from(["env", "team"]), st.sampled_from(["prod", "stg", "db", "web"]))
        ),
        "status": _opt(st.lists(st.sampled_from(STATUSES), min_size=1, max_size=2)),
        "event_type": _opt(st.lists(st.sampled_from(["NODE_STATUS_UPDATED", "OTHER"]), min_size=1, max_size=1)),
        "previous_status": _opt(st.lists(st.sampled_from(STATUSES), min_size=1, max_size=2)),
        "stop": st.booleans(),
    }
)


def _reference(routes: list[RouteConfig], default_to: list[str], ev: Event, prev: NodeState | None) -> list[RouteMatch]:
    """Routing written the plainest way, straight from the rules."""
    out = []
    for rc in routes:
        m = rc.match
        if m.node is not None and not any(fnmatchcase(ev.node_id, p) for p in m.node):
            continue
        if m.labels and any(ev.labels.get(k) != v for k, v in m.labels.items()):
            continue
        if m.status is not None and ev.status not in m.status:
            continue
        if m.event_type is not None and ev.event_type not in m.event_type:
            continue
        if m.previous_status is not None and (prev is None or prev.status not in m.previous_status):
            continue
        out.append(RouteMatch(rc.name, tuple(rc.to), rc.repeat_interval))
        if rc.stop:
            break
    if not out and default_to:
        return [RouteMatch("default", tuple(default_to))]
    return out


@settings(max_examples=300, deadline=None)
@given(
    specs=st.lists(_route_strategy, max_size=12),
    default=st.booleans(),
    with_nodes=st.booleans(),
    node=st.sampled_from(IDS),
    status=st.sampled_from(STATUSES),
    event_type=st.sampled_from(["NODE_STATUS_UPDATED", "OTHER"]),
    prev=_opt(st.sampled_from(STATUSES)),
)
def test_indexed_match_equals_the_plain_walk(
    specs: list[dict[str, Any]],
    default: bool,
    with_nodes: bool,
    node: str,
    status: str,
    event_type: str,
    prev: str | None,
) -> None:
    routes = []
    for i, spec in enumerate(specs):
        stop = spec.pop("stop")
        match = {k: v for k, v in spec.items() if v is not None}
        routes.append(
            RouteConfig.model_validate({"name": f"r{i}", "to": [f"rcv{i % 3}"], "match": match, "stop": stop})
        )
    default_to = ["fallback"] if default else []
    # Router() directly: random routes need not pass the compile-time checks; the index is what is tested.
    compiled = Router(
        [CompiledRoute(i, rc) for i, rc in enumerate(routes)], default_to, nodes=LABELS if with_nodes else None
    )
    ev = Event(event_type, T0, node, status, labels=LABELS[node])
    state = prev_state(prev, node) if prev is not None else None
    expected = _reference(routes, default_to, ev, state)
    assert compiled.match(ev, state) == expected
    assert [(name) for name, ok, _ in explain(compiled, ev, state) if ok] == names(expected)


# --- scale ---------------------------------------------------------------------------------------------------


def big_config(n_nodes: int = 10_000, n_routes: int = 1_000) -> Config:
    statuses = ["RUNNING", "STARTING", "PAUSED", "FAILED", "IN_PROGRESS"]
    nodes = {f"node-{i:05d}": {"team": f"t{i % 50}", "env": ("prod", "dev")[i % 2]} for i in range(n_nodes)}
    routes = []
    for i in range(n_routes):
        kind = i % 4
        if kind == 0:
            m: dict[str, Any] = {"node": f"node-{(i * 7) % n_nodes:05d}", "status": statuses[i % 5]}
        elif kind == 1:
            m = {"node": f"node-0{i:03d}*", "status": ["FAILED", "PAUSED"]}
        elif kind == 2:
            m = {"labels": {"team": f"t{i % 50}"}, "status": statuses[i % 5], "event_type": f"T{i}"}
        else:
            m = {"node": f"*{i:04d}", "previous_status": statuses[i % 5]}
        routes.append({"name": f"r{i}", "match": m, "to": ["ops"], "stop": i % 10 == 0})
    return make_cfg(routes, nodes=nodes)


@pytest.mark.slow
def test_compile_10k_nodes_1k_routes_is_fast_and_events_check_few_routes() -> None:
    cfg = big_config()
    r = compile_routes(cfg)  # how long it takes is bench/'s routing case, not an assertion here
    assert len(r) == 1_000
    for i in (0, 4321, 9999):
        node = f"node-{i:05d}"
        ev = Event("NODE_STATUS_UPDATED", T0, node, "FAILED", labels=dict(cfg.nodes[node].labels))  # type: ignore[index]
        prev = prev_state("RUNNING", node)
        # An index, not a scan: a 1,000-route config checks a few dozen routes at most.
        assert r.candidates(ev, prev) <= 40
        assert r.match(ev, prev) == _reference(list(cfg.routes), [], ev, prev)


def test_candidates_are_only_routes_for_the_status_node_or_label() -> None:
    routes = [route(f"s{i}", status=["RUNNING", "STARTING", "PAUSED", "IN_PROGRESS"][i % 4]) for i in range(40)]
    routes += [route(f"n{i}", node=f"prd-db-{1 + i % 2}") for i in range(10)]
    routes += [route("web-team", labels={"team": "web"})]
    r = router(routes)
    assert r.candidates(event("prd-db-1", "FAILED"), None) == 5
    assert r.candidates(event("prd-web-1", "FAILED"), None) == 1
    assert r.candidates(event("prd-web-1", "RUNNING"), None) == 11


# --- silences --------------------------------------------------------------------------------------------------


def _silence(node: str = "*", status: tuple[str, ...] | None = None, start: int = 0, end: int = 60) -> Silence:
    return Silence(
        id=f"sil_{node}_{start}",
        node=node,
        status=status,
        starts_at=T0 + timedelta(minutes=start),
        ends_at=T0 + timedelta(minutes=end),
    )


def test_silence_window_start_inclusive_end_exclusive() -> None:
    s = _silence("prd-*", start=0, end=60)
    ev = event("prd-db-1")
    assert silenced([s], ev, T0 - timedelta(seconds=1)) is None
    assert silenced([s], ev, T0) is s
    assert silenced([s], ev, T0 + timedelta(minutes=59, seconds=59)) is s
    assert silenced([s], ev, T0 + timedelta(minutes=60)) is None


def test_silence_node_glob_and_status() -> None:
    s = _silence("prd-db-?", status=("FAILED", "PAUSED"))
    assert silenced([s], event("prd-db-2", "PAUSED"), T0) is s
    assert silenced([s], event("prd-db-2", "RUNNING"), T0) is None
    assert silenced([s], event("prd-web-1", "FAILED"), T0) is None
    assert silenced([_silence("PRD-*")], event("prd-db-1"), T0) is None  # case-sensitive


def test_silence_first_match_is_returned() -> None:
    other = _silence("stg-*")
    first = _silence("prd-db-1", start=-5)
    second = _silence("*")
    assert silenced([other, first, second], event("prd-db-1"), T0) is first
    assert silenced([], event(), T0) is None


def test_silences_from_config_with_and_without_starts_at() -> None:
    cfg = make_cfg(
        [],
        silences=[
            {"node": "stg-*", "ends_at": "2026-04-16T13:00:00Z", "comment": "always until 13:00"},
            {
                "node": "prd-db-1",
                "status": "FAILED",
                "starts_at": "2026-04-16T12:30:00Z",
                "ends_at": "2026-04-16T14:00:00Z",
            },
        ],
    )
    sil_stg, sil_prd = cfg.silences
    assert silenced(cfg.silences, event("stg-db-1"), T0 - timedelta(days=30)) is sil_stg
    assert silenced(cfg.silences, event("stg-db-1"), T0 + timedelta(hours=1)) is None
    assert silenced(cfg.silences, event("prd-db-1"), T0) is None
    assert silenced(cfg.silences, event("prd-db-1"), T0 + timedelta(minutes=30)) is sil_prd
    assert silenced(cfg.silences, event("prd-db-1", "RUNNING"), T0 + timedelta(minutes=30)) is None


def test_silence_naive_times_are_utc() -> None:
    s = _silence("*")
    naive_now = (T0 + timedelta(minutes=1)).replace(tzinfo=None)
    assert silenced([s], event(), naive_now) is s
