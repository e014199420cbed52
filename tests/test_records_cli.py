"""evsed report, evsed export and evsed sessions --ocmf, on a state directory with priced sessions."""

import csv
import datetime as dt
import io
import json
from decimal import Decimal as D
from pathlib import Path

import pytest
from pyocmf import OCMF

from evsed import cli
from evsed.core.tariff import DriverPrice, EnergyRate, Tariff, Window
from evsed.store import ocmf
from evsed.store.samples import MeterSample
from evsed.store.sessions import LiveSession, Store

ROOT = Path(__file__).parent.parent
TARIFF = Tariff(name="home", currency="EUR", decimals=2, energy_per_kwh=D("0.30"),
                energy=(EnergyRate("night", Window.parse(["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                                                         "22:00", "06:00"), D("0.20")),),
                prices={"family": DriverPrice("family", per_kwh=D("0.25")),
                        "guests": DriverPrice("guests", per_kwh=D("0.40"), per_session=D("1.00"))})


@pytest.fixture
def config(tmp_path) -> Path:
    text = (ROOT / "config" / "simulator.toml").read_text()  # Europe/Amsterdam
    text += f'\n[store]\nstate_dir = "{tmp_path / "state"}"\nruntime_dir = "{tmp_path / "run"}"\n'
    path = tmp_path / "evsed.toml"
    path.write_text(text)
    (tmp_path / "state").mkdir()
    store = Store(tmp_path / "state" / "sessions.db", signer=ocmf.Signer.load_or_create(tmp_path / "state"),
                  charger_id="evsed-sim", timezone="Europe/Amsterdam")
    # (card, name, group, start UTC, stop UTC, start Wh, stop Wh)
    for tag, name, group, start, stop, a, b in (
            ("04A1B2C3", "Alice", "family", "2026-01-05T09:00:00", "2026-01-05T10:00:00", 1000, 8000),
            ("04D4E5F6", "Bob", "family", "2026-01-05T23:30:00", "2026-01-06T01:30:00", 8000, 18_000),
            ("0A0B0C0D", "Guest", "guests", "2026-01-31T23:30:00", "2026-02-01T00:30:00", 18_000, 20_000),
            ("04A1B2C3", "Alice", "family", "2026-02-03T09:00:00", "2026-02-03T10:00:00", 20_000, 21_000)):
        s = LiveSession(1, tag, name, group, "local", start + "+00:00", a, a,
                        pricing=TARIFF.pricing(group, "Europe/Amsterdam").to_json())
        store.start(s)
        store.stop(s.row_id, b, 7000.0, "ev_disconnected", stop + "+00:00",
                   [MeterSample(int(dt.datetime.fromisoformat(start + "+00:00").timestamp() * 1000) + 60_000,
                                a + 100, 7000, (10.0, 10.0, 10.0), (230.0, 231.0, 229.0))])
    store.close()
    return path


def run(capsys, *args) -> str:
    assert cli.main(list(args)) == 0
    return capsys.readouterr().out


def test_month_report_sums_sessions_started_in_the_local_month(config, capsys):
    # January in Amsterdam: Alice 7 kWh by day (cost 2.10, revenue 1.75), Bob 10 kWh at night (2.00, 2.50),
    # and the guest who started 00:30 on 1 February local time belongs to February.
    (total,) = json.loads(run(capsys, "report", "-c", str(config), "--month", "2026-01", "--format", "json"))
    assert (total["sessions"], total["energy_kwh"], total["hours"]) == (2, "17.000", "3.00")
    assert (total["cost"], total["revenue"], total["margin"], total["currency"]) == ("4.10", "4.25", "0.15", "EUR")


def test_report_by_card_group_and_day(config, capsys):
    by_card = json.loads(run(capsys, "report", "-c", str(config), "--from", "2026-01-01", "--to", "2026-02-28",
                             "--by", "card", "--format", "json"))
    assert [(r["key"], r["name"], r["sessions"], r["revenue"]) for r in by_card] == [
        ("04A1B2C3", "Alice", 2, "2.00"), ("04D4E5F6", "Bob", 1, "2.50"), ("0A0B0C0D", "Guest", 1, "1.80")]
    by_group = list(csv.DictReader(io.StringIO(run(capsys, "report", "-c", str(config), "--month", "2026-02",
                                                   "--by", "group", "--format", "csv"))))
    assert [(r["key"], r["energy_kwh"], r["cost"]) for r in by_group] == [("family", "1.000", "0.30"),
                                                                          ("guests", "2.000", "0.40")]
    by_day = json.loads(run(capsys, "report", "-c", str(config), "--month", "2026-01", "--by", "day", "--format", "json"))
    assert [(r["key"], r["sessions"]) for r in by_day] == [("2026-01-05", 1), ("2026-01-06", 1)]  # Bob: 00:30 local


def test_report_table_has_a_header_and_money_with_the_currency(config, capsys):
    out = run(capsys, "report", "-c", str(config), "--month", "2026-01").splitlines()
    assert out[0] == "2026-01-01 to 2026-01-31"
    assert out[1].split() == ["sessions", "kWh", "hours", "charging", "h", "cost", "revenue", "margin"]
    assert out[2].split() == ["total", "2", "17.000", "3.00", "3.00", "4.10", "4.25", "0.15", "EUR"]


def test_export_csv_opens_cleanly_in_a_spreadsheet(config, capsys):
    text = run(capsys, "export", "-c", str(config), "--format", "csv", "--since", "2026-01-01", "--until", "2026-01-31")
    assert text.startswith("id,connector,card_uid,") and "\r\n" in text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["card_name"] for r in rows] == ["Alice", "Bob"]
    bob = rows[1]
    assert (bob["start"], bob["stop"]) == ("2026-01-06T00:30:00+01:00", "2026-01-06T02:30:00+01:00")
    assert (bob["energy_kwh"], bob["cost"], bob["revenue"], bob["currency"], bob["tariff"]) == (
        "10.000", "2.00", "2.50", "EUR", "home/family")


def test_export_samples_as_json(config, capsys):
    rows = json.loads(run(capsys, "export", "-c", str(config), "--format", "json", "--samples"))
    assert len(rows) == 4
    assert rows[0] == {"session_id": 1, "time": "2026-01-05T10:01:00.000+01:00", "energy_wh": 1100, "power_w": 7000,
                       "l1_a": 10.0, "l2_a": 10.0, "l3_a": 10.0, "l1_v": 230.0, "l2_v": 231.0, "l3_v": 229.0}


def test_sessions_ocmf_prints_a_document_pyocmf_verifies_and_the_public_key(config, capsys):
    doc, key = run(capsys, "sessions", "-c", str(config), "--ocmf", "2").splitlines()
    assert OCMF.from_string(doc, strict=True).verify_signature(key) is True
    assert key == (config.parent / "state" / ocmf.PUBLIC_KEY_FILE).read_text().strip()


def test_sessions_ocmf_of_an_unknown_session_fails(config, capsys):
    assert cli.main(["sessions", "-c", str(config), "--ocmf", "99"]) == 1
    assert "no session 99" in capsys.readouterr().err


@pytest.mark.parametrize("zone", ["Europe/Amsterdam", "America/St_Johns", "Australia/Lord_Howe"])
def test_export_times_are_right_around_every_offset_change(zone):
    from zoneinfo import ZoneInfo
    from evsed.store.reports import _LocalTime
    tz = ZoneInfo(zone)
    local = _LocalTime(tz)
    t = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    while t.year == 2026:
        iso = t.isoformat(timespec="seconds")
        assert local(iso) == t.astimezone(tz).isoformat(timespec="seconds"), iso
        t += dt.timedelta(minutes=7, seconds=13)


def test_every_day_range_includes_its_last_day(config, capsys):
    # sessions --until, export --until and report --to: the last day named is in (the guest's
    # session starts 00:30 on 1 February, Amsterdam time, and is left out of January)
    sessions = json.loads(run(capsys, "sessions", "-c", str(config), "--format", "json", "--since", "2026-01-05",
                              "--until", "2026-01-06"))
    exported = list(csv.DictReader(io.StringIO(run(capsys, "export", "-c", str(config), "--since", "2026-01-05",
                                                   "--until", "2026-01-06"))))
    (total,) = json.loads(run(capsys, "report", "-c", str(config), "--from", "2026-01-05", "--to", "2026-01-06",
                              "--format", "json"))
    assert [s["card_name"] for s in sessions] == [r["card_name"] for r in exported] == ["Alice", "Bob"]
    assert total["sessions"] == 2


def test_sessions_as_csv_and_json_carry_the_chargers_offset(config, capsys):
    (alice,) = json.loads(run(capsys, "sessions", "-c", str(config), "--format", "json", "--until", "2026-01-05"))
    assert (alice["started_at"], alice["stopped_at"]) == ("2026-01-05T10:00:00+01:00", "2026-01-05T11:00:00+01:00")
    rows = list(csv.DictReader(io.StringIO(run(capsys, "sessions", "-c", str(config), "--format", "csv"))))
    assert rows[1]["started_at"] == "2026-01-06T00:30:00+01:00"


def test_report_by_a_list_of_keys_as_the_readme_writes_it(config, capsys):
    rows = json.loads(run(capsys, "report", "-c", str(config), "--from", "2026-01-01", "--to", "2026-02-28",
                          "--by", "card,day", "--format", "json"))
    assert [(r["key"], r["name"], r["sessions"]) for r in rows] == [
        ("04A1B2C3 2026-01-05", "Alice", 1), ("04A1B2C3 2026-02-03", "Alice", 1),
        ("04D4E5F6 2026-01-06", "Bob", 1), ("0A0B0C0D 2026-02-01", "Guest", 1)]
    everything = run(capsys, "report", "-c", str(config), "--month", "2026-01", "--by", "card,group,day")
    assert everything.splitlines()[0] == "2026-01-01 to 2026-01-31, by card, group, day"
    assert everything.splitlines()[2].split()[:4] == ["04A1B2C3", "family", "2026-01-05", "(Alice)"]
    with pytest.raises(SystemExit):
        cli.main(["report", "-c", str(config), "--by", "card,week"])
    assert "expected some of card, group, day" in capsys.readouterr().err


def test_the_record_commands_read_the_store_without_structlog_or_asyncio(config):
    # structlog imports asyncio: 70 ms of `evsed sessions` (bench/cli.py); the store logs through it
    # only when it has a line to log.
    import subprocess
    import sys
    code = ("import contextlib, io, sys; from evsed import cli\n"
            "for argv in (['sessions'], ['report', '--month', '2026-01', '--by', 'group'], ['export', '--format', 'csv']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "        assert cli.main([*argv, '-c', sys.argv[1]]) == 0\n"
            "    assert 'Alice' in out.getvalue() or 'family' in out.getvalue(), argv\n"
            "print(sorted(m for m in ('structlog', 'asyncio') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code, str(config)], capture_output=True, text=True)
    assert (proc.returncode, proc.stdout.strip()) == (0, "[]"), proc.stderr
