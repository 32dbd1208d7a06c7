"""Pydantic's validation errors as ``check`` prints them: ``yaml.path: what is wrong; how to fix it``.

pydantic says what is wrong ("Input should be a valid list"); an operator also needs the fix in
YAML terms: the list or mapping form of what they wrote, what to add to an empty list, the values a
boolean or a number accepts, and quotes around ``ON`` or ``0123`` that YAML 1.1 read as a boolean or
a number where text was meant. No message shows a value that may be a secret (lint.is_secret_at):
those get the fix without the value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from bridge.config import lint as config_lint
from bridge.config.model import Config
from bridge.config.receivers import RECEIVER_TYPES
from bridge.config.yamlsource import YamlPath, format_path

__all__ = ["pydantic_problems"]

# The mapping form of a section, for "expected a mapping" (by its key; a list item by its list's key).
_MAPPING_EXAMPLES = {
    "receivers": "receivers: {oncall: {type: log}}",
    "nodes": "nodes: {node-prod-1: {labels: {env: prod}}}",
    "labels": "labels: {env: prod}",
    "headers": "headers: {X-Team: ops}",
    "severity": "severity: {FAILED: critical}",
    "priority": "priority: {FAILED: P1}",
    "routes": "routes: [{name: all, to: [oncall]}]",
    "escalate": "escalate: [{after: 30m, to: [oncall]}]",
    "silences": "silences: [{node: 'db-*', ends_at: '2026-05-01T06:00:00Z'}]",
    "node_labels": "node_labels: [{match: ['db-*'], labels: {tier: db}}]",
    "match": "match: {status: [FAILED]}",
    "retry": "retry: {max_attempts: 8}",
    "smtp": "smtp: {host: smtp.example.com}",
    "tls": "tls: {cert_file: cert.pem, key_file: key.pem}",
}
# What an empty list needs, for "too_short" (by the list's key).
_ADD = {
    "to": "one receiver name",
    "match": "one node id or glob, e.g. match: ['db-*']",
    "labels": "one label, e.g. labels: {tier: db}",
}
_MAX_SHOWN = 60


def _strip_union_tag(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    # pydantic puts the discriminator value into the path: receivers.x.slack.token → receivers.x.token
    if len(loc) >= 3 and loc[0] == "receivers" and loc[2] in RECEIVER_TYPES:
        return (*loc[:2], *loc[3:])
    return tuple(p for p in loc if p not in ("function-after[_str_or_list(), list[str]]",))


def _key(loc: tuple[Any, ...]) -> str:
    """The YAML key an example is written under: the last named part of the path."""
    return next((str(p) for p in reversed(loc) if isinstance(p, str)), "value")


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _literal(text: str) -> str:
    """``text`` as a YAML flow scalar: plain when YAML reads it back as this very string, else quoted."""
    plain = (text == text.strip() != "" and not re.search(r"[,\[\]{}#]|: ", text)
             and text[0] not in "-?:&*!|>'\"%@`")
    try:
        plain = plain and yaml.safe_load(text) == text
    except yaml.YAMLError:
        plain = False
    return text if plain else json.dumps(text)


def _written(value: Any, loc: tuple[Any, ...], scalars: Mapping[YamlPath, str]) -> str | None:
    """A scalar as the operator wrote it (the YAML source of a boolean or number when known), quoted
    so that YAML reads it as text; None for other values and long ones."""
    if loc in scalars:
        text = scalars[loc]
    elif isinstance(value, str):
        text = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        text = str(value)
    else:
        return None
    if len(text) > _MAX_SHOWN:
        return None
    return json.dumps(text) if loc in scalars or not isinstance(value, str) else _literal(text)


def _receiver_names(data: Any) -> list[str]:
    receivers = data.get("receivers") if isinstance(data, dict) else None
    return [str(n) for n in receivers] if isinstance(receivers, dict) else []


def _fix(err: ErrorDetails, loc: tuple[Any, ...], scalars: Mapping[YamlPath, str], data: Any) -> str | None:
    """The message for an error type that has a known fix, or None to keep pydantic's."""
    kind, value, key = err["type"], err.get("input"), _key(loc)
    secret = config_lint.is_secret_at(Config, tuple(err["loc"]))
    shown = None if secret else _written(value, loc, scalars)
    if kind == "list_type":
        if isinstance(value, dict):
            item_keys = config_lint.model_keys_at(Config, (*err["loc"], 0))
            if item_keys:  # a list of mappings (routes): the form of one entry
                example = f"[{{{item_keys[0]}: ...}}]"
            else:  # a list of names written as a mapping's keys (to: {console: true})
                names = [_literal(str(k)) for k in list(value)[:3]]
                example = f"[{', '.join(names)}]" if names and not secret else "[...]"
            return f"expected a list, not a mapping; start each entry with \"- \", e.g. {key}: {example}"
        if value is None:
            return f"expected a list, found nothing (null); give it \"- \" entries, or write {key}: []"
        return f"expected a list, not {_kind(value)}; write {key}: [{shown or '...'}]"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        keys = config_lint.model_keys_at(Config, tuple(err["loc"]))
        example = _MAPPING_EXAMPLES.get(key, f"{key}: {{{keys[0] if keys else 'name'}: ...}}")
        if len(loc) == 2 and loc[0] == "receivers":
            example = f"{key}: {{type: log}}"
        if isinstance(loc[-1] if loc else None, int) and key in _MAPPING_EXAMPLES:
            example = "- " + example.split("[", 1)[1].rsplit("]", 1)[0]  # a list item: its mapping form
        if value is None:
            return f"expected a mapping, found nothing (null); indent its entries under it (e.g. {example}), " \
                   f"or write {key}: {{}}"
        return f"expected a mapping (key: value), not {_kind(value)}; e.g. {example}"
    if kind == "too_short":
        n = (err.get("ctx") or {}).get("min_length", 1)
        what = _ADD.get(key, f"{n} item{'s' if n != 1 else ''}")
        if key == "to" and loc[:1] == ("receivers",):
            what = "one address, e.g. to: [ops@example.com]"
        elif key == "to":
            names = _receiver_names(data)
            what += f" from receivers:, e.g. to: [{_literal(names[0]) if names else 'oncall'}]"
        return f"is empty; add at least {what}"
    if kind in ("bool_parsing", "bool_type"):
        return f"expected true or false; write {key}: true or {key}: false"
    default = config_lint.default_at(Config, tuple(err["loc"]))
    if kind in ("int_parsing", "int_type", "int_from_float"):
        whole = default if isinstance(default, int) and not isinstance(default, bool) else 10
        return f"expected a whole number written with digits only (no units, no quotes), e.g. {key}: {whole}"
    if kind in ("float_parsing", "float_type"):
        number = default if isinstance(default, int | float) and not isinstance(default, bool) and default else 0.5
        return f"expected a number written with digits, e.g. {key}: {number}"
    if kind == "string_type" and isinstance(value, bool | int | float):
        read_as = "a boolean" if isinstance(value, bool) else "a number"
        if shown is not None and (loc in scalars or not isinstance(value, bool)):
            src = scalars.get(loc, str(value))
            written = f"[{shown}]" if isinstance(loc[-1], int) else shown
            return f"expected text, but YAML read unquoted {src} as {read_as}; quote it: {key}: {written}"
        if isinstance(value, bool) and not secret:
            return ("expected text, but YAML read an unquoted true/false, yes/no or on/off as a boolean; "
                    "put the value in quotes")
        return f"expected text, but YAML read this unquoted value as {read_as}; put the value in quotes"
    if kind == "string_type":
        return f"expected text, not {_kind(value)}"
    return None


