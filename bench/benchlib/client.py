"""In-harness HTTP clients (they run on the load core with the harness).

``post_all`` sends an exact set of events as fast as a bounded pool allows (priming a store, filling
a backlog, the footprint's 100,000 events: wrk runs by time, these need a count). ``paced`` sends at
a fixed rate, open loop (the schedule never waits for answers), for latency measurements.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

from benchlib import loop

SIG_HEADER = "X-ThunderStack-Signature"
# A refused connection on a loaded machine (seen once: the listener did not take it) sent nothing,
# so trying again cannot duplicate an event.
CONNECT_TRIES = 3


@dataclass
class PostResult:
    statuses: Counter = field(default_factory=Counter)
    elapsed: float = 0.0
    first_error: str | None = None

    @property
    def sent(self) -> int:
        return sum(self.statuses.values())

    @property
    def ok(self) -> int:
        return sum(n for s, n in self.statuses.items() if isinstance(s, int) and 200 <= s < 300)

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed if self.elapsed else 0.0


async def _post_all(url: str, records: Sequence[tuple[str, bytes]], concurrency: int, timeout: float) -> PostResult:
    result = PostResult()
    todo = iter(records)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as s:

        async def send(sig: str, body: bytes) -> None:
            for attempt in range(CONNECT_TRIES):
                try:
                    async with s.post(
                        url, data=body, headers={"Content-Type": "application/json", SIG_HEADER: sig}
                    ) as resp:
                        text = await resp.read()
                        result.statuses[resp.status] += 1
                        if resp.status >= 300 and result.first_error is None:
                            result.first_error = f"HTTP {resp.status}: {text[:300].decode(errors='replace')}"
                        return
                except aiohttp.ClientConnectorError:
                    if attempt + 1 == CONNECT_TRIES:
                        raise
                    await asyncio.sleep(0.2)  # never connected: nothing was sent, so try again

        async def worker() -> None:
            for sig, body in todo:  # one shared iterator: each record is sent exactly once
                try:
                    await send(sig, body)
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    result.statuses[type(exc).__name__] += 1
                    result.first_error = result.first_error or f"{type(exc).__name__}: {exc}"

        t0 = time.monotonic()
        try:
            await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), timeout)
        except TimeoutError:
            result.first_error = result.first_error or f"gave up after {timeout:.0f}s"
        result.elapsed = time.monotonic() - t0
    return result


def post_all(
    url: str, records: Sequence[tuple[str, bytes]], *, concurrency: int = 32, timeout: float = 300.0
) -> PostResult:
    return loop.run(_post_all(url, records, concurrency, timeout))


@dataclass
class Sent:
    ident: str
    t_send: float  # time.monotonic() just before the request
    t_done: float  # ... when the answer was read
    status: int | str


async def _paced(url: str, items: Sequence[tuple[str, str, bytes]], rate: float, timeout: float) -> list[Sent]:
    out: list[Sent] = []
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as s:

        async def one(ident: str, sig: str, body: bytes) -> None:
            t0 = time.monotonic()
            try:
                async with s.post(
                    url, data=body, headers={"Content-Type": "application/json", SIG_HEADER: sig}
                ) as resp:
                    await resp.read()
                    status: int | str = resp.status
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                status = type(exc).__name__
            out.append(Sent(ident, t0, time.monotonic(), status))

        async def warm() -> None:
            async with s.get(url.rsplit("/", 1)[0] + "/_warm") as resp:
                await resp.read()

        # Open a few connections first so the first samples do not include TCP setup.
        await asyncio.gather(*(warm() for _ in range(4)), return_exceptions=True)
        tasks = []
        start = time.monotonic() + 0.05
        for k, (ident, sig, body) in enumerate(items):
            delay = start + k / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(ident, sig, body)))
        await asyncio.gather(*tasks)
    return out


def paced(url: str, items: Sequence[tuple[str, str, bytes]], *, rate: float, timeout: float = 30.0) -> list[Sent]:
    """Send ``items`` (ident, signature, body) at ``rate`` per second, open loop."""
    return loop.run(_paced(url, items, rate, timeout))
