"""Raspberry Pi class GPIO backends: pilot (PWM + SPI ADC), contactor with feedback and a heartbeat
drop-out output, RCD with self-test.

gpiozero is imported when a backend is built, on the pin factory the config names: never a silent fallback.
"""

from __future__ import annotations

import importlib
import threading
import time
from typing import Any, Callable

from hal import MIN_EDGES_PER_DROPOUT, DeviceUnavailable, PilotReading
from hal.adc import ADC_BITS, BurstSampler, GpiozeroADC, Scale, SpidevADC
from hal.pwm import GpiozeroPWM, SysfsPWM

PIN_FACTORIES = ("lgpio", "rpigpio", "pigpio", "native", "mock")
PILOT_FREQUENCY_HZ = 1000.0  # IEC 61851-1
SPI_CLASS_KEY = "hal.adc.spi_class"  # ctx.shared entry replacing spidev.SpiDev (tests: a fake MCP3x08)

# name -> (module, class, pip package or None, what to check when it fails to start)
_FACTORY_SPECS = {
    "lgpio": ("gpiozero.pins.lgpio", "LGPIOFactory", "lgpio",
              "it opens /dev/gpiochip0 (gpiochip4 on a Pi 5 with older kernels): "
              "run evsed as a user in the gpio group"),
    "rpigpio": ("gpiozero.pins.rpigpio", "RPiGPIOFactory", "RPi.GPIO",
                "it needs /dev/gpiomem and does not support the Pi 5: run evsed in the gpio group"),
    "pigpio": ("gpiozero.pins.pigpio", "PiGPIOFactory", "pigpio",
               "it talks to the pigpiod daemon: systemctl enable --now pigpiod"),
    "native": ("gpiozero.pins.native", "NativeFactory", None,
               "it maps /dev/gpiomem: run evsed in the gpio group"),
    "mock": ("gpiozero.pins.mock", "MockFactory", None, "tests only"),
}


def pin_factory(name: str, shared: dict[str, Any]):
    """The gpiozero pin factory called `name`, one per daemon (cached in `shared`).

    Raises DeviceUnavailable naming the package to install or the device to check;
    gpiozero's own default would quietly try the next factory instead.
    """
    key = f"gpiozero.pin_factory.{name}"
    if key in shared:
        return shared[key]
    if name not in _FACTORY_SPECS:
        raise DeviceUnavailable(f"unknown pin_factory {name!r}; one of {', '.join(PIN_FACTORIES)}")
    module_name, class_name, package, hint = _FACTORY_SPECS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise DeviceUnavailable(
            f"pin_factory {name!r} needs the Python package {package or exc.name}: "
            f"pip install {package or exc.name} ({exc})") from exc
    try:
        factory = getattr(module, class_name)()
    except Exception as exc:  # each factory fails its own way (lgpio.error, OSError, IOError)
        raise DeviceUnavailable(f"pin_factory {name!r} cannot start: {exc}; {hint}") from exc
    shared[key] = factory
    return factory


def _open(what: str, build: Callable[[], Any]):
    """Build a gpiozero device; a pin in use or an invalid pin becomes DeviceUnavailable naming `what`."""
    from gpiozero import GPIOZeroError

    try:
        return build()
    except DeviceUnavailable:
        raise
    except (GPIOZeroError, OSError) as exc:
        raise DeviceUnavailable(f"{what}: {exc}") from exc


class _Input:
    """A digital input with its own active level and pull.

    gpiozero couples the two (pull-up means active-low) and setting a pull after the
    edge callback is armed re-claims the line without it on lgpio, so a mismatched pair
    (e.g. a trip output that opens on a trip, with a pull-up) is read inverted here.
    """

    def __init__(self, device, inverted: bool):
        self.device, self.inverted = device, inverted

    @property
    def is_active(self) -> bool:
        return self.device.is_active != self.inverted

    def wait_for_active(self, timeout_s: float) -> bool:
        wait = self.device.wait_for_inactive if self.inverted else self.device.wait_for_active
        return wait(timeout_s)

    def wait_for_inactive(self, timeout_s: float) -> bool:
        wait = self.device.wait_for_active if self.inverted else self.device.wait_for_inactive
        return wait(timeout_s)

    def watch(self, callback: Callable[[], None]) -> None:
        self.device.when_activated = callback
        self.device.when_deactivated = callback

    def close(self) -> None:
        self.device.close()


