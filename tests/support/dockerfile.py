"""Just enough of a Dockerfile parser for the container and deploy tests (no Docker engine here)."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (KEYWORD, arguments)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"no {keyword} in stage {self.name or self.base}"
        return found[-1]


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    buf = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):  # comments inside a continuation are dropped
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        lines.append(buf + stripped)
        buf = ""
    if buf:
        lines.append(buf)
    return lines


def parse(path: Path = DOCKERFILE) -> list[Stage]:
    stages: list[Stage] = []
    for line in _logical_lines(path.read_text()):
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        args = args.strip()
        if keyword == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?$", args, re.I)
            assert m, line
            stages.append(Stage(m.group(1), m.group(2)))
        else:
            assert stages, f"{keyword} before FROM"
            stages[-1].instructions.append((keyword, args))
    return stages


def exec_form(args: str) -> list[str]:
    """CMD/ENTRYPOINT/HEALTHCHECK CMD in JSON (exec) form."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def healthcheck(stage: Stage) -> tuple[dict[str, str], list[str]]:
    """(options, command) of the stage's HEALTHCHECK."""
    args = stage.last("HEALTHCHECK")
    options: dict[str, str] = {}
    while args.startswith("--"):
        opt, _, args = args.partition(" ")
        key, _, value = opt[2:].partition("=")
        options[key] = value
        args = args.strip()
    assert args.startswith("CMD "), args
    return options, exec_form(args[4:])


def env(stage: Stage) -> dict[str, str]:
    """ENV key=value pairs, in order (later ones win)."""
    out: dict[str, str] = {}
    for args in stage.all("ENV"):
        for item in shlex.split(args):
            key, sep, value = item.partition("=")
            assert sep, f"ENV {args}: use key=value"
            out[key] = value
    return out


def copies(stage: Stage) -> list[tuple[str | None, list[str], str]]:
    """(from-stage or None, sources, destination) of each COPY."""
    out: list[tuple[str | None, list[str], str]] = []
    for args in stage.all("COPY"):
        parts = shlex.split(args)
        source_stage = None
        while parts and parts[0].startswith("--"):
            opt = parts.pop(0)
            if opt.startswith("--from="):
                source_stage = opt.split("=", 1)[1]
        *sources, dest = parts
        out.append((source_stage, sources, dest))
    return out


def exposed_ports(stage: Stage) -> list[int]:
    return [int(p.split("/")[0]) for args in stage.all("EXPOSE") for p in args.split()]
