"""The web page's pure parts: [web] settings, password hashes, logins, what a person reads,
the records' sums, and the checks on page actions."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

import protocol_records as pr
from evsed import protocol as p
from evsed.config import ConfigError
from evsed.web import auth, records
from evsed.web.commands import CommandError, to_request
from evsed.web.demo import demo_config
from evsed.web.settings import WebSettings, hash_password, load_secret, parse, verify_password
from evsed.web.view import connector_view, headline, limit_entries

AMS = ZoneInfo("Europe/Amsterdam")
NOW = dt.datetime(2026, 11, 28, 13, 0, tzinfo=dt.timezone.utc)  # 14:00 in Amsterdam
HELLO = p.HelloReply(version=1, charger="demo", connectors=(1, 2), phases=3, voltage_v=230, acked=0, last_seq=0)
conn = pr.connector


# --- settings -----------------------------------------------------------------------------
def test_web_settings_default_to_loopback_port_8080_without_login(tmp_path):
    assert parse(demo_config(tmp_path)) == WebSettings()


def test_no_web_section_means_the_page_is_off(tmp_path):
    config = demo_config(tmp_path)
    config = type(config)(**{**config.__dict__, "sections": {}})
    assert parse(config) is None


def test_enabled_false_turns_the_page_off(tmp_path):
    assert parse(demo_config(tmp_path, "enabled = false")) is None


def test_unknown_web_key_names_file_line_and_key(tmp_path):
    with pytest.raises(ConfigError, match=r"evsed.toml:14: \[web\] prot: unknown key \(did you mean 'port'\?\)"):
        parse(demo_config(tmp_path, "prot = 8081"))


def test_bind_must_be_an_ip_address(tmp_path):
    with pytest.raises(ConfigError, match=r"\[web\] bind: expected an IP address"):
        parse(demo_config(tmp_path, 'bind = "localhost; rm"'))


def test_a_password_hash_that_is_not_one_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"\[web\] password_hash: expected a hash made by"):
        parse(demo_config(tmp_path, 'password_hash = "hunter2"'))


def test_session_secret_file_is_read_relative_to_the_config(tmp_path):
    (tmp_path / "web.secret").write_text("x" * 32)
    settings = parse(demo_config(tmp_path, 'session_secret_file = "web.secret"'))
    assert load_secret(settings) == b"x" * 32


def test_a_missing_session_secret_file_is_an_error_naming_it(tmp_path):
    settings = parse(demo_config(tmp_path, 'session_secret_file = "nope"'))
    with pytest.raises(ConfigError, match="nope: \\[web\\] session_secret_file: cannot read"):
        load_secret(settings)


@pytest.mark.parametrize("method", ["scrypt", "pbkdf2"])
def test_password_hash_verifies_the_password_and_nothing_else(method):
    stored = hash_password("correct horse", method)
    assert verify_password("correct horse", stored)
    assert not verify_password("correct hors", stored)
    assert not verify_password("", stored)


# --- logins -------------------------------------------------------------------------------
def test_login_cookie_is_accepted_until_it_expires_or_is_logged_out():
    sessions = auth.Sessions(b"k" * 32, lifetime_s=3600)
    cookie = sessions.issue(now=1000)
    assert sessions.nonce(cookie, now=1000)
    assert sessions.nonce(cookie, now=1000 + 3601) is None
    sessions.revoke(cookie, now=1001)
    assert sessions.nonce(cookie, now=1002) is None


def test_a_tampered_or_foreign_cookie_is_refused():
    sessions = auth.Sessions(b"k" * 32, lifetime_s=3600)
    cookie = sessions.issue(now=1000)
    expires, nonce, sig = cookie.split(".")
    assert sessions.nonce(f"{int(expires) + 10**6}.{nonce}.{sig}", now=1000) is None
    assert auth.Sessions(b"other" * 8, 3600).nonce(cookie, now=1000) is None


def test_csrf_token_belongs_to_one_login():
    sessions = auth.Sessions(b"k" * 32, lifetime_s=3600)
    a = sessions.nonce(sessions.issue(0), 0)
    b = sessions.nonce(sessions.issue(0), 0)
    assert sessions.csrf_ok(a, sessions.csrf(a))
    assert not sessions.csrf_ok(a, sessions.csrf(b))
    assert not sessions.csrf_ok(a, None)


def test_each_wrong_password_doubles_the_wait_up_to_a_minute():
    backoff = auth.Backoff()
    delays = [backoff.failed("10.0.0.9", now=0) for _ in range(8)]
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60]
    assert backoff.wait_s("10.0.0.9", now=10) == 50
    assert backoff.wait_s("10.0.0.8", now=10) == 0
    backoff.succeeded("10.0.0.9")
    assert backoff.wait_s("10.0.0.9", now=10) == 0


def test_many_addresses_guessing_slow_down_only_themselves():
    backoff = auth.Backoff()
    for k in range(100):
        backoff.failed(f"10.0.{k}.1", now=k)
    assert backoff.wait_s("10.9.9.9", now=100) == 0  # the right one is not locked out
    assert backoff.wait_s("10.0.99.1", now=99) == 1


# --- what a person reads --------------------------------------------------------------------
def test_idle_connector_reads_available():
    assert headline(conn(), NOW, AMS) == ("Available", "idle")


def test_a_pilot_whose_device_is_gone_reads_as_a_fault_with_why():
    c = conn(pilot_error="OpenEVSE /dev/ttyUSB0: serial link lost: device disconnected")
    assert headline(c, NOW, AMS) == ("Pilot unavailable: OpenEVSE /dev/ttyUSB0: serial link lost: device disconnected",
                                     "fault")


def test_plugged_ev_without_card_reads_waiting_for_a_card():
    c = conn(status="Preparing", state="B", reason="waiting for a card")
    assert headline(c, NOW, AMS)[0] == "Waiting for a card"


def test_charging_reads_power_energy_and_price_so_far():
    c = conn(status="Charging", state="C", session=pr.session(
        energy_wh=12400, power_w=7210.0, price=3.1, currency="EUR", started_at="2026-11-28T12:00:00Z"))
    assert headline(c, NOW, AMS) == ("Charging 7.2 kW, 12.4 kWh, €3.10 so far", "charging")


def test_charging_without_a_tariff_reads_power_and_energy():
    c = conn(status="Charging", session=pr.session(energy_wh=500, power_w=3700.0))
    assert headline(c, NOW, AMS)[0] == "Charging 3.7 kW, 0.5 kWh so far"


def test_pause_by_time_window_names_the_window():
    c = conn(status="SuspendedEVSE", session=pr.session(), allowed_a=0.0, limits={"window": 0, "site": 20},
             reason="current limit 0 A is below 6 A")
    assert headline(c, NOW, AMS) == ("Paused by time window", "paused")


def test_rcd_trip_reads_when_it_will_be_retried():
    c = conn(status="Faulted", faults=(p.FaultNow(fault="rcd", detail="", clears_by="retry", lockout=False,
                                                  retry_in_s=300.0),))
    assert headline(c, NOW, AMS) == ("Fault: RCD tripped, retry at 14:05", "fault")


def test_a_lockout_says_a_person_must_clear_it():
    c = conn(status="Faulted", faults=(p.FaultNow(fault="welded", detail="", clears_by="person", lockout=True,
                                                  retry_in_s=None),))
    assert headline(c, NOW, AMS)[0] == "Fault: contactor welded, locked out until a person clears it"


def test_a_fault_that_clears_on_unplug_says_so():
    c = conn(status="Faulted", faults=tuple(p.FaultNow(fault=name, detail="", clears_by="unplug", lockout=False,
                                                       retry_in_s=None) for name in ("diode", "cp_short")))
    assert headline(c, NOW, AMS)[0] == ("Fault: EV diode check failed, clears when the EV is unplugged; "
                                        "control pilot shorted to earth, clears when the EV is unplugged")


def test_the_limits_table_is_the_daemons_chain_with_its_binding_mark():
    entries = limit_entries(conn(allowed_a=16.0, limits={"site": 20.0, "group": 16.0}))
    assert [(e["source"], e["binding"]) for e in entries] == [("hardware", False), ("site", False), ("group", True)]


def test_the_page_marks_the_source_the_daemon_names_even_among_equals():
    entries = limit_entries(conn(allowed_a=16.0, limits={"window": 16.0, "site": 16.0}, binding="window"))
    assert [e["source"] for e in entries if e["binding"]] == ["window"]


def test_the_charger_rating_binds_when_no_source_is_lower():
    entries = limit_entries(conn(allowed_a=32.0, limits={"site": 40.0}))
    assert entries[0]["source"] == "hardware" and entries[0]["binding"] and entries[0]["label"] == "charger rating"


def test_anonymous_viewers_see_card_names_but_not_whole_uids():
    c = conn(status="Charging", session=pr.session(id_tag="04A1B2C3", card_name=""))
    assert connector_view(c, NOW, AMS, show_tags=False)["session"]["card"] == "…B2C3"
    assert connector_view(c, NOW, AMS, show_tags=True)["session"]["card"] == "04A1B2C3"


# --- records ----------------------------------------------------------------------------
def row(started: str, energy_wh: int, stopped: str | None = None, card: str = "Alice", tag: str = "04A1B2C3"):
    return {"id": 1, "connector_id": 1, "id_tag": tag, "card_name": card, "card_group": "", "auth_source": "local",
            "started_at": started, "stopped_at": stopped, "meter_start_wh": 0, "meter_stop_wh": energy_wh,
            "energy_wh": energy_wh, "peak_power_w": 7000.0, "stop_reason": "ev_disconnected"}


def test_totals_count_days_and_months_in_local_time():
    rows = [row("2026-11-27T23:30:00+00:00", 5000),  # 00:30 on the 28th in Amsterdam: today
            row("2026-11-27T22:30:00+00:00", 3000),  # 23:30 on the 27th: this month only
            row("2026-10-31T23:30:00+00:00", 1000)]  # 00:30 on 1 November: this month
    assert records.totals(rows, NOW, AMS) == {"today_wh": 5000, "today_sessions": 1,
                                              "month_wh": 9000, "month_sessions": 3}


def test_usage_sums_energy_per_local_day_and_counts_sessions_per_hour():
    rows = [row("2026-11-01T06:10:00+00:00", 2000), row("2026-11-01T06:50:00+00:00", 1000),
            row("2026-11-30T22:59:00+00:00", 4000)]  # 23:59 on the 30th in Amsterdam
    usage = records.usage(rows, "2026-11", AMS)
    assert len(usage["energy_wh_by_day"]) == 30
    assert usage["energy_wh_by_day"][0] == 3000 and usage["energy_wh_by_day"][29] == 4000
    assert usage["sessions_by_hour"][7] == 2 and usage["sessions_by_hour"][23] == 1


def test_month_bounds_reject_a_malformed_month():
    with pytest.raises(ValueError):
        records.month_bounds("2026-13", AMS)
    start, end = records.month_bounds("2026-12", AMS)
    assert (start.month, end.year, end.month) == (12, 2027, 1)


# --- page actions ------------------------------------------------------------------------
def test_stop_becomes_a_remote_stop_request():
    assert to_request({"action": "stop", "connector": 2}, HELLO, NOW) == p.RemoteStop(connector=2, reason="remote")


def test_reserve_dates_the_reservation_from_now():
    req = to_request({"action": "reserve", "connector": 0, "id_tag": "04a1b2c3", "minutes": 30}, HELLO, NOW)
    assert isinstance(req, p.Reserve) and req.id_tag == "04A1B2C3"
    assert req.until == dt.datetime(2026, 11, 28, 13, 30, tzinfo=dt.timezone.utc) and req.reservation_id > 0


@pytest.mark.parametrize("body", [
    {"action": "stop", "connector": 3}, {"action": "stop", "connector": True}, {"action": "stop", "connector": 0},
    {"action": "start", "connector": 1, "id_tag": "x" * 21}, {"action": "mode", "mode": "turbo"},
    {"action": "availability", "connector": 1, "operative": "yes"}, {"action": "reserve", "connector": 1,
                                                                      "id_tag": "A1", "minutes": 0},
    {"action": "sim", "connector": 1}, ["stop"],
])
def test_malformed_actions_never_reach_the_daemon(body):
    with pytest.raises(CommandError):
        to_request(body, HELLO, NOW)
