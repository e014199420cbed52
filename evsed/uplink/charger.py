"""The charger as the uplink sees it, whatever the OCPP version: the daemon's commands, its
durable event stream (resumed from the uplink's own position, acknowledged once queued), the
authorizer seat, and the uplink's status for `evsed status`, all over the control socket.

Every control-socket request the uplink makes is built here, and only here."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from typing import AsyncIterator, Awaitable, Callable, Protocol, TypeVar

import structlog

from evsed import protocol as p
from evsed.services.link import LinkError, resume_after
from evsed.uplink.metering import energy_wh
from evsed.uplink.state import Queued, State

log = structlog.get_logger("evsed.uplink")
REPORT_S = 5.0  # how often an unchanged uplink status is looked at again
R = TypeVar("R", bound=p.Reply)
Handler = Callable[[p.AuthorizeRequest], Awaitable[p.Authorized]]


@dataclass(frozen=True)
class Reading:
    """What a connector's meter reads, as the uplink sends it: a session's sample, or the daemon's
    status for an idle connector. at: when it was read (None: now)."""

    energy_wh: int | None
    power_w: float | None = None
    current_a: tuple[float, ...] = ()
    voltage_v: tuple[float, ...] = ()
    offered_a: float | None = None
    at: str | None = None

    @classmethod
    def of_sample(cls, s: p.SessionSample) -> Reading:
        return cls(s.energy_wh, s.power_w, tuple(s.current_a), tuple(s.voltage_v), s.offered_a, s.at)


class DaemonLink(Protocol):
    """What the uplink uses of evsed.services.link.Link."""

    hello: p.HelloReply

    async def command(self, command: p.Command[R]) -> R | p.Failure: ...
    def events(self, after: int) -> AsyncIterator[p.Event]: ...
    async def ack(self, seq: int) -> None: ...
    async def authorize_with(self, name: str, timeout_s: float, handler: Handler) -> None: ...


class EventSink(Protocol):
    """The version's mapping of the charger's events to queued messages."""

    def on_event(self, event: p.Event) -> bool:
        """Apply one event; True when made durable with its seq (live events: False)."""
    def seed(self, status: p.ConnectorStatus) -> None:
        """A connector as the daemon's status shows it, at the uplink's first contact."""
    def seed_charger(self, available: bool) -> None:
        """Connector 0, the charger as a whole, at the uplink's first contact."""


