"""Raspberry Pi class GPIO backends: contactor, RCD, pilot PWM (sysfs, gpiozero) and the SPI ADC.

Real code under test: the backends, the config schema, gpiozero's devices on its MockFactory pins.
"""
# What is emulated, and how far:
# - pins: gpiozero's MockFactory (real gpiozero devices and edge callbacks, mock pin states);
#   the RCD's reaction to its test current is a MockPin subclass driving the trip input.
# - SPI ADC, spidev path: FakeMCP3x08 implements spidev.SpiDev's open/xfer2/close and decodes
#   each request bit by bit as the datasheet describes, answering from an emulated CP waveform
#   on an emulated clock (one conversion per dt_s).
# - SPI ADC, gpiozero path: gpiozero's real MCP3008 class over its mock (bit-banged) SPI, with
#   MockMCP3x08, a MockSPIDevice slave, answering the conversions.
# - sysfs PWM: a temp tree; kernel() plays the kernel creating pwmN/ after an export, and
#   KernelRulesPWM refuses what pwm_apply_state refuses (zero period, duty > period).

from __future__ import annotations

import errno
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from gpiozero.pins.mock import MockConnectedPin, MockPin, MockPWMPin, MockSPIDevice

from evsed import config
from evsed.config import backends
from evsed.core.pilot import PilotState, classify, diode_present
from evsed.core import events as ev
from hal import (Closable, ContactorFeedback, DeviceUnavailable, DutyResolution, Heartbeat, Notifying, PilotReading,
                 SelfTest, TryAgain)
from hal.adc import BurstSampler, GpiozeroADC, Scale, SpidevADC
from hal.gpio import SPI_CLASS_KEY, pin_factory
from hal.pwm import SysfsPWM, sysfs_error

OFFSET_V, GAIN = 1.65, 8.0  # a board mapping -13.2..+13.2 V on CP to 0..3.3 V at the ADC


def device_options(kind: str, toml: str) -> dict:
    """Options for one device, validated by the real config loader."""
    tables = {"pilot": '[connector.pilot]\nbackend = "sim"\n',
              "contactor": '[connector.contactor]\nbackend = "sim"\n', "rcd": ""}
    tables[kind] = f'[connector.{kind}]\nbackend = "gpio"\npin_factory = "mock"\n{toml}\n'
    cfg = config.parse("[[connector]]\n" + "".join(tables.values()))
    return dict(getattr(cfg.connectors[0], kind).options)


def build(kind: str, toml: str, shared: dict):
    ctx = backends.BackendContext(connector_id=1, shared=shared)
    return backends.create(kind, "gpio", device_options(kind, toml), ctx)


@pytest.fixture
def shared():
    return {}


@pytest.fixture
def mock(shared):
    factory = pin_factory("mock", shared)
    yield factory
    factory.close()


# --- contactor ---------------------------------------------------------------------------------


@pytest.mark.parametrize("active_high", [True, False])
def test_contactor_starts_open_at_its_active_level(mock, shared, active_high):
    build("contactor", f"pin = 17\nactive_high = {str(active_high).lower()}", shared)
    assert mock.pin(17).state == (not active_high)


@pytest.mark.parametrize("active_high", [True, False])
def test_contactor_closes_and_opens_with_the_active_level(mock, shared, active_high):
    contactor = build("contactor", f"pin = 17\nactive_high = {str(active_high).lower()}", shared)
    contactor.close()
    assert mock.pin(17).state == active_high
    contactor.open()
    assert mock.pin(17).state == (not active_high)


def test_contactor_without_feedback_pin_offers_no_feedback(mock, shared):
    contactor = build("contactor", "pin = 17", shared)
    assert not isinstance(contactor, ContactorFeedback)
    assert not isinstance(contactor, Notifying)


def test_feedback_reads_an_aux_contact_pulling_low_when_closed(mock, shared):
    contactor = build("contactor", "pin = 17\nfeedback_pin = 27", shared)  # defaults: active low, pull up
    assert isinstance(contactor, ContactorFeedback)
    assert contactor.feedback_closed() is False  # the pull-up holds the input high
    mock.pin(27).drive_low()
    assert contactor.feedback_closed() is True


def test_feedback_active_high_without_pull(mock, shared):
    contactor = build("contactor", "pin = 17\nfeedback_pin = 27\nfeedback_active_high = true\n"
                      'feedback_pull = "none"', shared)
    mock.pin(27).drive_high()
    assert contactor.feedback_closed() is True
    mock.pin(27).drive_low()
    assert contactor.feedback_closed() is False


