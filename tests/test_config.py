"""The config file: defaults, and errors that name file, line and key."""

import subprocess
import sys
from pathlib import Path

import pytest

from evsed import config

ROOT = Path(__file__).parent.parent
MINIMAL = """
[[connector]]
[connector.pilot]
backend = "sim"
[connector.contactor]
backend = "sim"
"""


def error_for(text: str) -> config.ConfigError:
    with pytest.raises(config.ConfigError) as info:
        config.parse(text, "evsed.toml")
    return info.value


def test_simulator_config_loads_with_its_cards():
    cfg = config.load(ROOT / "config" / "simulator.toml")
    assert [c.uid for c in cfg.cards] == ["04A1B2C3", "04D4E5F6", "0A0B0C0D"]
    assert cfg.connectors[0].pilot.backend == "sim"
    assert cfg.connectors[0].meter.backend == "sim"


def test_every_key_has_a_default_but_the_switching_backends():
    cfg = config.parse(MINIMAL, "evsed.toml")
    assert cfg.charger.max_current_a == 32.0
    assert cfg.timing.stop_grace_s == 6.0
    assert cfg.timing.rcd_retry_s == 300.0 and cfg.timing.rcd_max_retries == 6
    assert cfg.connectors[0].cable_a == 32.0 and cfg.connectors[0].meter is None
    assert cfg.rfid is None and cfg.cards == ()


def test_missing_contactor_backend_is_an_error_not_a_simulator():
    err = error_for('[[connector]]\n[connector.pilot]\nbackend = "sim"\n')
    assert err.line == 1 and "contactor" in str(err) and "required" in str(err)


def test_unknown_key_names_file_line_key_and_suggests():
    err = error_for(MINIMAL + "[charger]\nmax_curent_a = 16\n")
    assert str(err) == "evsed.toml:8: [charger] max_curent_a: unknown key (did you mean 'max_current_a'?)"


def test_wrong_type_names_the_line():
    err = error_for('[charger]\nfree_vend = "yes"\n' + MINIMAL)
    assert str(err).startswith("evsed.toml:2: [charger] free_vend: expected a boolean, got a string")


def test_out_of_range_value():
    err = error_for(MINIMAL + "[charger]\nmax_current_a = 100\n")
    assert err.line == 8 and "out of range 6..80" in str(err)


def test_unknown_backend_lists_the_choices():
    err = error_for(MINIMAL.replace('backend = "sim"\n[connector.contactor]', 'backend = "gpoi"\n[connector.contactor]'))
    assert err.line == 4 and "[connector.pilot] backend" in str(err) and "'sim'" in str(err)


def test_backend_option_typo_is_caught_at_load():
    err = error_for(MINIMAL + "feedbak = true\n")
    assert err.line == 7 and "did you mean 'feedback'" in str(err)


def test_syntax_error_names_the_line():
    err = error_for("[charger]\nid = \n")
    assert err.line == 2 and "TOML syntax" in str(err)


def test_bad_card_uid_and_duplicates():
    err = error_for(MINIMAL + '[[card]]\nuid = "04:A1"\n[[card]]\nuid = "04a1"\n')
    assert err.line == 10 and "listed twice" in str(err)
    err = error_for(MINIMAL + '[[card]]\nuid = "xyz"\n')
    assert err.line == 8 and "not a hex card UID" in str(err)


def test_unknown_time_zone():
    err = error_for('[charger]\ntimezone = "Mars/Olympus"\n' + MINIMAL)
    assert err.line == 2 and "unknown time zone" in str(err)


def test_pilot_lost_must_cover_two_polls():
    err = error_for(MINIMAL + "[timing]\npilot_poll_s = 0.1\npilot_lost_s = 0.15\n")
    assert "pilot_lost_s" in str(err)


def test_second_connector_errors_point_at_its_own_lines():
    text = MINIMAL + MINIMAL.replace("[[connector]]", "[[connector]]\nid = 2\ncable_a = 90")
    err = error_for(text)
    assert err.line == 10 and "[connector] cable_a" in str(err)


