"""The console's pages and form actions. Reads and changes go through the backend (App).

Every form action answers 303 to a page (post/redirect/get) with a one-time message in the
session. Ack and Resolve call the backend's ``ack_incident``/``resolve_incident``, the admin
API's own (incident_ops through ``Store.apply``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bridge import incident_ops, outbox_ops
from bridge.console import redirect, set_session_cookie
from bridge.console.auth import LOGIN_COOKIE, SESSION, SESSION_COOKIE, Session, token_ok
from bridge.console.incidents import BY_MAX, INCIDENT_ID, incident_page, incident_row, operator_name
from bridge.console.views import (
    FleetFilter,
    fleet_view,
    masked_config,
    outbox_view,
    silence_preview,
    status_choices,
)
from bridge.ingest import Rules
from bridge.model import DELIVERY_STATES, Delivery, DeliveryState
from bridge.whatif import route_answer

if TYPE_CHECKING:
    from bridge.console import Console

OUTBOX_READ_LIMIT = 5000  # jobs read per state for the per-receiver counts
INCIDENT_JOBS_READ = 2000  # jobs read per state to find one incident's notifications


def add_routes(app: web.Application, console: Console) -> None:
    b = console.backend
    r = console.render
    rules_cache: dict[int, Rules] = {}

    def rules() -> Rules:
        cfg = b.config
        if id(cfg) not in rules_cache:  # compiled once per loaded config
            rules_cache.clear()
            rules_cache[id(cfg)] = Rules.from_config(cfg)
        return rules_cache[id(cfg)]

    def session(request: web.Request) -> Session:
        return request[SESSION]

    def flash(request: web.Request, kind: str, text: str) -> None:
        session(request).flash.append((kind, text))

    async def form(request: web.Request) -> dict[str, str]:
        data = await request.post()  # already read (and size-bounded) by the guard
        return {k: v for k, v in data.items() if isinstance(v, str)}

    # --- login --------------------------------------------------------------------------------

    def login_page(request: web.Request, error: str = "", status: int = 200) -> web.Response:
        nonce = console.sessions.login_nonce()
        resp = r.page(request, "login.html", status=status, login_csrf=console.sessions.login_csrf(nonce),
                      error=error)
        resp.set_cookie(LOGIN_COOKIE, nonce, path="/login", httponly=True, samesite="Strict",
                        secure=request.secure, max_age=3600)
        return resp

    async def get_login(request: web.Request) -> web.Response:
        if console.token is None or console.sessions.get(request.cookies.get(SESSION_COOKIE)):
            return redirect("/fleet")
        return login_page(request)

    async def post_login(request: web.Request) -> web.Response:
        if console.token is None:
            return redirect("/fleet")
        if request.content_type != "application/x-www-form-urlencoded":
            return r.refusal(request, 415, "The login form is sent as application/x-www-form-urlencoded.")
        data = await form(request)
        if not console.sessions.login_csrf_ok(request.cookies.get(LOGIN_COOKIE), data.get("csrf")):
            return r.refusal(request, 403, "The login form's CSRF token is missing or wrong. "
                             "Open the login page again and retry.")
        if not token_ok(console.token, data.get("token")):
            return login_page(request, "That is not the admin token (server.admin_token).", 401)
        console.sessions.end(request.cookies.get(SESSION_COOKIE))
        new = console.sessions.new()  # a fresh id at login: a planted cookie is worth nothing
        resp = redirect("/fleet")
        set_session_cookie(resp, request, new)
        resp.del_cookie(LOGIN_COOKIE, path="/login")
        return resp

    async def post_logout(request: web.Request) -> web.Response:
        console.sessions.end(session(request).id)
        resp = redirect("/login" if console.token else "/fleet")
        resp.del_cookie(SESSION_COOKIE, path="/")
        return resp

    # --- fleet --------------------------------------------------------------------------------

    async def get_fleet(request: web.Request) -> web.Response:
        flt = FleetFilter.from_query(request.query)
        view = fleet_view(await b.store.list_nodes(), rules().labeler.labels_for, flt, b.clock())
        return r.page(request, "fleet.html", view=view, flt=flt,
                      statuses=status_choices(s for s, _, _ in view.counts))

    # --- incidents ----------------------------------------------------------------------------

    async def get_incidents(request: web.Request) -> web.Response:
        include = request.query.get("all") == "1"
        now = b.clock()
        found = incident_ops.select(await b.store.list_nodes(), include_resolved=include)
        rows = [incident_row(i, now) for i in found]
        return r.page(request, "incidents.html", rows=rows, include_resolved=include)

    def no_incident(request: web.Request, iid: str) -> web.Response:
        return r.page(request, "incident.html", status=404, page=None, missing=iid[:120])

    async def get_incident(request: web.Request) -> web.Response:
        iid = request.match_info["incident_id"]
        hit = incident_ops.find(await b.store.list_nodes(), iid) if INCIDENT_ID.fullmatch(iid) else None
        if hit is None:
            return no_incident(request, iid)
        by_state: dict[str, list[Delivery]] = {
            s: await b.store.list_deliveries(state=s, limit=INCIDENT_JOBS_READ) for s in DELIVERY_STATES}
        page = incident_page(hit[1], by_state, b.clock(), limit=INCIDENT_JOBS_READ)
        return r.page(request, "incident.html", page=page, missing="")

    async def post_incident(request: web.Request, ack: bool) -> web.Response:
        iid = request.match_info["incident_id"]
        if not INCIDENT_ID.fullmatch(iid):  # never echoed into a Location header
            return no_incident(request, iid)
        by = operator_name((await form(request)).get("by"))
        if by is None:
            flash(request, "error", f"The name is longer than {BY_MAX} characters; nothing was done.")
            return redirect(f"/incidents/{iid}")
        status, _ = await (b.ack_incident(iid, by) if ack else b.resolve_incident(iid, by))
        text = {"acked": f"Incident acknowledged by {by}: reminders and escalations stop.",
                "already_acked": "The incident was already acknowledged.",
                "resolved": f"Incident resolved by {by}.",
                "not_found": "This incident is no longer open; nothing was done."}.get(status, status)
        flash(request, "ok" if status in ("acked", "resolved") else "error", text)
        return redirect(f"/incidents/{iid}")

    async def post_ack(request: web.Request) -> web.Response:
        return await post_incident(request, True)

    async def post_resolve(request: web.Request) -> web.Response:
        return await post_incident(request, False)

    # --- outbox -------------------------------------------------------------------------------

    async def get_outbox(request: web.Request) -> web.Response:
        now = b.clock()
        stats = await b.store.stats(now=now)
        states: tuple[DeliveryState, ...] = ("pending", "inflight", "dead")
        by_state: dict[str, list[Delivery]] = {
            s: await b.store.list_deliveries(state=s, limit=OUTBOX_READ_LIMIT) for s in states}
        view = outbox_view(stats, by_state, b.config.receivers, limit=OUTBOX_READ_LIMIT)
        return r.page(request, "outbox.html", view=view)

    async def post_retry(request: web.Request) -> web.Response:
        data = await form(request)
        now = datetime.now(UTC)
        if data.get("all") == "dead":
            done = await outbox_ops.retry(b.store, None, now=now)
            flash(request, "ok", f"{done.retried} dead deliveries are due again." + _skipped(done)
                  + (" More are dead than one retry reads: retry again." if done.more else ""))
        elif data.get("id", "").startswith("dlv_"):
            done = await outbox_ops.retry(b.store, [data["id"]], now=now)
            flash(request, "ok" if done.retried else "error",
                  f"Delivery {data['id']} is due again." if done.retried else
                  _skipped(done).strip() or f"No delivery {data['id']} to retry.")
        else:
            flash(request, "error", "Say which delivery to retry.")
        return redirect("/outbox")

    async def post_purge(request: web.Request) -> web.Response:
        n = await b.store.purge_dead()
        flash(request, "ok", f"{n} dead deliveries purged.")
        return redirect("/outbox")

    # --- silences -----------------------------------------------------------------------------

    async def silences_page(request: web.Request, spec: dict[str, Any], error: str = "",
                            status: int = 200) -> web.Response:
        include = request.query.get("all") == "1"
        found = await b.list_silences(include_expired=include)
        nodes = [rec.state for rec in await b.store.list_nodes()]
        chosen = spec.get("status") or []
        preview = silence_preview(str(spec.get("node", "")), chosen, nodes)
        return r.page(request, "silences.html", status=status, silences=found, include_expired=include,
                      now=b.clock(), spec=spec, chosen=chosen, preview=preview[:200], preview_total=len(preview),
                      error=error, statuses=status_choices(n.status for n in nodes))

    def spec_from(data: Any) -> dict[str, Any]:
        statuses = [s for s in data.getall("status", []) if isinstance(s, str) and s]
        return {"node": str(data.get("node", "")).strip(), "status": statuses,
                "duration": str(data.get("duration", "")).strip() or "2h", "comment": str(data.get("comment", ""))}

    async def get_silences(request: web.Request) -> web.Response:
        return await silences_page(request, spec_from(request.query))

    async def post_silence(request: web.Request) -> web.Response:
        spec = spec_from(await request.post())
        try:
            silence = await b.add_silence({**spec, "status": spec["status"] or None})
        except ValueError as exc:
            return await silences_page(request, spec, str(exc), 422)
        flash(request, "ok", f"Silence {silence.id} added for {silence.node} until "
              f"{silence.ends_at.strftime('%Y-%m-%d %H:%M')} UTC.")
        return redirect("/silences")

    async def post_expire(request: web.Request) -> web.Response:
        sid = request.match_info["silence_id"]
        found = await b.expire_silence(sid)
        flash(request, "ok" if found else "error", f"Silence {sid} expired." if found else f"No silence {sid}.")
        return redirect("/silences")

    # --- config -------------------------------------------------------------------------------

    async def get_config(request: web.Request) -> web.Response:
        q = request.query
        node, status = q.get("node", "").strip()[:256], q.get("status", "").strip().upper()[:64]
        answer = None
        if node and status:
            answer = route_answer(rules(), node, status, now=b.clock(),
                                  previous_status=q.get("previous", "").strip().upper()[:64] or None)
        return r.page(request, "config.html", config_text=masked_config(b.config), source=b.config.source,
                      reload=b.last_reload, answer=answer, node=node, wstatus=status,
                      previous=q.get("previous", "")[:64], statuses=status_choices())

    async def home(_: web.Request) -> web.Response:
        return redirect("/fleet")

    app.router.add_get("/", home)
    app.router.add_get("/login", get_login)
    app.router.add_post("/login", post_login)
    app.router.add_post("/logout", post_logout)
    app.router.add_get("/fleet", get_fleet)
    app.router.add_get("/incidents", get_incidents)
    app.router.add_get("/incidents/{incident_id}", get_incident)
    app.router.add_post("/incidents/{incident_id}/ack", post_ack)
    app.router.add_post("/incidents/{incident_id}/resolve", post_resolve)
    app.router.add_get("/outbox", get_outbox)
    app.router.add_post("/outbox/retry", post_retry)
    app.router.add_post("/outbox/purge", post_purge)
    app.router.add_get("/silences", get_silences)
    app.router.add_post("/silences", post_silence)
    app.router.add_post("/silences/{silence_id}/expire", post_expire)
    app.router.add_get("/config", get_config)
    app.router.add_get("/static/{name}", r.serve_static)


def _skipped(done: outbox_ops.Retried) -> str:
    if not done.skipped:
        return ""
    n = len(done.skipped)
    return (f" {n} {'was' if n == 1 else 'were'} left dead: what {'it says is' if n == 1 else 'they say is'} "
            "over (an incident resolved, a flapping episode ended), and sent now it would re-open the page.")
