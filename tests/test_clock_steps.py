"""Session times when the wall clock steps (a board without an RTC until NTP syncs): the scenario
runner's virtual clocks, the real Charger and store; no sleeps."""

import asyncio
import datetime as dt
from pathlib import Path

from structlog.testing import capture_logs

from evsed.shell import scenario
from evsed.shell.clocksteps import SETTLE_S, ClockSteps
from evsed.store.sessions import LiveSession, Store

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # the scenario's wall clock at t=0


def run(tmp_path: Path, steps: str, synced: bool = False) -> scenario.Runner:
    path = tmp_path / "s.toml"
    path.write_text(f"clock_synced = {str(synced).lower()}\n"
                    '[[step]]\nt = 1\ndo = "plug"\n[[step]]\nt = 2\ndo = "tap"\ncard = "04A1B2C3"\n' + steps)
    r = scenario.load(path)
    asyncio.run(r.run(verbose=False))
    return r


def at(iso: str) -> dt.datetime:
    return dt.datetime.fromisoformat(iso)


def only_session(r: scenario.Runner) -> dict:
    rows = list(r.store.sessions())
    assert len(rows) == 1
    return rows[0]


def test_a_step_while_unsynced_moves_the_running_sessions_start_so_its_stop_follows_it(tmp_path):
    # the boot guess was an hour ahead; NTP steps it back at t=60 and the EV leaves at t=120
    r = run(tmp_path, '[[step]]\nt = 60\ndo = "clock"\nstep_s = -3600\nsynced = true\n'
                      '[[step]]\nt = 120\ndo = "unplug"\n')
    row = only_session(r)
    assert at(row["started_at"]) == T0 + dt.timedelta(seconds=2 - 3600)
    assert at(row["stopped_at"]) == T0 + dt.timedelta(seconds=120 - 3600)
    assert row["duration_s"] == 118


def test_the_correction_is_published_with_the_step_and_both_starts(tmp_path):
    r = run(tmp_path, '[[step]]\nt = 60\ndo = "clock"\nstep_s = 7200\nsynced = true\n')
    fixes = [e for _, _, e in r.events if e.type == "session.clock_corrected"]
    assert len(fixes) == 1 and fixes[0].durable
    assert fixes[0].data["by_s"] == 7200 and fixes[0].data["stopped_at"] is None
    assert at(fixes[0].data["previous_started_at"]) == T0 + dt.timedelta(seconds=2)
    assert at(fixes[0].data["started_at"]) == T0 + dt.timedelta(seconds=7202)
    assert r.charger._connector_status(r.ctrls[0]).session.started_at == fixes[0].data["started_at"]


def test_a_session_started_on_a_synchronized_clock_keeps_its_start(tmp_path):
    r = run(tmp_path, '[[step]]\nt = 60\ndo = "clock"\nstep_s = 7200\n', synced=True)
    assert not [e for _, _, e in r.events if e.type == "session.clock_corrected"]
    assert at(r.ctrls[0].session.started_at) == T0 + dt.timedelta(seconds=2)


def test_a_stop_taken_on_a_clock_stepped_back_is_stored_at_the_start_never_before(tmp_path):
    with capture_logs() as logs:
        r = run(tmp_path, '[[step]]\nt = 60\ndo = "clock"\nstep_s = -3600\n[[step]]\nt = 120\ndo = "unplug"\n',
                synced=True)
    row = only_session(r)
    assert row["stopped_at"] == row["started_at"] and row["duration_s"] == 0
    assert any(e["event"] == "session.stop_before_start" for e in logs)


def test_a_session_that_ended_before_the_clock_synced_moves_start_and_stop(tmp_path):
    r = run(tmp_path, '[[step]]\nt = 30\ndo = "unplug"\n'
                      '[[step]]\nt = 60\ndo = "clock"\nstep_s = 86400\nsynced = true\n')
    row = only_session(r)
    assert at(row["started_at"]) == T0 + dt.timedelta(days=1, seconds=2)
    assert at(row["stopped_at"]) == T0 + dt.timedelta(days=1, seconds=30)


def test_the_stored_samples_of_the_session_move_with_it(tmp_path):
    r = run(tmp_path, '[[step]]\nt = 200\ndo = "clock"\nstep_s = -3600\nsynced = true\n'
                      '[[step]]\nt = 260\ndo = "unplug"\n')
    row = only_session(r)
    samples = list(r.store.samples(row["id"]))
    assert samples and all(at(row["started_at"]) <= s.at <= at(row["stopped_at"]) for s in samples)


def test_once_synchronized_for_a_while_a_later_step_corrects_nothing(tmp_path):
    settle = int(SETTLE_S) + 5
    r = run(tmp_path, '[[step]]\nt = 10\ndo = "clock"\nsynced = true\n'
                      f'[[step]]\nt = {10 + settle}\ndo = "clock"\nstep_s = 600\n')
    assert not [e for _, _, e in r.events if e.type == "session.clock_corrected"]
    assert at(r.ctrls[0].session.started_at) == T0 + dt.timedelta(seconds=2)


def test_clock_steps_reports_the_step_in_seconds_and_ignores_drift():
    mono, wall = [100.0], [T0]
    steps = ClockSteps(lambda: wall[0], lambda: mono[0])
    mono[0], wall[0] = 101.0, T0 + dt.timedelta(seconds=1.5)  # half a second of drift
    assert steps.check() is None
    wall[0] -= dt.timedelta(hours=1)
    assert steps.check() == -3599.5  # the drift not counted yet goes with the step
    assert steps.check() is None


def test_recovery_after_a_power_cut_never_stops_a_session_before_its_start(tmp_path):
    st = Store(tmp_path / "s.db")
    s = LiveSession(1, "04A1B2C3", "Alice", "", "local", "2026-01-05T09:00:00+00:00", 0, 0, row_id=1)
    st.start(s)
    st.checkpoint(1, 100, 0.0, "2026-01-05T08:00:00+00:00")  # a checkpoint on a clock stepped back
    st.recover()
    row = st.session(1)
    assert row["stopped_at"] == row["started_at"]
