"""Device garbage through the real parsers into a real Charger: hypothesis feeds RDM6300 bytes,
RAPI lines and Modbus register answers to a charger whose EV is plugged in and asks for charge.

Nothing raises out of the charger's path, and the contactor closes only when a whitelisted card
was among the reads; a meter whose answers are bad pauses, then opens, a running charge. The
charger runs on the scenario runner's virtual clock; only the serial links are real (ptys).
"""

from __future__ import annotations

import asyncio
import math
import os
import struct
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from evsed.core import state as core_state
from evsed.shell.scenario import Runner
from hal import HalError, TryAgain
from hal import rapi
from hal.meter_models import MODELS, TYPES
from hal.modbus import ModbusMeter
from hal.rfid import rdm6300_frame
from simulator.openevse_rapi import OpenEvseEmulator
from test_fuzz_devices import captured_logs

ALICE = "13005D1DA5"  # the one enabled card: ten hex digits, as an RDM6300 reads a 125 kHz tag
DISABLED = "0F00B4A3E1"  # on the list, but disabled
CARDS = [{"uid": ALICE, "name": "Alice"}, {"uid": DISABLED, "name": "Gone", "enabled": False}]
GUARD_S = 5.0  # only a broken link reaches this; no test waits for it to pass
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow],
                max_examples=min(settings().max_examples, 40))  # each example builds a charger


def advance(runner: Runner, seconds: float, read_meters: bool = True) -> None:
    """Let virtual time pass as the daemon would spend it: pilot polls, core deadlines, policy timers,
    and (unless the test reads the meter itself) a meter reading each meter_interval_s."""
    end = runner.now + seconds
    while True:
        if read_meters and runner.now >= getattr(runner, "next_meter", 0.0):
            asyncio.run(runner._read_meters())
            runner.next_meter = runner.now + runner.charger.config.timing.meter_interval_s
        t = min([runner.now + runner.charger.config.timing.pilot_poll_s, *runner.pending()])
        if t > end:
            break
        runner.advance_to(t)
        runner._poll()
    runner.now = end


def closed_ever(runner: Runner) -> bool:
    return any(e.type == "contactor.closed" for _, _, e in runner.events)


def no_errors_logged(logs: list[dict]) -> list[dict]:
    """What went wrong loudly: a caught exception in a callback, a violated invariant, a lost link
    (a fault the garbage raised is the charger handling it, not going wrong)."""
    return [e for e in logs if e.get("log_level") in ("error", "critical", "exception")
            and e["event"] != "fault.raised"]


# --- card reader: RDM6300 bytes on a pty, through the real reader, into present_card ---------------

hex10 = st.text("0123456789ABCDEF", min_size=10, max_size=10)
frames = st.one_of(
    st.binary(max_size=40),
    hex10.map(rdm6300_frame),
    st.sampled_from([ALICE, DISABLED]).map(rdm6300_frame),
    st.sampled_from([ALICE, DISABLED]).map(lambda uid: rdm6300_frame(uid).lower()),  # hex case: same card
    st.tuples(st.integers(1, 12), st.integers(0, 255)).map(  # Alice's frame with one byte changed
        lambda c: (f := bytearray(rdm6300_frame(ALICE)), f.__setitem__(c[0], c[1]), bytes(f))[-1]),
    st.integers(1, 13).map(lambda n: rdm6300_frame(ALICE)[:n]),  # cut short
)


class CardRig:
    """The simulator charger with its card reader an RDM6300 on the slave side of a pty."""

    def __init__(self):
        self.master, slave = os.openpty()
        self.slave = slave
        self.runner = Runner(Path("fuzz-cards.toml"), {"config": {
            "card": CARDS, "rfid": {"backend": "rdm6300", "port": os.ttyname(slave)}}})
        self.runner.charger.start()
        self.runner.world.connector(1).plug()
        advance(self.runner, 1.0)  # the EV waits in B for a card

    async def read(self, chunks: list[bytes], sentinel: str) -> list[str]:
        """Write the bytes, then a sentinel card; every tap before it goes to the charger, as the
        daemon's reader loop gives it. Returns the taps."""
        reader, taps = self.runner.devices.reader, []
        for chunk in chunks:
            os.write(self.master, chunk)
        os.write(self.master, rdm6300_frame(sentinel))
        while True:
            try:
                uid = await asyncio.wait_for(reader.next_tap(), GUARD_S)
            except TryAgain:
                continue
            if uid == sentinel:
                return taps
            taps.append(uid)
            self.runner.charger.present_card(uid)
            self.runner._poll()

    def close(self) -> None:
        self.runner.devices.release()
        for fd in (self.master, self.slave):
            os.close(fd)


