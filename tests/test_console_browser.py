"""The console in a real browser: headless Chromium (Debian's) driven by Selenium, against the real
``alert-bridge serve`` process. One browser for the module; every wait is bounded.

Selenium calls block, and the fakes (the webhook sink, the hostile page) run on this test's event
loop: every browser step runs in a thread (``step``) so they keep answering.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.fakes import LOOPBACK, free_port, wait_until
from tests.support.harness import BridgeProcess, ProbeSink

pytestmark = pytest.mark.timeout(180)

TOKEN = "browser-admin-token-0123456789"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--no-first-run", "--disable-extensions"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(20)
    driver.set_script_timeout(10)
    try:
        yield driver
    finally:
        driver.quit()


async def step(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


def wait_for(driver: WebDriver, condition: Any, timeout: float = 10.0) -> Any:
    return WebDriverWait(driver, timeout).until(condition)


def page_until(driver: WebDriver, url: str, text: str, timeout: float = 15.0) -> None:
    """Load ``url`` again until its <main> shows ``text`` (the bridge works in the background)."""
    def loaded(d: Any) -> bool:
        d.get(url)
        return text in d.find_element(By.ID, "main").text

    WebDriverWait(driver, timeout, poll_frequency=0.3).until(loaded)


async def test_operator_walkthrough(bridge_process: Callable[..., Any], browser: WebDriver,
                                    tmp_path: Path) -> None:
    hook_port = free_port()
    p: BridgeProcess = await bridge_process(
        server={"admin_token": TOKEN},
        node_labels=[{"match": ["web-*"], "labels": {"team": "web", "env": "prod"}}],
        receivers={"hook": {"type": "webhook", "url": f"http://{LOOPBACK}:{hook_port}/hook",
                            "retry": {"max_attempts": 1, "initial_backoff": "10ms"}}},
        routes=[{"name": "all", "to": ["hook"]}],
    )
    admin = p.admin_url
    d = browser
    shots = tmp_path / "screenshots"
    shots.mkdir()

    # no session: the login page
    await step(d.get, admin + "/fleet")
    assert d.current_url.endswith("/login") and d.find_element(By.ID, "token")
    await step(d.save_screenshot, str(shots / "1-login.png"))

    def log_in() -> None:
        d.find_element(By.ID, "token").send_keys(TOKEN)
        d.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()
        try:
            wait_for(d, ec.url_contains("/fleet"))
        except Exception:
            raise AssertionError(d.current_url + "\n" + d.page_source[:3000]) from None

    await step(log_in)
    assert "Fleet" in d.find_element(By.TAG_NAME, "h1").text

    # a signed event: the node appears, FAILED, with its labels
    status, _ = await p.event("web-1", "FAILED")
    assert status == 200
    await step(page_until, d, admin + "/fleet", "web-1")
    row = d.find_element(By.CSS_SELECTOR, "table.fleet tbody tr")
    assert "st-failed" in row.get_attribute("class") and "FAILED" in row.text and "team=web" in row.text
    await step(d.save_screenshot, str(shots / "2-fleet.png"))
    # the filters stay in the URL: a filter that excludes it, then one that keeps it
    await step(d.get, admin + "/fleet?status=RUNNING")
    assert "web-1" not in d.find_element(By.ID, "main").text
    await step(d.get, admin + "/fleet?label=team%3Dweb&q=web")
    assert "web-1" in d.find_element(By.ID, "main").text
    await step(d.set_window_size, 390, 844)  # a phone
    await step(d.save_screenshot, str(shots / "3-fleet-phone.png"))
    await step(d.set_window_size, 1280, 1000)

    # nothing listens at the receiver: the delivery is dead; retry it once something does
    await step(page_until, d, admin + "/outbox", "Retry all dead")
    assert "web-1" in d.find_element(By.CSS_SELECTOR, "table.dead").text
    await step(d.save_screenshot, str(shots / "4-outbox-dead.png"))
    async with ProbeSink(port=hook_port) as sink:
        await step(lambda: d.find_element(By.CSS_SELECTOR, "table.dead button").click())
        await step(wait_for, d, ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".flash"), "is due again"))
        await wait_until(lambda: len(sink.delivered) == 1, 15, "the retried delivery")
        await step(page_until, d, admin + "/outbox", "No dead deliveries")

        # the node's open incident, from the fleet page: acknowledge it, then resolve it
        def open_incident() -> None:
            d.get(admin + "/fleet")
            cell = d.find_element(By.CSS_SELECTOR, "table.fleet tbody tr td.incident")
            assert "not acknowledged" in cell.text, cell.text
            cell.find_element(By.TAG_NAME, "a").click()
            wait_for(d, ec.url_contains("/incidents/inc_"))
            assert "web-1" in d.find_element(By.TAG_NAME, "h1").text
            assert d.find_element(By.CSS_SELECTOR, "dd.acked").text == "no"
            notes = d.find_element(By.CSS_SELECTOR, "table.notifications").text
            assert "hook" in notes and "firing" in notes and "delivered" in notes, notes

        def press(button: str, flash: str) -> None:
            d.find_element(By.ID, "by").send_keys("night shift")
            d.find_element(By.ID, button).click()
            wait_for(d, ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".flash"), flash))

        await step(open_incident)
        incident_url = d.current_url
        await step(press, "ack", "Incident acknowledged by night shift")
        assert d.current_url == incident_url
        assert d.find_element(By.CSS_SELECTOR, "dd.acked").text.startswith("yes, by night shift")
        assert not d.find_elements(By.ID, "ack")
        await step(d.save_screenshot, str(shots / "5-incident-acked.png"))
        await step(d.get, admin + "/fleet")
        assert "acknowledged by night shift" in d.find_element(By.CSS_SELECTOR, "td.incident").text
        await step(d.get, incident_url)
        await step(press, "resolve", "Incident resolved by night shift")
        assert "by night shift" in d.find_element(By.CSS_SELECTOR, "dd.resolved").text
        assert not d.find_elements(By.ID, "resolve")
        # the firing, the ack (pagers acknowledge their alert) and the resolution
        await wait_until(lambda: len(sink.delivered) == 3, 15, "the ack and the resolution at the receiver")
        acked, resolution = (r.json() for r in sink.delivered[1:])
        assert acked["kind"] == "acknowledged" and acked["incident"]["id"] == incident_url.rsplit("/", 1)[1]
        assert resolution["kind"] == "resolved" and resolution["incident"]["id"] == incident_url.rsplit("/", 1)[1]

        def resolution_listed(drv: Any) -> bool:  # the timeline lists the ack's and resolution's jobs, delivered
            drv.get(incident_url)
            rows = drv.find_elements(By.CSS_SELECTOR, "table.notifications tbody tr")
            return (len(rows) == 3 and "acknowledged" in rows[1].text and "resolved" in rows[2].text
                    and all("delivered" in r.text for r in rows[1:]))

        await step(wait_for, d, resolution_listed, 15.0)
        await step(d.save_screenshot, str(shots / "6-incident-resolved.png"))
        await step(d.get, admin + "/fleet")
        assert "none" in d.find_element(By.CSS_SELECTOR, "td.incident").text

    # a silence, previewed first, then the next event is silenced
    def add_silence() -> None:
        d.get(admin + "/silences")
        d.find_element(By.ID, "node").send_keys("web-*")
        d.find_element(By.CSS_SELECTOR, "input[name=status][value=FAILED]").click()
        d.find_element(By.ID, "duration").clear()
        d.find_element(By.ID, "duration").send_keys("1h")
        d.find_element(By.ID, "comment").send_keys("maintenance <b>window</b>")
        d.find_element(By.CSS_SELECTOR, "button[formaction='/silences']").click()  # preview (GET)
        wait_for(d, ec.presence_of_element_located((By.CSS_SELECTOR, "ul.preview")))
        assert "web-1" in d.find_element(By.CSS_SELECTOR, "ul.preview").text
        d.find_element(By.XPATH, "//button[text()='Add silence']").click()
        wait_for(d, ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".flash"), "added for web-*"))

    await step(add_silence)
    assert "maintenance <b>window</b>" in d.find_element(By.ID, "main").text  # shown as text, not markup
    await step(d.save_screenshot, str(shots / "7-silences.png"))
    status, doc = await p.event("web-1", "FAILED")
    assert status == 200 and doc.get("silenced"), doc

    # a page on another origin posts a form at the console: refused, nothing added
    evil = web.Application()
    page = (f'<form id="f" method="post" action="{admin}/silences">'
            '<input name="node" value="*"><input name="duration" value="24h"><input name="csrf" value="x">'
            '</form><script>document.getElementById("f").submit()</script>')

    async def serve_evil(_: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    evil.router.add_get("/", serve_evil)
    runner = web.AppRunner(evil)
    await runner.setup()
    evil_port = free_port()
    await web.TCPSite(runner, LOOPBACK, evil_port).start()
    try:
        await step(d.get, f"http://{LOOPBACK}:{evil_port}/")
        await step(wait_for, d, ec.url_contains("/silences"))
        assert "403" in d.title or "403" in d.find_element(By.TAG_NAME, "body").text
    finally:
        await runner.cleanup()
    await step(d.get, admin + "/silences")
    assert d.find_element(By.ID, "main").text.count("Expire") == 1  # only ours

    # log out: the session is gone
    await step(lambda: d.find_element(By.XPATH, "//button[text()='Log out']").click())
    await step(wait_for, d, ec.url_contains("/login"))
    await step(d.get, admin + "/outbox")
    assert d.current_url.endswith("/login")
    await step(d.save_screenshot, str(shots / "8-logged-out.png"))
    assert len(list(shots.glob("*.png"))) == 8
