"""The charging core: a pure, synchronous state machine for one connector.

step(config, state, event, now) -> (state, actions). Time is an argument; nothing here
reads a clock, sleeps, logs or does I/O. Several connectors are several states.
"""

from __future__ import annotations

import math
from dataclasses import replace

from evsed.core import events as ev
from evsed.core.events import ConnectorStatus, Fault, StopReason
from evsed.core.pilot import MIN_CURRENT_A, PilotState, classify, current_for_duty, diode_present, duty_for_current
from evsed.core.state import (AUTH_LIMIT, DIODE_FAILURES_TO_FAULT, DIODE_SETTLE_S, PLUGGED_STATES, RCD_TRIPS_FORGOTTEN_S,
                         SELF_TEST_TIMEOUT_S,
                         Connector, CoreConfig, FaultState, allowed_current_a, locked_out, offer_blocker,
                         pilot_fresh, safety_blocker)


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


def _apply(cfg: CoreConfig, s: Connector, e: ev.Event, now: float, out: list) -> Connector:
    handler = _HANDLERS.get(type(e))
    return handler(cfg, s, e, now, out) if handler else s


def _on_pilot(cfg, s: Connector, e: ev.PilotMeasured, now, out) -> Connector:
    if s.output == "f":  # our own -12 V hides the EV; only the reading's arrival counts
        return replace(s, pilot_seen_at=now)
    state = classify(e.high_v)
    if state is None:  # between bands: keep the last state; staleness ends it
        return s
    s = replace(s, pilot_seen_at=now)
    if s.output == "pwm" and state in PLUGGED_STATES:
        ok = diode_present(e.low_v)
        settled = now >= s.pwm_since + DIODE_SETTLE_S
        failures = 0 if ok else s.diode_failures + 1 if settled else 0
        s = replace(s, diode_ok=ok, diode_failures=failures)
        if failures >= DIODE_FAILURES_TO_FAULT and Fault.DIODE not in s.faults:
            s = _raise(s, Fault.DIODE, None, now, out, "no -12 V low level under PWM")
    if state is not s.pilot:
        s = _pilot_changed(cfg, s, state, now, out)
    return s


def _on_pilot_unreadable(cfg, s: Connector, e: ev.PilotUnreadable, now, out) -> Connector:
    if s.pilot is None or s.output == "f":
        return s
    return _pilot_changed(cfg, s, None, now, out)  # an explicit read error: lost at once


def _pilot_changed(cfg, s: Connector, state: PilotState | None, now, out) -> Connector:
    previous = s.pilot
    out.append(ev.PilotChanged(state.value if state else None, previous.value if previous else None))
    s = replace(s, pilot=state)
    if state is PilotState.A:
        if s.session:
            s = _stop_session(s, StopReason.EV_DISCONNECTED, out)
        cleared = tuple(f for f in (Fault.DIODE, Fault.OVERCURRENT) if f in s.faults)
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


def _on_card(cfg, s: Connector, e: ev.CardPresented, now, out) -> Connector:
    tag = e.id_tag
    if s.session:
        if tag == s.id_tag:
            return _stop_session(s, StopReason.LOCAL, out)
        return _refuse(s, tag, "connector in use by another card", out)
    if s.id_tag == tag:  # tapped again before plugging in: cancel
        return _drop_authorization(s, refusal="")
    refusal = _start_refusal(s, tag)
    if refusal:
        return _refuse(s, tag, refusal, out)
    if cfg.free_vend:
        return _authorize(cfg, s, tag, "free_vend", now)
    out.append(ev.RequestAuthorization(tag))
    return replace(s, pending_tag=tag, refusal="")


def _start_refusal(s: Connector, tag: str) -> str:
    if not s.operative:
        return "connector unavailable"
    if locked_out(s):
        return "charger locked out by a fault"
    if s.reservation is not None and s.reservation[0] != tag:
        return "connector reserved"
    return ""


def _refuse(s: Connector, tag: str, reason: str, out) -> Connector:
    out.append(ev.CardRefused(tag, reason))
    return replace(s, refusal=reason)


def _on_auth(cfg, s: Connector, e: ev.AuthorizationResult, now, out) -> Connector:
    if s.pending_tag != e.id_tag or s.session:
        return s  # stale answer
    s = replace(s, pending_tag=None)
    if not e.accepted:
        return _refuse(s, e.id_tag, e.reason or "not authorized", out)
    refusal = _start_refusal(s, e.id_tag)  # reserved, unavailable or locked out meanwhile
    if refusal:
        return _refuse(s, e.id_tag, refusal, out)
    return _authorize(cfg, s, e.id_tag, e.source, now, e.group, e.max_current_a)


