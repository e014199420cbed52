"""The imperative shell around the core for one connector: inputs -> events -> actions.

Synchronous and clock-injected, so the asyncio daemon and the scenario runner (virtual
clock) drive the same code. Contactor commands happen inside feed(), before anything slow.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import deque
from dataclasses import replace
from typing import Any, Callable

import structlog

from evsed.core import state
from evsed.core.step import step
from evsed.core import events as ev
from evsed.shell.auth import LocalAuthorizer
from evsed.store.sessions import LiveSession, utc_iso
from hal import ContactorFeedback, HalError, MeterReading, Notifying, PilotReading, SelfTest

log = structlog.get_logger("evsed")


def _inline(work: Callable[[], Any], done: Callable[[Any], None]) -> None:
    """Run slow device work here and now (scenarios and tests); the daemon uses a worker thread."""
    done(work())


class ConnectorControl:
    def __init__(self, connector_id: int, cfg: state.CoreConfig, devices: dict[str, Any], *,
                 clock: Callable[[], float], wallclock: Callable[[], dt.datetime],
                 authorizer: LocalAuthorizer, writer, timezone: dt.tzinfo,
                 schedule: Callable[[float | None], None] = lambda when: None,
                 offload: Callable[[Callable[[], Any], Callable[[Any], None]], None] = _inline,
                 checkpoint_s: float = 60.0):
        self.id = connector_id
        self.pilot, self.contactor = devices["pilot"], devices["contactor"]
        self.rcd, self.meter = devices.get("rcd"), devices.get("meter")
        self.cfg = replace(cfg, has_feedback=isinstance(self.contactor, ContactorFeedback),
                           has_meter=self.meter is not None, has_self_test=isinstance(self.rcd, SelfTest))
        self.offload = offload
        self.state = state.Connector()
        self.pilot_reads_instantly = isinstance(self.pilot, Notifying)
        self.clock, self.wallclock, self.timezone = clock, wallclock, timezone
        self.authorizer, self.writer, self.schedule = authorizer, writer, schedule
        self.checkpoint_s = checkpoint_s
        self.log = log.bind(connector=connector_id)
        self.session: LiveSession | None = None
        self.last_reading: MeterReading | None = None
        self.last_refusal: dict | None = None
        self._inbox: deque[ev.Event] = deque()
        self._busy = False
        self._rcd_tripped: bool | None = None
        self._reading_at = -math.inf
        self._last_session: LiveSession | None = None  # stopped, its final reading still to come
        self._rejected: list[tuple[float, MeterReading]] = []  # consecutive implausible readings
        self._feedback: bool | None = None
        self._checkpointed_at = -float("inf")

    # --- life cycle -------------------------------------------------------------------------
    def start(self) -> None:
        """The contactor starts open and the pilot at +12 V, whatever state the pins had."""
        self.contactor.open()
        self.pilot.pwm_off()
        self.log.info("contactor.opened", reason="start")
        self.poll_inputs()

    def shutdown(self) -> None:
        """Stop the session and open the contactor; also called on crash paths."""
        try:
            self.feed(ev.Shutdown())
        finally:
            self.release()

    def release(self) -> None:
        """Open the contactor and stop PWM without asking the core: the last line of defence."""
        try:
            self.contactor.open()
        finally:
            self.pilot.pwm_off()

    # --- inputs -----------------------------------------------------------------------------
    def feed(self, event: ev.Event) -> None:
        """Run the core on an event, then on any events its actions produced, in order."""
        self._inbox.append(event)
        if self._busy:
            return
        self._busy = True
        try:
            while self._inbox:
                self._step(self._inbox.popleft())
        finally:
            self._busy = False
        self.schedule(state.next_deadline(self.cfg, self.state))

    def read_pilot(self) -> PilotReading | HalError:
        """One pilot reading, or the error; may run in a worker thread (an ADC burst takes ms)."""
        try:
            return self.pilot.read()
        except HalError as exc:
            return exc

    def poll_inputs(self, pilot: PilotReading | HalError | None = None) -> None:
        """Feed the RCD, the pilot and the contactor feedback as they read now.

        pilot: a reading taken off the loop; None reads it here when the pilot is a pushing
        (Notifying) device whose reads are instant, and skips it otherwise.
        """
        if self.rcd is not None:
            tripped = bool(self.rcd.tripped())
            if tripped != self._rcd_tripped:
                self._rcd_tripped = tripped
                self.feed(ev.FaultInputChanged(tripped))
        if pilot is None and self.pilot_reads_instantly:
            pilot = self.read_pilot()
        if isinstance(pilot, HalError):
            self.feed(ev.PilotUnreadable(str(pilot)))
        elif pilot is not None:
            self.feed(ev.PilotMeasured(pilot.high_v, pilot.low_v))
        if self.cfg.has_feedback:
            closed = bool(self.contactor.feedback_closed())
            if closed != self._feedback:
                self._feedback = closed
                self.feed(ev.ContactorFeedback(closed))

    def tick(self) -> None:
        self.feed(ev.Tick())

    def meter_sampled(self, reading: MeterReading) -> None:
        now = self.clock()
        problem = _implausible(reading, self.last_reading, now - self._reading_at)
        if problem and self._rebaseline(reading, now):
            problem = ""
        if problem:  # garbage from a backend that did not catch it itself: a failed read
            if not self._rejected[:-1]:
                self.log.warning("meter.garbage", detail=problem)
            self.meter_failed(problem)
            return
        self._rejected.clear()
        self.last_reading, self._reading_at = reading, now
        done = self._last_session
        if done is not None:  # the energy drawn between the last sample and the open belongs to it
            if reading.energy_import_wh > done.meter_last_wh:
                done.meter_last_wh = reading.energy_import_wh
                self._store_stop(done)
            if not self.state.contactor_closed:
                self._last_session = None
        self.feed(ev.MeterSampled(tuple(reading.current_a), reading.power_total_w, reading.energy_import_wh))
        s = self.session
        if s is not None and s.meter_start_unknown:  # started before the meter first answered
            s.meter_start_unknown = False
            s.meter_start_wh = s.meter_last_wh = reading.energy_import_wh
            self.writer.submit(lambda st, wh=reading.energy_import_wh: s.row_id and st.set_meter(s.row_id, wh, wh))
        if s is not None:
            s.meter_last_wh = max(s.meter_last_wh, reading.energy_import_wh)
            s.power_w = reading.power_total_w
            s.peak_power_w = max(s.peak_power_w, reading.power_total_w)
            now = self.clock()
            if now - self._checkpointed_at >= self.checkpoint_s:
                self._checkpointed_at = now
                row = (s, s.meter_last_wh, s.peak_power_w, utc_iso(self.wallclock()))
                self.writer.submit(lambda st, r=row: r[0].row_id and st.checkpoint(r[0].row_id, *r[1:]))

    def _rebaseline(self, reading: MeterReading, now: float) -> bool:
        """A meter reset or replaced reads consistently, just not like before: after
        REBASELINE_AFTER such readings take it as the new baseline (a session keeps its energy)."""
        self._rejected.append((now, reading))
        if len(self._rejected) < REBASELINE_AFTER:
            return False
        pairs = zip(self._rejected, self._rejected[1:])
        if any(_implausible(b, a, tb - ta) for (ta, a), (tb, b) in pairs):
            self._rejected = self._rejected[1:]
            return False
        old = self.last_reading.energy_import_wh if self.last_reading else 0
        first = self._rejected[0][1].energy_import_wh
        s = self.session
        if s is not None:
            s.meter_start_wh += first - old
            s.meter_last_wh += first - old
            self.writer.submit(lambda st, a=s.meter_start_wh, b=s.meter_last_wh: s.row_id and st.set_meter(s.row_id, a, b))
        self._last_session = None  # a finished session's energy is not on the new counter
        self.log.warning("meter.rebaselined", previous_wh=old, now_wh=first)
        self._rejected.clear()
        return True

    def meter_failed(self, detail: str) -> None:
        self.feed(ev.MeterFailed(detail))

    # --- the step ---------------------------------------------------------------------------
    def _step(self, event: ev.Event) -> None:
        now = self.clock()
        self.state, actions = step(self.cfg, self.state, event, now)
        for action in actions:
            self._perform(action, now)
        violated = state.check_invariant(self.cfg, self.state, now)
        if violated is not None:  # defence in depth: never keep a closed contactor the core can't justify
            self.contactor.open()
            self.log.critical("safety.invariant_violated", detail=violated)

    def _perform(self, a: ev.Action, now: float) -> None:
        if isinstance(a, ev.OpenContactor):
            self.contactor.open()
            self.log.info("contactor.opened", reason=a.reason)
        elif isinstance(a, ev.CloseContactor):
            self.contactor.close()
            self.log.info("contactor.closed", offered_a=self.state.offered_a)
        elif isinstance(a, ev.SetPilot):
            if a.mode == "pwm":
                self.pilot.pwm_on(a.duty_pct)
            elif a.mode == "f":
                self.pilot.pwm_f()
            else:
                self.pilot.pwm_off()
            self.log.info("pilot.output", mode=a.mode, duty_pct=a.duty_pct, offered_a=round(a.current_a, 1))
        elif isinstance(a, ev.RunSelfTest):
            self.log.info("rcd.self_test")
            self.offload(self.rcd.self_test, lambda passed: self.feed(ev.SelfTestResult(
                bool(passed), "" if passed else "RCD did not trip on its test current")))
        elif isinstance(a, ev.RequestAuthorization):
            result = self.authorizer.authorize(a.id_tag, self.wallclock().astimezone(self.timezone).date())
            self._inbox.append(result)
        elif isinstance(a, ev.CardRefused):
            card = self.authorizer.card(a.id_tag)
            self.last_refusal = {"id_tag": a.id_tag, "reason": a.reason, "at": utc_iso(self.wallclock()),
                                 "card_name": card.name if card else ""}
            self.log.warning("card.refused", id_tag=a.id_tag, reason=a.reason)
        elif isinstance(a, ev.StartSession):
            self._start_session(a)
        elif isinstance(a, ev.StopSession):
            self._stop_session(a)
        elif isinstance(a, ev.PilotChanged):
            self.log.info("pilot.state_changed", state=a.state, previous=a.previous)
        elif isinstance(a, ev.FaultRaised):
            self.log.error("fault.raised", fault=a.fault.value, lockout=a.lockout, detail=a.detail)
        elif isinstance(a, ev.FaultsCleared):
            self.log.info("fault.cleared", faults=[f.value for f in a.faults])
        elif isinstance(a, ev.StatusChanged):
            self.log.info("connector.status", status=a.status.value, reason=a.reason)

    def _start_session(self, a: ev.StartSession) -> None:
        card = self.authorizer.card(a.id_tag)
        energy = self.last_reading.energy_import_wh if self.last_reading else 0
        s = LiveSession(self.id, a.id_tag, card.name if card else "", card.group if card else "",
                        a.auth_source, utc_iso(self.wallclock()), energy, energy,
                        meter_start_unknown=self.meter is not None and self.last_reading is None)
        self.session = s
        self._last_session = None  # from here on, energy belongs to the new session
        self._checkpointed_at = self.clock()
        self.writer.submit(lambda st: st.start(s))
        self.last_refusal = None
        self.log.info("session.started", id_tag=a.id_tag, card_name=s.card_name, meter_start_wh=energy)

    def _stop_session(self, a: ev.StopSession) -> None:
        s, self.session = self.session, None
        if s is None:
            return
        s.stopped = (a.reason.value, utc_iso(self.wallclock()))
        self._store_stop(s)
        # the next reading after the contactor opened completes its energy (if it had a start)
        self._last_session = None if s.meter_start_unknown else s
        self.log.info("session.stopped", id_tag=s.id_tag, reason=a.reason.value, energy_wh=s.energy_wh,
                      meter_stop_wh=s.meter_last_wh, peak_power_w=s.peak_power_w)

    def _store_stop(self, s: LiveSession) -> None:
        """Write (or rewrite) a finished session's stop: durable at once, exact a reading later."""
        stop_wh, peak, (reason, when) = s.meter_last_wh, s.peak_power_w, s.stopped

        def store_stop(st):
            if s.row_id is None:  # the start write failed: the finished session is still recorded
                st.start(s)
            st.stop(s.row_id, stop_wh, peak, reason, when)
        self.writer.submit(store_stop)

    # --- status -----------------------------------------------------------------------------
    def status(self) -> dict:
        st, now = self.state, self.clock()
        reading, session = self.last_reading, self.session
        return {
            "id": self.id,
            "status": st.status.value,
            "state": st.pilot.value if st.pilot else None,
            "pilot_output": st.output,
            "duty_pct": st.duty_pct,
            "allowed_a": state.allowed_current_a(self.cfg, st),
            "offered_a": round(st.offered_a, 2),
            "contactor": "closed" if st.contactor_closed else "open",
            "measured": None if reading is None else {
                "current_a": list(reading.current_a), "power_w": reading.power_total_w,
                "energy_wh": reading.energy_import_wh},
            "session": None if session is None else {
                "id_tag": session.id_tag, "card_name": session.card_name, "started_at": session.started_at,
                "energy_wh": session.energy_wh, "power_w": session.power_w,
                "peak_power_w": session.peak_power_w},
            "faults": [{"fault": f.value, "detail": fs.detail, "clears_by": state.clears_by(f, fs).value,
                        "lockout": state.clears_by(f, fs) is ev.Clearance.PERSON,
                        "retry_in_s": None if fs.retry_at is None else max(0.0, round(fs.retry_at - now, 1))}
                       for f, fs in st.faults.items()],
            "reason": st.reason,
            "last_refusal": self.last_refusal,
            "limits": dict(st.limits),
        }


