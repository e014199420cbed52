"""IEC 61851-1 pilot arithmetic: state bands, the diode check, duty for current and back."""

import math

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from evsed.core.pilot import (BAND_V, MAX_ABOVE_A, MAX_CURRENT_A, MIN_CURRENT_A, NOMINAL_V, PilotState, classify,
                              current_for_duty, diode_present, duty_for_current)

# Float noise allowance when reading a duty back as a current (far below any meter's resolution).
EPS_A = 1e-9


# --- CP states by the high level -----------------------------------------------------------


@pytest.mark.parametrize("high_v, state", [
    (12.0, PilotState.A), (9.0, PilotState.B), (6.0, PilotState.C),
    (3.0, PilotState.D), (0.0, PilotState.E), (-12.0, PilotState.F),
])
def test_nominal_levels_classify_to_their_state(high_v, state):
    assert classify(high_v) is state


@pytest.mark.parametrize("high_v, state", [
    (13.1, PilotState.A), (10.9, PilotState.A), (10.1, PilotState.B), (7.9, PilotState.B),
    (7.1, PilotState.C), (4.9, PilotState.C), (4.1, PilotState.D), (1.9, PilotState.D),
    (1.1, PilotState.E), (-1.1, PilotState.E), (-10.9, PilotState.F), (-13.1, PilotState.F),
])
def test_band_edges_belong_to_the_band(high_v, state):
    assert classify(high_v) is state


@pytest.mark.parametrize("high_v", [
    13.2, 10.5, 10.2, 10.8, 7.5, 7.2, 7.8, 4.5, 4.2, 4.8, 1.5, 1.2, 1.8,
    -1.2, -6.0, -10.8, -13.2, 20.0, -20.0,
])
def test_levels_between_bands_are_no_state(high_v):
    assert classify(high_v) is None


@pytest.mark.parametrize("high_v", [math.nan, math.inf, -math.inf])
def test_nan_and_infinite_levels_are_no_state(high_v):
    assert classify(high_v) is None


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_classify_returns_the_state_whose_band_holds_the_level(high_v):
    state = classify(high_v)
    if state is None:
        assert math.isnan(high_v) or all(abs(high_v - v) > BAND_V for v in NOMINAL_V.values())
    else:
        assert abs(high_v - NOMINAL_V[state]) <= BAND_V


# --- the diode check -------------------------------------------------------------------------


@pytest.mark.parametrize("low_v", [-12.0, -11.0, -13.0, -10.9, -13.1])
def test_diode_present_at_about_minus_12_v(low_v):
    assert diode_present(low_v)


@pytest.mark.parametrize("low_v", [0.0, 12.0, 6.0, -10.0, -10.8, -13.2, -6.0, math.nan])
def test_diode_absent_elsewhere(low_v):
    assert not diode_present(low_v)


# --- duty for current ------------------------------------------------------------------------

# PWM resolutions: exact, the kernel's 1 ns of a 1 ms period, a 1 us software PWM, and coarser
STEPS = st.sampled_from([0.0, 1e-4, 1e-3, 0.01, 0.1]) | st.floats(min_value=1e-5, max_value=0.1)


def intended_a(current_a: float) -> float:
    """What an offer of current_a can be at best: capped at 80 A, and 51 A in the standard's gap
    between 51 A (85 %) and 52.5 A, where the upper formula starts."""
    current_a = min(current_a, MAX_CURRENT_A)
    return 51.0 if 51.0 < current_a < 52.5 else current_a


@pytest.mark.parametrize("current_a", [6.0, 10.0, 12.0, 13.0, 16.0, 18.0, 20.0, 30.0, 32.0, 40.0, 48.0, 51.0])
def test_duty_in_the_low_range_is_current_over_0_6_exactly(current_a):
    duty = duty_for_current(current_a)
    assert duty == pytest.approx(current_a / 0.6, abs=1e-12)
    assert current_for_duty(duty) == pytest.approx(current_a, abs=EPS_A)


@pytest.mark.parametrize("current_a, duty", [
    (52.0, 85.0), (52.5, 85.0), (55.0, 86.0), (60.0, 88.0), (63.0, 89.2), (70.0, 92.0), (75.0, 94.0), (80.0, 96.0),
])
def test_duty_in_the_high_range_is_current_over_2_5_plus_64(current_a, duty):
    assert duty_for_current(current_a) == pytest.approx(duty, abs=1e-12)


