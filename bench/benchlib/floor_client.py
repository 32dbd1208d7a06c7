"""The delivery floor: a bare aiohttp client loop posting a sample delivery to the sink.

    python -m benchlib.floor_client URL COUNT CONCURRENCY SAMPLE_JSON

Run pinned to the server core, like the bridge, with as many requests in flight as the bridge's
receiver may have (its ``concurrency``), so the ratio isolates what the bridge adds per delivery:
claiming from the store, rendering, recording the outcome. Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import aiohttp


async def main(url: str, count: int, concurrency: int, body: bytes, headers: dict[str, str]) -> dict:
    statuses: dict[int, int] = {}
    left = count

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def loop() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1

        t0 = time.monotonic()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        elapsed = time.monotonic() - t0
    return {"count": count, "elapsed_s": elapsed, "rate": count / elapsed, "statuses": statuses}


if __name__ == "__main__":
    url, count, conc, sample_path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    with open(sample_path) as f:
        sample = json.load(f)
    result = asyncio.run(main(url, count, conc, sample["body"].encode(), sample["headers"]))
    print(json.dumps(result))
