"""The charger's policies through the real Charger on the simulator: refusal reasons, who may
stop, the clock-sync rule, reload, `evsed cards learn`, and the status lines of the limit chain."""

import asyncio
import datetime as dt
import os
import subprocess
from pathlib import Path

import pytest

from evsed import protocol as p
from evsed import config as configmod
from evsed.cli import policy as policy_cli
from evsed.shell import policy, scenario


def runner(tmp_path: Path, text: str) -> scenario.Runner:
    path = tmp_path / "s.toml"
    path.write_text(text + '\n[[step]]\nt = 0\ndo = "plug"\n')
    r = scenario.load(path)
    asyncio.run(r.run(verbose=False))
    return r


GROUPS = '''
start = 2026-01-05T21:00:00+01:00
[[config.group]]
name = "night"
windows = ["night"]
[[config.group]]
name = "boss"
master = true
[[config.group]]
name = "staff"
stop_by = "master"
[[config.card]]
uid = "01010101"
group = "night"
[[config.card]]
uid = "02020202"
group = "boss"
[[config.card]]
uid = "03030303"
group = "staff"
[[config.card]]
uid = "04040404"
enabled = false
[[config.card]]
uid = "05050505"
expires = 2025-01-01
[[config.window]]
name = "night"
start = "22:00"
end = "06:00"
action = "allow"
'''


@pytest.mark.parametrize("uid, reason", [("01010101", "outside the group's window until 22:00"),
                                         ("04040404", "card disabled"),
                                         ("05050505", "card expired on 2025-01-01")])
def test_the_local_list_says_why_it_refuses(tmp_path, uid, reason):
    r = runner(tmp_path, GROUPS)
    verdict = r.charger.auth.local.verdict(uid)
    assert verdict.result == "reject" and verdict.reason == reason


EVENING = '''
start = 2026-01-05T18:30:00+01:00
[[config.group]]
name = "evening"
windows = ["evening"]
[[config.card]]
uid = "01010101"
group = "evening"
[[config.window]]
name = "evening"
start = "17:00"
end = "22:00"
action = "allow"
[[config.window]]
name = "peak"
start = "18:00"
end = "19:00"
action = "forbid"
'''


def test_a_card_refused_by_a_charger_wide_forbid_window_is_told_that_window_not_its_groups(tmp_path):
    r = runner(tmp_path, EVENING)  # 18:30: the group's window is open, the charger-wide "peak" is not
    verdict = r.charger.auth.local.verdict("01010101")
    assert verdict.result == "reject" and verdict.reason == "forbidden by window 'peak' until 19:00"
    r.charger.present_card("01010101")
    assert r.ctrls[0].state.refusal == "forbidden by window 'peak' until 19:00"


def test_an_unknown_card_is_refused_as_unknown(tmp_path):
    r = runner(tmp_path, GROUPS)
    r.charger.present_card("0BADCAFE")
    assert r.ctrls[0].state.refusal == "unknown card"


def test_a_known_card_carries_its_group_and_cap_from_the_first_second(tmp_path):
    r = runner(tmp_path, GROUPS.replace('name = "boss"', 'name = "boss"\nmax_current_a = 12'))
    verdict = r.charger.auth.local.verdict("02020202")
    assert verdict.result == "accept" and verdict.group == "boss" and verdict.max_current_a == 12


def test_a_master_card_may_stop_a_session_of_a_stop_by_master_group_and_a_colleague_may_not(tmp_path):
    r = runner(tmp_path, GROUPS)
    r.charger.present_card("03030303")
    ctrl = r.ctrls[0]
    assert ctrl.state.session and ctrl.state.group == "staff"
    assert r.charger.may_stop("02020202", ctrl)
    assert not r.charger.may_stop("01010101", ctrl)


def test_while_the_clock_is_not_synchronized_windows_are_not_applied_by_default(tmp_path):
    r = runner(tmp_path, GROUPS + '\nclock_synced = false\n'.replace("clock_synced", "#"))
    r.synced = False
    r.charger.policy.poll()
    assert r.charger.auth.local.verdict("01010101").result == "accept"
    assert "clock not synchronized" in r.charger.policy.conns[1].window.reason


def test_the_unsynced_rule_forbid_waits_for_the_clock(tmp_path):
    r = runner(tmp_path, GROUPS.replace("[[config.group]]", '[config.charger]\nunsynced_clock = "forbid"\n'
                                        "[[config.group]]", 1))
    r.synced = False
    r.charger.policy.poll()
    assert not r.charger.policy.conns[1].window.allowed


def test_the_kernel_says_whether_the_clock_is_synchronized_without_starting_a_process(monkeypatch):
    # Asked about once a second in the safety daemon: a fork there (ctypes.util.find_library runs
    # ldconfig) would cost the loop a millisecond each time.
    def no_process(*args, **kwargs):
        raise AssertionError(f"started a process: {args}")
    monkeypatch.setattr(subprocess, "Popen", no_process)
    monkeypatch.setattr(os, "fork", no_process)
    assert isinstance(policy.kernel_clock_synced(), bool)
    assert isinstance(policy.kernel_clock_synced(), bool)


