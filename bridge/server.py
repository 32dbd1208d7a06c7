"""The admin listener (aiohttp): metrics, reload, health, silences, incidents, the outbox, the console.

It lives on its own port so exposing the webhook port (hookserver.py) exposes nothing else. Every
answer is JSON and no path leads to a 500.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler

from bridge import outbox_ops
from bridge.console import Console
from bridge.errors import Unavailable
from bridge.model import DELIVERY_STATES, Silence

log = logging.getLogger("bridge.server")

ReadyCheck = Callable[[], Awaitable[str | None]]  # None when ready, else the reason
Reload = Callable[[], Awaitable[list[str]]]  # problems; empty when the new config is in force
Scrape = Callable[[], Awaitable[bytes]]  # Prometheus text, gauges refreshed first


class Silences(Protocol):
    """What the admin API needs to manage silences (App implements it)."""

    async def add_silence(self, spec: Mapping[str, Any]) -> Silence:
        """Create from a request's fields; ValueError says what is wrong with them."""
        ...

    async def list_silences(self, *, include_expired: bool = False) -> list[Silence]: ...

    async def expire_silence(self, silence_id: str) -> bool: ...


class Incidents(Protocol):
    """What the incident and node API needs (App implements it, over the store)."""

    async def list_incidents(self, *, include_resolved: bool) -> list[dict[str, Any]]: ...

    async def get_incident(self, incident_id: str) -> dict[str, Any] | None: ...

    async def ack_incident(self, incident_id: str, by: str) -> tuple[str, dict[str, Any] | None]: ...

    async def resolve_incident(self, incident_id: str, by: str) -> tuple[str, dict[str, Any] | None]: ...

    async def list_nodes(self) -> list[dict[str, Any]]: ...

    async def node_record(self, node_id: str) -> dict[str, Any] | None: ...

    async def forget_node(self, node_id: str) -> bool: ...


class Outbox(outbox_ops.Outbox, Protocol):
    """What the outbox API needs: the store's delivery operations."""

    async def purge_dead(self) -> int: ...


@web.middleware
async def never_500(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 500:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(exc.status, "bad_request")
        return web.json_response(
            {"error": code, "detail": exc.reason}, status=exc.status, headers={"Allow": exc.headers.get("Allow", "")}
            if exc.status == 405 else None,
        )
    except asyncio.CancelledError:
        raise
    except Unavailable as exc:
        return web.json_response(
            {"error": "unavailable", "detail": exc.detail}, status=503,
            headers={"Retry-After": str(max(1, round(exc.retry_after)))},
        )
    except Exception:
        log.exception("unexpected error handling %s %s", request.method, request.path)
        return web.json_response(
            {"error": "internal", "detail": "unexpected error; retry later"}, status=503, headers={"Retry-After": "5"}
        )


MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _refuse(status: int, code: str, detail: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"error": code, "detail": detail}, status=status, headers=headers)


def _same_origin(origin: str, request: web.Request) -> bool:
    """An Origin naming the admin listener itself, by an IP literal or localhost.

    A page served by the admin listener may call it; any other page may not. A host *name* other
    than localhost is refused even when it equals the Host header: that is what DNS rebinding sends.
    """
    try:
        parts = urlsplit(origin)
        host = parts.hostname or ""
        if host != "localhost":
            ipaddress.ip_address(host)
    except ValueError:
        return False
    return origin == f"{request.scheme}://{request.host}"


def _named_host(request: web.Request) -> bool:
    """A Host header naming the listener by a DNS name other than localhost: what DNS rebinding sends."""
    host = request.headers.get("Host")
    if host is None:
        return False
    try:
        name = urlsplit("//" + host).hostname or ""
        if name != "localhost":
            ipaddress.ip_address(name)
    except ValueError:
        return True
    return False


# Without a token, pages and reads answer only to an IP literal or localhost in Host; a probe or a
# Prometheus scraping by a DNS name keeps working.
_ANY_HOST = frozenset({"/healthz", "/readyz", "/metrics"})


