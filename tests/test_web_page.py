"""The page a homeowner uses: its languages, money in the records, the CSV that `evsed export`
writes, no card UID for an anonymous reader anywhere, and no stale reading shown as current.
Over HTTP on loopback against the web service, with a real session store behind it."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import typing
from decimal import Decimal as D
from pathlib import Path

import pytest

import protocol_records as pr
from evsed import protocol as p
from evsed.core.tariff import DriverPrice, EnergyRate, Tariff, Window
from evsed.store import ocmf
from evsed.store.sessions import LiveSession, Store
from evsed.web import i18n
from evsed.web.commands import to_request
from evsed.web.demo import DemoLink
from evsed.protocol_types import ConnectorState
from evsed.web.view import connector_view, status_label
from test_web_service import login, run

UIDS = ("04A1B2C3", "04D4E5F6")
AMS = dt.timezone.utc


def priced_sessions(db: Path) -> None:
    """Two finished sessions under a tariff, each with its signed OCMF document (which carries the UID)."""
    tariff = Tariff(name="home", energy_per_kwh=D("0.25"),
                    energy=(EnergyRate("night", Window.parse(["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                                                             "23:00", "06:00"), D("0.12")),),
                    prices={"family": DriverPrice("family", per_kwh=D("0.37"), per_session=D("1.00"))})
    store = Store(db, signer=ocmf.Signer.load_or_create(db.parent), charger_id="demo", timezone="Europe/Amsterdam")
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    for k, (name, tag) in enumerate(zip(("Alice", "Bob"), UIDS)):
        start = now - dt.timedelta(hours=5 - k)
        s = LiveSession(1, tag, name, "family", "local", start.isoformat(), 1000, 1000,
                        pricing=tariff.pricing("family", "Europe/Amsterdam").to_json())
        store.start(s)
        store.stop(s.row_id, 1000 + 7000 * (k + 1), 7000.0, "ev_disconnected",
                   (start + dt.timedelta(hours=2)).isoformat())
    store.close()


# --- languages ---------------------------------------------------------------------------
@pytest.mark.parametrize("lang", [lang for lang in i18n.LANGUAGES if lang != i18n.DEFAULT])
def test_every_language_file_has_every_message_with_the_same_fields(lang):
    english, other = i18n._read("en"), i18n._read(lang)
    assert set(other) == set(english), f"{lang}.toml: missing {set(english) - set(other)}, extra {set(other) - set(english)}"
    for key, text in english.items():
        assert i18n.placeholders(other[key]) == i18n.placeholders(text), f"{lang}.toml: {key}"


@pytest.mark.parametrize("header, lang", [
    ("de-DE,de;q=0.9,en;q=0.8", "de"), ("fr-CH, fr;q=0.9, en;q=0.8", "fr"), ("nl;q=0.5, de;q=0.4", "nl"),
    ("es-ES,es;q=0.9", "en"), ("en-GB", "en"), ("", "en"), (None, "en"), ("de;q=0, fr", "fr"),
    ("x" * 5000, "en"), ("*;q=1, de;q=0.2", "de"),
])
def test_the_browsers_language_chooses_among_those_the_page_has(header, lang):
    assert i18n.negotiate(header) == lang


def test_the_page_and_its_sentences_come_in_german_for_a_german_browser(tmp_path):
    async def body(service, client, link):
        async with client.get("/", headers={"Accept-Language": "de-DE,de;q=0.9,en;q=0.5"}) as r:
            page = await r.text()
            assert r.headers["Content-Language"] == "de" and "Accept-Language" in r.headers["Vary"]
        assert '<html lang="de">' in page and "Ladevorgänge" in page and "Energie pro Tag" in page
        assert "{{" not in page and "Sessions by hour" not in page
        messages = json.loads(page.split('id="messages" type="application/json">')[1].split("</script>")[0])
        assert messages["js.make_unavailable"] == "Außer Betrieb nehmen"
        async with client.get("/api/view", headers={"Accept-Language": "de"}) as r:
            view = (await r.json())["view"]
        assert view["connectors"][0]["headline"] == "Verfügbar"
        link.plug(1)
        link.fault(1, "rcd", retry_in_s=600)
        await service.live.refresh()
        async with client.get("/api/view", headers={"Accept-Language": "de"}) as r:
            view = (await r.json())["view"]
        assert view["connectors"][0]["headline"].startswith("Fehler: FI-Schutzschalter ausgelöst, neuer Versuch um ")
        async with client.get("/") as r:  # no preference: English
            assert '<html lang="en">' in await r.text()
    run(tmp_path, body)


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
def test_every_connector_status_has_a_word_in_every_language(lang):
    msgs = i18n.Messages(lang)
    for status in typing.get_args(ConnectorState):
        word = status_label(status, msgs)
        assert word and word != f"view.status.{status}" and "{" not in word, (lang, status)
        assert lang == "en" or word != status_label(status), f"{lang}.toml: view.status.{status} is the English word"


def test_the_connector_badge_says_its_status_in_the_pages_language(tmp_path):
    async def body(service, client, link):
        link.plug(1)
        link.start(1, "04A1B2C3", "Alice")
        await service.live.refresh()
        for lang, word in (("de", "Lädt"), ("nl", "Laadt"), ("fr", "En charge"), ("en", "Charging")):
            async with client.get("/api/view", headers={"Accept-Language": lang}) as r:
                (conn,) = (await r.json())["view"]["connectors"]
            assert (conn["status"], conn["status_text"]) == ("Charging", word), lang
        link.stop(1)
        await service.live.refresh()
        async with client.get("/api/view", headers={"Accept-Language": "de"}) as r:
            (conn,) = (await r.json())["view"]["connectors"]
        assert (conn["status"], conn["status_text"]) == ("Finishing", "Abschluss")
    run(tmp_path, body)


# --- money, the CSV, and card UIDs -----------------------------------------------------------
def test_sessions_and_the_report_show_cost_price_paid_and_margin(tmp_path):
    priced_sessions(tmp_path / "sessions.db")

    async def body(service, client, link):
        async with client.get("/api/sessions") as r:
            rows = (await r.json())["sessions"]
        bob = next(r for r in rows if r["card_name"] == "Bob")
        # 14 kWh at 0.37 plus 1.00 a session; its cost is the host's energy price for those hours
        assert bob["paid"] == "6.18 EUR"
        assert bob["cost"].endswith(" EUR") and bob["margin"].endswith(" EUR")
        assert D(bob["paid"].split()[0]) - D(bob["cost"].split()[0]) == D(bob["margin"].split()[0])
        async with client.get("/api/report") as r:
            report = await r.json()
        total = report["total"][0]
        assert (total["sessions"], total["energy_kwh"], total["currency"]) == (2, "21.000", "EUR")
        assert D(total["revenue"]) == D("2.59") + D("1.00") + D("6.18")
        assert D(total["margin"]) == D(total["revenue"]) - D(total["cost"])
    run(tmp_path, body)


def test_the_pages_csv_is_what_evsed_export_writes(tmp_path):
    priced_sessions(tmp_path / "sessions.db")
    (tmp_path / "evsed.toml").write_text(
        f'[charger]\nid = "demo"\ntimezone = "Europe/Amsterdam"\n[[connector]]\n[connector.pilot]\nbackend = "sim"\n'
        f'[connector.contactor]\nbackend = "sim"\n[store]\nstate_dir = "{tmp_path}"\nruntime_dir = "{tmp_path}/run"\n')
    exported = subprocess.run([sys.executable, "-m", "evsed", "export", "-c", str(tmp_path / "evsed.toml"),
                               "--format", "csv"], capture_output=True, check=True).stdout

    async def body(service, client, link):
        await login(client)
        async with client.get("/sessions.csv") as r:
            return await r.read()
    assert run(tmp_path, body) == exported
    assert exported.count(b"\r\n") == 3 and b"6.18" in exported


def test_no_anonymous_answer_carries_a_card_uid(tmp_path):
    priced_sessions(tmp_path / "sessions.db")
    link = DemoLink(connectors=(1,))

    async def body(service, client, link):
        link.plug(1)
        link.start(1, "04A1B2C3")  # a running session of a card without a name
        link.sample(1, 7000.0, [10.0, 10.0, 10.0], 500)
        await service.live.refresh()
        texts = []
        for path in ("/api/sessions", "/sessions.csv", "/api/report", "/api/view", "/usage/day.svg", "/"):
            async with client.get(path) as r:
                assert r.status == 200, path
                texts.append(await r.text())
        async with client.get("/events") as r:
            texts.append((await r.content.readuntil(b"\n\n")).decode())
        async with client.get("/api/rules") as r:
            assert r.status == 401
        for text in texts:
            for uid in UIDS:
                assert uid not in text and uid.lower() not in text
        assert "OCMF" not in texts[0]
        await login(client)
        async with client.get("/sessions.csv") as r:
            assert UIDS[0] in await r.text()  # the owner sees them
        async with client.get("/api/rules") as r:
            assert r.status == 200
    run(tmp_path, body, link)


# --- what the connector shows ----------------------------------------------------------------
def charging(**fields) -> p.ConnectorStatus:
    return pr.connector(**{**dict(
        status="Charging", state="C", contactor="closed", allowed_a=16.0, offered_a=16.0,
        measured=p.Measured(current_a=(16.0, 16.0, 16.0), power_w=11000, energy_wh=1000, stale=False),
        session=pr.session(card_name="Alice", energy_wh=1000, power_w=11000.0)), **fields})


NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.timezone.utc)
RCD = p.FaultNow(fault="rcd", detail="", clears_by="retry", lockout=False, retry_in_s=300.0)


def test_a_charging_connector_shows_what_the_ev_draws_and_its_plot():
    view = connector_view(charging(), NOW, AMS, show_tags=False)
    assert view["current_a"] == [16.0, 16.0, 16.0] and view["plot"] is True


@pytest.mark.parametrize("fields", [
    {"status": "Faulted", "contactor": "open", "faults": (RCD,)},
    {"meter_error": "no answer from the meter"},
    {"status": "SuspendedEVSE", "contactor": "open", "meter_error": "no answer from the meter"},
    {"pilot_error": "the board's USB adapter is gone"},
])
def test_a_fault_or_a_silent_meter_shows_no_stale_reading_and_no_old_plot(fields):
    view = connector_view(charging(**fields), NOW, AMS, show_tags=False)
    assert view["current_a"] == [] and view["plot"] is False


def test_a_connector_turned_unavailable_during_a_session_says_it_is_pending():
    assert connector_view(charging(operative=False), NOW, AMS, show_tags=False)["unavailable_pending"] is True
    assert connector_view(charging(operative=True), NOW, AMS, show_tags=False)["unavailable_pending"] is False


HELLO = p.HelloReply(version=1, charger="demo", connectors=(1, 2), phases=3, voltage_v=230, acked=0, last_seq=0)


def test_the_owners_slider_sets_the_pages_own_limit_source_and_lifts_it():
    assert to_request({"action": "limit", "connector": 1, "current_a": 10}, HELLO, NOW) == p.Limit(
        source="web", connector=1, current_a=10.0)
    assert to_request({"action": "limit", "connector": 0, "current_a": None}, HELLO, NOW) == p.Limit(
        source="web", connector=0, current_a=None)


def test_the_network_operators_cost_update_is_what_the_page_says_the_driver_pays():
    """OCPP 2.0.1 CostUpdated (the uplink reports it in its service status) replaces the local
    tariff's price so far on the page."""
    from evsed.web.view import page_view
    conn = charging(session=pr.session(card_name="Alice", energy_wh=12400, power_w=7200.0, price=3.10,
                                       currency="EUR"))
    status = pr.status(conn, services={"ocpp": p.ServiceState(connected=True, costs={"1": 4.25})})
    view = page_view(HELLO, status, {}, NOW, AMS, show_tags=False, online=True)
    assert view["connectors"][0]["headline"] == "Charging 7.2 kW, 12.4 kWh, €4.25 so far"
    alone = page_view(HELLO, pr.status(conn), {}, NOW, AMS, show_tags=False, online=True)
    assert alone["connectors"][0]["headline"] == "Charging 7.2 kW, 12.4 kWh, €3.10 so far"
