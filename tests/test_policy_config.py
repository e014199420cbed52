"""[[group]], [[window]], [charger] mode and the load-management keys of [site]: defaults, and
errors that name file, line and key."""

import pytest

from evsed import config
from evsed.core import windows

BASE = '''
[charger]
timezone = "Europe/Berlin"
[[connector]]
[connector.pilot]
backend = "sim"
[connector.contactor]
backend = "sim"
'''


def parse(extra: str) -> config.Config:
    return config.parse(BASE + extra, "evsed.toml")


def error(extra: str) -> str:
    with pytest.raises(config.ConfigError) as exc:
        parse(extra)
    return str(exc.value)


def test_no_policy_tables_means_fast_mode_no_windows_no_load_management():
    cfg = parse("")
    assert cfg.charger.mode == "fast" and cfg.charger.unsynced_clock == "ignore"
    assert cfg.policy.schedule.windows == () and cfg.site.load.dlm is None
    assert cfg.connectors[0].socket and cfg.connectors[0].priority == 0


def test_a_group_carries_its_cap_who_may_stop_and_its_windows():
    cfg = parse('''
[[group]]
name = "staff"
max_current_a = 16
stop_by = "group"
windows = ["night"]
[[window]]
name = "night"
days = ["mon-fri"]
start = "22:00"
end = "06:00"
action = "allow"
''')
    staff = cfg.policy.group("staff")
    assert staff.max_current_a == 16 and staff.stop_by == "group"
    night = cfg.policy.schedule.windows[0]
    assert night.groups == frozenset({"staff"}) and night.days == frozenset(range(5))
    assert night.start_min == 22 * 60 and night.end_min == 6 * 60
    assert cfg.policy.schedule.tz.key == "Europe/Berlin"


def test_a_group_naming_an_unknown_window_is_an_error():
    assert "names window 'nite', which no [[window]] defines" in error('''
[[group]]
name = "staff"
windows = ["nite"]
''')


def test_a_window_error_names_file_line_and_key():
    msg = error('''
[[window]]
start = "25:00"
end = "06:00"
action = "forbid"
''')
    assert msg.startswith("evsed.toml:") and "[window] start" in msg and "25:00" in msg


def test_a_cap_window_needs_its_current_and_only_it_has_one():
    assert "max_current_a: goes with action = \"cap\"" in error('''
[[window]]
start = "17:00"
end = "19:00"
action = "cap"
''')


def test_a_mode_window_switches_the_mode_and_is_not_a_charging_window():
    cfg = parse('''
[[window]]
name = "noon"
start = "11:00"
end = "15:00"
action = "mode"
mode = "solar"
[site.meter]
backend = "sim"
''')
    assert cfg.policy.schedule.windows == () and cfg.policy.mode_windows[0].mode == "solar"


def test_a_window_naming_an_unknown_group_is_an_error():
    assert "no [[group]] or [[card]] has group 'staf'" in error('''
[[window]]
start = "17:00"
end = "19:00"
action = "forbid"
groups = ["staf"]
''')


def test_charger_mode_and_unsynced_clock_rule_are_bounded():
    with pytest.raises(config.ConfigError, match=r"evsed.toml:4: \[charger\] mode: expected one of 'fast'"):
        config.parse(BASE.replace('timezone = "Europe/Berlin"', 'timezone = "Europe/Berlin"\nmode = "eco"'),
                     "evsed.toml")
    cfg = config.parse(BASE.replace('timezone = "Europe/Berlin"', 'unsynced_clock = "forbid"'), "e.toml")
    assert cfg.policy.schedule.unsynced is windows.UnsyncedRule.FORBID


def test_site_load_management_keys_and_their_defaults():
    cfg = parse('''
[site]
breaker_a = [35, 35, 25]
[site.meter]
backend = "sim"
[site.input]
backend = "sim"
cap_kw = 4.2
''')
    dlm = cfg.site.load.dlm
    assert dlm.breaker_a == (35, 35, 25) and dlm.headroom_a == 1.0 and dlm.min_pause_s == 120
    assert dlm.share == "equal" and dlm.grace_s == cfg.timing.current_change_grace_s
    assert cfg.site.load.cap_kw == 4.2 and cfg.site.load.input.backend == "sim"


def test_one_phase_supply_is_one_breaker_value_in_a_list():
    cfg = parse('[site]\nbreaker_a = [40]\n[site.meter]\nbackend = "sim"\n')
    assert cfg.site.load.dlm.breaker_a == (40, 0, 0)


def test_load_management_needs_a_site_meter():
    assert "[site] breaker_a: load management needs a site meter" in error('[site]\nbreaker_a = 25\n')


