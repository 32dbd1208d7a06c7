"""Run ``python -m bridge ...`` as a real process without blocking the test's event loop, and
write the config file it reads.

The fakes (webhook sink, Slack) live in the test's loop, so a blocking ``subprocess.run`` would
stop them from answering the bridge while the command runs.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


async def run_cli(*args: str, timeout: float = 30.0, env: dict[str, str] | None = None) -> Result:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
        cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


async def run(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> tuple[int, str, str]:
    """(exit code, stdout, stderr), without the caller's ALERT_BRIDGE_CONFIG and SLACK_URL."""
    base = {k: v for k, v in os.environ.items() if k not in ("ALERT_BRIDGE_CONFIG", "SLACK_URL")}
    if cwd != ROOT:
        base["PYTHONPATH"] = str(ROOT)  # this checkout's bridge, from another working directory
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", *args, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**base, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def write(tmp_path: Path, cfg: dict[str, Any]) -> str:
    """``cfg`` as tmp_path/config.yaml; its path."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)
