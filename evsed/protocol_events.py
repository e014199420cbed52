"""The charger's events as the control socket streams them (docs/protocol.md, The event stream):
one record per type, which says whether it is durable (kept in the outbox with a seq) or live.
"""

from __future__ import annotations

from evsed.protocol_plans import Currency, Money, Time
from evsed.protocol_types import (
    Amps, AnyConnector, ConnectorState, FaultName, FilePath, IdTag, Label, Mode, Name, Phases, PilotState,
    Sentence, Seq, SessionId, StopReason, Tag, Timestamp, Watts, Wh,
)
from evsed.wire import Annotated, ClassVar, Items, Literal, Range, Record, Text, WireError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from typing import Any


class Event(Record):
    """One thing that happened: `seq` (null for a live event), `at` (UTC), connector 0: the charger."""

    TYPE: ClassVar[str] = ""
    DURABLE: ClassVar[bool] = False

    seq: Seq | None = None
    at: Timestamp
    connector: AnyConnector = 0

    def __init_subclass__(cls, type: str = "", durable: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if type:
            cls.TYPE, cls.DURABLE, cls.LABEL = type, durable, type
            EVENTS[type] = cls

    def to_wire(self) -> dict[str, Any]:
        fields = self.fields_wire()
        head = {"seq": self.seq, "at": fields.pop("at"), "type": self.TYPE, "connector": fields.pop("connector")}
        fields.pop("seq", None)
        return {**head, **fields}


EVENTS: dict[str, type[Event]] = {}


def parse_event(data: object) -> Event:
    """An event from its JSON form; raises WireError (an unknown type too)."""
    kind = data.get("type") if isinstance(data, dict) else None
    cls = EVENTS.get(kind) if isinstance(kind, str) else None
    if cls is None or not isinstance(data, dict):
        raise WireError(f"unknown event type {str(kind)[:40]!r}")
    return cls.from_wire({k: v for k, v in data.items() if k != "type"})


# --- durable: kept in the outbox until every service acknowledged them ----------------------------
class StatusChanged(Event, type="connector.status", durable=True):
    """The OCPP 1.6 ChargePointStatus, and why for people; `ev_connected`: the pilot reads an EV (B, C
    or D), by which OCPP 2.0.1 tells Occupied and EVConnected (a Preparing after a tapped card has none)."""

    status: ConnectorState
    reason: Sentence
    ev_connected: bool = False


class SessionStarted(Event, type="session.started", durable=True):
    """A session began: its id in the session records, the card, how it was authorized (`auth_source`: local, a service's name, remote, free_vend, unanswered)."""

    session: SessionId  # its id in the session records
    id_tag: Tag
    card_name: Label
    group: Label
    auth_source: Annotated[str, Text(32)]  # local, a service's name, remote, free_vend, unanswered
    meter_start_wh: Wh
    meter_start_unknown: bool
    started_at: Timestamp


class SessionStopped(Event, type="session.stopped", durable=True):
    """A session ended, with its totals from its final reading (the first begun after the contactor opened), the figure the store, OCMF and OCPP hold; streamed once its row is committed. `reason` is the OCPP 1.6 Reason in snake case (`power_loss`: found open at the next start after a crash or power cut)."""

    session: SessionId
    id_tag: Tag
    card_name: Label
    group: Label
    auth_source: Annotated[str, Text(32)]
    started_at: Timestamp
    meter_start_wh: Wh
    meter_stop_wh: Wh
    energy_wh: Wh
    peak_power_w: Watts
    reason: StopReason  # OCPP 1.6 Reason in snake case
    stopped_at: Timestamp


class ContactorClosed(Event, type="contactor.closed", durable=True):
    """The contactor closed, offering `offered_a`."""

    offered_a: Amps


class ContactorOpened(Event, type="contactor.opened", durable=True):
    """The contactor opened, and why."""

    reason: Sentence


class FaultRaised(Event, type="fault.raised", durable=True):
    """A fault latched (`lockout`: only a person clears it)."""

    fault: FaultName
    lockout: bool
    detail: Sentence


class FaultCleared(Event, type="fault.cleared", durable=True):
    """These faults cleared."""

    faults: Annotated[tuple[FaultName, ...], Items(16)]


class FaultClearedByPerson(Event, type="fault.cleared_by_person", durable=True):
    """A person cleared the latched faults (`clear-faults`)."""


class CardRefused(Event, type="card.refused", durable=True):
    """A card was refused, and why."""

    id_tag: Tag
    reason: Sentence


class LimitChanged(Event, type="limit.changed", durable=True):
    """A source of the limit chain changed; `allowed_a` is the chain's answer now."""

    source: Name
    current_a: Amps | None  # null: lifted
    allowed_a: Amps  # the chain's answer


class ModeChanged(Event, type="mode.changed", durable=True):
    """The charging mode changed (`by`: `window` when a mode window set it)."""

    mode: Mode
    by: Literal["window"] | None = None  # a mode window set it; absent for the command


class SessionClockCorrected(Event, type="session.clock_corrected", durable=True):
    """A session timed on an unsynchronized clock, moved when the clock stepped."""

    session: SessionId
    by_s: Annotated[float, Range(-1e10, 1e10)]
    started_at: Timestamp
    previous_started_at: Timestamp
    stopped_at: Timestamp | None  # the moved stop, or null when not moved or still running


# --- live: sent to connected services only, never written ----------------------------------------
class SessionSample(Event, type="session.sample"):
    """A meter reading of a running session."""

    session: SessionId
    energy_wh: Wh  # the meter register
    meter_last_wh: Wh
    session_energy_wh: Wh
    power_w: Watts
    peak_power_w: Watts
    current_a: Phases
    voltage_v: Phases
    offered_a: Amps


class SessionMeterStart(Event, type="session.meter_start"):
    """The session's meter start: its first reading, or a replaced meter's (`rebaselined`: a reset or replaced meter became a new baseline during the session)."""

    session: SessionId
    meter_start_wh: Wh
    meter_last_wh: Wh | None = None
    rebaselined: bool = False


class PilotStateChanged(Event, type="pilot.state_changed"):
    """The IEC 61851 state the pilot reads (null: unreadable)."""

    state: PilotState | None  # null: unreadable
    previous: PilotState | None


class PilotOutput(Event, type="pilot.output"):
    """What the pilot output does: PWM at `duty_pct`, steady +12 V (`off`) or -12 V (`f`)."""

    mode: Literal["pwm", "off", "f"]
    duty_pct: Annotated[float, Range(0, 100)] | None
    offered_a: Amps


class CardPresented(Event, type="card.presented"):
    """A card was tapped on this connector."""

    id_tag: Tag


class RcdSelfTest(Event, type="rcd.self_test"):
    """The RCD is being tested before a close."""


class MeterGarbage(Event, type="meter.garbage"):
    """A meter reading judged garbage (the first of a streak)."""

    detail: Sentence


class MeterRebaselined(Event, type="meter.rebaselined"):
    """A reset or replaced meter became the new baseline."""

    previous_wh: Wh
    now_wh: Wh


class SiteSample(Event, type="site.sample"):
    """The site meter at the grid connection."""

    current_a: Phases  # the site meter at the grid connection, per phase
    power_w: Watts


class CardLearned(Event, type="card.learned"):
    """A tap read for `learn`."""

    id_tag: IdTag
    known: bool


class SessionStopByCard(Event, type="session.stop_by_card"):
    """Another card than the session's stopped it (its group's `stop_by`, a master card, any known card in free vend)."""

    id_tag: Tag
    started_by: Tag  # the session's card; id_tag was allowed to stop it


class ConfigReloaded(Event, type="config.reloaded"):
    """The config file was read again."""

    path: FilePath


class PlanChanged(Event, type="plan.changed"):
    """A connector's plan changed what it does (`state` none: it ended), and why."""

    state: Literal["none", "pending", "measuring", "waiting", "charging", "done", "infeasible"]
    reason: Sentence = ""
    energy_wh: Wh | None = None
    delivered_wh: Wh | None = None
    by: Time | None = None
    finish: Time | None = None
    cost: Money | None = None
    currency: Currency | None = None
