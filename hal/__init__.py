"""Hardware abstraction: one small interface per device kind, and the errors they raise.

hal imports nothing from evsed or simulator; backends live in submodules and are
loaded by name through hal.registry, so hardware-only packages load only when configured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


# --- errors -----------------------------------------------------------------------


# A contactor behind a drop-out circuit: a heartbeat late by up to two periods must not drop it.
MIN_EDGES_PER_DROPOUT = 3


class HalError(Exception):
    """Base of every hardware error evsed handles."""


class DeviceUnavailable(HalError, OSError):
    """The device cannot be used (missing package, device file, permission): do not retry blindly."""


class TryAgain(HalError, TimeoutError):
    """A transient failure (timeout, bad frame, bus busy): the next attempt may succeed."""


# --- values crossing the interfaces --------------------------------------------------


@dataclass(frozen=True, slots=True)
class PilotReading:
    """Control pilot voltages measured over one PWM period, in volts at the connector.

    high_v is the positive plateau (state A-E), low_v the negative one (-12 V when the
    EV's diode is present and PWM runs; equal to high_v with a steady output).
    """

    high_v: float
    low_v: float


@dataclass(frozen=True, slots=True)
class MeterReading:
    """One read of an energy meter. Lists are per phase (L1, L2, L3 or just L1).

    Anything the meter model lacks is empty (lists) or None (frequency_hz: also when the unit
    does not measure it); never 0 for "not measured". Energy is integer Wh, import direction.
    """

    energy_import_wh: int
    power_total_w: float
    current_a: tuple[float, ...] = ()
    voltage_v: tuple[float, ...] = ()
    power_w: tuple[float, ...] = ()
    frequency_hz: float | None = None


@dataclass(frozen=True, slots=True)
class MeterIdentity:
    """Who made a meter and which one it is: the vendor and model its backend knows it as, and
    the serial number it reports. "" where the backend cannot tell, and problem says why when it
    should have (the serial register did not answer); what a meter says is given as said
    (whether it is usable is judged in evsed)."""

    vendor: str = ""
    model: str = ""
    serial: str = ""
    problem: str = ""


# --- device interfaces ---------------------------------------------------------------


@runtime_checkable
class Pilot(Protocol):
    """Control pilot output (+/-12 V, 1 kHz PWM) and its voltage measurement.

    Named after EVerest's board-support interface: pwm_on, pwm_off (steady +12 V,
    state X1), pwm_f (steady -12 V, state F: EVSE not available).
    """

    def pwm_on(self, duty_pct: float) -> None: ...

    def pwm_off(self) -> None: ...

    def pwm_f(self) -> None: ...

    def read(self) -> PilotReading: ...


@runtime_checkable
class DutyResolution(Protocol):
    """Optional capability: a pilot whose PWM sets the duty in steps of duty_step_pct percent
    (the kernel's PWM: 1 ns of the 1 ms period). The core puts the duty on that grid, so that the
    current an EV reads is the one offered (never under it, never 0.05 A over)."""

    duty_step_pct: float


@runtime_checkable
class OfferedCurrent(Protocol):
    """Optional capability: a pilot whose board sets the PWM itself and may offer less than asked
    (an OpenEVSE caps a volatile $SC at its stored maximum) reports what the EV is really offered,
    in A; None while it offers nothing. Status shows this beside the core's own figure."""

    def offered_current_a(self) -> float | None: ...


@runtime_checkable
class ProximityPilot(Protocol):
    """Optional capability: a pilot board that also reads a socket's proximity pilot (PP), the
    resistor between PP and PE that codes the plugged cable's rating (IEC 61851-1 Annex B);
    in ohm, inf when open (no cable), None when the reading failed."""

    def proximity_ohm(self) -> float | None: ...


@runtime_checkable
class ContactInput(Protocol):
    """A digital input that is not a safety input (a grid operator's control contact)."""

    def active(self) -> bool: ...


@runtime_checkable
class Contactor(Protocol):
    """The main relay. Wired fail-safe: energized to close, open when unpowered."""

    def close(self) -> None: ...

    def open(self) -> None: ...


@runtime_checkable
class SoftOpen(Protocol):
    """Optional capability: a contactor whose driver can let the EV stop first. An OpenEVSE board
    asleep ($FS) opens once the EV leaves C or draws nothing, or after its own 3 s; open() instead
    drops the relay under load at once ($FD, -12 V on the pilot). For a stop that is no fault."""

    def open_when_ev_stops(self) -> None: ...


@runtime_checkable
class ContactorFeedback(Protocol):
    """Optional capability: an auxiliary contact or mains sense reports the real state."""

    def feedback_closed(self) -> bool: ...


@runtime_checkable
class Heartbeat(Protocol):
    """Optional capability: hardware outside the process falls back to its safe side unless refreshed.

    Call heartbeat() every heartbeat_interval_s from the loop that keeps the contactor safe; when
    the calls stop (a crash, kill -9, a hung loop) the fallback follows within dropout_s. A
    contactor behind a retriggerable monostable or charge pump (heartbeat() toggles its input,
    half the square wave's period): the relay opens, whatever level the command output kept. An
    OpenEVSE pilot (heartbeat() is one $SY): the board lowers its offer to 6 A.
    """

    heartbeat_interval_s: float
    dropout_s: float

    def heartbeat(self) -> None: ...


@runtime_checkable
class FaultInput(Protocol):
    """Residual-current (RCD) module or any other trip input."""

    def tripped(self) -> bool: ...


@runtime_checkable
class SelfTest(Protocol):
    """Optional capability: a fault input that can test itself before every close."""

    def self_test(self) -> bool: ...


@runtime_checkable
class Meter(Protocol):
    """An energy meter. read() may take tens of milliseconds on a bus, hence async."""

    async def read(self) -> MeterReading: ...


@runtime_checkable
class IdentifiedMeter(Protocol):
    """Optional capability: a meter that tells its vendor, model and serial number. Asked once
    when the meter opens (the serial may be a bus read, hence async); raises TryAgain or
    DeviceUnavailable like read()."""

    async def identity(self) -> MeterIdentity: ...


@runtime_checkable
class CardReader(Protocol):
    """An RFID reader. next_tap() waits for the next card presented and returns its UID
    in canonical form: upper-case hex, no separators. A card held on the reader is one tap.
    """

    async def next_tap(self) -> str: ...


@runtime_checkable
class Notifying(Protocol):
    """Optional capability: a device that can call back as soon as its input changes, so
    the daemon reacts without waiting for the next poll. The callback may run in any
    thread; the daemon makes it thread-safe."""

    def on_change(self, callback) -> None: ...


@runtime_checkable
class Closable(Protocol):
    """Optional capability: a device holding a resource (bus, file, thread) to release."""

    def release(self) -> None: ...


def canonical_uid(raw: str | bytes) -> str:
    """A card UID as upper-case hex without separators; raises ValueError on non-hex."""
    if isinstance(raw, (bytes, bytearray)):
        return bytes(raw).hex().upper()
    text = raw.strip().replace(":", "").replace("-", "").replace(" ", "")
    if not text or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise ValueError(f"not a hex card UID: {raw!r}")
    return text.upper()
