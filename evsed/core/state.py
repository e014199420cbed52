"""What the charging core remembers of one connector, and the conditions read off it.

The state and config values, the safety and offer conditions, the invariant and the next
deadline: pure queries that evsed.core's step() and the shell share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from evsed.core import events as ev
from evsed.core.events import ConnectorStatus, Fault
from evsed.core.pilot import MIN_CURRENT_A, PilotState

AUTH_LIMIT = "authorization"  # the limit source of a per-session ceiling that came with the authorization
CHARGING_STATES = (PilotState.C, PilotState.D)
PLUGGED_STATES = (PilotState.B, PilotState.C, PilotState.D)
RCD_TRIPS_FORGOTTEN_S = 86_400.0  # a day without an RCD trip starts the retry count afresh
SELF_TEST_TIMEOUT_S = 10.0  # an RCD test with no answer by then failed (a hung worker or driver)
DIODE_FAILURES_TO_FAULT = 3  # consecutive readings without the -12 V low level
DIODE_SETTLE_S = 1.0  # after PWM starts, readings may still show the old output (an ADC burst
#                       straddling the switch, a board applying the command): no fault yet


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """What the core needs to know of the charger. Times in seconds, currents in A."""

    max_current_a: float = 32.0  # hardware: min of the charger rating and the cable
    ventilation: bool = False  # state D (ventilation required) may charge
    free_vend: bool = False  # every plugged EV is authorized
    free_vend_id_tag: str = "FREEVEND"
    has_meter: bool = True  # closing needs a fresh meter reading
    has_feedback: bool = False  # the contactor reports its real state
    has_self_test: bool = False  # the RCD module is tested before every close
    auth_timeout_s: float = 60.0  # tap-then-plug: how long an authorization waits for an EV
    stop_grace_s: float = 6.0  # EVSE-initiated stop: EV's time to drop to B before opening
    current_change_grace_s: float = 5.0  # EV's time to follow a lower PWM offer
    overcurrent_margin_a: float = 2.0  # tolerated excess (or 10 %, the larger)
    rcd_retry_s: float = 300.0
    rcd_max_retries: int = 6
    contactor_settle_s: float = 0.5  # feedback may lag the command this long
    pilot_lost_s: float = 0.25  # no valid pilot reading this long: pilot lost
    meter_timeout_s: float = 10.0  # no good meter reading this long: open
    wakeup_after_s: float = 30.0  # EV stays in B under PWM this long: wake-up (0: never)
    wakeup_off_s: float = 4.0  # PWM off for this long during the wake-up
    min_pause_s: float = 0.0  # after a pause for lack of current, resume no sooner


@dataclass(frozen=True, slots=True)
class FaultState:
    since: float
    retry_at: float | None  # None: cleared by a person (lock-out) or by an unplug
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Connector:
    """Everything the core remembers about one connector."""

    pilot: PilotState | None = None  # None: not read yet, lost, or hidden by our own F
    pilot_seen_at: float | None = None
    diode_ok: bool = False
    diode_failures: int = 0
    pwm_since: float = -math.inf  # when the output last switched to PWM
    output: str = "off"  # pilot output: "off" (+12 V), "pwm", "f" (-12 V)
    duty_pct: float | None = None
    offered_a: float = 0.0
    offered_changed_at: float = -math.inf
    contactor_closed: bool = False
    contactor_changed_at: float = -math.inf
    feedback_closed: bool | None = None
    feedback_changed_at: float = -math.inf
    id_tag: str | None = None  # the authorized card or remote id
    auth_source: str = ""
    group: str = ""  # the authorized card's group
    auth_expires_at: float | None = None
    pending_tag: str | None = None  # waiting for an authorization answer
    session: bool = False
    finishing: bool = False  # session ended, EV still plugged
    faults: dict = field(default_factory=dict)  # Fault -> FaultState; replaced, never mutated
    rcd_tripped: bool = False
    rcd_trips: int = 0
    rcd_tripped_at: float = -math.inf
    limits: dict = field(default_factory=dict)  # source -> A; replaced, never mutated
    meter_ok_at: float | None = None
    meter_error: str = ""
    overcurrent_since: float | None = None
    stopping_since: float | None = None
    paused_until: float = -math.inf
    b_since: float | None = None  # PWM offered and EV in B since
    wakeup_until: float | None = None
    wakeups: int = 0
    operative: bool = True
    reservation: tuple[str, float] | None = None
    shutting_down: bool = False
    self_test: str = "none"  # RCD test for the next close: "none", "running", "passed"
    self_test_since: float = -math.inf  # when the running test was asked for
    status: ConnectorStatus = ConnectorStatus.AVAILABLE
    reason: str = ""  # why not charging, for people
    refusal: str = ""  # why the last card was refused


def allowed_current_a(cfg: CoreConfig, s: Connector) -> float:
    """The minimum of the hardware maximum and every current ceiling, in A."""
    return min([cfg.max_current_a, *s.limits.values()])


def locked_out(s: Connector) -> bool:
    return any(f in ev.LOCKOUT_FAULTS or (f is Fault.RCD and st.retry_at is None)
               for f, st in s.faults.items())


def pilot_fresh(cfg: CoreConfig, s: Connector, now: float) -> bool:
    return s.pilot_seen_at is not None and now < s.pilot_seen_at + cfg.pilot_lost_s


def safety_blocker(cfg: CoreConfig, s: Connector, now: float) -> str | None:
    """Why the contactor may not be closed at all right now (None: it may)."""
    if s.faults:
        return "fault: " + ", ".join(sorted(f.value for f in s.faults))
    if s.shutting_down:
        return "shutting down"
    if s.pilot is None or not pilot_fresh(cfg, s, now):
        return "pilot lost"
    if s.pilot is PilotState.D and not cfg.ventilation:
        return "EV requests ventilation (state D), not allowed here"
    if s.pilot not in CHARGING_STATES:
        return f"EV not requesting power (state {s.pilot.value})"
    if not s.diode_ok and not s.contactor_closed:
        # Closing needs the diode under PWM; while closed one noisy reading must not switch the
        # contactor under load: three in a row raise the DIODE fault, which opens.
        return "diode check not passed"
    if cfg.has_meter and (s.meter_ok_at is None or now >= s.meter_ok_at + cfg.meter_timeout_s):
        return "meter not responding" + (f": {s.meter_error}" if s.meter_error else "")
    return None


def offer_blocker(cfg: CoreConfig, s: Connector, now: float) -> str | None:
    """Why no PWM is offered (None: PWM at the allowed current)."""
    if s.faults:
        return "fault: " + ", ".join(sorted(f.value for f in s.faults))
    if s.shutting_down:
        return "shutting down"
    if not s.session:
        if s.finishing:
            return "session ended; unplug the EV"
        if s.id_tag is not None:
            return "authorized; waiting for the EV"
        if s.refusal:
            return f"card refused: {s.refusal}"
        if s.pending_tag is not None:
            return "waiting for authorization"
        if not s.operative:
            return "connector unavailable"
        return "waiting for a card" if s.pilot in PLUGGED_STATES else "no EV"
    if allowed_current_a(cfg, s) < MIN_CURRENT_A:
        return f"current limit {allowed_current_a(cfg, s):g} A is below 6 A"
    if now < s.paused_until:
        return "paused after a current limit"
    if s.wakeup_until is not None:
        return "waking the EV up"
    return None


def reservation_answer(s: Connector) -> str:
    """What a reservation of this connector would get now, in OCPP's words."""
    if s.faults:
        return "Faulted"
    if not s.operative:
        return "Unavailable"
    if s.session or s.finishing or s.pilot in PLUGGED_STATES or s.id_tag is not None or s.pending_tag is not None:
        return "Occupied"
    if s.reservation is not None:
        return "Occupied"
    return "Accepted"