@FUZZ
@given(st.lists(frames, max_size=12))
def test_no_reader_bytes_close_the_contactor_unless_alices_frame_was_read(chunks):
    stream = b"".join(chunks)
    sentinel = "FFFFFFFFFF"
    rig = CardRig()
    try:
        with captured_logs() as logs:
            taps = asyncio.run(rig.read(chunks, sentinel))
            advance(rig.runner, 3.0)
        assert no_errors_logged(logs) == []
    finally:
        rig.close()
    closed = closed_ever(rig.runner) or rig.runner.world.connector(1).contactor_closed
    if closed:
        assert ALICE in taps, f"closed after reading {taps}"
    if ALICE in taps:  # the parser did not make her up: her whole frame was on the line
        assert rdm6300_frame(ALICE) in stream.upper()
    if taps == [ALICE]:  # and the check can fail: her card alone does start the charge
        assert closed and rig.runner.ctrls[0].state.contactor_closed


# --- OpenEVSE: whatever the board reports, evsed never consents without a card ---------------------

hexbyte = st.integers(0, 0xFF).map(lambda n: f"{n:02x}")
states = st.sampled_from([0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x0B, 0x0E, 0xFE, 0xFF, 0x42])
vflags = st.one_of(st.integers(0, 0xFFFF), st.sampled_from([0x0040, 0x0140, 0x0100, 0x0148, 0x0000]))
at_frames = st.builds(lambda s, p, amps, f: f"AT {s:02x} {p:02x} {amps} {f:04x}", states, states,
                      st.integers(-5, 99), vflags)
notifications = st.one_of(
    at_frames.map(rapi.encode),
    st.builds(lambda s: f"ST {s:02x}", states).map(rapi.encode),
    st.builds(lambda s, e, p, f: f"OK {s:02x} {e} {p:02x} {f:04x}", states, st.integers(0, 9999), states,
              vflags).map(rapi.encode),  # an answer nobody asked for
    st.sampled_from(["AB 00 8.2.3", "AT", "AT 03", "AT zz 03 16 0040", "ST", "ZZ 1 2 3"]).map(rapi.encode),
    at_frames.map(lambda body: rapi.encode(body)[:-3] + b"00\r"),  # bad checksum
    st.lists(st.one_of(hexbyte, st.text("$^*: ATSOK\r", max_size=6)), max_size=8).map(
        lambda parts: " ".join(parts).encode() + b"\r"),
    st.binary(max_size=90),  # noise, possibly longer than any frame
)


class BoardRig:
    """The charger's pilot, contactor and RCD on an OpenEVSE board (the RAPI emulator on a pty),
    with an EV plugged in; the test speaks on the board's side of the line."""

    def __init__(self, emu: OpenEvseEmulator):
        self.emu = emu
        link = {"backend": "openevse", "port": emu.port}
        self.runner = Runner(Path("fuzz-rapi.toml"), {"config": {
            "card": CARDS, "charger": {"phases": 1},
            "connector": [{"id": 1, "cable_a": 32, "pilot": link, "contactor": link, "rcd": link}]}})
        ctrl = self.runner.ctrls[0]
        self.board = ctrl.pilot.board
        self.consents: list[bool] = []  # what evsed's contactor told the board, in order
        real_close, real_open = ctrl.contactor.close, ctrl.contactor.open
        ctrl.contactor.close = lambda: (self.consents.append(True), real_close())[-1]
        ctrl.contactor.open = lambda: (self.consents.append(False), real_open())[-1]
        self.notified: list[rapi.Frame] = []
        on_notify = self.board.link.on_notify
        self.board.link.on_notify = lambda frame: (self.notified.append(frame), on_notify(frame))[-1]
        emu.set_ev("B")
        self.runner.charger.start()
        advance(self.runner, 0.5)

    def say(self, line: bytes, n: int) -> None:
        """One line from the board, then a marker frame; returns once the link has read both."""
        self.emu.send_raw(line)
        self.emu.send_raw(b"\r")  # whatever was unfinished ends here
        self.emu.send_frame(f"$ZZ {n}")
        deadline = time.monotonic() + GUARD_S
        while not any(f.name == "ZZ" and f.args == (str(n),) for f in self.notified):
            assert time.monotonic() < deadline, "the link read nothing"
            threading.Event().wait(0.001)

    def close(self) -> None:
        self.runner.devices.release()