def test_feedback_change_calls_on_change(mock, shared):
    contactor = build("contactor", "pin = 17\nfeedback_pin = 27", shared)
    calls = []
    contactor.on_change(lambda: calls.append(contactor.feedback_closed()))
    mock.pin(27).drive_low()
    mock.pin(27).drive_high()
    assert calls == [True, False]


def test_release_leaves_the_contactor_open_and_frees_the_pins(mock, shared):
    contactor = build("contactor", "pin = 17\nfeedback_pin = 27", shared)
    contactor.close()
    assert isinstance(contactor, Closable)
    contactor.release()
    assert mock.pin(17).state is False
    assert mock.pin(17).function == "input"
    build("contactor", "pin = 17\nfeedback_pin = 27", shared)  # the pins are free again


def test_pin_already_in_use_is_device_unavailable_naming_it(mock, shared):
    contactor = build("contactor", "pin = 17", shared)
    with pytest.raises(DeviceUnavailable, match="RCD trip input on GPIO17"):
        build("rcd", "pin = 17", shared)
    contactor.release()


# --- contactor heartbeat (drop-out circuit) -----------------------------------------------------


def test_contactor_without_heartbeat_pin_has_no_heartbeat(mock, shared):
    assert not isinstance(build("contactor", "pin = 17", shared), Heartbeat)


def test_heartbeat_toggles_its_pin_once_per_call_and_leaves_the_coil_alone(mock, shared):
    contactor = build("contactor", "pin = 17\nheartbeat_pin = 22", shared)
    assert isinstance(contactor, Heartbeat)
    contactor.close()
    levels = []
    for _ in range(4):
        contactor.heartbeat()
        levels.append(mock.pin(22).state)
    assert levels == [True, False, True, False]
    assert mock.pin(17).state is True


def test_heartbeat_rate_and_dropout_come_from_the_config(mock, shared):
    contactor = build("contactor", "pin = 17\nheartbeat_pin = 22\nheartbeat_hz = 20\ndropout_s = 0.3", shared)
    assert contactor.heartbeat_interval_s == pytest.approx(0.025)  # a toggle each half period
    assert contactor.dropout_s == pytest.approx(0.3)


def test_heartbeat_and_feedback_together_offer_both_capabilities(mock, shared):
    contactor = build("contactor", "pin = 17\nfeedback_pin = 27\nheartbeat_pin = 22", shared)
    assert isinstance(contactor, Heartbeat) and isinstance(contactor, ContactorFeedback)
    mock.pin(27).drive_low()
    assert contactor.feedback_closed() is True


def test_release_opens_the_coil_idles_the_heartbeat_and_frees_both_pins(mock, shared):
    contactor = build("contactor", "pin = 17\nfeedback_pin = 27\nheartbeat_pin = 22", shared)
    contactor.close()
    contactor.heartbeat()
    contactor.release()
    assert mock.pin(17).state is False and mock.pin(22).state is False
    assert mock.pin(22).function == "input"
    build("contactor", "pin = 17\nfeedback_pin = 27\nheartbeat_pin = 22", shared)  # free again


def test_heartbeat_pin_in_use_frees_the_coil_pin_and_names_the_heartbeat(mock, shared):
    rcd = build("rcd", "pin = 22", shared)
    with pytest.raises(DeviceUnavailable, match="contactor heartbeat on GPIO22"):
        build("contactor", "pin = 17\nheartbeat_pin = 22", shared)
    build("contactor", "pin = 17", shared)  # the coil's pin was closed again
    rcd.release()


def test_dropout_shorter_than_three_heartbeat_periods_is_refused(mock, shared):
    too_slow = "pin = 17\nheartbeat_pin = 22\nheartbeat_hz = 2\ndropout_s = 0.5"
    with pytest.raises(config.ConfigError, match=r"heartbeat_hz.*at least 6.*dropout_s.*at least 1\.5 s"):
        device_options("contactor", too_slow)  # at load, with its line: `evsed check` says it
    options = {**device_options("contactor", "pin = 17\nheartbeat_pin = 22"), "heartbeat_hz": 2.0}
    ctx = backends.BackendContext(connector_id=1, shared=shared)
    with pytest.raises(DeviceUnavailable, match=r"heartbeat_hz.*at least 6.*dropout_s.*at least 1\.5 s"):
        backends.create("contactor", "gpio", options, ctx)  # the hal's own guard, for other callers
    build("contactor", "pin = 17\nheartbeat_pin = 22", shared)  # nothing was left claimed


