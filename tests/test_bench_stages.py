"""bench/stage_bridge.py stops the real bridge's accept path where it says, and nowhere else.

Its figures (``profile_accept.py --stage``) say what each step of the accept path costs; a stage
that stopped earlier or later than its name would put a step's cost in the wrong row.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from bridge.testing import event_body
from tests.support.harness import ROOT, BridgeProcess

STAGE_BRIDGE = ROOT / "bench" / "stage_bridge.py"
STAGED = {"status": "accepted", "id": "evt_" + "0" * 24, "deliveries": 0}

Start = Callable[[str], Any]


@pytest.fixture
async def staged(
    tmp_path: Path, make_config: Callable[..., dict[str, Any]], signing_key: rsa.RSAPrivateKey,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Start]:
    # The script's own directory is on its path, not the repository's (as profile_accept.py runs it).
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    procs: list[BridgeProcess] = []

    async def start(stage: str) -> BridgeProcess:
        proc = BridgeProcess(tmp_path / stage, make_config(), signing_key, program=(str(STAGE_BRIDGE), stage))
        procs.append(proc)
        await proc.start()
        return proc

    yield start
    for proc in procs:
        proc.kill()


def _no_details() -> bytes:
    doc = json.loads(event_body("n1", "FAILED"))
    del doc["details"]
    return json.dumps(doc, separators=(",", ":")).encode()


async def test_http_answers_before_looking_at_the_body(staged: Start) -> None:
    proc = await staged("http")
    assert (await proc.post(b"not json", signature=False))[:2] == (200, STAGED)


async def test_verify_stops_after_the_signature_check(staged: Start) -> None:
    proc = await staged("verify")
    status, doc, _ = await proc.post(event_body("n1", "FAILED"), signature="AAAA")
    assert (status, doc["error"]) == (403, "invalid_signature")
    # Signed but invalid: validation comes after the stop.
    assert (await proc.post(_no_details()))[:2] == (200, STAGED)


async def test_event_stops_after_validation_and_before_the_store(staged: Start) -> None:
    proc = await staged("event")
    status, doc, _ = await proc.post(_no_details())
    assert (status, doc["error"]) == (422, "invalid_field")
    assert await proc.event("n1", "FAILED") == (200, STAGED)
    # Nothing reached decide or the store: the same event again is not a duplicate.
    assert await proc.event("n1", "FAILED", timestamp="2026-01-01T00:00:00Z") == (200, STAGED)
    assert await proc.event("n1", "FAILED", timestamp="2026-01-01T00:00:00Z") == (200, STAGED)
    assert await proc.get(proc.admin_url + "/api/v1/nodes") == (200, {"nodes": []})


def test_an_unknown_stage_is_refused() -> None:
    import subprocess

    out = subprocess.run([sys.executable, str(STAGE_BRIDGE), "decide", "serve"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode != 0 and "usage" in out.stderr
