"""A corpus of broken configs (tests/config_corpus/*.yaml): each must make ``alert-bridge check`` exit 2
with an ``error:`` line naming the YAML path, and never a traceback.

Each file says what it breaks and what the message must name, in comments at its top::

    # what: a misspelt receiver option
    # expect: receivers.ops.webhok_url      (one line per problem; a YAML path, or text for YAML errors)
    # env: NAME=value                       (optional: set for this run)

The real command runs (``python -m bridge check -c FILE``), several at a time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.harness import ROOT
from tests.support.reliability import record

CORPUS = Path(__file__).parent / "config_corpus"
FILES = sorted(CORPUS.glob("*.yaml"))


@dataclass
class Case:
    path: Path
    what: str
    expect: list[str]
    env: dict[str, str]
    code: int = -1
    stdout: str = ""
    stderr: str = ""

    @property
    def errors(self) -> list[str]:
        return [line.removeprefix("error: ") for line in self.stderr.splitlines() if line.startswith("error: ")]

    def named(self, expected: str) -> bool:
        """A YAML path must open an error line: ``a.b.c: message``, or ``a.b: c: message`` (how a
        ``*_file`` that cannot be read is reported); other expectations just appear in one."""
        if " " not in expected:
            parent, _, last = expected.rpartition(".")
            prefixes = (expected + ":", f"{parent}: {last}:") if parent else (expected + ":",)
            return any(e.startswith(prefixes) for e in self.errors)
        return any(expected in e for e in self.errors)

    def problems(self) -> list[str]:
        out = []
        if self.code != 2:
            out.append(f"exit {self.code}, not 2")
        if "Traceback" in self.stderr:
            out.append("a traceback")
        out += [f"no error line names {e!r}" for e in self.expect if not self.named(e)]
        return out


def _load(path: Path) -> Case:
    what, expect, env = "", [], {}
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        key, _, value = line.lstrip("# ").partition(":")
        value = value.strip()
        if key == "what":
            what = value
        elif key == "expect":
            expect.append(value)
        elif key == "env":
            name, _, val = value.partition("=")
            env[name] = val
    assert expect, f"{path.name} names no expected path"
    return Case(path, what, expect, env)


def _run(case: Case) -> Case:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERT_BRIDGE_CORPUS_")}
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "check", "-c", str(case.path)],
        capture_output=True, text=True, cwd=ROOT, timeout=60, env={**env, **case.env},
    )
    case.code, case.stdout, case.stderr = result.returncode, result.stdout, result.stderr
    return case


# The fixture runs ~40 `check` processes; on a loaded 2-core machine that outlasts the default 120 s.
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def results() -> dict[str, Case]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        return {c.path.name: c for c in pool.map(_run, [_load(f) for f in FILES])}


def test_the_corpus_is_there() -> None:
    assert len(FILES) >= 30


@pytest.mark.parametrize("name", [f.name for f in FILES])
def test_broken_config_exits_2_naming_the_path(name: str, results: dict[str, Case]) -> None:
    case = results[name]
    assert not case.problems(), f"{name} ({case.what}): {case.problems()}\n{case.stderr}"
    assert "is valid" not in case.stdout


def test_corpus_summary(results: dict[str, Case]) -> None:
    failing = {n: c.problems() for n, c in results.items() if c.problems()}
    expected = sum(len(c.expect) for c in results.values())
    record("broken config corpus", tried=f"{len(results)} broken files: wrong types, unknown keys, missing env "
           "vars, globs matching no node, unreadable *_file and start-up files, failing templates, YAML errors",
           times=len(results),
           outcome=f"{len(results) - len(failing)} of {len(results)} exit 2 with an error line naming each of the "
                   f"{expected} expected paths; no traceback"
                   + (f"; FAILING: {', '.join(failing)}" if failing else ""),
           files={n: {"what": c.what, "exit": c.code, "errors": c.errors} for n, c in results.items()})
    assert not failing, failing
