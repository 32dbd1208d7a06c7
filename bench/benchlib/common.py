"""Process, port, CPU-pinning and statistics helpers shared by every case."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
REPO = BENCH.parent
CACHE = BENCH / ".cache"
RESULTS = BENCH / "results"

SERVER_CORE = 0  # servers under test (and what they need: Redis) run here
LOAD_CORE = 1  # wrk, the harness, sinks and clients run here


class Unavailable(Exception):
    """A case cannot run yet (bridge not written, tool missing): reported, never a harness failure."""


class Invalid(Exception):
    """A case ran but its numbers would mean nothing (e.g. the server refused our events)."""


# --- CPU pinning -----------------------------------------------------------------------------------


# The cores this process could use when the harness started. Read once: pin_self() narrows the
# harness's own affinity to the load core, and reading it afterwards left one core, so can_pin()
# turned false and every server started unpinned on the load core beside wrk and the sinks.
_CORES = sorted(os.sched_getaffinity(0))


def usable_cores() -> list[int]:
    return list(_CORES)


def can_pin() -> bool:
    # Server and load generator on different cores only where there are two to give.
    return len(usable_cores()) >= 2 and shutil.which("taskset") is not None


def pin_cmd(core: int, cmd: Sequence[str]) -> list[str]:
    """Prefix ``cmd`` with taskset so it runs on one core (no-op on a 1-core machine)."""
    if not can_pin():
        return list(cmd)
    return ["taskset", "-c", str(usable_cores()[core]), *cmd]


def server_cores() -> list[int]:
    """Indices (into usable_cores) the servers may use: core 0 on a 2-core machine, the first half
    of the cores on a bigger one (``--workers`` spreads bridge replicas over them)."""
    n = len(usable_cores())
    return list(range(n // 2)) if n >= 4 else [SERVER_CORE]


def load_cores() -> list[int]:
    """Indices the load generator (wrk) may use: what server_cores() leaves."""
    n = len(usable_cores())
    return list(range(n // 2, n)) if n >= 4 else [LOAD_CORE]


# On 4+ cores the load side starts at the second half, so the harness and its sinks stay off the
# cores `--workers` gives the bridge replicas.
LOAD_CORE = load_cores()[0]


def pin_cmd_cores(cores: Sequence[int], cmd: Sequence[str]) -> list[str]:
    """Like pin_cmd, for a set of cores."""
    if not can_pin():
        return list(cmd)
    ids = usable_cores()
    return ["taskset", "-c", ",".join(str(ids[c]) for c in cores), *cmd]


def pin_self(core: int) -> None:
    """Move the harness (and the clients it runs in-process) off the server's core."""
    if can_pin():
        os.sched_setaffinity(0, {usable_cores()[core]})


def unpin_self() -> None:
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, set(_CORES))


# --- ports and processes ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """A child process in its own session, logged to a file, stopped by its own id."""

    def __init__(
        self,
        name: str,
        cmd: Sequence[str],
        log_dir: Path,
        *,
        env: dict[str, str | None] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.cmd = list(cmd)
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log.write(f"$ {' '.join(self.cmd)}\n".encode())
        self._log.flush()
        self.started = time.monotonic()
        self.popen = subprocess.Popen(
            self.cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=child_env(env),
            cwd=str(cwd or REPO),
            start_new_session=True,  # its own process group, so stop() reaches its children too
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 12) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self, grace: float = 5.0) -> int | None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        self._log.close()
        return self.popen.returncode


class Procs(contextlib.AbstractContextManager["Procs"]):
    """Starts processes and stops them all (newest first) when the block ends, even on errors."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._procs: list[Proc] = []

    def start(self, name: str, cmd: Sequence[str], **kw: object) -> Proc:
        proc = Proc(name, cmd, self.log_dir, **kw)  # type: ignore[arg-type]
        self._procs.append(proc)
        return proc

    def stop(self, proc: Proc) -> int | None:
        if proc in self._procs:
            self._procs.remove(proc)
        return proc.stop()

    def __exit__(self, *exc: object) -> None:
        while self._procs:
            self._procs.pop().stop()


def child_env(extra: dict[str, str | None] | None) -> dict[str, str]:
    """The harness's environment with ``extra`` on top (a None value removes the variable)."""
    out = dict(os.environ)
    for k, v in (extra or {}).items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def python_cmd(*args: str) -> list[str]:
    return [sys.executable, *args]