def _input(what: str, pin: int, active_high: bool, pull: str, factory) -> _Input:
    from gpiozero import DigitalInputDevice

    if pull == "none":
        return _Input(_open(f"{what} on GPIO{pin}", lambda: DigitalInputDevice(
            pin, pull_up=None, active_state=active_high, pin_factory=factory)), inverted=False)
    pull_up = pull == "up"
    device = _open(f"{what} on GPIO{pin}", lambda: DigitalInputDevice(
        pin, pull_up=pull_up, pin_factory=factory))
    return _Input(device, inverted=active_high == pull_up)


class _Listeners:
    """Callbacks for Notifying.on_change, fired from gpiozero's edge thread."""

    def __init__(self):
        self.callbacks: list[Callable[[], None]] = []
        self.muted = False

    def add(self, callback: Callable[[], None]) -> None:
        self.callbacks.append(callback)

    def fire(self) -> None:
        if not self.muted:
            for callback in list(self.callbacks):
                callback()


# --- pilot ---------------------------------------------------------------------------------


class GpioPilot:
    """The CP output (a PWM into the +/-12 V op-amp stage) and its voltage read by an SPI ADC.

    duty 100 % is steady +12 V (pwm_off), 0 % steady -12 V (pwm_f); `invert` serves
    boards whose output stage inverts. Starts in pwm_off (+12 V, no current offered).
    """

    def __init__(self, output, sampler: BurstSampler, invert: bool = False):
        self.output, self.sampler, self.invert = output, sampler, invert
        self.duty_step_pct: float = output.duty_step_pct  # hal.DutyResolution: the core's duty lies on its grid
        self.pwm_off()

    def _set(self, fraction: float) -> None:
        self.output.set_duty(1.0 - fraction if self.invert else fraction)

    def pwm_on(self, duty_pct: float) -> None:
        """Run the 1 kHz PWM with duty_pct percent high (the core keeps it in 10..97)."""
        if not 0.0 <= duty_pct <= 100.0:
            raise ValueError(f"duty {duty_pct} % outside 0..100")
        self._set(duty_pct / 100.0)

    def pwm_off(self) -> None:
        self._set(1.0)

    def pwm_f(self) -> None:
        self._set(0.0)

    def read(self) -> PilotReading:
        return self.sampler.read()

    def release(self) -> None:
        """Disable the PWM (the pin idles low: -12 V, state F, through a non-inverting stage;
        +12 V through an inverting one: no current offered either way) and close the ADC."""
        try:
            self.output.release()
        finally:
            self.sampler.close()


def gpio_pilot(options: dict, ctx) -> GpioPilot:
    o = options
    factory = None
    if o["pwm"] == "gpiozero" or o["adc_driver"] == "gpiozero":
        factory = pin_factory(o["pin_factory"], ctx.shared)
    if o["pwm"] == "sysfs":
        output = SysfsPWM(o["sysfs_root"], o["pwmchip"], o["pwm_channel"], PILOT_FREQUENCY_HZ)
    else:
        if o["pwm_pin"] is None:
            raise DeviceUnavailable("pilot pwm = \"gpiozero\" needs pwm_pin (a BCM GPIO number)")
        output = _open(f"pilot PWM on GPIO{o['pwm_pin']}",
                       lambda: GpiozeroPWM(o["pwm_pin"], factory, PILOT_FREQUENCY_HZ))
    source = None
    try:
        if o["adc_driver"] == "spidev":
            source = SpidevADC(o["adc"], o["spi_bus"], o["spi_device"], o["adc_channel"], o["spi_speed_hz"],
                               spi_class=ctx.shared.get(SPI_CLASS_KEY))
        else:
            source = _open(f"pilot ADC {o['adc']} on SPI {o['spi_bus']}.{o['spi_device']}",
                           lambda: GpiozeroADC(o["adc"], o["spi_bus"], o["spi_device"], o["adc_channel"],
                                               factory))
        scale = Scale(o["vref_v"], o["offset_v"], o["gain"], ADC_BITS[o["adc"]])
        sampler = BurstSampler(source, scale, samples=o["samples"], high_pct=o["high_percentile"],
                               low_pct=o["low_percentile"], window_s=1.0 / PILOT_FREQUENCY_HZ)
        return GpioPilot(output, sampler, invert=o["invert"])
    except BaseException:
        # Whatever opened is closed again: a half-built pilot must not hold the PWM or the bus.
        try:
            output.release()
        finally:
            if source is not None:
                source.close()
        raise