REBASELINE_AFTER = 5
MAX_PLAUSIBLE_POWER_W = 250_000.0  # 3 x 80 A x 480 V with margin: no charger meter sees more
COARSE_STEP_WH = 200  # meters counting in 0.1 kWh (EM340, EEM-350) move in 100 Wh steps


def _implausible(reading: MeterReading, previous: MeterReading | None, elapsed_s: float) -> str:
    numbers = [reading.power_total_w, *reading.current_a]
    if any(not math.isfinite(x) for x in numbers):
        return "meter returned a non-finite value"
    if reading.energy_import_wh < 0:
        return f"meter energy {reading.energy_import_wh} Wh is negative"
    if previous is None:
        return ""
    step_wh = reading.energy_import_wh - previous.energy_import_wh
    if step_wh < 0:
        return f"meter energy went backwards: {previous.energy_import_wh} Wh -> {reading.energy_import_wh} Wh"
    if step_wh > COARSE_STEP_WH + MAX_PLAUSIBLE_POWER_W * max(elapsed_s, 0.0) / 3600.0:
        return f"meter energy jumped by {step_wh} Wh in {elapsed_s:.1f} s"
    return ""


def route_card(ctrls: list[ConnectorControl], uid: str) -> int:
    """Give a tap to the connector it is meant for: the one whose session it started, else
    one with an EV waiting for a card, else the first free one. Returns that connector's id."""
    chosen = (next((c for c in ctrls if c.state.session and c.state.id_tag == uid), None)
              or next((c for c in ctrls if not c.state.session and c.state.pilot in state.PLUGGED_STATES), None)
              or next((c for c in ctrls if not c.state.session), ctrls[0]))
    chosen.log.info("card.presented", id_tag=uid)
    chosen.feed(ev.CardPresented(uid))
    return chosen.id
