"""Console sessions and CSRF tokens: who may see pages and who may press buttons.

With ``server.admin_token`` set, the login form trades the token for a session: a random id in an
HttpOnly, SameSite=Strict cookie (Secure over TLS), kept here in memory with an expiry. The token
itself never leaves the login request. Every state-changing form carries the session's CSRF
token, compared in constant time. Without a token every visitor gets a session (the admin port
is open anyway) but forms still need the CSRF token: a page elsewhere cannot press our buttons.

The login form has no session yet: its CSRF token is an HMAC, under a per-process random key,
of a random nonce kept in a short-lived cookie (double submit, nothing stored).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

SESSION_COOKIE = "ab_console"
LOGIN_COOKIE = "ab_console_login"
SESSION_TTL = 12 * 3600.0  # idle lifetime; each page view extends it
MAX_SESSIONS = 1024  # the oldest is dropped past this: memory stays bounded whoever logs in


@dataclass
class Session:
    id: str
    csrf: str
    expires: float
    flash: list[tuple[str, str]] = field(default_factory=list)  # (kind, text) shown once


SESSION = web.RequestKey("console_session", Session)  # the request's session, set by Console.guard


class Sessions:
    """Sessions in memory; a restart logs everyone out (the operator logs in again)."""

    def __init__(self, *, ttl: float = SESSION_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._by_id: dict[str, Session] = {}
        self._key = secrets.token_bytes(32)

    def new(self) -> Session:
        if len(self._by_id) >= MAX_SESSIONS:
            self._drop_expired()
        while len(self._by_id) >= MAX_SESSIONS:
            del self._by_id[next(iter(self._by_id))]
        s = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), self._clock() + self._ttl)
        self._by_id[s.id] = s
        return s

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        s = self._by_id.get(session_id)
        if s is None:
            return None
        now = self._clock()
        if s.expires <= now:
            del self._by_id[session_id]
            return None
        s.expires = now + self._ttl
        return s

    def end(self, session_id: str | None) -> None:
        if session_id:
            self._by_id.pop(session_id, None)

    def _drop_expired(self) -> None:
        now = self._clock()
        for sid in [sid for sid, s in self._by_id.items() if s.expires <= now]:
            del self._by_id[sid]

    # --- the login form's CSRF token (no session yet) --------------------------------------------

    def login_nonce(self) -> str:
        return secrets.token_urlsafe(24)

    def login_csrf(self, nonce: str) -> str:
        return hmac.new(self._key, b"login\0" + nonce.encode(), hashlib.sha256).hexdigest()

    def login_csrf_ok(self, nonce: str | None, given: str | None) -> bool:
        if not nonce or not given:
            return False
        return hmac.compare_digest(self.login_csrf(nonce).encode(), given.encode("utf-8", "replace"))


def csrf_ok(session: Session | None, given: str | None) -> bool:
    if session is None or not given:
        return False
    return hmac.compare_digest(session.csrf.encode(), given.encode("utf-8", "replace"))


def token_ok(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))
