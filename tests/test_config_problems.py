"""Validation errors with their fix: the list or mapping form, what an empty list needs, what a
boolean or a number accepts, quotes for YAML 1.1 booleans and numbers, ``${NAME}`` for ``$NAME``;
never a value that may be a secret."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bridge import config as config_mod
from bridge.errors import ConfigError
from tests.support.configs import load_problems

LOG = {"console": {"type": "log"}}
MAIL = {"type": "email", "from": "bridge@example.com", "smtp": {"host": "localhost"}}


def problems(data: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_mod.parse(data, env={})
    return info.value.problems


@pytest.mark.parametrize(("data", "expected"), [
    ({"receivers": None},
     "receivers: expected a mapping, found nothing (null); indent its entries under it "
     "(e.g. receivers: {oncall: {type: log}}), or write receivers: {}"),
    ({"nodes": ["a", "b"]},
     "nodes: expected a mapping (key: value), not a list; e.g. nodes: {node-prod-1: {labels: {env: prod}}}"),
    ({"receivers": LOG, "routes": ["console"]},
     "routes[0]: expected a mapping (key: value), not text; e.g. - {name: all, to: [oncall]}"),
    ({"receivers": {"s": "log"}}, "receivers.s: expected a mapping (key: value), not text; e.g. s: {type: log}"),
    ({"receivers": LOG, "routes": {"name": "all", "to": ["console"]}},
     'routes: expected a list, not a mapping; start each entry with "- ", e.g. routes: [{name: ...}]'),
    ({"receivers": {"m": {**MAIL, "to": "ops@example.com"}}},
     "receivers.m.to: expected a list, not text; write to: [ops@example.com]"),
    ({"receivers": LOG, "routes": [{"name": "all", "to": []}]},
     "routes[0].to: is empty; add at least one receiver name from receivers:, e.g. to: [console]"),
    ({"receivers": {"m": {**MAIL, "to": []}}},
     "receivers.m.to: is empty; add at least one address, e.g. to: [ops@example.com]"),
    ({"receivers": LOG, "routes": [{"name": "all", "to": ["console"], "stop": "maybe"}]},
     "routes[0].stop: expected true or false; write stop: true or stop: false"),
    ({"server": {"max_body_bytes": "64k"}},
     "server.max_body_bytes: expected a whole number written with digits only (no units, no quotes), "
     "e.g. max_body_bytes: 65536"),
    ({"receivers": {"c": {"type": "log", "rate_limit": "fast"}}},
     "receivers.c.rate_limit: expected a number written with digits, e.g. rate_limit: 0.5"),
])
def test_a_wrong_shape_says_how_to_write_it(data: Any, expected: str) -> None:
    assert problems(data) == [expected]


def test_yaml_booleans_and_numbers_where_text_is_meant_say_what_to_quote(tmp_path: Path) -> None:
    found = load_problems(tmp_path, """\
        nodes:
          n1: {labels: {rack: 0123, active: yes}}
        receivers:
          console: {type: log}
        routes:
          - {name: r, match: {status: [ON], previous_status: off}, to: [console]}
        """)
    assert sorted(found) == [
        'nodes.n1.labels.active: expected text, but YAML read unquoted yes as a boolean; quote it: active: "yes"',
        'nodes.n1.labels.rack: expected text, but YAML read unquoted 0123 as a number; quote it: rack: "0123"',
        'routes[0].match.previous_status: expected a list, not a boolean; write previous_status: ["off"]',
        'routes[0].match.status[0]: expected text, but YAML read unquoted ON as a boolean; quote it: status: ["ON"]',
    ]


def test_no_message_shows_a_secret(tmp_path: Path) -> None:
    """Secrets a YAML number or a list made invalid: the fix is given, the value never."""
    found = load_problems(tmp_path, """\
        storage: {url: 987654321}
        receivers:
          m: {type: email, to: [ops@example.com], from: b@example.com,
              smtp: {host: localhost, username: u, password: 24681357}}
          h: {type: webhook, url: "https://hooks.example.test/x", headers: {X-Key: 13572468}}
          w: {type: webhook, url: ["https://hooks.example.test/very-secret-path"]}
        """)
    text = "\n".join(found)
    for secret in ("987654321", "24681357", "13572468", "very-secret-path"):
        assert secret not in text
    assert sorted(found) == [
        "receivers.h.headers.X-Key: expected text, but YAML read this unquoted value as a number; "
        "put the value in quotes",
        "receivers.m.smtp.password: expected text, but YAML read this unquoted value as a number; "
        "put the value in quotes",
        "receivers.w.url: expected text, not a list",
        "storage.url: expected text, but YAML read this unquoted value as a number; put the value in quotes",
    ]


@pytest.mark.parametrize(("data", "expected"), [
    ({"receivers": {"s": {"type": "slack", "webhook_url": "$SLACK_URL"}}},
     "receivers.s: webhook_url must be set to an http:// or https:// URL; $SLACK_URL is kept literally: "
     "write ${SLACK_URL} to read the environment variable"),
    ({"receivers": {"t": {"type": "msteams", "url": "$TEAMS_URL"}}},
     "receivers.t: url must be set to an http:// or https:// URL; $TEAMS_URL is kept literally: "
     "write ${TEAMS_URL} to read the environment variable"),
    ({"storage": {"url": "$REDIS_URL"}},
     "storage.url: expected sqlite:///path/to/bridge.db, memory:// or redis://host:port/db; $REDIS_URL is kept "
     "literally: write ${REDIS_URL} to read the environment variable"),
])
def test_a_bare_dollar_name_that_makes_a_value_invalid_says_to_write_braces(data: Any, expected: str) -> None:
    assert problems(data) == [expected]


def test_a_dollar_value_with_more_after_the_name_is_not_echoed() -> None:
    # "$ab9Xk/T0123/B456/secretpart": what follows the name may be part of a secret.
    (found,) = problems({"receivers": {"s": {"type": "slack", "webhook_url": "$ab9Xk/T0123/B456/secretpart"}}})
    assert "ab9Xk" not in found and "secretpart" not in found
    assert found.endswith("a value starting with $ is kept literally: write ${NAME} to read an environment variable")