@pytest.mark.parametrize("option", ["heartbeat_hz = 0.5", "heartbeat_hz = 51", "dropout_s = 0.01",
                                    "dropout_s = 2.5"])
def test_heartbeat_options_are_bounded(option):
    with pytest.raises(config.ConfigError, match=option.split()[0]):
        device_options("contactor", f"pin = 17\nheartbeat_pin = 22\n{option}")


# --- residual-current module ---------------------------------------------------------------------


def test_rcd_trip_input_reads_and_notifies(mock, shared):
    rcd = build("rcd", "pin = 22", shared)  # defaults: active high, pull down
    calls = []
    rcd.on_change(lambda: calls.append(rcd.tripped()))
    assert rcd.tripped() is False
    mock.pin(22).drive_high()
    assert rcd.tripped() is True
    assert calls == [True]
    assert not isinstance(rcd, SelfTest)


class InjectingPin(MockConnectedPin):
    """The test output injecting a residual current: the trip input follows it; `probe`
    runs after each change, while the self-test is still in progress."""

    probe = None

    def _change_state(self, value):
        changed = super()._change_state(value)
        if changed and self.probe is not None:
            self.probe()
        return changed


@pytest.mark.parametrize("active_high, pull, idle, tripped_level", [
    (True, "down", False, True),
    (False, "up", True, False),
    (True, "up", False, True),     # an output that opens on a trip: a cut wire reads tripped
    (False, "down", True, False),
    (True, "none", False, True),
])
def test_trip_level_and_pull_are_independent(mock, shared, active_high, pull, idle, tripped_level):
    rcd = build("rcd", f'pin = 22\nactive_high = {str(active_high).lower()}\npull = "{pull}"', shared)
    calls = []
    rcd.on_change(lambda: calls.append(rcd.tripped()))
    pin = mock.pin(22)
    (pin.drive_high if idle else pin.drive_low)()
    assert rcd.tripped() is False
    (pin.drive_high if tripped_level else pin.drive_low)()
    assert rcd.tripped() is True
    assert calls[-1] is True


@pytest.mark.parametrize("active_high, pull", [(False, "up"), (True, "up"), (False, "down")])
def test_self_test_with_any_trip_level_and_pull(mock, shared, active_high, pull):
    class DrivesTrip(InjectingPin):  # test current on: the trip line goes to its tripped level
        def _change_state(self, value):
            high = value == active_high
            (self.input_pin.drive_high if high else self.input_pin.drive_low)()
            return MockPin._change_state(self, value)

    mock.pin(23, pin_class=DrivesTrip, input_pin=mock.pin(22))
    rcd = build("rcd", f'pin = 22\nactive_high = {str(active_high).lower()}\npull = "{pull}"\n'
                'test_pin = 23', shared)
    assert rcd.tripped() is False
    assert rcd.self_test() is True
    assert rcd.tripped() is False


def wire_test_to_trip(mock, test_pin=23, trip_pin=22):
    return mock.pin(test_pin, pin_class=InjectingPin, input_pin=mock.pin(trip_pin))


def test_self_test_passes_when_the_trip_follows_the_test_output(mock, shared):
    wire_test_to_trip(mock)
    rcd = build("rcd", "pin = 22\ntest_pin = 23", shared)
    assert isinstance(rcd, SelfTest)
    assert rcd.self_test() is True
    assert mock.pin(23).state is False  # the test current is off again
    assert rcd.tripped() is False


def test_self_test_does_not_report_its_own_trip(mock, shared):
    wire_test_to_trip(mock)
    rcd = build("rcd", "pin = 22\ntest_pin = 23", shared)
    calls, seen_during_test = [], []
    rcd.on_change(lambda: calls.append(rcd.tripped()))
    mock.pin(23).probe = lambda: seen_during_test.append((mock.pin(22).state, rcd.tripped()))
    assert rcd.self_test() is True
    assert calls == []
    assert seen_during_test == [(True, False), (False, False)]  # a poll while testing reads no trip


def test_self_test_fails_when_the_trip_never_asserts(mock, shared):
    rcd = build("rcd", "pin = 22\ntest_pin = 23\ntest_timeout_s = 0.01", shared)  # test pin not wired
    assert rcd.self_test() is False
    assert mock.pin(23).state is False


