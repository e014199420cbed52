"""The charging core: a pure, synchronous state machine for one connector.

step(config, state, event, now) -> (state, actions). Time is an argument; nothing here
reads a clock, sleeps, logs or does I/O. Several connectors are several states.
"""

from __future__ import annotations

import math
from dataclasses import replace as _replace
from typing import Any, Callable

from evsed.core import events as ev
from evsed.core import limits as lm
from evsed.core.events import ConnectorStatus, Fault, PilotOutput, StopReason
from evsed.core.pilot import MIN_CURRENT_A, PilotState, classify, current_for_duty, diode_present, duty_for_current
from evsed.core.state import (CHARGING_STATES, TIMERS, SelfTestState, DIODE_FAILURES_TO_FAULT, DIODE_SETTLE_S, PILOT_INVALID_S, PLUGGED_STATES,
                              RCD_TRIPS_FORGOTTEN_S, SELF_TEST_TIMEOUT_S,
                              Connector, CoreConfig, FaultState, card_repeated, limit_chain, clears_by, locked_out,
                              offer_blocker, pilot_fresh, remote_start_refusal, safety_blocker,
                              start_refusal)


def replace(s: Connector, **changes: Any) -> Connector:
    """dataclasses.replace, but the same state where nothing changes: most steps (a pilot reading
    like the last) change a field or two, and a copy of every field each time was most of a step."""
    if all(getattr(s, k) == v for k, v in changes.items()):
        return s
    return _replace(s, **changes)


Out = list[ev.Action]  # the actions a step has produced so far, in order
Handler = Callable[[CoreConfig, Connector, Any, float, Out], Connector]


def step(cfg: CoreConfig, s: Connector, event: ev.Event, now: float) -> tuple[Connector, list[ev.Action]]:
    """Apply one event at time `now` (seconds, monotonic); return the new state and actions.

    Actions are ordered: contactor opens first, contactor closes last.
    """
    out: list[ev.Action] = []
    s = _apply(cfg, s, event, now, out)
    s = _timers(cfg, s, now, out)
    s = _reconcile(cfg, s, now, out)
    opens = [a for a in out if isinstance(a, ev.OpenContactor)]
    closes = [a for a in out if isinstance(a, ev.CloseContactor)]
    rest = [a for a in out if not isinstance(a, (ev.OpenContactor, ev.CloseContactor))]
    return s, opens + rest + closes


# --- events ------------------------------------------------------------------------------


def _apply(cfg: CoreConfig, s: Connector, e: ev.Event, now: float, out: Out) -> Connector:
    handler = _HANDLERS.get(type(e))
    return handler(cfg, s, e, now, out) if handler else s


def _on_pilot(cfg: CoreConfig, s: Connector, e: ev.PilotMeasured, now: float, out: Out) -> Connector:
    if s.output is PilotOutput.F:  # our own -12 V hides the EV; only the reading's arrival counts
        return replace(s, pilot_seen_at=now, invalid_since=None)
    state = classify(e.high_v)
    if state is None:  # outside every band: keep the last state for PILOT_INVALID_S (debounce)
        since = s.invalid_since if s.invalid_since is not None else now
        return replace(s, invalid_since=since, invalid_high_v=e.high_v)
    s = replace(s, pilot_seen_at=now, invalid_since=None, invalid_high_v=None)
    if s.output is PilotOutput.PWM and state in PLUGGED_STATES:
        ok = diode_present(e.low_v)
        settled = now >= s.pwm_since + DIODE_SETTLE_S
        failures = 0 if ok else s.diode_failures + 1 if settled else 0
        s = replace(s, diode_ok=ok, diode_failures=failures)
        if failures >= DIODE_FAILURES_TO_FAULT and Fault.DIODE not in s.faults:
            s = _raise(s, Fault.DIODE, None, now, out, "no -12 V low level under PWM")
    if state is not s.pilot:
        s = _pilot_changed(cfg, s, state, now, out)
    if state is PilotState.E and Fault.CP_SHORT not in s.faults:
        s = _raise(s, Fault.CP_SHORT, None, now, out, "pilot high level 0 V: CP shorted to PE (state E)")
    elif state is PilotState.B and Fault.CP_SHORT in s.faults:  # A clears it in _pilot_changed
        out.append(ev.FaultsCleared((Fault.CP_SHORT,)))
        s = replace(s, faults={f: st for f, st in s.faults.items() if f is not Fault.CP_SHORT})
    return s


