"""The connector shell: devices driven from core actions, meter garbage, SD-card friendly writes."""

import datetime as dt

import pytest

from evsed import config as configmod
from evsed.core import events as ev
from evsed.shell.charger import Charger
from evsed.shell.devices import ConnectorDevices, Devices
from evsed.store.sessions import InlineWriter, Store
from hal import MeterReading, PilotReading, TryAgain


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Pilot:
    """A plain pilot device (no on_change): its reads are slow, the daemon takes them off the loop."""

    def __init__(self):
        self.high_v, self.low_v, self.reads, self.output = 12.0, 12.0, 0, "off"

    def pwm_on(self, duty_pct):
        self.output = f"pwm {duty_pct}"

    def pwm_off(self):
        self.output = "off"

    def pwm_f(self):
        self.output = "f"

    def read(self):
        self.reads += 1
        if self.high_v is None:
            raise TryAgain("ADC timeout")
        return PilotReading(self.high_v, self.low_v)


class Contactor:
    def __init__(self):
        self.closed, self.commands = False, []

    def close(self):
        self.closed = True
        self.commands.append("close")

    def open(self):
        self.closed = False
        self.commands.append("open")


class Meter:
    async def read(self):
        raise AssertionError("the shell does not read the meter itself")


CONFIG = """
[[connector]]
pilot = { backend = "sim" }
contactor = { backend = "sim" }
meter = { backend = "sim" }
[[card]]
uid = "04A1B2C3"
name = "Alice"
[store]
checkpoint_s = %s
"""


def make(tmp_path, clock, checkpoint_s=60.0, pilot=None, contactor=None):
    """One connector of a Charger on plain fake devices (or the pilot and contactor given), writing
    inline to a store in tmp_path."""
    store = Store(tmp_path / "s.db")
    pilot, contactor = pilot or Pilot(), contactor or Contactor()
    cfg = configmod.parse(CONFIG % checkpoint_s, tmp_path / "evsed.toml")
    devices = Devices(connectors={1: ConnectorDevices(pilot, contactor, meter=Meter())})
    charger = Charger(cfg, devices, clock=clock, wallclock=lambda: dt.datetime(2026, 1, 5, tzinfo=dt.timezone.utc),
                      writer=InlineWriter(store), first_session_id=1)
    return charger.connectors[1], pilot, contactor, store


def reading(energy_wh, amps=16.0):
    return MeterReading(energy_import_wh=energy_wh, power_total_w=amps * 230 * 3, current_a=(amps,) * 3)


def charge(ctrl, pilot, clock):
    ctrl.start()
    ctrl.meter_sampled(reading(1000, 0.0))
    pilot.high_v = 9.0
    ctrl.poll_inputs(ctrl.read_pilot())
    ctrl.feed(ev.CardPresented("04A1B2C3"))
    pilot.high_v, pilot.low_v = 6.0, -12.0
    clock.now += 0.05
    ctrl.poll_inputs(ctrl.read_pilot())


def test_slow_pilot_is_only_read_when_the_caller_passes_a_reading(tmp_path):
    clock = Clock()
    ctrl, pilot, contactor, _ = make(tmp_path, clock)
    ctrl.start()
    assert contactor.commands == ["open"] and pilot.output == "off"
    ctrl.poll_inputs()
    assert pilot.reads == 0
    ctrl.poll_inputs(ctrl.read_pilot())
    assert pilot.reads == 1 and ctrl.state.pilot.value == "A"
    pilot.high_v = None
    ctrl.poll_inputs(ctrl.read_pilot())
    assert ctrl.state.pilot is None  # an unreadable pilot is a lost pilot


