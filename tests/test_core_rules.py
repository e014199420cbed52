"""The charging core, rule by rule: one behaviour per test, explicit times, no clock."""

import math
from dataclasses import replace

import pytest

from evsed.core import events as ev
from evsed.core.step import step
from evsed.core.state import (Connector, CoreConfig, FaultState, check_invariant, clears_by, error_code,
                              next_deadline, safety_blocker)
from evsed.core.events import ChargePointErrorCode, Clearance, ConnectorStatus, Fault, StopReason
from evsed.core.pilot import NOMINAL_V, PilotState

A, B, C, D, E, F = (PilotState.A, PilotState.B, PilotState.C, PilotState.D, PilotState.E,
                    PilotState.F)
CARD = "04A1B2C3"
OTHER = "04FFFFFF"


class Rig:
    """One connector driven by explicit events at explicit times; every step is checked."""

    def __init__(self, **cfg):
        self.cfg = CoreConfig(**cfg)
        self.s = Connector()
        self.now = 0.0
        self.ev_state: PilotState = A
        self.ev_diode = True
        self.ev_current_a = 0.0

    def at(self, t: float, event) -> list:
        assert t >= self.now
        self.now = t
        self.s, actions = step(self.cfg, self.s, event, t)
        assert check_invariant(self.cfg, self.s, t) is None
        deadline = next_deadline(self.cfg, self.s)
        assert deadline is None or deadline > t, (deadline, t)
        return actions

    def reading(self) -> ev.PilotMeasured:
        high = NOMINAL_V[self.ev_state]
        if self.s.output == "pwm":
            low = -12.0 if self.ev_diode else high - 12.0 if self.ev_state is E else 0.0
        elif self.s.output == "f":
            high = low = -12.0
        else:
            low = high
        return ev.PilotMeasured(high, low)

    def ev(self, t: float, state: PilotState, diode: bool = True) -> list:
        """The EV shows `state`; one pilot reading at t."""
        self.ev_state, self.ev_diode = state, diode
        return self.at(t, self.reading())

    def meter(self, t: float, current_a: float | None = None) -> list:
        a = self.ev_current_a if current_a is None else current_a
        return self.at(t, ev.MeterSampled((a, a, a), a * 230 * 3, 1000))

    def run(self, t0: float, t1: float, pilot_every: float = 0.1, meter_every: float = 1.0,
            meter: bool = True) -> list[tuple[float, object]]:
        """What the shell does between t0 and t1 (exclusive): pilot and meter readings, and a
        Tick at every core deadline. Returns (time, action) pairs."""
        log = []
        t, next_meter = t0, t0
        while t < t1 - 1e-9:
            due = next_deadline(self.cfg, self.s)
            tp = t
            if due is not None and self.now <= due < tp:
                log += [(due, a) for a in self.at(due, ev.Tick())]
            log += [(tp, a) for a in self.at(tp, self.reading())]
            if meter and tp >= next_meter - 1e-9:
                log += [(tp, a) for a in self.meter(tp)]
                next_meter += meter_every
            t = round(t + pilot_every, 6)
        return log

    def charge(self, t: float = 0.0, tag: str = CARD, current_a: float = 16.0) -> None:
        """Plug in, tap, accept, request power: the contactor closes at t + 0.1."""
        self.ev(t, B)
        self.meter(t, 0.0)
        self.at(t, ev.CardPresented(tag))
        self.at(t, ev.AuthorizationResult(tag, True))
        actions = self.ev(t + 0.1, C)
        assert ev.CloseContactor() in actions
        assert self.s.contactor_closed
        self.ev_current_a = current_a


def kinds(actions) -> list[type]:
    return [type(a) for a in actions]


def first_at(log, kind) -> float | None:
    return next((t for t, a in log if isinstance(a, kind)), None)


def pilot_pwm(actions) -> list[ev.SetPilot]:
    return [a for a in actions if isinstance(a, ev.SetPilot)]


# --- closing ---------------------------------------------------------------------------------


def test_contactor_closes_when_authorized_ev_requests_power():
    r = Rig(max_current_a=16.0)
    r.ev(0.0, B)
    r.meter(0.0, 0.0)
    actions = r.at(0.1, ev.CardPresented(CARD))
    assert ev.RequestAuthorization(CARD) in actions
    assert r.s.output == "off"  # nothing offered before the answer
    actions = r.at(0.15, ev.AuthorizationResult(CARD, True))
    assert ev.StartSession(CARD, "local") in actions
    assert ev.SetPilot("pwm", pytest.approx(16 / 0.6), pytest.approx(16.0)) in actions  # 16 A offered
    assert ev.CloseContactor() not in actions  # EV still in B
    actions = r.ev(0.2, C)
    assert actions[-1] == ev.CloseContactor()
    assert r.s.status is ConnectorStatus.CHARGING


def test_contactor_stays_open_without_the_diode_and_faults_after_three_settled_readings():
    r = Rig()
    r.ev(0.0, B)
    r.meter(0.0, 0.0)
    r.at(0.0, ev.RemoteStart(CARD))
    assert r.s.output == "pwm"
    log = []
    for i in range(19):  # the first second after PWM starts may still show the old output
        log += r.ev(0.05 * (i + 1), C, diode=False)
    assert ev.CloseContactor() not in log and not any(isinstance(a, ev.FaultRaised) for a in log)
    assert safety_blocker(r.cfg, r.s, r.now) is not None
    for i in range(3):
        log += r.ev(1.0 + 0.05 * i, C, diode=False)
    assert ev.CloseContactor() not in log
    assert any(isinstance(a, ev.FaultRaised) and a.fault is Fault.DIODE for a in log)
    assert r.s.output == "off"
    actions = r.ev(1.3, A)
    assert ev.FaultsCleared((Fault.DIODE,)) in actions
    assert r.s.faults == {}


def test_diode_check_repeats_when_pwm_resumes():
    # A pause (limit < 6 A) outlasts the stop grace; the EV stays in C. When PWM resumes,
    # the contactor waits for a reading under the new PWM that shows the diode.
    r = Rig()
    r.charge(0.0)
    r.run(0.2, 1.0)
    r.at(1.0, ev.LimitChanged("load", 0.0))
    log = r.run(1.0, 8.0)
    assert first_at(log, ev.OpenContactor) == pytest.approx(7.0)
    actions = r.at(8.0, ev.LimitChanged("load", None))
    assert r.s.output == "pwm"
    assert ev.CloseContactor() not in actions
    actions = r.ev(8.05, C, diode=False)
    assert ev.CloseContactor() not in actions
    actions = r.ev(8.1, C, diode=True)
    assert actions[-1] == ev.CloseContactor()


