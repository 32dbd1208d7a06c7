"""CPU per send of one receiver, in process, against a bare client sending what it sent (A/B, profiles).

    python3 bench/receiver_cpu.py KIND [N] [--cprofile FILE] [--callgrind] [--floor]

KIND is webhook, slack, pagerduty or email, configured as the ``delivery`` case configures it (the
bench's sink, in a process of its own on the load core; email over SMTP to its aiosmtpd server). In
one process importing ``bridge`` from the current PYTHONPATH: build the receiver as the bridge does
(``Renderer.from_config``, ``build_receiver``), then call ``receiver.send`` on N firing alerts (one
per node, each with its incident, as the bench's events make them) with the receiver's
``concurrency`` in flight. No store and no dispatcher: this is the receiver's own share of a
delivery (render, build the payload, send, read and classify the answer). One unmeasured send per
slot first. Prints the CPU µs per send (``time.process_time``); ``--floor`` then runs
``benchlib.floor_client``'s bare client in the same process over the sample the sink captured, so
the ratio isolates what the receiver adds to the wire work. ``--cprofile FILE`` writes a profile of
the N sends; ``--callgrind`` switches callgrind's instrumentation on for them only (run the real
interpreter under ``valgrind --tool=callgrind --instr-atstart=no``), ``--callgrind-floor`` for the
bare client's sends instead (its one warm-up send per slot included). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib.cases.delivery import CHANNEL, floor_url, receiver_config
from benchlib.common import Procs
from benchlib.servers import start_sink


def _callgrind(on: bool) -> None:
    subprocess.run(["callgrind_control", "-i", "on" if on else "off", str(os.getpid())], check=True,
                   capture_output=True)


def alerts(kind: str, n: int) -> list[Any]:
    """N firing alerts as the bench's events make them: one FAILED event per fresh node, each
    opening an incident; built from a stored job context as the dispatcher builds them."""
    from bridge.model import Alert, Event, IncidentRef

    base = datetime.now(UTC) - timedelta(minutes=5)
    out = []
    for i in range(n):
        node = f"node-{i:05d}"
        ts = base + timedelta(milliseconds=i)
        event = Event(event_type="NODE_STATUS_UPDATED", timestamp=ts, node_id=node, status="FAILED",
                      details={"nodeId": node, "status": "FAILED"}, received_at=ts)
        incident = IncidentRef(id=f"inc_{i:024x}", opened_at=ts, duration=0.0, path="FAILED")
        alert = Alert(event=event, route="default", receiver=kind, delivery_id=f"dlv_{i:024x}", kind="firing",
                      incident=incident)
        out.append(Alert.from_context(alert.delivery_id, json.loads(json.dumps(alert.context()))))
    return out


async def drive(sends: list[Any], concurrency: int) -> None:
    it = iter(sends)

    async def worker() -> None:
        for send in it:
            await send()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def run(kind: str, n: int, profile: Path | None, callgrind: bool, floor: bool,
              callgrind_floor: bool = False) -> dict[str, Any]:
    import aiohttp
    from benchlib import floor_client

    from bridge.config import parse
    from bridge.receivers import build_receiver
    from bridge.render import Renderer

    with tempfile.TemporaryDirectory(prefix="receiver-cpu-") as tmp, Procs(Path(tmp)) as procs:
        sink = start_sink(procs, f"sink-{kind}", smtp=kind == "email")
        raw = {"verification": {"public_key": "unused"}, "storage": {"url": "memory://"},
               "receivers": {kind: receiver_config(kind, sink)}, "default_to": [kind]}
        cfg = parse(raw, env={})
        rcfg = cfg.receivers[kind]
        concurrency = int(rcfg.concurrency)
        out: dict[str, Any] = {"kind": kind, "n": n, "concurrency": concurrency}
        async with aiohttp.ClientSession() as session:
            receiver = build_receiver(kind, rcfg, renderer=Renderer.from_config(cfg), session=session)
            warm = alerts(kind, concurrency)
            await asyncio.gather(*(receiver.send(a) for a in warm))
            todo = alerts(kind, n)
            sends = [lambda a=a: receiver.send(a) for a in todo]
            prof = cProfile.Profile(time.thread_time) if profile else None
            if callgrind:
                _callgrind(True)
            cpu0 = time.process_time()
            if prof:
                prof.enable()
            await drive(sends, concurrency)
            if prof:
                prof.disable()
            cpu = time.process_time() - cpu0
            if callgrind:
                _callgrind(False)
            if prof and profile:
                prof.dump_stats(str(profile))
            out["cpu_us_per_send"] = cpu / n * 1e6
        if floor:
            sample = sink.sample(CHANNEL[kind])
            assert sample is not None
            client = floor_client.smtp if kind == "email" else floor_client.http
            if callgrind_floor:  # its warm-up sends (one per slot) are counted too
                _callgrind(True)
            result = await client(floor_url(kind, sink), n, concurrency, sample)
            if callgrind_floor:
                _callgrind(False)
            out["floor_cpu_us_per_send"] = result["cpu_us_per_send"]
            out["x_floor"] = out["cpu_us_per_send"] / result["cpu_us_per_send"]
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("kind", choices=["webhook", "slack", "pagerduty", "email"])
    ap.add_argument("n", type=int, nargs="?", default=2000)
    ap.add_argument("--cprofile", type=Path)
    ap.add_argument("--callgrind", action="store_true")
    ap.add_argument("--floor", action="store_true", help="also run the bare client over the captured sample")
    ap.add_argument("--callgrind-floor", action="store_true",
                    help="with --floor: callgrind instruments the bare client's sends instead of the receiver's")
    args = ap.parse_args()
    from benchlib import loop

    result = loop.run(run(args.kind, args.n, args.cprofile, args.callgrind and not args.callgrind_floor,
                          args.floor or args.callgrind_floor, args.callgrind_floor))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