def test_a_load_management_key_without_a_breaker_says_so():
    assert "headroom_a: goes with breaker_a" in error('[site]\nheadroom_a = 2\n[site.meter]\nbackend = "sim"\n')


def test_sharing_keys_and_declared_phases():
    cfg = config.parse(BASE.replace("[[connector]]", "[[connector]]\nphases = [2]") + '''
[[group]]
name = "vans"
phases = [1, 2, 3]
[site]
breaker_a = 25
min_first = true
draw_margin_a = 0.5
reoffer_interval_s = 600
[site.meter]
backend = "sim"
''', "e.toml")
    dlm = cfg.site.load.dlm
    assert (dlm.min_first, dlm.draw_margin_a, dlm.reoffer_interval_s) == (True, 0.5, 600)
    assert cfg.connectors[0].phases == (2,) and cfg.policy.group("vans").phases == (1, 2, 3)


@pytest.mark.parametrize("phases", ["[0]", "[1, 1]", "[4]", "[]", "3", "[true]"])
def test_declared_phases_are_a_list_of_1_to_3(phases):
    err = error(f'[[group]]\nname = "g"\nphases = {phases}\n')
    assert "[group] phases" in err


def test_a_one_phase_charger_has_only_phase_1():
    with pytest.raises(config.ConfigError) as exc:
        config.parse(BASE.replace("[charger]", "[charger]\nphases = 1").replace("[[connector]]", "[[connector]]\nphases = [2]"),
                     "evsed.toml")
    assert "[connector] phases: a one-phase charger" in str(exc.value)


def test_turns_last_rotate_s_by_default_30_min_and_0_turns_them_off():
    site = '[site]\nbreaker_a = 25\n{}[site.meter]\nbackend = "sim"\n'
    assert config.parse(BASE + site.format(""), "e.toml").site.load.dlm.rotate_s == 1800
    assert config.parse(BASE + site.format("rotate_s = 0\n"), "e.toml").site.load.dlm.rotate_s == 0
    assert "[site] rotate_s" in error(site.format("rotate_s = -1\n"))
    assert "rotate_s: goes with breaker_a" in error('[site]\nrotate_s = 600\n[site.meter]\nbackend = "sim"\n')


def test_a_sharing_key_without_a_breaker_says_so():
    assert "min_first: goes with breaker_a" in error('[site]\nmin_first = true\n[site.meter]\nbackend = "sim"\n')


def test_connector_priority_and_socket():
    cfg = config.parse(BASE.replace("[[connector]]", "[[connector]]\ncable_a = 20\npriority = 3"), "e.toml")
    assert cfg.connectors[0].priority == 3 and not cfg.connectors[0].socket


def test_window_days_accept_a_wrapping_range():
    cfg = parse('[[window]]\ndays = "sat-mon"\nstart = "00:00"\nend = "24:00"\naction = "forbid"\n')
    assert cfg.policy.schedule.windows[0].days == frozenset({5, 6, 0})
    assert cfg.policy.schedule.windows[0].action is windows.Action.FORBID


def test_a_group_carries_its_battery_and_its_default_plan():
    cfg = parse('''
[[group]]
name = "fleet"
battery_kwh = 64
plan = { energy_kwh = 30, by = "06:30", days = ["mon-fri"] }
''')
    fleet = cfg.policy.group("fleet")
    assert fleet.battery_kwh == 64
    assert fleet.plan == config.policy_config.GroupPlan(30_000, 6 * 60 + 30, frozenset(range(5)))
    assert cfg.policy.group("other").plan is None


@pytest.mark.parametrize("plan, where, message", [
    ('{ energy_kwh = 30, by = "6h30" }', ".plan] by", "expected HH:MM"),
    ('{ energy_kwh = 30, by = "24:00" }', ".plan] by", "00:00..23:59"),
    ('{ by = "06:30" }', ".plan] energy_kwh", "missing (required)"),
    ('{ energy_kwh = 500, by = "06:30" }', ".plan] energy_kwh", "out of range"),
    ('{ energy_kwh = 30, by = "06:30", days = ["someday"] }', ".plan] days", "expected day names"),
    ('{ energy_kwh = 30, by = "06:30", soc = 80 }', ".plan] soc", "unknown key"),
    ('"30 kWh by 06:30"', "] plan", "expected a table"),
])
def test_a_bad_group_plan_names_file_line_and_key(plan, where, message):
    msg = error(f'''
[[group]]
name = "fleet"
plan = {plan}
''')
    assert msg.startswith(f"evsed.toml:12: [group{where}") and message in msg, msg
