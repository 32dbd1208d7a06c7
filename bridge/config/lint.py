"""Config findings beyond the schema that help an operator fix a typo: "did you mean", status
spelling, secrets that look like a forgotten ``${...}``. Pure functions over models and values;
loader.py calls them (this module imports nothing else of bridge.config, to avoid an import loop).
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Collection, Iterator
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr

from bridge.model import KNOWN_STATUSES

__all__ = ["bare_var_fix", "default_at", "did_you_mean", "is_secret_at", "model_keys_at", "secret_dollar_warnings",
           "status_findings"]


def did_you_mean(word: str, choices: Collection[str]) -> str:
    """' (did you mean X?)' for the closest choice, ignoring case; '' when nothing is close."""
    by_lower = {c.lower(): c for c in choices}
    if word.lower() in by_lower:
        return f"; did you mean {by_lower[word.lower()]}?"
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.75)
    return f"; did you mean {by_lower[close[0]]}?" if close else ""


def status_findings(where: str, values: list[str]) -> tuple[list[str], list[str]]:
    """Problems for a status that is a known one misspelt (case or a near miss: the route would
    never fire), warnings for a status that is simply unknown (ThunderStack may have added it)."""
    problems: list[str] = []
    warnings: list[str] = []
    for j, status in enumerate(values):
        if status in KNOWN_STATUSES:
            continue
        hint = did_you_mean(status, KNOWN_STATUSES)
        if hint:
            problems.append(f"{where}[{j}]: {status!r} is not a known status (statuses are case-sensitive)"
                            f"{hint}")
        else:
            warnings.append(
                f"{where}[{j}]: {status!r} is not a known status "
                f"({', '.join(sorted(KNOWN_STATUSES))}); kept, in case ThunderStack added it"
            )
    return problems, warnings


def _unwrap(ann: Any) -> list[Any]:
    """The concrete types an annotation may hold (Optional, unions and Annotated removed)."""
    origin = get_origin(ann)
    if origin is Annotated:
        return _unwrap(get_args(ann)[0])
    if origin is Union or origin is types.UnionType:
        return [t for a in get_args(ann) for t in _unwrap(a) if t is not type(None)]
    return [ann]


def _keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items() if not f.exclude]


def _types_at(root: type[BaseModel], loc: tuple[Any, ...]) -> list[Any]:
    """The types the value at ``loc`` (a pydantic error location, discriminator tags included) may
    have, each with the model holding it and the field's name (None, None for list items, dict values
    and the root); [] when the path leads nowhere."""
    current: list[tuple[Any, Any, str | None]] = [(root, None, None)]
    for part in loc:
        nxt: list[tuple[Any, Any, str | None]] = []
        for t, _, _ in current:
            origin = get_origin(t)
            if isinstance(t, type) and issubclass(t, BaseModel):
                for name, f in t.model_fields.items():
                    if part in (name, f.alias):
                        nxt += [(u, t, name) for u in _unwrap(f.annotation)]
            elif origin in (dict, list):
                nxt += [(u, None, None) for u in _unwrap(get_args(t)[-1])]
        if not nxt:  # a tagged union's tag (receivers.<name>.slack.<key>)
            nxt = [(t, o, n) for t, o, n in current if isinstance(t, type) and issubclass(t, BaseModel)
                   and "type" in t.model_fields and part in get_args(t.model_fields["type"].annotation)]
        if not nxt:
            return []
        current = nxt
    return current


def model_keys_at(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed in the mapping at ``loc`` (a pydantic error location, discriminator tags
    included), or [] when the path does not lead to a model."""
    models = [t for t, _, _ in _types_at(root, loc) if isinstance(t, type) and issubclass(t, BaseModel)]
    return _keys(models[0]) if len(models) == 1 else []


def is_secret_at(root: type[BaseModel], loc: tuple[Any, ...]) -> bool:
    """Whether the value at ``loc`` may be a secret (a SecretStr, or a field its model reads from a
    ``*_file`` twin, such as storage.url), so that no message may show it. Unknown paths count as
    secret."""
    found = _types_at(root, loc)
    if not found:
        return True
    for t, model, name in found:
        secret_fields = getattr(model, "__private_attributes__", {}).get("_secret_fields")
        if t is SecretStr or (name is not None and secret_fields is not None and name in secret_fields.default):
            return True
    return False


def default_at(root: type[BaseModel], loc: tuple[Any, ...]) -> Any:
    """The default of the field at ``loc`` when it has a single plain one, else None."""
    found = {(model, name) for _, model, name in _types_at(root, loc) if model is not None}
    if len(found) != 1:
        return None
    model, name = found.pop()
    default = model.model_fields[name].default
    return default if isinstance(default, int | float | str | bool) else None


_BARE_VAR = re.compile(r"(?<!\$)\$[A-Za-z_][A-Za-z0-9_]*")
_LEADING_VAR = re.compile(r"\s*\$([A-Za-z_][A-Za-z0-9_]*)(.*)", re.DOTALL)


def bare_var_fix(value: str | None) -> str:
    """'; ... write ${NAME}' for a value that starts with ``$NAME`` (a reference without braces, kept
    literally); '' otherwise. It names the variable only when it is the whole value (``$SLACK_URL``:
    what the operator wrote, no URL or token); anything after it may be part of a secret."""
    m = _LEADING_VAR.match(value or "")
    if m is None:
        return ""
    if m.group(2).strip():
        return "; a value starting with $ is kept literally: write ${NAME} to read an environment variable"
    return f"; ${m.group(1)} is kept literally: write ${{{m.group(1)}}} to read the environment variable"


def _secrets(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, SecretStr):
        yield path, value.get_secret_value()
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _secrets(getattr(value, name), f"{path}.{name}" if path else name)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _secrets(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _secrets(v, f"{path}[{i}]")


def secret_dollar_warnings(cfg: BaseModel, extra: dict[str, str] | None = None) -> list[str]:
    """A secret containing ``$NAME`` was probably meant as ``${NAME}`` (only braces are replaced).
    The warning names the field, never the value."""
    found = list(_secrets(cfg, ""))
    found += list((extra or {}).items())
    return [
        f"{path}: contains $NAME without braces, which is kept literally; write ${{NAME}} to read "
        f"the environment variable"
        for path, secret in found
        if _BARE_VAR.search(secret)
    ]