# --- contactor -----------------------------------------------------------------------------


class GpioContactor:
    """The contactor's coil driver on a digital output; starts (and is released) open."""

    def __init__(self, relay):
        self.relay = relay

    def close(self) -> None:
        self.relay.on()

    def open(self) -> None:
        self.relay.off()

    def release(self) -> None:
        """Open the contactor and free the pin (the board's pull-down keeps the coil off)."""
        try:
            self.relay.off()
        finally:
            self.relay.close()


class GpioContactorWithFeedback(GpioContactor):
    """The contactor plus an auxiliary contact or mains sense reporting the real state.

    The core compares feedback with the command after its contactor_settle_s and
    raises welded / failed-to-close; on_change lets it see a change at once.
    """

    def __init__(self, relay, feedback):
        super().__init__(relay)
        self.feedback = feedback
        self._listeners = _Listeners()
        feedback.watch(self._listeners.fire)

    def feedback_closed(self) -> bool:
        return self.feedback.is_active

    def on_change(self, callback: Callable[[], None]) -> None:
        self._listeners.add(callback)

    def release(self) -> None:
        try:
            super().release()
        finally:
            self.feedback.close()


class _HeartbeatOutput(GpioContactor):
    """The Heartbeat capability: the input of a retriggerable monostable (or charge pump) that
    holds the relay driver only while it keeps toggling. Mixed in before a contactor class (it
    derives from GpioContactor only so that release() has one to call: the MRO is unchanged)."""

    pulse: Any
    heartbeat_interval_s: float
    dropout_s: float

    def _attach(self, pulse, heartbeat_hz: float, dropout_s: float) -> None:
        self.pulse = pulse
        self.heartbeat_interval_s = 0.5 / heartbeat_hz  # one toggle per half period: edges at heartbeat_hz
        self.dropout_s = dropout_s

    def heartbeat(self) -> None:
        """Toggle the heartbeat output once; every other call is a rising edge that retriggers."""
        self.pulse.toggle()

    def release(self) -> None:
        try:
            super().release()  # the coil first
        finally:
            try:
                self.pulse.off()
            finally:
                self.pulse.close()


class GpioContactorWithHeartbeat(_HeartbeatOutput, GpioContactor):
    """The contactor behind a drop-out circuit: it opens by itself when the heartbeat stops."""


class GpioContactorWithFeedbackAndHeartbeat(_HeartbeatOutput, GpioContactorWithFeedback):
    """Feedback and a drop-out circuit."""


def gpio_contactor(options: dict, ctx) -> GpioContactor:
    from gpiozero import DigitalOutputDevice

    o = options
    hb_pin = o["heartbeat_pin"]
    if hb_pin is not None and o["dropout_s"] * o["heartbeat_hz"] < MIN_EDGES_PER_DROPOUT:
        raise DeviceUnavailable(
            f"contactor dropout_s = {o['dropout_s']} s with heartbeat_hz = {o['heartbeat_hz']} leaves "
            f"fewer than {MIN_EDGES_PER_DROPOUT} heartbeat edges per drop-out: raise heartbeat_hz to at "
            f"least {MIN_EDGES_PER_DROPOUT / o['dropout_s']:g} or dropout_s (and the circuit's R*C) to at "
            f"least {MIN_EDGES_PER_DROPOUT / o['heartbeat_hz']:g} s")
    factory = pin_factory(o["pin_factory"], ctx.shared)
    relay = _open(f"contactor on GPIO{o['pin']}", lambda: DigitalOutputDevice(
        o["pin"], active_high=o["active_high"], initial_value=False, pin_factory=factory))
    opened = [relay]
    try:
        pulse = None
        if hb_pin is not None:
            pulse = _open(f"contactor heartbeat on GPIO{hb_pin}", lambda: DigitalOutputDevice(
                hb_pin, initial_value=False, pin_factory=factory))
            opened.append(pulse)
        if o["feedback_pin"] is None:
            contactor = GpioContactor(relay) if pulse is None else GpioContactorWithHeartbeat(relay)
        else:
            feedback = _input("contactor feedback", o["feedback_pin"], o["feedback_active_high"],
                              o["feedback_pull"], factory)
            opened.append(feedback)
            contactor = (GpioContactorWithFeedback(relay, feedback) if pulse is None
                         else GpioContactorWithFeedbackAndHeartbeat(relay, feedback))
    except BaseException:
        for device in reversed(opened):
            device.close()
        raise
    if pulse is not None:
        assert isinstance(contactor, _HeartbeatOutput)  # a heartbeat class is built above when pulse is
        contactor._attach(pulse, o["heartbeat_hz"], o["dropout_s"])
    return contactor