def test_plug_tap_closes_and_unplug_stores_the_session(tmp_path):
    clock = Clock()
    ctrl, pilot, contactor, store = make(tmp_path, clock)
    charge(ctrl, pilot, clock)
    assert contactor.closed and pilot.output.startswith("pwm 53.33")
    assert (ctrl.status()["duty_pct"], ctrl.status()["offered_a"]) == (53.3333, 32.0)  # shown to the grid's 1e-4 %
    clock.now += 600
    ctrl.meter_sampled(reading(2840))
    pilot.high_v = 12.0
    ctrl.poll_inputs(ctrl.read_pilot())
    assert not contactor.closed
    # the stop waits for its final reading, begun after the open: until then status still shows the session
    assert store.session(1)["stopped_at"] is None and ctrl.status()["session"].id == 1
    ctrl.meter_sampled(reading(2843, 0.0))
    (row,) = store.sessions()
    assert (row["meter_start_wh"], row["meter_stop_wh"], row["energy_wh"]) == (1000, 2843, 1843)
    assert row["peak_power_w"] == 16.0 * 230 * 3 and row["stop_reason"] == "ev_disconnected"
    assert ctrl.status()["session"] is None  # durable (inline writes): finished


def test_meter_going_backwards_is_a_failed_read_not_a_reading(tmp_path):
    clock = Clock()
    ctrl, pilot, contactor, _ = make(tmp_path, clock)
    charge(ctrl, pilot, clock)
    clock.now += 3600
    ctrl.meter_sampled(reading(5000))
    ctrl.meter_sampled(reading(4000))
    assert ctrl.last_reading.energy_import_wh == 5000
    assert "backwards" in ctrl.state.meter_error
    ctrl.meter_sampled(MeterReading(6000, float("nan"), (16.0,) * 3))
    assert ctrl.session.meter_last_wh == 5000 and "non-finite" in ctrl.state.meter_error


def test_running_session_is_checkpointed_at_most_once_per_checkpoint_period(tmp_path):
    clock = Clock()
    ctrl, pilot, contactor, store = make(tmp_path, clock, checkpoint_s=60.0)
    writes = []
    original = store.checkpoint
    store.checkpoint = lambda *a, **kw: (writes.append(a), original(*a, **kw))
    charge(ctrl, pilot, clock)
    for second in range(1, 601):  # ten minutes of meter samples, one a second
        clock.now += 1.0
        ctrl.meter_sampled(reading(1000 + second))
    assert 9 <= len(writes) <= 10  # one a minute, never one a sample
    (row,) = store.sessions()
    assert row["stopped_at"] is None and row["energy_wh"] >= 540


def test_invariant_guard_opens_a_contactor_the_core_cannot_justify(tmp_path, monkeypatch):
    import dataclasses
    from evsed.shell import connector as connmod
    from evsed.core.pilot import PilotState
    clock = Clock()
    ctrl, pilot, contactor, _ = make(tmp_path, clock)
    charge(ctrl, pilot, clock)
    assert contactor.closed
    real_step = connmod.step

    def faulty_step(cfg, s, event, now):  # a core bug: it forgets the EV left and keeps closed
        s, actions = real_step(cfg, s, event, now)
        return dataclasses.replace(s, contactor_closed=True, pilot=PilotState.A), []
    monkeypatch.setattr(connmod, "step", faulty_step)
    ctrl.feed(ev.LimitChanged("test", 16.0))
    assert not contactor.closed


class SoftContactor(Contactor):
    """A hal.SoftOpen contactor (an OpenEVSE board's): it can let the EV stop first."""

    def open_when_ev_stops(self):
        self.closed = False
        self.commands.append("open_when_ev_stops")


def test_a_core_that_fails_at_the_shutdown_opens_at_once(tmp_path, monkeypatch):
    """A crash is no orderly stop: what the core would have decided is unknown."""
    from evsed.shell import connector as connmod
    clock = Clock()
    ctrl, pilot, contactor, _ = make(tmp_path, clock, contactor=SoftContactor())
    charge(ctrl, pilot, clock)
    real_step = connmod.step

    def failing_step(cfg, s, event, now):
        if isinstance(event, ev.Shutdown):
            raise RuntimeError("a core bug")
        return real_step(cfg, s, event, now)
    monkeypatch.setattr(connmod, "step", failing_step)
    with pytest.raises(RuntimeError):
        ctrl.shutdown()
    assert contactor.commands[-1] == "open" and pilot.output == "off"


