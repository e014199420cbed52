"""The web page in a real headless chromium (Debian's), live from a simulated charger: the text
follows a session without a reload, a logged-in person stops it, and a screenshot is kept."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import re
import shutil
import threading
from decimal import Decimal
from pathlib import Path

import pytest

from evsed import protocol as p
from evsed import config
from evsed.core.tariff import DriverPrice, Tariff
from evsed.store.sessions import LiveSession, Store
from evsed.web.demo import DemoLink, demo_config
from evsed.web.settings import hash_password, parse
from evsed.web.service import WebService
from test_daemon import ask, write_config
from test_web_controls import web_on_daemon

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PASSWORD = "correct horse"
PASSWORD_HASH = hash_password(PASSWORD, "pbkdf2")
# the rules in force the owner's page shows: cards, groups, time windows, and a site meter for solar
RULES = """
[[card]]
uid = "04A1B2C3"
name = "Alice"
group = "family"
[[card]]
uid = "04D4E5F6"
name = "Bob"
group = "family"
[[card]]
uid = "0A0B0C0D"
name = "Visitor"
group = "guests"
[[group]]
name = "family"
[[group]]
name = "guests"
max_current_a = 10
[[window]]
name = "evening peak"
days = "mon-fri"
start = "17:00"
end = "20:00"
action = "forbid"
groups = ["guests"]
[[window]]
name = "midday sun"
start = "11:00"
end = "15:00"
action = "mode"
mode = "min+solar"
[site.meter]
backend = "sim"
"""


class Server:
    """The web service on its own event loop thread, with the demo charger behind it."""

    def __init__(self, state_dir: Path):
        self.config = demo_config(state_dir, f'password_hash = "{PASSWORD_HASH}"', extra=RULES)
        self.loop = asyncio.new_event_loop()
        self.link: DemoLink
        self.service: WebService
        self._thread = threading.Thread(target=self.loop.run_forever, name="web-test", daemon=True)
        self._thread.start()

        async def start():
            self.link = DemoLink(charger="Garage")
            self.service = WebService(self.config, self.link, parse(self.config))
            await self.service.start(port=0)
            self._task = asyncio.create_task(self.service.live.run())

        self.call(start)
        self.url = self.service.url

    def call(self, fn, *args, **kwargs):
        """Run fn in the server's loop (the demo charger is not thread-safe) and wait for it."""
        async def run():
            result = fn(*args, **kwargs)
            return await result if asyncio.iscoroutine(result) else result
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def close(self):
        async def stop():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):  # finished here, not destroyed pending
                await self._task  # at a later test's garbage collection, on its stderr
            await self.service.stop()
        self.call(stop)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


def _past_sessions(db: Path) -> None:
    store = Store(db)
    now = dt.datetime.now(dt.timezone.utc)
    pricing = Tariff(name="home", energy_per_kwh=Decimal("0.24"),
                     prices={"family": DriverPrice("family", per_kwh=Decimal("0.35"))}).pricing("family", "Europe/Amsterdam")
    for k, (name, tag, wh) in enumerate([("Alice", "04A1B2C3", 18400), ("Bob", "04D4E5F6", 9100),
                                         ("Alice", "04A1B2C3", 22700)]):
        start = now - dt.timedelta(days=k, hours=3)
        s = LiveSession(1, tag, name, "family", "local", start.isoformat(timespec="seconds"), 1000, 1000,
                        pricing=pricing.to_json())
        store.start(s)
        store.stop(s.row_id, 1000 + wh, 7300.0, "ev_disconnected",
                   (start + dt.timedelta(hours=2)).isoformat(timespec="seconds"))
    store.close()


@pytest.fixture
def server(tmp_path):
    _past_sessions(tmp_path / "sessions.db")
    srv = Server(tmp_path)
    yield srv
    srv.close()


def _need_browser() -> None:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt-get install -y chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        pytest.fail("the playwright package is missing: `make test` installs '.[test]' into .venv")


@pytest.fixture
def page(tmp_path):
    _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=ARGS,
            viewport={"width": 1100, "height": 900}, device_scale_factor=1)
        try:
            yield context.new_page()
        finally:
            context.close()


def _charge(server: Server, minutes: int = 0) -> None:
    """A session on connector 1 that has run for minutes, sampled every minute: a ramp, 16 A on
    three phases, then the taper of a battery nearly full."""
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=minutes)
    server.call(server.link.plug, 1)
    server.call(server.link.start, 1, "04A1B2C3", "Alice", at=start)
    energy_wh = 0.0
    for m in range(minutes + 1):
        amps = min(16.0, 8.0 * m, 16.0 - 0.6 * max(0, m - (minutes - 10)))
        phases = [amps, round(amps - 0.3, 1) if amps else 0.0, round(amps + 0.2, 1) if amps else 0.0]
        power = round(sum(a * 230 for a in phases))
        energy_wh += power / 60
        server.call(server.link.sample, 1, power, phases, int(energy_wh), at=start + dt.timedelta(minutes=m),
                    price=round(0.32 * energy_wh / 1000, 2), currency="EUR")


