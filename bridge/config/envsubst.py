"""``${VAR}`` and ``${VAR:-default}`` in config strings, from the environment (``$${`` is a literal
``${``). Its own module, as light as yamlsource: the commands that read only ``server:`` need it
without the loader (bridge/commands/common.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bridge.config.yamlsource import format_path

__all__ = ["interpolate"]

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(value: Any, env: Mapping[str, str], path: tuple[Any, ...], problems: list[str]) -> Any:
    """Replace ${VAR} / ${VAR:-default} in every string value; a missing variable is a problem."""
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            problems.append(f"{format_path(path)}: environment variable {name} is not set")
            return ""

        return _VAR.sub(sub, value.replace("$${", "\0")).replace("\0", "${")
    if isinstance(value, dict):
        return {k: interpolate(v, env, (*path, k), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, (*path, i), problems) for i, v in enumerate(value)]
    return value
