"""A fake of the daemon's Link for the uplink's tests (events, commands, authorizer), an Uplink on a
loopback CSMS, and a check that the fake holds to the Link interface the uplink relies on."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from pathlib import Path

import protocol_records as pr
from evsed import protocol as p
from evsed.uplink.v16.uplink import Uplink
from evsed.uplink.settings import Settings
from simulator.csms import CentralSystem


def iso(moment: dt.datetime | None = None) -> str:
    moment = moment or dt.datetime.now(dt.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class FakeLink:
    """The daemon as the uplink sees it: a durable event stream, commands, an authorizer seat; every
    event and reply a record of the protocol, as the real Link hands them."""

    def __init__(self, connectors=(1,), events=None, acked=0):
        self.hello = p.HelloReply(version=1, charger="evsed", connectors=tuple(connectors), phases=3, voltage_v=230,
                                  acked=acked, last_seq=0)
        self.events_list: list[p.Event] = list(events or [])
        self.commands: list[p.Command] = []
        self.replies: dict[str, object] = {}  # cmd -> a reply record, or a function of the command
        self.acked = acked
        self.authorizer = None
        self.changed = asyncio.Condition()

    def emit(self, type: str, connector: int = 1, **fields) -> p.Event:
        """A durable event with the next seq; session.sample and other live events get seq null."""
        durable = [e.seq for e in self.events_list if e.seq is not None]
        seq = None if not p.EVENTS[type].DURABLE else (durable[-1] if durable else 0) + 1
        event = pr.event(type, seq=seq, at=iso(), connector=connector, **fields)
        self.events_list.append(event)
        asyncio.get_running_loop().create_task(self._notify())
        return event

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def wait_for(self, predicate, timeout: float = 10):
        async with self.changed:
            return await asyncio.wait_for(self.changed.wait_for(predicate), timeout)

    async def command(self, command: p.Command):
        self.commands.append(command)
        await self._notify()
        reply = self.replies.get(command.CMD)
        if reply is None:
            return default_reply(command, self.hello.connectors)
        return reply(command) if callable(reply) else reply

    async def events(self, after: int):
        index = 0
        while True:
            async with self.changed:
                await self.changed.wait_for(lambda: len(self.events_list) > index)
            while index < len(self.events_list):
                event = self.events_list[index]
                index += 1
                if event.seq is None or event.seq > after:
                    yield event

    async def ack(self, seq: int) -> None:
        self.acked = max(self.acked, seq)
        await self._notify()

    async def authorize_with(self, name, timeout_s, handler) -> None:
        self.authorizer = handler
        await self._notify()
        await asyncio.Future()

    def sent(self, cmd: str) -> list[p.Command]:
        return [c for c in self.commands if c.CMD == cmd]


def default_reply(command: p.Command, connectors) -> p.Reply:
    """What the daemon answers when all goes well (a test sets link.replies for anything else)."""
    connector = getattr(command, "connector", None) or connectors[0]
    return {
        p.RemoteStart: lambda: p.StartReply(connector=connector, result="Accepted"),
        p.RemoteStop: lambda: p.StopReply(connector=connector, result="Accepted"),
        p.Availability: lambda: p.AvailabilityReply(result="Accepted"),
        p.Reserve: lambda: p.ReserveReply(connector=connector, result="Accepted"),
        p.CancelReservation: lambda: p.CancelReply(result="Accepted"),
        p.Unlock: lambda: p.UnlockReply(result="Unlocked"),
        p.Restart: lambda: p.RestartReply(exit_status=75),
        p.Status: lambda: pr.status(connectors=()),  # none to seed: set link.replies["status"] for them
    }.get(type(command), p.Ok)()


def settings_for(port: int, state_file: Path, **overrides) -> Settings:
    base = dict(url=f"ws://127.0.0.1:{port}/ocpp", identity="CP1", state_file=state_file,
                call_timeout_s=5, reconnect_min_s=0.02, reconnect_max_s=0.2, authorize_timeout_s=3)
    base.update(overrides)
    return Settings(**base)


@contextlib.asynccontextmanager
async def running(csms: CentralSystem, tmp_path: Path, link: FakeLink | None = None, keys=None,
                  port: int | None = None, **overrides):
    """An Uplink on a started CSMS; yields (uplink, link); stops both after."""
    if csms.server is None:
        port = await csms.start(port=port or 0)
    link = link or FakeLink()
    settings = settings_for(port, tmp_path / "ocpp.sqlite", **overrides)
    if keys:
        from types import MappingProxyType
        settings = Settings(**{**settings.__dict__, "keys": MappingProxyType(keys)})
    uplink = Uplink(settings, link)
    task = asyncio.create_task(uplink.run())
    try:
        yield uplink, link
    finally:
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=5)
        assert done, "the uplink did not stop when cancelled"
        uplink.close()
        await csms.stop()


async def booted(csms: CentralSystem, uplink=None, identity: str = "CP1") -> None:
    """Until the CSMS has a booted charge point (and, given uplink, it knows its boot was accepted)."""
    await csms.wait_for(lambda: any(a == "BootNotification" for _, a, _, _ in csms.messages)
                        and identity in csms.stations)
    if uplink is not None:
        await until(lambda: uplink.booted, what="boot accepted")


async def until(predicate, timeout: float = 10, what: str = "") -> None:
    """Await a condition on state that has no notification of its own (polled, bounded)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.01)


def aio(test):
    """Run an async test function on a fresh event loop (pytest fixtures still apply)."""
    import functools

    @functools.wraps(test)
    def run(*args, **kwargs):
        return asyncio.run(asyncio.wait_for(test(*args, **kwargs), 60))
    return run
