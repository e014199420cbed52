"""The evsed command: sessions in three formats, status text, errors without tracebacks."""

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import protocol_records as pr
from evsed import protocol as p
from evsed import cli
from evsed.store.sessions import LiveSession, Store

ROOT = Path(__file__).parent.parent


def config_with_sessions(tmp_path: Path) -> Path:
    text = (ROOT / "config" / "simulator.toml").read_text()
    text += f'\n[store]\nstate_dir = "{tmp_path / "state"}"\nruntime_dir = "{tmp_path / "run"}"\n'
    path = tmp_path / "evsed.toml"
    path.write_text(text)
    (tmp_path / "state").mkdir()
    store = Store(tmp_path / "state" / "sessions.db")
    for i, (tag, name) in enumerate((("04A1B2C3", "Alice"), ("04D4E5F6", "Bob"))):
        s = LiveSession(1, tag, name, "family", "local", f"2026-01-0{5 + i}T09:00:00+00:00", 1000, 1000)
        store.start(s)
        store.stop(s.row_id, 8400 + i, 11040.0, "ev_disconnected", f"2026-01-0{5 + i}T10:00:00+00:00")
    store.close()
    return path


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evsed", *args], capture_output=True, text=True, timeout=60)


def test_sessions_as_table_csv_and_json(tmp_path):
    path = config_with_sessions(tmp_path)
    table = run("sessions", "-c", str(path))
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[0].split()[:4] == ["id", "conn", "card", "start"]
    assert "Alice" in lines[1] and "2026-01-05 10:00:00" in lines[1] and "7400" in lines[1]
    assert lines[1].endswith("ev_disconnected")
    rows = list(csv.DictReader(io.StringIO(run("sessions", "-c", str(path), "--format", "csv").stdout)))
    assert [r["card_name"] for r in rows] == ["Alice", "Bob"]
    assert rows[1]["energy_wh"] == "7401" and rows[1]["meter_start_wh"] == "1000"
    data = json.loads(run("sessions", "-c", str(path), "--format", "json", "--card", "Bob").stdout)
    assert [(d["id_tag"], d["stop_reason"], d["peak_power_w"]) for d in data] == [("04D4E5F6", "ev_disconnected", 11040.0)]
    since = json.loads(run("sessions", "-c", str(path), "--format", "json", "--since", "2026-01-06").stdout)
    assert [d["card_name"] for d in since] == ["Bob"]


def test_status_without_a_daemon_says_so(tmp_path):
    path = config_with_sessions(tmp_path)
    proc = run("status", "-c", str(path))
    assert proc.returncode == 1 and "no evsed daemon is running" in proc.stderr and "Traceback" not in proc.stderr


def test_status_text_shows_why_not_charging():
    text = cli.format_status(pr.connector(
        status="Preparing", state="B", measured=p.Measured(current_a=(0, 0, 0), power_w=0, energy_wh=12, stale=False),
        faults=(p.FaultNow(fault="rcd", detail="trip 1", clears_by="retry", lockout=False, retry_in_s=299.0),),
        last_refusal=p.Refusal(id_tag="DEADBEEF", reason="unknown card", at="2026-01-05T09:00:00+00:00",
                               card_name=""),
        reason="card refused: unknown card"))
    assert "connector 1: Preparing" in text
    assert "state B, steady +12 V" in text and "contactor   open" in text
    assert "fault       rcd (trip 1); retry in 299.0 s" in text
    assert "refused     card DEADBEEF: unknown card" in text
    assert "why         card refused: unknown card" in text


def test_status_text_shows_an_unavailable_pilot_and_why():
    text = cli.format_status(pr.connector(
        state=None, pilot_error="OpenEVSE /dev/ttyUSB0: serial link lost: device disconnected"))
    assert "state ?, steady +12 V" in text
    assert "pilot       unavailable: OpenEVSE /dev/ttyUSB0: serial link lost: device disconnected" in text
    assert "meter " not in text  # none configured, none failing


def test_status_text_shows_why_the_meter_gives_no_reading():
    text = cli.format_status(pr.connector(meter_error="Modbus /dev/ttyUSB1 unit 1: no answer within 0.5 s"))
    assert "  meter       no reading: Modbus /dev/ttyUSB1 unit 1: no answer within 0.5 s" in text