def pydantic_problems(exc: ValidationError, *, scalars: Mapping[YamlPath, str] | None = None,
                      data: Any = None) -> list[str]:
    """One ``path: problem`` line per error. ``scalars`` (yamlsource.read) lets a message quote how a
    boolean or number was written; ``data`` (the validated input) lends receiver names to examples."""
    problems = []
    for err in exc.errors(include_url=False):
        loc = _strip_union_tag(tuple(err["loc"]))
        msg = err["msg"]
        # A *_file problem is raised by its model's validator: name the file key in the path.
        file_key = re.match(r"^Value error, (\w+_file): (.*)$", msg)
        if file_key:
            loc, msg = (*loc, file_key.group(1)), "Value error, " + file_key.group(2)
        if err["type"] == "extra_forbidden":
            allowed = config_lint.model_keys_at(Config, tuple(err["loc"][:-1]))
            hint = config_lint.did_you_mean(str(err["loc"][-1]), allowed)
            msg = f"unknown key (check the spelling; unknown keys are not ignored){hint}"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        elif err["type"] == "union_tag_invalid":
            msg = f"unknown receiver type; expected one of {', '.join(RECEIVER_TYPES)}"
        elif err["type"] == "union_tag_not_found":
            msg = f"missing 'type'; expected one of {', '.join(RECEIVER_TYPES)}"
        else:
            msg = _fix(err, loc, scalars or {}, data) or msg
        problems.append(f"{format_path(loc)}: {msg}")
    return problems