def _authorize(cfg, s: Connector, tag: str, source: str, now, group: str = "",
               max_current_a: float | None = None) -> Connector:
    plugged = s.pilot in PLUGGED_STATES
    s = _on_limit(cfg, s, ev.LimitChanged(AUTH_LIMIT, max_current_a), now, [])
    return replace(s, id_tag=tag, auth_source=source, group=group, refusal="",
                   auth_expires_at=None if plugged else now + cfg.auth_timeout_s)


def _drop_authorization(s: Connector, **changes) -> Connector:
    """The authorization ends (used, cancelled, expired): its group and per-session ceiling with it."""
    limits = {k: v for k, v in s.limits.items() if k != AUTH_LIMIT}
    return replace(s, id_tag=None, auth_expires_at=None, group="", limits=limits, **changes)


def _on_remote_start(cfg, s: Connector, e: ev.RemoteStart, now, out) -> Connector:
    if s.session:
        return _refuse(s, e.id_tag, "connector in use", out)
    refusal = _start_refusal(s, e.id_tag)
    return _refuse(s, e.id_tag, refusal, out) if refusal else _authorize(cfg, s, e.id_tag, "remote", now)


def _on_stop(cfg, s: Connector, e: ev.StopRequested, now, out) -> Connector:
    if s.session:
        return _stop_session(s, e.reason, out)
    return _drop_authorization(s, pending_tag=None)


def _stop_session(s: Connector, reason: StopReason, out) -> Connector:
    out.append(ev.StopSession(reason))
    return _drop_authorization(s, session=False, b_since=None, wakeup_until=None,
                               finishing=s.pilot in PLUGGED_STATES)


def _on_limit(cfg, s: Connector, e: ev.LimitChanged, now, out) -> Connector:
    limits = {k: v for k, v in s.limits.items() if k != e.source}
    if e.current_a is not None:  # NaN is garbage: pause (0 A) rather than lift the ceiling
        limits[e.source] = 0.0 if math.isnan(e.current_a) else max(0.0, e.current_a)
    return replace(s, limits=limits)


def _on_meter(cfg, s: Connector, e: ev.MeterSampled, now, out) -> Connector:
    if any(math.isnan(a) for a in e.current_a):  # garbage must not feed the meter watchdog
        return replace(s, meter_error="NaN current")
    s = replace(s, meter_ok_at=now, meter_error="")
    if not s.contactor_closed or s.offered_a <= 0 or not e.current_a:
        return replace(s, overcurrent_since=None)
    threshold = s.offered_a + max(cfg.overcurrent_margin_a, 0.1 * s.offered_a)
    if max(e.current_a) > threshold:
        return replace(s, overcurrent_since=s.overcurrent_since if s.overcurrent_since is not None else now)
    return replace(s, overcurrent_since=None)


def _on_meter_failed(cfg, s: Connector, e: ev.MeterFailed, now, out) -> Connector:
    return replace(s, meter_error=e.detail)


def _on_fault_input(cfg, s: Connector, e: ev.FaultInputChanged, now, out) -> Connector:
    s = replace(s, rcd_tripped=e.tripped)
    if not e.tripped or Fault.RCD in s.faults:
        return s
    # Trips count until a person clears them or a day passes without one; unplugging does not
    # reset them, or re-plugging between trips would dodge the lock-out.
    trips = (s.rcd_trips if now < s.rcd_tripped_at + RCD_TRIPS_FORGOTTEN_S else 0) + 1
    retry_at = now + cfg.rcd_retry_s if trips <= cfg.rcd_max_retries else None
    return _raise(replace(s, rcd_trips=trips, rcd_tripped_at=now), Fault.RCD, retry_at, now, out,
                  f"trip {trips}" + ("" if retry_at else ", locked out"))


def _on_self_test(cfg, s: Connector, e: ev.SelfTestResult, now, out) -> Connector:
    if e.passed:
        return replace(s, self_test="passed") if s.self_test == "running" else s
    return _raise(replace(s, self_test="none"), Fault.RCD_SELF_TEST, None, now, out, e.detail)


def _on_feedback(cfg, s: Connector, e: ev.ContactorFeedback, now, out) -> Connector:
    if e.closed == s.feedback_closed:
        return s
    return replace(s, feedback_closed=e.closed, feedback_changed_at=now)