def test_self_test_fails_when_already_tripped(mock, shared):
    wire_test_to_trip(mock)
    rcd = build("rcd", "pin = 22\ntest_pin = 23", shared)
    mock.pin(22).drive_high()
    assert rcd.self_test() is False


class LatchingTestPin(MockPin):
    """A module whose trip latches: the test trips it and nothing releases it."""

    def __init__(self, factory, info, input_pin=None):
        super().__init__(factory, info)
        self.input_pin = input_pin

    def _change_state(self, value):
        if value and self.input_pin is not None:
            self.input_pin.drive_high()
        return super()._change_state(value)


def test_self_test_fails_and_reports_a_trip_that_does_not_release(mock, shared):
    mock.pin(23, pin_class=LatchingTestPin, input_pin=mock.pin(22))
    rcd = build("rcd", "pin = 22\ntest_pin = 23\nrelease_timeout_s = 0.01", shared)
    calls = []
    rcd.on_change(lambda: calls.append(rcd.tripped()))
    assert rcd.self_test() is False
    assert calls == [True]  # still tripped after the test: reported like any trip


class CtTestPin(MockPin):
    """A wire through the CT: the module sees AC only, and trips after `trip_after` rising edges."""

    def __init__(self, factory, info, input_pin=None, trip_after=3):
        super().__init__(factory, info)
        self.input_pin, self.trip_after, self.rising = input_pin, trip_after, 0

    def _change_state(self, value):
        if value and not self.state:
            self.rising += 1
            if self.rising == self.trip_after:
                self.input_pin.drive_high()
        elif not value and self.input_pin.state:
            self.input_pin.drive_low()  # the residual current stops with the test
        return super()._change_state(value)


def test_pulsed_self_test_toggles_until_the_ct_trips(mock, shared):
    pin = mock.pin(23, pin_class=CtTestPin, input_pin=mock.pin(22))
    rcd = build("rcd", "pin = 22\ntest_pin = 23\ntest_frequency_hz = 1000", shared)
    assert rcd.self_test() is True
    assert pin.rising == 3


def test_level_self_test_holds_the_output_instead_of_toggling(mock, shared):
    pin = mock.pin(23, pin_class=CtTestPin, input_pin=mock.pin(22))
    rcd = build("rcd", "pin = 22\ntest_pin = 23\ntest_timeout_s = 0.02", shared)
    assert rcd.self_test() is False  # a CT needs AC: a level never trips it
    assert pin.rising == 1


def test_rcd_release_turns_the_test_output_off_and_frees_pins(mock, shared):
    wire_test_to_trip(mock)
    rcd = build("rcd", "pin = 22\ntest_pin = 23", shared)
    rcd.release()
    assert mock.pin(23).state is False
    assert mock.pin(23).function == "input"


# --- pilot PWM: sysfs ------------------------------------------------------------------------------


@pytest.fixture
def pwm_root(tmp_path):
    """A /sys/class/pwm with one chip of two channels, none exported."""
    chip = tmp_path / "pwmchip0"
    chip.mkdir()
    for name, text in (("export", ""), ("unexport", ""), ("npwm", "2\n")):
        (chip / name).write_text(text)
    return tmp_path


def kernel(root: Path):
    """Plays the kernel's part after an export, in place of sleep: creates pwmN/ and its files."""
    def sleep(_s: float) -> None:
        chip = root / "pwmchip0"
        channel = chip / f"pwm{(chip / 'export').read_text().strip()}"
        channel.mkdir(exist_ok=True)
        for name, text in (("period", "0\n"), ("duty_cycle", "0\n"), ("enable", "0\n"),
                           ("polarity", "inversed\n")):
            (channel / name).write_text(text)
    return sleep


def exported(root: Path, channel: int = 0) -> None:
    """The channel as a previous run left it exported."""
    (root / "pwmchip0" / "export").write_text(str(channel))
    kernel(root)(0)


def attr(root: Path, name: str, channel: int = 0) -> str:
    return (root / "pwmchip0" / f"pwm{channel}" / name).read_text().strip()


def test_sysfs_pwm_exports_the_channel_and_sets_a_1_khz_period(pwm_root):
    SysfsPWM(pwm_root, chip=0, channel=1, sleep=kernel(pwm_root))
    assert (pwm_root / "pwmchip0" / "export").read_text() == "1"
    assert attr(pwm_root, "period", 1) == "1000000"
    assert attr(pwm_root, "polarity", 1) == "normal"
    assert attr(pwm_root, "enable", 1) == "0"  # enabled by the first duty, not before


