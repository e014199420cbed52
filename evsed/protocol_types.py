"""The control socket's vocabulary: field types with their bounds, the roles, the size caps, and
the bases of every command, reply and event (evsed.protocol declares them; docs/protocol.md).

Standard library only, like the rest of the protocol.
"""

from __future__ import annotations

from evsed.wire import (
    Annotated, ClassVar, Generic, Items, Literal, Range, Record, Text, TypeVar, WireError, args_of, cast, choices,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (wire says why)
if TYPE_CHECKING:
    from typing import Any


class UnknownCommand(WireError):
    """A request naming no command of the protocol."""

VERSION = 1
MAX_REQUEST = 64 * 1024  # one request line, in bytes
MAX_REPLY = 512 * 1024  # one reply or event line: the largest valid status fits (tests/test_protocol.py)

# --- roles ---------------------------------------------------------------------------------------
ADMIN, OCPP, WEB, MQTT, PRICES, READ = "admin", "ocpp", "web", "mqtt", "prices", "read"
ROLES = (ADMIN, OCPP, WEB, MQTT, PRICES, READ)
SERVICES = (OCPP, WEB, MQTT, PRICES)
EVERYONE = frozenset(ROLES)

# --- field types ---------------------------------------------------------------------------------
Name = Annotated[str, Text(32, min=1, pattern=r"[A-Za-z0-9_-]+")]  # a service, a limit source
ConnectorId = Annotated[int, Range(1, 99)]
AnyConnector = Annotated[int, Range(0, 99)]  # 0: the whole charger (every connector)
IdTag = Annotated[str, Text(64, min=1)]  # hex UIDs are at most 20; OCPP idTags 20 (1.6) or 36 (2.0.1)
Tag = Annotated[str, Text(64)]  # a card as the daemon reports it ("" for none)
Label = Annotated[str, Text(64, clip=True)]  # a card's name, a group
Sentence = Annotated[str, Text(200, clip=True)]  # a reason or a detail for people
Timestamp = Annotated[str, Text(40)]  # ISO 8601
FilePath = Annotated[str, Text(1024)]
Amps = Annotated[float, Range(0, 1000)]
Signed = Annotated[float, Range(-1e6, 1e6)]  # A per phase (negative: export), V
Watts = Annotated[float, Range(-1e8, 1e8)]
Wh = Annotated[int, Range(-2**53, 2**53)]
Count = Annotated[int, Range(0, 2**53)]
Seq = Annotated[int, Range(0, 2**62)]
SessionId = Annotated[int, Range(0, 2**62)]
Phases = Annotated[tuple[Signed, ...], Items(3)]
Mode = Literal["fast", "solar", "min+solar"]
PilotState = Literal["A", "B", "C", "D", "E", "F"]
ConnectorState = Literal["Available", "Preparing", "Charging", "SuspendedEV", "SuspendedEVSE", "Finishing",
                         "Reserved", "Unavailable", "Faulted"]
StopReason = Literal["ev_disconnected", "local", "remote", "deauthorized", "emergency_stop", "ground_fault",
                     "power_loss", "reboot", "other"]
FaultName = Annotated[str, Text(32)]
# How the daemon's previous run ended: an orderly stop (or none before), a stop on its own fatal error,
# killed while the machine stayed up (watchdog, kill -9), or gone with the machine (power cut, hard reset).
LastStop = Literal["clean", "error", "killed", "power_loss"]
MODES: tuple[str, ...] = choices(Mode)

# The limit sources the daemon keeps itself: no client sets them.
DAEMON_SOURCES = frozenset({"hardware", "cable", "breaker", "window", "group", "site", "external_cap", "solar",
                            "authorization", "plan"})
# Each service's own limit sources; the administrator sets any other (a person's, a scenario's).
SERVICE_SOURCES = {OCPP: frozenset({"ocpp"}), MQTT: frozenset({"mqtt", "mqtt-pause"}), WEB: frozenset({"web"})}


# --- replies -------------------------------------------------------------------------------------
class Reply(Record):
    """An answer with `ok: true`; its fields are the command's."""

    def to_wire(self) -> dict[str, Any]:
        return {"ok": True, **self.fields_wire()}


class Ok(Reply):
    """Done; nothing to tell."""


class NoReply(Reply):
    """Marks a command that is not answered (ack, authorized): the stream stays a stream."""


FailureCode = Literal["invalid", "unknown", "refused", "failed", "busy", "closing", "internal"]


class Failure(Record):
    """`ok: false`: `error` says why for people; `code` for programs: `invalid` (a field out of its
    type or bounds), `unknown` (no such command), `refused` (not this role's: `role` and `cmd` say
    whose and which), `failed` (the charger cannot do it now), `busy` (too many connections),
    `closing` (the daemon closes this connection), `internal`."""

    error: Sentence
    code: FailureCode = "failed"
    role: Name | None = None
    cmd: Annotated[str, Text(32)] | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"ok": False, **self.fields_wire()}


class DaemonError(Exception):
    """A Failure as an exception, for callers that cannot go on without the reply."""

    def __init__(self, failure: Failure):
        super().__init__(failure.error)
        self.failure = failure


R = TypeVar("R", bound=Reply)


class Command(Record, Generic[R]):
    """A request: `cmd` names it (and `action`, a simulator action); ROLES may send it, and GRANTABLE
    too once the host grants it to them in the daemon's config (never by a service's say)."""

    STRICT = True
    CMD: ClassVar[str] = ""
    ACTION: ClassVar[str] = ""
    ROLES: ClassVar[frozenset[str]] = frozenset({ADMIN})
    GRANTABLE: ClassVar[frozenset[str]] = frozenset()
    REPLY: ClassVar[type[Reply]] = Ok

    def __init_subclass__(cls, cmd: str = "", action: str = "", roles: tuple[str, ...] = (ADMIN,),
                          grantable: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cmd:
            return  # an intermediate base
        cls.CMD, cls.ACTION, cls.ROLES, cls.GRANTABLE = cmd, action, frozenset(roles), frozenset(grantable)
        cls.LABEL = f"sim {action}" if action else cmd
        cls.REPLY = args_of(cls, Command)[0]
        COMMANDS[action or cmd] = cls

    def to_wire(self) -> dict[str, Any]:
        head = {"cmd": self.CMD, **({"action": self.ACTION} if self.ACTION else {})}
        return {**head, **self.fields_wire()}

    def reply(self, data: object) -> R | Failure:
        """This command's reply from its JSON form; raises WireError when it is neither."""
        if isinstance(data, dict) and data.get("ok") is False:
            return Failure.from_wire(data)
        if not isinstance(data, dict) or data.get("ok") is not True:
            raise WireError(f"{self.LABEL}: not a reply: {str(data)[:80]}")
        return cast("R", self.REPLY.from_wire(data, where=f"{self.LABEL} reply"))


COMMANDS: dict[str, type[Command[Any]]] = {}  # by name: the cmd, or a simulator action
