"""Start the real bridge (``python -m bridge serve -c CONFIG``) the way an operator would."""

from __future__ import annotations

import compileall
import copy
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from benchlib import loop
from benchlib.common import (
    REPO,
    SERVER_CORE,
    Proc,
    Procs,
    Unavailable,
    bench_env,
    child_env,
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
                env=child_env(bench_env()),
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


def compile_bridge(tree: Path = REPO) -> None:
    """Write the bridge's bytecode, as installing it does (pip; the container runs compileall), so
    that a start reads it instead of compiling every module from source: with
    PYTHONDONTWRITEBYTECODE set (as in this workplace and the container) nothing else writes it, and
    start-to-ready would count compiling the sources (bench/README.md, "Footprint")."""
    compileall.compile_dir(str(tree / "bridge"), quiet=1)


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
    *,
    public_key: Path,
    storage_url: str,
    sink_url: str,
    extra: dict[str, Any] | None = None,
    receivers: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A production-like config: our key from a file, one webhook receiver (the sink) for everything.

    ``receivers`` replaces that receiver (every event goes to all of them; ``{}``: no receiver and
    no route, ingest only). Logging is at warning so per-request log lines do not enter the numbers
    (an operator under load would do the same); everything else keeps the bridge's defaults unless
    ``extra`` says otherwise.
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
    if receivers is not None:
        cfg["receivers"], cfg["default_to"] = receivers, list(receivers)
    return _merge(cfg, extra or {})


def receiver_settings(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    """Receiver ``name`` as the bridge reads it, defaults filled in (e.g. its ``concurrency``)."""
    from bridge.config import parse

    return dict(parse(cfg, env={}).receivers[name].model_dump())


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
    loop: str  # the event loop it runs (seen in /proc), or was asked to where that cannot be seen
    loop_check: str  # "ok", or why it does not run the loop it was asked to (benchlib.loop.verify)

    def check_alive(self) -> None:
        if not self.proc.alive():
            raise Unavailable(
                f"bridge exited with code {self.proc.popen.returncode} during the case: {self.proc.log_tail(6)}"
            )


def start_bridge(procs: Procs, name: str, cfg: dict[str, Any], workdir: Path, *, core: int = SERVER_CORE) -> Bridge:
    require_bridge()
    validate_config(cfg)
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    listen, admin = cfg["server"]["listen"], cfg["server"]["admin_listen"]
    cmd = pin_cmd(core, python_cmd("-m", "bridge", "serve", "-c", str(path)))
    proc = procs.start(name, cmd, env=bench_env(), cwd=workdir)
    # /readyz may live on the public or the admin listener; either answering 200 means ready.
    ready = wait_until_ready(proc, [f"http://{listen}/readyz", f"http://{admin}/readyz"], READY_TIMEOUT)
    wanted = os.environ.get(loop.ENV, "")
    check = loop.verify(proc.pid, wanted) if wanted else "ok"
    if check != "ok":
        mismatches.add(check)
    mapped = loop.uvloop_mapped(proc.pid)
    running = wanted if mapped is None else ("uvloop" if mapped else "asyncio")
    return Bridge(proc, f"http://{listen}{cfg['server']['path']}", f"http://{admin}", ready, cfg, running, check)


mismatches: set[str] = set()  # loop checks that failed during the run (reported with the tables)


def default_loop(public_key: Path, workdir: Path, log_dir: Path) -> str:
    """The loop the bridge runs when nobody says which: started once with a memory store and no
    ALERT_BRIDGE_LOOP, then asked through /proc whether it loaded uvloop."""
    cfg = make_config(public_key=public_key, storage_url="memory://", sink_url="http://127.0.0.1:9", receivers={})
    path = workdir / "loop-probe.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    with Procs(log_dir) as procs:
        proc = procs.start("bridge-loop-probe", python_cmd("-m", "bridge", "serve", "-c", str(path)),
                           env={**bench_env(), loop.ENV: None}, cwd=workdir)
        listen, admin = cfg["server"]["listen"], cfg["server"]["admin_listen"]
        wait_until_ready(proc, [f"http://{listen}/readyz", f"http://{admin}/readyz"], READY_TIMEOUT)
        return "uvloop" if loop.uvloop_mapped(proc.pid) else "asyncio"