def test_page_follows_a_session_live_without_reload(server, page):
    from playwright.sync_api import expect

    page.goto(server.url)
    headline = page.locator("[data-connector='1'] .headline")
    expect(headline).to_have_text("Available")
    expect(page.locator("#link")).to_have_text("live")
    page.evaluate("window.notReloaded = true")

    server.call(server.link.plug, 1)
    expect(headline).to_have_text("Waiting for a card")
    server.call(server.link.start, 1, "04A1B2C3", "Alice")
    server.call(server.link.sample, 1, 7200.0, [10.4, 10.4, 10.4], 12400, price=3.10, currency="EUR")
    expect(headline).to_have_text("Charging 7.2 kW, 12.4 kWh, €3.10 so far")
    expect(page.locator("[data-connector='1'] .detail")).to_contain_text("Card Alice")
    server.call(server.link.sample, 1, 11000.0, [16.0, 16.0, 15.8], 12600, price=3.15, currency="EUR")
    expect(headline).to_have_text("Charging 11.0 kW, 12.6 kWh, €3.15 so far")
    expect(page.locator("#today-kwh")).not_to_have_text("–")

    server.call(server.link.limit, 1, "window", 0)
    server.call(server.link._set, 1, status="SuspendedEVSE", reason="current limit 0 A is below 6 A")
    expect(headline).to_have_text("Paused by time window")
    server.call(server.link.stop, 1)
    expect(headline).to_have_text("Session ended; unplug the EV")
    server.call(server.link.unplug, 1)
    expect(headline).to_have_text("Available")
    assert page.evaluate("window.notReloaded") is True


def test_logged_in_person_stops_a_session(server, page):
    from playwright.sync_api import expect

    _charge(server, minutes=5)
    page.goto(server.url)
    headline = page.locator("[data-connector='1'] .headline")
    expect(headline).to_contain_text("Charging")
    stop = page.get_by_role("button", name="Stop charging")
    expect(stop).to_be_hidden()

    page.get_by_role("button", name="Log in").click()
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Log in").last.click()
    expect(page.locator("#login-error")).to_have_text("wrong password")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").last.click()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    expect(page.locator("[data-connector='1'] .detail")).to_contain_text("Card Alice")

    stop.click()
    expect(headline).to_have_text("Session ended; unplug the EV")
    assert p.RemoteStop(connector=1, reason="remote") in server.link.commands


def _log_in(page, button: str = "Log in", password: str = "Password", done: str = "Log out") -> None:
    from playwright.sync_api import expect

    page.get_by_role("button", name=button).click()
    page.get_by_label(password).fill(PASSWORD)
    page.get_by_role("button", name=button).last.click()
    expect(page.get_by_role("button", name=done)).to_be_visible()


def _screenshot(page, path: Path) -> None:
    """The whole page, without the passing "Logged in" notice over it."""
    page.evaluate("document.querySelector('#toast').hidden = true")
    page.screenshot(path=str(path), full_page=True)


def test_charging_page_screenshot(server, page, tmp_path):
    """Logged in, in min+solar with a site meter: the controls, the solar view and the rules in force."""
    from playwright.sync_api import expect

    _charge(server, minutes=45)
    server.link.mode = "min+solar"
    server.call(server.link.limit, 1, "solar", 13)
    server.call(server.link.limit, 1, "web", 20)
    server.call(server.link.site, 900.0, 5200.0)  # the house 0.9 kW, the sun 5.2 kW
    page.goto(server.url)
    _log_in(page)
    expect(page.locator("[data-connector='1'] .headline")).to_have_text(
        re.compile(r"^Charging \d+\.\d kW, \d+\.\d kWh, €\d+\.\d\d so far$"))
    expect(page.locator("#mode")).to_have_value("min+solar")
    expect(page.locator("#solar")).to_be_visible()
    expect(page.locator("#solar-surplus")).to_have_text("4.3 kW")  # the sun less the house
    expect(page.get_by_role("button", name="Stop charging")).to_be_visible()
    expect(page.locator("[data-connector='1'] .limit-value")).to_have_text("20 A")
    expect(page.locator("#rules-cards tr")).to_have_count(4)  # header and three cards
    expect(page.locator("#rules-windows tr")).to_have_count(3)  # header, the forbid and the mode window
    expect(page.locator("#rules-windows tr").nth(2)).to_contain_text("mode min+solar")
    expect(page.locator("#sessions tr")).to_have_count(4)  # header and the three past sessions (the demo stores none)
    expect(page.locator("#report tr")).to_have_count(4)
    page.wait_for_function("document.querySelector('#usage-day').complete && "
                           "document.querySelector('#usage-hour').complete")
    shot = tmp_path / "web-charging.png"
    _screenshot(page, shot)
    assert shot.stat().st_size > 10_000
    if os.environ.get("EVSED_WEB_SCREENSHOT"):  # `make web-screenshot` refreshes docs/web.png
        shutil.copy(shot, os.environ["EVSED_WEB_SCREENSHOT"])


