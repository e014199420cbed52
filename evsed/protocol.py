"""The control socket's contract (docs/protocol.md): every command and reply as a frozen record
with its bounds and the roles that may send it; the events are in protocol_events, the field
types and the bases in protocol_types. Import this module: it holds them all.

Both ends build and read these records (the daemon's control host, the services, the CLI, the
scenario runner); nothing else builds or reads the wire's dicts. Standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping

from evsed.protocol_events import *  # noqa: F403 - one module holds the whole contract
from evsed.protocol_events import Event, parse_event
from evsed.protocol_plans import *  # noqa: F403
from evsed.protocol_sim import *  # noqa: F403
from evsed.protocol_status import *  # noqa: F403
from evsed.protocol_status import ServiceState
from evsed.protocol_types import *  # noqa: F403
from evsed.protocol_types import (
    ADMIN, COMMANDS, DAEMON_SOURCES, MQTT, OCPP, READ, ROLES, SERVICE_SOURCES, SERVICES, VERSION, WEB,
    AnyConnector, Amps, Command, ConnectorId, Failure, IdTag, Label, Mode, Name, NoReply, Ok, Reply, Sentence,
    LastStop, Seq, Timestamp, UnknownCommand,
)
from evsed.wire import Annotated, Items, Literal, Range, Text
from evsed.wire import Record as Record, WireError as WireError, decode_line as decode_line  # the whole contract here
from evsed.wire import choices as choices, describe as describe, encode_line as encode_line, largest as largest

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (wire says why)
if TYPE_CHECKING:
    import datetime as dt  # wire reads `dt` in a field's type when the record is first built (1 ms of a CLI command)
    from typing import Any


def parse_request(data: object) -> Command[Any]:
    """A request line's JSON value as its command; raises WireError naming what is wrong."""
    if not isinstance(data, dict):
        raise WireError("expected a JSON object")
    cmd, action = data.get("cmd"), data.get("action")
    if not isinstance(cmd, str):
        raise WireError("cmd: expected a string")
    if cmd == "sim":
        cls = COMMANDS.get(action) if isinstance(action, str) else None
        if cls is None or cls.CMD != "sim":
            raise UnknownCommand(f"unknown sim action {str(action)[:40]!r}")
    else:
        cls = COMMANDS.get(cmd)
        if cls is None or cls.ACTION:
            raise UnknownCommand(f"unknown command {cmd[:40]!r}")
    return cls.from_wire({k: v for k, v in data.items() if k not in ("cmd", "action")})


def refusal(role: str, command: Command[Any], granted: frozenset[str] = frozenset()) -> str | None:
    """Why `role` may not send `command` (None: it may): the roles the command names (and those it
    lets the host grant it to: `granted`, the commands the daemon's config grants this role), the
    limit sources each role owns, and the `ocpp` authorizer seat that only the uplink takes."""
    if role not in command.ROLES and not (role in command.GRANTABLE and command.LABEL in granted):
        unless = " unless the host grants it" if role in command.GRANTABLE else ""
        return f"{command.LABEL} is not the {role} role's to send{unless}"
    if isinstance(command, Limit):
        if command.source in DAEMON_SOURCES:
            return f"limit source {command.source} is the daemon's own"
        owner = next((r for r, sources in SERVICE_SOURCES.items() if command.source in sources), ADMIN)
        if owner != role:
            return f"limit source {command.source} is the {owner} role's"
    if isinstance(command, Authorizer) and (command.name or role) == OCPP and role != OCPP:
        return "only the OCPP uplink may be the ocpp authorizer"
    if isinstance(command, Hello) and command.service not in (None, role) and (
            role in SERVICES or (role == READ and command.service in (ADMIN, *SERVICES))):
        return f"service name {command.service} is not the {role} role's"
    return None


def command_named(name: str, fields: Mapping[str, object]) -> Command[Any]:
    """A command by its name (a cmd, or a simulator action as a scenario step says it)."""
    cls = COMMANDS.get(name)
    if cls is None:
        raise UnknownCommand(f"unknown command {name!r}")
    return cls.from_wire(dict(fields))


# --- the connection's own commands --------------------------------------------------------------
class HelloReply(Reply):
    version: Annotated[int, Range(1, 1000)]
    charger: Label
    connectors: Annotated[tuple[ConnectorId, ...], Items(99)]
    phases: Annotated[int, Range(1, 3)]
    voltage_v: Annotated[float, Range(0, 1000)]
    acked: Seq  # the last event this service acknowledged: where a restarted service resumes
    last_seq: Seq  # the newest event: where a service new to this charger starts
    started_at: Timestamp = ""  # when this run of the daemon started: a daemon restart, not a service's own
    last_stop: LastStop = "clean"  # how the daemon's run before this one ended


