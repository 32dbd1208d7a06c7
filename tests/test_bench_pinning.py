"""The bench keeps the server under test on its own core after the harness pins itself.

The harness moves itself to the load core before it starts servers. pin_cmd() once read the
affinity again at that point, found one core and stopped pinning: every server then ran on the
load core beside wrk and the sinks, and every ratio in bench/ measured a shared core.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"

_PROBE = """
import json, os
from benchlib.common import LOAD_CORE, SERVER_CORE, can_pin, pin_cmd, pin_self
before = (can_pin(), pin_cmd(SERVER_CORE, ["srv"]), pin_cmd(LOAD_CORE, ["load"]))
pin_self(LOAD_CORE)
after = (can_pin(), pin_cmd(SERVER_CORE, ["srv"]), pin_cmd(LOAD_CORE, ["load"]))
print(json.dumps({"before": before, "after": after, "own": sorted(os.sched_getaffinity(0)),
                  "server": SERVER_CORE, "load": LOAD_CORE}))
"""


def _probe(cores: set[int]) -> dict[str, object]:
    # A child of its own: pin_self() changes the affinity of the process it runs in.
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=BENCH, capture_output=True, text=True, timeout=60, check=True,
        preexec_fn=lambda: os.sched_setaffinity(0, cores),
    )
    return json.loads(out.stdout)


def test_servers_stay_pinned_to_the_server_core_after_the_harness_pins_itself() -> None:
    cores = sorted(os.sched_getaffinity(0))
    got = _probe(set(cores))
    assert got["after"] == got["before"]
    if got["before"][0]:  # two cores and taskset: the servers' core is not the harness's
        _, server_cmd, load_cmd = got["after"]
        server, load = cores[got["server"]], cores[got["load"]]  # indexes into the usable cores
        assert server != load
        assert server_cmd[:3] == ["taskset", "-c", str(server)]
        assert load_cmd[:3] == ["taskset", "-c", str(load)]
        assert got["own"] == [load]


def test_a_single_core_starts_everything_unpinned() -> None:
    core = min(os.sched_getaffinity(0))
    got = _probe({core})
    assert got["before"] == got["after"] == [False, ["srv"], ["load"]]