class KernelRulesPWM(SysfsPWM):
    """SysfsPWM on the temp tree, refusing what the kernel's pwm_apply_state refuses:
    any write leaving a zero period or a duty longer than the period (EINVAL)."""

    def _write(self, path, text, action):
        if path.parent == self.dir:
            period = int(text if path.name == "period" else (self.dir / "period").read_text())
            duty = int(text if path.name == "duty_cycle" else (self.dir / "duty_cycle").read_text())
            if period == 0 or duty > period:
                raise sysfs_error(path, OSError(errno.EINVAL, "Invalid argument"), action)
        super()._write(path, text, action)


def test_fresh_export_sets_the_period_before_anything_else(pwm_root):
    pwm = KernelRulesPWM(pwm_root, sleep=kernel(pwm_root))  # period 0 after export
    pwm.set_duty(0.5)
    assert (attr(pwm_root, "period"), attr(pwm_root, "duty_cycle")) == ("1000000", "500000")
    assert attr(pwm_root, "enable") == "1"


def test_a_leftover_longer_duty_is_cleared_before_the_period_shrinks(pwm_root):
    exported(pwm_root)
    (pwm_root / "pwmchip0" / "pwm0" / "period").write_text("20000000")
    (pwm_root / "pwmchip0" / "pwm0" / "duty_cycle").write_text("10000000")
    KernelRulesPWM(pwm_root, sleep=kernel(pwm_root)).set_duty(1.0)
    assert (attr(pwm_root, "period"), attr(pwm_root, "duty_cycle")) == ("1000000", "1000000")


def test_sysfs_pwm_times_out_when_the_export_never_appears(pwm_root):
    with pytest.raises(DeviceUnavailable, match=r"pwmchip0/pwm0/enable"):
        SysfsPWM(pwm_root, export_timeout_s=0.05, sleep=lambda _s: None)


def test_missing_pwm_chip_names_the_path_and_the_overlay(tmp_path):
    with pytest.raises(DeviceUnavailable) as info:
        SysfsPWM(tmp_path, chip=2)
    assert str(tmp_path / "pwmchip2") in str(info.value)
    assert "dtoverlay=pwm" in str(info.value)


def test_permission_denied_names_the_file_and_the_gpio_group():
    exc = sysfs_error(Path("/sys/class/pwm/pwmchip0/export"),
                      PermissionError(errno.EACCES, "Permission denied"), "export a channel through")
    assert "/sys/class/pwm/pwmchip0/export" in str(exc)
    assert "gpio group" in str(exc) and "udev" in str(exc)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files")
def test_read_only_export_file_is_device_unavailable(pwm_root):
    (pwm_root / "pwmchip0" / "export").chmod(0o444)
    with pytest.raises(DeviceUnavailable, match="gpio group"):
        SysfsPWM(pwm_root, sleep=kernel(pwm_root))


class FakeMCP3x08:
    """The spidev.SpiDev interface of an MCP3008/MCP3208 sampling a CP waveform.

    Decodes the request bit by bit as the datasheet describes (start bit, SGL, D2..D0,
    a sample clock, a null bit, then the result MSB first), so it checks the encoding.
    Each transfer advances emulated time by `dt_s`; `cp_v(t)` is the connector voltage.
    """

    def __init__(self, bits=10, dt_s=37e-6, vref_v=3.3, channel=0):
        self.bits, self.dt_s, self.vref_v, self.channel = bits, dt_s, vref_v, channel
        self.t, self.opened, self.closed, self.spikes = 0.0, None, False, []
        self.cp_v = lambda t: 12.0

    def __call__(self):  # used as the class: SpiDev()
        return self

    def open(self, bus, device):
        self.opened = (bus, device)

    def close(self):
        self.closed = True

    def counts_at(self, t: float) -> int:
        adc_v = self.cp_v(t) / GAIN + OFFSET_V
        full = (1 << self.bits) - 1
        return max(0, min(full, round(adc_v / self.vref_v * full)))

    def xfer2(self, data):
        bits = [(byte >> (7 - i)) & 1 for byte in data for i in range(8)]
        start = bits.index(1)
        assert bits[start + 1] == 1, "single-ended"
        assert int("".join(map(str, bits[start + 2:start + 5])), 2) == self.channel
        value = self.spikes.pop() if self.spikes else self.counts_at(self.t)
        self.t += self.dt_s
        first = start + 7  # after D0: one sample clock, one null bit
        assert first + self.bits <= len(bits)
        out = [0] * len(bits)
        for i in range(self.bits):
            out[first + i] = (value >> (self.bits - 1 - i)) & 1
        return [int("".join(map(str, out[k:k + 8])), 2) for k in range(0, len(out), 8)]


