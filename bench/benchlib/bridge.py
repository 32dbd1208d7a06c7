"""Start the real bridge (``python -m bridge serve -c CONFIG``) the way an operator would."""

from __future__ import annotations

import copy
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from benchlib.common import (
    REPO,
    SERVER_CORE,
    Proc,
    Procs,
    Unavailable,
    bench_env,
    free_port,
    pin_cmd,
    python_cmd,
    wait_until_ready,
)

READY_TIMEOUT = 60.0
_status: tuple[bool, str] | None = None


def bridge_status() -> tuple[bool, str]:
    """(True, "") once ``python -m bridge --help`` works; otherwise (False, why). Asked once per run."""
    global _status
    if _status is None:
        try:
            done = subprocess.run(
                python_cmd("-m", "bridge", "--help"),
                capture_output=True,
                text=True,
                timeout=60,
                cwd=REPO,
                env={**os.environ, **bench_env()},
            )
        except subprocess.TimeoutExpired:
            _status = (False, "`python -m bridge --help` did not finish within 60s")
        else:
            if done.returncode == 0:
                _status = (True, "")
            else:
                lines = (done.stderr or done.stdout).strip().splitlines()
                _status = (
                    False,
                    f"`python -m bridge --help` exits {done.returncode}: {lines[-1] if lines else 'no output'}",
                )
    return _status


def require_bridge() -> None:
    ok, why = bridge_status()
    if not ok:
        raise Unavailable(why)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def make_config(
    *, public_key: Path, storage_url: str, sink_url: str, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A production-like config: our key from a file, one webhook receiver (the sink) for everything.

    Logging is at warning so per-request log lines do not enter the numbers (an operator under load
    would do the same); everything else keeps the bridge's defaults unless ``extra`` says otherwise.
    """
    cfg = {
        "server": {
            "listen": f"127.0.0.1:{free_port()}",
            "admin_listen": f"127.0.0.1:{free_port()}",
            "path": "/webhook",
        },
        "verification": {"public_key_file": str(public_key)},
        "storage": {"url": storage_url},
        "receivers": {"sink": {"type": "webhook", "url": f"{sink_url}/hook"}},
        "default_to": ["sink"],
        "log": {"level": "warning"},
    }
    return _merge(cfg, extra or {})


def validate_config(cfg: dict[str, Any]) -> None:
    """Check the config against bridge.config before starting, so a stale bench config fails loudly."""
    from bridge.config import parse  # imported late: the bridge package is being written concurrently
    from bridge.errors import ConfigError

    try:
        parse(cfg, env={})
    except ConfigError as exc:
        raise RuntimeError("bench config rejected by bridge.config: " + "; ".join(exc.problems)) from None


@dataclass
class Bridge:
    proc: Proc
    url: str  # the webhook URL
    admin_url: str
    ready_s: float
    config: dict[str, Any]

    def check_alive(self) -> None:
        if not self.proc.alive():
            raise Unavailable(
                f"bridge exited with code {self.proc.popen.returncode} during the case: {self.proc.log_tail(6)}"
            )


def start_bridge(procs: Procs, name: str, cfg: dict[str, Any], workdir: Path) -> Bridge:
    require_bridge()
    validate_config(cfg)
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    listen, admin = cfg["server"]["listen"], cfg["server"]["admin_listen"]
    cmd = pin_cmd(SERVER_CORE, python_cmd("-m", "bridge", "serve", "-c", str(path)))
    proc = procs.start(name, cmd, env=bench_env(), cwd=workdir)
    # /readyz may live on the public or the admin listener; either answering 200 means ready.
    ready = wait_until_ready(proc, [f"http://{listen}/readyz", f"http://{admin}/readyz"], READY_TIMEOUT)
    return Bridge(proc, f"http://{listen}{cfg['server']['path']}", f"http://{admin}", ready, cfg)