def _on_pilot_unreadable(cfg: CoreConfig, s: Connector, e: ev.PilotUnreadable, now: float, out: Out) -> Connector:
    if s.pilot is None or s.output is PilotOutput.F:
        return s
    return _pilot_changed(cfg, s, None, now, out)  # an explicit read error: lost at once


def _pilot_changed(cfg: CoreConfig, s: Connector, state: PilotState | None, now: float, out: Out) -> Connector:
    previous = s.pilot
    out.append(ev.PilotChanged(state.value if state else None, previous.value if previous else None))
    s = replace(s, pilot=state)
    if state is PilotState.A:
        if s.session:
            s = _stop_session(s, StopReason.EV_DISCONNECTED, out)
        cleared = tuple(f for f, st in s.faults.items() if clears_by(f, st) is ev.Clearance.UNPLUG)
        faults = {f: st for f, st in s.faults.items() if f not in cleared}
        if cleared:
            out.append(ev.FaultsCleared(cleared))
        s = replace(s, faults=faults, finishing=False, diode_ok=False, diode_failures=0,
                    wakeups=0, refusal="")
        if s.id_tag is not None and s.auth_expires_at is None:
            s = _drop_authorization(s)  # an authorization used by an EV ends with it
    elif state in PLUGGED_STATES and previous in (PilotState.A, None):
        s = replace(s, refusal="")  # a new plug-in: an earlier refusal no longer applies
    if state in PLUGGED_STATES and s.id_tag is not None and not s.session:
        s = replace(s, auth_expires_at=None)
    return s


def _on_card(cfg: CoreConfig, s: Connector, e: ev.CardPresented, now: float, out: Out) -> Connector:
    tag, repeated = e.id_tag, card_repeated(cfg, s, e.id_tag, now)
    s = replace(s, last_card=(tag, now))  # a held card keeps extending its one tap
    if repeated:
        return s
    if s.session:
        if tag == s.id_tag:
            return _stop_session(s, StopReason.LOCAL, out)
        return _refuse(s, tag, "connector in use by another card", out)
    if s.id_tag == tag:  # tapped again before plugging in: cancel
        return _drop_authorization(s, refusal="")
    refusal = start_refusal(s, tag)
    if refusal:
        return _refuse(s, tag, refusal, out)
    if cfg.free_vend:
        return _authorize(cfg, s, tag, "free_vend", now)
    out.append(ev.RequestAuthorization(tag))
    return replace(s, pending_tag=tag, refusal="")


def _refuse(s: Connector, tag: str, reason: str, out: Out) -> Connector:
    out.append(ev.CardRefused(tag, reason))
    return replace(s, refusal=reason)


def _on_auth(cfg: CoreConfig, s: Connector, e: ev.AuthorizationResult, now: float, out: Out) -> Connector:
    if s.pending_tag != e.id_tag or s.session:
        return s  # stale answer
    s = replace(s, pending_tag=None)
    if not e.accepted:
        return _refuse(s, e.id_tag, e.reason or "not authorized", out)
    refusal = start_refusal(s, e.id_tag)  # reserved, unavailable or locked out meanwhile
    if refusal:
        return _refuse(s, e.id_tag, refusal, out)
    return _authorize(cfg, s, e.id_tag, e.source, now, e.group, e.max_current_a)


def _authorize(cfg: CoreConfig, s: Connector, tag: str, source: str, now: float, group: str = "",
               max_current_a: float | None = None) -> Connector:
    plugged = s.pilot in PLUGGED_STATES
    lim = lm.authorization(group, max_current_a)
    s = _on_limit(cfg, s, ev.LimitChanged(lim.source, lim.current_a, lim.detail), now, [])
    return replace(s, id_tag=tag, auth_source=source, group=group, refusal="",
                   auth_expires_at=None if plugged else now + cfg.auth_timeout_s)


