"""The web service over HTTP on loopback, with the demo charger behind its Link: access rules,
the live event stream, and the records read from a real session store."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import threading

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
from test_daemon import until

PASSWORD = "s3cret"
HASH = hash_password(PASSWORD, "pbkdf2")


@pytest.fixture(autouse=True)
def no_login_delay(monkeypatch):
    monkeypatch.setattr(service_module, "FAILED_LOGIN_DELAY_S", 0.0)


def run(tmp_path, body, link=None, password_hash=HASH):
    """Start the service with the demo charger, run body(service, client, link), stop."""
    async def main():
        config = demo_config(tmp_path, f'password_hash = "{password_hash}"')
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


async def login_from(service, source: str, password: str) -> int:
    """POST /login from the loopback address `source` (each a different client); the status."""
    url = URL(service.url)
    reader, writer = await asyncio.open_connection(url.host, url.port, local_addr=(source, 0))
    body = json.dumps({"password": password}).encode()
    writer.write(b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    try:
        return int((await asyncio.wait_for(reader.read(), 10)).split(b" ", 2)[1])
    finally:
        writer.close()


@pytest.fixture
def quick_hash(monkeypatch):
    """A password hash that takes a millisecond to check (the 1000 iterations the parser allows)."""
    from evsed.web import settings as web_settings
    monkeypatch.setattr(web_settings, "PBKDF2_ITERATIONS", 1000)
    return hash_password(PASSWORD, "pbkdf2")


def test_wrong_passwords_from_many_addresses_do_not_lock_out_the_right_one(tmp_path, quick_hash):
    async def body(service, client, link):
        for k in range(40):  # a botnet: each address guesses once
            assert await login_from(service, f"127.0.2.{k + 1}", "guess") == 403
        assert await login_from(service, "127.0.3.1", "guess") == 403
        assert await login_from(service, "127.0.3.1", PASSWORD) == 429  # that address waits its back-off
        assert await login_from(service, "127.0.0.1", PASSWORD) == 200  # the right one from elsewhere: in
    run(tmp_path, body, password_hash=quick_hash)


def test_guesses_sent_side_by_side_from_one_address_are_checked_one_at_a_time(tmp_path, quick_hash):
    async def body(service, client, link):
        statuses = await asyncio.gather(*(login_from(service, "127.0.2.1", f"guess {k}") for k in range(5)))
        assert sorted(statuses) == [403, 429, 429, 429, 429]  # one checked; its failure then slows the next
    run(tmp_path, body, password_hash=quick_hash)


def test_password_checks_beyond_the_cap_are_answered_busy_at_once(tmp_path, quick_hash):
    async def body(service, client, link):
        await service._verify_lock.acquire()  # a check that takes long: the others queue behind it
        tries = [asyncio.create_task(login_from(service, f"127.0.2.{k + 1}", "guess")) for k in range(20)]
        busy = 20 - service_module.MAX_PASSWORD_CHECKS
        while sum(t.done() for t in tries) < busy:  # answered without waiting for the check
            done, _ = await asyncio.wait([t for t in tries if not t.done()], timeout=10,
                                         return_when=asyncio.FIRST_COMPLETED)
            assert done, "no answer while the check runs"
        assert sorted(t.result() for t in tries if t.done()) == [503] * busy
        service._verify_lock.release()
        assert sorted(await asyncio.gather(*tries)) == [403] * service_module.MAX_PASSWORD_CHECKS + [503] * busy
        assert await login_from(service, "127.0.0.1", PASSWORD) == 200
    run(tmp_path, body, password_hash=quick_hash)


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
        async with client.get("/api/sessions") as r:
            rows = (await r.json())["sessions"]
        assert [r["card_name"] for r in rows] == ["Bob", "Alice"] and rows[0]["id_tag"] == "…E5F6"
        async with client.get("/sessions.csv") as r:
            assert r.headers["Content-Type"].startswith("text/csv")
            lines = (await r.text()).splitlines()
        assert len(lines) == 3 and "04A1B2C3" not in lines[1]
        await login(client)
        async with client.get("/sessions.csv") as r:
            assert "04A1B2C3" in await r.text()
        async with client.get("/api/report") as r:
            report = await r.json()
        assert report["total"][0]["sessions"] == 2 and report["total"][0]["energy_kwh"] == "15.000"
        async with client.get("/usage/day.svg") as r:
            assert r.content_type == "image/svg+xml" and "<rect" in await r.text()
    run(tmp_path, body)


def test_a_card_filter_needs_a_login(tmp_path):
    # else anyone on the network could ask whether a UID (or a name) charged here, and when
    _seed(tmp_path / "sessions.db")
    store = Store(tmp_path / "sessions.db")
    s = LiveSession(1, "DEADBEEF", "", "", "local", dt.datetime.now(dt.timezone.utc).isoformat(), 0, 0)
    store.start(s)
    store.stop(s.row_id, 1000, 7000.0, "ev_disconnected", dt.datetime.now(dt.timezone.utc).isoformat())
    store.close()

    async def body(service, client, link):
        for path in ("/api/sessions", "/sessions.csv"):
            for card in ("04D4E5F6", "Bob"):
                async with client.get(path, params={"card": card}) as r:
                    text = await r.text()
                assert r.status == 401 and "log in to filter by card" in text and "Bob" not in text, (path, card)
        async with client.get("/api/report") as r:  # a card without a name: masked like everywhere
            cards = [line["name"] or line["key"] for line in (await r.json())["by_card"]]
        assert cards == ["Alice", "Bob", "…BEEF"]
        await login(client)
        async with client.get("/api/sessions", params={"card": "04D4E5F6"}) as r:
            assert [row["card_name"] for row in (await r.json())["sessions"]] == ["Bob"]
        async with client.get("/sessions.csv", params={"card": "Bob"}) as r:
            assert len((await r.text()).splitlines()) == 2
        async with client.get("/api/report") as r:
            assert "DEADBEEF" in [line["key"] for line in (await r.json())["by_card"]]
    run(tmp_path, body)


def _seed_many(db, count: int) -> None:
    """count finished sessions an hour apart, the newest an hour ago; card i for the i-th."""
    store = Store(db)
    start = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(hours=count + 1)
    for k in range(count):
        at = start + dt.timedelta(hours=k)
        s = LiveSession(1, f"CARD{k:04d}", f"card {k}", "", "local", at.isoformat(), k * 1000, k * 1000)
        store.start(s)
        store.stop(s.row_id, k * 1000 + 500, 7000.0, "ev_disconnected", (at + dt.timedelta(minutes=30)).isoformat())
    store.close()


def test_the_sessions_api_answers_a_page_at_a_time_newest_first(tmp_path):
    _seed_many(tmp_path / "sessions.db", 5)

    async def body(service, client, link):
        pages, before = [], None
        while True:
            params = {"limit": "2", **({"before": str(before)} if before else {})}
            async with client.get("/api/sessions", params=params) as r:
                page = await r.json()
            pages.append([row["card_name"] for row in page["sessions"]])
            assert page["limit"] == 2
            before = page["next"]
            if before is None:
                break
        assert pages == [["card 4", "card 3"], ["card 2", "card 1"], ["card 0"]]
        async with client.get("/api/sessions") as r:  # by default the newest MAX_ROWS, and no more pages
            page = await r.json()
        assert page["limit"] == service_module.MAX_ROWS and len(page["sessions"]) == 5 and page["next"] is None
        for bad in ({"limit": "0"}, {"limit": str(service_module.MAX_ROWS + 1)}, {"before": "x"}):
            async with client.get("/api/sessions", params=bad) as r:
                assert r.status == 400, bad
    run(tmp_path, body)


def test_the_csv_export_is_streamed_in_pages_with_every_session(tmp_path, monkeypatch):
    # the whole history in one answer, but never more than a page of it in memory
    monkeypatch.setattr(service_module, "MAX_ROWS", 2)
    _seed_many(tmp_path / "sessions.db", 5)

    async def body(service, client, link):
        async with client.get("/sessions.csv") as r:
            assert r.headers.get("Transfer-Encoding") == "chunked" and "Content-Length" not in r.headers
            lines = (await r.text()).splitlines()
        assert lines[0].startswith("id,") and len(lines) == 6
        assert [line.split(",")[3] for line in lines[1:]] == [f"card {k}" for k in range(5)]  # oldest first, once each
    run(tmp_path, body)


def test_csv_exports_beyond_the_cap_are_answered_busy_and_the_slots_come_back(tmp_path, monkeypatch):
    # a slow reader's export is a connection being answered: slow readers must not hold them all
    _seed_many(tmp_path / "sessions.db", 3)
    gate = threading.Event()
    read_page = service_module.records.csv_page

    def held_page(*args, **kwargs):  # the database read of an export that has not finished
        gate.wait(10)
        return read_page(*args, **kwargs)
    monkeypatch.setattr(service_module.records, "csv_page", held_page)

    async def body(service, client, link):
        held = [asyncio.create_task(client.get("/sessions.csv")) for _ in range(service_module.MAX_EXPORTS)]
        await until(lambda: service._exports == service_module.MAX_EXPORTS)
        async with client.get("/sessions.csv") as r:
            assert r.status == 503 and r.headers["Retry-After"] == "5"
        gate.set()
        for task in held:
            async with await task as r:
                assert r.status == 200 and len((await r.text()).splitlines()) == 4
        async with client.get("/sessions.csv") as r:
            assert r.status == 200
        await until(lambda: service._exports == 0)  # each slot back once its answer is over
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