@FUZZ
@given(st.lists(notifications, min_size=1, max_size=6))
def test_no_board_report_makes_evsed_consent_to_the_relay_without_a_card(lines):
    with OpenEvseEmulator(current_a=32) as emu:
        rig = BoardRig(emu)
        ctrl = rig.runner.ctrls[0]
        try:
            with captured_logs() as logs:
                for n, line in enumerate(lines):
                    rig.say(line, n)
                    rig.runner._poll()
                    advance(rig.runner, 0.3)
                    assert True not in rig.consents, f"consented after {lines[:n + 1]!r}"
                    assert not ctrl.state.contactor_closed
                    assert ctrl.state.output.value != "pwm"  # no current offered either
            workers = {t.name for t in threading.enumerate()}
            assert {f"openevse {emu.port}", f"rapi-read {emu.port}"} <= workers  # no thread died
        finally:
            rig.close()
    assert no_errors_logged(logs) == []
    assert "FE" not in emu.commands and not emu.relay_closed  # the board was never enabled


def test_the_board_rig_does_charge_with_alices_card():
    """The fuzz above could fail: with her card, evsed offers current and consents to the relay."""
    with OpenEvseEmulator(current_a=32) as emu:
        rig = BoardRig(emu)
        try:
            rig.runner.charger.present_card(ALICE)
            deadline = time.monotonic() + GUARD_S
            while not (emu.mode == "enabled" and "FE" in emu.commands):
                assert time.monotonic() < deadline, emu.commands
                advance(rig.runner, 0.05)
                threading.Event().wait(0.005)
            emu.set_ev("C")
            while True not in rig.consents:
                assert time.monotonic() < deadline, rig.runner.ctrls[0].status()
                advance(rig.runner, 0.05)
                threading.Event().wait(0.005)
        finally:
            rig.close()


# --- Modbus: register answers through the real meter model into the connector's meter judge -----------

MODEL = MODELS["sdm630"]


def encode(field, value: float) -> list[int]:
    code, count = TYPES[field.type]
    raw = value / field.scale
    data = struct.pack(f">{code}", raw if code == "f" else round(raw))
    words = [int.from_bytes(data[i:i + 2], "big") for i in range(0, 2 * count, 2)]
    return words if MODEL.word_order == "big" else words[::-1]


def good_registers(energy_wh: int, current_a: float) -> dict[int, int]:
    values = {"voltage_v": 230.0, "current_a": current_a, "power_w": 230.0 * current_a,
              "power_total_w": 690.0 * current_a, "energy_import_wh": float(energy_wh), "frequency_hz": 50.0}
    registers: dict[int, int] = {}
    for f in MODEL.fields:
        registers.update(zip(range(f.address, f.address + f.count), encode(f, values[f.quantity])))
    return registers


class RegisterBus:
    """The bus answers each read from the register map of the round (hypothesis chose it), or fails."""

    name = "fuzz"

    def __init__(self):
        self.lock = asyncio.Lock()
        self.users = 0
        self.answer: dict[int, int] | HalError = {}

    async def read(self, function_code, address, count, unit):
        if isinstance(self.answer, HalError):
            raise self.answer
        return [self.answer.get(a, 0) for a in range(address, address + count)]


