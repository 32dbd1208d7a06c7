"""The real bridge with its accept path stopped after one step: what each step costs in the real
process, under wrk, beside the floor (``profile_accept.py --stage``; bench/README.md, "Step by step,
in the real process").

    python bench/stage_bridge.py STAGE serve -c CONFIG      (bridge imported from PYTHONPATH)

STAGE: ``http`` answers before the body is looked at (the bridge's webhook listener, its routes and
reply: what the floor pays without its RSA check); ``verify`` after the signature header, the
body's parse and the RSA check; ``event`` after the node checks and the validation into an
``Event``. Each answers what an accept answers (200 and a JSON body of the same shape). The step
after ``event`` is decide and the store: the bridge itself on ``memory://`` (no outbox) or on its
real store. Only this process is changed: the bridge's own methods are wrapped, not copied, so a
stage runs the same code up to its stop. A measuring tool, never a server to deploy.
"""

from __future__ import annotations

import sys
from typing import Any

STAGES = ("http", "verify", "event")


class _Stop(Exception):
    """Raised right after the stage's last step; the wrapped handler answers as an accept would."""


def install(stage: str) -> None:
    from bridge.ingest import Ingest
    from bridge.reply import Reply

    answer = Reply(200, {"status": "accepted", "id": "evt_" + "0" * 24, "deliveries": 0})  # a real id's length
    handle = Ingest._handle

    async def stopped(self: Ingest, *args: Any) -> Reply:
        if stage == "http":
            return answer
        try:
            return await handle(self, *args)
        except _Stop:
            return answer

    if stage == "verify":
        verify = Ingest._verify

        async def verified(self: Ingest, *args: Any) -> None:
            await verify(self, *args)
            raise _Stop

        Ingest._verify = verified  # type: ignore[method-assign, assignment]
    elif stage == "event":

        async def recorded(self: Ingest, *args: Any) -> Reply:
            return answer

        Ingest._record = recorded  # type: ignore[method-assign, assignment]
    Ingest._handle = stopped  # type: ignore[method-assign, assignment]


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in STAGES:
        raise SystemExit(f"usage: stage_bridge.py {{{','.join(STAGES)}}} serve -c CONFIG")
    install(sys.argv[1])
    from bridge.cli import main as bridge_main

    raise SystemExit(bridge_main(sys.argv[2:]))


if __name__ == "__main__":
    main()