def test_no_pwm_and_no_close_until_the_meter_answers():
    # An OpenEVSE board closes its own relay when the EV asks under PWM: no PWM without the meter.
    r = Rig()
    r.ev(0.0, B)
    actions = r.at(0.0, ev.RemoteStart(CARD))
    assert ev.StartSession(CARD, "remote") in actions and not pilot_pwm(actions)
    assert r.s.status is ConnectorStatus.SUSPENDED_EVSE and "meter" in r.s.reason
    actions = r.ev(0.1, C)
    assert ev.CloseContactor() not in actions and r.s.output == "off"
    actions = r.meter(0.15, 0.0)
    assert ev.SetPilot("pwm", pytest.approx(32 / 0.6), pytest.approx(32.0)) in actions
    assert ev.CloseContactor() not in actions  # the diode is checked under the new PWM first
    assert r.ev(0.2, C)[-1] == ev.CloseContactor()


def test_contactor_closes_without_a_meter_when_none_is_configured():
    r = Rig(has_meter=False)
    r.ev(0.0, B)
    r.at(0.0, ev.RemoteStart(CARD))
    assert r.ev(0.1, C)[-1] == ev.CloseContactor()


# --- opening ---------------------------------------------------------------------------------


def test_contactor_opens_when_ev_returns_to_b():
    r = Rig()
    r.charge(0.0)
    actions = r.ev(2.0, B)
    assert isinstance(actions[0], ev.OpenContactor)
    assert not r.s.contactor_closed
    assert r.s.session and r.s.output == "pwm"  # the EV may ask again
    assert r.ev(3.0, C)[-1] == ev.CloseContactor()


@pytest.mark.parametrize("state", [E, F])
def test_state_e_or_f_opens_at_once(state):
    r = Rig()
    r.charge(0.0)
    actions = r.ev(2.0, state)
    assert isinstance(actions[0], ev.OpenContactor)
    assert ev.PilotChanged(state.value, "C") in actions
    assert ev.CloseContactor() not in r.ev(2.1, state)


def test_pilot_lost_opens():
    r = Rig()
    r.charge(0.0)
    r.run(0.2, 1.0)
    assert r.s.contactor_closed
    deadline = next_deadline(r.cfg, r.s)
    assert deadline == pytest.approx(0.9 + r.cfg.pilot_lost_s, abs=1e-3)
    actions = r.at(deadline, ev.Tick())
    assert isinstance(actions[0], ev.OpenContactor)
    assert ev.PilotChanged(None, "C") in actions
    assert safety_blocker(r.cfg, r.s, r.now) == "pilot lost"


def test_pilot_unreadable_opens_at_once():
    r = Rig()
    r.charge(0.0)
    actions = r.at(0.15, ev.PilotUnreadable("adc timeout"))
    assert actions and isinstance(actions[0], ev.OpenContactor)
    assert not r.s.contactor_closed


def test_one_reading_between_bands_is_debounced():
    r = Rig()
    r.charge(0.0)
    assert r.at(0.15, ev.PilotMeasured(7.5, -12.0)) == []  # between B and C: an EV switching
    assert r.ev(0.2, C) == []  # the next reading is valid: the state never changed
    assert r.at(0.25, ev.PilotMeasured(math.nan, -12.0)) == []
    assert r.ev(0.3, C) == []
    assert r.s.contactor_closed


def test_a_pilot_reading_outside_every_band_opens_within_100_ms():
    r = Rig()
    r.charge(0.0)
    r.run(0.2, 1.0)
    assert r.at(1.0, ev.PilotMeasured(7.5, -12.0)) == []
    deadline = next_deadline(r.cfg, r.s)
    assert deadline == pytest.approx(1.075)  # not pilot_lost_s (0.25 s) after the last valid one
    assert r.at(1.05, ev.PilotMeasured(7.5, -12.0)) == []  # still inside the debounce
    actions = r.at(deadline, ev.Tick())
    assert isinstance(actions[0], ev.OpenContactor)
    assert ev.PilotChanged(None, "C") in actions
    assert safety_blocker(r.cfg, r.s, r.now) == "pilot lost: 7.5 V is outside every state's band"


def test_readings_outside_every_band_open_on_the_next_reading_without_a_tick():
    r = Rig(pilot_lost_s=1.0)
    r.charge(0.0)
    assert r.at(0.15, ev.PilotMeasured(7.5, -12.0)) == []
    actions = r.at(0.24, ev.PilotMeasured(4.5, -12.0))
    assert isinstance(actions[0], ev.OpenContactor)
    assert r.ev(0.3, C)[-1] == ev.CloseContactor()  # a valid C again, diode seen: it may close


def test_state_d_charges_only_with_ventilation():
    plain = Rig()
    plain.ev(0.0, B)
    plain.meter(0.0, 0.0)
    plain.at(0.0, ev.RemoteStart(CARD))
    assert ev.CloseContactor() not in plain.ev(0.1, D)
    assert "ventilation" in plain.s.reason

    vented = Rig(ventilation=True)
    vented.ev(0.0, B)
    vented.meter(0.0, 0.0)
    vented.at(0.0, ev.RemoteStart(CARD))
    assert vented.ev(0.1, D)[-1] == ev.CloseContactor()


def test_state_d_opens_at_once_without_ventilation():
    r = Rig()
    r.charge(0.0)
    actions = r.ev(1.0, D)
    assert isinstance(actions[0], ev.OpenContactor)


# --- EVSE-initiated stop ---------------------------------------------------------------------


@pytest.mark.parametrize("reason", [StopReason.REMOTE, StopReason.DEAUTHORIZED, StopReason.LOCAL])
def test_evse_stop_opens_after_six_seconds_under_load(reason):
    r = Rig()
    r.charge(0.0)
    r.run(0.2, 10.0)
    actions = r.at(10.0, ev.StopRequested(reason))
    assert ev.StopSession(reason) in actions
    assert ev.SetPilot("off", None, 0.0) in actions  # PWM off at once
    assert ev.OpenContactor not in kinds(actions)  # the EV gets its grace
    log = r.run(10.1, 20.0)  # the EV ignores it and stays in C
    assert first_at(log, ev.OpenContactor) == pytest.approx(16.0)
    assert not r.s.contactor_closed


