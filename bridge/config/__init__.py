"""Typed configuration: YAML → validated objects, with the YAML path in every error.

Unknown keys are errors (a typo must never silently disable an alert). ``${VAR}`` and
``${VAR:-default}`` are replaced from the environment in string values; every secret has a
``*_file`` twin for Kubernetes secret mounts. Durations are written ``30s``, ``5m``, ``24h``.

The package: ``base`` (shared building blocks), ``server`` (the ``server:`` section),
``receivers`` (one model per receiver type), ``model`` (every other section and ``Config``),
``yamlsource`` (the YAML loader: duplicate keys), ``envsubst`` (``${VAR}``), ``loader`` (YAML →
``Config``), ``problems`` (validation errors with their fix), ``lint`` (hints).
Import from ``bridge.config``; the names below are its interface. Each is imported when first
asked for (``__getattr__``), so that a command that reads only ``server:`` (``healthcheck``) or
nothing (``--help``) loads neither the receivers' models nor the loader: pydantic builds their
validators at import, most of a CLI start (bench/README.md, "CLI start-up").
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.config.base import (
        Duration,
        FilePath,
        HostPort,
        SecretFiles,
        Strict,
        StrList,
        format_duration,
        parse_duration,
        resolve_path,
        split_host_port,
    )
    from bridge.config.envsubst import interpolate
    from bridge.config.loader import load, parse, unreadable_files
    from bridge.config.model import (
        DEFAULT_KEY_URL,
        Config,
        DeliveryConfig,
        EscalationConfig,
        FlappingConfig,
        IncidentsConfig,
        LinksConfig,
        LogConfig,
        MatchConfig,
        NodeConfig,
        NodeLabelsConfig,
        RetentionConfig,
        RouteConfig,
        SilenceConfig,
        StorageConfig,
        VerificationConfig,
    )
    from bridge.config.receivers import (
        RECEIVER_TYPES,
        WHSEC_PREFIX,
        DiscordReceiverConfig,
        EmailReceiverConfig,
        LogReceiverConfig,
        MSTeamsReceiverConfig,
        OGPriority,
        OpsgenieReceiverConfig,
        PagerDutyReceiverConfig,
        PDSeverity,
        ReceiverBase,
        ReceiverConfig,
        RetryConfig,
        SlackReceiverConfig,
        SMTPConfig,
        TelegramReceiverConfig,
        TemplateKind,
        WebhookReceiverConfig,
        signing_key,
    )
    from bridge.config.server import ServerConfig, TLSConfig
    from bridge.config.yamlsource import format_path

__all__ = [
    "DEFAULT_KEY_URL",
    "RECEIVER_TYPES",
    "WHSEC_PREFIX",
    "Config",
    "DeliveryConfig",
    "DiscordReceiverConfig",
    "Duration",
    "EmailReceiverConfig",
    "EscalationConfig",
    "FilePath",
    "FlappingConfig",
    "HostPort",
    "IncidentsConfig",
    "LinksConfig",
    "LogConfig",
    "LogReceiverConfig",
    "MSTeamsReceiverConfig",
    "MatchConfig",
    "NodeConfig",
    "NodeLabelsConfig",
    "OGPriority",
    "OpsgenieReceiverConfig",
    "PDSeverity",
    "PagerDutyReceiverConfig",
    "ReceiverBase",
    "ReceiverConfig",
    "RetentionConfig",
    "RetryConfig",
    "RouteConfig",
    "SMTPConfig",
    "SecretFiles",
    "ServerConfig",
    "SilenceConfig",
    "SlackReceiverConfig",
    "StorageConfig",
    "StrList",
    "Strict",
    "TLSConfig",
    "TelegramReceiverConfig",
    "TemplateKind",
    "VerificationConfig",
    "WebhookReceiverConfig",
    "format_duration",
    "format_path",
    "interpolate",
    "load",
    "parse",
    "parse_duration",
    "resolve_path",
    "signing_key",
    "split_host_port",
    "unreadable_files",
]

# Where a name is looked for, lightest first: asking for format_duration or ServerConfig must not
# import the receivers (model and loader import them anyway).
_SUBMODULES = ("base", "yamlsource", "envsubst", "server", "receivers", "model", "loader")


if not TYPE_CHECKING:  # mypy reads the imports above: a misspelt name stays an error there

    def __getattr__(name: str) -> Any:
        if name in __all__:
            for sub in _SUBMODULES:
                module = importlib.import_module(f"{__name__}.{sub}")
                if hasattr(module, name):
                    value = getattr(module, name)
                    globals()[name] = value  # once: later lookups do not come here
                    return value
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