def admin_guard(token: str | None, *, public: frozenset[str], console: Console | None = None) -> Any:
    """Bearer token (when set) on everything but ``public``; CSRF defence on every mutating request.

    Paths the ``console`` owns go to ``console.guard`` after the Origin check: a session cookie
    instead of the bearer token, HTML forms carrying the session's CSRF token instead of JSON.

    A browser can send a cross-site POST without asking (a form, ``fetch`` with ``text/plain``), but
    not with ``Content-Type: application/json`` or ``Authorization`` without a CORS preflight that
    this listener never grants: requiring JSON and refusing foreign ``Origin`` headers closes that
    door whether or not a token is configured.
    """
    expected = f"Bearer {token}".encode() if token else None

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        mutating = request.method in MUTATING
        if expected is None and request.path not in _ANY_HOST and _named_host(request):
            # A page at http://rebound.example:9091 that DNS rebinding points at this listener is
            # same-origin to the browser: it could read the fleet, the outbox and the CSRF tokens.
            text = ("this admin listener has no server.admin_token: it answers only to an IP address "
                    "or localhost (set server.admin_token to reach it by a host name)")
            if console is not None and console.owns(request.path):
                return console.render.refusal(request, 403, text[0].upper() + text[1:] + ".")
            return _refuse(403, "foreign_host", text)
        origin = request.headers.get("Origin")
        if mutating and origin is not None and not _same_origin(origin, request):
            if console is not None and console.owns(request.path):
                return console.render.refusal(request, 403, "Forms from another site are refused.")
            return _refuse(403, "foreign_origin", f"requests from origin {origin[:200]!r} are refused")
        if console is not None and console.owns(request.path):
            return await console.guard(request, handler)
        if expected is not None and request.path not in public:
            given = request.headers.get("Authorization", "").encode("utf-8", "replace")
            if not hmac.compare_digest(given, expected):
                return _refuse(401, "unauthorized", "send Authorization: Bearer <server.admin_token>",
                               {"WWW-Authenticate": 'Bearer realm="alert-bridge admin"'})
        if mutating:
            if request.content_type != "application/json":
                return _refuse(415, "unsupported_media_type", "send the body as Content-Type: application/json")
            if not isinstance(await _json_body(request), dict):
                return _refuse(400, "invalid_json", "send a JSON object as the body ({} when there is nothing to say)")
        return await handler(request)

    return guard


def admin_app(*, metrics: Scrape, reload: Reload, ready: ReadyCheck, silences: Silences | None = None,
              outbox: Outbox | None = None, token: str | None = None,
              metrics_public: bool = False, incidents: Incidents | None = None,
              console: Console | None = None) -> web.Application:
    """Metrics, reload, health, the silence and outbox APIs. Bind it to a private address only.

    With ``token`` every endpoint but the health probes (and ``/metrics`` when ``metrics_public``)
    needs ``Authorization: Bearer <token>``.
    """

    async def get_metrics(_: web.Request) -> web.Response:
        return web.Response(body=await metrics(), content_type="text/plain", charset="utf-8")

    async def post_reload(_: web.Request) -> web.Response:
        problems = await reload()
        if problems:
            return web.json_response({"status": "error", "errors": problems}, status=400)
        return web.json_response({"status": "reloaded"})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        reason = await ready()
        body: dict[str, Any] = {"status": "ready"} if reason is None else {"status": "not_ready", "reason": reason}
        return web.json_response(body, status=200 if reason is None else 503)

    public = frozenset({"/healthz", "/readyz", *(("/metrics",) if metrics_public else ())})
    app = web.Application(middlewares=[never_500, admin_guard(token, public=public, console=console)])
    app.router.add_get("/metrics", get_metrics)
    app.router.add_post("/-/reload", post_reload)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if silences is not None:
        _add_silence_routes(app, silences)
    if outbox is not None:
        _add_outbox_routes(app, outbox)
    if incidents is not None:
        _add_incident_routes(app, incidents)
    if console is not None:
        console.mount(app)
    return app


