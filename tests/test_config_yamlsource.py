"""The config YAML loader: duplicate keys refused with their path and both lines (merge keys still
work), YAML 1.1 booleans and numbers remembered as written; every reader of config YAML uses it."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bridge import config as config_mod
from bridge.commands import server_section
from bridge.config import yamlsource
from bridge.errors import CommandError
from tests.support.configs import load_problems


def test_a_receiver_given_twice_is_an_error_naming_the_path_and_both_lines(tmp_path: Path) -> None:
    problems = load_problems(tmp_path, """\
        receivers:
          oncall: {type: slack, webhook_url: "https://hooks.slack.example/services/T/B/secret-part"}
          oncall: {type: log}
        routes:
          - {name: all, to: [oncall]}
        routes: []
        """)
    assert problems == [
        "receivers.oncall: duplicate key, given twice on lines 2 and 3 (only the last would count); "
        "remove or rename one of them",
        "routes: duplicate key, given twice on lines 4 and 6 (only the last would count); remove or rename one of them",
    ]
    assert not any("secret-part" in p for p in problems)


def test_merge_keys_still_work_and_an_override_is_no_duplicate(tmp_path: Path) -> None:
    """``<<`` copies keys in; a key of the mapping itself overrides a merged one. A mapping merged into
    a shallower one before it is constructed itself (the constructor goes breadth first) is checked as
    written, not with the merged keys."""
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent("""\
        receivers:
          base: &base {type: log, concurrency: 2}
          quiet: &quiet {<<: *base, concurrency: 1}
        routes:
          - &all {name: all, to: [base], send_resolved: false}
          - {<<: *all, name: again, send_resolved: true}
        incidents: {<<: {open_on: [FAILED]}, resolve_on: [RUNNING]}
        """))
    cfg = config_mod.load(path, env={})
    assert cfg.receivers["quiet"].concurrency == 1 and cfg.receivers["base"].concurrency == 2
    assert [(r.name, r.to, r.send_resolved) for r in cfg.routes] == [("all", ["base"], False),
                                                                     ("again", ["base"], True)]
    nested = yamlsource.read("a:\n  b: &b {<<: {x: 1}, x: 2}\nc: {<<: *b}\nd: {x: 1, x: 2}\n")
    assert nested.data["c"] == {"x": 2}
    assert [d.path for d in nested.duplicates] == [("d", "x")]


def test_plain_booleans_and_numbers_are_remembered_as_written() -> None:
    doc = yamlsource.read('status: [ON, "OFF", yes, 0123, 1.50]\nlabels: {rack: 0123, zone: "0123"}\n')
    assert doc.data["status"] == [True, "OFF", True, 83, 1.5]
    assert doc.scalars == {("status", 0): "ON", ("status", 2): "yes", ("status", 3): "0123",
                           ("status", 4): "1.50", ("labels", "rack"): "0123"}


def test_a_headers_file_naming_a_header_twice_is_refused_without_its_values(tmp_path: Path) -> None:
    (tmp_path / "headers.yaml").write_text("Authorization: Bearer first-secret\nX-Team: ops\n"
                                           "Authorization: Bearer second-secret\n")
    problems = load_problems(tmp_path, """\
        receivers:
          hook: {type: webhook, url: "https://hooks.example.test/x", headers_file: headers.yaml}
        """)
    assert problems == [f"receivers.hook.headers_file: {tmp_path / 'headers.yaml'}: Authorization: duplicate key, "
                        "given twice on lines 1 and 3 (only the last would count); remove or rename one of them"]


def test_server_section_refuses_a_duplicate_in_server_only(tmp_path: Path) -> None:
    """What reload and healthcheck read first: a key twice in server: cannot be guessed; twice
    elsewhere is for the bridge's reload (or check) to refuse, the probe still works."""
    path = tmp_path / "config.yaml"
    path.write_text("server:\n  listen: 127.0.0.1:8080\n  listen: 127.0.0.1:9999\n")
    with pytest.raises(CommandError) as info:
        server_section(str(path))
    assert str(info.value) == (f"cannot read server: from {path}: server.listen: duplicate key, given twice on "
                               "lines 2 and 3 (only the last would count); remove or rename one of them")
    path.write_text("server: {listen: 127.0.0.1:8080}\nreceivers:\n  a: {type: log}\n  a: {type: log}\n")
    assert server_section(str(path)).listen == "127.0.0.1:8080"
