"""The `status` command and its reply: each connector as the charger sees it, the site meter, and
what each service last said of itself (docs/protocol.md, Status). `evsed status` needs only this
module of the protocol (with the types and the plans it names), not the whole of evsed.protocol.
"""

from __future__ import annotations

from collections.abc import Mapping

from evsed.protocol_types import (
    ROLES, Amps, Command, ConnectorId, ConnectorState, Count, FaultName, FilePath, Label, Mode, Name, Phases, PilotState, Reply,
    Sentence, SessionId, Tag, Timestamp, Watts, Wh,
)
from evsed.protocol_plans import CARD_PLANS, PlanNow, WaitingPlan
from evsed.wire import Annotated, Items, Literal, Range, Record, Text, field


class ServiceState(Record):
    """What a service says of itself for `evsed status` (fixed fields: no free map)."""

    connected: bool
    booted: bool | None = None
    queued: Count = 0
    dropped: Count = 0
    malformed: Count = 0
    limits_a: Annotated[Mapping[Annotated[str, Text(2)], Amps | None], Items(100)] = field(default_factory=dict)
    detail: Sentence = ""
    # OCPP 2.0.1 CostUpdated: the running cost of the transaction on each connector, in the CSMS's currency
    costs: Annotated[Mapping[Annotated[str, Text(2)], Annotated[float, Range(-1e9, 1e9)]], Items(100)] = field(
        default_factory=dict)
    at: Timestamp | None = None  # when the daemon heard it


class Measured(Record):
    current_a: Phases
    power_w: Watts
    energy_wh: Wh
    stale: bool


class SessionNow(Record):
    id: SessionId
    id_tag: Tag
    card_name: Label
    group: Label
    started_at: Timestamp
    energy_wh: Wh
    power_w: Watts
    peak_power_w: Watts
    price: Annotated[float, Range(-1e9, 1e9)] | None = None  # the driver's price so far, major units
    currency: Annotated[str, Text(8)] | None = None


class FaultNow(Record):
    fault: FaultName
    detail: Sentence
    clears_by: Literal["unplug", "retry", "person"]
    lockout: bool
    retry_in_s: Annotated[float, Range(0, 1e9)] | None


class Refusal(Record):
    id_tag: Tag
    reason: Sentence
    at: Timestamp
    card_name: Label


class ChainLink(Record):
    """One source of a connector's limit chain, as the daemon's core holds it."""

    source: Name
    current_a: Amps | None  # A per phase; None: the source sets no ceiling now
    detail: Sentence
    blocked: Sentence | None = None  # why the source forbids charging outright
    binding: bool = False  # this source decides the offer (exactly one link binds)


class ConnectorStatus(Record):
    """One connector in a `status` reply (docs/protocol.md, Status)."""

    id: ConnectorId
    status: ConnectorState
    state: PilotState | None
    pilot_output: Literal["pwm", "off", "f"]
    duty_pct: Annotated[float, Range(0, 100)] | None
    allowed_a: Amps
    offered_a: Amps
    contactor: Literal["open", "closed"]
    operative: bool  # False while Unavailable, or while a change to Unavailable waits for the session's end
    measured: Measured | None
    error_code: Annotated[str, Text(32)]
    session: SessionNow | None
    faults: Annotated[tuple[FaultNow, ...], Items(8)]
    reason: Sentence
    pilot_error: Sentence
    meter_error: Sentence
    last_refusal: Refusal | None
    limit_chain: Annotated[tuple[ChainLink, ...], Items(24)]
    offer_a: Amps
    not_charging: Sentence | None
    mode: Mode
    group: Label
    plan: PlanNow | None = None  # its charging plan (evsed.protocol_plans)

    def link(self, source: str) -> ChainLink | None:
        """The chain's link of source (None: the source is not in the chain)."""
        return next((link for link in self.limit_chain if link.source == source), None)

    @property
    def binding(self) -> str:
        """The source that decides the offer ("" in a chain that names none)."""
        return next((link.source for link in self.limit_chain if link.binding), "")

    @property
    def limits(self) -> dict[str, float]:
        """source -> A of every source that sets a ceiling now (a blocking one: 0 A)."""
        out: dict[str, float] = {}
        for link in self.limit_chain:
            if link.blocked is not None:
                out[link.source] = 0.0
            elif link.current_a is not None:
                out[link.source] = link.current_a
        return out


Zone = Annotated[str, Text(64, min=1, pattern=r"[A-Za-z0-9_+/-]+")]  # an IANA time zone: Europe/Berlin


class SiteNow(Record):
    """The site meter's last reading; stale: no good one for its meter timeout, so it is not now's."""

    current_a: Phases
    power_w: Watts
    stale: bool


class StatusReply(Reply):
    charger: Label
    mode: Mode
    card_reader_error: Sentence
    site: SiteNow | None
    connectors: Annotated[tuple[ConnectorStatus, ...], Items(8)]
    services: Annotated[Mapping[Name, ServiceState], Items(8)] = field(default_factory=dict)
    config: FilePath | None = None  # the daemon's config file, absolute: the CLI's fallback when none is named
    timezone: Zone | None = None  # the charger's zone ([charger] timezone): the CLI shows times in it
    card_plans: Annotated[tuple[WaitingPlan, ...], Items(CARD_PLANS)] = ()  # plans waiting for a card's next session
    # the modes the charger can follow: the solar ones need a site meter (a daemon that does not say: all)
    modes: Annotated[tuple[Mode, ...], Items(3)] = ("fast", "solar", "min+solar")

    def connector(self, cid: int) -> ConnectorStatus | None:
        return next((c for c in self.connectors if c.id == cid), None)


class Status(Command[StatusReply], cmd="status", roles=ROLES):
    """Live status of every connector (what `evsed status --json` prints)."""
