"""aiohttp-relay: aiohttp-floor plus one delivery per event, the least a bridge on our stack does.

Verifies exactly as aiohttp_floor.py, answers 200, and forwards the body to one webhook URL from
4 sender tasks (the bridge's default webhook concurrency) over one keep-alive ClientSession. The
queue is in memory: no parsing, no routing, no storage, no retries, no ordering, nothing survives a
restart. Its requests/s on one core is the limit for a bridge that delivers every event it takes.
Used only as a baseline by bench/run.py:  python aiohttp_relay.py PORT PUBLIC_KEY_FILE FORWARD_URL
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from aiohttp_floor import make_handler  # the sibling script (this directory is sys.path[0])
from benchlib import loop  # bench/ is on PYTHONPATH: the event loop the harness chose (--loop)

SENDERS = 4


def make_relay(public_pem: bytes, forward_url: str) -> web.Application:
    floor = make_handler(public_pem)
    queue: asyncio.Queue[bytes] = asyncio.Queue()

    async def webhook(request: web.Request) -> web.StreamResponse:
        resp = await floor(request)
        if resp.status == 200:
            queue.put_nowait(await request.read())  # read() is cached: the body the floor verified
        return resp

    async def sender(session: aiohttp.ClientSession) -> None:
        headers = {"Content-Type": "application/json"}
        while True:
            body = await queue.get()
            try:
                async with session.post(forward_url, data=body, headers=headers) as r:
                    await r.read()
            except aiohttp.ClientError:
                pass  # a baseline: what is lost is lost

    async def senders(_: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as session:
            tasks = [asyncio.create_task(sender(session)) for _ in range(SENDERS)]
            yield
            for t in tasks:
                t.cancel()

    relay = web.Application()
    relay.router.add_post("/webhook", webhook)
    relay.cleanup_ctx.append(senders)
    return relay


def main() -> None:
    port, key_file, forward_url = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    with open(key_file, "rb") as f:
        app = make_relay(f.read(), forward_url)
    loop.install()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