def _drop_authorization(s: Connector, **changes: Any) -> Connector:
    """The authorization ends (used, cancelled, expired): its group and per-session ceiling with it."""
    limits = {k: v for k, v in s.limits.items() if k != lm.AUTHORIZATION}
    return replace(s, id_tag=None, auth_expires_at=None, group="", limits=limits, **changes)


def _on_remote_start(cfg: CoreConfig, s: Connector, e: ev.RemoteStart, now: float, out: Out) -> Connector:
    refusal = remote_start_refusal(s, e.id_tag)
    return _refuse(s, e.id_tag, refusal, out) if refusal else _authorize(cfg, s, e.id_tag, "remote", now)


def _on_stop(cfg: CoreConfig, s: Connector, e: ev.StopRequested, now: float, out: Out) -> Connector:
    if s.session:
        return _stop_session(s, e.reason, out)
    return _drop_authorization(s, pending_tag=None)


def _stop_session(s: Connector, reason: StopReason, out: Out) -> Connector:
    out.append(ev.StopSession(reason))
    return _drop_authorization(s, session=False, b_since=None, wakeup_until=None,
                               finishing=s.pilot in PLUGGED_STATES)


def _on_limit(cfg: CoreConfig, s: Connector, e: ev.LimitChanged, now: float, out: Out) -> Connector:
    limits = {k: v for k, v in s.limits.items() if k != e.source}
    current_a = e.current_a
    if current_a is not None:  # NaN is garbage: pause (0 A) rather than lift the ceiling
        current_a = 0.0 if math.isnan(current_a) else max(0.0, current_a)
    if current_a is not None or e.blocked is not None or e.detail:  # a source that says why it sets none stays listed
        limits[e.source] = lm.Limit(e.source, current_a, e.detail, e.blocked)
    return replace(s, limits=limits)


def _on_meter(cfg: CoreConfig, s: Connector, e: ev.MeterSampled, now: float, out: Out) -> Connector:
    if any(math.isnan(a) for a in e.current_a):  # garbage must not feed the meter watchdog
        return replace(s, meter_error="NaN current")
    s = replace(s, meter_ok_at=now, meter_error="")
    if not s.contactor_closed or s.offered_a <= 0 or not e.current_a:
        return replace(s, overcurrent_since=None)
    threshold = s.offered_a + max(cfg.overcurrent_margin_a, 0.1 * s.offered_a)
    if max(e.current_a) > threshold:
        return replace(s, overcurrent_since=s.overcurrent_since if s.overcurrent_since is not None else now)
    return replace(s, overcurrent_since=None)


def _on_overcurrent_detected(cfg: CoreConfig, s: Connector, e: ev.OvercurrentDetected, now: float,
                             out: Out) -> Connector:
    if not s.contactor_closed or Fault.OVERCURRENT in s.faults:
        return s  # already open: nothing to stop
    return _raise(replace(s, overcurrent_since=None), Fault.OVERCURRENT, None, now, out,
                  f"EV drew {e.drawn_a:.1f} A over its {e.offered_a:.1f} A offer past the grace "
                  "(load management)")


def _on_meter_failed(cfg: CoreConfig, s: Connector, e: ev.MeterFailed, now: float, out: Out) -> Connector:
    return replace(s, meter_error=e.detail)


def _on_fault_input(cfg: CoreConfig, s: Connector, e: ev.FaultInputChanged, now: float, out: Out) -> Connector:
    s = replace(s, rcd_tripped=e.tripped)
    if not e.tripped or Fault.RCD in s.faults:
        return s
    # Trips count until a person clears them or a day passes without one; unplugging does not
    # reset them, or re-plugging between trips would dodge the lock-out.
    trips = (s.rcd_trips if now < s.rcd_tripped_at + RCD_TRIPS_FORGOTTEN_S else 0) + 1
    retry_at = now + cfg.rcd_retry_s if trips <= cfg.rcd_max_retries else None
    return _raise(replace(s, rcd_trips=trips, rcd_tripped_at=now), Fault.RCD, retry_at, now, out,
                  f"trip {trips}" + ("" if retry_at else ", locked out"))