def test_where_adjtimex_is_denied_timesyncds_flag_says_whether_the_clock_is_synchronized(tmp_path, monkeypatch):
    # ProtectClock= in the unit filters adjtimex even to read: it returns -1 (EPERM).
    monkeypatch.setattr(policy, "_adjtimex", lambda: lambda buf: -1)
    monkeypatch.setattr(policy, "TIMESYNC_DIR", tmp_path / "timesync")
    assert policy.kernel_clock_synced()  # no timesyncd: nothing to go by
    (tmp_path / "timesync").mkdir()
    assert not policy.kernel_clock_synced()  # timesyncd runs and has not synchronized yet
    (tmp_path / "timesync" / "synchronized").touch()
    assert policy.kernel_clock_synced()


def test_the_kernels_answer_wins_where_adjtimex_can_be_read(tmp_path, monkeypatch):
    monkeypatch.setattr(policy, "TIMESYNC_DIR", tmp_path)
    (tmp_path / "synchronized").touch()
    monkeypatch.setattr(policy, "_adjtimex", lambda: lambda buf: policy.TIME_ERROR)
    assert not policy.kernel_clock_synced()
    monkeypatch.setattr(policy, "_adjtimex", lambda: lambda buf: 0)  # TIME_OK
    assert policy.kernel_clock_synced()


def test_a_reload_that_changes_devices_is_refused_and_the_old_config_stays(tmp_path):
    r = runner(tmp_path, GROUPS)
    data = scenario._merge(scenario.base_config_data(), {"rfid": {"backend": "sim"}})
    data["connector"][0]["rcd"] = None
    del data["connector"][0]["rcd"]
    new = configmod.build(data, tmp_path / "new.toml")
    old = r.charger.config
    assert r.charger.reload(new).result == "Rejected" and r.charger.config is old


def test_learn_reads_the_next_tap_and_says_when_the_card_is_known(tmp_path):
    r = runner(tmp_path, GROUPS)
    r.charger.learning = r.now + 60
    r.charger.present_card("02020202")
    assert r.charger.learned.known and r.charger.learned.group == "boss"
    assert not r.ctrls[0].state.session


def test_cards_learn_prints_a_ready_to_paste_card_block(monkeypatch, capsys):
    replies = iter([p.LearnReply(waiting=True), p.LearnedReply(waiting=True, card=None),
                    p.LearnedReply(waiting=False, card=p.LearnedCard(uid="DEADBEEF", known=False, name="", group="",
                                                                     toml='[[card]]\nuid = "DEADBEEF"\n'))])
    monkeypatch.setattr(policy_cli, "_request", lambda args, req: next(replies))
    args = type("A", (), {"timeout": 5.0})()
    assert policy_cli.cmd_cards_learn(args, sleep=lambda s: None) == 0
    out = capsys.readouterr().out
    assert "UID DEADBEEF" in out and '[[card]]\nuid = "DEADBEEF"' in out


def test_status_lists_every_limit_source_and_marks_the_binding_one(tmp_path):
    r = runner(tmp_path, '[[config.window]]\nstart = "00:00"\nend = "24:00"\naction = "cap"\nmax_current_a = 10\n')
    st = r.charger._connector_status(r.ctrls[0])
    lines = policy_cli.format_limits(st)
    assert st.binding == "window"
    assert any("window" in line and "10 A" in line and "<- binds" in line for line in lines)
    assert [link.source for link in st.limit_chain] == ["hardware", "cable", "window"]  # the core's, in CHAIN order
    assert [link.source for link in st.limit_chain if link.binding] == ["window"]


def test_a_window_boundary_arms_a_timer_on_the_virtual_wall_clock(tmp_path):
    r = runner(tmp_path, 'start = 2026-01-05T21:00:00+01:00\n[[config.window]]\nstart = "22:00"\nend = "23:00"\n'
                         'action = "forbid"\n')
    assert r.wallclock() == dt.datetime(2026, 1, 5, 20, 0, tzinfo=dt.timezone.utc)
    due = [t.when for t in r.timers if not t.cancelled]
    assert 3600 in due  # 22:00 local, an hour of virtual seconds after the start


def test_a_reloaded_meter_interval_paces_the_meter_reads_from_the_next_round(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[[step]]\nt = 1\ndo = "plug"\n[[step]]\nt = 2\ndo = "tap"\ncard = "04A1B2C3"\n'
                    '[[step]]\nt = 30\ndo = "reload"\nconfig = { timing = { meter_interval_s = 3.0, meter_timeout_s = 15.0 } }\n'
                    '[[step]]\nt = 60\nexpect = { contactor = "closed" }\n')
    r = scenario.load(path)
    asyncio.run(r.run(verbose=False))
    reads = [t for t, _, e in r.events if e.type == "session.sample"]
    assert "Accepted" in r.last_reload
    assert sum(1 for t in reads if 10 <= t < 30) == 20  # every second before
    assert sum(1 for t in reads if 31 <= t < 61) == 10  # every third second after


def test_a_reload_names_the_changed_keys_only_a_restart_applies_and_applies_the_rest(tmp_path):
    r = runner(tmp_path, GROUPS)
    data = scenario._merge(scenario.base_config_data(), {"log": {"level": "debug"}, "charger": {"id": "other"},
                                                         "store": {"checkpoint_s": 30.0}})
    reply = r.charger.reload(configmod.build(data, tmp_path / "new.toml"))
    assert reply == p.ReloadReply(result="Accepted", restart_needed=("[charger] id", "[log]"))
    assert r.charger.recorder.checkpoint_s == 30.0