def bench_env() -> dict[str, str]:
    """PYTHONPATH so child processes import both ``bridge`` (repo root) and ``benchlib``."""
    parts = [str(REPO), str(BENCH), os.environ.get("PYTHONPATH", "")]
    return {"PYTHONPATH": os.pathsep.join(p for p in parts if p), "PYTHONUNBUFFERED": "1"}


# --- waiting ---------------------------------------------------------------------------------------


def http_status(url: str, timeout: float = 1.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return None


def wait_until_ready(proc: Proc, urls: Iterable[str], timeout: float) -> float:
    """Poll until one URL answers 200; returns seconds since the process started (start-to-ready)."""
    urls = list(urls)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise Unavailable(f"{proc.name} exited with code {proc.popen.returncode}: {proc.log_tail(6)}")
        for url in urls:
            if http_status(url, timeout=0.5) == 200:
                return time.monotonic() - proc.started
        time.sleep(0.01)
    raise Unavailable(f"{proc.name} not ready within {timeout:.0f}s ({', '.join(urls)}): {proc.log_tail(6)}")


def wait_port(proc: Proc, port: int, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited with code {proc.popen.returncode}: {proc.log_tail(6)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return time.monotonic() - proc.started
        time.sleep(0.01)
    raise RuntimeError(f"{proc.name} did not listen on {port} within {timeout:.0f}s: {proc.log_tail(6)}")


# --- memory ----------------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def rss_bytes(pid: int) -> int:
    """Resident set size of a process and its descendants (VmRSS from /proc)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            todo += _children(p)
    return total


def cpu_split(pid: int) -> tuple[float, float]:
    """User and system CPU-seconds a running process has used so far (its threads included)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state is field 3
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_seconds(pid: int) -> float:
    """User + system CPU-seconds a running process has used so far (its threads included)."""
    return sum(cpu_split(pid))


# --- statistics ------------------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: p99 of 200 samples is the 198th)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Median plus spread across rounds: min, max, and (max - min) / median in percent."""
    if not values:
        return {}
    med = statistics.median(values)
    return {
        "median": med,
        "min": min(values),
        "max": max(values),
        "spread_pct": (max(values) - min(values)) / med * 100 if med else 0.0,
        "rounds": len(values),
    }


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


# --- background load -------------------------------------------------------------------------------


def _proc_stat() -> tuple[float, float]:
    """(busy, steal) CPU-seconds of the whole machine so far, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    hz = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / hz, steal / hz


class CpuMeter:
    """CPU used by processes that are not ours while a case runs (other sessions' tests, fuzzers).

    Other work on a 2-core machine moves every number here, so each case records it: the machine's
    busy CPU-seconds minus this process's and its waited-for children's (servers, wrk, clients; every
    case stops and reaps what it started before it returns), per second of wall time. Hypervisor
    steal is reported separately.
    """

    def __init__(self) -> None:
        self.wall = time.monotonic()
        self.busy, self.steal = _proc_stat()
        self.ours = sum(os.times()[:4])

    def stop(self) -> dict[str, float]:
        wall = max(time.monotonic() - self.wall, 1e-6)
        busy, steal = _proc_stat()
        ours = sum(os.times()[:4]) - self.ours
        return {
            "other_cores": round(max(0.0, (busy - self.busy - ours) / wall), 2),
            "steal_cores": round((steal - self.steal) / wall, 2),
            "loadavg_1m": float(Path("/proc/loadavg").read_text().split()[0]),
        }
