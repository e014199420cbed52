"""The safety loop: the contactors' heartbeat and the systemd watchdog, on an explicit clock.

Real code under test: SafetyLoop, the gpio contactor on gpiozero's MockFactory pins, the
simulator's Monostable as the 74HC123 behind the heartbeat pin, a real AF_UNIX notify socket.
"""

from __future__ import annotations

import socket

import pytest
from gpiozero.pins.mock import MockPin
from structlog.testing import capture_logs

from evsed import config
from evsed.config import backends
from evsed.shell import sdnotify
from evsed.shell.safety_loop import SafetyLoop
from hal.gpio import pin_factory
from simulator.board import Monostable


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class MonostableInput(MockPin):
    """The 74HC123's B input on the heartbeat pin: each rising edge retriggers the monostable."""

    def __init__(self, factory, info, monostable=None):
        super().__init__(factory, info)
        self.monostable = monostable

    def _change_state(self, value):
        changed = super()._change_state(value)
        if changed and value:
            self.monostable.trigger()
        return changed


class Bench:
    """A gpio contactor (coil on GPIO17, heartbeat on GPIO22) behind a modelled drop-out circuit."""

    def __init__(self, clock: Clock, dropout_s: float = 0.5, heartbeat_hz: float = 10.0):
        self.shared: dict = {}
        self.mock = pin_factory("mock", self.shared)
        self.monostable = Monostable(clock, dropout_s)
        self.mock.pin(22, pin_class=MonostableInput, monostable=self.monostable)
        text = ('[[connector]]\n[connector.pilot]\nbackend = "sim"\n[connector.contactor]\nbackend = "gpio"\n'
                f'pin_factory = "mock"\npin = 17\nheartbeat_pin = 22\nheartbeat_hz = {heartbeat_hz}\n'
                f'dropout_s = {dropout_s}\n')
        options = dict(config.parse(text).connectors[0].contactor.options)
        self.contactor = backends.create("contactor", "gpio", options, backends.BackendContext(1, self.shared))

    def relay_closed(self) -> bool:
        return self.mock.pin(17).state and self.monostable.high()

    def close(self):
        self.mock.close()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def bench(clock):
    b = Bench(clock)
    yield b
    b.close()


def run_ticks(loop: SafetyLoop, clock: Clock, until_s: float, check=lambda: None) -> None:
    """Call tick() at each time it asks for, as run() does on the loop, until until_s."""
    due = loop.tick(clock.now)
    while due <= until_s:
        clock.now = due
        due = loop.tick(clock.now)
        check()


def test_the_relay_holds_while_the_loop_ticks_and_drops_dropout_s_after_the_last_edge(bench, clock):
    loop = SafetyLoop([bench.contactor], healthy=lambda: "", clock=clock, notify=lambda m: True)
    bench.contactor.close()
    run_ticks(loop, clock, 0.1)
    assert bench.relay_closed()
    run_ticks(loop, clock, 5.0, check=lambda: pytest.fail("relay dropped") if not bench.relay_closed() else None)
    last_edge = bench.monostable.last_edge_at
    clock.now = last_edge + 0.5 - 1e-6  # the loop stops here: no tick, as after kill -9
    assert bench.relay_closed()
    clock.now = last_edge + 0.5
    assert not bench.relay_closed()
    assert bench.mock.pin(17).state is True  # the coil output kept its level: only the circuit opened


def test_ticks_come_every_half_period_of_the_fastest_heartbeat(clock):
    slow, fast = Bench(clock, heartbeat_hz=10.0), Bench(clock, heartbeat_hz=20.0)
    try:
        loop = SafetyLoop([slow.contactor, fast.contactor], healthy=lambda: "", clock=clock, notify=lambda m: True)
        assert loop.tick(0.0) == pytest.approx(0.025)
        assert loop.tick(0.025) == pytest.approx(0.05)
    finally:
        slow.close()
        fast.close()


def test_contactors_without_a_heartbeat_are_left_alone(bench, clock):
    class PlainContactor:
        def close(self): ...
        def open(self): ...

    loop = SafetyLoop([PlainContactor(), bench.contactor], healthy=lambda: "", clock=clock, notify=lambda m: True)
    assert loop.beating == [bench.contactor]
    loop.tick(0.0)
    assert bench.mock.pin(22).state is True


def test_ready_goes_first_and_once_then_the_watchdog_at_half_its_period(tmp_path, monkeypatch, clock):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp_path / "notify"))
    listener.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    loop = SafetyLoop([], healthy=lambda: "", clock=clock, watchdog_interval_s=sdnotify.watchdog_interval_s())
    for t in (0.0, 0.5, 0.99, 1.0, 1.5, 2.0):
        loop.tick(t)
    received = []
    while True:
        try:
            received.append(listener.recv(64))
        except BlockingIOError:
            break
    assert received == [b"READY=1", b"WATCHDOG=1", b"WATCHDOG=1", b"WATCHDOG=1"]  # at 0, 1 and 2 s


def test_the_watchdog_is_not_ours_when_systemd_names_another_pid(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert sdnotify.watchdog_interval_s() is None


def test_an_unhealthy_loop_stops_the_heartbeat_and_the_watchdog_and_says_why_once(bench, clock):
    sent = []
    problem = [""]
    loop = SafetyLoop([bench.contactor], healthy=lambda: problem[0], clock=clock, notify=sent.append,
                      watchdog_interval_s=0.5)
    bench.contactor.close()
    run_ticks(loop, clock, 1.0)
    assert bench.relay_closed()
    feeds = sent.count("WATCHDOG=1")
    problem[0] = "task pilot-1 ended"
    with capture_logs() as logs:
        run_ticks(loop, clock, 3.0)
    assert sent.count("WATCHDOG=1") == feeds
    assert not bench.relay_closed()  # the circuit opened while the process still runs
    assert [e["reason"] for e in logs if e["event"] == "safety.unhealthy"] == ["task pilot-1 ended"]


def test_a_heartbeat_that_raises_ends_the_loop(clock):
    class BrokenHeartbeat:
        heartbeat_interval_s, dropout_s = 0.05, 0.5

        def heartbeat(self):
            raise OSError("gpiochip gone")

    loop = SafetyLoop([BrokenHeartbeat()], healthy=lambda: "", clock=clock, notify=lambda m: True)
    with pytest.raises(OSError):
        loop.tick(0.0)
