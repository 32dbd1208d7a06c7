"""CPU of a CLI start, A/B between trees: ``--help``, ``healthcheck`` against a running bridge,
``check`` and ``serve`` up to ready (bench/README.md, "CLI start-up").

    python3 bench/cli_startup.py                                      this tree, 10 rounds
    python3 bench/cli_startup.py --tree /tmp/base --tree . --rounds 10    alternating A/B

Each command is the real ``python -m bridge ...`` of the tree (PYTHONPATH, from bytecode as
installed: compile_bridge), in a scratch directory. A one-shot command's CPU (user + sys) is its
rusage, taken as it is reaped; ``serve``'s is read from /proc when ``/readyz`` first answers 200
(polled every 10 ms; a fresh SQLite file each start). The bridge ``healthcheck`` probes runs the
config.example.yaml of the first tree on free ports and is started once (``--url``: its /readyz,
no config read). Trees alternate within a round, in reverse order on odd rounds; medians, and
min-max, per (case, tree). "interpreter" is ``python -c pass``: the floor of every start.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib.bridge import compile_bridge
from benchlib.common import REPO, Procs, cpu_split, free_port, http_status, python_cmd, wait_until_ready

CASES = ("interpreter", "--help", "healthcheck --help", "healthcheck -c", "healthcheck --url", "check -c",
         "serve to ready")


def _config(tree: Path, workdir: Path, name: str) -> Path:
    """config.example.yaml on free ports, its store in ``workdir``, its key file from ``tree``."""
    cfg: dict[str, Any] = yaml.safe_load((tree / "config.example.yaml").read_text())
    cfg["server"].update(listen=f"127.0.0.1:{free_port()}", admin_listen=f"127.0.0.1:{free_port()}")
    cfg["verification"]["public_key_file"] = str(tree / "examples/dev-keys/public.pem")
    cfg["storage"]["url"] = f"sqlite://{workdir / name}.db"
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _env(tree: Path) -> dict[str, str | None]:
    return {"PYTHONPATH": str(tree), "ALERT_BRIDGE_CONFIG": None}


def _child_env(tree: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ALERT_BRIDGE_CONFIG"}
    env["PYTHONPATH"] = str(tree)
    return env


Sample = tuple[float, float, float]  # user and sys CPU-seconds, wall seconds


def one_shot(tree: Path, args: list[str], workdir: Path) -> Sample:
    """One ``python -m bridge ARGS`` run to its end (``python ARGS`` when ARGS start with -c)."""
    before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    cmd = python_cmd(*args) if args[0] == "-c" else python_cmd("-m", "bridge", *args)
    done = subprocess.run(cmd, cwd=workdir, env=_child_env(tree),
                          capture_output=True, text=True, timeout=60)
    after, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"{tree}: {' '.join(cmd)} exited {done.returncode}: {done.stderr or done.stdout}")
    return after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime, wall


def serve_to_ready(procs: Procs, tree: Path, workdir: Path, name: str) -> Sample:
    """``serve`` from its start to its first 200 on /readyz."""
    path = _config(tree, workdir, name)
    cfg = yaml.safe_load(path.read_text())
    proc = procs.start(name, python_cmd("-m", "bridge", "serve", "-c", str(path)), env=_env(tree),
                       cwd=workdir)
    url = f"http://{cfg['server']['listen']}/readyz"
    deadline = time.monotonic() + 60
    while http_status(url, timeout=0.5) != 200:
        if not proc.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"{tree}: serve not ready: {proc.log_tail(6)}")
        time.sleep(0.01)
    user, sys_ = cpu_split(proc.pid)
    wall = time.monotonic() - proc.started
    procs.stop(proc)
    return user, sys_, wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--tree", action="append", type=Path, help="a source tree to import bridge from (repeat)")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--case", action="append", choices=CASES, help="only these cases (repeat; default all)")
    args = ap.parse_args()
    trees = [t.resolve() for t in (args.tree or [REPO])]
    cases = args.case or list(CASES)
    for tree in trees:
        compile_bridge(tree)
    samples: dict[tuple[str, Path], list[Sample]] = {(c, t): [] for c in cases for t in trees}
    with tempfile.TemporaryDirectory(prefix="cli-startup-") as tmp, Procs(Path(tmp)) as procs:
        workdir = Path(tmp)
        probed = _config(trees[0], workdir, "probed")
        server = yaml.safe_load(probed.read_text())["server"]
        if {"healthcheck -c", "healthcheck --url"} & set(cases):
            bridge = procs.start("probed", python_cmd("-m", "bridge", "serve", "-c", str(probed)),
                                 env=_env(trees[0]), cwd=workdir)
            wait_until_ready(bridge, [f"http://{server['listen']}/readyz"], 60)
        commands = {"interpreter": ["-c", "pass"], "--help": ["--help"],
                    "healthcheck --help": ["healthcheck", "--help"],
                    "healthcheck -c": ["healthcheck", "-c", str(probed)],
                    "healthcheck --url": ["healthcheck", "--url", f"http://{server['listen']}/readyz"]}
        for r in range(args.rounds):
            for tree in trees if r % 2 == 0 else trees[::-1]:
                for case in cases:
                    if case == "serve to ready":
                        cpu = serve_to_ready(procs, tree, workdir, f"serve-{r}-{trees.index(tree)}")
                    elif case == "check -c":
                        cpu = one_shot(tree, ["check", "-c", str(tree / "config.example.yaml")], workdir)
                    else:
                        cpu = one_shot(tree, commands[case], workdir)
                    samples[case, tree].append(cpu)
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    print(f"{'case':20} {'tree':32} {'CPU s (user+sys)':>16} {'min-max':>11} {'user':>6} {'sys':>6} {'wall s':>7}")
    for case in cases:
        for tree in trees:
            runs = samples[case, tree]
            total = [u + s for u, s, _ in runs]
            user, sys_, wall = (statistics.median(x[i] for x in runs) for i in range(3))
            print(f"{case:20} {str(tree)[-32:]:32} {statistics.median(total):16.3f} "
                  f"{min(total):5.2f}-{max(total):<5.2f} {user:6.3f} {sys_:6.3f} {wall:7.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
