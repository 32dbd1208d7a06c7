"""An HTTPS endpoint nobody trusts, for the receivers' and send-test's certificate failures."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from tests.support.fakes import CertFiles, free_port


@contextlib.asynccontextmanager
async def https_server(cert: CertFiles) -> AsyncIterator[str]:
    """An https endpoint on 127.0.0.1 with a self-signed certificate nobody trusts; yields its URL."""
    hits: list[bytes] = []

    async def handle(request: web.Request) -> web.Response:
        hits.append(await request.read())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=cert.server_context()).start()
    try:
        yield f"https://127.0.0.1:{port}/hook/s3cr3t-path-token"
    finally:
        await runner.cleanup()
    assert not hits  # nothing ever went over an unverified connection
