"""httptools-floor: aiohttp-floor's work on the webhook listener's own stack (asyncio + httptools).

Reads the body, verifies the RSA-SHA256 PKCS#1 v1.5 signature with a key loaded once through
`cryptography`, answers 200 (403 when invalid), keep-alive. Nothing else: no routes, limits,
timeouts, JSON, storage. The least a Python service on bridge/hookserver.py's stack can do per
event; reported beside aiohttp-floor (whose ratios the targets of issue 18 are), never a target.
Used only as a baseline by bench/run.py:  python httptools_floor.py PORT PUBLIC_KEY_FILE [HOST]
With BENCH_FLOOR_NO_VERIFY=1 it skips the RSA check (``profile_accept.py --floor-no-verify``).
"""

from __future__ import annotations

import asyncio
import binascii
import os
import sys
from typing import cast

import httptools
from benchlib import loop  # bench/ is on PYTHONPATH: the event loop the harness chose (--loop)
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 2\r\n\r\nOK"
BAD = (b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 17\r\n\r\n"
       b"invalid signature")


def protocol(public_pem: bytes) -> type[asyncio.Protocol]:
    key = serialization.load_pem_public_key(public_pem)
    check = os.environ.get("BENCH_FLOOR_NO_VERIFY") != "1"
    pad, algo = padding.PKCS1v15(), hashes.SHA256()

    class Floor(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses
            self.parser = httptools.HttpRequestParser(self)
            self.body: list[bytes] = []
            self.signature: bytes | None = None

        def data_received(self, data: bytes) -> None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self.transport.close()

        def on_header(self, name: bytes, value: bytes) -> None:
            if name.lower() == b"x-thunderstack-signature":
                self.signature = value

        def on_body(self, chunk: bytes) -> None:
            self.body.append(chunk)

        def on_message_complete(self) -> None:
            body, self.body = b"".join(self.body), []
            try:
                signature = binascii.a2b_base64(self.signature or b"", strict_mode=True)
                if check:
                    key.verify(signature, body, pad, algo)  # type: ignore[union-attr, call-arg]
                self.transport.write(OK)
            except (binascii.Error, InvalidSignature):
                self.transport.write(BAD)
            self.signature = None
            if not self.parser.should_keep_alive():
                self.transport.close()

    return Floor


async def serve(port: int, public_pem: bytes, host: str) -> None:
    server = await asyncio.get_running_loop().create_server(protocol(public_pem), host, port, backlog=1024)
    await server.serve_forever()


def main() -> None:
    port, key_file = int(sys.argv[1]), sys.argv[2]
    host = sys.argv[3] if len(sys.argv) > 3 else "127.0.0.1"
    with open(key_file, "rb") as f:
        pem = f.read()
    loop.run(serve(port, pem, host))


if __name__ == "__main__":
    main()
