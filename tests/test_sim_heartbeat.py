"""The simulator's drop-out circuit: the simulated contactor opens by itself when its heartbeat
stops, on the world's clock (virtual here), in process or in a board of its own."""

from __future__ import annotations

import asyncio

import pytest

from evsed import config
from evsed.config import backends
from hal import Heartbeat
from simulator.board import PinFile, rose_between, run as run_board
from simulator.hardware import SimWorld


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def bench_with(clock: Clock, contactor_toml: str):
    world = SimWorld(clock)
    text = ('[[connector]]\n[connector.pilot]\nbackend = "sim"\n[connector.contactor]\nbackend = "sim"\n'
            + contactor_toml)
    options = dict(config.parse(text).connectors[0].contactor.options)
    ctx = backends.BackendContext(1, {"sim": world})
    contactor = backends.create("contactor", "sim", options, ctx)
    pilot = backends.create("pilot", "sim", {}, ctx)
    meter = backends.create("meter", "sim", {}, ctx)
    return world.connector(1), contactor, pilot, meter


def charging(clock, toml="heartbeat = true\ndropout_s = 0.5\n"):
    bench, contactor, pilot, meter = bench_with(clock, toml)
    bench.plug()
    pilot.pwm_on(26.7)  # 16 A
    contactor.close()
    return bench, contactor, meter


def test_without_the_heartbeat_option_the_sim_contactor_has_no_drop_out():
    clock = Clock()
    bench, contactor, _ = charging(clock, "")
    assert not isinstance(contactor, Heartbeat)
    clock.now = 3600.0
    assert bench.contactor_closed


def test_a_commanded_contactor_closes_on_the_first_edge_and_opens_dropout_s_after_the_last():
    clock = Clock()
    bench, contactor, _ = charging(clock)
    assert isinstance(contactor, Heartbeat) and contactor.dropout_s == 0.5
    assert not bench.contactor_closed  # commanded, but the circuit has seen no edge yet
    for _ in range(20):  # 1 s of heartbeat at the configured 10 Hz
        contactor.heartbeat()
        assert bench.contactor_closed
        clock.now += contactor.heartbeat_interval_s
    last_edge = clock.now - 2 * contactor.heartbeat_interval_s  # the 19th toggle was the last rising edge
    clock.now = last_edge + 0.5 - 1e-9
    assert bench.contactor_closed and contactor.feedback_closed()
    clock.now = last_edge + 0.5
    assert not bench.contactor_closed and not contactor.feedback_closed()


def test_the_meter_counts_no_energy_after_the_relay_dropped():
    clock = Clock()
    bench, contactor, meter = charging(clock)
    contactor.heartbeat()  # one rising edge at t = 0: closed until 0.5 s
    clock.now = 3600.0  # read an hour later: only the half second before the drop-out counts
    reading = asyncio.run(meter.read())
    assert bench.energy_wh_exact == pytest.approx(3 * 16 * 230 * 0.5 / 3600)
    assert reading.power_total_w == 0


def test_an_edge_after_the_drop_out_closes_the_commanded_relay_again_and_tells_listeners():
    clock = Clock()
    bench, contactor, _ = charging(clock)
    contactor.heartbeat()
    clock.now = 1.0
    assert not bench.contactor_closed
    told = []
    bench._listeners.append(lambda: told.append(bench.contactor_closed))
    contactor.heartbeat()  # falling edge: nothing
    contactor.heartbeat()  # rising edge: the monostable fires again while the coil is commanded
    assert told == [True]


@pytest.mark.parametrize("before, after, rose", [(0, 0, False), (0, 1, True), (1, 2, False), (2, 3, True),
                                                 (1, 3, True), (2, 4, True), (4, 3, False)])
def test_a_rising_edge_is_a_toggle_to_an_odd_count(before, after, rose):
    assert rose_between(before, after) is rose


def test_the_board_drives_the_relay_from_the_pin_file_and_drops_it_on_its_own_clock(tmp_path):
    clock = Clock()
    pins = PinFile(tmp_path / "pins", create=True)
    writer = PinFile(tmp_path / "pins")  # what evsed's sim contactor writes
    events = []
    script = {0.010: lambda: writer.set_coil(True), 0.020: writer.toggle, 0.100: writer.toggle,
              0.120: writer.toggle}  # rising edges at 20 ms and 120 ms; then the writer dies

    def sleep(s):
        clock.now = round(clock.now + s, 6)
        if clock.now in script:
            script[clock.now]()

    run_board(pins, 0.5, 0.002, events.append, clock=clock, sleep=sleep, until=lambda: clock.now > 1.0)
    changes = [(e["event"], e.get("reason")) for e in events[1:]]
    assert changes == [("relay.closed", None), ("relay.opened", "heartbeat stopped")]
    opened = events[-1]
    assert opened["fell_at"] == pytest.approx(0.120 + 0.5) and opened["coil"] is True
    assert opened["t"] - opened["fell_at"] < 0.003  # noticed within one sample
    assert not writer.relay() and writer.coil()