def test_broken_config_exits_2_with_one_line_and_no_traceback(tmp_path):
    path = tmp_path / "evsed.toml"
    path.write_text(MINIMAL + "[store]\nretention_days = 5\n")
    proc = subprocess.run([sys.executable, "-m", "evsed", "run", "-c", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"evsed: {path}:8: [store] retention_days: unknown key (did you mean 'sample_retention_days'?)"
    assert "Traceback" not in proc.stderr


def test_missing_file_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "evsed", "run", "-c", str(tmp_path / "nope.toml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "cannot read" in proc.stderr


@pytest.mark.parametrize("path", sorted((ROOT / "config").glob("*.toml")), ids=lambda p: p.name)
def test_every_example_config_is_valid(path):
    cfg = config.load(path)
    assert cfg.connectors and cfg.connectors[0].contactor.backend


def test_nan_and_infinity_are_refused():
    err = error_for(MINIMAL + "[timing]\nmeter_timeout_s = nan\n")
    assert err.line == 8 and "finite" in str(err)
    err = error_for("[charger]\nmax_current_a = inf\n" + MINIMAL)
    assert err.line == 2 and "finite" in str(err)


def test_array_items_must_be_tables():
    err = error_for("connector = [1]\n")
    assert err.line == 1 and "expected [[connector]] tables" in str(err)
    err = error_for('card = ["04A1B2C3"]\n' + MINIMAL)
    assert "expected [[card]] tables" in str(err)


def test_systemd_directories_are_the_defaults_under_the_service(monkeypatch, tmp_path):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "run"))
    cfg = config.parse(MINIMAL, "evsed.toml")
    assert cfg.store.state_dir == tmp_path / "state" and cfg.store.runtime_dir == tmp_path / "run"


def test_brackets_inside_strings_of_a_multiline_array_keep_later_lines_right():
    from evsed.config.tomlines import key_lines
    text = '[charger]\nid = "x"\nnote = [\n  "a ] b",  # ] too\n  "c",\n]\nphases = 2\n[[card]]\nuid = "01"\n'
    lines = key_lines(text)
    assert lines["charger.note"] == 3 and lines["charger.phases"] == 7 and lines["card[0].uid"] == 9


def test_card_repeat_time_is_a_timing_key_passed_to_the_core():
    cfg = config.parse(MINIMAL, "evsed.toml")
    assert cfg.timing.card_repeat_s == 2.0
    cfg = config.parse(MINIMAL + "[timing]\ncard_repeat_s = 0.5\n", "evsed.toml")
    assert cfg.core_config(cfg.connectors[0]).card_repeat_s == 0.5


def test_meter_timeout_must_leave_room_for_the_pause_and_its_grace():
    err = error_for(MINIMAL + "[timing]\nmeter_timeout_s = 7\n")
    assert err.line == 8 and "[timing] meter_timeout_s: must be at least stop_grace_s" in str(err)


# --- configs that used to slip through (issue 8) -------------------------------------------

SLIPS = {  # name: (text after MINIMAL, expected line, expected "[table] key", words in the message)
    "huge integer for a float key": ("[charger]\nmax_current_a = " + "9" * 400 + "\n", 8, "[charger] max_current_a",
                                     "more than 40 digits"),
    "huge integer for an int key": ("[timing]\nrcd_max_retries = " + "9" * 5000 + "\n", 8,
                                    "[timing] rcd_max_retries", "more than 40 digits"),
    "arrays nested 500 deep": ("[charger]\nid = " + "[" * 500 + "]" * 500 + "\n", 8, "[charger] id", "nested"),
    "inline tables nested 500 deep": ("[charger]\nid = " + "{a=" * 500 + "1" + "}" * 500 + "\n", 8,
                                      "[charger] id", "nested"),
    "a nested array spread over lines": ("[charger]\nid = [\n" + "[\n" * 40 + "]\n" * 40 + "]\n", 24,
                                         "[charger] id", "nested"),
    "duplicate connector id": (MINIMAL.replace("[[connector]]", "[[connector]]\nid = 1"), 9, "[connector] id",
                               "connector id 1 is used twice (also at line 2)"),
    "[[charger]] as an array": ("[[charger]]\nid = \"x\"\n", 7, "top level charger", "[[charger]]"),
    "a very deep table header": ("[" + ".".join(["a"] * 1000) + "]\nx = 1\n", 7, "top level a", "dotted parts"),
    "a 10 MB id": ("[charger]\nid = \"" + "x" * 10_000_000 + "\"\n", 8, "[charger] id",
                   "a line of 10000007 characters, at most 1048576"),
    "an id longer than OCPP allows": ("[charger]\nid = \"" + "x" * 49 + "\"\n", 8, "[charger] id",
                                      "longer than 48 characters"),
    "a 100,000-character card UID": ("[[card]]\nuid = \"" + "A" * 100_000 + "\"\n", 8, "[card] uid",
                                     "longer than 64 characters"),
    "a card UID longer than 10 bytes": ("[[card]]\nuid = \"" + "A" * 22 + "\"\n", 8, "[card] uid", "at most 20"),
    "state_dir is a file": ("[store]\nstate_dir = \"/etc/passwd\"\n", 8, "[store] state_dir", "not a directory"),
    "state_dir under a file": ("[store]\nstate_dir = \"/etc/passwd/evsed\"\n", 8, "[store] state_dir",
                               "not a directory"),
    "runtime_dir under /proc": ("[store]\nruntime_dir = \"/proc/evsed\"\n", 8, "[store] runtime_dir", "under /proc"),
    "runtime_dir too long for the socket": ("[store]\nruntime_dir = \"/tmp/" + "d" * 90 + "\"\n", 8,
                                            "[store] runtime_dir", "too long for the control socket"),
}


@pytest.mark.parametrize("name", SLIPS)
def test_a_bad_config_gives_one_line_with_file_line_and_key_and_exit_2(name, tmp_path, capsys):
    from evsed import cli
    text, line, where, words = SLIPS[name]
    path = tmp_path / "evsed.toml"
    path.write_text(MINIMAL + text)
    assert cli.main(["check", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"evsed: {path}:{line}: {where}"), err[:300]
    assert words in err and len(err) < 400


def test_runtime_dir_at_the_socket_path_limit_is_accepted():
    room = 107 - len("/tmp/") - len("/control.sock")
    cfg = config.parse(MINIMAL + f'[store]\nruntime_dir = "/tmp/{"d" * room}"\n', "evsed.toml")
    assert len(str(cfg.store.runtime_dir / "control.sock")) == 107
    err = error_for(MINIMAL + f'[store]\nruntime_dir = "/tmp/{"d" * (room + 1)}"\n')
    assert "too long for the control socket" in str(err)


def test_a_huge_integer_through_the_data_api_is_an_error_not_an_overflow():
    err = None
    with pytest.raises(config.ConfigError) as info:
        config.build({"charger": {"max_current_a": 10 ** 400}, **config.tomllib.loads(MINIMAL)}, "evsed.toml")
    err = info.value
    assert "[charger] max_current_a" in str(err) and "too large" in str(err) and len(str(err)) < 200


def test_a_one_megabyte_key_name_is_not_echoed_whole():
    err = error_for(MINIMAL + "[charger]\n" + "k" * 1_000_000 + " = 1\n")
    assert err.line == 8 and "unknown key" in str(err) and "(1000000 characters)" in str(err)
    assert len(str(err)) < 200


def test_one_sided_bounds_say_at_least_or_at_most_never_none():
    assert config._range_text(0, None) == " must be at least 0"
    assert config._range_text(None, 5) == " must be at most 5"
    err = error_for(MINIMAL + "[simulator]\nmeter_start_wh = -1\n")
    assert "None" not in str(err) and "out of range 0..1000000000000" in str(err)


def test_a_fifo_as_the_config_path_is_refused_without_hanging(tmp_path):
    import os
    fifo = tmp_path / "evsed.toml"
    os.mkfifo(fifo)
    with pytest.raises(config.ConfigError) as info:
        config.load(fifo)  # no writer: a plain open() would block here for ever
    assert str(info.value) == f"{fifo}: not a regular file"


def test_a_default_directory_that_cannot_work_is_a_config_error_too(monkeypatch, tmp_path):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "file"))
    err = error_for(MINIMAL)
    assert "[store] state_dir: the default" in str(err) and "not a directory" in str(err)