# --- residual-current module ---------------------------------------------------------------


class GpioRcd:
    """A residual-current module's trip output on a digital input."""

    def __init__(self, trip):
        self.trip = trip
        self._listeners = _Listeners()
        trip.watch(self._listeners.fire)

    def tripped(self) -> bool:
        return self.trip.is_active

    def on_change(self, callback: Callable[[], None]) -> None:
        self._listeners.add(callback)

    def release(self) -> None:
        self.trip.close()


class GpioRcdWithSelfTest(GpioRcd):
    """The RCD plus a test output that injects a residual current (a wire through the CT,
    or the module's TEST input) so it can be tested before every close, as OpenEVSE does.

    With test_frequency_hz > 0 the output toggles like OpenEVSE's (a 60 Hz square wave
    through the CT, until the trip or the timeout); with 0 it is held as a level.
    self_test() blocks up to test_timeout_s + release_timeout_s: call it off the event loop.
    """

    def __init__(self, trip, test, *, test_timeout_s: float, release_timeout_s: float,
                 test_frequency_hz: float, clock: Callable[[], float] = time.monotonic):
        super().__init__(trip)
        self.test = test
        self.test_timeout_s, self.release_timeout_s = test_timeout_s, release_timeout_s
        self.test_frequency_hz, self.clock = test_frequency_hz, clock
        self._lock = threading.Lock()
        self._testing = False

    def tripped(self) -> bool:
        # The test's own trip is not a fault; a trip that outlasts the test is reported after it.
        return self.trip.is_active and not self._testing

    def self_test(self) -> bool:
        """True when the trip input asserts while the test runs and releases after it."""
        with self._lock:
            if self.trip.is_active:
                return False  # tripped already: a test proves nothing
            self._testing = self._listeners.muted = True
            try:
                tripped = self._inject()
                released = self.trip.wait_for_inactive(self.release_timeout_s)
            finally:
                self.test.off()
                self._testing = self._listeners.muted = False
            if self.trip.is_active:
                self._listeners.fire()  # still tripped after the test: report it as any trip
            return tripped and released

    def _inject(self) -> bool:
        half_s = 0.5 / self.test_frequency_hz if self.test_frequency_hz > 0 else self.test_timeout_s
        deadline = self.clock() + self.test_timeout_s
        try:
            while True:
                if self.test_frequency_hz > 0:
                    self.test.toggle()
                else:
                    self.test.on()
                left_s = deadline - self.clock()
                if self.trip.wait_for_active(max(0.0, min(half_s, left_s))):
                    return True
                if left_s <= half_s:
                    return False
        finally:
            self.test.off()

    def release(self) -> None:
        try:
            self.test.off()
            self.test.close()
        finally:
            super().release()


def gpio_rcd(options: dict, ctx) -> GpioRcd:
    from gpiozero import DigitalOutputDevice

    o = options
    factory = pin_factory(o["pin_factory"], ctx.shared)
    trip = _input("RCD trip input", o["pin"], o["active_high"], o["pull"], factory)
    if o["test_pin"] is None:
        return GpioRcd(trip)
    try:
        test = _open(f"RCD test output on GPIO{o['test_pin']}", lambda: DigitalOutputDevice(
            o["test_pin"], active_high=o["test_active_high"], initial_value=False, pin_factory=factory))
    except BaseException:
        trip.close()
        raise
    return GpioRcdWithSelfTest(trip, test, test_timeout_s=o["test_timeout_s"],
                               release_timeout_s=o["release_timeout_s"],
                               test_frequency_hz=o["test_frequency_hz"])