def test_evse_stop_opens_at_once_when_ev_drops_to_b():
    r = Rig()
    r.charge(0.0)
    r.at(0.2, ev.StopRequested(StopReason.REMOTE))
    r.run(0.2, 2.5)
    assert r.s.contactor_closed
    actions = r.ev(2.5, B)
    assert isinstance(actions[0], ev.OpenContactor)
    assert r.s.status is ConnectorStatus.FINISHING


def test_limit_below_6_a_pauses_pwm_instead_of_a_low_duty():
    r = Rig()
    r.charge(0.0)
    r.run(0.2, 1.0)
    actions = r.at(1.0, ev.LimitChanged("load", 5.0))
    assert ev.SetPilot("off", None, 0.0) in actions
    assert all(a.mode != "pwm" for a in pilot_pwm(actions))
    assert r.s.session  # a pause, not the end of the session
    assert r.s.status is ConnectorStatus.SUSPENDED_EVSE
    log = r.run(1.1, 8.0)
    assert first_at(log, ev.OpenContactor) == pytest.approx(7.0)
    actions = r.at(8.0, ev.LimitChanged("load", 6.0))
    assert ev.SetPilot("pwm", 10.0, 6.0) in actions


def test_lowest_limit_sets_the_duty():
    r = Rig(max_current_a=32.0)
    r.charge(0.0)
    assert ev.SetPilot("pwm", pytest.approx(20 / 0.6), pytest.approx(20.0)) in r.at(1.0, ev.LimitChanged("window", 20.0))
    assert ev.SetPilot("pwm", pytest.approx(10 / 0.6), pytest.approx(10.0)) in r.at(1.1, ev.LimitChanged("ocpp", 10.0))
    assert r.at(1.2, ev.LimitChanged("window", None)) == []  # ocpp's 10 A still holds
    assert ev.SetPilot("pwm", pytest.approx(32 / 0.6), pytest.approx(32.0)) in r.at(1.3, ev.LimitChanged("ocpp", 100.0))


def test_nan_limit_pauses_rather_than_lifting_the_ceiling():
    r = Rig()
    r.charge(0.0)
    r.at(1.0, ev.LimitChanged("load", 10.0))
    actions = r.at(1.1, ev.LimitChanged("load", math.nan))
    assert all(a.mode != "pwm" or a.current_a <= 10.0 for a in pilot_pwm(actions))
    assert r.s.output != "pwm" or r.s.offered_a <= 10.0


def test_min_pause_holds_pwm_off_after_a_pause():
    r = Rig(min_pause_s=60.0)
    r.charge(0.0)
    r.at(1.0, ev.LimitChanged("load", 0.0))
    r.ev(1.1, B)
    r.at(2.0, ev.LimitChanged("load", None))
    assert r.s.output == "off"
    assert r.s.reason == "paused after a current limit"
    assert next_deadline(r.cfg, r.s) == pytest.approx(61.0)
    r.ev(60.9, B)
    r.meter(60.9)
    actions = r.at(61.0, ev.Tick())
    assert ev.SetPilot("pwm", pytest.approx(32 / 0.6), pytest.approx(32.0)) in actions


# --- current following -----------------------------------------------------------------------


def test_overcurrent_only_after_grace():
    r = Rig(max_current_a=32.0)
    r.charge(0.0, current_a=31.0)
    r.run(0.2, 10.0)
    r.at(10.0, ev.LimitChanged("load", 16.0))  # the EV keeps drawing 31 A
    log = r.run(10.0, 20.0)
    raised = [(t, a) for t, a in log if isinstance(a, ev.FaultRaised)]
    assert raised and raised[0][1].fault is Fault.OVERCURRENT
    assert raised[0][0] >= 15.0  # never before the 5 s grace
    assert raised[0][0] <= 15.0 + 1.0  # and within one meter period after it
    assert first_at(log, ev.OpenContactor) == raised[0][0]
    assert r.s.output == "off"


def test_load_management_s_overcurrent_opens_at_once_with_a_reason_people_can_read():
    r = Rig(max_current_a=32.0)
    r.charge(0.0, current_a=16.0)
    r.run(0.2, 10.0)
    actions = r.at(10.0, ev.OvercurrentDetected(16.0, 15.0))  # within the core's own 2 A margin
    assert isinstance(actions[0], ev.OpenContactor) and actions[0].at_once
    raised = [a for a in actions if isinstance(a, ev.FaultRaised)]
    assert raised and raised[0].fault is Fault.OVERCURRENT and not raised[0].lockout
    assert raised[0].detail == "EV drew 16.0 A over its 15.0 A offer past the grace (load management)"
    assert r.s.status is ConnectorStatus.FAULTED and r.s.reason == "fault: overcurrent"


def test_load_management_s_overcurrent_on_an_open_contactor_raises_nothing():
    r = Rig(max_current_a=32.0)
    assert r.at(1.0, ev.OvercurrentDetected(16.0, 15.0)) == []
    assert not r.s.faults


def test_ev_that_follows_the_lower_offer_is_not_flagged():
    r = Rig(max_current_a=32.0)
    r.charge(0.0, current_a=31.0)
    r.at(10.0, ev.LimitChanged("load", 16.0))
    r.run(10.0, 14.0)
    r.ev_current_a = 15.5
    log = r.run(14.0, 30.0)
    assert ev.FaultRaised not in [type(a) for _, a in log]
    assert r.s.contactor_closed


def test_a_silent_meter_is_an_evse_pause_pwm_off_first_then_open_after_the_grace():
    r = Rig()
    r.charge(0.0)
    r.meter(1.0)
    log = r.run(1.0, 20.0, meter=False)  # the EV ignores the pause and stays in C
    pwm_off = next(t for t, a in log if isinstance(a, ev.SetPilot) and a.mode == "off")
    opened = first_at(log, ev.OpenContactor)
    assert pwm_off == pytest.approx(5.0)  # meter_timeout_s - stop_grace_s after the last reading
    assert opened == pytest.approx(pwm_off + r.cfg.stop_grace_s)  # the full grace, then open
    assert opened <= 1.0 + 11.0  # within 11 s of the last good reading (the defaults)
    assert ev.StatusChanged(ConnectorStatus.SUSPENDED_EVSE, "meter not responding") in [a for _, a in log]
    assert r.s.session and r.s.status is ConnectorStatus.SUSPENDED_EVSE and "meter" in r.s.reason
    assert error_code(r.cfg, r.s, r.now) is ChargePointErrorCode.POWER_METER_FAILURE


