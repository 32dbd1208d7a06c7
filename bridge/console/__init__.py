"""The operator console: server-rendered pages on the admin listener (``/`` and below).

``Console.guard`` is the console's half of the admin listener's guard (``server.admin_guard``
hands it every path the console owns): sessions instead of the bearer token, HTML forms with a
CSRF token instead of JSON bodies. The JSON API's rules are untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from aiohttp import web
from aiohttp.typedefs import Handler

from bridge.config import Config
from bridge.console.auth import SESSION, SESSION_COOKIE, Session, Sessions, csrf_ok
from bridge.console.render import Renderer
from bridge.model import Silence
from bridge.store.base import Store

__all__ = ["Console", "ConsoleBackend"]

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
FORM = "application/x-www-form-urlencoded"
# First path segments the console owns.
SECTIONS = frozenset({"login", "logout", "fleet", "outbox", "silences", "config", "static", "incidents"})


class ConsoleBackend(Protocol):
    """What the pages read and change (App implements it)."""

    config: Config
    store: Store
    clock: Callable[[], datetime]
    last_reload: tuple[datetime, list[str]] | None  # when, and the problems (empty: it worked)

    async def add_silence(self, spec: Mapping[str, Any]) -> Silence: ...

    async def list_silences(self, *, include_expired: bool = False) -> list[Silence]: ...

    async def expire_silence(self, silence_id: str) -> bool: ...

    # The admin API's own actions (incident_ops, metrics, logs): the buttons do what the API does.
    async def ack_incident(self, incident_id: str, by: str) -> tuple[str, dict[str, Any] | None]: ...

    async def resolve_incident(self, incident_id: str, by: str) -> tuple[str, dict[str, Any] | None]: ...


class Console:
    def __init__(self, backend: ConsoleBackend, *, token: str | None) -> None:
        self.backend = backend
        self.token = token
        self.sessions = Sessions()
        self.render = Renderer(lambda: backend.config)
        self.render.token_set = token is not None

    @staticmethod
    def owns(path: str) -> bool:
        return path == "/" or path.split("/", 2)[1] in SECTIONS

    def mount(self, app: web.Application) -> None:
        from bridge.console import pages

        pages.add_routes(app, self)

    async def guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Pages need a session; forms need the session's CSRF token. The Origin check ran before."""
        if request.path.startswith("/static/") or request.path == "/login":
            return await handler(request)  # the login handler checks its own CSRF token
        session = self.sessions.get(request.cookies.get(SESSION_COOKIE))
        created = False
        if session is None:
            if request.method in MUTATING:
                return self.render.refusal(request, 403, "This form has no session behind it. "
                                           "Open the page again (log in first if asked) and retry.")
            if self.token is not None:
                return redirect("/login")
            session, created = self.sessions.new(), True  # no token: the port is open; forms still need CSRF
        if request.method in MUTATING:
            if request.content_type != FORM:
                return self.render.refusal(request, 415, f"Console forms are sent as {FORM}.")
            form = await request.post()
            given = form.get("csrf")
            if not csrf_ok(session, given if isinstance(given, str) else None):
                return self.render.refusal(request, 403, "The form's CSRF token is missing or wrong. "
                                           "Open the page again and retry.")
        request[SESSION] = session
        response = await handler(request)
        if created:
            set_session_cookie(response, request, session)
        return response


def redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def set_session_cookie(response: web.StreamResponse, request: web.Request, session: Session) -> None:
    response.set_cookie(SESSION_COOKIE, session.id, path="/", httponly=True, samesite="Strict",
                        secure=request.secure)