def _on_self_test(cfg: CoreConfig, s: Connector, e: ev.SelfTestResult, now: float, out: Out) -> Connector:
    if e.passed:
        return replace(s, self_test=SelfTestState.PASSED) if s.self_test is SelfTestState.RUNNING else s
    return _raise(replace(s, self_test=SelfTestState.NONE), Fault.RCD_SELF_TEST, None, now, out, e.detail)


def _on_feedback(cfg: CoreConfig, s: Connector, e: ev.ContactorFeedback, now: float, out: Out) -> Connector:
    if e.closed == s.feedback_closed:
        return s
    return replace(s, feedback_closed=e.closed, feedback_changed_at=now)


def _on_availability(cfg: CoreConfig, s: Connector, e: ev.SetAvailability, now: float, out: Out) -> Connector:
    return replace(s, operative=e.operative)


def _on_reserve(cfg: CoreConfig, s: Connector, e: ev.Reserve, now: float, out: Out) -> Connector:
    if s.session or not s.operative or s.faults or e.expires_at <= now:
        return s
    return replace(s, reservation=(e.id_tag, e.expires_at))


def _on_cancel_reservation(cfg: CoreConfig, s: Connector, e: ev.Event, now: float, out: Out) -> Connector:
    return replace(s, reservation=None)


def _on_clear_faults(cfg: CoreConfig, s: Connector, e: ev.ClearFaults, now: float, out: Out) -> Connector:
    if s.faults:
        out.append(ev.FaultsCleared(tuple(s.faults)))
    s = replace(s, faults={}, rcd_trips=0, diode_failures=0)
    if s.rcd_tripped:  # the input still trips: the person's clear does not hold
        s = _on_fault_input(cfg, replace(s, rcd_tripped=False), ev.FaultInputChanged(True), now, out)
    return s


def _on_shutdown(cfg: CoreConfig, s: Connector, e: ev.Shutdown, now: float, out: Out) -> Connector:
    if s.session:
        s = _stop_session(s, StopReason.REBOOT, out)
    return replace(s, shutting_down=True)


_HANDLERS: dict[type, Handler] = {
    ev.PilotMeasured: _on_pilot,
    ev.PilotUnreadable: _on_pilot_unreadable,
    ev.CardPresented: _on_card,
    ev.AuthorizationResult: _on_auth,
    ev.RemoteStart: _on_remote_start,
    ev.StopRequested: _on_stop,
    ev.LimitChanged: _on_limit,
    ev.MeterSampled: _on_meter,
    ev.OvercurrentDetected: _on_overcurrent_detected,
    ev.MeterFailed: _on_meter_failed,
    ev.FaultInputChanged: _on_fault_input,
    ev.SelfTestResult: _on_self_test,
    ev.ContactorFeedback: _on_feedback,
    ev.SetAvailability: _on_availability,
    ev.Reserve: _on_reserve,
    ev.CancelReservation: _on_cancel_reservation,
    ev.ClearFaults: _on_clear_faults,
    ev.Shutdown: _on_shutdown,
}


def _raise(s: Connector, fault: Fault, retry_at: float | None, now: float, out: Out, detail: str = "") -> Connector:
    lockout = clears_by(fault, FaultState(now, retry_at)) is ev.Clearance.PERSON
    out.append(ev.FaultRaised(fault, lockout, detail))
    s = replace(s, faults={**s.faults, fault: FaultState(now, retry_at, detail)})
    if lockout and s.session:  # a lock-out needs a person: the session cannot resume
        ground = fault in (Fault.RCD, Fault.RCD_SELF_TEST)
        s = _stop_session(s, StopReason.GROUND_FAULT if ground else StopReason.EMERGENCY_STOP, out)
    return s


# --- timers --------------------------------------------------------------------------------


def _timers(cfg: CoreConfig, s: Connector, now: float, out: Out) -> Connector:
    """Fire every timer that is due, in the order of state.TIMERS."""
    for name, when in TIMERS:
        fire = FIRE.get(name)
        due = when(cfg, s) if fire is not None else None
        if due is not None and now >= due:
            s = fire(cfg, s, now, out)  # type: ignore[misc]  # fire is not None here
    return s


def _expire_auth(cfg: CoreConfig, s: Connector, now: float, out: Out) -> Connector:
    return _drop_authorization(s, refusal="authorization expired: no EV plugged in")


