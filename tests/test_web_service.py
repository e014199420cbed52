"""The web service over HTTP on loopback, with the demo charger behind its Link: access rules,
the live event stream, and the records read from a real session store."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json

import pytest
from aiohttp import ClientSession, CookieJar
from yarl import URL

import protocol_records as pr
from evsed import protocol as p
from evsed.errors import StartError
from evsed.store.sessions import LiveSession, Store
from evsed.web import live as live_module
from evsed.web import service as service_module
from evsed.web.demo import DemoLink, demo_config
from evsed.web.settings import hash_password, parse

PASSWORD = "s3cret"
HASH = hash_password(PASSWORD, "pbkdf2")


@pytest.fixture(autouse=True)
def no_login_delay(monkeypatch):
    monkeypatch.setattr(service_module, "FAILED_LOGIN_DELAY_S", 0.0)


def run(tmp_path, body, link=None):
    """Start the service with the demo charger, run body(service, client, link), stop."""
    async def main():
        config = demo_config(tmp_path, f'password_hash = "{HASH}"')
        the_link = link or DemoLink(connectors=(1,))
        service = service_module.WebService(config, the_link, parse(config))
        await service.start(port=0)
        task = asyncio.create_task(service.live.run())
        try:
            async with ClientSession(base_url=service.url, cookie_jar=CookieJar(unsafe=True)) as client:
                return await body(service, client, the_link)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await service.stop()
    return asyncio.run(main())


async def login(client) -> str:
    async with client.post("/login", json={"password": PASSWORD}) as r:
        assert r.status == 200
        return (await r.json())["csrf"]


def test_actions_need_a_login(tmp_path):
    async def body(service, client, link):
        async with client.post("/api/command", json={"action": "stop", "connector": 1}) as r:
            assert r.status == 401
        assert not [c for c in link.commands if not isinstance(c, p.Status)]
    run(tmp_path, body)


def test_a_logged_in_action_without_the_csrf_token_is_refused(tmp_path):
    async def body(service, client, link):
        await login(client)
        async with client.post("/api/command", json={"action": "stop", "connector": 1}) as r:
            assert r.status == 403
        async with client.post("/api/command", json={"action": "stop", "connector": 1},
                               headers={"X-CSRF-Token": "forged"}) as r:
            assert r.status == 403
    run(tmp_path, body)


def test_a_cross_site_post_is_refused_even_with_the_cookie(tmp_path):
    async def body(service, client, link):
        csrf = await login(client)
        async with client.post("/api/command", json={"action": "stop", "connector": 1},
                               headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"}) as r:
            assert r.status == 403
        async with client.post("/api/command", data="action=stop&connector=1",
                               headers={"X-CSRF-Token": csrf, "Content-Type": "application/x-www-form-urlencoded"}) as r:
            assert r.status == 415
    run(tmp_path, body)


def test_login_cookie_is_httponly_and_samesite_strict(tmp_path):
    async def body(service, client, link):
        async with client.post("/login", json={"password": PASSWORD}) as r:
            cookie = r.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    run(tmp_path, body)


def test_a_wrong_password_makes_the_next_try_wait(tmp_path):
    async def body(service, client, link):
        async with client.post("/login", json={"password": "guess"}) as r:
            assert r.status == 403
        async with client.post("/login", json={"password": PASSWORD}) as r:  # even the right one waits
            assert r.status == 429
            assert int(r.headers["Retry-After"]) >= 1
    run(tmp_path, body)


def test_a_logged_in_stop_goes_to_the_daemon_as_remote_stop(tmp_path):
    async def body(service, client, link):
        link.plug(1)
        link.start(1, "04A1B2C3", "Alice")
        csrf = await login(client)
        async with client.post("/api/command", json={"action": "stop", "connector": 1},
                               headers={"X-CSRF-Token": csrf}) as r:
            assert (await r.json())["ok"] is True
        assert p.RemoteStop(connector=1, reason="remote") in link.commands
    run(tmp_path, body)


def test_logout_ends_the_login(tmp_path):
    async def body(service, client, link):
        csrf = await login(client)
        cookie = client.cookie_jar.filter_cookies(URL(service.url))["evsed_session"].value
        async with client.post("/logout", json={}) as r:
            assert r.status == 200
        client.cookie_jar.update_cookies({"evsed_session": cookie})  # a copy kept by someone else
        async with client.post("/api/command", json={"action": "stop", "connector": 1},
                               headers={"X-CSRF-Token": csrf}) as r:
            assert r.status == 401
    run(tmp_path, body)


async def next_event(stream, kind: str) -> dict:
    current = None
    async for raw in stream.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            current = line[7:]
        elif line.startswith("data: ") and current == kind:
            return json.loads(line[6:])
    raise AssertionError("stream ended")


def test_the_event_stream_pushes_a_new_view_when_the_charger_changes(tmp_path):
    async def body(service, client, link):
        async with client.get("/events") as stream:
            first = await next_event(stream, "full")
            assert first["view"]["connectors"][0]["headline"] == "Available"
            link.plug(1)
            view = await asyncio.wait_for(next_event(stream, "view"), 5)
            while view["connectors"][0]["headline"] != "Waiting for a card":
                view = await asyncio.wait_for(next_event(stream, "view"), 5)
            link.start(1, "04A1B2C3", "Alice")
            link.sample(1, 7200.0, [10.4, 10.4, 10.4], 100)
            sample = await asyncio.wait_for(next_event(stream, "sample"), 5)
            assert sample["connector"] == 1 and sample["p"] == 7200 and sample["i"] == [10.4, 10.4, 10.4]
        assert link.acked == len(link.log)
    run(tmp_path, body)


def _seed(db):
    store = Store(db)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    for k, (name, tag) in enumerate([("Alice", "04A1B2C3"), ("Bob", "04D4E5F6")]):
        s = LiveSession(1, tag, name, "", "local", (now - dt.timedelta(hours=3 - k)).isoformat(), 0, 0)
        store.start(s)
        store.stop(s.row_id, 5000 * (k + 1), 7000.0, "ev_disconnected", (now - dt.timedelta(hours=1)).isoformat())
    store.close()


def test_sessions_filter_csv_and_report_come_from_the_store(tmp_path):
    _seed(tmp_path / "sessions.db")

    async def body(service, client, link):
        async with client.get("/api/sessions", params={"card": "Bob"}) as r:
            rows = (await r.json())["sessions"]
        assert [r["card_name"] for r in rows] == ["Bob"] and rows[0]["id_tag"] == "…E5F6"
        async with client.get("/sessions.csv") as r:
            assert r.headers["Content-Type"].startswith("text/csv")
            lines = (await r.text()).splitlines()
        assert len(lines) == 3 and "04A1B2C3" not in lines[1]
        await login(client)
        async with client.get("/sessions.csv") as r:
            assert "04A1B2C3" in await r.text()
        async with client.get("/api/report") as r:
            report = (await r.json())["report"]
        assert report["total"]["sessions"] == 2 and report["total"]["energy_wh"] == 15000
        async with client.get("/usage/day.svg") as r:
            assert r.content_type == "image/svg+xml" and "<rect" in await r.text()
    run(tmp_path, body)


def test_a_bad_date_filter_is_a_400_not_a_crash(tmp_path):
    async def body(service, client, link):
        async with client.get("/api/sessions", params={"since": "yesterday"}) as r:
            assert r.status == 400
        async with client.get("/api/report", params={"month": "2026-13"}) as r:
            assert r.status == 400
    run(tmp_path, body)


def test_pages_carry_a_strict_content_security_policy(tmp_path):
    async def body(service, client, link):
        async with client.get("/") as r:
            assert "script-src 'self'" in r.headers["Content-Security-Policy"]
            assert "<script src=\"/static/app.js\"" in await r.text()
        async with client.get("/static/../settings.py") as r:
            assert r.status == 404
    run(tmp_path, body)


class SilentLink(DemoLink):
    async def command(self, req):
        raise ConnectionError("no daemon")


def test_a_silent_daemon_shows_as_not_answering(tmp_path):
    async def body(service, client, link):
        async with client.get("/api/view") as r:
            assert (await r.json())["view"]["online"] is False
    run(tmp_path, body, link=SilentLink())


def test_serve_refuses_to_start_without_a_web_section(tmp_path):
    config = demo_config(tmp_path)
    config = type(config)(**{**config.__dict__, "sections": {}})
    with pytest.raises(StartError, match="no \\[web\\] section"):
        asyncio.run(service_module.serve(config, DemoLink()))


def test_a_long_session_plot_is_thinned_not_cut(tmp_path, monkeypatch):
    monkeypatch.setattr(live_module, "MAX_POINTS", 100)
    live = live_module.Live(DemoLink(), tmp_path / "sessions.db", dt.timezone.utc)
    start = dt.datetime(2026, 11, 28, tzinfo=dt.timezone.utc)
    live.apply(pr.event("session.started", seq=1, at=start.isoformat(), session=1, started_at=start.isoformat()))
    for k in range(1000):
        at = (start + dt.timedelta(seconds=k)).isoformat()
        live.apply(pr.event("session.sample", seq=None, at=at, session=1, power_w=1000, current_a=(4.3,)))
    points = live.samples[1]
    assert len(points) <= 100 and points[0]["t"] == 0 and points[-1]["t"] >= 990
