"""The operator commands beyond serve/check/route/send-test, one module per family.

``silence`` (silence.py), ``deliveries`` and ``reload`` (outbox.py), ``incidents``/``nodes``
(incidents.py), ``keygen``/``emit``/``demo``/``healthcheck`` (tools.py); common.py holds the ``-c``
rule and the ``--help`` examples. Commands
that reach a running bridge go through bridge/adminclient.py (one rule: its admin API, else the store).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from bridge.commands import incidents, outbox, silence, tools
from bridge.commands.common import EXAMPLES, add_config_argument, add_via_arguments, server_section

EXAMPLES.update(incidents.EXAMPLES)  # --help examples live with their commands' module

__all__ = ["EXAMPLES", "add_config_argument", "add_via_arguments", "register", "server_section"]


def register(sub: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add these subcommands to the ``alert-bridge`` parser (``command`` makes one with examples)."""
    incidents.register(sub, command)
    outbox.register(sub, command)
    silence.register(sub, command)
    tools.register(sub, command)