def test_a_silent_meter_pause_opens_at_once_when_the_ev_drops_to_b():
    r = Rig()
    r.charge(0.0)
    r.meter(1.0)
    r.run(1.0, 5.5, meter=False)
    assert r.s.output == "off" and r.s.contactor_closed
    actions = r.ev(5.5, B)
    assert isinstance(actions[0], ev.OpenContactor)


def test_charging_resumes_when_the_meter_answers_again():
    r = Rig()
    r.charge(0.0)
    r.meter(1.0)
    r.run(1.0, 15.0, meter=False)
    assert not r.s.contactor_closed
    r.ev(15.0, B)
    actions = r.meter(15.5)
    assert ev.SetPilot("pwm", pytest.approx(32 / 0.6), pytest.approx(32.0)) in actions
    assert r.ev(15.6, C)[-1] == ev.CloseContactor()
    assert error_code(r.cfg, r.s, r.now) is ChargePointErrorCode.NO_ERROR


def test_nan_meter_samples_do_not_count_as_readings():
    r = Rig()
    r.charge(0.0)
    log = []
    for i in range(1, 13):
        log += r.at(float(i), ev.MeterSampled((math.nan,) * 3, math.nan, 1000))
        log += r.ev(float(i), C)
    assert ev.OpenContactor in kinds(log)
    assert not r.s.contactor_closed


def test_meter_failures_do_not_count_as_readings():
    r = Rig()
    r.charge(0.0)
    r.meter(1.0)
    for i in range(2, 13):
        r.at(float(i), ev.MeterFailed("timeout"))
        r.ev(float(i), C)
    assert not r.s.contactor_closed
    assert "timeout" in r.s.reason


# --- latched faults --------------------------------------------------------------------------


def test_state_e_while_charging_raises_a_cp_short_fault_at_once():
    r = Rig()
    r.charge(0.0)
    actions = r.ev(2.0, E)
    assert isinstance(actions[0], ev.OpenContactor)
    raised = [a for a in actions if isinstance(a, ev.FaultRaised)]
    assert [(a.fault, a.lockout) for a in raised] == [(Fault.CP_SHORT, False)]
    assert r.s.status is ConnectorStatus.FAULTED
    assert ev.StatusChanged(ConnectorStatus.FAULTED, "fault: cp_short") in actions
    assert r.s.output == "off"  # +12 V: the next readings tell when the short is gone
    assert error_code(r.cfg, r.s, r.now) is ChargePointErrorCode.OTHER_ERROR


def test_charging_never_resumes_straight_from_e():
    r = Rig()
    r.charge(0.0)
    r.ev(1.0, E)
    for t in (1.1, 1.2, 1.5):  # the short is gone, the EV still asks for power
        assert ev.CloseContactor() not in r.ev(t, C)
        assert Fault.CP_SHORT in r.s.faults and r.s.output == "off"
    actions = r.ev(1.6, B)  # a valid B: the fault clears, the session offers PWM again
    assert ev.FaultsCleared((Fault.CP_SHORT,)) in actions
    assert ev.SetPilot("pwm", pytest.approx(32 / 0.6), pytest.approx(32.0)) in actions
    assert ev.CloseContactor() not in r.ev(1.7, C, diode=False)  # and the diode is checked again
    assert r.ev(1.8, C)[-1] == ev.CloseContactor()


def test_state_e_without_an_ev_is_a_fault_cleared_by_a():
    r = Rig()
    r.ev(0.0, A)
    assert ev.FaultRaised(Fault.CP_SHORT, False, "pilot high level 0 V: CP shorted to PE (state E)") in r.ev(1.0, E)
    assert r.s.status is ConnectorStatus.FAULTED
    actions = r.ev(2.0, A)
    assert ev.FaultsCleared((Fault.CP_SHORT,)) in actions and r.s.status is ConnectorStatus.AVAILABLE


def test_every_fault_has_an_ocpp_error_code_and_a_clearance():
    assert set(ev.OCPP16_ERROR_CODE) == set(Fault) == set(ev.FAULT_CLEARANCE)
    assert all(code is not ChargePointErrorCode.NO_ERROR for code in ev.OCPP16_ERROR_CODE.values())


@pytest.mark.parametrize("fault, retry_at, clearance", [
    (Fault.DIODE, None, Clearance.UNPLUG),
    (Fault.OVERCURRENT, None, Clearance.UNPLUG),
    (Fault.CP_SHORT, None, Clearance.UNPLUG),
    (Fault.RCD, 300.0, Clearance.RETRY),
    (Fault.RCD, None, Clearance.PERSON),  # the retries are used up
    (Fault.RCD_SELF_TEST, None, Clearance.PERSON),
    (Fault.WELDED, None, Clearance.PERSON),
    (Fault.CONTACTOR_MISMATCH, None, Clearance.PERSON),
])
def test_faults_that_clear_by_themselves_are_kept_apart_from_lockouts(fault, retry_at, clearance):
    assert clears_by(fault, FaultState(0.0, retry_at)) is clearance
    assert (clearance is Clearance.PERSON) == (fault in ev.LOCKOUT_FAULTS or retry_at is None and fault is Fault.RCD)


def test_diode_and_overcurrent_faults_are_raised_as_no_lockout_and_clear_on_unplug():
    r = Rig()
    r.ev(0.0, B)
    r.meter(0.0, 0.0)
    r.at(0.0, ev.RemoteStart(CARD))
    log = []
    for t in (1.1, 1.2, 1.3):
        log += r.ev(t, C, diode=False)
    raised = [a for a in log if isinstance(a, ev.FaultRaised)]
    assert [(a.fault, a.lockout) for a in raised] == [(Fault.DIODE, False)]
    assert ev.FaultsCleared((Fault.DIODE,)) in r.ev(2.0, A)


