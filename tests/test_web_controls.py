"""The owner's controls and the solar view, over the web service on a running daemon (its real control
socket) on the simulator: start for a card the local list accepts, the mode (the solar ones only with a
site meter, refused with the reason without one), and the solar view's figures as the daemon's status
gives them."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace

import pytest
from aiohttp import ClientSession, CookieJar

import protocol_records as pr
from evsed import config
from evsed import protocol as p
from evsed.services.link import Link
from evsed.shell.daemon import Daemon
from evsed.web import service as service_module
from evsed.web.view import solar_view
from evsed.web.settings import hash_password, parse
from tests.test_daemon import ask, until, write_config

PASSWORD = "s3cret"
WEB = f'[web]\npassword_hash = "{hash_password(PASSWORD, "pbkdf2")}"\n'
SITE_METER = '[site.meter]\nbackend = "sim"\n'
PHASE_W = 230.0  # one ampere on one phase of the simulator


@pytest.fixture(autouse=True)
def no_login_delay(monkeypatch):
    monkeypatch.setattr(service_module, "FAILED_LOGIN_DELAY_S", 0.0)


@contextlib.asynccontextmanager
async def web_on_daemon(cfg):
    """The daemon on the simulator and the web service on its socket, as `evsed run` starts them."""
    daemon = Daemon(cfg, start_services=False)
    run = asyncio.create_task(daemon.run())
    await daemon.ready.wait()
    link = await Link.connect(cfg.store.runtime_dir, "web")
    service = service_module.WebService(cfg, link, parse(cfg))
    await service.start(port=0)
    live = asyncio.create_task(service.live.run())
    try:
        yield daemon, service
    finally:
        live.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await live
        await service.stop()
        await link.close()
        daemon.stopping.set()
        await run


@contextlib.asynccontextmanager
async def owner(service):
    """A browser logged in as the owner: post(action) sends one page action with the CSRF token."""
    async with ClientSession(base_url=service.url, cookie_jar=CookieJar(unsafe=True)) as client:
        async with client.post("/login", json={"password": PASSWORD}) as r:
            csrf = (await r.json())["csrf"]

        async def post(body):
            async with client.post("/api/command", headers={"X-CSRF-Token": csrf}, json=body) as r:
                return r.status, await r.json()
        yield post


async def page_view(service, lang: str = "en") -> dict:
    async with ClientSession(base_url=service.url, headers={"Accept-Language": lang}) as anonymous:
        async with anonymous.get("/api/view") as r:
            return (await r.json())["view"]


# --- start ----------------------------------------------------------------------------------
def test_a_logged_in_start_charges_for_a_card_the_local_list_accepts(tmp_path):
    cfg = config.load(write_config(tmp_path, WEB))

    async def main():
        async with web_on_daemon(cfg) as (daemon, service), owner(service) as post:
            await ask(cfg, p.Plug())
            status, reply = await post({"action": "start", "connector": 1, "id_tag": "04a1b2c3"})
            assert (status, reply) == (200, {"ok": True, "connector": 1, "result": "Accepted"})
            session = daemon.connectors[1].session
            assert session is not None and (session.id_tag, session.card_name) == ("04A1B2C3", "Alice")
            await until(lambda: daemon.connectors[1].state.contactor_closed)
            await until(lambda: bool(service.live.status and service.live.status.connectors[0].session))
            (conn,) = (await page_view(service))["connectors"]
            assert conn["status"] == "Charging" and conn["session"]["card"] == "Alice"
    asyncio.run(main())


@pytest.mark.parametrize("tag, why", [("0A0B0C0D", "card disabled"), ("DEADBEEF", "unknown card")])
def test_a_start_for_a_card_the_local_list_does_not_accept_is_refused_with_the_reason(tmp_path, tag, why):
    cfg = config.load(write_config(tmp_path, WEB))

    async def main():
        async with web_on_daemon(cfg) as (daemon, service), owner(service) as post:
            await ask(cfg, p.Plug())
            status, answer = await post({"action": "start", "connector": 1, "id_tag": tag})
            assert answer["ok"] is False
            assert answer["error"] == f"refused: card {tag} is not one the local list accepts ({why})"
            assert daemon.connectors[1].session is None
    asyncio.run(main())


# --- mode -----------------------------------------------------------------------------------
def test_a_mode_chosen_on_the_page_is_the_daemons_mode(tmp_path):
    cfg = config.load(write_config(tmp_path, WEB + SITE_METER))

    async def main():
        async with web_on_daemon(cfg) as (daemon, service), owner(service) as post:
            assert (await page_view(service))["modes"] == ["fast", "solar", "min+solar"]
            for mode in ("min+solar", "solar", "fast"):
                status, reply = await post({"action": "mode", "mode": mode})
                assert (status, reply) == (200, {"ok": True, "mode": mode})
                assert daemon.charger.mode == mode
                assert (await ask(cfg, p.Status())).mode == mode
                await until(lambda: service.live.status is not None and service.live.status.mode == mode)
                assert (await page_view(service))["mode"] == mode
    asyncio.run(main())


def test_without_a_site_meter_the_page_offers_fast_only_refuses_solar_with_the_reason_and_shows_no_solar_view(tmp_path):
    cfg = config.load(write_config(tmp_path, WEB))

    async def main():
        async with web_on_daemon(cfg) as (daemon, service), owner(service) as post:
            view = await page_view(service)
            assert (view["modes"], view["mode"]) == (["fast"], "fast")
            for mode in ("solar", "min+solar"):
                status, reply = await post({"action": "mode", "mode": mode})
                assert reply == {"ok": False, "code": "failed", "error":
                                 f"mode {mode} needs a site meter ([site.meter]) to measure the surplus; "
                                 "this charger can follow: fast"}
                assert daemon.charger.mode == "fast"
            await ask(cfg, p.Plug())
            await ask(cfg, p.Tap(card="04A1B2C3"))
            await until(lambda: bool(service.live.status and service.live.status.connectors[0].session))
            view = await page_view(service)
            assert view["connectors"][0]["status"] == "Charging" and view["mode"] == "fast"
            assert view["solar"] is None  # no site meter: no surplus to show
    asyncio.run(main())


# --- the solar view -------------------------------------------------------------------------
def _expected(status: p.StatusReply) -> dict:
    """The solar view from the daemon's status: what the EV draws, the part of it the site imports
    (the grid's share, as the daemon splits a session's energy), and the surplus that is the rest."""
    assert status.site is not None
    ev_w = sum(c.session.power_w for c in status.connectors if c.session)
    grid_w = min(max(status.site.power_w, 0.0), ev_w)
    return {"ev_w": round(ev_w), "grid_w": round(grid_w), "surplus_w": round(max(0.0, ev_w - status.site.power_w))}


def test_in_a_solar_mode_the_page_shows_the_surplus_the_ev_and_the_grids_share_as_the_daemon_has_them(tmp_path):
    cfg = config.load(write_config(tmp_path, WEB + SITE_METER))

    async def steady(service, ev_w: float, site_w: float) -> tuple[p.StatusReply, dict]:
        """Wait until the page's status shows this draw and this site power (the simulator settles on
        them), then the daemon's own status and the page's view."""
        def there() -> bool:
            s = service.live.status
            conn = s.connectors[0] if s else None
            return bool(s and s.site and conn and conn.session and conn.session.power_w == ev_w
                        and abs(s.site.power_w - site_w) < 1)
        await until(there, timeout_s=15)
        return await ask(cfg, p.Status()), await page_view(service)

    async def main():
        async with web_on_daemon(cfg) as (daemon, service), owner(service) as post:
            await ask(cfg, p.SetSite(l1_a=2, l2_a=2, l3_a=2, pv_w=3000))  # the house 1380 W, the sun 3000 W
            assert (await post({"action": "mode", "mode": "min+solar"}))[1]["ok"]
            await ask(cfg, p.Plug())
            await ask(cfg, p.Tap(card="04A1B2C3"))
            # 6 A on three phases at least (4140 W): 1620 W of surplus, the grid gives the other 2520 W
            status, view = await steady(service, 6 * 3 * PHASE_W, 1380 + 4140 - 3000)
            assert view["solar"] == _expected(status) == {"ev_w": 4140, "grid_w": 2520, "surplus_w": 1620}
            assert view["solar"]["grid_w"] == round(daemon.charger.grid_share(1) * 4140)  # the records' split

            # clouds, and the house draws more than the sun gives: all the EV takes comes from the grid,
            # which also carries the house's rest (not the EV's share)
            await ask(cfg, p.SetSite(l1_a=5, l2_a=5, l3_a=5, pv_w=1000))
            status, view = await steady(service, 4140, 3450 + 4140 - 1000)
            assert view["solar"] == _expected(status) == {"ev_w": 4140, "grid_w": 4140, "surplus_w": 0}
            assert daemon.charger.grid_share(1) == 1.0

            assert (await post({"action": "mode", "mode": "fast"}))[1]["ok"]  # fast: no solar view
            await until(lambda: service.live.status is not None and service.live.status.mode == "fast")
            assert (await page_view(service))["solar"] is None
    asyncio.run(main())


SITE = p.SiteNow(current_a=(0.0, 0.0, 0.0), power_w=0.0, stale=False)


@pytest.mark.parametrize("mode, site_w, draws, solar", [
    ("solar", -2000.0, (), {"ev_w": 0, "grid_w": 0, "surplus_w": 2000}),  # exporting, no EV: all surplus
    ("min+solar", 1000.0, (4140.0, 2000.0), {"ev_w": 6140, "grid_w": 1000, "surplus_w": 5140}),  # two EVs
    ("min+solar", 9000.0, (4140.0,), {"ev_w": 4140, "grid_w": 4140, "surplus_w": 0}),  # the house takes the rest
    ("fast", -2000.0, (4140.0,), None),
])
def test_the_solar_view_splits_what_the_evs_take_between_the_surplus_and_the_grid(mode, site_w, draws, solar):
    conns = tuple(pr.connector(id=n + 1, status="Charging", session=pr.session(id=n + 1, power_w=w))
                  for n, w in enumerate(draws)) or (pr.connector(),)
    assert solar_view(pr.status(*conns, mode=mode, site=replace(SITE, power_w=site_w))) == solar
    assert solar_view(pr.status(*conns, mode=mode, site=None)) is None  # the site meter not read yet


def test_a_stale_site_reading_shows_no_solar_view():
    conns = (pr.connector(id=1, status="Charging", session=pr.session(id=1, power_w=4140.0)),)
    fresh = pr.status(*conns, mode="solar", site=replace(SITE, power_w=-3000.0))
    assert solar_view(fresh) is not None
    assert solar_view(replace(fresh, site=replace(fresh.site, stale=True))) is None  # an old export is not now's