def _self_test_timeout(cfg: CoreConfig, s: Connector, now: float, out: Out) -> Connector:
    return _raise(replace(s, self_test=SelfTestState.NONE), Fault.RCD_SELF_TEST, None, now, out,
                  f"no test result within {SELF_TEST_TIMEOUT_S:g} s")


def _rcd_retry(cfg: CoreConfig, s: Connector, now: float, out: Out) -> Connector:
    out.append(ev.FaultsCleared((Fault.RCD,)))
    return replace(s, faults={f: st for f, st in s.faults.items() if f is not Fault.RCD})


def _feedback_mismatch(cfg: CoreConfig, s: Connector, now: float, out: Out) -> Connector:
    fault = Fault.WELDED if s.feedback_closed else Fault.CONTACTOR_MISMATCH
    return _raise(s, fault, None, now, out, "feedback disagrees with the command")


def _overcurrent(cfg: CoreConfig, s: Connector, now: float, out: Out) -> Connector:
    return _raise(replace(s, overcurrent_since=None), Fault.OVERCURRENT, None, now, out,
                  f"drew more than {s.offered_a:g} A")


def _wakeup(cfg: CoreConfig, s: Connector, now: float, out: Out) -> Connector:
    return replace(s, wakeup_until=now + cfg.wakeup_off_s, wakeups=1, b_since=None)


Fire = Callable[[CoreConfig, Connector, float, Out], Connector]
FIRE: dict[str, Fire] = {
    "auth_expiry": _expire_auth,
    "reservation_expiry": lambda cfg, s, now, out: replace(s, reservation=None),
    "self_test_timeout": _self_test_timeout,
    "rcd_retry": _rcd_retry,
    "feedback_mismatch": _feedback_mismatch,
    "overcurrent": _overcurrent,
    "pilot_lost": lambda cfg, s, now, out: _pilot_changed(cfg, s, None, now, out),
    "pause_over": lambda cfg, s, now, out: replace(s, paused_until=-math.inf),
    "wakeup_over": lambda cfg, s, now, out: replace(s, wakeup_until=None),
    "wakeup": _wakeup,
}


# --- outputs -------------------------------------------------------------------------------


def _reconcile(cfg: CoreConfig, s: Connector, now: float, out: Out) -> Connector:
    s = _start_session_if_due(cfg, s, out)
    s = _set_output(cfg, s, now, out)
    s = _set_contactor(cfg, s, now, out)
    if s.output is PilotOutput.PWM and s.pilot is PilotState.B and not s.contactor_closed:
        s = replace(s, b_since=s.b_since if s.b_since is not None else now)
    else:
        s = replace(s, b_since=None)
    return _set_status(cfg, s, now, out)


def _start_session_if_due(cfg: CoreConfig, s: Connector, out: Out) -> Connector:
    if s.session or s.pilot not in PLUGGED_STATES or s.faults or s.shutting_down:
        return s
    if s.id_tag is None and cfg.free_vend and not s.finishing and s.operative and s.reservation is None:
        s = replace(s, id_tag=cfg.free_vend_id_tag, auth_source="free_vend")
    if s.id_tag is None:
        return s
    out.append(ev.StartSession(s.id_tag, s.auth_source))
    reservation = None if s.reservation and s.reservation[0] == s.id_tag else s.reservation
    return replace(s, session=True, finishing=False, auth_expires_at=None, refusal="",
                   reservation=reservation, wakeups=0)


