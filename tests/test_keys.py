"""Public key loading, the key URL (down at start, rotation, rate-limited refresh) and the cache."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from bridge.errors import KeyLoadError
from bridge.keys import key_from_response, load_public_key, pem
from bridge.testing import event_body, generate_key, public_pem
from bridge.verify import MAX_STRINGIFY_BYTES
from tests.support.fakes import free_port, wait_until
from tests.support.harness import InProcessBridge


def _der(key: rsa.RSAPrivateKey, fmt: serialization.PublicFormat) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER, fmt)


def test_key_encodings(signing_key: rsa.RSAPrivateKey) -> None:
    want = pem(signing_key.public_key())
    spki_pem = public_pem(signing_key).decode()
    pkcs1_pem = (
        signing_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1).decode()
    )
    spki_b64 = base64.b64encode(_der(signing_key, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    pkcs1_b64 = base64.b64encode(_der(signing_key, serialization.PublicFormat.PKCS1)).decode()
    pkcs1_b64_lines = "\n".join(pkcs1_b64[i:i + 64] for i in range(0, len(pkcs1_b64), 64))
    for material in (spki_pem, pkcs1_pem, spki_b64, pkcs1_b64, spki_pem.replace("\n", "\\n"),
                     pkcs1_pem.replace("\n", "\\n"), pkcs1_b64_lines, pkcs1_pem.encode()):
        assert pem(load_public_key(material)) == want
    for answer in (
        json.dumps({"data": spki_pem}),
        json.dumps({"data": spki_b64}),
        spki_pem,
        json.dumps({"data": {"publicKey": pkcs1_pem}}),
    ):
        assert pem(key_from_response(answer.encode())) == want


@pytest.mark.parametrize(
    "bad", [b"", b"hello", b'{"data": 5}', b'{"nodata": "x"}', b"{not json", base64.b64encode(b"not a key")]
)
def test_bad_key_material(bad: bytes) -> None:
    with pytest.raises(KeyLoadError):
        key_from_response(bad)


def _ec_public(fmt: serialization.Encoding) -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        fmt, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize("material", [
    "-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----",  # base64 of "not a key"
    "-----BEGIN RSA PUBLIC KEY-----\n!!!\n-----END RSA PUBLIC KEY-----",
    "-----BEGIN PUBLIC KEY-----",
    _ec_public(serialization.Encoding.PEM).decode(),  # a public key, not an RSA one
    base64.b64encode(_ec_public(serialization.Encoding.DER)).decode(),
])
def test_unreadable_or_non_rsa_key_is_a_key_load_error(material: str) -> None:
    with pytest.raises(KeyLoadError):
        load_public_key(material)


class KeyEndpoint:
    """ThunderStack's key endpoint on loopback: Bearer token required, {"data": "<key>"} answer."""

    def __init__(self, key: rsa.RSAPrivateKey, token: str = "tok-123") -> None:
        self.key = key
        self.token = token
        self.requests = 0
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/webhook-public-key"

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"error": "unauthorized"}, status=401)
        return web.json_response({"data": public_pem(self.key).decode()})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/webhook-public-key", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def endpoint(signing_key: rsa.RSAPrivateKey) -> AsyncIterator[KeyEndpoint]:
    ep = KeyEndpoint(signing_key)
    yield ep
    await ep.stop()


def _url_config(ep: KeyEndpoint, **verification: Any) -> dict[str, Any]:
    return {
        "public_key_url": ep.url,
        "public_key_file": None,
        "api_token": ep.token,
        "failure_refresh_interval": "60s",
        **verification,
    }


async def test_key_url_down_at_start_then_up(bridge: Callable[..., Any], endpoint: KeyEndpoint) -> None:
    b: InProcessBridge = await bridge(verification=_url_config(endpoint))
    status, doc = await b.get(b.base_url + "/readyz")
    assert status == 503
    status, doc = await b.event("n1", "FAILED")
    assert status == 503  # ThunderStack retries; nothing is lost
    await endpoint.start()
    # the background fetch backs off from 1 s; it must get the key on its own
    await wait_until(lambda: b.app.keys is not None and b.app.keys.ready, timeout=10, what="key fetched")
    assert (await b.get(b.base_url + "/readyz"))[0] == 200
    status, doc = await b.event("n1", "FAILED")
    assert status == 200 and doc["status"] == "accepted"


