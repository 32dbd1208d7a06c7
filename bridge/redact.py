"""Secret values and scrubbing them from text: one rule for log lines, receivers' failure reasons
and console pages.

Secrets are never put into text on purpose; this is the second line of defence against a library
message or an echoed answer that carries one. Each user picks the mask its output can show
(``<secret>`` in logs, ``***`` in reasons and HTML pages).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from pydantic import BaseModel, SecretStr

if TYPE_CHECKING:
    from bridge.config import Config

_MIN_SECRET_LEN = 4  # shorter "secrets" would redact ordinary words


class Redactor:
    """Replaces known secret values in text with ``mask``."""

    def __init__(self, secrets: Iterable[str | None] = (), *, mask: str = "***") -> None:
        self.mask = mask
        self._secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str | None]) -> None:
        """Redact these too (a reload may add secrets; the old ones stay redacted)."""
        # Longest first, so a secret containing another is replaced whole.
        found = {*self._secrets, *(s for s in secrets if s and len(s) >= _MIN_SECRET_LEN)}
        self._secrets = sorted(found, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, self.mask)
        return text


def url_secrets(url: str) -> list[str]:
    """A URL and the parts of it that may be credentials: password, query values, long path parts."""
    parts = urlsplit(url)
    found = [url, parts.password or "", *(v for _, v in parse_qsl(parts.query))]
    if len(parts.path) > 1:
        found.append(parts.path)
        # Slack-style /services/T…/B…/<token>: a long segment is likely a token.
        found += [seg for seg in parts.path.split("/") if len(seg) >= 12]
    return [s for s in found if s]


def secret_values(value: Any) -> Iterator[str]:
    """Every SecretStr value in a config tree (webhook URLs, tokens, passwords, header values); of a
    secret URL also its parts, since a token can show up alone (a query value, a Slack path part)."""
    if isinstance(value, SecretStr):
        secret = value.get_secret_value()
        yield secret
        if "://" in secret:
            yield from url_secrets(secret)
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from secret_values(getattr(value, name))
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from secret_values(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from secret_values(v)


def config_secrets(cfg: Config) -> list[str]:
    """Every secret the config holds: its SecretStr values, and the storage URL with its password
    (a redis:// URL may carry one)."""
    found = list(secret_values(cfg))
    password = urlsplit(cfg.storage.url).password
    if password:
        found += [password, cfg.storage.url]
    return found
