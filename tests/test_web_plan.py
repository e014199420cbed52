"""The charging plan on the web page: the web service on a running daemon (its real control socket):
the owner sets and cancels a plan, the page says it in its language and draws its hours over the prices."""

from __future__ import annotations

import asyncio
import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from aiohttp import ClientSession, CookieJar

from evsed import config
from evsed import protocol as p
from evsed.web import commands, i18n, view
from evsed.web import service as service_module
from evsed.web.settings import hash_password
from tests.test_daemon import ask, until, write_config
from tests.test_plans import cheap_hour_later
from tests.test_web_controls import web_on_daemon

PASSWORD = "s3cret"


@pytest.fixture(autouse=True)
def no_login_delay(monkeypatch):
    monkeypatch.setattr(service_module, "FAILED_LOGIN_DELAY_S", 0.0)


def test_the_owner_plans_on_the_page_and_every_reader_sees_the_plan_and_its_hours(tmp_path):
    web = f'[web]\npassword_hash = "{hash_password(PASSWORD, "pbkdf2")}"\n'
    cfg = config.load(write_config(tmp_path, cheap_hour_later() + web))

    async def main():
        async with web_on_daemon(cfg) as (daemon, service):
            await ask(cfg, p.Plug())
            await ask(cfg, p.Tap(card="04A1B2C3"))
            await until(lambda: daemon.connectors[1].session is not None)
            async with ClientSession(base_url=service.url, cookie_jar=CookieJar(unsafe=True)) as client:
                async with client.post("/login", json={"password": PASSWORD}) as r:
                    csrf = (await r.json())["csrf"]
                headers = {"X-CSRF-Token": csrf}
                async with client.post("/api/command", headers=headers, json={
                        "action": "plan", "connector": 1, "energy_kwh": 15, "by": "23:59"}) as r:
                    assert r.status == 200, await r.text()
                assert daemon.charger.plans.plans[1].origin == "web"
                await until(lambda: service.live.status is not None and service.live.status.connectors[0].plan)
            async with ClientSession(base_url=service.url, headers={"Accept-Language": "de"}) as anonymous:
                async with anonymous.get("/api/view") as r:
                    plan = (await r.json())["view"]["connectors"][0]["plan"]
                assert plan["text"] == "15.0 kWh bis 23:59" and plan["state"] == "measuring"
                assert plan["words"] == "misst zuerst, wie viel das Fahrzeug aufnimmt" and "fertig um" in plan["line"]
                async with anonymous.get(f"/plan/1.svg?v={plan['version']}") as r:
                    assert r.status == 200 and r.content_type == "image/svg+xml"
                    svg = await r.text()
                assert "Geplante Stunden" in svg and 'class="b"' in svg and 'class="u"' in svg
                async with anonymous.get("/plan/2.svg") as r:
                    assert r.status == 404
            async with ClientSession(base_url=service.url, cookie_jar=CookieJar(unsafe=True)) as client:
                async with client.post("/login", json={"password": PASSWORD}) as r:
                    csrf = (await r.json())["csrf"]
                async with client.post("/api/command", headers={"X-CSRF-Token": csrf},
                                       json={"action": "plan-cancel", "connector": 1}) as r:
                    assert r.status == 200
            assert daemon.charger.plans.plans == {}
    asyncio.run(main())


HELLO = p.HelloReply(version=1, charger="c", connectors=(1, 2), phases=3, voltage_v=230.0, acked=0, last_seq=0)


@pytest.mark.parametrize("body, message", [
    ({"action": "plan", "connector": 1, "energy_kwh": 0, "by": "07:00"}, "energy_kwh: expected"),
    ({"action": "plan", "connector": 1, "energy_kwh": True, "by": "07:00"}, "energy_kwh: expected"),
    ({"action": "plan", "connector": 1, "energy_kwh": 20, "by": "7"}, "by: expected a time"),
    ({"action": "plan", "connector": 1, "energy_kwh": 20, "by": "24:00"}, "by: expected a time"),
    ({"action": "plan", "connector": 3, "energy_kwh": 20, "by": "07:00"}, "connector: expected one of"),
    ({"action": "plan-cancel", "connector": 0}, "connector: expected one of"),
])
def test_a_malformed_plan_from_the_browser_never_reaches_the_daemon(body, message):
    with pytest.raises(commands.CommandError, match=message):
        commands.to_request(body, HELLO, dt.datetime.now(dt.timezone.utc))


def test_a_plan_from_the_page_is_the_plan_command_with_its_origin():
    req = commands.to_request({"action": "plan", "connector": 2, "energy_kwh": 12.5, "by": "06:30"}, HELLO,
                              dt.datetime.now(dt.timezone.utc))
    assert req == p.SetPlan(connector=2, energy_kwh=12.5, by="06:30", origin="web")


TZ = ZoneInfo("Europe/Amsterdam")
PLAN = dict(energy_wh=20_000, by="2026-01-06T07:00:00+01:00", origin="cli", delivered_wh=1_500,
            slots=(p.PlanSlot(start="2026-01-06T01:00:00+01:00", end="2026-01-06T03:12:00+01:00", power_w=9936,
                              price=0.1),), finish="2026-01-06T03:12:00+01:00", cost=2.04, currency="EUR")


@pytest.mark.parametrize("state, words", [
    ("waiting", "waiting for 01:00, the cheapest hours"), ("charging", "charging until 03:12"),
    ("done", "20.0 kWh delivered; paused until 07:00"), ("measuring", "measuring the EV's draw first"),
    ("infeasible", "cannot deliver 20.0 kWh by 07:00: charging as fast as allowed"),
    ("pending", "waiting for the next session")])
def test_the_page_says_what_the_plan_does_in_its_own_words(state, words):
    got = view.plan_view(p.PlanNow(**PLAN, state=state), TZ)
    assert got["text"] == "20.0 kWh by 07:00" and got["words"] == words
    assert got["line"] == "1.5 kWh delivered, finish 03:12, €2.04"


def test_every_language_says_the_plan_with_the_same_fields():
    for lang in i18n.LANGUAGES:
        got = view.plan_view(p.PlanNow(**PLAN, state="waiting"), TZ, i18n.Messages(lang))
        assert "01:00" in got["words"] and "07:00" in got["text"] and "03:12" in got["line"]
    assert view.plan_view(None, TZ) is None
