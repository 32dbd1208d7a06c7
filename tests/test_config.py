"""Config: schema, YAML paths in errors, env interpolation, *_file secrets, durations."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge import config as config_mod
from bridge.config import parse, parse_duration
from bridge.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def problems(data: Any, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_mod.parse(data, env=env or {})
    return info.value.problems


def test_defaults_are_valid() -> None:
    cfg = config_mod.parse({}, env={})
    assert cfg.server.listen == "127.0.0.1:8080" and cfg.server.path == "/webhook"
    assert cfg.verification.public_key_url == config_mod.DEFAULT_KEY_URL
    assert cfg.storage.dedup_ttl == 48 * 3600


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("24h", 86400), ("1h30m", 5400), ("250ms", 0.25), ("0", 0), (45, 45), ("2d", 172800)],
)
def test_durations(text: Any, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["5 minutes", "m5", "", "-5s", "1h 30m", True, [1], float("inf"), float("nan"),
                                 "9" * 400 + "w", "36501d", 1e300])
def test_bad_durations(bad: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_errors_name_yaml_paths() -> None:
    found = problems(
        {
            "server": {"listn": "x", "listen": "nohost"},
            "nodes": {"node-1": {"labels": "prod"}},
            "verification": {"max_event_age": "forever"},
            "receivers": {"s": {"type": "slack"}, "w": {"type": "pager"}, "e": {"type": "email", "to": ["x"]}},
        }
    )
    text = "\n".join(found)
    assert "server.listn: unknown key" in text
    assert "server.listen: expected host:port" in text
    assert "nodes.node-1.labels:" in text
    assert "verification.max_event_age: 'forever' is not a duration" in text
    assert "receivers.s: set exactly one of webhook_url" in text
    assert "receivers.w: unknown receiver type" in text
    assert "receivers.e.from: Field required" in text
    assert "receivers.e.smtp: Field required" in text


def test_semantic_errors() -> None:
    found = problems(
        {
            "receivers": {"a": {"type": "log"}},
            "routes": [{"name": "r", "to": ["a", "missing"], "match": {"status": []}}, {"name": "r", "to": ["a"]}],
            "default_to": ["nope"],
            "storage": {"dedup_ttl": "1h"},
        }
    )
    assert "routes[0].to[1]: unknown receiver 'missing'" in found
    assert any(p.startswith("routes[0].match.status: an empty list can never match") for p in found)
    assert "routes[1].name: duplicate route name 'r'" in found
    assert "default_to[0]: unknown receiver 'nope'" in found
    assert any(p.startswith("storage.dedup_ttl: 1h is shorter than") for p in found)


@pytest.mark.parametrize("dedup_ttl", ["2s", "48h", "10000d"])
def test_no_event_age_limit_is_refused_whatever_dedup_ttl(dedup_ttl: str) -> None:
    # max_event_age 0 = no age limit: a replay after any finite dedup_ttl would alert twice (issue 11.3).
    found = problems({"verification": {"max_event_age": 0}, "storage": {"dedup_ttl": dedup_ttl}})
    assert found == [
        "verification.max_event_age: 0 (no age limit) lets a captured event alert again once storage.dedup_ttl "
        "has passed; set an age limit such as 24h (dedup_ttl must be at least max_event_age + max_clock_skew)"
    ]


def test_dedup_ttl_covering_the_replay_window_is_accepted() -> None:
    cfg = config_mod.parse({"verification": {"max_event_age": "1h", "max_clock_skew": "5m"},
                            "storage": {"dedup_ttl": "65m"}}, env={})
    assert cfg.storage.dedup_ttl == 3900


def test_unknown_status_is_a_warning() -> None:
    cfg = config_mod.parse(
        {"receivers": {"a": {"type": "log"}}, "routes": [{"name": "r", "to": "a", "match": {"status": "DEGRADED"}}]},
        env={},
    )
    assert any("'DEGRADED' is not a known status" in w for w in cfg.warnings)


@pytest.mark.parametrize("key", ["status", "previous_status", "status_not"])
@pytest.mark.parametrize("typo", ["Failed", "failed", "FIALED", "FAILD"])
def test_a_misspelt_known_status_is_an_error(key: str, typo: str) -> None:
    found = problems({"receivers": {"a": {"type": "log"}}, "routes": [{"name": "r", "to": "a", "match": {key: typo}}]})
    assert found == [f"routes[0].match.{key}[0]: {typo!r} is not a known status (statuses are case-sensitive); "
                     f"did you mean FAILED?"]


def test_did_you_mean_for_keys_and_receivers() -> None:
    found = problems({
        "receivers": {"oncall": {"type": "slack", "webhok_url": "https://hooks.example/x"}},
        "storage": {"dedupttl": "48h"},
        "routse": [],
    })
    assert any(p.startswith("receivers.oncall.webhok_url: unknown key") and p.endswith("did you mean webhook_url?")
               for p in found), found
    assert any(p.startswith("storage.dedupttl: unknown key") and p.endswith("did you mean dedup_ttl?") for p in found)
    assert any(p.startswith("routse: unknown key") and p.endswith("did you mean routes?") for p in found)
    found = problems({"receivers": {"oncall": {"type": "log"}}, "routes": [{"name": "r", "to": "oncal"}],
                      "default_to": ["Oncall"]})
    assert found == ["routes[0].to[0]: unknown receiver 'oncal'; did you mean oncall?",
                     "default_to[0]: unknown receiver 'Oncall'; did you mean oncall?"]


def test_status_and_status_not_together_is_an_error() -> None:
    found = problems({"receivers": {"a": {"type": "log"}},
                      "routes": [{"name": "r", "to": "a", "match": {"status": "FAILED", "status_not": "RUNNING"}}]})
    assert found == ["routes[0].match: set status or status_not, not both"]


def test_no_route_and_no_default_is_a_warning() -> None:
    cfg = config_mod.parse({"receivers": {"a": {"type": "log"}}}, env={})
    assert any(w.startswith("routes: no route and no default_to") for w in cfg.warnings)
    cfg = config_mod.parse({"receivers": {"a": {"type": "log"}}, "default_to": "a"}, env={})
    assert cfg.warnings == []


def test_bare_dollar_in_a_secret_is_a_warning_naming_the_field_not_the_value() -> None:
    # (A bare "$SLACK_HOOK" as the whole URL is an error now: no http(s) URL.)
    cfg = config_mod.parse({"receivers": {"s": {"type": "slack", "webhook_url": "https://hooks.example/$HOOK_PATH"}},
                            "default_to": "s"}, env={})
    assert cfg.warnings == ["receivers.s.webhook_url: contains $NAME without braces, which is kept literally; "
                            "write ${NAME} to read the environment variable"]
    cfg = config_mod.parse({"receivers": {"s": {"type": "slack", "webhook_url": "${HOOK}"}}, "default_to": "s"},
                           env={"HOOK": "https://hooks.example/x"})
    assert cfg.warnings == []


def test_labels_in_a_route_need_a_source() -> None:
    data: dict[str, Any] = {"receivers": {"a": {"type": "log"}},
                            "routes": [{"name": "r", "to": "a", "match": {"labels": {"env": "prod"}}}]}
    assert problems(data) == ["routes[0].match.labels.env: no node_labels entry and no nodes: entry sets the "
                              "label 'env', so the route can never match"]
    config_mod.parse({**data, "node_labels": [{"match": "prod-*", "labels": {"env": "prod"}}]}, env={})


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    conf = tmp_path / "etc"
    (conf / "secrets").mkdir(parents=True)
    (conf / "secrets" / "hook").write_text("https://hooks.example/x\n")
    (conf / "secrets" / "redis").write_text("redis://:pw@127.0.0.1:6379/0\n")
    data = {
        "verification": {"public_key_file": "keys/public.pem"},
        "receivers": {
            "s": {"type": "slack", "webhook_url_file": "secrets/hook"},
            "m": {"type": "email", "to": ["a@example.com"], "from": "b@example.com",
                  "smtp": {"host": "smtp.example.com", "ca_file": "ca.pem"}},
        },
        "storage": {"url": "sqlite://data/bridge.db"},
        "default_to": "s",
    }
    cfg = config_mod.parse(data, env={}, base_dir=conf)
    assert cfg.verification.public_key_file == conf / "keys/public.pem"
    assert cfg.receivers["m"].smtp.ca_file == conf / "ca.pem"  # type: ignore[union-attr]
    assert cfg.receivers["s"].webhook_url.get_secret_value() == "https://hooks.example/x"  # type: ignore[union-attr]
    assert cfg.storage.url == f"sqlite://{conf}/data/bridge.db"
    absolute = config_mod.parse({"storage": {"url": "sqlite:///var/x.db"}, "default_to": []}, env={}, base_dir=conf)
    assert absolute.storage.url == "sqlite:///var/x.db"
    redis = config_mod.parse({"storage": {"url_file": "secrets/redis"}}, env={}, base_dir=conf)
    assert redis.storage.url == "redis://:pw@127.0.0.1:6379/0"
    assert problems({"storage": {"url": "memory://", "url_file": "x"}}) == ["storage: set url or url_file, not both"]


def test_env_interpolation() -> None:
    data = {
        "receivers": {"s": {"type": "slack", "webhook_url": "${HOOK}"}},
        "server": {"listen": "${HOST:-127.0.0.1}:${PORT:-9000}"},
    }
    cfg = config_mod.parse(data, env={"HOOK": "https://hooks.example/x"})
    assert cfg.server.listen == "127.0.0.1:9000"
    assert cfg.receivers["s"].webhook_url.get_secret_value() == "https://hooks.example/x"  # type: ignore[union-attr]
    assert problems(data) == ["receivers.s.webhook_url: environment variable HOOK is not set"]


def test_secret_files(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    cfg = config_mod.parse(
        {
            "receivers": {
                "m": {
                    "type": "email",
                    "to": ["a@b.c"],
                    "from": "x@y.z",
                    "smtp": {"host": "h", "username": "u", "password_file": str(tmp_path / "pw")},
                }
            }
        },
        env={},
    )
    assert cfg.receivers["m"].smtp.password.get_secret_value() == "s3cret"  # type: ignore[union-attr]
    assert "s3cret" not in repr(cfg)
    found = problems({"verification": {"api_token_file": str(tmp_path / "missing")}})
    assert len(found) == 1 and found[0].startswith("verification.api_token_file: cannot read")


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("server:\n  listen: [\n")
    with pytest.raises(ConfigError) as info:
        config_mod.load(path)
    assert "line" in info.value.problems[0] and "not valid YAML" in info.value.problems[0]


def test_every_name_of_the_package_resolves() -> None:
    """bridge/config/__init__.py imports each name of its interface when first asked for."""
    from bridge.config import loader, server

    for name in config_mod.__all__:
        getattr(config_mod, name)
    assert config_mod.load is loader.load and config_mod.ServerConfig is server.ServerConfig
    assert set(config_mod.__all__) <= set(dir(config_mod))
    with pytest.raises(AttributeError):
        config_mod.laod  # type: ignore[attr-defined]  # noqa: B018


def test_example_config_checks() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bridge", "check", "-c", "config.example.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "is valid" in out.stdout


def test_check_exit_2_lists_problems(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("server:\n  lisen: 1\nroutes:\n  - name: a\n    to: [ghost]\n")
    out = subprocess.run(
        [sys.executable, "-m", "bridge", "check", "-c", str(path)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert "error: server.lisen: unknown key" in out.stderr


def test_headers_file_holds_the_webhook_headers(tmp_path: Path) -> None:
    (tmp_path / "headers").write_text("Authorization: Bearer s3cret\nX-Team: ops\n")
    data: dict[str, Any] = {"receivers": {"w": {"type": "webhook", "url": "https://example.com/h",
                                                 "headers_file": "headers"}}, "default_to": "w"}
    cfg = config_mod.parse(data, env={}, base_dir=tmp_path)
    headers = cfg.receivers["w"].headers  # type: ignore[union-attr]
    assert {k: v.get_secret_value() for k, v in headers.items()} == {"Authorization": "Bearer s3cret", "X-Team": "ops"}
    (tmp_path / "headers").write_text("just a token\n")
    with pytest.raises(ConfigError) as info:
        config_mod.parse(data, env={}, base_dir=tmp_path)
    assert info.value.problems == [f"receivers.w.headers_file: {tmp_path}/headers must hold one 'Name: value' line "
                                   f"per header"]
    assert "token" not in str(info.value.problems)


def test_incident_keys() -> None:
    cfg = config_mod.parse(
        {
            "receivers": {"a": {"type": "log"}, "pager": {"type": "log"}},
            "routes": [{"name": "r", "to": "a", "for": "2m", "repeat_interval": "1h", "send_resolved": False,
                        "escalate": [{"after": "30m", "to": "pager"}, {"after": "1h", "to": ["a", "pager"]}]}],
        },
        env={},
    )
    route = cfg.routes[0]
    assert (route.for_, route.repeat_interval, route.send_resolved, route.send_updates) == (120, 3600, False, False)
    assert [(e.after, e.to) for e in route.escalate] == [(1800, ["pager"]), (3600, ["a", "pager"])]
    assert cfg.incidents.open_on == ["FAILED"] and cfg.incidents.resolve_on == ["RUNNING"]
    assert cfg.incidents.flapping.transitions == 0  # off unless configured


def test_incident_key_errors() -> None:
    steps = [{"after": "30m", "to": ["a", "ghost"]}, {"after": "10m", "to": "a"}, {"after": 0, "to": "a"}]
    data: dict[str, Any] = {
        "receivers": {"a": {"type": "log"}},
        "routes": [{"name": "r", "to": "a", "escalate": steps}],
        "incidents": {"open_on": ["FAILED", "RUNNING"], "resolve_on": "RUNNING"},
    }
    found = problems(data)
    assert "routes[0].escalate[0].to[1]: unknown receiver 'ghost'" in found
    assert any(p.startswith("routes[0].escalate[1].after: 10m is not after the previous step's 30m") for p in found)
    assert any(p.startswith("routes[0].escalate[2].after: must be longer than 0") for p in found)
    assert any(p.startswith("incidents.resolve_on[0]: 'RUNNING' is also in open_on") for p in found)
    assert len(found) == 4
    data["routes"][0]["for"] = "soon"
    assert problems(data) == ["routes[0].for: 'soon' is not a duration; write e.g. 30s, 5m, 24h or 1h30m"]
    found = problems({"incidents": {"flapping": {"transitions": 1}, "open_onn": []}})
    assert sorted(found) == [
        "incidents.flapping: transitions: 1 would call every status change flapping; use 2 or more, or 0 for off",
        "incidents.open_onn: unknown key (check the spelling; unknown keys are not ignored); did you mean open_on?",
    ]
    assert problems({"incidents": {"flapping": {"transitions": 3, "window": 0}}}) == [
        "incidents.flapping: window must be longer than 0 when transitions is set"
    ]


def test_incident_warnings() -> None:
    cfg = config_mod.parse({"incidents": {"open_on": ["FAILED", "REBOOTING"]}}, env={})
    assert any(w.startswith("incidents.open_on[1]: 'REBOOTING' is not a known status") for w in cfg.warnings)
    assert problems({"incidents": {"resolve_on": ["RUNING"]}}) == [
        "incidents.resolve_on[0]: 'RUNING' is not a known status (statuses are case-sensitive); did you mean RUNNING?"
    ]
    cfg = config_mod.parse({"incidents": {"resolve_on": []}}, env={})
    assert "incidents.resolve_on: empty; incidents are resolved only by hand" in cfg.warnings
    cfg = config_mod.parse(
        {"receivers": {"a": {"type": "log"}},
         "routes": [{"name": "r", "to": "a", "for": "1h", "escalate": [{"after": "30m", "to": "a"}]}]},
        env={},
    )
    assert any(w.startswith("routes[0].escalate[0].after: 30m is not longer than the route's for (1h)")
               for w in cfg.warnings)


@pytest.mark.parametrize("key", ["for", "repeat_interval"])
def test_incident_timers_are_off_or_at_least_a_second(key: str) -> None:
    """A reminder every microsecond would spin the timer loop: 0 (off) or >= 1s, with the YAML path."""
    base = {"verification": {"public_key": "x"}, "receivers": {"ops": {"type": "log"}}}
    route = {"name": "r", "match": {"status": ["FAILED"]}, "to": ["ops"]}
    found = problems({**base, "routes": [{**route, key: "100ms"}]})
    assert any(p.startswith(f"routes[0].{key}:") and "at least 1s" in p for p in found), found
    for fine in ("1s", 0):
        parse({**base, "routes": [{**route, key: fine}]})


# --- conversations (issue 14): Slack mentions, channels, webhook mode --------------------------------

SLACK_BOT = {"type": "slack", "token": "xoxb-1", "channel": "#alerts"}


def test_slack_conversation_keys_and_defaults() -> None:
    cfg = config_mod.parse({"receivers": {"s": {**SLACK_BOT, "mentions": ["<!subteam^S0123>", "<@U0456>", "<!here>"],
                                                "broadcast_resolved": True}}}, env={})
    rcv = cfg.receivers["s"]
    assert rcv.mentions == ["<!subteam^S0123>", "<@U0456>", "<!here>"]  # type: ignore[union-attr]
    assert rcv.broadcast_resolved is True  # type: ignore[union-attr]
    plain = config_mod.parse({"receivers": {"s": SLACK_BOT}}, env={}).receivers["s"]
    assert plain.mentions == [] and plain.broadcast_resolved is False  # type: ignore[union-attr]
    assert cfg.storage.retention.conversations == 30 * 86400


@pytest.mark.parametrize("mention", ["@here", "bob", "<@bob>", "<!channel> <@U1>", "<!subteam^S1|<!channel>>",
                                     "<https://evil.example|x>", ""])
def test_a_mention_that_is_not_one_names_its_yaml_path(mention: str) -> None:
    [problem] = problems({"receivers": {"s": {**SLACK_BOT, "mentions": ["<@U0456>", mention]}}})
    assert problem.startswith(f"receivers.s.mentions[1]: {mention!r} is not a Slack mention; write <@U0123ABCD>")


@pytest.mark.parametrize("channel", ["#Alerts", "#a b", "#<!channel>", "  "])
def test_a_channel_that_is_no_slack_channel_is_an_error(channel: str) -> None:
    [problem] = problems({"receivers": {"s": {**SLACK_BOT, "channel": channel}}})
    assert problem.startswith("receivers.s.channel: ")
    assert "is not a Slack channel" in problem or "is empty" in problem


@pytest.mark.parametrize(("team", "expect"), [
    ("core", None),
    ("Core", "receivers.s.channel: for the sample alert of node 'node-sample-1', the rendered value '#Core-alerts' "
             "is not a Slack channel"),
    ("", "receivers.s.channel: for the sample alert of node 'node-sample-1', the rendered value '#-alerts' is not"),
    (None, "receivers.s.channel: template error: 'dict object' has no attribute 'team'"),
])
def test_check_renders_the_channel_template_against_the_sample_alerts(
    tmp_path: Path, team: str | None, expect: str | None
) -> None:
    data: dict[str, Any] = {"verification": {"public_key": "unused"},
                            "receivers": {"s": {**SLACK_BOT, "channel": "#{{ labels.team }}-alerts"}},
                            "default_to": "s"}
    if team is not None:
        data["node_labels"] = [{"match": "*", "labels": {"team": team, "env": "prod"}}]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    out = subprocess.run([sys.executable, "-m", "bridge", "check", "-c", str(path)], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    if expect is None:
        assert out.returncode == 0, out.stderr
    else:
        assert out.returncode == 2 and f"error: {expect}" in out.stderr, out.stderr


def test_check_warns_when_a_route_asks_for_updates_on_a_slack_webhook() -> None:
    cfg = config_mod.parse({
        "receivers": {"hook": {"type": "slack", "webhook_url": "https://hooks.slack.example.test/services/T/B/x"},
                      "bot": SLACK_BOT},
        "routes": [{"name": "r", "to": ["bot", "hook"], "send_updates": True},
                   # reminders and escalations: a message each, as Alertmanager users expect of a webhook
                   {"name": "q", "to": ["hook"], "repeat_interval": "1h", "escalate": [{"after": "30m", "to": "hook"}]},
                   {"name": "plain", "to": ["hook"]}],
    }, env={})
    assert [w for w in cfg.warnings if "cannot thread" in w] == [
        "routes[0].to[1]: receiver 'hook' is a Slack incoming webhook, which cannot thread or edit: with "
        "send_updates every status change of an incident is a message of its own in the channel; give the "
        "receiver token and channel for one thread per incident",
    ]


def test_grouping_keys_parse_and_bad_values_name_their_yaml_path() -> None:
    base = {"verification": {"public_key": "x"}, "receivers": {"ops": {"type": "log"}}}
    route = {"name": "r", "match": {"status": ["FAILED"]}, "to": ["ops"]}
    cfg = parse({**base, "routes": [{**route, "group_wait": "30s", "group_by": "env"}]}, env={})
    r = cfg.routes[0]
    assert (r.group_wait, r.group_interval, r.group_by) == (30.0, 300.0, ["env"])  # defaults: 5m, one label
    assert parse({**base, "routes": [route]}, env={}).routes[0].group_wait == 0.0  # off unless set
    cases = {
        "group_wait": ("soon", "routes[0].group_wait: 'soon' is not a duration"),
        "group_interval": ("500ms", "routes[0].group_interval: must be 0 (off) or at least 1s"),
        "group_by": ({"env": 1}, "routes[0].group_by:"),
    }
    for key, (value, expected) in cases.items():
        found = problems({**base, "routes": [{**route, "group_wait": "10s", key: value}]})
        assert any(p.startswith(expected) or expected in p for p in found), (key, found)
    found = problems({**base, "routes": [{**route, "group_wait": "10s", "group_by": ["env", "env"]}]})
    assert any(p.startswith("routes[0].group_by:") and "twice" in p for p in found), found
    found = problems({**base, "routes": [{**route, "group_wait": "10s", "group_by": [""]}]})
    assert any(p.startswith("routes[0].group_by:") and "empty" in p for p in found), found


def test_grouping_warnings_say_the_fix() -> None:
    pd = {"type": "pagerduty", "routing_key": "R0123456789abcdef0123456789abcdef"}
    base: dict[str, Any] = {"verification": {"public_key": "x"}, "receivers": {"ops": {"type": "log"}, "pd": pd}}
    route = {"name": "r", "match": {"status": ["FAILED"]}, "to": ["ops"]}

    def warnings(**keys: Any) -> list[str]:
        return parse({**base, "routes": [{**route, **keys}]}, env={}).warnings

    short = warnings(group_wait="1m", group_interval="30s")
    assert any(w.startswith("routes[0].group_interval: 30s is shorter than group_wait (1m)") and
               "at least group_wait" in w for w in short), short
    unused = warnings(group_by=["env"])
    assert any(w.startswith("routes[0].group_by: has no effect while group_wait is 0") for w in unused), unused
    assert any(w.startswith("routes[0].group_wait: 2h holds every firing") for w in warnings(group_wait="2h"))
    paged = warnings(group_wait="30s", to=["ops", "pd"])
    assert any(w.startswith("routes[0].group_wait: pd get each incident's own event") for w in paged), paged
    assert warnings(group_wait="30s") == [] and warnings() == []