def test_session_started_before_the_first_meter_reading_starts_at_that_reading(tmp_path):
    clock = Clock()
    ctrl, pilot, contactor, store = make(tmp_path, clock)
    ctrl.start()
    pilot.high_v = 9.0
    ctrl.poll_inputs(ctrl.read_pilot())
    ctrl.feed(ev.CardPresented("04A1B2C3"))  # the meter has not answered yet
    assert ctrl.session is not None and not contactor.closed
    ctrl.meter_sampled(reading(5000, 0.0))
    clock.now += 0.2
    pilot.high_v = 9.0
    ctrl.poll_inputs(ctrl.read_pilot())
    clock.now += 120
    ctrl.meter_sampled(reading(5300, 0.0))
    pilot.high_v = 12.0
    ctrl.poll_inputs(ctrl.read_pilot())
    ctrl.meter_sampled(reading(5300, 0.0))  # the final reading, after the stop
    (row,) = store.sessions()
    assert (row["meter_start_wh"], row["meter_stop_wh"], row["energy_wh"]) == (5000, 5300, 300)


def test_a_garbage_energy_jump_is_refused_and_does_not_poison_later_readings(tmp_path):
    clock = Clock()
    ctrl, pilot, contactor, store = make(tmp_path, clock)
    charge(ctrl, pilot, clock)
    clock.now += 1
    ctrl.meter_sampled(reading(1003))
    clock.now += 1
    ctrl.meter_sampled(reading(4_000_000_000))  # one bad frame
    assert "jumped" in ctrl.state.meter_error and ctrl.last_reading.energy_import_wh == 1003
    clock.now += 1
    ctrl.meter_sampled(reading(1006))
    assert ctrl.state.meter_error == "" and ctrl.session.meter_last_wh == 1006


def test_a_replaced_meter_is_taken_as_the_new_baseline_after_consistent_readings(tmp_path):
    clock = Clock()
    ctrl, pilot, contactor, store = make(tmp_path, clock)
    charge(ctrl, pilot, clock)
    clock.now += 60
    ctrl.meter_sampled(reading(1100))  # 100 Wh into the session
    for i in range(5):  # the meter was swapped: it now counts from 20 Wh
        clock.now += 1
        ctrl.meter_sampled(reading(20 + 3 * i))
    assert ctrl.last_reading.energy_import_wh == 32 and ctrl.state.meter_error == ""
    assert ctrl.session.energy_wh == 100 + 12
    pilot.high_v = 12.0
    ctrl.poll_inputs(ctrl.read_pilot())
    ctrl.meter_sampled(reading(32, 0.0))
    (row,) = store.sessions()
    assert row["energy_wh"] == 112 and row["meter_stop_wh"] == 32 and row["meter_rebaselined"] == 1


def test_a_failed_start_write_still_records_the_finished_session(tmp_path):
    import sqlite3
    clock = Clock()
    ctrl, pilot, contactor, store = make(tmp_path, clock)
    real_start = store.start
    calls = []

    def start_fails_once(s):
        calls.append(s)
        if len(calls) == 1:
            raise sqlite3.OperationalError("disk I/O error")
        real_start(s)
    store.start = start_fails_once
    charge(ctrl, pilot, clock)
    assert list(store.sessions()) == [] and ctrl.bus._subscribers[1].writer.errors
    clock.now += 60
    ctrl.meter_sampled(reading(1150))
    pilot.high_v = 12.0
    ctrl.poll_inputs(ctrl.read_pilot())
    ctrl.meter_sampled(reading(1150, 0.0))
    (row,) = store.sessions()
    assert row["energy_wh"] == 150 and row["stop_reason"] == "ev_disconnected"