async def test_rotation_refreshes_once_and_accepts_new_key(
    bridge: Callable[..., Any], endpoint: KeyEndpoint, signing_key: rsa.RSAPrivateKey
) -> None:
    await endpoint.start()
    b: InProcessBridge = await bridge(verification=_url_config(endpoint))
    await wait_until(lambda: b.app.keys is not None and b.app.keys.ready, timeout=5, what="key fetched")
    assert (await b.event("n1", "RUNNING"))[0] == 200
    fetched = endpoint.requests

    new_key = generate_key()
    endpoint.key = new_key  # ThunderStack rotates
    b.key = new_key
    status, doc = await b.event("n1", "FAILED")  # first event under the new key: refresh, verify again
    assert status == 200 and doc["status"] == "accepted"
    assert endpoint.requests == fetched + 1

    b.key = signing_key  # the previous key still verifies (events signed before the rotation)
    assert (await b.event("n2", "FAILED"))[0] == 200

    # a flood of bad signatures triggers no more than one refresh a minute
    bogus = generate_key()
    b.key = bogus
    results = await asyncio.gather(*(b.event(f"flood{i}", "FAILED") for i in range(30)))
    assert all(code == 403 for code, _ in results)
    assert endpoint.requests == fetched + 1


async def test_first_bad_signature_refresh_is_bounded(
    bridge: Callable[..., Any], endpoint: KeyEndpoint, other_key: rsa.RSAPrivateKey
) -> None:
    await endpoint.start()
    b: InProcessBridge = await bridge(verification=_url_config(endpoint, failure_refresh_interval="1h"))
    await wait_until(lambda: b.app.keys is not None and b.app.keys.ready, timeout=5, what="key fetched")
    before = endpoint.requests
    b.key = other_key
    for i in range(5):
        assert (await b.event(f"x{i}", "FAILED"))[0] == 403
    assert endpoint.requests - before == 1


async def test_cached_key_survives_restart_without_network(
    bridge: Callable[..., Any], endpoint: KeyEndpoint, tmp_path: Path
) -> None:
    await endpoint.start()
    cfg = {"verification": _url_config(endpoint), "storage": {"url": f"sqlite://{tmp_path}/cache.db"}}
    b: InProcessBridge = await bridge(**cfg)
    await wait_until(lambda: b.app.keys is not None and b.app.keys.ready, timeout=5, what="key fetched")
    await b.stop()
    await endpoint.stop()  # no network now
    b2: InProcessBridge = await bridge(**cfg)
    assert (await b2.get(b2.base_url + "/readyz"))[0] == 200
    status, doc = await b2.event("n1", "FAILED")
    assert status == 200 and doc["status"] == "accepted"


async def test_per_node_key(bridge: Callable[..., Any], tmp_path: Path, other_key: rsa.RSAPrivateKey) -> None:
    node_pem = tmp_path / "node.pem"
    node_pem.write_bytes(public_pem(other_key))
    b: InProcessBridge = await bridge(nodes={"n1": {"public_key_file": str(node_pem)}, "n2": {}})
    b.key = other_key
    assert (await b.event("n1", "FAILED"))[0] == 200
    # the node's key is not valid for another node
    status, _doc, _ = await b.post(event_body("n2", "FAILED"))
    assert status == 403
    # A body past verify.MAX_STRINGIFY_BYTES is still parsed before its signature is checked when
    # nodes have keys of their own: the node's key is found in it.
    big = event_body("n1", "RUNNING", note="x" * (MAX_STRINGIFY_BYTES + 100))
    assert len(big) > MAX_STRINGIFY_BYTES
    status, doc, _ = await b.post(big)
    assert status == 200 and doc["status"] == "accepted", doc
