"""Events into the charging core and actions out of it: small immutable values.

They carry what a network uplink needs too (remote start/stop, availability,
reservations, an external current limit, transaction points), so OCPP is an adapter.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class StopReason(str, enum.Enum):
    """Why a session ended; the OCPP 1.6 Reason values in snake case."""

    EV_DISCONNECTED = "ev_disconnected"
    LOCAL = "local"  # the same card tapped again, or a local stop
    REMOTE = "remote"
    DEAUTHORIZED = "deauthorized"
    EMERGENCY_STOP = "emergency_stop"  # a contactor lock-out (welded, mismatch) ended it
    GROUND_FAULT = "ground_fault"  # an RCD lock-out ended it (OCPP 2.0.1 GroundFault)
    POWER_LOSS = "power_loss"  # found open at start after a crash or power cut
    REBOOT = "reboot"  # the daemon was stopped while the session ran
    OTHER = "other"


class Fault(str, enum.Enum):
    """Latched faults. Each opens the contactor at once and blocks closing until cleared."""

    RCD = "rcd"  # residual current trip: retried after a back-off, then locked out
    RCD_SELF_TEST = "rcd_self_test"  # the RCD failed its test before a close: locked out
    WELDED = "welded"  # contactor still closed after an open command: locked out
    CONTACTOR_MISMATCH = "contactor_mismatch"  # did not close when commanded: locked out
    DIODE = "diode"  # no -12 V low level under PWM: cleared when the EV unplugs
    OVERCURRENT = "overcurrent"  # EV drew more than offered beyond the grace: cleared on unplug
    CP_SHORT = "cp_short"  # state E (high level 0 V: CP shorted to PE): cleared by a valid A or B


class Clearance(str, enum.Enum):
    """What clears a latched fault: state.clears_by() tells for a raised one."""

    UNPLUG = "unplug"  # clears by itself when the EV is unplugged (CP_SHORT: when A or B reads again)
    RETRY = "retry"  # clears by itself after a back-off (the RCD, while retries remain)
    PERSON = "person"  # a lock-out: only a person's ClearFaults clears it


FAULT_CLEARANCE = {
    Fault.RCD: Clearance.RETRY,  # until the retries run out: then PERSON
    Fault.RCD_SELF_TEST: Clearance.PERSON,
    Fault.WELDED: Clearance.PERSON,
    Fault.CONTACTOR_MISMATCH: Clearance.PERSON,
    Fault.DIODE: Clearance.UNPLUG,
    Fault.OVERCURRENT: Clearance.UNPLUG,
    Fault.CP_SHORT: Clearance.UNPLUG,
}
LOCKOUT_FAULTS = frozenset(f for f, c in FAULT_CLEARANCE.items() if c is Clearance.PERSON)


class ChargePointErrorCode(str, enum.Enum):
    """The OCPP 1.6 StatusNotification errorCode values evsed sends."""

    NO_ERROR = "NoError"
    GROUND_FAILURE = "GroundFailure"
    OVER_CURRENT_FAILURE = "OverCurrentFailure"
    POWER_METER_FAILURE = "PowerMeterFailure"
    POWER_SWITCH_FAILURE = "PowerSwitchFailure"
    OTHER_ERROR = "OtherError"  # details in vendorErrorCode: evsed sends the Fault value there


# Each fault's errorCode for a Faulted StatusNotification (vendorErrorCode: fault.value). The pilot
# faults are OtherError, not EVCommunicationError: OCPP 1.6 says that one is "not a real error"
# (SuspendedEVSE), while these latch and show Faulted. EVerest maps its pilot fault the same way.
OCPP16_ERROR_CODE = {
    Fault.RCD: ChargePointErrorCode.GROUND_FAILURE,
    Fault.RCD_SELF_TEST: ChargePointErrorCode.GROUND_FAILURE,
    Fault.WELDED: ChargePointErrorCode.POWER_SWITCH_FAILURE,
    Fault.CONTACTOR_MISMATCH: ChargePointErrorCode.POWER_SWITCH_FAILURE,
    Fault.DIODE: ChargePointErrorCode.OTHER_ERROR,
    Fault.OVERCURRENT: ChargePointErrorCode.OVER_CURRENT_FAILURE,
    Fault.CP_SHORT: ChargePointErrorCode.OTHER_ERROR,
}


class PilotOutput(str, enum.Enum):
    """What the EVSE drives on the control pilot."""

    OFF = "off"  # steady +12 V (state X1): no charging offered
    PWM = "pwm"  # 1 kHz PWM whose duty offers a current (state X2)
    F = "f"  # steady -12 V (state F): EVSE not available


class ConnectorStatus(str, enum.Enum):
    """The OCPP 1.6 connector status values, which the core keeps up to date."""

    AVAILABLE = "Available"
    PREPARING = "Preparing"
    CHARGING = "Charging"
    SUSPENDED_EV = "SuspendedEV"
    SUSPENDED_EVSE = "SuspendedEVSE"
    FINISHING = "Finishing"
    RESERVED = "Reserved"
    UNAVAILABLE = "Unavailable"
    FAULTED = "Faulted"


# --- events: what happened -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PilotMeasured:
    """The pilot's high and low plateau in volts (one PWM period)."""

    high_v: float
    low_v: float


@dataclass(frozen=True, slots=True)
class PilotUnreadable:
    """The pilot could not be read (ADC error); detail is for the log."""

    detail: str = ""