def test_page_follows_the_real_daemon_and_stops_its_session(tmp_path):
    """End to end: the daemon on the simulator, the web service on the real Link and the browser,
    all on this thread's loop (the daemon wants the main thread for its signal handlers)."""
    _need_browser()
    from playwright.async_api import async_playwright, expect

    cfg = config.load(write_config(tmp_path, f'\n[web]\npassword_hash = "{PASSWORD_HASH}"\n'))

    async def scenario():
        async with web_on_daemon(cfg) as (daemon, service), async_playwright() as pw:
            browser = await pw.chromium.launch_persistent_context(
                str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=ARGS)
            try:
                page = await browser.new_page()
                await page.goto(service.url)
                headline = page.locator("[data-connector='1'] .headline")
                await expect(headline).to_have_text("Available")
                await page.evaluate("window.notReloaded = true")
                await ask(cfg, p.Plug())
                await expect(headline).to_have_text("Waiting for a card")
                await ask(cfg, p.Tap(card="04A1B2C3"))
                await expect(headline).to_have_text(re.compile(r"^Charging 11\.\d kW, \d+\.\d kWh so far$"))
                await expect(page.locator("[data-connector='1'] .detail")).to_contain_text("Card Alice")
                await expect(page.locator("[data-connector='1'] .plot-box")).to_be_visible()  # live samples

                await page.get_by_role("button", name="Log in").click()
                await page.get_by_label("Password").fill(PASSWORD)
                await page.get_by_role("button", name="Log in").last.click()
                await page.get_by_role("button", name="Stop charging").click()
                await expect(headline).to_have_text("Session ended; unplug the EV")
                await ask(cfg, p.Unplug())
                await expect(headline).to_have_text("Available")
                await expect(page.locator("#sessions tr")).to_have_count(2)  # header, the stored session
                await expect(page.locator("#sessions tr").nth(1)).to_contain_text("remote")
                assert await page.evaluate("window.notReloaded") is True
            finally:
                await browser.close()

    asyncio.run(scenario())


@pytest.fixture
def phone(tmp_path):
    """A 390 px wide phone (an iPhone 12-15's CSS width), German-speaking."""
    _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "phone-profile"), executable_path=CHROMIUM, headless=True, args=ARGS,
            viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True,
            locale="de-DE")
        try:
            yield context.new_page()
        finally:
            context.close()


def test_on_a_phone_nothing_is_wider_than_the_screen_and_the_records_keep_card_and_kwh(server, phone, tmp_path):
    from playwright.sync_api import expect

    _charge(server, minutes=20)
    phone.goto(server.url)
    expect(phone.locator("[data-connector='1'] .headline")).to_contain_text("Lädt mit")  # German, from the locale
    expect(phone.locator("[data-connector='1'] .badge")).to_have_text("Lädt · Zustand C")  # the status too, not "Charging"
    _log_in(phone, "Anmelden", "Passwort", "Abmelden")
    expect(phone.locator("[data-connector='1'] .reserve")).to_be_visible()  # the row that made it scroll sideways
    expect(phone.locator("#rules")).to_be_visible()
    for table, rows in (("#rules-cards", 4), ("#rules-groups", 3), ("#rules-windows", 3)):  # and their headers
        expect(phone.locator(f"{table} tr")).to_have_count(rows)
    expect(phone.locator("#sessions tr")).to_have_count(4)
    phone.wait_for_function("document.querySelector('#usage-day').complete")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    for cell in ("#sessions tr:nth-child(2) td:nth-child(2)", "#sessions tr:nth-child(2) td:nth-child(3)"):
        box = phone.locator(cell).bounding_box()  # the card and its kWh, without scrolling the table
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
    # the charts' labels as drawn: the SVG's type size times its scale on this screen
    from evsed.web import charts
    shown = phone.evaluate("document.querySelector('#usage-day').clientWidth")
    assert shown / charts.WIDTH * charts.FONT_PX >= 10
    for field in phone.locator("input:visible, select:visible").all():  # every input has a label
        assert field.evaluate("e => e.labels.length > 0 || !!e.getAttribute('aria-label')")
    shot = tmp_path / "web-phone.png"
    _screenshot(phone, shot)
    if os.environ.get("EVSED_WEB_SCREENSHOT_PHONE"):  # `make web-screenshot` refreshes docs/web-phone.png
        shutil.copy(shot, os.environ["EVSED_WEB_SCREENSHOT_PHONE"])