def _on_availability(cfg, s: Connector, e: ev.SetAvailability, now, out) -> Connector:
    return replace(s, operative=e.operative)


def _on_reserve(cfg, s: Connector, e: ev.Reserve, now, out) -> Connector:
    if s.session or not s.operative or s.faults or e.expires_at <= now:
        return s
    return replace(s, reservation=(e.id_tag, e.expires_at))


def _on_cancel_reservation(cfg, s, e, now, out) -> Connector:
    return replace(s, reservation=None)


def _on_clear_faults(cfg, s: Connector, e: ev.ClearFaults, now, out) -> Connector:
    if s.faults:
        out.append(ev.FaultsCleared(tuple(s.faults)))
    s = replace(s, faults={}, rcd_trips=0, diode_failures=0)
    if s.rcd_tripped:  # the input still trips: the person's clear does not hold
        s = _on_fault_input(cfg, replace(s, rcd_tripped=False), ev.FaultInputChanged(True), now, out)
    return s


def _on_shutdown(cfg, s: Connector, e: ev.Shutdown, now, out) -> Connector:
    if s.session:
        s = _stop_session(s, StopReason.REBOOT, out)
    return replace(s, shutting_down=True)


_HANDLERS = {
    ev.PilotMeasured: _on_pilot,
    ev.PilotUnreadable: _on_pilot_unreadable,
    ev.CardPresented: _on_card,
    ev.AuthorizationResult: _on_auth,
    ev.RemoteStart: _on_remote_start,
    ev.StopRequested: _on_stop,
    ev.LimitChanged: _on_limit,
    ev.MeterSampled: _on_meter,
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


def _raise(s: Connector, fault: Fault, retry_at, now, out, detail="") -> Connector:
    lockout = retry_at is None and (fault in ev.LOCKOUT_FAULTS or fault is Fault.RCD)
    out.append(ev.FaultRaised(fault, lockout, detail))
    s = replace(s, faults={**s.faults, fault: FaultState(now, retry_at, detail)})
    if lockout and s.session:  # a lock-out needs a person: the session cannot resume
        ground = fault in (Fault.RCD, Fault.RCD_SELF_TEST)
        s = _stop_session(s, StopReason.GROUND_FAULT if ground else StopReason.EMERGENCY_STOP, out)
    return s


# --- timers --------------------------------------------------------------------------------


def _timers(cfg: CoreConfig, s: Connector, now: float, out: list) -> Connector:
    if s.auth_expires_at is not None and now >= s.auth_expires_at and not s.session:
        s = _drop_authorization(s, refusal="authorization expired: no EV plugged in")
    if s.reservation is not None and now >= s.reservation[1]:
        s = replace(s, reservation=None)
    if s.self_test == "running" and now >= s.self_test_since + SELF_TEST_TIMEOUT_S:
        s = _raise(replace(s, self_test="none"), Fault.RCD_SELF_TEST, None, now, out,
                   f"no test result within {SELF_TEST_TIMEOUT_S:g} s")
    rcd = s.faults.get(Fault.RCD)
    if rcd is not None and rcd.retry_at is not None and now >= rcd.retry_at and not s.rcd_tripped:
        out.append(ev.FaultsCleared((Fault.RCD,)))
        s = replace(s, faults={f: st for f, st in s.faults.items() if f is not Fault.RCD})
    if cfg.has_feedback and s.feedback_closed is not None and s.feedback_closed != s.contactor_closed:
        if now >= max(s.contactor_changed_at, s.feedback_changed_at) + cfg.contactor_settle_s:
            fault = Fault.WELDED if s.feedback_closed else Fault.CONTACTOR_MISMATCH
            if fault not in s.faults:
                s = _raise(s, fault, None, now, out, "feedback disagrees with the command")
    if (s.overcurrent_since is not None and s.contactor_closed and Fault.OVERCURRENT not in s.faults
            and now >= max(s.overcurrent_since, s.offered_changed_at) + cfg.current_change_grace_s):
        s = _raise(replace(s, overcurrent_since=None), Fault.OVERCURRENT, None, now, out,
                   f"drew more than {s.offered_a:g} A")
    if s.pilot is not None and s.output != "f" and not pilot_fresh(cfg, s, now):
        s = _pilot_changed(cfg, s, None, now, out)
    if s.paused_until > -math.inf and now >= s.paused_until:
        s = replace(s, paused_until=-math.inf)
    if s.wakeup_until is not None and now >= s.wakeup_until:
        s = replace(s, wakeup_until=None)
    if (s.b_since is not None and cfg.wakeup_after_s > 0 and s.wakeups == 0 and s.session
            and now >= s.b_since + cfg.wakeup_after_s):
        s = replace(s, wakeup_until=now + cfg.wakeup_off_s, wakeups=1, b_since=None)
    return s


# --- outputs -------------------------------------------------------------------------------


def _reconcile(cfg: CoreConfig, s: Connector, now: float, out: list) -> Connector:
    s = _start_session_if_due(cfg, s, out)
    s = _set_output(cfg, s, now, out)
    s = _set_contactor(cfg, s, now, out)
    if s.output == "pwm" and s.pilot is PilotState.B and not s.contactor_closed:
        s = replace(s, b_since=s.b_since if s.b_since is not None else now)
    else:
        s = replace(s, b_since=None)
    return _set_status(cfg, s, now, out)


def _start_session_if_due(cfg: CoreConfig, s: Connector, out: list) -> Connector:
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


def _set_output(cfg: CoreConfig, s: Connector, now: float, out: list) -> Connector:
    blocker = offer_blocker(cfg, s, now)
    in_grace = s.contactor_closed and safety_blocker(cfg, s, now) is None  # may stay closed
    if locked_out(s) or (not s.operative and not s.session and not in_grace):
        mode, duty, offered = "f", None, 0.0  # not during a stop grace: -12 V hides the EV
    elif blocker is None:
        duty = duty_for_current(allowed_current_a(cfg, s))
        mode, offered = "pwm", current_for_duty(duty)
    else:
        mode, duty, offered = "off", None, 0.0
    if (mode == "off" and s.output == "pwm" and s.session and not s.faults and cfg.min_pause_s > 0
            and allowed_current_a(cfg, s) < MIN_CURRENT_A):
        s = replace(s, paused_until=now + cfg.min_pause_s)
    if (mode, duty) != (s.output, s.duty_pct):
        out.append(ev.SetPilot(mode, duty, offered))
        changed_at = now if offered < s.offered_a else s.offered_changed_at
        previous = s.output
        s = replace(s, output=mode, duty_pct=duty, offered_a=offered, offered_changed_at=changed_at)
        if mode == "f":
            s = replace(s, pilot=None, diode_ok=False)
        elif mode != previous:  # PWM stopped or (re)started: an open contactor needs a new check
            s = replace(s, diode_ok=s.diode_ok and s.contactor_closed,
                        pwm_since=now if mode == "pwm" else s.pwm_since)
    return s


def _set_contactor(cfg: CoreConfig, s: Connector, now: float, out: list) -> Connector:
    unsafe = safety_blocker(cfg, s, now)
    if s.contactor_closed:
        if unsafe is not None:
            return _open(s, unsafe, now, out)
        if s.output == "pwm" and s.session:
            return replace(s, stopping_since=None)
        since = s.stopping_since if s.stopping_since is not None else now
        if now >= since + cfg.stop_grace_s:  # the same sum as next_deadline: no float gap
            return _open(s, "EV did not stop within the grace; opened under load", now, out)
        return replace(s, stopping_since=since)
    if unsafe is None and s.output == "pwm" and s.session:
        if cfg.has_self_test and s.self_test != "passed":  # test the RCD before every close
            if s.self_test == "none":
                out.append(ev.RunSelfTest())
                return replace(s, self_test="running", self_test_since=now)
            return s
        out.append(ev.CloseContactor())
        return replace(s, contactor_closed=True, contactor_changed_at=now, stopping_since=None,
                       overcurrent_since=None, self_test="none")
    if s.self_test == "passed":  # the conditions went before the close: test again next time
        return replace(s, self_test="none")
    return s


def _open(s: Connector, reason: str, now: float, out: list) -> Connector:
    out.append(ev.OpenContactor(reason))
    return replace(s, contactor_closed=False, contactor_changed_at=now, stopping_since=None,
                   overcurrent_since=None)


def _set_status(cfg: CoreConfig, s: Connector, now: float, out: list) -> Connector:
    reason = offer_blocker(cfg, s, now) or (safety_blocker(cfg, s, now) if not s.contactor_closed else None) or (
        "testing the RCD before closing" if s.self_test == "running" else "")
    if s.faults:
        status = ConnectorStatus.FAULTED
    elif not s.operative and not s.session:
        status = ConnectorStatus.UNAVAILABLE
    elif s.session:
        if s.contactor_closed and s.output == "pwm":
            status = ConnectorStatus.CHARGING
        elif s.output != "pwm":
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
