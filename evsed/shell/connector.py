"""The imperative shell around the core for one connector: inputs -> events -> actions.

Synchronous and clock-injected, so the asyncio daemon and the scenario runner (virtual
clock) drive the same code. Contactor commands happen inside feed(), before anything slow;
every action is published to the charger's bus only after the hardware has been told.

A stopped session is told (session.stopped) with its final reading: the first meter reading
begun after the contactor opened, asked for at once. Until its row is committed, status still
shows it: a session is reported finished only once it is durable.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from dataclasses import replace
from typing import Any, Callable

import structlog

from evsed import protocol as p
from evsed.core import events as ev
from evsed.core import limits as lm
from evsed.core import meter as judge
from evsed.core import state
from evsed.core.step import step
from evsed.shell.bus import Bus, ChargerEvent
from evsed.shell.devices import ConnectorDevices
from evsed.store.sessions import LiveSession, utc_iso
from hal import (ContactorFeedback, DeviceUnavailable, DutyResolution, HalError, MeterIdentity, MeterReading,
                 Notifying, OfferedCurrent, PilotReading, SelfTest, SoftOpen)

log = structlog.get_logger("evsed")

Offload = Callable[[Callable[[], Any], Callable[[Any], None]], None]
Authorize = Callable[[str, int, Callable[[ev.AuthorizationResult], None]], None]


def _inline(work: Callable[[], Any], done: Callable[[Any], None]) -> None:
    """Run slow device work here and now (scenarios and tests); the daemon uses a worker thread."""
    done(work())


class ConnectorControl:
    def __init__(self, connector_id: int, cfg: state.CoreConfig, devices: ConnectorDevices, *,
                 clock: Callable[[], float], wallclock: Callable[[], dt.datetime], bus: Bus,
                 authorize: Authorize, card_name: Callable[[str], str], next_session_id: Callable[[], int],
                 schedule: Callable[[float | None], None] = lambda when: None, offload: Offload = _inline,
                 read_meter_now: Callable[[], None] = lambda: None):
        self.id = connector_id
        self.devices = devices
        self.pilot, self.contactor, self.rcd, self.meter = devices.pilot, devices.contactor, devices.rcd, devices.meter
        self.cfg = replace(cfg, has_feedback=isinstance(self.contactor, ContactorFeedback),
                           has_meter=self.meter is not None, has_self_test=isinstance(self.rcd, SelfTest),
                           duty_step_pct=self.pilot.duty_step_pct if isinstance(self.pilot, DutyResolution) else 0.0)
        self.state = state.Connector()
        self.pilot_reads_instantly = isinstance(self.pilot, Notifying)
        # the contactor's feedback, asked at every pilot poll: the Protocol check once (it walks the class each time)
        self.feedback = self.contactor if isinstance(self.contactor, ContactorFeedback) else None
        self.clock, self.wallclock, self.bus = clock, wallclock, bus
        self.authorize, self.card_name, self.next_session_id = authorize, card_name, next_session_id
        self.schedule, self.offload, self.read_meter_now = schedule, offload, read_meter_now
        self.log = log.bind(connector=connector_id)
        self.session: LiveSession | None = None
        self.last_reading: MeterReading | None = None
        self.meter_identity = MeterIdentity()  # as the meter told it when it opened (sessions keep it)
        self.last_refusal: p.Refusal | None = None
        self.pilot_error = ""  # why the pilot device is unavailable (an unplugged adapter), until it reads again
        self.meter_error = ""  # why the last meter reading failed (silent, unplugged, garbage), until one is good
        self._inbox: deque[ev.Event] = deque()
        self._busy = False
        self._rcd_tripped: bool | None = None
        self._track = judge.Track()
        self._finishing: LiveSession | None = None  # stopped, its final reading still to come
        self._final_after: float | None = None  # a reading begun at or after this (the open) is the final one
        self.unsaved: dict[int, LiveSession] = {}  # stopped, its row not yet committed: status still shows it
        self._held: list[dict[str, Any]] = []  # statuses while the stop awaits its final reading: told after it
        self._feedback: bool | None = None

    def publish(self, type_: str, **data: Any) -> None:
        self.bus.publish(ChargerEvent(type_, self.id, self.wallclock(), data))

    # --- life cycle -------------------------------------------------------------------------
    def start(self) -> None:
        """The contactor starts open and the pilot at +12 V, whatever state the pins had."""
        self.contactor.open()
        self.pilot.pwm_off()
        self.publish("contactor.opened", reason="start")
        self.poll_inputs()

    def shutdown(self) -> None:
        """Stop the session and open the contactor, letting a charging EV stop first where the
        contactor's driver can (hal.SoftOpen)."""
        try:
            self.feed(ev.Shutdown())
        except BaseException:
            self.release()  # the core or a device failed: no orderly stop, open at once
            raise
        finally:
            self._tell_finished()  # no reading comes any more: the stop is told with the last one
        self.release(at_once=False)

    def release(self, at_once: bool = True) -> None:
        """Open the contactor and stop PWM without asking the core: the last line of defence.
        at_once False (an orderly stop): a SoftOpen contactor lets the EV stop first."""
        try:
            self._open(at_once)
        finally:
            self.pilot.pwm_off()

    def _open(self, at_once: bool) -> None:
        if not at_once and isinstance(self.contactor, SoftOpen):
            self.contactor.open_when_ev_stops()
        else:
            self.contactor.open()

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
            if isinstance(pilot, DeviceUnavailable):  # not a TryAgain: a stale reading is no missing device
                self.pilot_error = str(pilot)
            self.feed(ev.PilotUnreadable(str(pilot)))
        elif pilot is not None:
            self.pilot_error = ""
            self.feed(ev.PilotMeasured(pilot.high_v, pilot.low_v))
        if self.feedback is not None:
            closed = bool(self.feedback.feedback_closed())
            if closed != self._feedback:
                self._feedback = closed
                self.feed(ev.ContactorFeedback(closed))

    def tick(self) -> None:
        self.feed(ev.Tick())

    def meter_sampled(self, reading: MeterReading, begun_at: float | None = None) -> None:
        """A meter reading; begun_at: when (this clock) its read began, None: now."""
        begun = self.clock() if begun_at is None else begun_at
        sample = judge.Sample(reading.energy_import_wh, reading.power_total_w, tuple(reading.current_a))
        self._track, verdict = judge.judge(self._track, sample, self.clock())
        if not verdict.accepted:
            if verdict.first_of_streak:
                self.publish("meter.garbage", detail=verdict.problem)
            self.meter_failed(verdict.problem)
            return
        if verdict.rebaseline_wh is not None:
            self._rebaseline(verdict.rebaseline_wh, reading)
        self.last_reading = reading
        self.meter_error = ""
        done = self._finishing
        if done is not None:  # the energy drawn between the last sample and the open belongs to it
            done.meter_last_wh = max(done.meter_last_wh, reading.energy_import_wh)
            if self._final_after is not None and begun >= self._final_after:
                self._tell_finished()
        self.feed(ev.MeterSampled(tuple(reading.current_a), reading.power_total_w, reading.energy_import_wh))
        s = self.session
        if s is None:
            return
        if s.meter_start_unknown:  # started before the meter first answered
            s.meter_start_unknown = False
            s.meter_start_wh = s.meter_last_wh = reading.energy_import_wh
            self.publish("session.meter_start", session=s.row_id, meter_start_wh=s.meter_start_wh,
                         meter_last_wh=s.meter_last_wh)
        s.meter_last_wh = max(s.meter_last_wh, reading.energy_import_wh)
        s.power_w = reading.power_total_w
        s.peak_power_w = max(s.peak_power_w, reading.power_total_w)
        self.publish("session.sample", session=s.row_id, energy_wh=reading.energy_import_wh,
                     meter_last_wh=s.meter_last_wh,
                     session_energy_wh=s.energy_wh, power_w=reading.power_total_w, peak_power_w=s.peak_power_w,
                     current_a=list(reading.current_a), voltage_v=list(reading.voltage_v),
                     offered_a=round(self.state.offered_a, 2))

    def _rebaseline(self, offset_wh: int, reading: MeterReading) -> None:
        """A reset or replaced meter became the new baseline: a running session keeps its energy."""
        previous = self.last_reading.energy_import_wh if self.last_reading else 0
        self._tell_finished()  # a stopped session's energy is not on the new counter: told as it stands
        s = self.session
        if s is not None:
            s.meter_start_wh += offset_wh
            s.meter_last_wh += offset_wh
            s.meter_rebaselined = True
            self.publish("session.meter_start", session=s.row_id, meter_start_wh=s.meter_start_wh,
                         meter_last_wh=s.meter_last_wh, rebaselined=True)
        self.publish("meter.rebaselined", previous_wh=previous, now_wh=reading.energy_import_wh)

    def meter_identified(self, told: MeterIdentity) -> None:
        """The meter's vendor, model and serial, asked once when it opened; a field that is
        garbage or that the backend could not read is left out (logged here, once)."""
        fields = {"vendor": told.vendor, "model": told.model, "serial": told.serial}
        kept = {k: v for k, v in fields.items() if judge.identity_text(v)}
        garbage = {k: v[:80] for k, v in fields.items() if v and k not in kept}
        self.meter_identity = MeterIdentity(**kept)
        if garbage or told.problem:
            self.log.warning("meter.identity_incomplete", garbage=garbage, problem=told.problem, **kept)
        else:
            self.log.info("meter.identified", **kept)

    def meter_failed(self, detail: str) -> None:
        self.meter_error = detail
        if self._final_after is not None:  # no final reading to be had: the stop is told with the last one
            self._tell_finished()
        self.feed(ev.MeterFailed(detail))

    # --- the step ---------------------------------------------------------------------------
    def _step(self, event: ev.Event) -> None:
        now = self.clock()
        self.state, actions = step(self.cfg, self.state, event, now)
        for action in actions:
            self._perform(action)
        violated = state.check_invariant(self.cfg, self.state, now)
        if violated is not None:  # defence in depth: never keep a closed contactor the core can't justify
            self.contactor.open()
            self.log.critical("safety.invariant_violated", detail=violated)

    def _perform(self, a: ev.Action) -> None:
        """The hardware first, then the bus: no subscriber runs before the contactor is told."""
        if isinstance(a, ev.OpenContactor):
            self._open(a.at_once)
            self.publish("contactor.opened", reason=a.reason)
            if self._finishing is not None and self._final_after is None:
                self._ask_final_reading()
        elif isinstance(a, ev.CloseContactor):
            self.contactor.close()
            self.publish("contactor.closed", offered_a=round(self.state.offered_a, 2))
        elif isinstance(a, ev.SetPilot):
            if a.mode == "pwm" and a.duty_pct is not None:
                self.pilot.pwm_on(a.duty_pct)
            elif a.mode == "f":
                self.pilot.pwm_f()
            else:
                self.pilot.pwm_off()
            duty = None if a.duty_pct is None else round(a.duty_pct, 4)
            self.publish("pilot.output", mode=a.mode, duty_pct=duty, offered_a=round(a.current_a, 2))
        elif isinstance(a, ev.RunSelfTest):
            rcd = self.rcd
            assert isinstance(rcd, SelfTest), "the core asks for a self-test only when the RCD has one"
            self.publish("rcd.self_test")
            self.offload(rcd.self_test, lambda passed: self.feed(ev.SelfTestResult(
                bool(passed), "" if passed else "RCD did not trip on its test current")))
        elif isinstance(a, ev.RequestAuthorization):
            self.authorize(a.id_tag, self.id, self.feed)
        elif isinstance(a, ev.CardRefused):
            self.last_refusal = p.Refusal(id_tag=a.id_tag, reason=a.reason, at=utc_iso(self.wallclock()),
                                          card_name=self.card_name(a.id_tag))
            self.publish("card.refused", id_tag=a.id_tag, reason=a.reason)
        elif isinstance(a, ev.StartSession):
            self._start_session(a)
        elif isinstance(a, ev.StopSession):
            self._stop_session(a)
        elif isinstance(a, ev.PilotChanged):
            self.publish("pilot.state_changed", state=a.state, previous=a.previous)
        elif isinstance(a, ev.FaultRaised):
            self.publish("fault.raised", fault=a.fault.value, lockout=a.lockout, detail=a.detail)
        elif isinstance(a, ev.FaultsCleared):
            self.publish("fault.cleared", faults=[f.value for f in a.faults])
        elif isinstance(a, ev.StatusChanged):
            status = dict(status=a.status.value, reason=a.reason, ev_connected=self.state.pilot in state.PLUGGED_STATES)
            if self._finishing is not None:  # a CSMS hears the transaction end before the connector's next status
                self._held.append(status)
            else:
                self.publish("connector.status", **status)

    def _start_session(self, a: ev.StartSession) -> None:
        self._tell_finished()  # from here on, energy belongs to the new session
        energy = self.last_reading.energy_import_wh if self.last_reading else 0
        s = LiveSession(self.id, a.id_tag, self.card_name(a.id_tag), self.state.group, a.auth_source,
                        utc_iso(self.wallclock()), energy, energy, row_id=self.next_session_id(),
                        meter_start_unknown=self.meter is not None and self.last_reading is None)
        self.session = s
        self.last_refusal = None
        self.publish("session.started", session=s.row_id, id_tag=s.id_tag, card_name=s.card_name,
                     group=s.card_group, auth_source=s.auth_source, meter_start_wh=energy,
                     meter_start_unknown=s.meter_start_unknown, started_at=s.started_at)

    def _stop_session(self, a: ev.StopSession) -> None:
        s, self.session = self.session, None
        if s is None:
            return
        s.stopped = (a.reason.value, utc_iso(self.wallclock()))
        self.unsaved[s.row_id or 0] = s
        self._finishing = s
        if self.meter is None or s.meter_start_unknown or self.meter_error:  # no final reading to wait for
            self._tell_finished()
        elif not self.state.contactor_closed:  # else when it opens (an EV given time to stop first)
            self._ask_final_reading()

    def _ask_final_reading(self) -> None:
        """The contactor opened under a stopped session: the next reading begun now is its final one."""
        self._final_after = self.clock()
        self.read_meter_now()

    def _tell_finished(self) -> None:
        """Publish the stopped session with its final reading (or the last one there is)."""
        s, self._finishing, self._final_after = self._finishing, None, None
        held, self._held = self._held, []
        if s is not None and s.stopped is not None:
            self.publish("session.stopped", session=s.row_id, id_tag=s.id_tag, card_name=s.card_name,
                         group=s.card_group, auth_source=s.auth_source, started_at=s.started_at,
                         meter_start_wh=s.meter_start_wh, meter_stop_wh=s.meter_last_wh, energy_wh=s.energy_wh,
                         peak_power_w=s.peak_power_w, reason=s.stopped[0], stopped_at=s.stopped[1])
        for status in held:
            self.publish("connector.status", **status)

    def session_saved(self, session_id: int) -> None:
        """The stopped session's row is committed: from now on status says it finished."""
        self.unsaved.pop(session_id, None)

    def _offered_a(self) -> float:
        """What the EV is offered: the board's own figure where it sets the PWM itself (an OpenEVSE
        caps at its stored maximum), else the core's."""
        if isinstance(self.pilot, OfferedCurrent) and self.state.output == "pwm":
            board = self.pilot.offered_current_a()
            if board is not None:
                return min(board, self.state.offered_a)
        return self.state.offered_a

    # --- status -----------------------------------------------------------------------------
    def chain(self) -> lm.ChainResult:
        """The core's limit chain now: the offer, the binding source, every source's limit."""
        return state.limit_chain(self.cfg, self.state)

    def status(self) -> dict[str, Any]:
        st, now = self.state, self.clock()
        reading, session = self.last_reading, self.session
        chain = self.chain()
        if session is None and self.unsaved:  # stopped, not yet durable: not yet reported finished
            session = next(iter(self.unsaved.values()))
        return {
            "id": self.id,
            "status": st.status.value,
            "state": st.pilot.value if st.pilot else None,
            "pilot_output": st.output,
            "duty_pct": None if st.duty_pct is None else round(st.duty_pct, 4),  # the kernel PWM's grid
            "allowed_a": chain.allowed_a,
            "offered_a": round(self._offered_a(), 2),
            "contactor": "closed" if st.contactor_closed else "open",
            "operative": st.operative,  # False while Unavailable, or pending until the session ends
            "measured": None if reading is None else p.Measured(
                current_a=tuple(reading.current_a), power_w=reading.power_total_w,
                energy_wh=reading.energy_import_wh, stale=state.meter_missing(self.cfg, st, now)),
            "error_code": state.error_code(self.cfg, st, now).value,
            "session": None if session is None else p.SessionNow(
                id=session.row_id or 0, id_tag=session.id_tag, card_name=session.card_name,
                group=session.card_group, started_at=session.started_at,
                energy_wh=session.energy_wh, power_w=session.power_w, peak_power_w=session.peak_power_w),
            "faults": tuple(p.FaultNow(fault=f.value, detail=fs.detail, clears_by=state.clears_by(f, fs).value,
                                       lockout=state.clears_by(f, fs) is ev.Clearance.PERSON,
                                       retry_in_s=None if fs.retry_at is None else max(0.0, round(fs.retry_at - now, 1)))
                            for f, fs in st.faults.items()),
            "reason": st.reason,
            "pilot_error": self.pilot_error,
            "meter_error": self.meter_error,
            "last_refusal": self.last_refusal,
            "limit_chain": tuple(p.ChainLink(source=lim.source, current_a=lim.current_a, detail=lim.detail,
                                             blocked=lim.blocked, binding=lim.source == chain.binding)
                                 for lim in chain.limits),
            "offer_a": chain.current_a,
            "not_charging": chain.not_charging,
        }
