"""The bench's RSA key and its pre-signed ThunderStack events.

Signing RSA-2048 costs ~0.2 ms per event, far more than verifying, so events are signed once
(across all cores) and cached under bench/.cache/, keyed by the key's fingerprint and the count.

Event ``i`` goes to node ``i % NODES`` at ``base + i`` milliseconds, alternating RUNNING/FAILED
on each visit, so every (nodeId, eventTimestamp) is distinct, each event is a status change, and a
node's events get newer as ``i`` grows. The file holds fixed-width records
``<base64 signature>\\t<body><space padding>\\n`` so wrk's Lua script can seek straight to event i.
"""

from __future__ import annotations

import base64
import hashlib
import json
import multiprocessing
import os
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from benchlib.common import CACHE, usable_cores

NODES = 10_000  # a multiple of any wrk thread count we use, so each node belongs to one wrk thread
MAX_EVENTS = 600_000  # sign at most this many (~70 s on 2 cores); runs that need more wrap and say so
BUCKET = 50_000  # event counts are rounded up to this so cache file names repeat
# Timestamps lie in the past so a cached file stays valid: the bridge's default max_event_age is 24h.
CACHE_LIFETIME = timedelta(hours=20)
BODY_WIDTH = 200
STATUSES = ("RUNNING", "FAILED")


def node_id(n: int) -> str:
    # 24 hex digits like ThunderStack's ids; keeps the body near 180 bytes, as real events are.
    return f"{0x5F2C9A1E00000000 + n:016x}{n:08x}"


