"""What every command module shares: the ``-c`` rule, ``--via``, examples for ``--help``, errors."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bridge.errors import CommandError

if TYPE_CHECKING:
    from bridge.config.server import ServerConfig

CONFIG_ENV = "ALERT_BRIDGE_CONFIG"
DEFAULT_CONFIG = Path("/etc/alert-bridge/config.yaml")

EXAMPLES = {
    "serve": "example:\n  alert-bridge serve -c /etc/alert-bridge/config.yaml",
    "check": "examples:\n  alert-bridge check -c config.yaml\n  ALERT_BRIDGE_CONFIG=config.yaml alert-bridge check",
    "reload": "example:\n  alert-bridge reload -c /etc/alert-bridge/config.yaml",
    "route": "examples:\n  alert-bridge route -c config.yaml --node node-prod-1 --status FAILED\n"
             "  alert-bridge route -c config.yaml --node n1 --status RUNNING --previous-status FAILED --json",
    "send-test": "example:\n  alert-bridge send-test -c config.yaml --receiver oncall-slack",
    "deliveries": "examples:\n  alert-bridge deliveries list -c config.yaml --state dead\n"
                  "  alert-bridge deliveries retry -c config.yaml --dead",
    "deliveries list": "examples:\n  alert-bridge deliveries list -c config.yaml\n"
                       "  alert-bridge deliveries list -c config.yaml --state pending --json",
    "deliveries retry": "examples:\n  alert-bridge deliveries retry -c config.yaml dlv_0123456789abcdef01234567\n"
                        "  alert-bridge deliveries retry -c config.yaml --dead",
    "deliveries purge": "example:\n  alert-bridge deliveries purge -c config.yaml --dead",
    "silence": "examples:\n  alert-bridge silence add -c config.yaml --node 'db-*' --for 2h --comment upgrade\n"
               "  alert-bridge silence list -c config.yaml",
    "silence add": "examples:\n  alert-bridge silence add -c config.yaml --node 'db-*' --for 2h --comment upgrade\n"
                   "  alert-bridge silence add -c config.yaml --node n1 --status FAILED "
                   "--until 2026-05-01T06:00:00Z --comment move",
    "silence list": "examples:\n  alert-bridge silence list -c config.yaml\n"
                    "  alert-bridge silence list -c config.yaml --all --json",
    "silence expire": "example:\n  alert-bridge silence expire -c config.yaml sil_0123456789abcdef",
    "keygen": "example:\n  alert-bridge keygen --out keys",
    "emit": "example:\n  alert-bridge emit --private-key keys/private.pem --node n1 --status FAILED",
    "demo": "example:\n  alert-bridge demo",
    "healthcheck": "examples:\n  alert-bridge healthcheck -c /etc/alert-bridge/config.yaml\n"
                   "  alert-bridge healthcheck --port 8080 --path /healthz",
}


def add_config_argument(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``-c``: required unless $ALERT_BRIDGE_CONFIG is set or /etc/alert-bridge/config.yaml exists."""
    default = os.environ.get(CONFIG_ENV) or (str(DEFAULT_CONFIG) if DEFAULT_CONFIG.is_file() else None)
    sp.add_argument("-c", "--config", required=default is None, default=default,
                    help=f"YAML config file (default: ${CONFIG_ENV}, else {DEFAULT_CONFIG} when it exists)")
    return sp


def add_via_arguments(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
    sp.add_argument("--via", choices=["auto", "admin", "storage"], default="auto",
                    help="auto (default): the running bridge's admin API if it answers, else the store")
    sp.add_argument("--admin-url", help="admin listener to use (default: from server.admin_listen)")
    return sp

def fail(exc: CommandError) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return exc.code

def server_section(path: str) -> ServerConfig:
    """Only ``server:`` of a config file, read leniently: a mistake elsewhere in the file must not stop a
    probe of (or a reload for) a bridge still running its last good config. The same loader as
    ``check`` (yamlsource): a key given twice in ``server:`` (or ``server:`` itself twice) is refused,
    since which one the bridge runs with cannot be told; elsewhere it is left to reload and check.
    It imports only what that takes (no receivers' models, no loader): healthcheck runs it every 30 s."""
    import yaml
    from pydantic import ValidationError

    from bridge.config import yamlsource
    from bridge.config.envsubst import interpolate
    from bridge.config.server import ServerConfig

    try:
        doc = yamlsource.read(Path(path).read_text(encoding="utf-8"))
        twice = [d for d in doc.duplicates if d.path[:1] == ("server",)]
        if twice:
            raise CommandError(f"cannot read server: from {path}: {twice[0].problem()}")
        raw = doc.data or {}
        problems: list[str] = []
        section = interpolate(raw.get("server") or {}, os.environ, ("server",), problems)
        if problems:
            raise CommandError(f"cannot read server: from {path}: {problems[0]}")
        return ServerConfig.model_validate(section)
    except (OSError, yaml.YAMLError, ValidationError, AttributeError) as exc:
        raise CommandError(f"cannot read server: from {path}: {type(exc).__name__}") from None

