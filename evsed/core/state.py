"""What the charging core remembers of one connector, and the conditions read off it.

The state and config values, the safety and offer conditions, the invariant and the next
deadline: pure queries that evsed.core's step() and the shell share.
"""

from __future__ import annotations

import enum
import math
from typing import Callable
from dataclasses import dataclass, field

from evsed.core import events as ev
from evsed.core import limits as lm
from evsed.core.events import ChargePointErrorCode, Clearance, ConnectorStatus, Fault, PilotOutput
from evsed.core.pilot import MIN_CURRENT_A, PilotState

CHARGING_STATES = (PilotState.C, PilotState.D)
PLUGGED_STATES = (PilotState.B, PilotState.C, PilotState.D)
RCD_TRIPS_FORGOTTEN_S = 86_400.0  # a day without an RCD trip starts the retry count afresh
SELF_TEST_TIMEOUT_S = 10.0  # an RCD test with no answer by then failed (a hung worker or driver)
DIODE_FAILURES_TO_FAULT = 3  # consecutive readings without the -12 V low level
DIODE_SETTLE_S = 1.0  # after PWM starts, readings may still show the old output (an ADC burst
#                       straddling the switch, a board applying the command): no fault yet
PILOT_INVALID_S = 0.075  # readings outside every band this long: pilot lost. Inside the 100 ms
#                          IEC 61851-1 allows for C->B, leaving room for the shell's tick latency;
#                          a single reading during an EV's resistor switch is debounced


class SelfTestState(str, enum.Enum):
    """The RCD test that the next close needs."""

    NONE = "none"  # not asked for
    RUNNING = "running"  # asked for, no answer yet
    PASSED = "passed"  # passed: the close may go ahead


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """What the core needs to know of the charger. Times in seconds, currents in A."""

    max_current_a: float = 32.0  # hardware: the charger's rating
    cable_a: float | None = None  # a tethered cable's rating (None: a socket, whose PP the policy reads)
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
    card_repeat_s: float = 2.0  # the same UID read again within this of its last read: one tap
    duty_step_pct: float = 0.0  # the pilot PWM's resolution in % (0: exact): the duty lies on its grid


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
    invalid_since: float | None = None  # first of the readings outside every band since a valid one
    invalid_high_v: float | None = None  # the last such reading, for people
    diode_ok: bool = False
    diode_failures: int = 0
    pwm_since: float = -math.inf  # when the output last switched to PWM
    output: PilotOutput = PilotOutput.OFF
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
    faults: dict[Fault, FaultState] = field(default_factory=dict)  # replaced, never mutated
    rcd_tripped: bool = False
    rcd_trips: int = 0
    rcd_tripped_at: float = -math.inf
    limits: dict[str, lm.Limit] = field(default_factory=dict)  # source -> its limit; replaced, never mutated
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
    self_test: SelfTestState = SelfTestState.NONE  # the RCD test the next close needs
    self_test_since: float = -math.inf  # when the running test was asked for
    status: ConnectorStatus = ConnectorStatus.AVAILABLE
    reason: str = ""  # why not charging, for people
    refusal: str = ""  # why the last card was refused
    last_card: tuple[str, float] | None = None  # the last UID read and when: repeats are one tap


def limit_chain(cfg: CoreConfig, s: Connector) -> lm.ChainResult:
    """The connector's limit chain: the hardware's own links and every source's, in CHAIN order.
    Its current_a is what the core offers (A per phase); status, the web page, MQTT and the
    uplink read this same value."""
    own = [lm.hardware(cfg.max_current_a)]
    if cfg.cable_a is not None:
        own.append(lm.cable_fixed(cfg.cable_a))
    return lm.chain(lm.ordered([*own, *s.limits.values()]))


def clears_by(fault: Fault, fs: FaultState) -> Clearance:
    """What clears this raised fault: the EV unplugging, a retry after a back-off, or a person."""
    if fault is Fault.RCD and fs.retry_at is None:  # retries used up
        return Clearance.PERSON
    return ev.FAULT_CLEARANCE[fault]