def test_the_stop_is_told_and_stored_with_the_first_reading_begun_after_the_open(tmp_path):
    clock = Clock()
    ctrl, pilot, contactor, store = make(tmp_path, clock)
    told = []
    ctrl.bus.subscribe(lambda e: told.append(e.data) if e.type == "session.stopped" else None)
    asked = []
    ctrl.read_meter_now = lambda: asked.append(clock.now)
    charge(ctrl, pilot, clock)
    clock.now += 0.9
    pilot.high_v = 12.0
    ctrl.poll_inputs(ctrl.read_pilot())  # unplugged 0.9 s in: the last sample was at the start
    assert asked == [clock.now] and told == []  # a reading is asked for at once; no stop told yet
    ctrl.meter_sampled(reading(1002, 0.0), begun_at=clock.now - 0.05)  # begun before the open: not final
    assert told == [] and store.session(1)["stopped_at"] is None
    clock.now += 0.1
    ctrl.meter_sampled(reading(1003, 0.0))  # the meter's next answer holds the last second
    (row,) = store.sessions()
    assert (row["meter_stop_wh"], row["energy_wh"], row["stop_reason"]) == (1003, 3, "ev_disconnected")
    assert [(d["meter_stop_wh"], d["energy_wh"]) for d in told] == [(1003, 3)]  # the same figure told
    clock.now += 1.0
    ctrl.meter_sampled(reading(1004, 0.0))
    assert store.session(1)["meter_stop_wh"] == 1003 and len(told) == 1  # fixed once told


def test_a_meter_that_fails_after_the_stop_ends_the_session_at_its_last_reading(tmp_path):
    clock = Clock()
    ctrl, pilot, contactor, store = make(tmp_path, clock)
    charge(ctrl, pilot, clock)
    clock.now += 60
    ctrl.meter_sampled(reading(1150))
    pilot.high_v = 12.0
    ctrl.poll_inputs(ctrl.read_pilot())
    ctrl.meter_failed("timeout")
    (row,) = store.sessions()
    assert (row["meter_stop_wh"], row["stop_reason"]) == (1150, "ev_disconnected")


def test_back_to_back_sessions_do_not_share_energy(tmp_path):
    clock = Clock()
    ctrl, pilot, contactor, store = make(tmp_path, clock)
    charge(ctrl, pilot, clock)
    clock.now += 60
    ctrl.meter_sampled(reading(1120))
    ctrl.feed(ev.CardPresented("04A1B2C3"))  # stop, and within the grace start again
    clock.now += 2.5  # a new tap, not the same one read twice (card_repeat_s)
    ctrl.feed(ev.CardPresented("04A1B2C3"))
    for i in range(1, 11):
        clock.now += 6
        ctrl.poll_inputs(ctrl.read_pilot())
        ctrl.meter_sampled(reading(1120 + 20 * i))
    first, second = store.sessions()
    assert first["energy_wh"] == 120 and second["meter_start_wh"] == 1120


def test_a_session_that_never_saw_the_meter_is_not_given_its_total_later(tmp_path):
    clock = Clock()
    ctrl, pilot, contactor, store = make(tmp_path, clock)
    ctrl.start()
    pilot.high_v = 9.0
    ctrl.poll_inputs(ctrl.read_pilot())
    ctrl.feed(ev.CardPresented("04A1B2C3"))
    pilot.high_v = 12.0
    ctrl.poll_inputs(ctrl.read_pilot())
    ctrl.meter_sampled(reading(12_345_678, 0.0))
    (row,) = store.sessions()
    assert row["energy_wh"] == 0


def test_coarse_meters_stepping_100_wh_are_not_garbage(tmp_path):
    clock = Clock()
    ctrl, pilot, contactor, store = make(tmp_path, clock)
    charge(ctrl, pilot, clock)
    clock.now += 1
    ctrl.meter_sampled(reading(1100))  # an EM340 counts in 0.1 kWh
    assert ctrl.state.meter_error == "" and ctrl.last_reading.energy_import_wh == 1100
