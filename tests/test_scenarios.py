"""Every scenario under simulator/scenarios runs on the virtual clock and meets its expectations."""

import asyncio
from pathlib import Path

import pytest

from evsed.shell import scenario

SCENARIOS = sorted((Path(__file__).parent.parent / "simulator" / "scenarios").glob("*.toml"))


def test_there_is_a_scenario_per_safety_rule():
    names = {p.stem for p in SCENARIOS}
    for rule in ("c_to_b_opens", "pilot_faults_open", "diode_fault", "evse_stop_grace", "pause_below_6a",
                 "rcd_retry_lockout", "welded_contactor", "contactor_fails_to_close", "wakeup",
                 "tap_then_plug_expires", "free_vend", "ventilation_refused", "ventilation_allowed",
                 "overcurrent", "meter_silence_opens", "high_current_duty", "rcd_self_test"):
        assert rule in names


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_there_is_a_scenario_per_policy_rule():
    names = {p.stem for p in SCENARIOS}
    for rule in ("night_window", "dst_spring", "dst_autumn", "overload", "site_meter_loss", "two_connectors",
                 "cap_14a", "solar_day", "pp_socket", "group_stop", "free_vend_stop", "reload", "cards_learn"):
        assert rule in names


def test_scenario_meets_every_expectation(path):
    runner = scenario.load(path)
    result = asyncio.run(runner.run(verbose=False))
    assert result.passed, "a scenario without expectations proves nothing"
    assert result.failed == []


def test_a_failed_expectation_is_reported_with_what_was_seen(tmp_path, capsys):
    path = tmp_path / "wrong.toml"
    path.write_text('[[step]]\nt = 1\ndo = "plug"\n[[step]]\nt = 2\nexpect = { contactor = "closed" }\n')
    assert scenario.run_files([path], verbose=False) == 1
    out = capsys.readouterr().out
    assert "FAIL t=2s contactor: expected 'closed', got 'open'" in out


def test_an_unknown_action_is_a_scenario_error(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text('[[step]]\nt = 1\ndo = "teleport"\n')
    assert scenario.run_files([path], verbose=False) == 1
    assert "unknown action 'teleport'" in capsys.readouterr().out


def test_scenario_config_errors_name_the_scenario_file(tmp_path, capsys):
    path = tmp_path / "cfg.toml"
    path.write_text('[config.charger]\nmax_current_a = 500\n[[step]]\nt = 1\ndo = "plug"\n')
    assert scenario.run_files([path], verbose=False) == 1
    out = capsys.readouterr().out
    assert f"{path}" in out and "max_current_a" in out and "out of range" in out
