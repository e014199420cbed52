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


def test_there_is_a_scenario_per_policy_rule():
    names = {p.stem for p in SCENARIOS}
    for rule in ("night_window", "dst_spring", "dst_autumn", "overload", "site_meter_loss", "two_connectors",
                 "cap_14a", "solar_day", "pp_socket", "group_stop", "free_vend_stop", "reload", "cards_learn", "one_phase_pause",
                 "ev_ignores_lower_offer", "ev_ignores_small_lowering", "shared_by_draw"):
        assert rule in names


def test_there_is_a_scenario_per_plan_rule():
    names = {p.stem for p in SCENARIOS}
    for rule in ("plan_three_prices", "plan_dst_night", "plan_load_limit", "plan_ev_draws_less", "plan_prices_late",
                 "plan_power_cut", "plan_solar"):
        assert rule in names


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
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


CHARGING = '''
[[step]]
t = 1
do = "plug"
[[step]]
t = 2
do = "tap"
card = "04A1B2C3"
'''


def run_text(tmp_path, text):
    path = tmp_path / "s.toml"
    path.write_text(text)
    return asyncio.run(scenario.load(path).run(verbose=False))


def test_a_span_that_stops_holding_fails_and_says_when(tmp_path):
    result = run_text(tmp_path, CHARGING + '''
[[step]]
t = 3
until = 20
expect = { hw_contactor = "closed" }
[[step]]
t = 10
do = "unplug"
''')
    assert len(result.failed) == 1 and "stopped holding at t=10s" in result.failed[0]


def test_within_fails_when_it_comes_true_too_late(tmp_path):
    result = run_text(tmp_path, CHARGING + '''
[[step]]
t = 10
do = "remote-stop"
[[step]]
t = 10
within = 0.1
expect = { hw_contactor = "open" }
[[step]]
t = 10
within = 0.1
expect = { pilot_output = "off" }
''')  # the EV drops to B at once: the open comes at once too, PWM off even sooner
    assert result.failed == [] and len(result.passed) == 2
    result = run_text(tmp_path, '[[step]]\nt = 0\ndo = "ev"\nignore_stop = true\n' + CHARGING + '''
[[step]]
t = 10
do = "remote-stop"
[[step]]
t = 10
within = 1
expect = { hw_contactor = "open" }
''')  # an EV that ignores the stop keeps the contactor closed for the 6 s grace
    assert len(result.failed) == 1 and "not true by t=11s" in result.failed[0]


def test_never_and_event_counts_fail_when_broken(tmp_path):
    result = run_text(tmp_path, CHARGING + '''
[[step]]
t = 0
until = 30
never = { hw_contactor = "closed" }
[[step]]
t = 0
until = 30
events = { type = "contactor.closed", max = 0 }
''')
    assert len(result.failed) == 2
    assert any("happened at" in f for f in result.failed) and any("1 contactor.closed events" in f for f in result.failed)


def test_tolerances_tell_26_67_from_26_7(tmp_path):
    result = run_text(tmp_path, '[config.charger]\nmax_current_a = 16\n' + CHARGING + '''
[[step]]
t = 5
expect = { duty_pct = { value = 26.667, tol = 0.01 }, hw_duty_pct = { value = 26.667, tol = 0.01 } }
[[step]]
t = 5
expect = { duty_pct = { value = 26.7, tol = 0.01 } }
''')
    assert len(result.passed) == 2 and len(result.failed) == 1 and "26.7" in result.failed[0]