def check_invariant(cfg: CoreConfig, s: Connector, now: float) -> str | None:
    """The safety invariant; returns what is violated, or None.

    A closed contactor implies: state C (or D where allowed), fresh pilot, no latched
    fault, diode check passed, and either (authorized, PWM on, allowed >= 6 A) or an
    EVSE-initiated stop still inside its grace period.
    """
    if not s.contactor_closed:
        return None
    why = safety_blocker(cfg, s, now)
    if why is not None:
        return why
    offering = s.output == "pwm" and s.session and allowed_current_a(cfg, s) >= MIN_CURRENT_A
    if offering and s.duty_pct is not None and s.duty_pct >= 10.0:
        return None
    if s.stopping_since is not None and now < s.stopping_since + cfg.stop_grace_s:
        return None
    return "closed without an offer and outside the stop grace"


def next_deadline(cfg: CoreConfig, s: Connector) -> float | None:
    """The earliest time at which a Tick may change something (None: nothing pending)."""
    times = [s.auth_expires_at, s.wakeup_until]
    if s.reservation is not None:
        times.append(s.reservation[1])
    if not s.rcd_tripped:  # a retry waits for the input to clear: that is an event, not a time
        times += [f.retry_at for f in s.faults.values()]
    if s.pilot is not None and s.pilot_seen_at is not None:
        times.append(s.pilot_seen_at + cfg.pilot_lost_s)
    if s.contactor_closed:
        if s.stopping_since is not None:
            times.append(s.stopping_since + cfg.stop_grace_s)
        if cfg.has_meter and s.meter_ok_at is not None:
            times.append(s.meter_ok_at + cfg.meter_timeout_s)
        if s.overcurrent_since is not None:
            times.append(max(s.overcurrent_since, s.offered_changed_at) + cfg.current_change_grace_s)
    if cfg.has_feedback and s.feedback_closed is not None and s.feedback_closed != s.contactor_closed:
        if (Fault.WELDED if s.feedback_closed else Fault.CONTACTOR_MISMATCH) not in s.faults:
            times.append(max(s.contactor_changed_at, s.feedback_changed_at) + cfg.contactor_settle_s)
    if s.b_since is not None and cfg.wakeup_after_s > 0 and s.wakeups == 0:
        times.append(s.b_since + cfg.wakeup_after_s)
    if s.paused_until > -math.inf:
        times.append(s.paused_until)
    if s.self_test == "running":
        times.append(s.self_test_since + SELF_TEST_TIMEOUT_S)
    due = [t for t in times if t is not None and t > -math.inf]
    return min(due) if due else None