def test_line_scanning_is_linear_in_a_line_full_of_quotes_and_backslashes():
    # A regex that strips strings retried from every quote: an 80 kB comment took 30 s (O(n^2)).
    text = MINIMAL + '[charger]\nid = "x"\nnote = [\n  # ' + '"\\' * 200_000 + '\n  1,\n]\nphases = 1\n'
    err = error_for(text)  # `note` is no key; reaching the check at all is the point
    assert err.line == 9 and "[charger] note: unknown key" in str(err)
    from evsed.config.tomlines import key_lines
    assert key_lines(text)["charger.phases"] == 13


def test_an_openevse_relay_grace_not_below_the_contactor_settle_time_is_an_error_at_its_line(tmp_path):
    text = ('[timing]\ncontactor_settle_s = 0.2\n[[connector]]\n[connector.pilot]\nbackend = "openevse"\n'
            'port = "/dev/ttyUSB0"\nrelay_grace_s = 0.25\n[connector.contactor]\nbackend = "sim"\n')
    with pytest.raises(config.ConfigError) as err:
        config.parse(text, tmp_path / "evsed.toml")
    assert str(err.value).startswith(f"{tmp_path / 'evsed.toml'}:7: [connector.pilot] relay_grace_s: 0.25 s must be below")


def test_a_heartbeat_too_slow_for_the_drop_out_is_an_error_at_its_line(tmp_path):
    path = tmp_path / "evsed.toml"
    text = ('[[connector]]\n[connector.pilot]\nbackend = "sim"\n[connector.contactor]\nbackend = "sim"\n'
            'heartbeat = true\nheartbeat_hz = 1\ndropout_s = 0.5\n')
    with pytest.raises(config.ConfigError) as err:
        config.parse(text, path)
    assert str(err.value).startswith(f"{path}:7: [connector.contactor] heartbeat_hz: dropout_s = 0.5 s with "
                                     "heartbeat_hz = 1 leaves fewer than 3 heartbeat edges")
    assert "heartbeat_hz to at least 6" in str(err.value) and "dropout_s" not in str(err.value).split("raise")[1]
    gpio = ('[[connector]]\n[connector.pilot]\nbackend = "sim"\n[connector.contactor]\nbackend = "gpio"\npin = 17\n'
            'heartbeat_pin = 27\ndropout_s = 0.2\n')  # 10 Hz by default: 2 edges
    with pytest.raises(config.ConfigError) as err:
        config.parse(gpio, path)
    assert str(err.value).startswith(f"{path}:8: [connector.contactor] dropout_s:")
    assert config.parse(text.replace("heartbeat_hz = 1", "heartbeat_hz = 6"), path)
    assert config.parse(text.replace("heartbeat = true", "heartbeat = false"), path)  # no circuit: no rule


def test_an_openevse_reopen_interval_is_bounded_and_one_per_board(tmp_path):
    board = '[[connector]]\n[connector.pilot]\nbackend = "openevse"\nport = "/dev/ttyUSB0"\n{pilot}' \
            '[connector.contactor]\nbackend = "openevse"\nport = "/dev/ttyUSB0"\n{contactor}'
    both = board.format(pilot="reopen_s = 0.5\n", contactor="reopen_s = 0.5\n")
    parsed = config.parse(both, tmp_path / "evsed.toml")
    assert parsed.connectors[0].pilot.options["reopen_s"] == 0.5
    assert config.parse(board.format(pilot="", contactor=""), tmp_path / "evsed.toml") \
        .connectors[0].contactor.options["reopen_s"] == 2.0
    with pytest.raises(config.ConfigError, match=r":5: \[connector.pilot\] reopen_s"):
        config.parse(board.format(pilot="reopen_s = 0\n", contactor=""), tmp_path / "evsed.toml")
    with pytest.raises(config.ConfigError, match=r":8: \[connector.contactor\] reopen_s: 5.0 differs"):
        config.parse(board.format(pilot="", contactor="reopen_s = 5.0\n"), tmp_path / "evsed.toml")