def test_rcd_trip_opens_and_retries_after_five_minutes():
    r = Rig()
    r.charge(0.0)
    actions = r.at(1.0, ev.FaultInputChanged(True))
    assert isinstance(actions[0], ev.OpenContactor)
    assert ev.FaultRaised(Fault.RCD, False, "trip 1") in actions
    r.at(2.0, ev.FaultInputChanged(False))
    assert r.s.faults and next_deadline(r.cfg, r.s) == pytest.approx(301.0)
    r.ev(300.9, C)
    r.meter(300.9)
    actions = r.at(301.0, ev.Tick())
    assert ev.FaultsCleared((Fault.RCD,)) in actions
    assert ev.SetPilot("pwm", pytest.approx(32 / 0.6), pytest.approx(32.0)) in actions  # the session resumes
    assert ev.CloseContactor() not in actions  # after a diode check under the new PWM
    assert r.ev(301.05, C)[-1] == ev.CloseContactor()


def test_rcd_retry_waits_while_the_input_still_trips():
    r = Rig()
    r.charge(0.0)
    r.at(1.0, ev.FaultInputChanged(True))
    r.at(301.0, ev.Tick())
    assert Fault.RCD in r.s.faults
    actions = r.at(400.0, ev.FaultInputChanged(False))
    assert ev.FaultsCleared((Fault.RCD,)) in actions


def test_rcd_locks_out_after_six_retries():
    r = Rig()
    r.charge(0.0)
    t = 1.0
    for trip in range(1, 7):
        actions = r.at(t, ev.FaultInputChanged(True))
        assert ev.FaultRaised(Fault.RCD, False, f"trip {trip}") in actions
        r.at(t + 1.0, ev.FaultInputChanged(False))
        assert ev.FaultsCleared((Fault.RCD,)) in r.at(t + 300.0, ev.Tick())
        t += 400.0
    actions = r.at(t, ev.FaultInputChanged(True))
    assert ev.FaultRaised(Fault.RCD, True, "trip 7, locked out") in actions
    assert ev.StopSession(StopReason.GROUND_FAULT) in actions
    assert ev.SetPilot("f", None, 0.0) in actions
    r.at(t + 1.0, ev.FaultInputChanged(False))
    assert r.at(t + 100_000.0, ev.Tick()) == []  # no retry: a person must clear it
    assert Fault.RCD in r.s.faults
    assert ev.CardRefused(CARD, "charger locked out by a fault") in r.at(t + 100_001.0, ev.CardPresented(CARD))
    actions = r.at(t + 100_002.0, ev.ClearFaults())
    assert ev.FaultsCleared((Fault.RCD,)) in actions
    assert r.s.faults == {} and r.s.rcd_trips == 0


def test_clearing_while_the_rcd_still_trips_does_not_hold():
    r = Rig()
    r.at(0.0, ev.FaultInputChanged(True))
    actions = r.at(1.0, ev.ClearFaults())
    assert Fault.RCD in r.s.faults
    assert any(isinstance(a, ev.FaultRaised) and a.fault is Fault.RCD for a in actions)


def test_welded_contactor_locks_out():
    r = Rig(has_feedback=True)
    r.charge(0.0)
    r.at(0.2, ev.ContactorFeedback(True))
    actions = r.ev(5.0, B)
    assert isinstance(actions[0], ev.OpenContactor)
    r.run(5.1, 5.5)
    assert r.s.faults == {}  # the feedback may lag the command
    actions = r.at(5.5, ev.Tick())
    assert ev.FaultRaised(Fault.WELDED, True, "feedback disagrees with the command") in actions
    assert ev.StopSession(StopReason.EMERGENCY_STOP) in actions
    assert ev.SetPilot("f", None, 0.0) in actions
    assert r.s.status is ConnectorStatus.FAULTED
    assert ev.CardRefused(OTHER, "charger locked out by a fault") in r.at(6.0, ev.CardPresented(OTHER))
    assert r.at(1000.0, ev.Tick()) == []


def test_contactor_that_does_not_close_locks_out():
    r = Rig(has_feedback=True)
    r.at(0.0, ev.ContactorFeedback(False))
    r.charge(0.0)
    actions = r.at(0.6, ev.Tick())
    assert isinstance(actions[0], ev.OpenContactor)
    assert ev.FaultRaised(Fault.CONTACTOR_MISMATCH, True, "feedback disagrees with the command") in actions


def test_contactor_feedback_within_the_settle_time_is_fine():
    r = Rig(has_feedback=True)
    r.at(0.0, ev.ContactorFeedback(False))
    r.charge(0.0)
    r.at(0.5, ev.ContactorFeedback(True))
    r.run(0.5, 3.0)
    assert r.s.contactor_closed and r.s.faults == {}


def test_rcd_self_test_failure_locks_out():
    r = Rig()
    r.charge(0.0)
    actions = r.at(1.0, ev.SelfTestResult(False, "no trip at 30 mA"))
    assert isinstance(actions[0], ev.OpenContactor)
    assert ev.FaultRaised(Fault.RCD_SELF_TEST, True, "no trip at 30 mA") in actions
    assert ev.StopSession(StopReason.GROUND_FAULT) in actions


def test_rcd_is_tested_before_every_close_and_the_close_waits_for_the_result():
    r = Rig(has_self_test=True)
    r.ev(0.0, B)
    r.meter(0.0, 0.0)
    r.at(0.0, ev.CardPresented(CARD))
    r.at(0.0, ev.AuthorizationResult(CARD, True))
    actions = r.ev(0.1, C)
    assert ev.RunSelfTest() in actions and ev.CloseContactor() not in actions
    assert not r.s.contactor_closed and "testing the RCD" in r.s.reason
    assert ev.RunSelfTest() not in r.ev(0.15, C)  # one test at a time
    actions = r.at(0.3, ev.SelfTestResult(True))
    assert ev.CloseContactor() in actions and r.s.contactor_closed
    r.ev(1.0, B)
    assert not r.s.contactor_closed
    actions = r.ev(2.0, C)
    assert ev.RunSelfTest() in actions and not r.s.contactor_closed  # tested again for this close


def test_failed_self_test_never_closes_and_locks_out():
    r = Rig(has_self_test=True)
    r.ev(0.0, B)
    r.meter(0.0, 0.0)
    r.at(0.0, ev.CardPresented(CARD))
    r.at(0.0, ev.AuthorizationResult(CARD, True))
    r.ev(0.1, C)
    actions = r.at(0.5, ev.SelfTestResult(False, "no trip"))
    assert ev.CloseContactor() not in actions and not r.s.contactor_closed
    assert ev.FaultRaised(Fault.RCD_SELF_TEST, True, "no trip") in actions
    assert r.s.output == "f"


