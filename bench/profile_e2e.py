"""Where an end-to-end event's time goes: the e2e case's bridge (webhook + Slack), A/B between trees.

    python3 bench/profile_e2e.py --rate 97                              this tree, one round
    python3 bench/profile_e2e.py --tree /tmp/base --tree . --rounds 3   alternating A/B
    python3 bench/profile_e2e.py --py-spy out/                          py-spy raw stacks (+ top table)
    python3 bench/profile_e2e.py --callgrind --rate 1 --seconds 30      instructions per event

Each round of each tree: a fresh SQLite store and sink, the bridge started as bench/run.py's e2e
case starts it (pinned to the server core, the same config), ``--idle`` seconds of no traffic (its
background loops' CPU rate), then ``--seconds`` of fresh events at ``--rate``. Reported per round:
CPU µs per event of the bridge (from the first send to the last arrival, as the e2e case counts it,
and with the idle rate times that span taken off), p50/p99 of sent -> 2xx, sent -> webhook sink and
sent -> Slack sink. Trees alternate within a round; on a shared machine compare CPU µs per event
more than latency, and instructions (``--callgrind``: the bridge under valgrind, so a rate of about
1/s keeps events apart; the background loops' work over the run is included) more than either.
``--attach CMD`` runs CMD beside each measured run ({pid}: the bridge's), e.g. ``perf record``.
See bench/README.md, "End-to-end latency".
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import secrets
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib.bridge import compile_bridge, make_config
from benchlib.client import paced
from benchlib.common import Procs, cpu_seconds, percentile, pin_self
from benchlib.events import ensure_key, fresh_events
from benchlib.servers import start_sink
from profile_accept import _callgrind_control, _collected, _py_spy, _start_bridge, top_table


def _sys_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[12]) / os.sysconf("SC_CLK_TCK")


def one(tree: Path, args: argparse.Namespace, key: Any, key_pem: Path, workdir: Path, log_dir: Path,
        tag: str) -> dict[str, Any]:
    count = int(args.seconds * args.rate)
    prefix = secrets.token_hex(6)
    items = fresh_events(key, count, prefix)
    with Procs(log_dir) as procs:
        sink = start_sink(procs, f"sink-{tag}")
        slack_url = f"{sink.url}/services/T000BENCH/B000BENCH/XXXXBENCH"
        cfg = make_config(
            public_key=key_pem, storage_url=f"sqlite:///{workdir / (tag + '.db')}", sink_url=sink.url,
            extra={"receivers": {"slack": {"type": "slack", "webhook_url": slack_url, "rate_limit": 0}},
                   "default_to": ["sink", "slack"]},
        )
        proc = _start_bridge(procs, tree, f"bridge-{tag}", cfg, workdir, {}, args.callgrind)
        url = f"http://{cfg['server']['listen']}/webhook"
        sink.control(reset=True, track=f"({prefix}[0-9]{{12}})")
        time.sleep(1.0)  # start-up work settles
        c0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(args.idle)
        idle_rate = (cpu_seconds(proc.pid) - c0) / (time.monotonic() - t0)
        spy = _py_spy(proc.pid, args.seconds, args.py_spy / f"{tag}.txt") if args.py_spy else None
        if args.attach:  # e.g. "perf record -g -p {pid} -o out.data -- sleep 10"
            spy = subprocess.Popen(shlex.split(args.attach.format(pid=proc.pid, tag=tag)))
        if args.callgrind:
            _callgrind_control(proc.pid, True)
        cpu0, sys0 = cpu_seconds(proc.pid), _sys_seconds(proc.pid)
        sent = paced(url, items, rate=args.rate)
        ok = [s for s in sent if isinstance(s.status, int) and 200 <= s.status < 300]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            arrivals = sink.arrivals()
            if all(len(arrivals[c]) >= len(ok) for c in ("hook", "slack")):
                break
            time.sleep(0.05)
        cpu, sys_cpu = cpu_seconds(proc.pid) - cpu0, _sys_seconds(proc.pid) - sys0
        if args.callgrind:
            _callgrind_control(proc.pid, False)
            proc.stop(grace=180)  # the exit writes the profile and the total
        if spy is not None:
            spy.wait(60)
    instructions = _collected(proc.log_path) / max(len(ok), 1) if args.callgrind else None
    t_first = min(s.t_send for s in sent)
    span = max(max(arrivals[c].values(), default=t_first) for c in ("hook", "slack")) - t_first

    def lat(vals: list[float]) -> tuple[float, float]:
        ms = [v * 1000 for v in vals]
        return percentile(ms, 50), percentile(ms, 99)

    out: dict[str, Any] = {"tree": str(tree), "events": len(ok), "of": count,
                           "cpu_us": cpu / max(len(ok), 1) * 1e6,
                           "cpu_us_less_idle": (cpu - idle_rate * span) / max(len(ok), 1) * 1e6,
                           "instructions": instructions,
                           "sys_us": sys_cpu / max(len(ok), 1) * 1e6,
                           "idle_cpu_ms_per_s": idle_rate * 1000,
                           "ingest": lat([s.t_done - s.t_send for s in ok])}
    for c in ("hook", "slack"):
        out[c] = lat([arrivals[c][s.ident] - s.t_send for s in ok if s.ident in arrivals[c]])
        out[c + "_received"] = sum(1 for s in ok if s.ident in arrivals[c])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", action="append", type=Path, help="a source tree to import bridge from (repeat)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--rate", type=float, default=97.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--idle", type=float, default=5.0, help="seconds without traffic for the idle CPU rate")
    ap.add_argument("--py-spy", type=Path, help="record a py-spy profile of each bridge run into this directory")
    ap.add_argument("--attach", help="a command run beside each measured run; {pid}: the bridge's, {tag}: the run's")
    ap.add_argument("--callgrind", action="store_true",
                    help="run the bridge under callgrind: instructions per event over the run (use a low --rate)")
    ap.add_argument("--keep", type=Path, help="work in this directory and keep it (configs, stores, callgrind files)")
    ap.add_argument("--json", type=Path, help="write the rounds here")
    args = ap.parse_args()
    trees = [t.resolve() for t in (args.tree or [Path(__file__).resolve().parent.parent])]
    for tree in trees:
        compile_bridge(tree)  # every tree starts from bytecode, as installed
    pin_self(1)
    key = ensure_key()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="profile-e2e-") as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        key_pem = key.write_public(workdir)
        log_dir = workdir / "logs"
        log_dir.mkdir(exist_ok=True)
        for r in range(args.rounds):
            for i, tree in enumerate(trees):
                tag = f"e2e-{i}-{r}"
                results.append(one(tree, args, key, key_pem, workdir, log_dir, tag))
                print(json.dumps(results[-1]), flush=True)
                raw = args.py_spy / f"{tag}.txt" if args.py_spy else None
                if raw is not None and raw.exists():
                    table = top_table(raw, 40)
                    (args.py_spy / f"{tag}.top").write_text(table + "\n")
    print("\ntree                                   CPU us/event (less idle)  idle ms/s  "
          "p50/p99 ms: 2xx | webhook | slack   (medians of rounds)")
    groups: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for row in results:
        groups[row["tree"]].append(row)
    for tree, rows in groups.items():
        def med(key: str, i: int | None = None, rows: list[dict[str, Any]] = rows) -> float:
            return statistics.median(r[key] if i is None else r[key][i] for r in rows)

        each = ", ".join(format(r["cpu_us"], ".0f") for r in rows)
        lat = " | ".join(f"{med(c, 0):5.2f}/{med(c, 1):5.2f}" for c in ("ingest", "hook", "slack"))
        instr = [r["instructions"] for r in rows if r.get("instructions")]
        per = f"  {statistics.median(instr):,.0f} instructions/event" if instr else ""
        print(f"{tree[-38:]:38} {med('cpu_us'):6.0f} ({med('cpu_us_less_idle'):5.0f})  [{each}]  "
              f"{med('idle_cpu_ms_per_s'):5.1f}  {lat}{per}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