@dataclass(frozen=True, slots=True)
class CardPresented:
    """A reader saw a card. The same UID again within CoreConfig.card_repeat_s of its last read
    is the same tap (held on the reader, or read twice) and is ignored."""

    id_tag: str


@dataclass(frozen=True, slots=True)
class AuthorizationResult:
    """The answer to RequestAuthorization: local list, OCPP cache, or the CSMS."""

    id_tag: str
    accepted: bool
    reason: str = ""  # why refused: unknown, expired, blocked, disabled...
    source: str = "local"
    group: str = ""  # the card's group, recorded with the session
    max_current_a: float | None = None  # a per-session ceiling, in force from the session's first second


@dataclass(frozen=True, slots=True)
class RemoteStart:
    """Start for id_tag without a card (OCPP RemoteStartTransaction, already accepted)."""

    id_tag: str


@dataclass(frozen=True, slots=True)
class StopRequested:
    """End the running session: remote stop, deauthorization, a local stop button."""

    reason: StopReason


@dataclass(frozen=True, slots=True)
class LimitChanged:
    """A current ceiling from one source (window, load, ocpp...); None lifts it. detail says why
    (a source with a detail stays listed in the chain while it sets no ceiling); blocked: the
    source forbids charging outright, with the reason."""

    source: str
    current_a: float | None
    detail: str = ""
    blocked: str | None = None


@dataclass(frozen=True, slots=True)
class MeterSampled:
    """A good meter reading: per-phase current in A and the import register in Wh."""

    current_a: tuple[float, ...]
    power_w: float
    energy_wh: int


@dataclass(frozen=True, slots=True)
class OvercurrentDetected:
    """Load management (evsed.core.loadmgmt) saw the EV draw more than its offer past the grace
    of the offer's last lowering while the site was over its budget, or another connector waited
    for that room (IEC 61851-1: an EV follows a lower PWM within 5 s; the EVSE may open when it
    does not). The core raises an overcurrent fault: the contactor opens at once. A per phase."""

    drawn_a: float
    offered_a: float


@dataclass(frozen=True, slots=True)
class MeterFailed:
    """A meter read failed or returned garbage (timeout, NaN, energy going backwards)."""

    detail: str


@dataclass(frozen=True, slots=True)
class FaultInputChanged:
    """The RCD (residual current) input level: tripped or not."""

    tripped: bool


@dataclass(frozen=True, slots=True)
class SelfTestResult:
    """The answer to RunSelfTest: the RCD module tripped on its test current (or did not)."""

    passed: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ContactorFeedback:
    """The auxiliary contact / mains sense of the contactor reads closed or open."""

    closed: bool


@dataclass(frozen=True, slots=True)
class SetAvailability:
    """Operative or inoperative (OCPP ChangeAvailability); takes effect after a session."""

    operative: bool


@dataclass(frozen=True, slots=True)
class Reserve:
    id_tag: str
    expires_at: float  # same clock as `now`


@dataclass(frozen=True, slots=True)
class CancelReservation:
    pass


@dataclass(frozen=True, slots=True)
class ClearFaults:
    """A person cleared the latched faults (lock-outs included) after an inspection."""


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed; timers due at `now` fire."""


@dataclass(frozen=True, slots=True)
class Shutdown:
    """The daemon is stopping: contactor open, session ended."""


Event = (
    PilotMeasured | PilotUnreadable | CardPresented | AuthorizationResult | RemoteStart
    | StopRequested | LimitChanged | MeterSampled | OvercurrentDetected | MeterFailed | FaultInputChanged
    | SelfTestResult | ContactorFeedback | SetAvailability | Reserve | CancelReservation
    | ClearFaults | Tick | Shutdown
)


# --- actions: what the shell must do ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenContactor:
    """Open now. at_once False: a stop that is no fault, where the EV may stop first (a shutdown);
    a driver that can (hal.SoftOpen: an OpenEVSE board's $FS) lets it, others open at once."""

    reason: str
    at_once: bool = True


@dataclass(frozen=True, slots=True)
class CloseContactor:
    pass


@dataclass(frozen=True, slots=True)
class SetPilot:
    """The pilot output; duty_pct with PWM."""

    mode: PilotOutput
    duty_pct: float | None = None
    current_a: float = 0.0


@dataclass(frozen=True, slots=True)
class RunSelfTest:
    """Test the RCD module now (it takes up to seconds: off the event loop), answer SelfTestResult."""


@dataclass(frozen=True, slots=True)
class RequestAuthorization:
    id_tag: str


@dataclass(frozen=True, slots=True)
class CardRefused:
    id_tag: str
    reason: str


@dataclass(frozen=True, slots=True)
class StartSession:
    """A transaction starts: authorized and an EV plugged in."""

    id_tag: str
    auth_source: str


@dataclass(frozen=True, slots=True)
class StopSession:
    reason: StopReason


@dataclass(frozen=True, slots=True)
class PilotChanged:
    """The IEC 61851 state changed (None: not readable)."""

    state: str | None
    previous: str | None


@dataclass(frozen=True, slots=True)
class FaultRaised:
    fault: Fault
    lockout: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class FaultsCleared:
    faults: tuple[Fault, ...]


@dataclass(frozen=True, slots=True)
class StatusChanged:
    status: ConnectorStatus
    reason: str


Action = (
    OpenContactor | CloseContactor | SetPilot | RunSelfTest | RequestAuthorization | CardRefused
    | StartSession | StopSession | PilotChanged | FaultRaised | FaultsCleared | StatusChanged
)