def event_body(i: int, base_ms: int) -> bytes:
    node = node_id(i % NODES)
    ts = datetime.fromtimestamp((base_ms + i) / 1000, UTC)
    stamp = ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"
    status = STATUSES[(i // NODES) % len(STATUSES)]
    body = {
        "eventType": "NODE_STATUS_UPDATED",
        "eventTimestamp": stamp,
        "details": {"nodeId": node, "status": status},
        "nodeId": node,
    }
    return json.dumps(body, separators=(",", ":")).encode()


# --- key -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    private_pem: bytes
    public_pem: bytes
    fingerprint: str  # first hex digits of SHA-256 over the public key

    def write_public(self, directory: Path) -> Path:
        path = directory / "thunderstack-public.pem"
        path.write_bytes(self.public_pem)
        return path

    def sign(self, body: bytes) -> str:
        key = serialization.load_pem_private_key(self.private_pem, password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return base64.b64encode(key.sign(body, padding.PKCS1v15(), hashes.SHA256())).decode()


def ensure_key() -> Key:
    """The bench's own throwaway RSA-2048 key (generated once, kept in the gitignored cache)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / "bench-key-rsa2048.pem"
    if not path.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(pem)
        os.chmod(tmp, 0o600)
        tmp.rename(path)
    private_pem = path.read_bytes()
    key = serialization.load_pem_private_key(private_pem, password=None)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return Key(private_pem, public_pem, hashlib.sha256(public_pem).hexdigest()[:12])


# --- parallel signing --------------------------------------------------------------------------------

_worker_key: rsa.RSAPrivateKey | None = None


def _init_worker(private_pem: bytes) -> None:
    global _worker_key
    # The harness pins itself to the load core; signing may use them all.
    os.sched_setaffinity(0, set(usable_cores()))
    key = serialization.load_pem_private_key(private_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    _worker_key = key


def _sign_many(bodies: list[bytes]) -> list[str]:
    assert _worker_key is not None
    pad, algo = padding.PKCS1v15(), hashes.SHA256()
    return [base64.b64encode(_worker_key.sign(b, pad, algo)).decode() for b in bodies]


def sign_all(key: Key, bodies: list[bytes]) -> list[str]:
    """Sign across every core (signing is CPU-bound and each signature is independent)."""
    procs = os.cpu_count() or 1
    chunk = max(1, min(2000, len(bodies) // (procs * 4) or 1))
    chunks = [bodies[i : i + chunk] for i in range(0, len(bodies), chunk)]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(procs, initializer=_init_worker, initargs=(key.private_pem,)) as pool:
        return [sig for part in pool.map(_sign_many, chunks) for sig in part]


# --- the cached event file ---------------------------------------------------------------------------


@dataclass
class EventFile:
    path: Path
    count: int
    record_len: int
    base_ms: int

    def record(self, i: int) -> tuple[str, bytes]:
        """(signature, body) of event i."""
        with open(self.path, "rb") as f:
            f.seek(i * self.record_len)
            raw = f.read(self.record_len)
        sig, _, body = raw.partition(b"\t")
        return sig.decode(), body.rstrip(b" \n")

    def records(self, start: int, stop: int) -> list[tuple[str, bytes]]:
        with open(self.path, "rb") as f:
            f.seek(start * self.record_len)
            raw = f.read((stop - start) * self.record_len)
        out = []
        for off in range(0, len(raw), self.record_len):
            sig, _, body = raw[off : off + self.record_len].partition(b"\t")
            out.append((sig.decode(), body.rstrip(b" \n")))
        return out


def _meta_path(path: Path) -> Path:
    return path.with_suffix(".json")


def _fresh_files(key: Key) -> list[EventFile]:
    """Cached event files for this key still young enough to be accepted; stale ones are deleted."""
    out = []
    for meta_path in CACHE.glob(f"events-{key.fingerprint}-n*.json"):
        data = meta_path.with_suffix(".rec")
        try:
            meta = json.loads(meta_path.read_text())
            fresh = datetime.now(UTC) - datetime.fromisoformat(meta["created"]) < CACHE_LIFETIME
            complete = data.stat().st_size == meta["count"] * meta["record_len"]
        except (OSError, ValueError, KeyError):
            fresh = complete = False
        if fresh and complete:
            out.append(EventFile(data, meta["count"], meta["record_len"], meta["base_ms"]))
        else:
            meta_path.unlink(missing_ok=True)
            data.unlink(missing_ok=True)
    return sorted(out, key=lambda f: f.count)


def ensure_events(key: Key, need: int, log=print) -> EventFile:
    """Event file with at least ``need`` events (capped at MAX_EVENTS), from cache or freshly signed.

    A smaller cached file is extended rather than re-signed: event i depends only on i and the
    file's base time.
    """
    need = min(MAX_EVENTS, max(BUCKET, -(-need // BUCKET) * BUCKET))
    files = _fresh_files(key)
    for f in files:
        if f.count >= need:
            return f
    old = files[-1] if files else None
    # All timestamps at least two minutes old, even in the largest file this base could grow to.
    base_ms = old.base_ms if old else int(time.time() * 1000) - MAX_EVENTS - 120_000
    created = _created(old) if old else datetime.now(UTC).isoformat()
    first = old.count if old else 0
    t0 = time.monotonic()
    bodies = [event_body(i, base_ms) for i in range(first, need)]
    assert max(map(len, bodies)) <= BODY_WIDTH
    sigs = sign_all(key, bodies)
    record_len = len(sigs[0]) + 1 + BODY_WIDTH + 1
    path = CACHE / f"events-{key.fingerprint}-n{need}.rec"
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as out:
        if old:
            assert old.record_len == record_len
            with open(old.path, "rb") as src:
                shutil.copyfileobj(src, out)
        for sig, body in zip(sigs, bodies, strict=True):
            out.write(f"{sig}\t".encode() + body.ljust(BODY_WIDTH) + b"\n")
    tmp.rename(path)
    meta = {
        "count": need,
        "record_len": record_len,
        "base_ms": base_ms,
        "created": created,
        "key": key.fingerprint,
        "nodes": NODES,
    }
    _meta_path(path).write_text(json.dumps(meta))
    log(f"  signed {need - first:,} events in {time.monotonic() - t0:.1f}s on {os.cpu_count()} cores -> {path.name}")
    for f in files:  # now redundant
        f.path.unlink(missing_ok=True)
        _meta_path(f.path).unlink(missing_ok=True)
    return EventFile(path, need, record_len, base_ms)


def _created(f: EventFile) -> str:
    # An extended file is as old as its oldest events: keep the original creation time.
    return json.loads(_meta_path(f.path).read_text())["created"]


def fresh_events(key: Key, count: int, prefix: str) -> list[tuple[str, str, bytes]]:
    """Events signed now for one run (end-to-end probes): (nodeId, signature, body), unique nodeIds.

    ``prefix`` is 12 hex digits; nodeId = prefix + 12-digit sequence number, so a sink can find it.
    """
    now = datetime.now(UTC) - timedelta(seconds=5)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
    out_bodies, ids = [], []
    for k in range(count):
        nid = f"{prefix}{k:012d}"
        body = {
            "eventType": "NODE_STATUS_UPDATED",
            "eventTimestamp": stamp,
            "details": {"nodeId": nid, "status": "FAILED"},
            "nodeId": nid,
        }
        ids.append(nid)
        out_bodies.append(json.dumps(body, separators=(",", ":")).encode())
    sigs = sign_all(key, out_bodies) if count > 200 else [key.sign(b) for b in out_bodies]
    return list(zip(ids, sigs, out_bodies, strict=True))
