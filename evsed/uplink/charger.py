"""The charger as the uplink sees it, whatever the OCPP version: the daemon's commands, its
durable event stream (resumed from the uplink's own position, acknowledged once queued), the
authorizer seat, and the uplink's status for `evsed status`, all over the control socket.

Every control-socket request the uplink makes is built here, and only here."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Awaitable, Callable, Protocol

import structlog

from evsed.services.link import resume_after
from evsed.uplink.state import State

log = structlog.get_logger("evsed.uplink")
REPORT_S = 5.0  # how often an unchanged uplink status is looked at again
Event = dict[str, Any]
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class DaemonLink(Protocol):
    """What the uplink uses of evsed.services.link.Link."""

    hello: dict[str, Any]

    async def command(self, req: dict[str, Any]) -> dict[str, Any]: ...
    def events(self, after: int) -> AsyncIterator[Event]: ...
    async def ack(self, seq: int) -> None: ...
    async def authorize_with(self, name: str, timeout_s: float, handler: Handler) -> None: ...


class EventSink(Protocol):
    """The version's mapping of the charger's events to queued messages."""

    def on_event(self, event: Event) -> bool:
        """Apply one event; True when made durable with its seq (live events: False)."""
    def seed(self, connector: int, status: dict[str, Any]) -> None:
        """A connector as the daemon's status shows it, at the uplink's first contact."""


class Charger:
    def __init__(self, link: DaemonLink, state: State, *, phases: int, voltage_v: float):
        self.link, self.state = link, state
        hello = link.hello
        self.connectors: list[int] = [int(c) for c in hello.get("connectors") or [1]]
        self.phases = int(hello.get("phases") or phases)
        self.voltage_v = float(hello.get("voltage_v") or voltage_v)

    async def command(self, request: dict[str, Any], timeout_s: float = 10.0) -> dict[str, Any]:
        """One daemon command; a failure is a reply with ok false, never an exception."""
        try:
            async with asyncio.timeout(timeout_s):
                return await self.link.command(request)
        except (TimeoutError, OSError, ConnectionError, ValueError) as exc:
            log.warning("ocpp.daemon_command_failed", cmd=request.get("cmd"), error=type(exc).__name__)
            return {"ok": False, "error": f"daemon: {type(exc).__name__}"}

    # -- the commands the CSMS's requests become ---------------------------------------------------
    async def remote_start(self, connector: int, id_tag: str) -> bool:
        reply = await self.command({"cmd": "remote-start", "connector": connector, "id_tag": id_tag})
        return bool(reply.get("ok"))

    async def remote_stop(self, connector: int, reason: str) -> bool:
        """reason: the daemon's stop reason (remote, deauthorized, other)."""
        reply = await self.command({"cmd": "remote-stop", "connector": connector, "reason": reason})
        return bool(reply.get("ok"))

    async def availability(self, connector: int, operative: bool) -> str:
        """Accepted, Scheduled (after the running session) or Rejected."""
        reply = await self.command({"cmd": "availability", "connector": connector, "operative": operative})
        return "Scheduled" if reply.get("scheduled") else "Accepted" if reply.get("ok") else "Rejected"

    async def unlock(self, connector: int) -> str:
        """Unlocked, UnlockFailed or NotSupported (no lock)."""
        reply = await self.command({"cmd": "unlock", "connector": connector})
        said = str(reply.get("result") or reply.get("error") or "")
        if "NotSupported" in said:
            return "NotSupported"
        return "Unlocked" if reply.get("ok") else "UnlockFailed"

    async def reserve(self, connector: int, id_tag: str, until: str, reservation_id: int) -> str:
        """Accepted, Faulted, Occupied, Rejected or Unavailable."""
        reply = await self.command({"cmd": "reserve", "connector": connector, "id_tag": id_tag,
                                    "until": until, "reservation_id": reservation_id})
        result = reply.get("result")
        return result if isinstance(result, str) and result in (
            "Accepted", "Faulted", "Occupied", "Rejected", "Unavailable") else "Rejected"

    async def cancel_reservation(self, reservation_id: int) -> bool:
        reply = await self.command({"cmd": "cancel-reservation", "reservation_id": reservation_id})
        return reply.get("result") == "Accepted"

    async def limit(self, connector: int, current_a: float | None) -> bool:
        """The `ocpp` limit source's value for connector (0: the charger); None lifts it."""
        reply = await self.command({"cmd": "limit", "source": "ocpp", "connector": connector,
                                    "current_a": current_a})
        return bool(reply.get("ok"))

    async def restart(self) -> bool:
        """The whole charger restarts (a hard reset): the daemon, through its service manager."""
        return bool((await self.command({"cmd": "restart"})).get("ok"))

    async def status(self) -> dict[str, Any]:
        """The daemon's status ({} when it cannot say)."""
        reply = await self.command({"cmd": "status"})
        return reply if reply.get("ok", True) else {}

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
                    seq = event.get("seq")
                    if seq is not None and int(seq) <= int(self.state.meta("seq", "0")):
                        continue  # already queued before a restart
                    if sink.on_event(event):
                        await self.link.ack(int(event["seq"]))  # only once its messages are durable
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
        with self.state.transaction():
            for conn in reply.get("connectors") or []:
                if isinstance(conn, dict) and isinstance(conn.get("id"), int):
                    sink.seed(conn["id"], conn)
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

    async def report(self, status: Callable[[], dict[str, Any]]) -> None:
        """Tell the daemon how the uplink is doing, for `evsed status`, whenever it changes."""
        said: dict[str, Any] | None = None
        while True:
            now = status()
            if now != said:
                reply = await self.command({"cmd": "service-status", "status": now})
                said = now if reply.get("ok") else None
            await asyncio.sleep(REPORT_S if now == said else 1.0)