# one meter period's answer: plausible (energy step, current), garbled words, or no answer
answers = st.one_of(
    st.tuples(st.just("good"), st.integers(0, 12), st.floats(0.0, 16.0)),
    st.tuples(st.just("raw"), st.dictionaries(st.sampled_from(sorted(good_registers(0, 0.0))),
                                              st.integers(0, 0xFFFF), max_size=12)),
    st.tuples(st.just("timeout")),
)


class MeterRig:
    def __init__(self):
        self.runner = Runner(Path("fuzz-meter.toml"), {"config": {"card": CARDS}})
        self.ctrl = self.runner.ctrls[0]
        self.bus = RegisterBus()
        self.meter = ModbusMeter(MODEL, self.bus, unit=1, clock=lambda: self.runner.now)
        self.ctrl.meter = self.runner.devices.connectors[1].meter = self.meter
        self.energy_wh = 1000
        self.runner.charger.start()
        self.bus.answer = good_registers(self.energy_wh, 0.0)
        self.period()
        self.runner.world.connector(1).plug()
        advance(self.runner, 0.5, read_meters=False)

    def period(self) -> bool:
        """One meter read as the daemon's meter loop does it; True when the charger took it."""
        try:
            reading = asyncio.run(self.meter.read())
        except HalError as exc:
            self.ctrl.meter_failed(str(exc))
            return False
        self.ctrl.meter_sampled(reading)
        if self.ctrl.last_reading is reading:  # the judge took it: it must be a sane reading
            assert reading.energy_import_wh >= 0
            assert all(math.isfinite(x) for x in (reading.power_total_w, *reading.current_a))
            return True
        return False

    def set(self, answer: tuple) -> None:
        if answer[0] == "good":
            self.energy_wh += answer[1]
            self.bus.answer = good_registers(self.energy_wh, answer[2])
        elif answer[0] == "raw":
            self.bus.answer = {**good_registers(self.energy_wh, 16.0), **answer[1]}
        else:
            self.bus.answer = TryAgain("no answer from unit 1")


def run_meter(rig: MeterRig, plan: list[tuple]) -> None:
    """One meter period per answer; after each, the core's rules on a silent or garbled meter hold."""
    cfg, ctrl = rig.ctrl.cfg, rig.ctrl
    interval = rig.runner.charger.config.timing.meter_interval_s
    last_taken = rig.runner.now
    for answer in plan:
        rig.set(answer)
        if rig.period():
            last_taken = rig.runner.now
        advance(rig.runner, interval, read_meters=False)
        silent_s = rig.runner.now - last_taken
        if silent_s >= cfg.meter_timeout_s + interval:
            assert not ctrl.state.contactor_closed, f"closed {silent_s:.0f} s after the last good reading"
        if silent_s >= core_state.meter_pause_after_s(cfg) + interval:
            assert ctrl.state.output.value != "pwm", f"offering current {silent_s:.0f} s without a reading"


@FUZZ
@given(st.lists(answers, min_size=1, max_size=20))
def test_no_meter_answer_closes_the_contactor_without_a_card(plan):
    rig = MeterRig()
    with captured_logs() as logs:
        run_meter(rig, plan)
    assert not closed_ever(rig.runner) and not rig.runner.world.connector(1).contactor_closed
    assert no_errors_logged(logs) == []


@FUZZ
@given(st.lists(answers, min_size=1, max_size=20), st.integers(4, 14))
def test_a_charge_pauses_then_opens_while_the_meters_answers_are_bad(plan, bad_periods):
    rig = MeterRig()
    with captured_logs() as logs:
        rig.runner.charger.present_card(ALICE)
        for _ in range(3):
            rig.set(("good", 1, 16.0))
            rig.period()
            advance(rig.runner, 1.0, read_meters=False)
        assert rig.ctrl.state.contactor_closed  # charging: the check below can fail
        run_meter(rig, plan + [("timeout",)] * bad_periods)
    assert no_errors_logged(logs) == []
    if bad_periods * 1.0 >= rig.ctrl.cfg.meter_timeout_s + 1.0:
        assert not rig.ctrl.state.contactor_closed
