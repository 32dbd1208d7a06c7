"""Faults, each against the real ``python -m bridge serve`` process and real servers on loopback.

Every scenario streams signed events (each retried until answered 200, as ThunderStack does) to a
bridge that routes every event to all four receivers (Slack, webhook, email, log), injects one
fault, waits for the outbox to drain and counts, per receiver, by delivery id: delivered, delivered
twice, lost. Lost must be 0. Twice must be 0, or at most the jobs in flight when the bridge was
killed (or the sends cut off by a timeout, where the peer may have taken the message).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from cryptography.hazmat.primitives.asymmetric import rsa

from bridge.model import delivery_id
from tests.support.fakes import Answer
from tests.support.harness import ROOT, BridgeProcess
from tests.support.redis_server import RedisServer, redis_outage_server  # noqa: F401 - fixture
from tests.support.reliability import SecretGuard, record
from tests.support.under_fire import (
    RECEIVERS,
    Receivers,
    Sent,
    Stream,
    Tally,
    db_counts,
    db_path,
    latency_summary,
    tally,
    wait_all_delivered,
)

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning"),
]

ROUTES = [{"name": "all", "to": list(RECEIVERS)}]
StartBridge = Callable[..., Awaitable[BridgeProcess]]


@pytest.fixture
async def rcv() -> AsyncIterator[Receivers]:
    async with Receivers() as r:
        yield r


@pytest.fixture
def start(bridge_process: Callable[..., Any], rcv: Receivers, secret_guard: SecretGuard) -> StartBridge:
    """The real bridge with every receiver routed; its log is watched for secrets and alert lines."""

    async def go(*, storage: dict[str, Any] | None = None, **per_kind: dict[str, Any]) -> BridgeProcess:
        overrides: dict[str, Any] = {"receivers": rcv.config(**per_kind), "routes": ROUTES}
        if storage is not None:
            overrides["storage"] = storage
        p: BridgeProcess = await bridge_process(**overrides)
        rcv.log_files.append(p.log_path)
        secret_guard.add_secrets(*rcv.secrets)
        secret_guard.watch_file(p.log_path)
        p.on_body = secret_guard.check_body  # type: ignore[attr-defined]
        p.guard = secret_guard  # type: ignore[attr-defined]
        return p

    return go


async def stream_through(
    p: BridgeProcess, key: rsa.RSAPrivateKey, *, prefix: str, seconds: float, rate: float = 10.0,
    nodes: int = 4, fault: Callable[[], Awaitable[None]] | None = None,
) -> Stream:
    """Stream for ``seconds`` while ``fault()`` runs; return once every event was answered 200."""
    stream = Stream(p.base_url + "/webhook", key, nodes=nodes, prefix=prefix,
                    on_body=getattr(p, "on_body", None))
    stop = asyncio.Event()
    runner = asyncio.create_task(stream.run(rate=rate, stop=stop))
    injector = asyncio.create_task(fault()) if fault is not None else None
    await asyncio.sleep(seconds)
    if injector is not None:
        await injector
    stop.set()
    await runner
    guard: SecretGuard | None = getattr(p, "guard", None)
    if guard is not None and p.proc is not None and p.proc.poll() is None:
        async with aiohttp.ClientSession() as s, s.get(p.admin_url + "/metrics") as r:
            guard.check_metrics("/metrics", await r.text())
    return stream


def check(t: Tally, stream: Stream, *, twice_bound: int = 0) -> None:
    assert stream.refused == [], f"the bridge refused valid events: {stream.refused[:3]}"
    assert t.unaccepted == 0, f"{t.unaccepted} events never answered 200"
    assert not any(s.startswith("5") and s != "503" for s in stream.statuses), stream.statuses
    assert sum(t.unexpected.values()) == 0, f"deliveries nobody asked for: {t.unexpected}"
    assert t.total_lost == 0, f"lost deliveries: {t.missing()}"
    assert t.total_twice <= twice_bound, f"delivered twice: {t.twice} (bound {twice_bound})"


def counts(t: Tally) -> dict[str, Any]:
    return {"sent": t.sent, "accepted": t.accepted, "delivered": t.delivered, "twice": t.total_twice,
            "lost": t.total_lost}


# --- Slack --------------------------------------------------------------------------------------------

SLACK_FAULTS: dict[str, tuple[str, Callable[[Receivers], int], dict[str, Any]]] = {
    # name: (what was tried, inject → how many faults, slack receiver overrides)
    "429 storm": ("10 answers in a row 429 rate_limited with Retry-After: 1",
                  lambda r: (r.slack.rate_limit(10, retry_after=1), 10)[1], {}),
    "500s": ("500 internal_error on every other request, 10 times",
             lambda r: (r.slack.script(*[500, 200] * 10), 10)[1], {}),
    "timeouts": ("6 answers 3 s late with a 1 s receiver timeout",
                 lambda r: (r.slack.script(*[Answer(status=200, delay=3.0)] * 6), 6)[1], {"timeout": "1s"}),
    "connection resets": ("8 requests answered by closing the connection",
                          lambda r: (r.slack.drop_next(8), 8)[1], {}),
    "slow answers": ("20 answers each 0.8 s late (timeout 2 s)",
                     lambda r: (r.slack.script(*[Answer(status=200, delay=0.8)] * 20), 20)[1], {}),
}


@pytest.mark.parametrize("fault", list(SLACK_FAULTS))
async def test_slack_faults(fault: str, start: StartBridge, rcv: Receivers, signing_key: rsa.RSAPrivateKey) -> None:
    tried, inject, overrides = SLACK_FAULTS[fault]
    p = await start(slack=overrides)
    n_faults = inject(rcv)
    stream = await stream_through(p, signing_key, prefix=f"slack-{fault.replace(' ', '')}", seconds=3.0)
    t = await wait_all_delivered(rcv, stream, RECEIVERS, timeout=60)
    answered = [r for r in rcv.slack.requests if r.status]
    gaps = []
    for i, r in enumerate(rcv.slack.requests[:-1]):
        if r.status == 429:
            gaps.append(rcv.slack.requests[i + 1].at - r.at)
    bound = n_faults if fault == "timeouts" else 0
    record(f"Slack: {fault}", tried=tried + f", while {t.sent} events stream at 10/s", times=n_faults,
           **counts(t), bound=str(bound) if bound else None,
           outcome=f"{len(rcv.slack.requests)} Slack requests for {t.delivered['slack']} messages; "
                   + (f"after each 429 the next request came {min(gaps):.2f}-{max(gaps):.2f} s later; " if gaps
                      else "")
                   + "other receivers unaffected",
           slack_requests=len(rcv.slack.requests), slack_answered=len(answered))
    check(t, stream, twice_bound=bound)
    if fault == "429 storm":
        print("gaps after 429:", [round(g, 3) for g in gaps])
        assert len(gaps) == 10 and min(gaps) >= 0.9, f"Retry-After not honoured: gaps {gaps}"
    if fault == "slow answers":  # one request at a time (concurrency 1), each held 0.8 s
        arrivals = [r.at for r in rcv.slack.requests[: n_faults + 1]]
        assert min(b - a for a, b in itertools.pairwise(arrivals)) >= 0.75
    else:  # each fault cost one more request
        assert len(rcv.slack.requests) >= t.delivered["slack"] + n_faults


# --- SMTP ---------------------------------------------------------------------------------------------


async def test_smtp_refusing_connections(start: StartBridge, rcv: Receivers, signing_key: rsa.RSAPrivateKey) -> None:
    p = await start()

    async def outage() -> None:
        await asyncio.sleep(0.5)
        await rcv.smtp_outage(4.0)

    stream = await stream_through(p, signing_key, prefix="smtp-refused", seconds=6.0, fault=outage)
    t = await wait_all_delivered(rcv, stream, RECEIVERS, timeout=60)
    log = p.log()
    refused = log.count("Connection refused")
    record("SMTP: relay refusing connections", tried="SMTP relay down (connection refused) for 4 s, then back "
           "on the same port", times=refused, **counts(t),
           outcome=f"{refused} sends refused and retried; every email delivered once the relay was back")
    check(t, stream)
    assert refused > 0, "the outage was never noticed"


async def test_smtp_drops_mid_data(start: StartBridge, rcv: Receivers, signing_key: rsa.RSAPrivateKey) -> None:
    p = await start()
    rcv.smtp.drop_data = 6
    stream = await stream_through(p, signing_key, prefix="smtp-drop", seconds=3.0)
    t = await wait_all_delivered(rcv, stream, RECEIVERS, timeout=60)
    record("SMTP: connection dropped mid-DATA", tried="relay closes the connection after the message data, "
           "before its reply, 6 times", times=rcv.smtp.dropped, **counts(t),
           outcome="each dropped message retried and delivered once (the relay kept none of them)")
    check(t, stream)
    assert rcv.smtp.dropped == 6


async def test_smtp_4xx_then_success(start: StartBridge, rcv: Receivers, signing_key: rsa.RSAPrivateKey) -> None:
    p = await start()
    rcv.smtp.fail_next("451 4.3.0 try again later", 5, stage="data")
    rcv.smtp.fail_next("450 4.2.1 mailbox busy", 3, stage="rcpt")
    rcv.smtp.fail_next("421 4.7.0 too many connections", 2, stage="mail")
    stream = await stream_through(p, signing_key, prefix="smtp-4xx", seconds=3.0)
    t = await wait_all_delivered(rcv, stream, RECEIVERS, timeout=60)
    retries = sum(1 for line in p.log().splitlines() if "retrying" in line and "smtp" in line)
    record("SMTP: 4xx then success", tried="451 at DATA 5 times, 450 at RCPT 3 times, 421 at MAIL twice", times=10,
           **counts(t), outcome=f"temporary failures retried ({retries} logged); every email delivered once")
    check(t, stream)


async def test_smtp_5xx_is_dead_then_retried_by_operator(
    start: StartBridge, rcv: Receivers, signing_key: rsa.RSAPrivateKey
) -> None:
    p = await start()
    rcv.smtp.fail_next("554 5.6.0 message refused", 3, stage="data")
    stream = await stream_through(p, signing_key, prefix="smtp-5xx", seconds=2.0)
    db = db_path(p.cfg)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        c = db_counts(db)
        if c.get("jobs_pending", 0) + c.get("jobs_inflight", 0) == 0:
            break
        await asyncio.sleep(0.2)
    dead = db_counts(db).get("jobs_dead", 0)
    before = tally(stream, rcv.received(), RECEIVERS)
    # The operator sees them (deliveries list --state dead) and sends them again once the relay is fixed.
    assert await p.terminate() == 0
    retry = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "bridge", "deliveries", "retry", "--dead", "-c", str(p.config_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=30,
    )
    await p.start()
    # What the retry left dead: firings and updates of incidents over since (sent after their
    # resolution they would re-open the page; outbox_ops). Everything else must arrive.
    left = set(re.findall(r"dlv_[0-9a-f]+", retry.stderr))

    def wants(e: Sent) -> list[str]:
        return [r for r in RECEIVERS if r != "email" or delivery_id(e.event_id or "", "email") not in left]

    t = await wait_all_delivered(rcv, stream, RECEIVERS, timeout=30, wants=wants)
    record("SMTP: 5xx (permanent)", tried="554 at DATA for 3 messages", times=3, **counts(t),
           outcome=f"{dead} deliveries dead after one attempt each ({before.lost['email']} emails missing, "
                   f"visible in the outbox); `deliveries retry --dead` → {retry.stdout.strip()!r} and "
                   f"{len(left)} named and left dead (their incident over since), then every other one delivered")
    assert dead == 3 and before.lost["email"] == 3 and before.total_lost == 3
    assert retry.returncode == 0, retry.stderr
    assert int(retry.stdout.split()[0]) + len(left) == 3, (retry.stdout, retry.stderr)
    assert not left & set(rcv.received()["email"])  # left dead: never sent
    check(t, stream)


# --- webhook ------------------------------------------------------------------------------------------


async def test_webhook_sink_flapping(start: StartBridge, rcv: Receivers, signing_key: rsa.RSAPrivateKey) -> None:
    p = await start()
    flips = 0

    async def flap() -> None:
        nonlocal flips
        for status in (503, 200, 503, 200):
            rcv.sink.default_status = status
            flips += 1
            await asyncio.sleep(2.0)

    stream = await stream_through(p, signing_key, prefix="hook-flap", seconds=8.0, fault=flap)
    t = await wait_all_delivered(rcv, stream, RECEIVERS, timeout=60)
    refused = sum(1 for r in rcv.sink.requests if r.status == 503)
    record("Webhook: sink flapping 200/503", tried="sink answers 503 for 2 s, 200 for 2 s, twice over",
           times=refused, **counts(t),
           outcome=f"{refused} sends answered 503 and retried; webhook-id never accepted twice")
    check(t, stream)
    assert refused > 0


# --- the bridge itself --------------------------------------------------------------------------------


@pytest.mark.slow
async def test_sigkill_at_random_moments(
    start: StartBridge, rcv: Receivers, signing_key: rsa.RSAPrivateKey, secret_guard: SecretGuard
) -> None:
    p = await start()
    db = db_path(p.cfg)
    seed = int(os.environ.get("KILL_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    stream = Stream(p.base_url + "/webhook", signing_key, nodes=6, prefix="kill", request_timeout=2.0,
                    on_body=secret_guard.check_body)
    stop = asyncio.Event()
    runner = asyncio.create_task(stream.run(rate=40, stop=stop))
    inflight_at_kills: list[int] = []
    restarts: list[float] = []
    kills = 12
    try:
        for _ in range(kills):
            await asyncio.sleep(rng.uniform(0.3, 2.5))
            p.kill()  # SIGKILL, no warning
            inflight_at_kills.append(db_counts(db).get("jobs_inflight", 0))
            await asyncio.sleep(rng.uniform(0.0, 0.5))
            began = time.monotonic()
            await p.start()
            restarts.append(time.monotonic() - began)
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        await runner
    t = await wait_all_delivered(rcv, stream, RECEIVERS, timeout=90, settle=2.0)
    final = db_counts(db)
    bound = sum(inflight_at_kills)
    record("Bridge SIGKILLed at random moments", tried=f"{kills} SIGKILLs 0.3-2.5 s apart during a 40 events/s "
           f"stream, restarted each time (SQLite, seed {seed})", times=kills, **counts(t), bound=str(bound),
           outcome=f"every event answered 200 eventually ({sum(e.attempts for e in stream.events)} attempts); "
                   f"jobs in flight at the kills: {inflight_at_kills}; restart to ready "
                   f"{min(restarts):.2f}-{max(restarts):.2f} s; {final.get('jobs_dead', 0)} dead",
           seed=seed, statuses=dict(stream.statuses), twice_by_receiver=t.twice)
    check(t, stream, twice_bound=bound)
    assert final.get("jobs_dead", 0) == 0 and final.get("jobs_pending", 0) == 0


# --- storage ------------------------------------------------------------------------------------------


def _fill(directory: Path, leave: int) -> Path:
    """Fill the filesystem of ``directory`` until only about ``leave`` bytes are free."""
    # Unbuffered: a buffered file keeps the tail of a short write and fails again on flush/close.
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        size, chunk = 0, b"\0" * 65536
        while True:
            try:
                written = os.write(fd, chunk)
            except OSError:
                break
            if written == 0:
                break
            size += written
        os.ftruncate(fd, max(0, size - leave))
    finally:
        os.close(fd)
    return filler


@pytest.mark.slow
async def test_storage_on_a_nearly_full_filesystem(
    tmp_path: Path, start: StartBridge, rcv: Receivers, signing_key: rsa.RSAPrivateKey
) -> None:
    mnt = tmp_path / "small-fs"
    mnt.mkdir()
    tried = "SQLite file on a 4 MiB tmpfs filled to ~256 KiB free while events stream at 20/s, space freed after 6 s"
    mount = shutil.which("mount")
    result = subprocess.run([mount or "mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                            capture_output=True, text=True) if mount else None
    if result is None or result.returncode != 0:
        why = result.stderr.strip() if result is not None else "no mount command"
        record("Storage on a nearly full filesystem", tried=tried, times=0,
               outcome=f"not arranged here: mount -t tmpfs refused ({why})")
        pytest.skip(f"cannot mount a small tmpfs: {why}")
    p: BridgeProcess | None = None
    try:
        p = await start(storage={"url": f"sqlite://{mnt}/bridge.db", "visibility_timeout": "5s"})
        filler = _fill(mnt, 256 * 1024)
        free_kib = shutil.disk_usage(mnt).free // 1024

        async def free_space() -> None:
            await asyncio.sleep(6.0)
            filler.unlink()

        stream = await stream_through(p, signing_key, prefix="diskfull", seconds=10.0, rate=20, fault=free_space)
        t = await wait_all_delivered(rcv, stream, RECEIVERS, timeout=60, settle=2.0)
        alive = p.proc is not None and p.proc.poll() is None
        full_503 = stream.statuses.get("503", 0)
        unrecorded = p.log().count("could not record the outcome")  # sent, but "done" could not be written
        record("Storage on a nearly full filesystem", tried=tried + f" ({free_kib} KiB free at the start)",
               times=full_503, **counts(t), bound=f"{unrecorded} sends whose outcome could not be written",
               outcome=f"{full_503} requests answered 503 + Retry-After while the disk was full, retried by the "
                       f"sender; process {'kept running' if alive else 'DIED'}; all accepted events delivered",
               statuses=dict(stream.statuses))
        assert alive
        check(t, stream, twice_bound=unrecorded)
        assert full_503 > 0, "the filesystem never filled up: the scenario did not happen"
    finally:
        if p is not None:
            p.kill()
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


async def test_redis_stopped_and_restarted_under_traffic(
    redis_outage_server: RedisServer, start: StartBridge, rcv: Receivers, signing_key: rsa.RSAPrivateKey  # noqa: F811
) -> None:
    server = redis_outage_server
    client = aioredis.from_url(server.url)
    await client.config_set("save", "1 1")  # a production Redis persists; SIGTERM then saves a snapshot
    await client.aclose()
    p = await start(storage={"url": server.url, "visibility_timeout": "5s"})

    inflight_at_stop = 0

    async def outage() -> None:
        nonlocal inflight_at_stop
        await asyncio.sleep(2.0)
        probe = aioredis.from_url(server.url)
        inflight_at_stop = int(await probe.zcard("ab:st:inflight"))  # jobs claimed, not yet completed
        await probe.aclose()
        await asyncio.to_thread(server.stop)
        await asyncio.sleep(4.0)
        await asyncio.to_thread(server.start)

    stream = await stream_through(p, signing_key, prefix="redis", seconds=8.0, rate=20, fault=outage)
    t = await wait_all_delivered(rcv, stream, RECEIVERS, timeout=60, settle=2.0)
    unavailable = stream.statuses.get("503", 0)
    unrecorded = p.log().count("could not record the outcome")  # sent, but "done" could not be written
    bound = inflight_at_stop + unrecorded
    record("Redis stopped and restarted under traffic", tried="redis-server stopped (SIGTERM) for 4 s during a "
           "20 events/s stream, then started again on its port", times=1, **counts(t),
           bound=f"{bound}: {inflight_at_stop} jobs in flight when Redis went away + {unrecorded} sent while it "
                 "was away",
           outcome=f"{unavailable} requests answered 503 + Retry-After during the outage and retried; "
                   "deliveries resumed by themselves", statuses=dict(stream.statuses),
           latency=latency_summary([e.latency for e in stream.accepted]))
    check(t, stream, twice_bound=bound)
    assert unavailable > 0, "the outage was never noticed"