def test_a_pass_that_arrives_after_the_ev_left_c_does_not_close_later_untested():
    r = Rig(has_self_test=True)
    r.ev(0.0, B)
    r.meter(0.0, 0.0)
    r.at(0.0, ev.CardPresented(CARD))
    r.at(0.0, ev.AuthorizationResult(CARD, True))
    r.ev(0.1, C)
    r.ev(0.2, B)
    assert ev.CloseContactor() not in r.at(0.3, ev.SelfTestResult(True))
    r.meter(5.0)
    assert ev.RunSelfTest() in r.ev(5.0, C)


# --- wake-up ---------------------------------------------------------------------------------


def test_wakeup_turns_pwm_off_for_four_seconds():
    r = Rig()
    r.ev(0.0, B)
    r.meter(0.0, 0.0)
    r.at(0.0, ev.RemoteStart(CARD))
    assert r.s.output == "pwm"
    log = r.run(0.1, 60.0)  # the EV sits in B
    offs = [t for t, a in log if isinstance(a, ev.SetPilot) and a.mode == "off"]
    ons = [t for t, a in log if isinstance(a, ev.SetPilot) and a.mode == "pwm"]
    assert offs == [pytest.approx(30.0)]  # 30 s after PWM came on with the EV in B
    assert ons == [pytest.approx(34.0)]  # once, for 4 s
    assert r.s.session


def test_wakeup_is_not_needed_when_the_ev_starts():
    r = Rig()
    r.ev(0.0, B)
    r.meter(0.0, 0.0)
    r.at(0.0, ev.RemoteStart(CARD))
    r.run(0.1, 20.0)
    r.ev_state = C
    log = r.run(20.0, 60.0)
    assert [a for _, a in log if isinstance(a, ev.SetPilot)] == []


# --- authorization ---------------------------------------------------------------------------


def test_plug_then_tap_starts_session():
    r = Rig()
    r.ev(0.0, B)
    r.ev(5.0, B)
    assert ev.RequestAuthorization(CARD) in r.at(5.0, ev.CardPresented(CARD))
    actions = r.at(5.1, ev.AuthorizationResult(CARD, True, source="ocpp"))
    assert ev.StartSession(CARD, "ocpp") in actions


def test_tap_then_plug_starts_session():
    r = Rig()
    r.ev(0.0, A)
    r.at(1.0, ev.CardPresented(CARD))
    assert ev.StartSession not in kinds(r.at(1.1, ev.AuthorizationResult(CARD, True)))
    assert next_deadline(r.cfg, r.s) is not None
    r.ev(50.0, A)
    actions = r.ev(60.0, B)
    assert ev.StartSession(CARD, "local") in actions


def test_tap_then_plug_expires():
    r = Rig()
    r.ev(0.0, A)
    r.at(1.0, ev.CardPresented(CARD))
    r.at(1.1, ev.AuthorizationResult(CARD, True))
    assert next_deadline(r.cfg, r.s) == pytest.approx(61.1)
    r.at(61.1, ev.Tick())
    assert r.s.id_tag is None and "expired" in r.s.reason
    actions = r.ev(62.0, B)
    assert ev.StartSession not in kinds(actions)
    assert r.s.output == "off"


def test_unknown_card_is_refused_and_pilot_stays_b():
    r = Rig()
    r.ev(0.0, B)
    r.at(0.0, ev.CardPresented(OTHER))
    actions = r.at(0.1, ev.AuthorizationResult(OTHER, False, "unknown"))
    assert ev.CardRefused(OTHER, "unknown") in actions
    assert r.s.output == "off" and not r.s.session
    assert r.s.reason == "card refused: unknown"


def test_late_answer_for_another_card_is_ignored():
    r = Rig()
    r.ev(0.0, B)
    r.at(0.0, ev.CardPresented(CARD))
    assert r.at(0.1, ev.AuthorizationResult(OTHER, True)) == []
    assert not r.s.session


def test_same_card_stops_session():
    r = Rig()
    r.charge(0.0)
    r.run(0.2, 5.0)
    assert ev.CardRefused(OTHER, "connector in use by another card") in r.at(5.0, ev.CardPresented(OTHER))
    assert r.s.session
    r.run(5.0, 6.0)
    actions = r.at(6.0, ev.CardPresented(CARD))
    assert ev.StopSession(StopReason.LOCAL) in actions
    assert ev.SetPilot("off", None, 0.0) in actions
    r.ev(6.1, B)
    assert not r.s.contactor_closed and r.s.status is ConnectorStatus.FINISHING


def test_a_card_held_on_the_reader_is_one_tap():
    r = Rig()
    r.charge(0.0)  # the tap at 0.0 started it
    previous = 0.2
    for t in (0.5, 1.0, 2.0, 3.5, 5.0):  # the reader keeps reporting it: each read within 2 s
        r.run(previous, t)
        previous = t
        assert r.at(t, ev.CardPresented(CARD)) == []
    r.run(5.0, 7.5)
    assert r.s.session and r.s.contactor_closed
    assert ev.StopSession(StopReason.LOCAL) in r.at(7.5, ev.CardPresented(CARD))  # taken away, tapped again


def test_a_card_read_twice_before_plugging_in_does_not_cancel_its_authorization():
    r = Rig()
    r.at(0.0, ev.CardPresented(CARD))
    r.at(0.0, ev.AuthorizationResult(CARD, True))
    assert r.at(0.9, ev.CardPresented(CARD)) == []
    assert r.s.id_tag == CARD
    r.at(3.0, ev.CardPresented(CARD))  # a second, deliberate tap cancels
    assert r.s.id_tag is None


def test_another_card_within_the_repeat_time_is_its_own_tap():
    r = Rig()
    r.charge(0.0)
    assert ev.CardRefused(OTHER, "connector in use by another card") in r.at(0.5, ev.CardPresented(OTHER))
    assert ev.StopSession(StopReason.LOCAL) in r.at(1.0, ev.CardPresented(CARD))


def test_the_card_repeat_time_is_configurable():
    r = Rig(card_repeat_s=0.0)
    r.charge(0.0)
    assert ev.StopSession(StopReason.LOCAL) in r.at(0.2, ev.CardPresented(CARD))