def locked_out(s: Connector) -> bool:
    """A fault only a person can clear is latched: the connector refuses to start (pilot F)."""
    return any(clears_by(f, fs) is Clearance.PERSON for f, fs in s.faults.items())


def error_code(cfg: CoreConfig, s: Connector, now: float) -> ChargePointErrorCode:
    """The OCPP 1.6 errorCode for the connector's status now: the first fault's, a silent meter's
    (the status is then SuspendedEVSE), else NoError. vendorErrorCode: the fault's value."""
    if s.faults:
        return ev.OCPP16_ERROR_CODE[min(s.faults, key=lambda f: (s.faults[f].since, f.value))]
    if s.session and meter_missing(cfg, s, now):
        return ChargePointErrorCode.POWER_METER_FAILURE
    return ChargePointErrorCode.NO_ERROR


def meter_pause_after_s(cfg: CoreConfig) -> float:
    """Meter silence after which PWM goes off (an EVSE-initiated pause), in s.

    The stop grace earlier than the timeout, so that an EV that keeps drawing is still cut off
    by meter_timeout_s after the last good reading (defaults: PWM off after 4 s, open by 10 s).
    """
    return max(cfg.meter_timeout_s - cfg.stop_grace_s, 0.0)


def meter_missing(cfg: CoreConfig, s: Connector, now: float) -> bool:
    """A fresh meter reading is needed to offer PWM and there is none."""
    return cfg.has_meter and (s.meter_ok_at is None or now >= s.meter_ok_at + meter_pause_after_s(cfg))


def card_repeated(cfg: CoreConfig, s: Connector, id_tag: str, now: float) -> bool:
    """This UID was read here less than card_repeat_s ago: the same tap (the card is held on
    the reader, or read twice). The charger routes such a read back here, where step() ignores it."""
    return s.last_card is not None and s.last_card[0] == id_tag and now < s.last_card[1] + cfg.card_repeat_s


def pilot_fresh(cfg: CoreConfig, s: Connector, now: float) -> bool:
    return s.pilot_seen_at is not None and now < s.pilot_seen_at + cfg.pilot_lost_s


def safety_blocker(cfg: CoreConfig, s: Connector, now: float) -> str | None:
    """Why the contactor may not be closed at all right now (None: it may)."""
    if s.faults:
        return "fault: " + ", ".join(sorted(f.value for f in s.faults))
    if s.shutting_down:
        return "shutting down"
    if s.pilot is None or not pilot_fresh(cfg, s, now):
        if s.invalid_since is not None and s.invalid_high_v is not None and math.isfinite(s.invalid_high_v):
            return f"pilot lost: {s.invalid_high_v:.1f} V is outside every state's band"
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
    if meter_missing(cfg, s, now):  # an OpenEVSE board closes its relay by itself under PWM
        return "meter not responding" + (f": {s.meter_error}" if s.meter_error else "")
    chain = limit_chain(cfg, s)
    if chain.not_charging is not None:
        return chain.not_charging
    if now < s.paused_until:
        return "paused after a current limit"
    if s.wakeup_until is not None:
        return "waking the EV up"
    return None


def start_refusal(s: Connector, id_tag: str) -> str:
    """Why an authorization for id_tag may not begin on this connector now ("": it may)."""
    if not s.operative:
        return "connector unavailable"
    if locked_out(s):
        return "charger locked out by a fault"
    if s.reservation is not None and s.reservation[0] != id_tag:
        return "connector reserved"
    return ""


