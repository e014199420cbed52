"""The commands that drive the simulated world of a simulator configuration (`sim` with its
`action`): the EV, the pilot, hardware faults, the card reader, the site, the socket's cable.
"""

from __future__ import annotations

from evsed.protocol_types import Command, ConnectorId, FilePath, IdTag, Ok, Phases, Reply, Watts
from evsed.wire import Annotated, Literal, Range, Text, WireError

class Plug(Command[Ok], cmd="sim", action="plug"):
    """Plug the simulated EV in."""

    connector: ConnectorId | None = None


class Unplug(Command[Ok], cmd="sim", action="unplug"):
    """Unplug it."""

    connector: ConnectorId | None = None


class TapReply(Reply):
    card: IdTag


class Tap(Command[TapReply], cmd="sim", action="tap"):
    """Tap a card on the simulated reader."""

    card: IdTag
    connector: ConnectorId | None = None


class SetEv(Command[Ok], cmd="sim", action="ev"):
    """Change the simulated EV (fields left out stay)."""

    connector: ConnectorId | None = None
    max_current_a: Annotated[float, Range(0, 80)] | None = None
    phases: Annotated[int, Range(1, 3)] | None = None
    wants_energy: bool | None = None
    ventilation: bool | None = None
    asleep: bool | None = None
    obey_pwm: bool | None = None
    ignore_stop: bool | None = None


class InjectFault(Command[Ok], cmd="sim", action="fault"):
    """Inject (or clear) a hardware fault."""

    connector: ConnectorId | None = None
    kind: Annotated[str, Text(32, min=1)]
    clear: bool = False


class ClearFault(Command[Ok], cmd="sim", action="clear-fault"):
    """Clear an injected hardware fault."""

    connector: ConnectorId | None = None
    kind: Annotated[str, Text(32, min=1)]


Volts = Annotated[float, Range(-15, 15)]


class SetPilot(Command[Ok], cmd="sim", action="pilot"):
    """The pilot reads exactly these volts (both), or the EV again (neither)."""

    connector: ConnectorId | None = None
    high_v: Volts | None = None
    low_v: Volts | None = None

    def validate(self) -> None:
        if (self.high_v is None) != (self.low_v is None):
            raise WireError("pilot: give both high_v and low_v, or neither to let the EV speak again")


class SiteReply(Reply):
    house_a: Phases
    pv_w: Watts
    grid_a: Phases
    input: bool
    meter: Literal["ok", "silent"]


SiteAmps = Annotated[float, Range(-1000, 1000)]


class SetSite(Command[SiteReply], cmd="sim", action="site"):
    """The simulated site: house loads per phase, PV, a profile file, the control contact, the meter."""

    l1_a: SiteAmps | None = None
    l2_a: SiteAmps | None = None
    l3_a: SiteAmps | None = None
    pv_w: Annotated[float, Range(0, 1e6)] | None = None
    profile: FilePath | None = None
    input: bool | None = None
    meter: Literal["ok", "silent"] | None = None


class CableReply(Reply):
    ohm: Annotated[float, Range(0, 1e6)] | None = None


class SetCable(Command[CableReply], cmd="sim", action="cable"):
    """The PP resistor of the simulated socket's cable (null: none plugged)."""

    connector: ConnectorId | None = None
    ohm: Annotated[float, Range(0, 1e6)] | None = None
