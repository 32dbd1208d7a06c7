"""aiohttp-floor: the least an aiohttp service can do per event, i.e. the limit of our stack on a core.

Reads the body, verifies the RSA-SHA256 PKCS#1 v1.5 signature with a key loaded once through
`cryptography`, answers 200 (403 when invalid). No JSON parsing, no storage, no access log.
Used only as a baseline by bench/run.py:  python aiohttp_floor.py PORT PUBLIC_KEY_FILE [HOST]
With BENCH_FLOOR_NO_VERIFY=1 it skips the RSA check (still reading the header): what aiohttp alone
costs, for ``profile_accept.py --floor-no-verify``; never a baseline of run.py's targets.
"""

from __future__ import annotations

import base64
import binascii
import os
import sys
from collections.abc import Awaitable, Callable

from aiohttp import web
from benchlib import loop  # bench/ is on PYTHONPATH: the event loop the harness chose (--loop)
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

Handler = Callable[[web.Request], Awaitable[web.Response]]


def make_handler(public_pem: bytes) -> Handler:
    key = serialization.load_pem_public_key(public_pem)
    check = os.environ.get("BENCH_FLOOR_NO_VERIFY") != "1"
    pad, algo = padding.PKCS1v15(), hashes.SHA256()

    async def webhook(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            signature = base64.b64decode(request.headers["X-ThunderStack-Signature"], validate=True)
            if check:
                key.verify(signature, body, pad, algo)  # type: ignore[union-attr, call-arg]
        except (KeyError, binascii.Error, InvalidSignature):
            return web.Response(status=403, text="invalid signature")
        return web.Response(text="OK")

    return webhook


def make_app(public_pem: bytes, path: str = "/webhook") -> web.Application:
    app = web.Application()
    app.router.add_post(path, make_handler(public_pem))
    return app


def main() -> None:
    port, key_file = int(sys.argv[1]), sys.argv[2]
    host = sys.argv[3] if len(sys.argv) > 3 else "127.0.0.1"
    with open(key_file, "rb") as f:
        app = make_app(f.read())
    loop.install()
    web.run_app(app, host=host, port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
