"""The operator console over HTTP (the bridge in-process): login, sessions, CSRF, escaping, secrets.

What a browser does with the pages is in tests/test_console_browser.py.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from bridge.console.auth import SESSION_COOKIE
from tests.support.fakes import LOOPBACK, WebhookSink, free_port, wait_until
from tests.support.harness import InProcessBridge

pytestmark = pytest.mark.timeout(60)

TOKEN = "console-admin-token-0123456789"
HOSTILE = '<script>alert("x")</script>\'"&'


def csrf_of(page: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    assert m, "no CSRF field in the page"
    return m.group(1)


def session() -> aiohttp.ClientSession:
    # unsafe: the cookie jar keeps cookies for IP-address hosts (127.0.0.1)
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def login(s: aiohttp.ClientSession, admin: str, token: str = TOKEN) -> aiohttp.ClientResponse:
    async with s.get(admin + "/login") as r:
        page = await r.text()
    async with s.post(admin + "/login", data={"csrf": csrf_of(page), "token": token}, allow_redirects=False) as r:
        await r.read()
        return r


async def test_pages_need_a_session_and_login_gives_one(bridge: Callable[..., Any]) -> None:
    b: InProcessBridge = await bridge(server={"admin_token": TOKEN})
    async with session() as s:
        for path in ("/", "/fleet", "/outbox", "/silences", "/config"):
            async with s.get(b.admin_url + path, allow_redirects=False) as r:
                assert r.status == 303, path
                assert r.headers["Location"] in ("/login", "/fleet")
        async with s.get(b.admin_url + "/fleet") as r:  # followed: the login page
            page = await r.text()
            assert r.url.path == "/login" and 'name="token"' in page and "Fleet</h1>" not in page

        wrong = await login(s, b.admin_url, "not-the-token-at-all-000")
        assert wrong.status == 401
        async with s.get(b.admin_url + "/fleet", allow_redirects=False) as r:
            assert r.status == 303

        ok = await login(s, b.admin_url)
        assert ok.status == 303 and ok.headers["Location"] == "/fleet"
        cookie = ok.cookies[SESSION_COOKIE]
        assert cookie["httponly"] and cookie["samesite"] == "Strict" and not cookie["secure"]  # plain HTTP here
        assert TOKEN not in cookie.value
        for path in ("/fleet", "/outbox", "/silences", "/config"):
            async with s.get(b.admin_url + path) as r:
                assert r.status == 200, path
                assert "default-src 'none'" in r.headers["Content-Security-Policy"]
                assert TOKEN not in await r.text()

        # the JSON API keeps its own rule: a console session is not a bearer token
        async with s.get(b.admin_url + "/-/silences") as r:
            assert r.status == 401

        async with s.get(b.admin_url + "/fleet") as r:
            csrf = csrf_of(await r.text())
        async with s.post(b.admin_url + "/logout", data={"csrf": csrf}, allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/login"
        async with s.get(b.admin_url + "/fleet", allow_redirects=False) as r:
            assert r.status == 303  # the session is gone server-side, not only the cookie


async def test_forged_form_posts_are_refused(bridge: Callable[..., Any]) -> None:
    b: InProcessBridge = await bridge(server={"admin_token": TOKEN})
    silence = {"node": "n1", "duration": "1h", "comment": "forged"}
    async with session() as s:
        await login(s, b.admin_url)
        async with s.get(b.admin_url + "/silences") as r:
            csrf = csrf_of(await r.text())
        cases: list[tuple[str, dict[str, str], dict[str, str]]] = [
            ("no CSRF token", silence, {}),
            ("wrong CSRF token", {**silence, "csrf": csrf[:-2] + "xx"}, {}),
            ("foreign Origin", {**silence, "csrf": csrf}, {"Origin": "https://evil.example"}),
        ]
        for what, data, headers in cases:
            async with s.post(b.admin_url + "/silences", data=data, headers=headers, allow_redirects=False) as r:
                assert r.status == 403, what
        async with s.post(b.admin_url + "/outbox/purge", data={}, allow_redirects=False) as r:
            assert r.status == 403
        # JSON to a form action is not a form (and carries no CSRF token)
        async with s.post(b.admin_url + "/silences", json={**silence, "csrf": csrf}, allow_redirects=False) as r:
            assert r.status == 415
        assert await b.app.list_silences() == []
        # the same form with its token works
        async with s.post(b.admin_url + "/silences", data={**silence, "csrf": csrf}, allow_redirects=False) as r:
            assert r.status == 303
        assert [x.comment for x in await b.app.list_silences()] == ["forged"]
    # without a session at all (another browser)
    async with session() as s:
        async with s.post(b.admin_url + "/silences", data={**silence, "csrf": csrf}, allow_redirects=False) as r:
            assert r.status == 403
        async with s.get(b.admin_url + "/login") as r:
            await r.read()
        async with s.post(b.admin_url + "/login", data={"token": TOKEN}, allow_redirects=False) as r:
            assert r.status == 403  # the login form has a CSRF token too
    # a form post to the JSON API is refused as before (bearer first, then JSON only)
    async with aiohttp.ClientSession() as s, s.post(b.admin_url + "/-/silences", data=silence) as r:
        assert r.status == 401


async def test_without_a_token_the_console_is_open_but_forms_need_csrf(bridge: Callable[..., Any]) -> None:
    b: InProcessBridge = await bridge()
    async with session() as s:
        async with s.get(b.admin_url + "/login", allow_redirects=False) as r:
            assert r.status == 303
        async with s.get(b.admin_url + "/silences") as r:
            assert r.status == 200
            page = await r.text()
            assert "Log out" not in page
        async with s.post(b.admin_url + "/silences", data={"node": "x", "duration": "1h"},
                          allow_redirects=False) as r:
            assert r.status == 403
        async with s.post(b.admin_url + "/silences", data={"node": "x", "duration": "1h", "csrf": csrf_of(page)},
                          allow_redirects=False) as r:
            assert r.status == 303
    assert [x.node for x in await b.app.list_silences()] == ["x"]


async def test_hostile_values_are_escaped_on_every_page(bridge: Callable[..., Any]) -> None:
    fast = {"max_attempts": 1, "initial_backoff": "10ms"}
    b: InProcessBridge = await bridge(
        receivers={"down": {"type": "webhook", "url": f"http://{LOOPBACK}:{free_port()}/", "retry": fast}},
        routes=[{"name": "all", "to": ["down"]}],
        node_labels=[{"match": ["*"], "labels": {"team": HOSTILE}}],
    )
    status, _ = await b.event(HOSTILE, "FAILED")
    assert status == 200
    status, _ = await b.event("n2", HOSTILE)
    assert status == 200
    async with session() as s:
        for _ in range(100):
            async with s.get(b.admin_url + "/outbox") as r:
                page = await r.text()
            if "Retry all dead" in page:
                break
            await asyncio.sleep(0.05)
        pages = [page]
        for path in ("/fleet", f"/silences?node={HOSTILE[:8]}*", f"/config?node={HOSTILE}&status={HOSTILE}"):
            async with s.get(b.admin_url + path, params=None) as r:
                assert r.status == 200, path
                pages.append(await r.text())
    for page in pages:
        assert "<script>" not in page
        assert HOSTILE not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in pages[1]  # the node and its label, escaped
    assert "Retry all dead" in pages[0]


async def test_config_page_renders_no_secret(bridge: Callable[..., Any], tmp_path: Any) -> None:
    secrets = {
        "admin": TOKEN,
        "slack": "https://hooks.slack.com/services/T000/B000/slacksecretvalue1234",
        "hook_url": "https://hooks.example/path?token=querysecret5678",
        "header": "Bearer headersecret9012",
        "signing": "whsec_c2lnbmluZ3NlY3JldDEyMzQ1Njc4",
        "smtp": "smtp-pass-<&>\"-3456",
    }
    async with WebhookSink() as sink:
        b: InProcessBridge = await bridge(
            server={"admin_token": secrets["admin"]},
            receivers={
                "slack": {"type": "slack", "webhook_url": secrets["slack"]},
                "hook": {"type": "webhook", "url": secrets["hook_url"], "signing_secret": secrets["signing"],
                         "headers": {"Authorization": secrets["header"]}},
                "mail": {"type": "email", "from": "a@example.com", "to": ["b@example.com"],
                         "smtp": {"host": "127.0.0.1", "port": free_port(), "security": "none",
                                  "username": "u", "password": secrets["smtp"]}},
                "sink": {"type": "webhook", "url": sink.url},
            },
            routes=[{"name": "all", "to": ["sink"]}],
        )
        async with session() as s:
            await login(s, b.admin_url, secrets["admin"])
            async with s.get(b.admin_url + "/config", params={"node": "n1", "status": "FAILED"}) as r:
                page = await r.text()
    assert "Loaded config" in page and "slack" in page and "**********" in page
    assert "MATCH</strong> all" in page and "sink (via all)" in page  # the what-if box answered
    for name, value in secrets.items():
        for part in {value, value.split("?")[0], "slacksecretvalue1234", "querysecret5678", "headersecret9012",
                     "smtp-pass-&lt;&amp;&gt;"}:
            if part in value or name == "smtp":
                assert part not in page, (name, part)


async def open_incident(b: InProcessBridge, node: str) -> str:
    status, _ = await b.event(node, "FAILED")
    assert status == 200
    found = await b.app.list_incidents(include_resolved=False)
    ids = [i["id"] for i in found if i["node"] == node]
    assert len(ids) == 1, found
    return str(ids[0])


async def test_incident_pages_list_and_show_escaped(bridge: Callable[..., Any]) -> None:
    async with WebhookSink() as sink:
        b: InProcessBridge = await bridge(server={"admin_token": TOKEN},
                                          receivers={"sink": {"type": "webhook", "url": sink.url}},
                                          routes=[{"name": "all", "to": ["sink"]}])
        iid = await open_incident(b, HOSTILE)
        await wait_until(lambda: len(sink.delivered) == 1, 10, "the firing notification")
        status, _ = await b.event(HOSTILE, "STARTING")  # still open (resolve_on: RUNNING): a second step
        assert status == 200
        async with session() as s:
            async with s.get(b.admin_url + f"/incidents/{iid}", allow_redirects=False) as r:
                assert r.status == 303 and r.headers["Location"] == "/login"  # same auth as every page
            await login(s, b.admin_url)
            pages: dict[str, str] = {}
            for path in ("/fleet", "/incidents", f"/incidents/{iid}"):
                async with s.get(b.admin_url + path) as r:
                    assert r.status == 200, path
                    assert "default-src 'none'" in r.headers["Content-Security-Policy"]
                    pages[path] = await r.text()
            async with s.get(b.admin_url + "/incidents/inc_0000000000000000000a") as r:
                assert r.status == 404 and "No incident" in await r.text()
            async with s.get(b.admin_url + "/incidents/%3Cscript%3Ex") as r:
                assert r.status == 404
                assert "<script>x" not in await r.text()
    for path, page in pages.items():
        assert "<script>" not in page and HOSTILE not in page and TOKEN not in page, path
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page, path
    fleet, listing, detail = pages["/fleet"], pages["/incidents"], pages[f"/incidents/{iid}"]
    assert f'href="/incidents/{iid}"' in fleet and "not acknowledged" in fleet and "STARTING for " in fleet
    assert f'href="/incidents/{iid}"' in listing
    # the timeline: the path with its durations, the firing notification with its outcome
    path_table = detail[detail.index('<table class="path"'):detail.index("</table>", detail.index('class="path"'))]
    assert path_table.index("FAILED") < path_table.index("STARTING") and path_table.count("so far") == 1
    notes = detail[detail.index('<table class="notifications"'):]
    notes = notes[:notes.index("</table>")]
    assert "sink" in notes and "firing" in notes and "delivered" in notes and "<td>1</td>" in notes
    assert 'action="/incidents/' + iid + '/ack"' in detail and 'formaction="/incidents/' + iid + '/resolve"' in detail


async def test_ack_and_resolve_forms_need_the_csrf_token(bridge: Callable[..., Any]) -> None:
    async with WebhookSink() as sink:
        b: InProcessBridge = await bridge(server={"admin_token": TOKEN},
                                          receivers={"sink": {"type": "webhook", "url": sink.url}},
                                          routes=[{"name": "all", "to": ["sink"]}])
        iid = await open_incident(b, "n-ack")
        await wait_until(lambda: len(sink.delivered) == 1, 10, "the firing notification")
        base = f"{b.admin_url}/incidents/{iid}"
        async with session() as s:
            await login(s, b.admin_url)
            async with s.get(base) as r:
                csrf = csrf_of(await r.text())
            for action in ("ack", "resolve"):
                for what, data in (("no token", {"by": "mallory"}), ("wrong token", {"csrf": csrf[:-2] + "xx"})):
                    async with s.post(f"{base}/{action}", data=data, allow_redirects=False) as r:
                        assert r.status == 403, (action, what)
                async with s.post(f"{base}/{action}", data={"csrf": csrf},
                                  headers={"Origin": "https://evil.example"}, allow_redirects=False) as r:
                    assert r.status == 403, (action, "foreign Origin")
            inc = await b.app.get_incident(iid)
            assert inc is not None and inc["state"] == "open" and inc["acked_at"] is None

            async with s.post(f"{base}/ack", data={"csrf": csrf, "by": "ops <b>on call</b>\r\nX: y"},
                              allow_redirects=False) as r:
                assert r.status == 303 and r.headers["Location"] == f"/incidents/{iid}"
            inc = await b.app.get_incident(iid)
            assert inc is not None and inc["acked_by"] == "ops <b>on call</b> X: y"  # one line, stored as typed
            async with s.get(base) as r:
                page = await r.text()
            assert "Incident acknowledged by ops &lt;b&gt;on call&lt;/b&gt; X: y" in page  # the flash, escaped
            assert "<b>on call</b>" not in page and 'id="ack"' not in page and 'id="resolve"' in page
            async with s.post(f"{base}/ack", data={"csrf": csrf}, allow_redirects=False) as r:
                assert r.status == 303
            async with s.get(base) as r:
                assert "already acknowledged" in await r.text()

            async with s.post(f"{base}/resolve", data={"csrf": csrf, "by": "x" * 201}, allow_redirects=False) as r:
                assert r.status == 303
            async with s.get(base) as r:
                assert "longer than 200 characters" in await r.text()
            assert (await b.app.get_incident(iid) or {})["state"] == "open"

            async with s.post(f"{base}/resolve", data={"csrf": csrf}, allow_redirects=False) as r:
                assert r.status == 303
            inc = await b.app.get_incident(iid)
            assert inc is not None and inc["state"] == "resolved" and inc["resolved_by"] == "console"
            await wait_until(lambda: len(sink.delivered) == 3, 10, "the ack and the resolution")
            assert [d.json()["kind"] for d in sink.delivered] == ["firing", "acknowledged", "resolved"]
            async with s.get(base) as r:
                page = await r.text()
            assert "Incident resolved by console." in page and 'id="resolve"' not in page
            notes = page[page.index('<table class="notifications"'):]
            assert "firing" in notes and "resolved" in notes
            # resolved: gone from the open list, shown with "show resolved"
            async with s.get(b.admin_url + "/incidents") as r:
                assert iid not in await r.text()
            async with s.get(b.admin_url + "/incidents?all=1") as r:
                assert iid in await r.text()
            async with s.post(f"{base}/resolve", data={"csrf": csrf}, allow_redirects=False) as r:
                assert r.status == 303
            async with s.get(base) as r:
                assert "no longer open; nothing was done" in await r.text()
            # a malformed id is no incident (and never reaches a Location header)
            async with s.post(b.admin_url + "/incidents/inc_x%0d%0aSet-Cookie:%20a=b/ack", data={"csrf": csrf},
                              allow_redirects=False) as r:
                assert r.status == 404 and "Set-Cookie" not in r.headers