def _set_output(cfg: CoreConfig, s: Connector, now: float, out: Out) -> Connector:
    blocker = offer_blocker(cfg, s, now)
    in_grace = s.contactor_closed and safety_blocker(cfg, s, now) is None  # may stay closed
    offer_a = limit_chain(cfg, s).current_a
    duty = duty_for_current(offer_a, cfg.duty_step_pct) if blocker is None else None
    if locked_out(s) or (not s.operative and not s.session and not in_grace):
        mode, duty, offered = PilotOutput.F, None, 0.0  # not during a stop grace: -12 V hides the EV
    elif duty is not None:  # (offer_blocker already refuses under 6 A, where there is no duty)
        mode, offered = PilotOutput.PWM, current_for_duty(duty)
    else:
        mode, duty, offered = PilotOutput.OFF, None, 0.0
    if (mode is PilotOutput.OFF and s.output is PilotOutput.PWM and s.session and not s.faults and cfg.min_pause_s > 0
            and offer_a < MIN_CURRENT_A):
        s = replace(s, paused_until=now + cfg.min_pause_s)
    if (mode, duty) != (s.output, s.duty_pct):
        out.append(ev.SetPilot(mode, duty, offered))
        changed_at = now if offered < s.offered_a else s.offered_changed_at
        previous = s.output
        s = replace(s, output=mode, duty_pct=duty, offered_a=offered, offered_changed_at=changed_at)
        if mode is PilotOutput.F:
            s = replace(s, pilot=None, diode_ok=False)
        elif mode != previous:  # PWM stopped or (re)started: an open contactor needs a new check
            s = replace(s, diode_ok=s.diode_ok and s.contactor_closed,
                        pwm_since=now if mode is PilotOutput.PWM else s.pwm_since)
    return s


def _set_contactor(cfg: CoreConfig, s: Connector, now: float, out: Out) -> Connector:
    unsafe = safety_blocker(cfg, s, now)
    if s.contactor_closed:
        if unsafe is not None:  # a shutdown while the EV draws is no fault: it may stop first
            soft = s.shutting_down and not s.faults and s.pilot in CHARGING_STATES and pilot_fresh(cfg, s, now)
            return _open(s, unsafe, now, out, at_once=not soft)
        if s.output is PilotOutput.PWM and s.session:
            return replace(s, stopping_since=None)
        since = s.stopping_since if s.stopping_since is not None else now
        if now >= since + cfg.stop_grace_s:  # the same sum as next_deadline: no float gap
            return _open(s, "EV did not stop within the grace; opened under load", now, out)
        return replace(s, stopping_since=since)
    if unsafe is None and s.output is PilotOutput.PWM and s.session:
        if cfg.has_self_test and s.self_test is not SelfTestState.PASSED:  # test the RCD before every close
            if s.self_test is SelfTestState.NONE:
                out.append(ev.RunSelfTest())
                return replace(s, self_test=SelfTestState.RUNNING, self_test_since=now)
            return s
        out.append(ev.CloseContactor())
        return replace(s, contactor_closed=True, contactor_changed_at=now, stopping_since=None,
                       overcurrent_since=None, self_test=SelfTestState.NONE)
    if s.self_test is SelfTestState.PASSED:  # the conditions went before the close: test again next time
        return replace(s, self_test=SelfTestState.NONE)
    return s


def _open(s: Connector, reason: str, now: float, out: Out, at_once: bool = True) -> Connector:
    out.append(ev.OpenContactor(reason, at_once))
    return replace(s, contactor_closed=False, contactor_changed_at=now, stopping_since=None,
                   overcurrent_since=None)


def _set_status(cfg: CoreConfig, s: Connector, now: float, out: Out) -> Connector:
    reason = offer_blocker(cfg, s, now) or (safety_blocker(cfg, s, now) if not s.contactor_closed else None) or (
        "testing the RCD before closing" if s.self_test is SelfTestState.RUNNING else "")
    if s.faults:
        status = ConnectorStatus.FAULTED
    elif not s.operative and not s.session:
        status = ConnectorStatus.UNAVAILABLE
    elif s.session:
        if s.contactor_closed and s.output is PilotOutput.PWM:
            status = ConnectorStatus.CHARGING
        elif s.output is not PilotOutput.PWM:
            status = ConnectorStatus.SUSPENDED_EVSE
        elif s.pilot is PilotState.B:
            status = ConnectorStatus.SUSPENDED_EV
        else:
            status = ConnectorStatus.PREPARING
    elif s.finishing:
        status = ConnectorStatus.FINISHING
    elif s.reservation is not None:
        status = ConnectorStatus.RESERVED
    elif s.pilot in PLUGGED_STATES or s.id_tag is not None or s.pending_tag is not None:
        status = ConnectorStatus.PREPARING
    else:
        status = ConnectorStatus.AVAILABLE
    if status is not s.status:
        out.append(ev.StatusChanged(status, reason))
    return replace(s, status=status, reason=reason)
