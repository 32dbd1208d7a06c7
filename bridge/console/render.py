"""Templates to responses: autoescaped Jinja2, strict headers, and every config secret scrubbed."""

from __future__ import annotations

import html
from collections.abc import Callable
from datetime import datetime
from importlib import resources
from typing import Any

import jinja2
from aiohttp import web

from bridge.config import Config
from bridge.console.auth import SESSION, Session
from bridge.console.views import config_redactor, human_duration, status_class
from bridge.model import format_timestamp

# Nothing but our own files; no inline script; no framing (clickjacking the buttons).
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Not no-referrer: under it Chromium sends "Origin: null" with our own forms, which the Origin check refuses.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
STATIC_TYPES = {".css": "text/css", ".js": "text/javascript"}


def _ts(value: datetime | None) -> str:
    return format_timestamp(value)[:19].replace("T", " ") + " UTC" if value else ""


class Renderer:
    def __init__(self, config: Callable[[], Config]) -> None:
        self._config = config
        self.token_set = False  # whether a login exists (the nav shows Log out)
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("bridge.console", "templates"),
            autoescape=True,  # every template, whatever its name: event-derived values are hostile
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["ts"] = _ts
        self.env.filters["dur"] = human_duration
        self.env.filters["status_css"] = status_class
        self._redactor_for: tuple[int, Any] = (0, None)
        self.static = {
            f.name: f.read_bytes()
            for f in resources.files("bridge.console").joinpath("static").iterdir()
            if f.name.endswith(tuple(STATIC_TYPES))
        }

    def _scrub(self, text: str) -> str:
        cfg = self._config()
        if self._redactor_for[0] != id(cfg):  # a reload swaps the config object
            self._redactor_for = (id(cfg), config_redactor(cfg))
        return str(self._redactor_for[1](text))

    def page(self, request: web.Request, template: str, *, status: int = 200, **context: Any) -> web.Response:
        session: Session | None = request.get(SESSION)
        flash = list(session.flash) if session else []
        if session:
            session.flash.clear()
        body = self.env.get_template(template).render(
            csrf=session.csrf if session else "", flash=flash, path=request.path,
            logged_in=session is not None, token_set=self.token_set, **context,
        )
        return web.Response(text=self._scrub(body), status=status, content_type="text/html", charset="utf-8",
                            headers=HEADERS)

    def refusal(self, request: web.Request, status: int, text: str) -> web.Response:
        title = {403: "Forbidden", 415: "Unsupported form encoding"}.get(status, "Refused")
        body = self.env.get_template("refused.html").render(
            title=title, status=status, text=text, csrf="", flash=[], path=request.path, logged_in=False,
            token_set=False,
        )
        return web.Response(text=body, status=status, content_type="text/html", charset="utf-8", headers=HEADERS)

    async def serve_static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = self.static.get(name)
        if body is None:
            raise web.HTTPNotFound(reason=f"no static file {html.escape(name[:64])}")
        suffix = name[name.rfind("."):]
        return web.Response(body=body, content_type=STATIC_TYPES[suffix],
                            headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"})
