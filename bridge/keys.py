"""ThunderStack's public key(s): loading, caching, refreshing, rotation.

Sources: inline PEM, a file, or the key URL (``GET`` with a Bearer token, answering
``{"data": "<key>"}``; the key's encoding is undocumented, so PEM (SPKI or PKCS#1), bare base64
DER and a plain-text PEM answer are all accepted). The last good key from the URL is cached in
the store so a restart without network still verifies.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from bridge.config import Config
from bridge.errors import KeyLoadError, KeyUnavailable, Unavailable
from bridge.store import Store

log = logging.getLogger("bridge.keys")

CACHE_KEY = "public_key_pem"


def load_public_key(material: str | bytes) -> rsa.RSAPublicKey:
    """An RSA public key from PEM (SPKI or PKCS#1) or bare base64 DER (either structure)."""
    text = material.decode("utf-8", "replace") if isinstance(material, bytes) else material
    text = text.strip().replace("\\n", "\n")
    if text.startswith("-----BEGIN"):
        try:
            return _rsa(serialization.load_pem_public_key(text.encode()))
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise KeyLoadError("public key PEM is not a readable public key") from None
    try:
        der = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise KeyLoadError("public key is neither PEM nor base64 DER") from None
    try:
        return _rsa(serialization.load_der_public_key(der))
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyLoadError("public key is not an RSA public key in DER form") from None


def _rsa(key: object) -> rsa.RSAPublicKey:
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeyLoadError("public key is not an RSA key")
    return key


def key_from_response(body: bytes) -> rsa.RSAPublicKey:
    """Parse the key endpoint's answer: ``{"data": "<key>"}`` or a plain-text key."""
    text = body.decode("utf-8", "replace").strip()
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError:
            raise KeyLoadError("key endpoint answered malformed JSON") from None
        data = doc.get("data") if isinstance(doc, dict) else None
        if isinstance(data, dict):  # tolerate {"data": {"publicKey": "..."}}
            data = next((v for v in data.values() if isinstance(v, str)), None)
        if not isinstance(data, str):
            raise KeyLoadError("key endpoint answered JSON without a 'data' key string")
        return load_public_key(data)
    return load_public_key(text)


def pem(key: rsa.RSAPublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def fingerprint(key: rsa.RSAPublicKey) -> str:
    """Short id for logs: the first bytes of the SPKI's SHA-256, never the key itself."""
    import hashlib

    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:16]


@dataclass
class KeyStatus:
    loaded_at: float | None = None  # monotonic-free wall time of the last successful load
    refresh_failures: int = 0
    last_error: str | None = None


class KeyManager:
    """The keys that may sign an event: the node's own, the current global one, the previous one."""

    def __init__(self, cfg: Config, *, store: Store, session: aiohttp.ClientSession) -> None:
        self._v = cfg.verification
        self._nodes = cfg.nodes or {}
        self._store = store
        self._session = session
        self._current: rsa.RSAPublicKey | None = None
        self._previous: rsa.RSAPublicKey | None = None
        self._node_keys: dict[str, rsa.RSAPublicKey] = {}
        self._refresh_lock = asyncio.Lock()
        self._last_failure_refresh = float("-inf")
        self._task: asyncio.Task[None] | None = None
        self.status = KeyStatus()

    # --- what the server asks -----------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._current is not None or bool(self._node_keys)

    @property
    def per_node(self) -> bool:
        """Some node has a key of its own: which key signs a body depends on the nodeId inside it."""
        return bool(self._node_keys)

    def keys_for(self, node_ids: Iterable[str | None]) -> list[rsa.RSAPublicKey]:
        keys: list[rsa.RSAPublicKey] = []
        for node_id in node_ids:
            if node_id is not None and (k := self._node_keys.get(node_id)) is not None and k not in keys:
                keys.append(k)
        keys.extend(k for k in (self._current, self._previous) if k is not None)
        if not keys:
            raise KeyUnavailable("no public key loaded yet", retry_after=5.0)
        return keys

    async def refresh_after_failure(self) -> bool:
        """A signature failed: the key may have rotated. Refresh (at most once per interval).

        Returns True when a different key was loaded, so the caller verifies again. Concurrent
        callers share one refresh."""
        async with self._refresh_lock:
            now = time.monotonic()
            if now - self._last_failure_refresh < self._v.failure_refresh_interval:
                return False
            self._last_failure_refresh = now
            before = self._current
            try:
                await self._load_global()
            except (KeyLoadError, aiohttp.ClientError, TimeoutError, OSError) as exc:
                self._failed(exc)
                return False
            return before is None or self._current is None or pem(before) != pem(self._current)

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load what is local now; fetch the URL in the background (the process starts not-ready)."""
        for node_id, node in self._nodes.items():
            if node.public_key:
                self._node_keys[node_id] = load_public_key(node.public_key)
            elif node.public_key_file:
                self._node_keys[node_id] = load_public_key(_read(node.public_key_file))
        if not self._v.uses_url:
            await self._load_global()
            if self._v.public_key_file is not None:
                self._task = asyncio.create_task(self._refresh_loop(), name="key-refresh")
            return
        try:
            cached = await self._store.get_meta(CACHE_KEY)
        except Unavailable as exc:
            log.warning("cannot read the cached public key: %s", exc.detail)
            cached = None
        if cached:
            try:
                self._set(load_public_key(cached), source="cache")
            except KeyLoadError as exc:
                log.warning("ignoring cached public key: %s", exc)
        self._task = asyncio.create_task(self._fetch_then_refresh(), name="key-fetch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _fetch_then_refresh(self) -> None:
        # Until the first fetch succeeds: back off exponentially (with jitter), forever.
        async for attempt in AsyncRetrying(
            wait=wait_exponential_jitter(multiplier=1, max=60),
            retry=retry_if_exception_type((KeyLoadError, aiohttp.ClientError, TimeoutError, OSError)),
            before_sleep=lambda rs: self._failed(rs.outcome.exception() if rs.outcome else None),
        ):
            with attempt:
                await self._load_global()
        await self._refresh_loop()

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._v.refresh_interval)
            try:
                await self._load_global()
            except (KeyLoadError, aiohttp.ClientError, TimeoutError, OSError) as exc:
                self._failed(exc)

    def _failed(self, exc: BaseException | None) -> None:
        self.status.refresh_failures += 1
        reason = _safe_reason(exc)
        self.status.last_error = reason
        log.warning("public key refresh failed: %s", reason)

    async def _load_global(self) -> None:
        if self._v.public_key is not None:
            self._set(load_public_key(self._v.public_key), source="config")
        elif self._v.public_key_file is not None:
            self._set(load_public_key(_read(self._v.public_key_file)), source="file")
        elif self._v.public_key_url:
            key = await self._fetch(self._v.public_key_url)
            if self._set(key, source="url"):
                try:
                    await self._store.set_meta(CACHE_KEY, pem(key))
                except Unavailable as exc:  # the key is in force; only the restart cache missed it
                    log.warning("cannot cache the public key: %s", exc.detail)

    async def _fetch(self, url: str) -> rsa.RSAPublicKey:
        headers = {"Accept": "application/json, text/plain"}
        if self._v.api_token is not None:
            headers["Authorization"] = f"Bearer {self._v.api_token.get_secret_value()}"
        timeout = aiohttp.ClientTimeout(total=self._v.fetch_timeout)
        async with self._session.get(url, headers=headers, timeout=timeout) as resp:
            body = await resp.content.read(256 * 1024)
            if resp.status != 200:
                raise KeyLoadError(f"key endpoint answered HTTP {resp.status}")
        return key_from_response(body)

    def _set(self, key: rsa.RSAPublicKey, *, source: str) -> bool:
        """Install ``key``; returns True when it differs from the current one (a rotation)."""
        self.status.loaded_at = time.time()
        if self._current is not None and pem(self._current) == pem(key):
            return False
        if self._current is not None:
            log.info("public key rotated: %s -> %s (%s)", fingerprint(self._current), fingerprint(key), source)
            self._previous = self._current
        else:
            log.info("public key loaded: %s (%s)", fingerprint(key), source)
        self._current = key
        return True


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise KeyLoadError(f"cannot read {path}: {exc.strerror or exc}") from None


def _safe_reason(exc: BaseException | None) -> str:
    # aiohttp errors can carry the URL; the URL is not secret, but headers are. Keep it short.
    if exc is None:
        return "unknown error"
    if isinstance(exc, KeyLoadError):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "timed out"
    return type(exc).__name__ + (f": {exc.strerror}" if isinstance(exc, OSError) and exc.strerror else "")