def cp_wave(duty_pct: float, high_v: float, low_v: float, period_s: float = 0.001):
    return lambda t: high_v if (t % period_s) < duty_pct / 100 * period_s else low_v


def sampler_on(adc: FakeMCP3x08, chip="mcp3008", **kw) -> BurstSampler:
    source = SpidevADC(chip, 0, 0, adc.channel, 1_000_000, spi_class=adc)
    return BurstSampler(source, Scale(3.3, OFFSET_V, GAIN, adc.bits), clock=lambda: adc.t, **kw)


@pytest.mark.parametrize("state, duty, high_v, low_v", [
    (PilotState.A, 100.0, 12.0, 12.0),   # pwm_off, no EV: steady +12 V
    (PilotState.B, 53.3, 9.0, -12.0),    # 32 A offered, EV connected
    (PilotState.C, 10.0, 6.0, -12.0),    # 6 A: the shortest high plateau
    (PilotState.C, 96.0, 6.0, -12.0),    # 80 A: the shortest low plateau
    (PilotState.D, 26.6, 3.0, -12.0),
    (PilotState.E, 53.3, 0.0, 0.0),      # CP shorted to PE
    (PilotState.F, 0.0, -12.0, -12.0),   # pwm_f: steady -12 V
])
def test_adc_burst_gives_the_cp_levels_of_each_state(state, duty, high_v, low_v):
    adc = FakeMCP3x08()
    adc.cp_v = cp_wave(duty, high_v, low_v)
    reading = sampler_on(adc).read()
    assert reading.high_v == pytest.approx(high_v, abs=0.05)
    assert reading.low_v == pytest.approx(low_v, abs=0.05)
    assert classify(reading.high_v) is state
    assert diode_present(reading.low_v) is (low_v == -12.0)


@settings(max_examples=200, deadline=None)
@given(duty=st.floats(10.0, 96.0), high_v=st.sampled_from([12.0, 9.0, 6.0, 3.0]),
       dt_s=st.floats(5e-6, 37e-6), phase_s=st.floats(0.0, 0.001))
def test_plateaus_are_found_at_any_duty_the_core_offers(duty, high_v, dt_s, phase_s):
    # Spacing up to 37 us puts a sample on even the 40 us low plateau of 96 % in every period.
    adc = FakeMCP3x08(dt_s=dt_s)
    adc.t = phase_s
    adc.cp_v = cp_wave(duty, high_v, -12.0)
    reading = sampler_on(adc).read()
    step_v = 3.3 / 1023 * GAIN
    assert abs(reading.high_v - high_v) <= step_v
    assert abs(reading.low_v + 12.0) <= step_v


def test_mcp3208_reads_12_bit_counts_on_its_channel():
    adc = FakeMCP3x08(bits=12, channel=5)
    adc.cp_v = cp_wave(50.0, 6.0, -12.0)
    reading = sampler_on(adc, chip="mcp3208").read()
    assert reading == PilotReading(pytest.approx(6.0, abs=0.01), pytest.approx(-12.0, abs=0.01))


def test_burst_spans_at_least_one_pwm_period():
    adc = FakeMCP3x08(dt_s=100e-6)
    sampler = sampler_on(adc, samples=4)
    assert len(sampler.burst()) == 10  # conversions at 0, 0.1 .. 0.9 ms: the whole period
    assert adc.t >= 0.001


def test_a_single_spike_does_not_move_the_plateaus():
    adc = FakeMCP3x08()
    adc.cp_v = cp_wave(53.3, 9.0, -12.0)
    adc.spikes = [1000, 20]  # two stray conversions near the rails
    reading = sampler_on(adc).read()
    assert reading.high_v == pytest.approx(9.0, abs=0.05)
    assert reading.low_v == pytest.approx(-12.0, abs=0.05)


def test_adc_at_a_rail_is_try_again():
    adc = FakeMCP3x08()
    adc.cp_v = lambda t: -20.0  # beyond the divider's range, as a stuck MISO reads
    with pytest.raises(TryAgain, match="rail"):
        sampler_on(adc).read()


