"""The core's safety invariant over random event orders and times (hypothesis stateful).

Every step is checked twice: by the core's own check_invariant, and by a shadow that
knows only the events fed in and the actions that came out.
"""

import math

from hypothesis import event, note
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from evsed.core import events as ev
from evsed.core.step import step
from evsed.core.state import (Connector, CoreConfig, check_invariant, clears_by, meter_pause_after_s, next_deadline,
                              remote_start_refusal, safety_blocker)
from evsed.core.events import Clearance, Fault, StopReason
from evsed.core.pilot import (MAX_ABOVE_A, MIN_CURRENT_A, NOMINAL_V, PilotState, classify, current_for_duty,
                              diode_present)

TAGS = ("CARD1", "CARD2", "REMOTE")
SIM_SETTLE_S = 0.1  # the simulated contactor follows its command after this long
OUT_OF_BAND_OPEN_S = 0.1  # IEC 61851-1: open within 100 ms (as for C -> B)

configs = st.builds(
    CoreConfig,
    max_current_a=st.sampled_from([6.0, 16.0, 32.0, 63.0, 80.0]),
    ventilation=st.booleans(),
    free_vend=st.booleans(),
    has_meter=st.booleans(),
    has_feedback=st.booleans(),
    has_self_test=st.sampled_from([False, False, True]),
    rcd_max_retries=st.sampled_from([0, 1, 6]),
    wakeup_after_s=st.sampled_from([0.0, 30.0]),
    min_pause_s=st.sampled_from([0.0, 0.0, 60.0]),
    meter_timeout_s=st.sampled_from([10.0, 10.0, 6.5, 30.0]),
    card_repeat_s=st.sampled_from([2.0, 2.0, 0.0]),
    duty_step_pct=st.sampled_from([0.0, 0.0, 1e-4, 0.1]),  # exact; a kernel PWM (1 ns); a software one (1 us)
)
dts = st.one_of(
    st.just(0.0),
    st.sampled_from([0.0, 0.01, 0.05, 0.1, 0.2]),
    st.sampled_from([0.01, 0.05, 0.1, 0.2, 0.25, 0.3, 0.5, 1.0, 4.0, 5.0, 6.0, 10.0, 30.0, 60.0,
                     300.0, 3600.0, 1e5]),
    st.floats(min_value=0.0, max_value=400.0),
)
high_levels = st.one_of(
    st.sampled_from(list(NOMINAL_V.values())),
    st.sampled_from([10.5, 7.5, 4.5, 1.5, -6.0, 13.5, -13.5, math.nan]),  # between bands, garbage
    st.floats(min_value=-14.0, max_value=14.0),  # noise
)
low_levels = st.one_of(st.sampled_from([-12.0, -11.5, 0.0, -6.0, math.nan]),
                       st.floats(min_value=-14.0, max_value=14.0))
currents = st.one_of(
    st.none(),
    st.sampled_from([0.0, 5.9, 6.0, 10.0, 16.0, 32.0, 51.5, 80.0, 100.0, -1.0, math.nan, math.inf]),
    st.floats(min_value=0.0, max_value=100.0),
)
plugged = (PilotState.B, PilotState.C, PilotState.D)


