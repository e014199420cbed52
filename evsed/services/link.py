"""A service's link to the safety daemon over the control socket (docs/protocol.md).

Commands go over one connection, the event stream over another, authorization requests
over a third, so a long stream never delays a command. Everything crossing it is a record of
evsed.protocol. The stream resumes after a lost connection from the last event handed out, and
after a restart from the last one acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar

import structlog

from evsed import protocol as p
from evsed.control.client import socket_path

log = structlog.get_logger("evsed")
R = TypeVar("R", bound=p.Reply)
Handler = Callable[[p.AuthorizeRequest], Awaitable[p.Authorized]]


def resume_after(hello: p.HelloReply) -> int:
    """Where a service's event stream starts, from the daemon's hello: after the last event it
    acknowledged; a service new to this charger (none acknowledged) starts from now, not with the
    charger's history (a week of sessions an MQTT broker or a CSMS never saw happen)."""
    return hello.acked or hello.last_seq


class LinkError(Exception):
    """The daemon cannot be reached, or answered something that is not the protocol."""


class Closed(LinkError):
    """The daemon closed the connection without answering (idle, or stopping): ask again."""


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    async def send(self, message: p.Command[Any]) -> None:
        self.writer.write(p.encode_line(message.to_wire()))
        await self.writer.drain()

    async def receive(self) -> object:
        try:
            line = await self.reader.readline()
        except ValueError:
            raise LinkError(f"a line longer than {p.MAX_REPLY} bytes from the daemon") from None
        if not line:
            raise Closed("the daemon closed the connection")
        try:
            return p.decode_line(line)
        except p.WireError:
            raise LinkError(f"not JSON from the daemon: {line[:80]!r}") from None

    async def reply(self, command: p.Command[R]) -> R | p.Failure:
        """The reply to command; a closing notice is no reply (the command was not run)."""
        try:
            reply = command.reply(await self.receive())
        except p.WireError as exc:
            raise LinkError(str(exc)) from None
        if isinstance(reply, p.Failure) and reply.code == "closing":
            raise Closed(reply.error)
        return reply

    def close(self) -> None:
        self.writer.close()


class Link:
    def __init__(self, runtime_dir: Path, service: str):
        self.path, self.service = socket_path(runtime_dir), service
        self.hello = p.HelloReply(version=p.VERSION, charger="", connectors=(), phases=1, voltage_v=0,
                                  acked=0, last_seq=0)
        self._commands: _Conn | None = None
        self._lock = asyncio.Lock()
        self._stream: _Conn | None = None

    async def _open(self) -> tuple[_Conn, p.HelloReply]:
        try:
            reader, writer = await asyncio.open_unix_connection(str(self.path), limit=p.MAX_REPLY)
        except OSError as exc:
            raise LinkError(f"control socket {self.path}: {exc.strerror or exc}") from None
        conn = _Conn(reader, writer)
        try:
            await conn.send(p.Hello(service=self.service))
            hello = await conn.reply(p.Hello(service=self.service))
        except (LinkError, ConnectionError) as exc:
            conn.close()
            raise LinkError(f"hello: {exc}") from None
        if isinstance(hello, p.Failure):
            conn.close()
            raise LinkError(f"the daemon refused: {hello.error}")
        return conn, hello

    @classmethod
    async def connect(cls, runtime_dir: Path, service: str) -> Link:
        link = cls(runtime_dir, service)
        link._commands, link.hello = await link._open()
        return link

    async def command(self, command: p.Command[R]) -> R | p.Failure:
        """One command, its reply. A connection the daemon closed (idle, restarted) is made again and
        the command sent once more: a closed connection never answered it."""
        async with self._lock:
            for attempt in (1, 2):
                try:
                    if self._commands is None:
                        self._commands, self.hello = await self._open()
                    await self._commands.send(command)
                    return await self._commands.reply(command)
                except (LinkError, ConnectionError) as exc:
                    if self._commands is not None:
                        self._commands.close()
                    self._commands = None
                    if attempt == 2 or not isinstance(exc, (Closed, ConnectionError)):
                        raise LinkError(str(exc)) from None
        raise AssertionError("unreachable")

    async def events(self, after: int | None = None) -> AsyncIterator[p.Event]:
        """The charger's events with seq > after (default: resume_after), then live ones, for
        ever; a lost connection is re-made with back-off."""
        last = resume_after(self.hello) if after is None else after
        delay = 0.2
        while True:
            try:
                conn, _ = await self._open()
            except LinkError as exc:
                log.warning("link.unreachable", error=str(exc), retry_s=round(delay, 1))
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, 10.0)
                continue
            delay = 0.2
            self._stream = conn
            try:
                await conn.send(p.Subscribe(after=last))
                while True:
                    try:
                        message = p.parse_pushed(await conn.receive())
                    except p.WireError as exc:  # an event this release does not know: skipped, said
                        log.warning("link.unreadable", error=str(exc))
                        continue
                    if isinstance(message, p.Failure):  # about an ack
                        log.warning("link.error", error=message.error)
                    if not isinstance(message, p.Event):
                        continue
                    if message.seq is not None:
                        last = message.seq
                    yield message
            except (LinkError, ConnectionError) as exc:
                log.warning("link.stream_lost", error=str(exc), last_seq=last)
            finally:
                self._stream = None
                conn.close()

    async def ack(self, seq: int) -> None:
        """Acknowledge every event up to seq: the daemon may forget them for this service."""
        if self._stream is not None:
            with contextlib.suppress(ConnectionError):
                await self._stream.send(p.Ack(seq=seq))

    async def authorize_with(self, name: str, timeout_s: float, handler: Handler) -> None:
        """Answer the daemon's authorization requests with handler() until cancelled."""
        delay = 0.2
        while True:
            try:
                conn, _ = await self._open()
                command = p.Authorizer(name=name, timeout_s=timeout_s)
                await conn.send(command)
                reply = await conn.reply(command)
                if isinstance(reply, p.Failure):
                    raise LinkError(f"authorizer refused: {reply.error}")
                delay = 0.2
                tasks: set[asyncio.Task[None]] = set()
                while True:
                    try:
                        message = p.parse_pushed(await conn.receive())
                    except p.WireError as exc:
                        log.warning("link.unreadable", error=str(exc))
                        continue
                    if isinstance(message, p.AuthorizeRequest):
                        task = asyncio.get_running_loop().create_task(self._answer(conn, message, handler))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
            except (LinkError, ConnectionError) as exc:
                log.warning("link.authorizer_lost", error=str(exc), retry_s=round(delay, 1))
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, 10.0)

    @staticmethod
    async def _answer(conn: _Conn, request: p.AuthorizeRequest, handler: Handler) -> None:
        try:
            answer = await handler(request)
        except Exception as exc:  # noqa: BLE001 - a failing handler does not know the card
            log.error("link.authorize_failed", error=repr(exc))
            answer = p.Authorized(authorize=request.authorize, result="unknown")
        with contextlib.suppress(ConnectionError):
            await conn.send(dataclasses.replace(answer, authorize=request.authorize))

    async def close(self) -> None:
        for conn in (self._commands, self._stream):
            if conn is not None:
                conn.close()
