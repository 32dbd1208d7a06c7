"""Instructions per accepted event on the ingest path, without HTTP or deliveries (callgrind A/B).

    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p python3 bench/accept_instructions.py N

does, in one process importing ``bridge`` from the current PYTHONPATH: build ``Ingest`` from the
bench's production-like config (SQLite in a scratch directory, the webhook receiver routed by
``default_to``; ``--no-route`` drops it), then hand it N pre-signed bench events (64 at a time,
as wrk's connections would) through ``Ingest.handle``: verify, parse, validate, decide, the group
commit. Nothing is delivered (no dispatcher). Run it for two values of N and divide the difference
of the instruction totals by the difference of N: start-up cancels out. ``--cprofile FILE`` writes
a cProfile of the N events instead (for the function breakdown). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib.bridge import make_config
from benchlib.events import ensure_events, ensure_key

CONCURRENCY = 64


async def run(n: int, no_route: bool, profile: Path | None) -> float:
    from bridge.config import parse
    from bridge.ingest import Ingest, Rules
    from bridge.keys import KeyManager
    from bridge.metrics import Metrics
    from bridge.store import open_store

    key = ensure_key()
    events = ensure_events(key, 100_000, log=lambda *_: None)
    records = [(sig, body) for sig, body in events.records(0, n)]
    with tempfile.TemporaryDirectory(prefix="accept-instr-") as tmp:
        pem = key.write_public(Path(tmp))
        raw = make_config(public_key=pem, storage_url=f"sqlite:///{tmp}/b.db", sink_url="http://127.0.0.1:9",
                          extra={"default_to": []} if no_route else None)
        cfg = parse(raw, env={})
        store = open_store(cfg.storage.url)
        await store.open()
        keys = KeyManager(cfg, store=store, session=None)  # type: ignore[arg-type]  # a key file: no fetch
        await keys.start()
        ingest = Ingest(Rules.from_config(cfg), store=store, keys=keys, metrics=Metrics())
        prof = cProfile.Profile() if profile else None
        started = time.process_time()
        if prof:
            prof.enable()
        for i in range(0, n, CONCURRENCY):
            replies = await asyncio.gather(*(ingest.handle(body, sig) for sig, body in records[i:i + CONCURRENCY]))
            bad = [r for r in replies if r.status != 200]
            if bad:
                raise SystemExit(f"refused: {bad[0]}")
        if prof:
            prof.disable()
            prof.dump_stats(str(profile))
        cpu = time.process_time() - started
        await keys.stop()
        await store.close()
    return cpu / n * 1e6 if n else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n", type=int)
    ap.add_argument("--no-route", action="store_true")
    ap.add_argument("--cprofile", type=Path)
    args = ap.parse_args()
    us = asyncio.run(run(args.n, args.no_route, args.cprofile))
    print(f"{args.n} events, {us:.1f} CPU us/event (process time; instructions: callgrind)")


if __name__ == "__main__":
    main()
