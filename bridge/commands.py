"""Operator commands beyond serve/check/route/send-test/deliveries: silence, keygen, emit, demo."""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    """Add this module's subcommands to the ``alert-bridge`` parser."""
