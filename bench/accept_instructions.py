"""Instructions per accepted event on the ingest path, without HTTP or deliveries (callgrind A/B).

    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/tmp/cg.%p \
        python3 bench/accept_instructions.py N --callgrind

does, in one process importing ``bridge`` from the current PYTHONPATH: build ``Ingest`` from the
bench's production-like config (SQLite in a scratch directory, the webhook receiver routed by
``default_to``; ``--no-route`` drops it), then hand it N pre-signed bench events (64 at a time,
as wrk's connections would) through ``Ingest.handle``: verify, parse, validate, decide, the group
commit. Nothing is delivered (no dispatcher). ``--stage`` stops the path early, for the ablation
table in bench/README.md: ``verify`` (the signature header decoded, the RSA check), ``parse`` (+ the
body parsed and validated into an Event: the node checks, labels), ``decide`` (+ ``decide`` on the
node's record, kept in a dict between events), ``memory`` (the whole ``Ingest.handle`` on the memory
store: + dedup, the jobs as objects, the answer), ``sqlite`` (the default: + the three JSON
documents and the group commit). ``--callgrind`` switches callgrind's instrumentation
on (``callgrind_control -i on``) only for the N measured events, after a warm-up of one event per
node (start-up and first-seen nodes stay out; the measured events then open and resolve incidents
as in the bench): the total it reports, over N, is instructions per event. ``--cprofile FILE``
writes a cProfile of the N events (CPU time of the loop's thread: the function breakdown). Python
executes the real interpreter binary, not a pyenv shim (valgrind does not follow the shim's exec).
See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib.bridge import make_config
from benchlib.events import NODES, ensure_events, ensure_key

CONCURRENCY = 64
WARMUP = NODES  # events before the measured ones (not measured)


def _callgrind(on: bool) -> None:
    subprocess.run(["callgrind_control", "-i", "on" if on else "off", str(os.getpid())], check=True,
                   capture_output=True)


STAGES = ("verify", "parse", "decide", "memory", "sqlite")


def _partial(stage: str, ingest: Any, keys: Any) -> Callable[[bytes, str], Awaitable[None]]:
    """The accept path up to ``stage`` (verify, parse, decide), made of the calls ingest makes."""
    from bridge.decide import decider
    from bridge.model import utc_now
    from bridge.payload import parse_json, to_event
    from bridge.verify import decode_signature, verify

    rules = ingest.rules
    records: dict[str, Any] = {}

    async def one(body: bytes, header: str) -> None:
        signature = decode_signature(header)
        doc = parse_json(body) if stage != "verify" else None
        node = doc.get("nodeId") if isinstance(doc, dict) else None
        if not verify(body, doc, signature, keys.keys_for((None, node))):
            raise SystemExit("refused: signature")
        if stage == "verify":
            return
        now = utc_now()
        if rules.nodes is not None and node not in rules.nodes:
            raise SystemExit("refused: node")
        event = to_event(doc, labels=rules.labeler.labels_for(node) or None, received_at=now,
                         escaped=b"\\u" in body)
        if stage == "parse":
            return
        decision = decider(event, ingest.policy, now)(records.get(event.node_id), False)
        if decision.record is not None:
            records[event.node_id] = decision.record

    return one


async def run(n: int, no_route: bool, profile: Path | None, callgrind: bool, stage: str = "sqlite") -> float:
    from bridge.config import parse
    from bridge.ingest import Ingest, Rules
    from bridge.keys import KeyManager
    from bridge.metrics import Metrics
    from bridge.store import open_store

    key = ensure_key()
    events = ensure_events(key, 100_000, log=lambda *_: None)
    records = events.records(0, WARMUP + n)
    with tempfile.TemporaryDirectory(prefix="accept-instr-") as tmp:
        pem = key.write_public(Path(tmp))
        url = "memory://" if stage != "sqlite" else f"sqlite:///{tmp}/b.db"
        raw = make_config(public_key=pem, storage_url=url, sink_url="http://127.0.0.1:9",
                          extra={"default_to": []} if no_route else None)
        cfg = parse(raw, env={})
        store = open_store(cfg.storage.url)
        await store.open()
        keys = KeyManager(cfg, store=store, session=None)  # type: ignore[arg-type]  # a key file: no fetch
        await keys.start()
        ingest = Ingest(Rules.from_config(cfg), store=store, keys=keys, metrics=Metrics())

        partial = _partial(stage, ingest, keys) if stage in ("verify", "parse", "decide") else None

        async def feed(part: list[tuple[str, bytes]]) -> None:
            if partial is not None:
                for sig, body in part:
                    await partial(body, sig)
                return
            for i in range(0, len(part), CONCURRENCY):
                replies = await asyncio.gather(*(ingest.handle(body, sig) for sig, body in part[i:i + CONCURRENCY]))
                bad = [r for r in replies if r.status != 200]
                if bad:
                    raise SystemExit(f"refused: {bad[0]}")

        await feed(records[:WARMUP])  # every node seen once: the measured events open and resolve incidents
        prof = cProfile.Profile(time.thread_time) if profile else None
        if callgrind:
            _callgrind(True)
        started = time.process_time()
        if prof:
            prof.enable()
        await feed(records[WARMUP:])
        if prof:
            prof.disable()
            prof.dump_stats(str(profile))
        cpu = time.process_time() - started
        if callgrind:
            _callgrind(False)
        await keys.stop()
        await store.close()
    return cpu / n * 1e6 if n else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n", type=int)
    ap.add_argument("--no-route", action="store_true")
    ap.add_argument("--cprofile", type=Path)
    ap.add_argument("--callgrind", action="store_true", help="instrument only the measured events")
    ap.add_argument("--stage", choices=STAGES, default="sqlite", help="stop the path after this step")
    args = ap.parse_args()
    us = asyncio.run(run(args.n, args.no_route, args.cprofile, args.callgrind, args.stage))
    print(f"{args.n} events, {us:.1f} CPU us/event (process time; instructions: callgrind)")


if __name__ == "__main__":
    main()