class Hello(Command[HelloReply], cmd="hello", roles=ROLES):
    """Name the client and the protocol version it speaks."""

    version: Annotated[int, Range(1, 1000)] = VERSION
    service: Name | None = None


class Ping(Command[Ok], cmd="ping", roles=ROLES):
    """Is the daemon there."""


class SubscribeReply(Reply):
    subscribed: bool = True
    after: Seq


class Subscribe(Command[SubscribeReply], cmd="subscribe", roles=ROLES):
    """Turn this connection into the event stream, from the events after `after`."""

    after: Seq = 0


class Ack(Command[NoReply], cmd="ack", roles=ROLES):
    """Every event up to `seq` is the service's own now (not answered)."""

    seq: Seq


class ServiceStatus(Command[Ok], cmd="service-status", roles=SERVICES):
    """A service tells how it is doing; `status` replies carry it under `services`."""

    status: ServiceState


class AuthorizerReply(Reply):
    authorizer: Name


class Authorizer(Command[AuthorizerReply], cmd="authorizer", roles=(ADMIN, OCPP)):
    """Register this connection as a link of the authorizer chain."""

    name: Name | None = None
    timeout_s: Annotated[float, Range(0.1, 60)] = 5.0


class AuthorizeRequest(Record):
    """The daemon asks an authorizer about a card (sent, not a reply)."""

    authorize: Seq
    id_tag: IdTag
    connector: AnyConnector


AuthResult = Literal["accept", "reject", "unknown"]


class Authorized(Command[NoReply], cmd="authorized", roles=(ADMIN, OCPP)):
    """An authorizer's answer to request `authorize` (not answered)."""

    authorize: Seq
    result: AuthResult
    reason: Sentence = ""
    group: Label = ""
    max_current_a: Amps | None = None
    valid_until: Timestamp | None = None
    parent_id_tag: IdTag | None = None


# --- the charger's commands ----------------------------------------------------------------------
class StartReply(Reply):
    connector: ConnectorId
    result: Literal["Accepted", "Rejected"]
    reason: Sentence | None = None


class RemoteStart(Command[StartReply], cmd="remote-start", roles=(ADMIN, OCPP, WEB, MQTT)):
    """Start for `id_tag` without a card (already authorized); `result` says whether it did. With
    `check`, start nothing: `result` says whether it would now (the uplink asks this before it
    answers a CSMS Accepted and authorizes the tag first), `reason` why not."""

    connector: ConnectorId | None = None
    id_tag: IdTag
    check: bool = False


class StopReply(Reply):
    connector: ConnectorId
    result: Literal["Accepted", "Rejected"]


class RemoteStop(Command[StopReply], cmd="remote-stop", roles=(ADMIN, OCPP, WEB, MQTT)):
    """End the running session; `result` Rejected when none runs."""

    connector: ConnectorId | None = None
    reason: Literal["remote", "deauthorized", "local", "other"] = "remote"


class AvailabilityReply(Reply):
    result: Literal["Accepted", "Scheduled"]


class Availability(Command[AvailabilityReply], cmd="availability", roles=(ADMIN, OCPP, WEB, MQTT)):
    """Operative or inoperative (connector 0: all); `result` Scheduled: after the running session.
    Kept across restarts and power cuts, unless `hold` (the updater's hold between sessions)."""

    connector: AnyConnector = 0
    operative: bool
    hold: bool = False


class ReserveReply(Reply):
    connector: ConnectorId | None = None
    result: Literal["Accepted", "Occupied", "Faulted", "Unavailable", "Rejected"]


class Reserve(Command[ReserveReply], cmd="reserve", roles=(ADMIN, OCPP, WEB)):
    """Hold a connector (0: any) for `id_tag` `until` a time (else for `for_s` seconds)."""

    connector: AnyConnector = 0
    id_tag: IdTag
    until: dt.datetime | None = None
    for_s: Annotated[float, Range(0, 7 * 86400)] | None = None
    reservation_id: Annotated[int, Range(0, 2**31 - 1)] = 0

    def validate(self) -> None:
        if self.until is None and self.for_s is None:
            raise WireError("reserve: until or for_s missing")


class CancelReply(Reply):
    result: Literal["Accepted", "Rejected"]
    connector: ConnectorId | None = None