class Charger:
    def __init__(self, link: DaemonLink, state: State, *, phases: int, voltage_v: float):
        self.link, self.state = link, state
        hello = link.hello
        self.connectors: list[int] = list(hello.connectors or (1,))
        self.phases = hello.phases or phases
        self.voltage_v = hello.voltage_v or voltage_v
        self._delivered: dict[int, tuple[int, int]] = {}  # connector -> (session, Wh) the CSMS has, to tell
        self._delivered_wake = asyncio.Event()

    async def command(self, command: p.Command[R], timeout_s: float = 10.0) -> R | p.Failure:
        """One daemon command; a failure is a Failure reply, never an exception."""
        try:
            async with asyncio.timeout(timeout_s):
                return await self.link.command(command)
        except (TimeoutError, OSError, ConnectionError, ValueError, LinkError) as exc:
            log.warning("ocpp.daemon_command_failed", cmd=command.LABEL, error=type(exc).__name__)
            return p.Failure(error=f"daemon: {type(exc).__name__}")

    # -- the commands the CSMS's requests become ---------------------------------------------------
    async def remote_start(self, connector: int, id_tag: str, check: bool = False) -> bool:
        """Whether the daemon started it (it refuses a connector in use, unavailable or reserved for
        another tag); check: whether it would now, starting nothing."""
        try:
            command = p.RemoteStart(connector=connector, id_tag=id_tag, check=check)
        except p.WireError:
            return False
        reply = await self.command(command)
        return isinstance(reply, p.StartReply) and reply.result == "Accepted"

    async def start_authorized(self, authorize: Handler, connector: int, id_tag: str) -> bool:
        """A remote start the CSMS was answered Accepted for, with its authorize-first key on
        (1.6 AuthorizeRemoteTxRequests, 2.0.1 AuthorizeRemoteStart): the tag is authorized like a
        card (list, cache, then the CSMS), then the daemon starts it. Whether it did."""
        reply = await authorize(p.AuthorizeRequest(authorize=0, id_tag=id_tag, connector=connector))
        if reply.result != "accept":
            log.info("ocpp.remote_start_refused", connector=connector, reason=reply.reason)
            return False
        if not await self.remote_start(connector, id_tag):  # taken meanwhile (a card, a reservation)
            log.warning("ocpp.remote_start_not_started", connector=connector)
            return False
        return True

    async def remote_stop(self, connector: int, reason: str) -> bool:
        """reason: the daemon's stop reason (remote, deauthorized, other)."""
        reply = await self.command(p.RemoteStop(connector=connector, reason=reason))  # type: ignore[arg-type]
        return isinstance(reply, p.StopReply) and reply.result == "Accepted"

    async def availability(self, connector: int, operative: bool) -> str:
        """Accepted, Scheduled (after the running session) or Rejected."""
        reply = await self.command(p.Availability(connector=connector, operative=operative))
        return reply.result if isinstance(reply, p.AvailabilityReply) else "Rejected"

    async def unlock(self, connector: int) -> str:
        """Unlocked, UnlockFailed or NotSupported (no lock)."""
        reply = await self.command(p.Unlock(connector=connector))
        return reply.result if isinstance(reply, p.UnlockReply) else "UnlockFailed"

    async def reserve(self, connector: int, id_tag: str, until: str, reservation_id: int) -> str:
        """Accepted, Faulted, Occupied, Rejected or Unavailable."""
        try:
            command = p.Reserve(connector=connector, id_tag=id_tag, reservation_id=reservation_id,
                                until=dt.datetime.fromisoformat(until.replace("Z", "+00:00")))
        except ValueError:  # a time or an id out of the protocol's bounds
            return "Rejected"
        reply = await self.command(command)
        return reply.result if isinstance(reply, p.ReserveReply) else "Rejected"

    async def cancel_reservation(self, reservation_id: int) -> bool:
        try:
            command = p.CancelReservation(reservation_id=reservation_id)
        except p.WireError:
            return False
        reply = await self.command(command)
        return isinstance(reply, p.CancelReply) and reply.result == "Accepted"

    async def limit(self, connector: int, current_a: float | None) -> bool:
        """The `ocpp` limit source's value for connector (0: the charger); None lifts it."""
        return isinstance(await self.command(p.Limit(source="ocpp", connector=connector, current_a=current_a)), p.Ok)

    async def restart(self) -> bool:
        """The whole charger restarts (a hard reset): the daemon, through its service manager."""
        return isinstance(await self.command(p.Restart()), p.RestartReply)

    async def status(self) -> p.StatusReply | None:
        """The daemon's status (None when it cannot say)."""
        reply = await self.command(p.Status())
        return reply if isinstance(reply, p.StatusReply) else None

    async def readings(self) -> dict[int, Reading]:
        """connector -> what its meter reads now (a connector without a reading is left out)."""
        reply = await self.status()
        return {c.id: Reading(c.measured.energy_wh, c.measured.power_w, tuple(c.measured.current_a),
                              offered_a=c.offered_a)
                for c in (reply.connectors if reply is not None else ()) if c.measured is not None}

    # -- the event stream, the authorizer seat, the status report ------------------------------------
    async def follow(self, sink: EventSink, queued: Callable[[], None]) -> None:
        """Feed the durable events to sink from the uplink's own position, for ever; each is
        acknowledged once sink made it durable (then queued() is called)."""
        failures = 0
        if not self.state.meta("seq"):
            await self._first_contact(sink)
        while True:
            after = int(self.state.meta("seq", "0"))
            try:
                async for event in self.link.events(after):
                    seq = event.seq
                    if seq is not None and seq <= int(self.state.meta("seq", "0")):
                        continue  # already queued before a restart
                    if sink.on_event(event) and seq is not None:
                        await self.link.ack(seq)  # only once its messages are durable
                        queued()
                    failures = 0
            except (OSError, ConnectionError, ValueError, KeyError) as exc:
                log.warning("ocpp.event_stream_lost", error=f"{type(exc).__name__}: {exc}"[:200])
            failures += 1
            await asyncio.sleep(min(30.0, 0.1 * 2 ** min(failures, 10)))

    async def _first_contact(self, sink: EventSink) -> None:
        """An uplink new to this charger starts its event stream from now: the sessions before it
        were never the CSMS's. Where each connector stands comes from one status request."""
        start = resume_after(self.link.hello)
        reply = await self.status()
        connectors = reply.connectors if reply is not None else ()
        with self.state.transaction():
            for conn in connectors:
                sink.seed(conn)
            # connector 0, the charger as a whole: unavailable when every connector is made so
            sink.seed_charger(not connectors or any(conn.operative for conn in connectors))
            self.state.set_meta("seq", start)
            self.state.set_meta("first_contact", start)  # kept: where this uplink's history begins
        log.info("ocpp.first_contact", after=start, statuses=len(self.state.statuses()))

    async def serve_authorizer(self, name: str, timeout_s: float, handler: Handler) -> None:
        """Answer the daemon's authorization requests as the chain's link `name`, for ever."""
        failures = 0
        while True:
            try:
                await self.link.authorize_with(name, timeout_s, handler)
            except (OSError, ConnectionError, ValueError) as exc:
                log.warning("ocpp.authorizer_lost", error=type(exc).__name__)
            failures += 1
            await asyncio.sleep(min(30.0, 0.1 * 2 ** min(failures, 10)))

    def delivered(self, item: Queued) -> None:
        """The CSMS took a queued message: when it carries a meter reading of a session's
        transaction (1.6 MeterValues, 2.0.1 TransactionEvent), the daemon is told (the newest per
        connector), so that a power cut never closes the session below it in the store."""
        if item.session is None or item.connector is None:
            return
        reading = energy_wh(item.payload.get("meterValue"))
        if reading is None:
            return
        try:
            self._delivered[item.connector] = (int(item.session), reading)
        except ValueError:
            return
        self._delivered_wake.set()

    async def report_delivered(self) -> None:
        """Tell the daemon the readings the CSMS has taken, for ever; never in a CSMS handler's way."""
        while True:
            await self._delivered_wake.wait()
            self._delivered_wake.clear()
            while self._delivered:
                connector, (session, energy_wh) = self._delivered.popitem()
                try:
                    command = p.MeterDelivered(connector=connector, session=session, energy_wh=energy_wh)
                except p.WireError:
                    continue
                await self.command(command)

    async def report(self, status: Callable[[], p.ServiceState]) -> None:
        """Tell the daemon how the uplink is doing, for `evsed status`, whenever it changes."""
        said: p.ServiceState | None = None
        while True:
            now = status()
            if now != said:
                reply = await self.command(p.ServiceStatus(status=now))
                said = now if isinstance(reply, p.Ok) else None
            await asyncio.sleep(REPORT_S if now == said else 1.0)
