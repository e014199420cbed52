"""IEC 61851-1 control pilot arithmetic: CP states from voltages, PWM duty from current.

Pure functions, no I/O; the core and the hardware backends share them.
"""

from __future__ import annotations

import enum
import math


class PilotState(enum.Enum):
    """IEC 61851-1 states, by the high level of the pilot signal."""

    A = "A"  # +12 V: no EV
    B = "B"  # +9 V: EV connected, not requesting energy
    C = "C"  # +6 V: EV requests energy
    D = "D"  # +3 V: EV requests energy, ventilation required
    E = "E"  # 0 V: CP shorted to PE, or EVSE/pilot supply lost
    F = "F"  # -12 V: EVSE not available (or EV error)


NOMINAL_V = {
    PilotState.A: 12.0,
    PilotState.B: 9.0,
    PilotState.C: 6.0,
    PilotState.D: 3.0,
    PilotState.E: 0.0,
    PilotState.F: -12.0,
}
BAND_V = 1.1  # accepted deviation from the nominal level, either way
DIODE_LOW_V = -12.0  # the negative plateau when the EV's diode is present

MIN_CURRENT_A = 6.0  # below this no PWM is offered (a pause), never a duty under 10 %
MAX_CURRENT_A = 80.0
MAX_ABOVE_A = 0.05  # what an EV may read above the offer where the PWM's resolution forces a choice


def classify(high_v: float) -> PilotState | None:
    """The state whose band holds high_v, or None when it lies between bands."""
    if math.isnan(high_v):
        return None
    for state, nominal in NOMINAL_V.items():
        if abs(high_v - nominal) <= BAND_V:
            return state
    return None


def diode_present(low_v: float) -> bool:
    """True when the low plateau of a running PWM is about -12 V (the EV's diode)."""
    return abs(low_v - DIODE_LOW_V) <= BAND_V


def duty_for_current(current_a: float, step_pct: float = 0.0) -> float | None:
    """PWM duty in percent that offers current_a, at the PWM's resolution step_pct (0: exact).

    6-51 A: duty = A / 0.6; 51-80 A: duty = A / 2.5 + 64 (never under 85 %). Below 6 A: None;
    above 80 A the offer is capped at 80 A. On a PWM's grid the duty is the step at or above the
    exact one, so that an EV that truncates what it reads still reads the offer (16 A is 26.67 %:
    26.6 % would read 15.96 A, 15 A to such an EV); if that step reads more than MAX_ABOVE_A above
    the offer, the step below.
    """
    if math.isnan(current_a) or current_a < MIN_CURRENT_A:
        return None
    current_a = min(current_a, MAX_CURRENT_A)
    if current_a <= 51.0:
        duty = current_a / 0.6
    else:  # 51-52.5 A: the upper formula gives under 85 %, which reads below 51 A; 85 % is 51 A
        duty = max(current_a / 2.5 + 64.0, 85.0)
    if step_pct <= 0.0:
        return duty
    # the epsilon absorbs float noise such as 6 / 0.6 == 10.000000000000002 on a 0.1 % grid
    up = round(math.ceil(duty / step_pct - 1e-6) * step_pct, 9)
    down = round(math.floor(duty / step_pct + 1e-6) * step_pct, 9)
    if current_for_duty(up) <= current_for_duty(duty) + MAX_ABOVE_A or down < 10.0:
        return up
    return down


def current_for_duty(duty_pct: float) -> float:
    """The current in amperes an EV reads from a duty in percent (0 where no charging is allowed)."""
    if duty_pct < 8.0:
        return 0.0
    if duty_pct < 10.0:
        return MIN_CURRENT_A
    if duty_pct <= 85.0:
        return duty_pct * 0.6
    if duty_pct <= 97.0:
        return min((duty_pct - 64.0) * 2.5, MAX_CURRENT_A)
    return 0.0
