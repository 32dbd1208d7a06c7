"""Loading: YAML (yamlsource: duplicate keys refused), ``${VAR}`` interpolation (envsubst), pydantic
errors turned into YAML-path problems (problems.py), the checks across sections, and the files read
only at start.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from bridge.config import lint as config_lint
from bridge.config import yamlsource
from bridge.config.base import format_duration
from bridge.config.envsubst import interpolate
from bridge.config.model import Config, RouteConfig
from bridge.config.problems import pydantic_problems
from bridge.config.receivers import EmailReceiverConfig, SlackReceiverConfig
from bridge.config.yamlsource import YamlPath
from bridge.errors import ConfigError, KeyLoadError


def _semantic_problems(cfg: Config) -> tuple[list[str], list[str]]:
    problems: list[str] = []
    warnings: list[str] = []
    names = set(cfg.receivers)
    seen_routes: set[str] = set()
    label_keys = {k for entry in cfg.node_labels for k in entry.labels}
    label_keys.update(k for node in (cfg.nodes or {}).values() for k in node.labels)
    if not cfg.routes and not cfg.default_to:
        warnings.append("routes: no route and no default_to: every event is recorded and nobody is notified")
    for i, route in enumerate(cfg.routes):
        where = f"routes[{i}]"
        if route.name == "default" and cfg.default_to:
            problems.append(f"{where}.name: 'default' is the name of default_to's route; choose another")
        if route.name in seen_routes:
            problems.append(f"{where}.name: duplicate route name {route.name!r}")
        seen_routes.add(route.name)
        for j, rcv in enumerate(route.to):
            if rcv not in names:
                problems.append(f"{where}.to[{j}]: unknown receiver {rcv!r}{config_lint.did_you_mean(rcv, names)}")
        for key in ("status", "previous_status", "status_not", "previous_status_not"):
            p, w = config_lint.status_findings(f"{where}.match.{key}", getattr(route.match, key) or [])
            problems += p
            warnings += w
        for key in sorted(route.match.labels or {}):  # with nodes:, routing checks each node's labels
            if cfg.nodes is None and key not in label_keys:
                problems.append(f"{where}.match.labels.{key}: no node_labels entry and no nodes: entry sets "
                                f"the label {key!r}, so the route can never match")
        for key in ("node", "status", "event_type", "previous_status", "status_not", "previous_status_not"):
            if getattr(route.match, key) == []:
                problems.append(f"{where}.match.{key}: an empty list can never match; omit the key instead")
    _incident_problems(cfg, names, problems, warnings)
    warnings += _unthreaded_warnings(cfg)
    for j, rcv in enumerate(cfg.default_to):
        if rcv not in names:
            problems.append(f"default_to[{j}]: unknown receiver {rcv!r}{config_lint.did_you_mean(rcv, names)}")
    warnings += config_lint.secret_dollar_warnings(cfg)
    v = cfg.verification
    # The replay window: a captured event is "stale" after max_event_age (+ skew) and a duplicate
    # within dedup_ttl, so dedup_ttl must cover the whole window; with no age limit nothing can.
    if v.max_event_age == 0:
        problems.append(
            "verification.max_event_age: 0 (no age limit) lets a captured event alert again once "
            "storage.dedup_ttl has passed; set an age limit such as 24h (dedup_ttl must be at least "
            "max_event_age + max_clock_skew)"
        )
    elif cfg.storage.dedup_ttl < v.max_event_age + v.max_clock_skew:
        problems.append(
            f"storage.dedup_ttl: {format_duration(cfg.storage.dedup_ttl)} is shorter than "
            f"verification.max_event_age + max_clock_skew "
            f"({format_duration(v.max_event_age + v.max_clock_skew)}): a replayed event could alert twice"
        )
    if v.uses_url and v.public_key_url and not re.match(r"^https?://", v.public_key_url):
        problems.append("verification.public_key_url: must be an http:// or https:// URL"
                        + config_lint.bare_var_fix(v.public_key_url))
    if not v.uses_url and v.public_key is None and v.public_key_file is None:
        problems.append("verification: set one of public_key_url, public_key_file or public_key")
    for node_id, node in (cfg.nodes or {}).items():
        if node.public_key_file and node.public_key:
            problems.append(f"nodes.{node_id}: set public_key or public_key_file, not both")
    for i, silence in enumerate(cfg.silences):
        if silence.starts_at and silence.starts_at >= silence.ends_at:
            problems.append(f"silences[{i}].ends_at: must be after starts_at")
    return problems, warnings


def _grouping_findings(cfg: Config, i: int, route: RouteConfig, warnings: list[str]) -> None:
    """Grouping keys that do nothing, or less than they seem to (bridge/grouping.py)."""
    fields = route.model_fields_set
    if not route.group_wait:
        unused = [k for k in ("group_interval", "group_by") if k in fields]
        if unused:
            warnings.append(f"routes[{i}].{unused[0]}: has no effect while group_wait is 0 (grouping off); "
                            "set group_wait (e.g. 30s) or drop it")
        return
    if route.group_interval < route.group_wait:
        warnings.append(
            f"routes[{i}].group_interval: {format_duration(route.group_interval)} is shorter than group_wait "
            f"({format_duration(route.group_wait)}), so a firing that comes after a digest is usually too late "
            f"to join it and starts a new group; set group_interval to at least group_wait (e.g. 5m)"
        )
    pagers = [r for r in route.to if r in cfg.receivers and cfg.receivers[r].type in ("pagerduty", "opsgenie")]
    if pagers:
        warnings.append(
            f"routes[{i}].group_wait: {', '.join(pagers)} get each incident's own event (pagers deduplicate per "
            f"incident, so they are not grouped), but only after group_wait ({format_duration(route.group_wait)}); "
            "route pagers from a route without group_wait if they must not wait"
        )
    if route.group_wait > 3600:
        warnings.append(
            f"routes[{i}].group_wait: {format_duration(route.group_wait)} holds every firing of the route that "
            "long before anyone hears of it; a digest usually waits 10s to 2m"
        )


def _incident_problems(cfg: Config, names: set[str], problems: list[str], warnings: list[str]) -> None:
    """The incident keys: escalation receivers and steps, open_on/resolve_on, pointless reminders."""
    resolve_on = set(cfg.incidents.resolve_on)
    for i, route in enumerate(cfg.routes):
        statuses = route.match.status
        if route.repeat_interval and statuses and resolve_on.issuperset(statuses):
            # The old suppression meaning of repeat_interval on a recovery route now means reminding.
            warnings.append(
                f"routes[{i}].repeat_interval: the route matches only {', '.join(statuses)} (incidents.resolve_on), "
                f"so it would remind every {format_duration(route.repeat_interval)} that the node is still healthy; "
                "drop repeat_interval here (repeat_interval now reminds, it no longer suppresses; "
                "send_resolved on the route that matches the failure sends the recovery)"
            )
        _grouping_findings(cfg, i, route, warnings)
        last = 0.0
        for j, step in enumerate(route.escalate):
            where = f"routes[{i}].escalate[{j}]"
            if step.after <= 0:
                problems.append(f"{where}.after: must be longer than 0 (the firing notification is step zero)")
            elif step.after <= last:
                problems.append(
                    f"{where}.after: {format_duration(step.after)} is not after the previous step's "
                    f"{format_duration(last)}; list the steps in increasing order"
                )
            last = max(last, step.after)
            if 0 < step.after <= route.for_:
                warnings.append(
                    f"{where}.after: {format_duration(step.after)} is not longer than the route's for "
                    f"({format_duration(route.for_)}): the escalation goes out before the first notification"
                )
            for k, rcv in enumerate(step.to):
                if rcv not in names:
                    problems.append(f"{where}.to[{k}]: unknown receiver {rcv!r}{config_lint.did_you_mean(rcv, names)}")
    inc = cfg.incidents
    for key in ("open_on", "resolve_on"):
        p, w = config_lint.status_findings(f"incidents.{key}", getattr(inc, key))
        problems += p
        warnings += w
    for j, status in enumerate(inc.resolve_on):
        if status in inc.open_on:
            problems.append(
                f"incidents.resolve_on[{j}]: {status!r} is also in open_on; a status cannot both open and "
                f"resolve an incident (remove it from one of the lists)"
            )
    if inc.open_on and not inc.resolve_on:
        warnings.append("incidents.resolve_on: empty; incidents are resolved only by hand")


def _unthreaded_warnings(cfg: Config) -> list[str]:
    """A route that sends every status change of an incident (send_updates) to a Slack incoming
    webhook: each one is a message of its own in the channel (only a bot token threads and edits).
    Reminders and escalations are not warned about: one message each now and then is what
    Alertmanager users expect of a webhook, and the shipped configs do exactly that."""
    warnings = []
    for i, route in enumerate(cfg.routes):
        for j, name in enumerate(route.to if route.send_updates else []):
            rcv = cfg.receivers.get(name)
            if isinstance(rcv, SlackReceiverConfig) and rcv.webhook_url is not None:
                warnings.append(
                    f"routes[{i}].to[{j}]: receiver {name!r} is a Slack incoming webhook, which cannot thread or "
                    "edit: with send_updates every status change of an incident is a message of its own in the "
                    "channel; give the receiver token and channel for one thread per incident"
                )
    return warnings


def unreadable_files(cfg: Config) -> list[str]:
    """Files read only when the bridge starts (TLS pair, public keys, CA bundle) that cannot be read
    now, or are not what they should be (a public key, a certificate and its key).

    Not part of ``parse`` (a config may be built before its files exist); ``check``, ``serve`` and
    reload run it through ``app.validate``."""
    files: list[tuple[str, Path]] = []
    if cfg.server.tls is not None:
        files += [("server.tls.cert_file", cfg.server.tls.cert_file), ("server.tls.key_file", cfg.server.tls.key_file)]
    if cfg.verification.public_key_file is not None:
        files.append(("verification.public_key_file", cfg.verification.public_key_file))
    for node_id, node in (cfg.nodes or {}).items():
        if node.public_key_file is not None:
            files.append((f"nodes.{node_id}.public_key_file", node.public_key_file))
    for name, rcv in cfg.receivers.items():
        if isinstance(rcv, EmailReceiverConfig) and rcv.smtp.ca_file is not None:
            files.append((f"receivers.{name}.smtp.ca_file", rcv.smtp.ca_file))
    problems = []
    keys = {where for where, _ in files if where.endswith("public_key_file")}
    for where, path in files:
        try:
            with open(path, "rb") as f:
                content = f.read(1 << 20) if where in keys else f.read(1)
        except OSError as exc:
            problems.append(f"{where}: cannot read {path}: {exc.strerror or exc}")
            continue
        if where in keys:
            from bridge.keys import load_public_key  # late: keys imports the config package

            try:
                load_public_key(content)
            except KeyLoadError as exc:
                problems.append(f"{where}: {path}: {exc}; give the RSA public key ThunderStack publishes (PEM, "
                                "from its webhook-public-key endpoint or a node's settings)")
    tls = cfg.server.tls
    if tls is not None and not any(p.startswith("server.tls.") for p in problems):
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(tls.cert_file, tls.key_file)
        except (ssl.SSLError, OSError) as exc:
            problems.append(f"server.tls: {tls.cert_file} and {tls.key_file} are not a certificate and its key "
                            f"({getattr(exc, 'reason', None) or exc}); give a PEM certificate chain and its "
                            "private key")
    return problems


def parse(
    data: Any, *, env: Mapping[str, str] | None = None, source: str = "<memory>", base_dir: Path | None = None,
    scalars: Mapping[YamlPath, str] | None = None,
) -> Config:
    """Validate already-loaded YAML data. Raises ConfigError listing every problem.

    Relative file paths (``*_file``, ``public_key_file``, ``ca_file``, TLS files, a relative
    ``sqlite://`` path) are taken relative to ``base_dir``: load() passes the config file's directory.
    ``scalars`` (from yamlsource.read) lets an error quote an ``ON`` that YAML read as a boolean."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: the top level must be a mapping (server:, verification:, ...)"])
    problems = [f"{key}: unknown key (check the spelling; unknown keys are not ignored)"
                for key in ("source", "warnings") if key in data]  # load()'s own fields, not YAML keys
    data = interpolate(data, os.environ if env is None else env, (), problems)
    if problems:
        raise ConfigError(problems)
    try:
        base = base_dir.absolute() if base_dir is not None else None
        cfg = Config.model_validate(data, context={"base_dir": base})
    except ValidationError as exc:
        raise ConfigError(pydantic_problems(exc, scalars=scalars, data=data)) from None
    problems, warnings = _semantic_problems(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg.model_copy(update={"source": source, "warnings": warnings})


def load(path: str | Path, *, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a YAML config file (every command that reads a whole config comes here).
    A key given twice in one mapping is an error naming both lines (yamlsource)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    try:
        doc = yamlsource.read(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{path}:{where}: not valid YAML: {problem}"]) from None
    if doc.duplicates:
        raise ConfigError([d.problem() for d in doc.duplicates])
    return parse(doc.data, env=env, source=str(path), base_dir=path.parent, scalars=doc.scalars)
