"""CPU per delivered alert of the whole delivery path, in process: dispatcher, store and receiver.

    python3 bench/drain_instructions.py KIND [N] [--cprofile FILE] [--callgrind]

KIND is webhook, slack, pagerduty or email, configured as the ``delivery`` case configures it (the
bench's sink in a process of its own on the load core). In one process importing ``bridge`` from the
current PYTHONPATH: build the store (SQLite in a scratch directory), ``Ingest`` and the receiver as
the bridge does, accept N fresh ``FAILED`` events (one per node: one alert each) with no dispatcher
running, so the jobs wait in the outbox as after an outage. Then start a ``Dispatcher`` as the bridge
starts it and measure until all N are recorded as delivered: claims, renders, sends, answers,
outcomes and their commits (and the checkpoint thread), which is what the ``delivery`` case counts
in the real bridge, without its ingest, HTTP server or background loops. ``receiver_cpu.py`` is the
receiver's own share of the same; the difference is the dispatcher's and the store's.

Prints CPU µs per delivered alert (``time.process_time``); ``--callgrind`` switches callgrind's
instrumentation on for the drain only (run the real interpreter under ``valgrind --tool=callgrind
--instr-atstart=no``): instructions per alert do not move with the machine's load. The garbage
collector is set as the bridge sets it once listening. ``--cprofile``
writes a profile of the drain (the loop's thread). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib.bridge import make_config
from benchlib.cases.delivery import CHANNEL, receiver_config
from benchlib.common import Procs
from benchlib.events import ensure_key, fresh_events
from benchlib.servers import start_sink

CONCURRENCY = 64  # accepts in flight while filling the outbox


def _callgrind(on: bool) -> None:
    subprocess.run(["callgrind_control", "-i", "on" if on else "off", str(os.getpid())], check=True,
                   capture_output=True)


class NullReceiver:
    """``--null``: a receiver that sends nothing, so the drain is the dispatcher's and the store's alone."""

    bounds_send_time = True
    sends_digests = True

    async def send(self, alert: Any) -> None:
        return None


async def run(kind: str, n: int, profile: Path | None, callgrind: bool, null: bool = False,
              storage: str = "sqlite") -> dict[str, Any]:
    import aiohttp

    from bridge.app import _GC_YOUNG
    from bridge.config import parse
    from bridge.conversations import conversation_source
    from bridge.delivery import Dispatcher
    from bridge.ingest import Ingest, Rules
    from bridge.keys import KeyManager
    from bridge.metrics import Metrics
    from bridge.model import utc_now
    from bridge.receivers import build_receivers
    from bridge.render import Renderer
    from bridge.store import open_store

    key = ensure_key()
    items = fresh_events(key, n, secrets.token_hex(6))
    with tempfile.TemporaryDirectory(prefix="drain-instr-") as tmp, Procs(Path(tmp)) as procs:
        sink = start_sink(procs, f"sink-{kind}", smtp=kind == "email")
        pem = key.write_public(Path(tmp))
        url = f"sqlite:///{tmp}/b.db" if storage == "sqlite" else "memory://"
        raw = make_config(public_key=pem, storage_url=url, sink_url=sink.url,
                          receivers={kind: receiver_config(kind, sink)})
        cfg = parse(raw, env={})
        store = open_store(cfg.storage.url)
        await store.open()
        metrics = Metrics()
        keys = KeyManager(cfg, store=store, session=None)  # type: ignore[arg-type]  # a key file: no fetch
        await keys.start()
        ingest = Ingest(Rules.from_config(cfg), store=store, keys=keys, metrics=metrics)
        for i in range(0, n, CONCURRENCY):
            replies = await asyncio.gather(*(ingest.handle(body, sig) for _, sig, body in items[i:i + CONCURRENCY]))
            bad = [r for r in replies if r.status != 200]
            if bad:
                raise SystemExit(f"refused: {bad[0]}")
        async with aiohttp.ClientSession() as session:
            receivers = build_receivers(cfg, Renderer.from_config(cfg), session,
                                        conversation_source(store, clock=utc_now, keep=3600))
            dispatcher = Dispatcher(store, metrics=metrics, clock=utc_now, lease=cfg.storage.visibility_timeout,
                                    poll_interval=cfg.delivery.poll_interval, batch_size=cfg.delivery.batch_size)
            if null:
                receivers = {kind: NullReceiver()}  # type: ignore[dict-item]
            dispatcher.set_receivers(receivers, dict(cfg.receivers))
            delivered = metrics.deliveries.labels(kind, "delivered")
            gc.freeze()  # as the bridge does once it listens (bridge/app.py)
            gc.set_threshold(_GC_YOUNG, *gc.get_threshold()[1:])
            prof = cProfile.Profile(time.thread_time) if profile else None
            if callgrind:
                _callgrind(True)
            cpu0, wall0 = time.process_time(), time.monotonic()
            if prof:
                prof.enable()
            dispatcher.start()
            while delivered._value.get() < n:  # one float read per 10 ms: nothing next to a drain
                await asyncio.sleep(0.01)
                if time.monotonic() - wall0 > 300:
                    raise SystemExit(f"only {delivered._value.get():.0f} of {n} delivered in 300 s")
            if prof:
                prof.disable()
            cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
            if callgrind:
                _callgrind(False)
            if prof and profile:
                prof.dump_stats(str(profile))
            await dispatcher.stop(grace=5)
        got = n if null else sink.delivered(CHANNEL[kind])
        await keys.stop()
        await store.close()
    if got < n:
        raise SystemExit(f"the sink saw {got} of {n} deliveries")
    return {"kind": kind, "n": n, "cpu_us_per_alert": cpu / n * 1e6, "alerts_per_s": n / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("kind", choices=["webhook", "slack", "pagerduty", "email"])
    ap.add_argument("n", type=int, nargs="?", default=2000)
    ap.add_argument("--cprofile", type=Path)
    ap.add_argument("--callgrind", action="store_true")
    ap.add_argument("--null", action="store_true",
                    help="a receiver that sends nothing (the dispatcher and store alone)")
    ap.add_argument("--storage", choices=["sqlite", "memory"], default="sqlite")
    args = ap.parse_args()
    out = asyncio.run(run(args.kind, args.n, args.cprofile, args.callgrind, args.null, args.storage))
    print(f"{out['n']} {out['kind']} alerts drained: {out['cpu_us_per_alert']:.1f} CPU us per alert "
          f"({out['alerts_per_s']:.0f}/s; instructions: callgrind)")


if __name__ == "__main__":
    main()