def _add_incident_routes(app: web.Application, api: Incidents) -> None:
    """``alert-bridge incidents`` and ``nodes`` talk to these while the bridge runs."""

    def missing(what: str) -> web.Response:
        return web.json_response({"error": "not_found", "detail": f"no open incident {what[:200]}"}, status=404)

    async def by_of(request: web.Request) -> str | web.Response:
        doc = await _json_body(request)
        by = doc.get("by", "admin") if isinstance(doc, dict) else "admin"
        if not isinstance(by, str) or not by.strip() or len(by) > 200:
            return web.json_response({"error": "invalid_request",
                                      "detail": '"by" must be a non-empty string of at most 200 characters'},
                                     status=400)
        return by

    async def list_(request: web.Request) -> web.Response:
        include = request.query.get("all", "").lower() in ("1", "true", "yes")
        return web.json_response({"incidents": await api.list_incidents(include_resolved=include)})

    async def show(request: web.Request) -> web.Response:
        iid = request.match_info["incident_id"]
        found = await api.get_incident(iid)
        if found is None:
            return web.json_response({"error": "not_found", "detail": f"no incident {iid[:200]}"}, status=404)
        return web.json_response({"incident": found})

    async def act(request: web.Request, ack: bool) -> web.Response:
        iid = request.match_info["incident_id"]
        by = await by_of(request)
        if isinstance(by, web.Response):
            return by
        status, view = await (api.ack_incident(iid, by) if ack else api.resolve_incident(iid, by))
        if status == "not_found":
            return missing(iid)
        return web.json_response({"status": status, "incident": view})

    async def ack(request: web.Request) -> web.Response:
        return await act(request, True)

    async def resolve(request: web.Request) -> web.Response:
        return await act(request, False)

    async def nodes(_: web.Request) -> web.Response:
        return web.json_response({"nodes": await api.list_nodes()})

    async def node(request: web.Request) -> web.Response:
        node_id = request.match_info["node_id"]
        doc = await api.node_record(node_id)
        if doc is None:
            return web.json_response({"error": "not_found", "detail": f"no record of node {node_id[:200]}"},
                                     status=404)
        return web.json_response(doc)

    async def forget(request: web.Request) -> web.Response:
        node = request.match_info["node_id"]
        if not await api.forget_node(node):
            return web.json_response({"error": "not_found", "detail": f"no record of node {node[:200]}"}, status=404)
        return web.json_response({"status": "forgotten", "node": node})

    app.router.add_get("/api/v1/incidents", list_)
    app.router.add_get("/api/v1/incidents/{incident_id}", show)
    app.router.add_post("/api/v1/incidents/{incident_id}/ack", ack)
    app.router.add_post("/api/v1/incidents/{incident_id}/resolve", resolve)
    app.router.add_get("/api/v1/nodes", nodes)
    app.router.add_get("/api/v1/nodes/{node_id}", node)
    app.router.add_post("/api/v1/nodes/{node_id}/forget", forget)


def _add_outbox_routes(app: web.Application, outbox: Outbox) -> None:
    """``alert-bridge deliveries`` talks to these while the bridge runs (SQLite allows one process)."""

    async def list_(request: web.Request) -> web.Response:
        state = request.query.get("state") or None
        if state not in (None, *DELIVERY_STATES):
            return web.json_response({"error": "invalid_state", "detail": f"state must be one of "
                                      f"{', '.join(DELIVERY_STATES)}"}, status=400)
        try:
            limit = max(1, min(10_000, int(request.query.get("limit", "100"))))
        except ValueError:
            return web.json_response({"error": "invalid_limit", "detail": "limit must be a number"}, status=400)
        found = await outbox.list_deliveries(state=state, limit=limit)
        return web.json_response({"deliveries": [d.summary() for d in found]})

    async def retry(request: web.Request) -> web.Response:
        doc = await _json_body(request)
        ids = doc.get("ids") if isinstance(doc, dict) else None
        if not (isinstance(doc, dict) and (doc.get("dead") is True or (
                isinstance(ids, list) and ids and all(isinstance(i, str) for i in ids)))):
            return web.json_response({"error": "invalid_request",
                                      "detail": 'send {"ids": ["dlv_..."]} or {"dead": true}'}, status=400)
        done = await outbox_ops.retry(outbox, None if doc.get("dead") is True else ids, now=datetime.now(UTC))
        return web.json_response({"retried": done.retried, "skipped": done.skipped_view(), "more": done.more})

    async def purge(_: web.Request) -> web.Response:
        return web.json_response({"purged": await outbox.purge_dead()})

    app.router.add_get("/-/deliveries", list_)
    app.router.add_post("/-/deliveries/retry", retry)
    app.router.add_post("/-/deliveries/purge-dead", purge)


async def _json_body(request: web.Request) -> Any:
    try:
        return json.loads(await request.read())
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None


def _add_silence_routes(app: web.Application, silences: Silences) -> None:
    async def list_(request: web.Request) -> web.Response:
        include = request.query.get("all", "").lower() in ("1", "true", "yes")
        found = await silences.list_silences(include_expired=include)
        return web.json_response({"silences": [s.to_dict() for s in found]})

    async def add(request: web.Request) -> web.Response:
        spec = await _json_body(request)
        if not isinstance(spec, dict):
            return web.json_response({"error": "invalid_json", "detail": "expected a JSON object"}, status=400)
        try:
            silence = await silences.add_silence(spec)
        except ValueError as exc:
            return web.json_response({"error": "invalid_silence", "detail": str(exc)}, status=422)
        return web.json_response({"silence": silence.to_dict()}, status=201)

    async def expire(request: web.Request) -> web.Response:
        silence_id = request.match_info["silence_id"]
        if not await silences.expire_silence(silence_id):
            return web.json_response({"error": "not_found", "detail": f"no silence {silence_id}"}, status=404)
        return web.json_response({"status": "expired", "id": silence_id})

    app.router.add_get("/-/silences", list_)
    app.router.add_post("/-/silences", add)
    app.router.add_post("/-/silences/{silence_id}/expire", expire)


def ssl_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    return ctx