def test_unplug_stops_session():
    r = Rig()
    r.charge(0.0)
    actions = r.ev(3.0, A)
    assert isinstance(actions[0], ev.OpenContactor)
    assert ev.StopSession(StopReason.EV_DISCONNECTED) in actions
    assert r.s.status is ConnectorStatus.AVAILABLE and r.s.id_tag is None


def test_free_vend_starts_on_plug():
    r = Rig(free_vend=True)
    r.meter(0.0, 0.0)
    actions = r.ev(0.0, B)
    assert ev.StartSession("FREEVEND", "free_vend") in actions
    assert r.s.output == "pwm"
    assert r.ev(0.1, C)[-1] == ev.CloseContactor()


def test_free_vend_does_not_restart_until_unplugged():
    r = Rig(free_vend=True)
    r.meter(0.0, 0.0)
    r.ev(0.0, B)
    r.at(1.0, ev.StopRequested(StopReason.REMOTE))
    assert ev.StartSession not in kinds(r.ev(2.0, B))
    r.ev(3.0, A)
    assert ev.StartSession("FREEVEND", "free_vend") in r.ev(4.0, B)


def test_remote_start_and_stop():
    r = Rig()
    r.ev(0.0, B)
    r.meter(0.0, 0.0)
    r.ev(1.0, B)
    actions = r.at(1.0, ev.RemoteStart("REMOTE1"))
    assert ev.StartSession("REMOTE1", "remote") in actions
    assert r.ev(1.1, C)[-1] == ev.CloseContactor()
    actions = r.at(5.0, ev.StopRequested(StopReason.REMOTE))
    assert ev.StopSession(StopReason.REMOTE) in actions
    assert ev.SetPilot("off", None, 0.0) in actions


def test_remote_start_while_in_use_is_refused():
    r = Rig()
    r.charge(0.0)
    assert ev.CardRefused("REMOTE1", "connector in use") in r.at(1.0, ev.RemoteStart("REMOTE1"))


def test_reservation_refuses_other_cards():
    r = Rig()
    r.at(0.0, ev.Reserve(CARD, 600.0))
    assert r.s.status is ConnectorStatus.RESERVED
    r.ev(1.0, B)
    assert ev.CardRefused(OTHER, "connector reserved") in r.at(2.0, ev.CardPresented(OTHER))
    assert ev.CardRefused("R2", "connector reserved") in r.at(2.0, ev.RemoteStart("R2"))
    r.ev(3.0, B)
    r.at(3.0, ev.CardPresented(CARD))
    actions = r.at(3.1, ev.AuthorizationResult(CARD, True))
    assert ev.StartSession(CARD, "local") in actions
    assert r.s.reservation is None


def test_reservation_made_while_a_card_is_checked_refuses_that_card():
    r = Rig()
    r.ev(0.0, B)
    r.at(0.0, ev.CardPresented(CARD))
    r.at(0.05, ev.Reserve(OTHER, 900.0))
    actions = r.at(0.1, ev.AuthorizationResult(CARD, True))
    assert ev.CardRefused(CARD, "connector reserved") in actions
    assert not r.s.session and r.s.reservation == (OTHER, 900.0)


def test_reservation_expires():
    r = Rig()
    r.at(0.0, ev.Reserve(CARD, 600.0))
    assert next_deadline(r.cfg, r.s) == 600.0
    r.at(600.0, ev.Tick())
    assert r.s.reservation is None and r.s.status is ConnectorStatus.AVAILABLE
    assert ev.RequestAuthorization(OTHER) in r.at(601.0, ev.CardPresented(OTHER))


def test_reservation_blocks_free_vend_for_others():
    r = Rig(free_vend=True)
    r.at(0.0, ev.Reserve(CARD, 600.0))
    assert ev.StartSession not in kinds(r.ev(1.0, B))


def test_availability_change_waits_for_session_end():
    r = Rig()
    r.charge(0.0)
    actions = r.at(0.2, ev.SetAvailability(False))
    assert r.s.contactor_closed and r.s.output == "pwm"  # the running session goes on
    assert ev.StatusChanged not in kinds(actions)
    r.run(0.2, 10.0)
    assert r.s.contactor_closed
    actions = r.ev(10.0, A)
    assert ev.StopSession(StopReason.EV_DISCONNECTED) in actions
    assert ev.SetPilot("f", None, 0.0) in actions
    assert r.s.status is ConnectorStatus.UNAVAILABLE
    assert ev.CardRefused(CARD, "connector unavailable") in r.at(11.0, ev.CardPresented(CARD))
    r.at(12.0, ev.SetAvailability(True))
    assert r.s.output == "off" and r.s.status is ConnectorStatus.AVAILABLE


def test_stop_on_an_unavailable_connector_still_gives_the_grace():
    r = Rig()
    r.charge(0.0)
    r.at(0.2, ev.SetAvailability(False))
    actions = r.at(0.25, ev.StopRequested(StopReason.LOCAL))
    assert ev.OpenContactor not in kinds(actions)
    assert ev.SetPilot("off", None, 0.0) in actions  # not -12 V: that would hide the EV
    actions = r.ev(1.0, B)
    assert isinstance(actions[0], ev.OpenContactor)
    r.ev(1.1, B)
    assert r.s.output == "f" and r.s.status is ConnectorStatus.UNAVAILABLE


def test_no_session_starts_on_an_unavailable_connector():
    # The card was tapped before the connector went inoperative; the answer comes after.
    r = Rig()
    r.ev(0.0, B)
    r.at(0.0, ev.CardPresented(CARD))
    r.at(0.05, ev.SetAvailability(False))
    actions = r.at(0.1, ev.AuthorizationResult(CARD, True))
    assert ev.CardRefused(CARD, "connector unavailable") in actions
    assert not r.s.session and r.s.id_tag is None
    r.at(0.2, ev.SetAvailability(True))
    assert ev.StartSession not in kinds(r.ev(0.3, B))


def test_shutdown_opens_and_stops_session():
    r = Rig()
    r.charge(0.0)
    actions = r.at(1.0, ev.Shutdown())
    assert isinstance(actions[0], ev.OpenContactor)
    assert ev.StopSession(StopReason.REBOOT) in actions
    assert ev.CloseContactor() not in r.ev(1.1, C)


