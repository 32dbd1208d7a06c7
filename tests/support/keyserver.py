"""A stand-in for ThunderStack's public-key endpoint on 127.0.0.1."""

from __future__ import annotations

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from bridge.testing import public_pem
from tests.support.fakes import LOOPBACK


class KeyEndpoint:
    """Answers 503 ``failures`` times, then ``{"data": "<PEM>"}``; records the Authorization headers."""

    def __init__(self, key: rsa.RSAPrivateKey, *, failures: int = 0) -> None:
        self.pem = public_pem(key).decode()
        self.failures = failures
        self.calls = 0
        self.authorizations: list[str | None] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        self.authorizations.append(request.headers.get("Authorization"))
        if self.calls <= self.failures:
            return web.Response(status=503)
        return web.json_response({"data": self.pem})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/webhook-public-key", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, LOOPBACK, 0)
        await site.start()
        self.url = f"http://{LOOPBACK}:{self.runner.addresses[0][1]}/api/webhook-public-key"

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def __aenter__(self) -> KeyEndpoint:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