@pytest.mark.parametrize("current_a", [5.99, 5.0, 0.0, -1.0, -math.inf, math.nan])
def test_no_pwm_below_6_a(current_a):
    assert duty_for_current(current_a) is None
    assert duty_for_current(current_a, 0.1) is None


@pytest.mark.parametrize("current_a", [80.01, 100.0, 1000.0, math.inf])
def test_offer_is_capped_at_80_a(current_a):
    assert duty_for_current(current_a) == 96.0
    assert current_for_duty(duty_for_current(current_a)) == MAX_CURRENT_A


def test_16_a_reads_as_16_a_also_to_an_ev_that_truncates():
    # floored to 0.1 % it was 26.6 %: 15.96 A, which such an EV takes as 15 A
    assert math.floor(current_for_duty(duty_for_current(16.0)) + EPS_A) == 16
    assert duty_for_current(16.0, step_pct=0.1) == 26.7  # 16.02 A on a 0.1 % grid
    assert duty_for_current(10.0, step_pct=0.1) == 16.7
    assert duty_for_current(16.0, step_pct=1e-4) == 26.6667  # the kernel PWM's 1 ns of 1 ms


@given(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), STEPS)
def test_duty_is_none_or_between_10_and_97_percent(current_a, step_pct):
    duty = duty_for_current(current_a, step_pct)
    if current_a < MIN_CURRENT_A:
        assert duty is None
    else:
        assert duty is not None and 10.0 <= duty <= 97.0


@given(st.floats(min_value=MIN_CURRENT_A, max_value=1e6, allow_nan=False), STEPS)
def test_the_ev_reads_the_offer_never_more_than_0_05_a_above_it(current_a, step_pct):
    duty = duty_for_current(current_a, step_pct)
    read_a, want_a = current_for_duty(duty), intended_a(current_a)
    if duty - step_pct >= 10.0 - 1e-9:
        assert read_a <= want_a + MAX_ABOVE_A + EPS_A
    else:  # the step below would be under 10 %, which the standard does not allow: one step above
        assert read_a <= want_a + step_pct * 0.6 + EPS_A
    assert read_a >= MIN_CURRENT_A - EPS_A  # a pause is never disguised as a low duty
    exact = duty_for_current(current_a)
    above = math.ceil(exact / step_pct - 1e-6) * step_pct if step_pct else exact
    if current_for_duty(above) <= want_a + MAX_ABOVE_A:  # the step at or above: never below the offer
        assert read_a >= want_a - EPS_A
    else:  # that step reads too high (coarse, or past 85 %, where the upper formula starts): one below
        assert read_a >= want_a - step_pct * 2.5 - EPS_A


@given(st.floats(min_value=MIN_CURRENT_A, max_value=MAX_CURRENT_A), STEPS)
def test_the_duty_lies_on_the_pwms_grid(current_a, step_pct):
    assume(step_pct > 0)
    steps = duty_for_current(current_a, step_pct) / step_pct
    assert abs(steps - round(steps)) < 1e-4


@given(st.floats(min_value=MIN_CURRENT_A, max_value=MAX_CURRENT_A),
       st.floats(min_value=MIN_CURRENT_A, max_value=MAX_CURRENT_A), STEPS)
def test_more_current_never_gets_a_lower_duty_within_a_range(a, b, step_pct):
    low, high = sorted((a, b))
    assume((high <= 51.0) or (low > 51.0))  # the standard's formula steps down at 51 A
    assert duty_for_current(low, step_pct) <= duty_for_current(high, step_pct)


# --- what the EV reads back ------------------------------------------------------------------


@pytest.mark.parametrize("duty, current_a", [
    (3.0, 0.0), (7.9, 0.0), (8.0, 6.0), (9.9, 6.0), (10.0, 6.0), (50.0, 30.0), (85.0, 51.0),
    (86.0, 55.0), (96.0, 80.0), (97.0, 80.0), (97.1, 0.0), (100.0, 0.0),
])
def test_current_for_duty_follows_the_ev_side_table(duty, current_a):
    assert current_for_duty(duty) == pytest.approx(current_a)


def test_current_for_nan_duty_is_no_current():
    assert current_for_duty(math.nan) == 0.0
