"""A simulated EV as the charger sees it: its pilot state and the current it draws.

Plain state and arithmetic, no clock: the hardware simulation asks it questions.
"""

from __future__ import annotations

from dataclasses import dataclass

# IEC 61851-1 EV-side decoding of the duty (what the EV may draw), kept local so the
# simulator depends on nothing but hal.


def offered_current_a(duty_pct: float | None) -> float:
    if duty_pct is None or duty_pct < 8.0:
        return 0.0
    if duty_pct < 10.0:
        return 6.0
    if duty_pct <= 85.0:
        return duty_pct * 0.6
    if duty_pct <= 97.0:
        return min((duty_pct - 64.0) * 2.5, 80.0)
    return 0.0


@dataclass
class SimEV:
    """An EV: plugged or not, how much it takes, and the ways it can misbehave."""

    plugged: bool = False
    max_current_a: float = 16.0  # per phase
    phases: int = 3
    wants_energy: bool = True  # False: battery full, stays in B
    ventilation: bool = False  # requests state D instead of C
    diode_fault: bool = False  # no -12 V low level under PWM
    error: bool = False  # EV signals an error: pilot reads F (-12 V)
    asleep: bool = False  # ignores PWM until it sees PWM go off and on again (wake-up)
    obey_pwm: bool = True  # False: keeps drawing the first offer after PWM changes
    ignore_stop: bool = False  # stays in C and keeps drawing when PWM goes off
    _first_offer_a: float = 0.0
    _was_charging: bool = False
    _seen_pwm: bool = False

    def requests_energy(self, pwm_duty: float | None) -> bool:
        """Whether S2 is closed (state C/D) given the pilot output (None: no PWM)."""
        if not self.plugged or self.error:
            return False
        if pwm_duty is None:
            return self.ignore_stop and self._was_charging
        return self.wants_energy and not self.asleep and offered_current_a(pwm_duty) >= 6.0

    def pilot_high_v(self, pwm_duty: float | None) -> float:
        if not self.plugged:
            return 12.0
        if self.error:
            return -12.0
        if self.requests_energy(pwm_duty):
            return 3.0 if self.ventilation else 6.0
        return 9.0

    def see_pilot(self, pwm_duty: float | None) -> None:
        """The EV reacts to a new pilot output (PWM edges wake a sleeping EV)."""
        if pwm_duty is None:
            if self.asleep and self.plugged and self._seen_pwm:
                self.asleep = False  # PWM went off after it was on: a wake-up; it answers the next PWM
            if not self.ignore_stop:
                self._was_charging = False
            return
        self._seen_pwm = self.plugged
        if self._first_offer_a == 0.0:
            self._first_offer_a = offered_current_a(pwm_duty)
        self._was_charging = self.requests_energy(pwm_duty) or self._was_charging

    def draw_a(self, pwm_duty: float | None, contactor_closed: bool) -> tuple[float, ...]:
        """Per-phase current in A (three entries; unused phases 0)."""
        if not contactor_closed or not self.plugged:
            return (0.0, 0.0, 0.0)
        if pwm_duty is None:
            per_phase = min(self._first_offer_a, self.max_current_a) if self.ignore_stop else 0.0
        else:
            offer = offered_current_a(pwm_duty) if self.obey_pwm else self._first_offer_a
            per_phase = min(offer, self.max_current_a) if self.requests_energy(pwm_duty) else 0.0
        return tuple(per_phase if i < self.phases else 0.0 for i in range(3))

    def unplug(self) -> None:
        self.plugged = False
        self._first_offer_a = 0.0
        self._was_charging = False
        self._seen_pwm = False
