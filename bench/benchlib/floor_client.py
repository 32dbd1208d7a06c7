"""The delivery floor: a bare client loop sending a captured delivery to the sink, COUNT times.

    python -m benchlib.floor_client URL COUNT CONCURRENCY SAMPLE_JSON

URL is http://... (an aiohttp ClientSession posting the sample's body with its headers over
keep-alive connections) or smtp://HOST:PORT (aiosmtplib.send of the sample's raw message, one
connection per message, as the bridge's email receiver does). Run pinned to the server core like
the bridge, with as many sends in flight as the bridge's receiver may have (its ``concurrency``), so
the ratios isolate what the bridge adds per delivery: claiming from the store, rendering, recording
the outcome. Prints one JSON line: the rate and the CPU time this process spent per send (the sends
only: start-up and imports are outside the measured window).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from benchlib import loop


async def _drive(count: int, concurrency: int, send: Callable[[], Awaitable[int | str]]) -> dict[str, Any]:
    statuses: dict[str, int] = {}
    left = count

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            status = str(await send())
            statuses[status] = statuses.get(status, 0) + 1

    # Unmeasured first sends: connections opened, first-call paths warm, as in a running bridge.
    await asyncio.gather(*(send() for _ in range(concurrency)))
    t0, cpu0 = time.monotonic(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed, cpu = time.monotonic() - t0, time.process_time() - cpu0
    return {
        "count": count,
        "elapsed_s": elapsed,
        "rate": count / elapsed,
        "cpu_s": cpu,
        "cpu_us_per_send": cpu / count * 1e6,
        "statuses": statuses,
    }


async def http(url: str, count: int, concurrency: int, sample: dict[str, Any]) -> dict[str, Any]:
    import aiohttp

    body, headers = sample["body"].encode(), sample["headers"]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def send() -> int:
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                return resp.status

        return await _drive(count, concurrency, send)


async def smtp(url: str, count: int, concurrency: int, sample: dict[str, Any]) -> dict[str, Any]:
    import aiosmtplib

    parts = urlsplit(url)
    message = sample["body"].encode()
    sender, recipients = sample["mail_from"], sample["rcpt_tos"]

    async def send() -> str:
        await aiosmtplib.send(
            message, sender=sender, recipients=recipients, hostname=parts.hostname, port=parts.port,
            use_tls=False, start_tls=False, timeout=10,
        )
        return "250"

    return await _drive(count, concurrency, send)


if __name__ == "__main__":
    url, count, conc, sample_path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    with open(sample_path) as f:
        sample = json.load(f)
    client = smtp if url.startswith("smtp://") else http
    result = loop.run(client(url, count, conc, sample))
    print(json.dumps({**result, "loop": loop.chosen()}))