class CancelReservation(Command[CancelReply], cmd="cancel-reservation", roles=(ADMIN, OCPP, WEB)):
    """End a reservation, by its id (or the connector's)."""

    reservation_id: Annotated[int, Range(0, 2**31 - 1)] | None = None
    connector: ConnectorId | None = None


class Limit(Command[Ok], cmd="limit", roles=(ADMIN, OCPP, WEB, MQTT)):
    """One more ceiling in the limit chain, per phase in A (null: lifted), from `source`."""

    source: Name
    connector: AnyConnector = 0
    current_a: Amps | None


class ModeReply(Reply):
    mode: Mode


class SetMode(Command[ModeReply], cmd="mode", roles=(ADMIN, WEB, MQTT)):
    """The charger's charging mode until the next mode window boundary; one it cannot follow (the solar
    ones without a site meter: status `modes`) is refused with the reason."""

    mode: Mode


class LearnReply(Reply):
    waiting: bool


class Learn(Command[LearnReply], cmd="learn", roles=(ADMIN, WEB)):
    """The next tap within `timeout_s` is read for `evsed cards learn`, not used for charging."""

    timeout_s: Annotated[float, Range(1, 600)] = 60.0


class LearnedCard(Record):
    uid: IdTag
    known: bool
    name: Label
    group: Label
    toml: Annotated[str, Text(400, printable=False)]  # a ready-to-paste [[card]] block


class LearnedReply(Reply):
    waiting: bool
    card: LearnedCard | None


class Learned(Command[LearnedReply], cmd="learned", roles=(ADMIN, WEB)):
    """The card the last `learn` read, or still waiting."""


class AddCardReply(Reply):
    result: Literal["Accepted"]
    toml: Annotated[str, Text(400, printable=False)]  # the [[card]] table appended to the config file


class AddCard(Command[AddCardReply], cmd="add-card", roles=(ADMIN, WEB)):
    """Add the card last tapped for `learn` to the config file (a [[card]] table after the rest,
    which stays as written) and reload it; the card charges as soon as the file is written."""

    uid: IdTag
    name: Label
    group: Label = ""


class ReloadReply(Reply):
    result: Literal["Accepted", "Rejected"]
    restart_needed: Annotated[tuple[Annotated[str, Text(64)], ...], Items(64)] = ()
    reason: Sentence | None = None


class Reload(Command[ReloadReply], cmd="reload"):
    """Read the config file again; a running session continues."""


class ConnectorReply(Reply):
    connector: ConnectorId


class ClearFaults(Command[ConnectorReply], cmd="clear-faults", roles=(ADMIN, WEB)):
    """A person cleared latched faults after an inspection."""

    connector: ConnectorId | None = None


class RestartReply(Reply):
    exit_status: Annotated[int, Range(0, 255)]


class Restart(Command[RestartReply], cmd="restart", roles=(ADMIN, OCPP), grantable=(MQTT,)):
    """End every session (`reboot`) and exit 75 so that the service manager starts the daemon again.
    The administrator's, and the uplink's (a hard reset); the MQTT service's only when the host grants
    it (`[mqtt] restart_button = true`: Home Assistant's restart button)."""


class UnlockReply(Reply):
    result: Literal["Unlocked", "UnlockFailed", "NotSupported"]


class Unlock(Command[UnlockReply], cmd="unlock", roles=(ADMIN, OCPP)):
    """Release the connector lock (NotSupported: no lock backend yet)."""

    connector: ConnectorId | None = None


class MeterDelivered(Command[Ok], cmd="meter-delivered", roles=(OCPP,)):
    """The uplink delivered this meter reading (the import register, Wh) of session `session` to the
    CSMS: the daemon makes it durable at once when above its last checkpoint, so a power cut never
    closes the session below a reading the CSMS already has. Readings above the daemon's own are cut to it."""

    connector: ConnectorId
    session: SessionId
    energy_wh: Wh


def parse_pushed(data: object) -> Event | AuthorizeRequest | Failure | None:
    """What the daemon writes on a stream or authorizer connection unasked: an event, an
    authorization request, a failure (of an ack); None for a reply that says ok."""
    if isinstance(data, dict) and "type" in data:
        return parse_event(data)
    if isinstance(data, dict) and "authorize" in data:
        return AuthorizeRequest.from_wire(data)
    if isinstance(data, dict) and data.get("ok") is False:
        return Failure.from_wire(data)
    if isinstance(data, dict) and data.get("ok") is True:
        return None
    raise WireError(f"not a message of the protocol: {str(data)[:80]}")