def test_the_owner_learns_a_card_on_the_page_and_it_lands_in_the_config_file(tmp_path):
    """Log in, "Learn a card", tap it on the (simulated) reader, name it, pick its group, save: the
    daemon appends it to the config file and reloads; the rules table shows it."""
    _need_browser()
    from playwright.async_api import async_playwright, expect

    path = write_config(tmp_path, f'\n[web]\npassword_hash = "{PASSWORD_HASH}"\n')
    cfg = config.load(path)

    async def scenario():
        async with web_on_daemon(cfg) as (daemon, service), async_playwright() as pw:
            browser = await pw.chromium.launch_persistent_context(
                str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=ARGS)
            try:
                page = await browser.new_page()
                await page.goto(service.url)
                await page.get_by_role("button", name="Log in").click()
                await page.get_by_label("Password").fill(PASSWORD)
                await page.get_by_role("button", name="Log in").last.click()
                await expect(page.locator("#rules")).to_be_visible()
                await page.get_by_role("button", name="Learn a card").click()
                await expect(page.locator("#learn-status")).to_have_text("Tap the new card on the reader now.")
                await ask(cfg, p.Tap(card="0e:0f:10:11"))
                await expect(page.locator("#learn-uid")).to_have_text("0E0F1011")
                await page.get_by_label("Name").fill("Dana")
                await page.get_by_label("Group").select_option("family")
                await page.get_by_role("button", name="Save").click()
                await expect(page.locator("#rules-cards")).to_contain_text("Dana")
            finally:
                await browser.close()

    asyncio.run(scenario())
    assert path.read_text().endswith('[[card]]\nuid = "0E0F1011"\nname = "Dana"\ngroup = "family"\n')


def test_the_owner_picks_min_solar_on_the_page_and_it_shows_the_surplus_the_ev_and_the_grids_share(tmp_path):
    """The daemon on the simulator with a site meter: the house draws 1380 W, the sun gives 3000 W.
    The owner picks min+solar in the page's select: the EV takes 6 A (4140 W), 1620 W of it surplus,
    2520 W from the grid, as the daemon's status has them; back in fast mode the solar view goes."""
    _need_browser()
    from playwright.async_api import async_playwright, expect
    from test_web_controls import SITE_METER

    cfg = config.load(write_config(tmp_path, f'\n[web]\npassword_hash = "{PASSWORD_HASH}"\n' + SITE_METER))

    async def scenario():
        async with web_on_daemon(cfg) as (daemon, service), async_playwright() as pw:
            await ask(cfg, p.SetSite(l1_a=2, l2_a=2, l3_a=2, pv_w=3000))
            await ask(cfg, p.Plug())
            await ask(cfg, p.Tap(card="04A1B2C3"))
            browser = await pw.chromium.launch_persistent_context(
                str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=ARGS)
            try:
                page = await browser.new_page()
                await page.goto(service.url)
                await expect(page.locator("[data-connector='1'] .headline")).to_contain_text("Charging")
                await expect(page.locator("#solar")).to_be_hidden()  # fast mode
                await page.get_by_role("button", name="Log in").click()
                await page.get_by_label("Password").fill(PASSWORD)
                await page.get_by_role("button", name="Log in").last.click()
                await page.get_by_label("Mode").select_option("min+solar")
                await expect(page.locator("#solar")).to_be_visible()
                await expect(page.locator("#solar-ev")).to_have_text("4.1 kW", timeout=15_000)
                await expect(page.locator("#solar-surplus")).to_have_text("1.6 kW")
                await expect(page.locator("#solar-grid")).to_have_text("2.5 kW")
                assert daemon.charger.mode == "min+solar"
                status = await ask(cfg, p.Status())
                assert status.connectors[0].session.power_w == 4140 and round(status.site.power_w) == 2520

                await page.get_by_label("Mode").select_option("fast")
                await expect(page.locator("#solar")).to_be_hidden()
                assert daemon.charger.mode == "fast"
            finally:
                await browser.close()

    asyncio.run(scenario())
