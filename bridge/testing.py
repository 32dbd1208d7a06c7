"""Helpers for trying and testing the bridge without ThunderStack: keys, events, signatures.

Used by the ``keygen``, ``emit`` and ``demo`` commands and by the test suite; users may use them
in their own tests too.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from bridge.model import format_timestamp


def generate_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def private_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def write_keypair(directory: Path, key: rsa.RSAPrivateKey | None = None) -> tuple[Path, Path]:
    """private.pem (mode 0600) and public.pem in ``directory``."""
    key = key or generate_key()
    directory.mkdir(parents=True, exist_ok=True)
    priv, pub = directory / "private.pem", directory / "public.pem"
    priv.write_bytes(private_pem(key))
    priv.chmod(0o600)
    pub.write_bytes(public_pem(key))
    return priv, pub


def load_private_key(path: Path) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{path} is not an RSA private key")
    return key


def sign(body: bytes, key: rsa.RSAPrivateKey) -> str:
    """The X-ThunderStack-Signature value for ``body``: base64 RSA-SHA256, PKCS#1 v1.5."""
    return base64.b64encode(key.sign(body, padding.PKCS1v15(), hashes.SHA256())).decode()


def event_body(
    node: str = "n1",
    status: str = "RUNNING",
    *,
    timestamp: datetime | str | None = None,
    event_type: str = "NODE_STATUS_UPDATED",
    **extra: Any,
) -> bytes:
    """A body shaped like ThunderStack's (compact JSON, same key order)."""
    if timestamp is None:
        timestamp = datetime.now(UTC)
    stamp = timestamp if isinstance(timestamp, str) else format_timestamp(timestamp)[:-4] + "Z"
    doc: dict[str, Any] = {
        "eventType": event_type,
        "eventTimestamp": stamp,
        "details": {"nodeId": node, "status": status},
        "nodeId": node,
        **extra,
    }
    return json.dumps(doc, separators=(",", ":")).encode()
