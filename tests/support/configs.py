"""Config problems as the operator sees them: what ``load`` refuses a file with."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bridge import config as config_mod
from bridge.errors import ConfigError


def load_problems(tmp_path: Path, text: str) -> list[str]:
    """The problems ``config.load`` lists for ``text`` (dedented) written to a file."""
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(ConfigError) as info:
        config_mod.load(path, env={})
    return info.value.problems