def test_the_duty_lies_on_the_pilot_pwms_grid_and_the_offer_is_what_the_ev_reads():
    r = Rig(duty_step_pct=0.1, max_current_a=16.0)  # a software PWM timed in whole microseconds
    r.ev(0.0, B)
    r.meter(0.0, 0.0)
    r.at(0.05, ev.CardPresented(CARD))
    actions = r.at(0.06, ev.AuthorizationResult(CARD, True))
    assert ev.SetPilot("pwm", 26.7, pytest.approx(16.02)) in actions  # not 26.6 %: 15.96 A


def test_a_shutdown_while_the_ev_draws_lets_it_stop_first():
    r = Rig()
    r.charge(0.0)
    r.ev(0.95, C)
    actions = r.at(1.0, ev.Shutdown())
    assert actions[0] == ev.OpenContactor("shutting down", at_once=False)


def test_a_fault_opens_at_once_also_while_shutting_down():
    r = Rig()
    r.charge(0.0)
    assert r.at(1.0, ev.SelfTestResult(False))[0].at_once  # a fault: no waiting for the EV
    r = Rig()
    r.charge(0.0)
    r.ev(0.95, C)
    r.s = replace(r.s, faults={Fault.OVERCURRENT: FaultState(0.9, None)}, contactor_closed=True)
    assert r.at(1.0, ev.Shutdown())[0].at_once
    r = Rig()
    r.charge(0.0)
    r.ev(0.95, C)
    r.s = replace(r.s, pilot_seen_at=0.5)  # the pilot unheard since: the EV's state unknown
    assert r.at(1.0, ev.Shutdown())[0].at_once


# --- action order and deadlines --------------------------------------------------------------


def test_fault_step_opens_first():
    r = Rig()
    r.charge(0.0)
    actions = r.at(1.0, ev.SelfTestResult(False))
    assert kinds(actions)[0] is ev.OpenContactor
    assert kinds(actions).index(ev.FaultRaised) > 0


def test_close_comes_after_session_start_and_pwm():
    # The EV already asks for power when the remote start arrives: one step starts the
    # session, turns PWM on and (the diode already seen under an earlier PWM) closes last.
    r = Rig(has_meter=False)
    r.ev(0.0, B)
    r.at(0.0, ev.RemoteStart(CARD))
    r.ev(0.1, C)
    r.at(0.2, ev.LimitChanged("load", 0.0))
    r.ev(0.25, B)
    actions = r.at(0.3, ev.LimitChanged("load", None))
    assert ev.SetPilot("pwm", pytest.approx(32 / 0.6), pytest.approx(32.0)) in actions
    actions = r.ev(0.4, C)
    assert kinds(actions)[-1] is ev.CloseContactor
    assert kinds(actions).index(ev.PilotChanged) < len(actions) - 1


def test_tick_at_the_overcurrent_deadline_raises_despite_float_rounding():
    # 10.799999985 - 5.799999985 < 5.0 in floats, while 5.799999985 + 5.0 == 10.799999985.
    r = Rig(max_current_a=6.0, has_meter=False, free_vend=True)
    r.ev(0.2, B)
    r.ev(0.3, C)
    assert r.s.contactor_closed
    r.run(0.4, 5.799999985)
    r.ev(5.799999985, C)
    r.meter(5.799999985, 9.0)
    r.ev(10.7, C)
    due = next_deadline(r.cfg, r.s)
    assert due == 5.799999985 + 5.0
    actions = r.at(due, ev.Tick())
    assert isinstance(actions[0], ev.OpenContactor)
    assert Fault.OVERCURRENT in r.s.faults


def test_welded_contactor_leaves_no_past_deadline():
    r = Rig(has_feedback=True)
    r.charge(0.0)
    r.at(0.2, ev.ContactorFeedback(True))
    r.ev(5.0, A)
    r.at(5.5, ev.Tick())
    assert Fault.WELDED in r.s.faults
    deadline = next_deadline(r.cfg, r.s)
    assert deadline is None or deadline > 5.5


def test_stuck_rcd_leaves_no_past_deadline():
    r = Rig()
    r.at(0.0, ev.FaultInputChanged(True))
    r.at(300.0, ev.Tick())
    deadline = next_deadline(r.cfg, r.s)
    assert deadline is None or deadline > 300.0


def test_one_noisy_reading_without_the_diode_does_not_switch_a_closed_contactor():
    r = Rig()
    r.charge(0.0)
    r.ev(2.0, C, diode=False)
    assert r.s.contactor_closed
    r.ev(2.05, C)
    assert r.s.contactor_closed and r.s.faults == {}
    for i in range(3):
        r.ev(2.1 + 0.05 * i, C, diode=False)
    assert not r.s.contactor_closed and Fault.DIODE in r.s.faults


def test_unplugging_between_rcd_trips_does_not_reset_the_count():
    r = Rig(rcd_max_retries=1)
    r.charge(0.0)
    r.at(1.0, ev.FaultInputChanged(True))
    r.at(2.0, ev.FaultInputChanged(False))
    r.ev(3.0, A)  # the driver unplugs and plugs again
    r.ev(4.0, B)
    r.at(301.0, ev.Tick())
    assert r.s.faults == {}
    actions = r.at(302.0, ev.FaultInputChanged(True))
    assert ev.FaultRaised(Fault.RCD, True, "trip 2, locked out") in actions


def test_a_day_without_a_trip_starts_the_rcd_count_afresh():
    r = Rig(rcd_max_retries=1)
    r.at(1.0, ev.FaultInputChanged(True))
    r.at(2.0, ev.FaultInputChanged(False))
    r.at(301.0, ev.Tick())
    actions = r.at(1.0 + 86_400.0, ev.FaultInputChanged(True))
    assert ev.FaultRaised(Fault.RCD, False, "trip 1") in actions


def test_an_rcd_test_that_never_answers_locks_out_after_its_timeout():
    r = Rig(has_self_test=True)
    r.ev(0.0, B)
    r.meter(0.0, 0.0)
    r.at(0.0, ev.RemoteStart(CARD))
    assert ev.RunSelfTest() in r.ev(0.1, C)
    assert next_deadline(r.cfg, r.s) <= 10.1
    r.run(0.1, 10.2)
    assert Fault.RCD_SELF_TEST in r.s.faults and not r.s.contactor_closed