class CoreMachine(RuleBasedStateMachine):
    @initialize(cfg=configs, t0=st.sampled_from([0.0, 1000.0, 86_400.0]),
                contactor=st.sampled_from(["ok", "ok", "ok", "welded", "stuck_open"]))
    def setup(self, cfg, t0, contactor):
        self.cfg, self.s, self.now = cfg, Connector(), t0
        self.steps = 0
        # the simulated contactor and what the shell last reported of it
        self.sim = contactor
        self.physical = False
        self.reported: bool | None = None
        # the shadow: what the events and actions alone say
        self.closed = False
        self.closed_at = -math.inf
        self.mode, self.duty, self.pwm_off_at = "off", None, -math.inf
        self.last_pilot: tuple[PilotState, float] | None = None
        self.last_diode: bool | None = None
        self.faults: set[Fault] = set()
        self.session = False
        self.limits: dict[str, float] = {}
        self.meter_at = -math.inf
        self.feedback: bool | None = None
        self.feedback_at = -math.inf
        self.shut_down = False
        self.test_asked = False  # a RunSelfTest waits for its answer
        self.cp_short = False  # a reading of E (0 V) since the last valid A or B
        self.out_of_band_since: float | None = None  # readings outside every band since a valid one
        self.last_card: tuple[str, float] | None = None

    # --- the machinery ------------------------------------------------------------------------

    def advance(self, dt: float) -> None:
        """Time passes with no event; the core promised nothing changes before next_deadline."""
        t = self.now + dt
        due = next_deadline(self.cfg, self.s)
        if due is None or t < due:
            assert check_invariant(self.cfg, self.s, t) is None, "changed before next_deadline"
        self.now = t
        if t - self.closed_at >= SIM_SETTLE_S and self.sim != "stuck_open":
            self.physical = self.closed or (self.sim == "welded" and self.physical)
        if self.cfg.has_feedback and self.physical != self.reported:
            self.reported = self.physical
            self.feed(ev.ContactorFeedback(self.physical))

    def feed(self, e) -> list:
        note(f"t={self.now!r}: {e!r}")
        self.steps += 1
        was_closed = self.closed
        self.s, actions = step(self.cfg, self.s, e, self.now)
        note(f"  -> {actions!r}")
        self.shadow_event(e)
        for a in actions:
            self.shadow_action(a)
            if isinstance(a, ev.RunSelfTest):
                assert self.cfg.has_self_test and not self.closed
                self.test_asked = True
        self.check_step(e, actions, was_closed)
        if self.closed:
            event("contactor closed")
        if any(isinstance(a, ev.FaultRaised) for a in actions):
            event("fault raised")
        return actions

    def shadow_event(self, e) -> None:
        if isinstance(e, ev.PilotMeasured) and self.mode != "f":
            state = classify(e.high_v)
            if state is None and self.out_of_band_since is None:
                self.out_of_band_since = self.now
            if state is not None:
                self.out_of_band_since = None
                self.last_pilot = (state, self.now)
                if self.mode == "pwm" and state in plugged:
                    self.last_diode = diode_present(e.low_v)
                if state is PilotState.E:
                    self.cp_short = True
                elif state in (PilotState.A, PilotState.B):
                    self.cp_short = False
        elif isinstance(e, ev.PilotMeasured):  # under our own F only the arrival counts
            self.out_of_band_since = None
        elif isinstance(e, ev.ClearFaults):
            self.cp_short = False
        elif isinstance(e, ev.CardPresented):
            self.last_card = (e.id_tag, self.now)
        elif isinstance(e, ev.PilotUnreadable):
            self.last_pilot = None
        elif isinstance(e, ev.LimitChanged):
            self.limits.pop(e.source, None)
            if e.current_a is not None:
                self.limits[e.source] = 0.0 if math.isnan(e.current_a) else max(0.0, e.current_a)
        elif isinstance(e, ev.MeterSampled) and not any(map(math.isnan, e.current_a)):
            self.meter_at = self.now
        elif isinstance(e, ev.ContactorFeedback) and e.closed != self.feedback:
            self.feedback, self.feedback_at = e.closed, self.now
        elif isinstance(e, ev.Shutdown):
            self.shut_down = True

    def shadow_action(self, a) -> None:
        if isinstance(a, ev.OpenContactor):
            assert self.closed, "opened an open contactor"
            self.closed, self.closed_at = False, self.now
        elif isinstance(a, ev.CloseContactor):
            assert not self.closed, "closed a closed contactor"
            assert self.last_diode is True, "closed without a diode reading under this PWM"
            assert not self.cp_short, "closed straight from E, without a valid A or B first"
            self.closed, self.closed_at = True, self.now
        elif isinstance(a, ev.SetPilot):
            if a.mode == "pwm":
                assert a.duty_pct is not None and 10.0 <= a.duty_pct <= 97.0, a
                assert a.current_a == current_for_duty(a.duty_pct)
                assert a.current_a <= self.allowed() + MAX_ABOVE_A + 1e-9, (a, self.allowed())
                step = self.cfg.duty_step_pct
                assert not step or abs(a.duty_pct / step - round(a.duty_pct / step)) < 1e-6, "duty off the PWM's grid"
                assert not self.cfg.has_meter or self.now - self.meter_at < meter_pause_after_s(self.cfg), \
                    "PWM offered without a fresh meter reading"
                if self.mode != "pwm" and not self.closed:
                    self.last_diode = None  # a new PWM: no reading under it yet
            else:
                assert a.mode in ("off", "f") and a.duty_pct is None, a
                if self.mode == "pwm":
                    self.pwm_off_at = self.now
            if a.mode == "f":
                self.last_diode = None
            self.mode, self.duty = a.mode, a.duty_pct
        elif isinstance(a, ev.FaultRaised):
            self.faults.add(a.fault)
            assert a.lockout == (clears_by(a.fault, self.s.faults[a.fault]) is Clearance.PERSON)
            assert a.lockout or a.fault in (Fault.DIODE, Fault.OVERCURRENT, Fault.CP_SHORT, Fault.RCD)
        elif isinstance(a, ev.FaultsCleared):
            self.faults -= set(a.faults)
        elif isinstance(a, ev.StartSession):
            assert not self.session
            self.session = True
        elif isinstance(a, ev.StopSession):
            assert self.session
            self.session = False

    def allowed(self) -> float:
        return min([self.cfg.max_current_a, *self.limits.values()])

    def check_step(self, e, actions, was_closed) -> None:
        cfg, s, now = self.cfg, self.s, self.now
        kinds = [type(a) for a in actions]
        assert check_invariant(cfg, s, now) is None, check_invariant(cfg, s, now)
        assert s.contactor_closed == self.closed
        assert kinds.count(ev.OpenContactor) <= 1 and kinds.count(ev.CloseContactor) <= 1
        if ev.OpenContactor in kinds:
            assert kinds[0] is ev.OpenContactor, "open must come first"
        if ev.CloseContactor in kinds:
            assert kinds[-1] is ev.CloseContactor, "close must come last"
            assert safety_blocker(cfg, s, now) is None
        if was_closed and ev.FaultRaised in kinds:
            assert kinds[0] is ev.OpenContactor, "a fault opens in the same step, first"
        opened = [a for a in actions if isinstance(a, ev.OpenContactor)]
        if opened and not opened[0].at_once:  # the EV may stop first: only a shutdown of a healthy charge
            assert isinstance(e, ev.Shutdown) and not self.faults and ev.FaultRaised not in kinds, e
            assert self.last_pilot is not None and self.last_pilot[0] in (PilotState.C, PilotState.D)
            assert now - self.last_pilot[1] < cfg.pilot_lost_s, "a soft open on a stale pilot"
            event("soft open")
        if was_closed and isinstance(e, (ev.PilotUnreadable, ev.FaultInputChanged, ev.SelfTestResult,
                                         ev.Shutdown)) and (not getattr(e, "tripped", True) is False):
            assert not self.closed, f"{e!r} left the contactor closed"
        if was_closed and isinstance(e, ev.PilotMeasured):
            state = classify(e.high_v)
            if state in (PilotState.A, PilotState.B, PilotState.E, PilotState.F) and self.mode != "f":
                assert not self.closed, f"state {state} left the contactor closed"
        due = next_deadline(cfg, s)
        assert due is None or due > now, f"deadline {due} not after {now}"
        if self.closed:
            self.check_closed_by_shadow()
        if self.closed and self.out_of_band_since is not None:  # the shell ticks at the deadline
            assert due is not None and due <= self.out_of_band_since + OUT_OF_BAND_OPEN_S, (due, self.out_of_band_since)
        if self.mode == "pwm" and cfg.has_meter:  # a meter going silent ends the offer in time
            assert now - self.meter_at < meter_pause_after_s(cfg)
            assert due is not None and due <= self.meter_at + meter_pause_after_s(cfg)
        if isinstance(e, ev.PilotMeasured) and self.mode != "f" and classify(e.high_v) is PilotState.E:
            assert Fault.CP_SHORT in self.faults, "state E raised no fault"
        expected = self.expected_feedback_fault()
        if expected is not None:
            assert expected in self.faults, f"{expected} not raised"
        assert self.faults == set(s.faults), (self.faults, s.faults)

    def check_closed_by_shadow(self) -> None:
        cfg, now = self.cfg, self.now
        assert not self.faults, self.faults
        assert not self.shut_down
        assert self.last_pilot is not None and now - self.last_pilot[1] <= cfg.pilot_lost_s
        allowed_states = (PilotState.C, PilotState.D) if cfg.ventilation else (PilotState.C,)
        assert self.last_pilot[0] in allowed_states, self.last_pilot
        # the diode was seen when it closed (checked at CloseContactor); while closed, only the
        # DIODE fault (three readings in a row) opens it
        if cfg.has_meter:
            assert now - self.meter_at <= cfg.meter_timeout_s
        if self.mode == "pwm":
            assert self.session and self.allowed() >= MIN_CURRENT_A
            assert current_for_duty(self.duty) <= self.allowed() + MAX_ABOVE_A + 1e-9
        else:
            assert now - self.pwm_off_at < cfg.stop_grace_s, "closed without PWM beyond the grace"
            event("closed inside the stop grace")

    def expected_feedback_fault(self) -> Fault | None:
        if not self.cfg.has_feedback or self.feedback is None or self.feedback == self.closed:
            return None
        if self.now - max(self.closed_at, self.feedback_at) < self.cfg.contactor_settle_s:
            return None
        return Fault.WELDED if self.feedback else Fault.CONTACTOR_MISMATCH

    # --- rules: the outside world ---------------------------------------------------------------

    @rule(high=high_levels, low=low_levels, dt=dts)
    def pilot(self, high, low, dt):
        self.advance(dt)
        self.feed(ev.PilotMeasured(high, low))

    @rule(state=st.sampled_from(list(PilotState)), diode=st.sampled_from([True, True, True, False]),
          dt=st.sampled_from([0.0, 0.05, 0.1, 0.2]))
    def ev_shows(self, state, diode, dt):
        """An EV behind the pilot: a clean reading of `state` given what the EVSE outputs."""
        self.advance(dt)
        high = NOMINAL_V[state]
        low = (-12.0 if diode else 0.0) if self.mode == "pwm" else high
        self.feed(ev.PilotMeasured(-12.0 if self.mode == "f" else high, low))

    @rule(dt=dts)
    def pilot_unreadable(self, dt):
        self.advance(dt)
        self.feed(ev.PilotUnreadable("adc"))

    @precondition(lambda self: self.test_asked)
    @rule(passed=st.sampled_from([True, True, True, False]), dt=st.sampled_from([0.0, 0.05, 0.1, 2.0]))
    def answer_self_test(self, passed, dt):
        """The shell's worker answers the RCD test: usually a pass, sometimes late."""
        self.test_asked = False
        self.advance(dt)
        was_closed = self.closed
        self.feed(ev.SelfTestResult(passed, "" if passed else "no trip"))
        if not passed:
            assert not self.closed and Fault.RCD_SELF_TEST in self.s.faults
        elif self.closed and not was_closed:
            event("closed after a passed self-test")

    @rule(tag=st.sampled_from(TAGS), dt=st.one_of(dts, st.sampled_from([0.3, 1.0, 1.9, 2.1])))
    def card(self, tag, dt):
        self.advance(dt)
        last = self.last_card
        repeat = last is not None and last[0] == tag and self.now < last[1] + self.cfg.card_repeat_s
        actions = self.feed(ev.CardPresented(tag))
        if repeat:  # the same card read again: one tap, whatever else time brought
            assert not any(isinstance(a, (ev.CardRefused, ev.RequestAuthorization)) for a in actions)
            assert ev.StopSession(StopReason.LOCAL) not in actions
            event("card read twice")

    @rule(accepted=st.booleans(), pending=st.booleans(), tag=st.sampled_from(TAGS), dt=dts)
    def answer(self, accepted, pending, tag, dt):
        self.advance(dt)
        tag = self.s.pending_tag if pending and self.s.pending_tag else tag
        self.feed(ev.AuthorizationResult(tag, accepted, "" if accepted else "unknown"))

    @rule(tag=st.sampled_from(TAGS), dt=dts)
    def remote_start(self, tag, dt):
        self.advance(dt)
        self.remote_start_as_predicted(tag)

    def remote_start_as_predicted(self, tag) -> None:
        """remote_start_refusal (what the uplink asks before it answers a CSMS) is the step's own
        outcome: when it says no, nothing starts and the step refuses for that reason; when it
        says yes, the connector is authorized for the tag (the daemon's Accepted)."""
        before = self.s
        refusal = remote_start_refusal(before, tag)
        actions = self.feed(ev.RemoteStart(tag))
        refused = [a for a in actions if isinstance(a, ev.CardRefused)]
        if refusal:
            assert refused == [ev.CardRefused(tag, refusal)]
            assert self.s.session <= before.session  # no session began
            assert self.s.id_tag != tag or before.id_tag == tag  # and no authorization for it
            event(f"remote start refused: {refusal}")
        else:
            assert refused == []
            assert self.s.id_tag == tag and self.s.auth_source == "remote"
            event("remote start accepted")

    @rule(reason=st.sampled_from(list(StopReason)), dt=dts)
    def stop(self, reason, dt):
        self.advance(dt)
        self.feed(ev.StopRequested(reason))

    @rule(source=st.sampled_from(["ocpp", "load", "window"]), current=currents, dt=dts)
    def limit(self, source, current, dt):
        self.advance(dt)
        self.feed(ev.LimitChanged(source, current))

    @rule(factor=st.sampled_from([0.0, 0.5, 1.0, 1.05, 1.2, 2.0, math.nan]), dt=dts)
    def meter(self, factor, dt):
        self.advance(dt)
        a = self.s.offered_a * factor if self.physical or math.isnan(factor) else 0.0
        self.feed(ev.MeterSampled((a, a, a), a * 690.0, 1000))

    @rule(drawn=st.sampled_from([6.5, 16.0, 33.0]), dt=dts)
    def load_management_overcurrent(self, drawn, dt):
        self.advance(dt)
        was_closed = self.closed
        self.feed(ev.OvercurrentDetected(drawn, 6.0))
        if was_closed:  # opened at once, with the fault that says why
            assert not self.closed and Fault.OVERCURRENT in self.faults

    @rule(dt=dts)
    def meter_fails(self, dt):
        self.advance(dt)
        self.feed(ev.MeterFailed("timeout"))

    @rule(tripped=st.booleans(), dt=dts)
    def rcd(self, tripped, dt):
        self.advance(dt)
        self.feed(ev.FaultInputChanged(tripped))


    @rule(closed=st.booleans(), dt=dts)
    def feedback_noise(self, closed, dt):
        self.advance(dt)
        self.feed(ev.ContactorFeedback(closed))

    @rule(operative=st.booleans(), dt=dts)
    def availability(self, operative, dt):
        self.advance(dt)
        self.feed(ev.SetAvailability(operative))

    @rule(tag=st.sampled_from(TAGS), expires_in=st.sampled_from([-1.0, 0.0, 1.0, 60.0, 900.0]), dt=dts)
    def reserve(self, tag, expires_in, dt):
        self.advance(dt)
        self.feed(ev.Reserve(tag, self.now + expires_in))

    @rule(dt=dts)
    def cancel_reservation(self, dt):
        self.advance(dt)
        self.feed(ev.CancelReservation())

    @rule(dt=dts)
    def clear_faults(self, dt):
        self.advance(dt)
        self.feed(ev.ClearFaults())

    @rule(dt=dts)
    def tick(self, dt):
        self.advance(dt)
        self.feed(ev.Tick())

    @rule()
    def tick_at_deadline(self):
        due = next_deadline(self.cfg, self.s)
        if due is not None:
            self.advance(due - self.now)
            self.feed(ev.Tick())

    @rule(which=st.sampled_from(["shutdown", "self_test"] + ["tick"] * 8), dt=dts)
    def rarely(self, which, dt):
        """Events that end everything until a person acts: rarer than the rest."""
        self.advance(dt)
        if which == "shutdown":
            self.feed(ev.Shutdown())
            assert not self.closed
        elif which == "self_test":
            self.feed(ev.SelfTestResult(False, "no trip"))
            assert not self.closed
        else:
            self.feed(ev.Tick())

    @precondition(lambda self: self.closed)
    @rule(dt=st.sampled_from([0.0, 0.05, 0.3, 1.0, 5.0]), at_deadline=st.booleans())
    def shutdown_during_a_charge(self, dt, at_deadline):
        """systemctl stop while the EV draws: it may stop first, unless a fault or a stale pilot
        (also one falling due in the same step: at the core's next deadline)."""
        due = next_deadline(self.cfg, self.s)
        self.advance(due - self.now if at_deadline and due is not None else dt)
        self.feed(ev.Shutdown())
        assert not self.closed

    @rule(tag=st.sampled_from(TAGS), via_card=st.booleans(), state=st.sampled_from([PilotState.C, PilotState.D]))
    def plug_and_start(self, tag, via_card, state):
        """A driver plugs in and starts: the common path, so closed contactors get explored."""
        self.advance(0.01)
        self.feed(ev.PilotMeasured(9.0, -12.0 if self.mode == "pwm" else 9.0))
        a = self.s.offered_a if self.physical else 0.0
        self.feed(ev.MeterSampled((a, a, a), a * 690.0, 1000))
        if via_card:
            self.feed(ev.CardPresented(tag))
            self.feed(ev.AuthorizationResult(tag, True))
        else:
            self.remote_start_as_predicted(tag)
        self.advance(0.05)
        high = NOMINAL_V[state]
        self.feed(ev.PilotMeasured(-12.0 if self.mode == "f" else high,
                                   -12.0 if self.mode == "pwm" else high))

    @rule(seconds=st.sampled_from([0.5, 2.0, 5.5, 6.5, 12.0, 31.0]),
          state=st.sampled_from([PilotState.B, PilotState.C, PilotState.D, PilotState.A]),
          follows=st.booleans(), draw=st.sampled_from([0.0, 0.9, 1.0, 1.5]),
          limit=st.sampled_from(["keep", "keep", None, 0.0, 5.0, 10.0, 32.0]))
    def shell_runs(self, seconds, state, follows, draw, limit):
        """The shell's loop for a while: a pilot reading every 0.2 s, the meter every second, a
        Tick at each deadline. The EV shows `state`; if it follows, it drops to B without PWM.
        It draws `draw` times the offer. Half way, the load manager may change its limit."""
        end, next_meter = self.now + seconds, self.now
        middle = self.now + seconds / 2
        while self.now < end:
            if limit != "keep" and self.now >= middle:
                self.feed(ev.LimitChanged("load", limit))
                limit = "keep"
            due = next_deadline(self.cfg, self.s)
            if due is not None and due < self.now + 0.2:
                self.advance(max(0.0, due - self.now))
                self.feed(ev.Tick())
            self.advance(0.2 - (self.now % 1e-9))
            shown = PilotState.B if follows and self.mode != "pwm" and state is not PilotState.A else state
            high = -12.0 if self.mode == "f" else NOMINAL_V[shown]
            self.feed(ev.PilotMeasured(high, -12.0 if self.mode == "pwm" else high))
            if self.test_asked:  # the shell's worker passes the RCD test within a poll
                self.answer_self_test(True, 0.0)
            if self.now >= next_meter:
                a = self.s.offered_a * draw if self.physical else 0.0
                self.feed(ev.MeterSampled((a, a, a), a * 690.0, 1000))
                next_meter += 1.0

    @invariant()
    def no_past_deadline(self):
        if hasattr(self, "cfg"):
            due = next_deadline(self.cfg, self.s)
            assert due is None or due > self.now


TestCoreInvariant = CoreMachine.TestCase