def test_spidev_not_found_names_the_device_and_spi_overlay():
    class Missing(FakeMCP3x08):
        def open(self, bus, device):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")
    with pytest.raises(DeviceUnavailable, match=r"/dev/spidev0\.1.*dtparam=spi=on"):
        SpidevADC("mcp3008", 0, 1, 0, 1_000_000, spi_class=Missing())


class MockMCP3x08(MockSPIDevice):
    """The slave side of an MCP3x08 on gpiozero's mock SPI pins (GPIO11/10/9/8 = SPI0 CE0)."""

    def __init__(self, factory, bits, counts):
        super().__init__(11, 10, 9, 8, pin_factory=factory)
        self.bits, self.counts, self.state, self.channel = bits, counts, "idle", None

    def on_start(self):
        super().on_start()
        self.state = "idle"

    def on_bit(self):
        if self.state == "idle" and self.rx_buf[-1]:
            self.state, self.rx_buf = "mode", []
        elif self.state == "mode":
            self.state, self.rx_buf = "channel", []
        elif self.state == "channel" and len(self.rx_buf) == 3:
            self.channel, self.state = self.rx_word(), "result"
            self.tx_word(self.counts(), self.bits + 2)  # sample clock + null bit, then the result


def test_gpiozero_adc_reads_the_cp_through_gpiozeros_mcp3008(mock):
    t = [0.0]
    wave = cp_wave(53.3, 6.0, -12.0)

    def counts():
        t[0] += 37e-6
        return round((wave(t[0]) / GAIN + OFFSET_V) / 3.3 * 1023)

    slave = MockMCP3x08(mock, 10, counts)
    source = GpiozeroADC("mcp3008", 0, 0, 3, mock)
    reading = BurstSampler(source, Scale(3.3, OFFSET_V, GAIN, 10), clock=lambda: t[0]).read()
    assert slave.channel == 3
    assert reading.high_v == pytest.approx(6.0, abs=0.05)
    assert reading.low_v == pytest.approx(-12.0, abs=0.05)
    source.close()


# --- the pilot backend --------------------------------------------------------------------------------


@pytest.fixture
def pilot_toml(pwm_root):
    exported(pwm_root)
    return f'offset_v = {OFFSET_V}\ngain = {GAIN}\nsysfs_root = "{pwm_root}"'


def test_pilot_duty_reaches_the_sysfs_channel(pwm_root, pilot_toml, shared):
    shared[SPI_CLASS_KEY] = FakeMCP3x08()
    pilot = build("pilot", pilot_toml, shared)
    assert attr(pwm_root, "duty_cycle") == "1000000"  # starts in pwm_off: steady +12 V
    assert attr(pwm_root, "enable") == "1"
    pilot.pwm_on(53.3)
    assert attr(pwm_root, "duty_cycle") == "533000"
    pilot.pwm_on(10.0)
    assert attr(pwm_root, "duty_cycle") == "100000"
    pilot.pwm_off()
    assert attr(pwm_root, "duty_cycle") == "1000000"
    pilot.pwm_f()
    assert attr(pwm_root, "duty_cycle") == "0"
    assert attr(pwm_root, "enable") == "1"


def test_the_core_offers_32_a_as_a_duty_an_ev_reads_as_32_a_to_the_nanosecond(pwm_root, pilot_toml, shared,
                                                                              tmp_path):
    # The kernel PWM sets whole nanoseconds of the 1 ms period; the core, told so, puts its duty
    # on that grid: 53.3334 %, 32.00004 A. Floored to 0.1 % it was 53.3 %: 31.98 A, which an EV
    # that truncates takes as 31 A.
    from test_connector import Clock, make, reading
    adc = shared[SPI_CLASS_KEY] = FakeMCP3x08()
    pilot = build("pilot", pilot_toml, shared)
    assert isinstance(pilot, DutyResolution) and pilot.duty_step_pct == pytest.approx(1e-4)
    clock = Clock()
    ctrl, _, contactor, _ = make(tmp_path, clock, pilot=pilot)  # [charger] max_current_a 32
    ctrl.start()
    ctrl.meter_sampled(reading(1000, 0.0))
    adc.cp_v = lambda t: 9.0  # an EV plugged in, no PWM yet
    ctrl.poll_inputs(ctrl.read_pilot())
    ctrl.feed(ev.CardPresented("04A1B2C3"))
    duty_ns = int(attr(pwm_root, "duty_cycle"))
    read_a = duty_ns / 1e6 * 100 * 0.6  # IEC 61851-1 Table A.8, as the EV reads it
    assert duty_ns == 533334 and 32.0 <= read_a <= 32.05 and math.floor(read_a) == 32
    assert ctrl.state.offered_a == pytest.approx(read_a)