def remote_start_refusal(s: Connector, id_tag: str) -> str:
    """Why a remote start for id_tag (already accepted) would not start on this connector now ("":
    it would). The one answer the RemoteStart step gives and the uplink asks before it answers a
    CSMS Accepted (OCPP 1.6 RemoteStartTransaction, 2.0.1 RequestStartTransaction)."""
    if s.session:
        return "connector in use"
    return start_refusal(s, id_tag)


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
    EVSE-initiated stop still inside its grace period. And PWM is never offered while a
    fresh meter reading is needed and missing (some boards close by themselves under PWM).
    """
    if s.output is PilotOutput.PWM and meter_missing(cfg, s, now):
        return "PWM offered without a fresh meter reading"
    if not s.contactor_closed:
        return None
    why = safety_blocker(cfg, s, now)
    if why is not None:
        return why
    offering = s.output is PilotOutput.PWM and s.session and limit_chain(cfg, s).current_a >= MIN_CURRENT_A
    if offering and s.duty_pct is not None and s.duty_pct >= 10.0:
        return None
    if s.stopping_since is not None and now < s.stopping_since + cfg.stop_grace_s:
        return None
    return "closed without an offer and outside the stop grace"


def _feedback_due(cfg: CoreConfig, s: Connector) -> float | None:
    if not cfg.has_feedback or s.feedback_closed is None or s.feedback_closed == s.contactor_closed:
        return None
    if (Fault.WELDED if s.feedback_closed else Fault.CONTACTOR_MISMATCH) in s.faults:
        return None
    return max(s.contactor_changed_at, s.feedback_changed_at) + cfg.contactor_settle_s


def _pilot_due(cfg: CoreConfig, s: Connector) -> float | None:
    if s.pilot is None or s.output is PilotOutput.F:
        return None
    times = [s.pilot_seen_at + cfg.pilot_lost_s] if s.pilot_seen_at is not None else []
    if s.invalid_since is not None:
        times.append(s.invalid_since + PILOT_INVALID_S)
    return min(times) if times else None


def _rcd_retry_due(cfg: CoreConfig, s: Connector) -> float | None:
    rcd = s.faults.get(Fault.RCD)
    # a retry waits for the input to clear: that is an event, not a time
    return rcd.retry_at if rcd is not None and not s.rcd_tripped else None


def _overcurrent_due(cfg: CoreConfig, s: Connector) -> float | None:
    if s.overcurrent_since is None or not s.contactor_closed or Fault.OVERCURRENT in s.faults:
        return None
    return max(s.overcurrent_since, s.offered_changed_at) + cfg.current_change_grace_s


def _wakeup_due(cfg: CoreConfig, s: Connector) -> float | None:
    if s.b_since is None or cfg.wakeup_after_s <= 0 or s.wakeups != 0 or not s.session:
        return None
    return s.b_since + cfg.wakeup_after_s


Due = Callable[[CoreConfig, Connector], "float | None"]

# Every timer of the core, each defined once: its name and when it is due. A timer with a name
# in step.py's FIRE changes the state when due (in this order); the others are conditions the
# step re-reads every time (a blocker that ends or begins), due so the shell ticks at that time.
TIMERS: tuple[tuple[str, Due], ...] = (
    ("auth_expiry", lambda cfg, s: s.auth_expires_at if not s.session else None),
    ("reservation_expiry", lambda cfg, s: s.reservation[1] if s.reservation is not None else None),
    ("self_test_timeout", lambda cfg, s: s.self_test_since + SELF_TEST_TIMEOUT_S
     if s.self_test is SelfTestState.RUNNING else None),
    ("rcd_retry", _rcd_retry_due),
    ("feedback_mismatch", _feedback_due),
    ("overcurrent", _overcurrent_due),
    ("pilot_lost", _pilot_due),
    ("pause_over", lambda cfg, s: s.paused_until if s.paused_until > -math.inf else None),
    ("wakeup_over", lambda cfg, s: s.wakeup_until),
    ("wakeup", _wakeup_due),
    ("meter_pause", lambda cfg, s: s.meter_ok_at + meter_pause_after_s(cfg)
     if s.output is PilotOutput.PWM and cfg.has_meter and s.meter_ok_at is not None else None),
    ("stop_grace", lambda cfg, s: s.stopping_since + cfg.stop_grace_s
     if s.contactor_closed and s.stopping_since is not None else None),
    ("meter_timeout", lambda cfg, s: s.meter_ok_at + cfg.meter_timeout_s
     if s.contactor_closed and cfg.has_meter and s.meter_ok_at is not None else None),
)


def next_deadline(cfg: CoreConfig, s: Connector) -> float | None:
    """The earliest time at which a Tick may change something (None: nothing pending)."""
    due = [t for _, when in TIMERS if (t := when(cfg, s)) is not None and t > -math.inf]
    return min(due) if due else None
