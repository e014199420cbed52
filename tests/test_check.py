"""`evsed check`: every configured device opened once, a JSON report, exit 1 on a failure."""

import pytest
import asyncio
import json
import socket
import subprocess
import sys
from pathlib import Path

from evsed import config
from evsed.cli import check
from hal.meter_models import MODELS
from simulator.modbus_meter import KNOWN, SimulatedMeter, tcp_server

ROOT = Path(__file__).parent.parent


def sim_config(tmp_path: Path, meter: str = "") -> Path:
    text = (ROOT / "config" / "simulator.toml").read_text()
    if meter:
        text = text.replace('[connector.meter]\nbackend = "sim"', meter)
    text += f'\n[store]\nstate_dir = "{tmp_path / "state"}"\nruntime_dir = "{tmp_path / "run"}"\n'
    path = tmp_path / "evsed.toml"
    path.write_text(text)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_simulator_check_passes_and_reports_every_device(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "evsed", "check", "-c", str(sim_config(tmp_path)), "--json"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    conn = report["connectors"][0]
    assert conn["pilot"]["state"] == "A" and conn["pilot"]["high_v"] == 12.0
    assert conn["contactor"]["feedback"] == "open" and conn["rcd"]["tripped"] is False
    assert report["rfid"]["ok"] and report["ok"]
    assert set(report["meter"]) >= {"voltage_v", "current_a", "power_w", "power_total_w", "energy_import_wh",
                                    "frequency_hz"}


def test_modbus_meter_is_read_in_units_with_null_where_the_model_lacks_it(tmp_path):
    async def scenario():
        async with tcp_server(SimulatedMeter(MODELS["sdm72d"])) as port:
            meter = (f'[connector.meter]\nbackend = "modbus"\nmodel = "sdm72d"\ntransport = "tcp"\n'
                     f'host = "127.0.0.1"\ntcp_port = {port}\ntimeout_s = 0.5')
            return await check.run_check(config.load(sim_config(tmp_path, meter)))

    report = asyncio.run(scenario())
    assert report["ok"]
    meter = report["meter"]
    assert meter["energy_import_wh"] == KNOWN["energy_import_wh"]
    assert meter["power_total_w"] == KNOWN["power_total_w"]
    assert meter["voltage_v"] is None and meter["current_a"] is None and meter["frequency_hz"] is None


def test_a_meter_that_does_not_answer_fails_the_check_with_the_reason(tmp_path):
    meter = (f'[connector.meter]\nbackend = "modbus"\nmodel = "sdm630"\ntransport = "tcp"\n'
             f'host = "127.0.0.1"\ntcp_port = {free_port()}\ntimeout_s = 0.2')
    proc = subprocess.run([sys.executable, "-m", "evsed", "check", "-c", str(sim_config(tmp_path, meter))],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    line = next(l for l in proc.stdout.splitlines() if "connector 1 meter" in l)
    assert line.lstrip().startswith("FAIL") and "127.0.0.1" in line
    assert proc.stdout.rstrip().endswith("some devices failed")


@pytest.mark.parametrize("section, good, typo", [
    ("ocpp", 'url = "ws://127.0.0.1:9000"', "identiy"),
    ("mqtt", 'url = "mqtt://127.0.0.1"', "base_topc"),
    ("web", "port = 8080", "prot"),
])
def test_a_typo_in_a_service_section_fails_check_with_file_line_and_key(tmp_path, capsys, section, good, typo):
    from evsed import cli
    path = tmp_path / "evsed.toml"
    path.write_text('[[connector]]\npilot = { backend = "sim" }\ncontactor = { backend = "sim" }\n'
                    f"[store]\nstate_dir = \"{tmp_path / 's'}\"\nruntime_dir = \"{tmp_path / 'r'}\"\n"
                    f"[{section}]\n{good}\n{typo} = 1\n")
    assert cli.main(["check", "-c", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"evsed: {path}:9: [{section}] {typo}: unknown key") and "\n" not in err


def test_check_beside_a_running_daemon_validates_the_changed_config_and_opens_no_device(tmp_path):
    # The daemon charges; the host adds a card and checks the file before `evsed reload`. check must
    # not open what the daemon holds (before, it refused: "stop it first").
    from test_daemon import charging, write_config
    path = write_config(tmp_path)
    cfg = config.load(path)

    async def scenario():
        async with charging(cfg) as daemon:
            path.write_text(path.read_text() + '\n[[card]]\nuid = "0BADC0DE"\nname = "Carol"\n')
            good = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "evsed", "check", "-c", str(path)],
                                           capture_output=True, text=True, timeout=60)
            path.write_text(path.read_text() + '\n[[card]]\nuid = "not hex"\n')
            bad = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "evsed", "check", "-c", str(path)],
                                          capture_output=True, text=True, timeout=60)
            return good, bad, daemon.world.connector(1).contactor_closed

    good, bad, still_closed = asyncio.run(scenario())
    assert good.returncode == 0, good.stdout + good.stderr
    lines = good.stdout.splitlines()
    assert lines[0] == f"config {path}: valid"
    assert lines[1].startswith("devices not opened: the running daemon (pid ") and lines[1].endswith("holds them")
    assert lines[2].startswith("  connector 1: Charging, pilot state C, contactor closed, meter ")
    assert still_closed
    assert bad.returncode == 2 and "[card] uid: not a hex card UID" in bad.stderr


def board_config(tmp_path: Path, port: str, timing: str) -> Path:
    link = f'backend = "openevse"\nport = "{port}"\n'
    path = tmp_path / "evsed.toml"
    path.write_text(f"[[connector]]\ncable_a = 16\n[connector.pilot]\n{link}[connector.contactor]\n{link}"
                    f"[connector.rcd]\n{link}[timing]\n{timing}\n[store]\nstate_dir = \"{tmp_path / 'state'}\"\n"
                    f"runtime_dir = \"{tmp_path / 'run'}\"\n")
    return path


def test_rcd_retry_settings_beside_an_openevse_rcd_get_a_note_naming_their_lines(tmp_path):
    from simulator.openevse_rapi import OpenEvseEmulator
    with OpenEvseEmulator() as board:
        cfg = config.load(board_config(tmp_path, board.port, "stop_grace_s = 6\nrcd_retry_s = 600\n"
                                                              "rcd_max_retries = 2"))
        report = asyncio.run(check.run_check(cfg))
    assert report["ok"]
    retry, retries = report["notes"]
    assert retry.startswith(f"{cfg.path}:14: [timing] rcd_retry_s does not govern the OpenEVSE board's GFCI")
    assert retries.startswith(f"{cfg.path}:15: [timing] rcd_max_retries") and "retries it itself" in retries
    assert "  note " + retry in check.format_report(report)


def test_no_note_without_the_settings_or_without_an_openevse_rcd(tmp_path):
    from simulator.openevse_rapi import OpenEvseEmulator
    with OpenEvseEmulator() as board:
        report = asyncio.run(check.run_check(config.load(board_config(tmp_path, board.port, "stop_grace_s = 6"))))
    assert report["ok"] and report["notes"] == []
    path = sim_config(tmp_path)
    path.write_text(path.read_text() + "\n[timing]\nrcd_retry_s = 600\n")
    assert check.notes(config.load(path)) == []  # the simulator's RCD: the core's retry governs it