def test_inverting_output_stage_gets_the_complement(pwm_root, pilot_toml, shared):
    shared[SPI_CLASS_KEY] = FakeMCP3x08()
    pilot = build("pilot", pilot_toml + "\ninvert = true", shared)
    pilot.pwm_on(53.3)
    assert attr(pwm_root, "duty_cycle") == "467000"
    pilot.pwm_f()
    assert attr(pwm_root, "duty_cycle") == "1000000"


def test_pilot_reads_the_adc_it_was_configured_with(pwm_root, pilot_toml, shared):
    adc = FakeMCP3x08(channel=2)
    adc.cp_v = cp_wave(53.3, 9.0, -12.0)
    shared[SPI_CLASS_KEY] = adc
    pilot = build("pilot", pilot_toml + "\nadc_channel = 2\nspi_device = 1", shared)
    reading = pilot.read()
    assert adc.opened == (0, 1)
    assert classify(reading.high_v) is PilotState.B and diode_present(reading.low_v)


def test_pilot_release_leaves_minus_12_v_and_closes_the_adc(pwm_root, pilot_toml, shared):
    adc = shared[SPI_CLASS_KEY] = FakeMCP3x08()
    pilot = build("pilot", pilot_toml, shared)
    pilot.pwm_on(53.3)
    pilot.release()
    assert attr(pwm_root, "duty_cycle") == "0"
    assert attr(pwm_root, "enable") == "0"
    assert adc.closed


def test_gpiozero_pwm_fallback_runs_1_khz_on_the_pin(mock, shared):
    mock.pin_class = MockPWMPin  # gpiozero asks for PWM-capable pins through the default class
    pin = mock.pin(18)
    adc = shared[SPI_CLASS_KEY] = FakeMCP3x08()
    adc.cp_v = cp_wave(53.3, 9.0, -12.0)
    pilot = build("pilot", f'offset_v = {OFFSET_V}\ngain = {GAIN}\npwm = "gpiozero"\npwm_pin = 18', shared)
    assert pin.frequency == 1000 and pin.state == 1.0  # pwm_off: steady +12 V
    assert pilot.duty_step_pct == pytest.approx(0.1)  # edges in whole microseconds: 0.1 % of 1 ms
    pilot.pwm_on(53.3)
    assert pin.state == pytest.approx(0.533)
    pilot.pwm_f()
    assert pin.state == 0.0
    assert classify(pilot.read().high_v) is PilotState.B
    pilot.release()
    assert pin.frequency is None and pin.state == 0.0


def test_gpiozero_pwm_without_a_pin_is_refused(shared, mock):
    with pytest.raises(DeviceUnavailable, match="pwm_pin"):
        build("pilot", 'offset_v = 1.65\ngain = 8\npwm = "gpiozero"\nadc_driver = "gpiozero"', shared)


# --- no silent fallback, lazy imports -------------------------------------------------------------------


def test_a_missing_pin_factory_package_is_named(shared):
    pytest.importorskip("gpiozero")
    if "lgpio" in sys.modules or _importable("lgpio"):
        pytest.skip("lgpio is installed here")
    ctx = backends.BackendContext(1, shared)
    with pytest.raises(DeviceUnavailable, match="pip install lgpio"):
        backends.create("contactor", "gpio", {**device_options("contactor", "pin = 17"),
                                              "pin_factory": "lgpio"}, ctx)


def test_a_missing_spidev_package_is_named(pwm_root, pilot_toml, shared):
    if _importable("spidev"):
        pytest.skip("spidev is installed here")
    with pytest.raises(DeviceUnavailable, match="pip install spidev"):
        build("pilot", pilot_toml, shared)
    assert attr(pwm_root, "enable") == "0"  # the PWM opened first was released again


def _importable(name: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(name) is not None


def test_importing_the_registry_loads_no_gpio_library():
    code = "import sys, evsed.config.backends, evsed.config; print(sorted(m for m in sys.modules " \
           "if m.split('.')[0] in ('gpiozero', 'spidev', 'lgpio', 'RPi', 'pigpio') " \
           "or m in ('hal.gpio', 'hal.pwm', 'hal.adc')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
