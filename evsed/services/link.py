"""A service's link to the safety daemon over the control socket (docs/protocol.md).

Commands go over one connection, the event stream over another, authorization requests
over a third, so a long stream never delays a command. The stream resumes after a lost
connection from the last event handed out, and after a restart from the last one acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import structlog

from evsed.control.client import socket_path

log = structlog.get_logger("evsed")
VERSION = 1
LIMIT = 64 * 1024


def resume_after(hello: dict[str, Any]) -> int:
    """Where a service's event stream starts, from the daemon's hello: after the last event it
    acknowledged; a service new to this charger (none acknowledged) starts from now, not with the
    charger's history (a week of sessions an MQTT broker or a CSMS never saw happen)."""
    return int(hello.get("acked") or hello.get("last_seq") or 0)


class LinkError(Exception):
    """The daemon cannot be reached, or answered something that is not the protocol."""


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    async def send(self, message: dict[str, Any]) -> None:
        self.writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        await self.writer.drain()

    async def receive(self) -> dict[str, Any]:
        line = await self.reader.readline()
        if not line:
            raise LinkError("the daemon closed the connection")
        try:
            message = json.loads(line)
        except ValueError:
            raise LinkError(f"not JSON from the daemon: {line[:80]!r}") from None
        if not isinstance(message, dict):
            raise LinkError("not a JSON object from the daemon")
        return message

    def close(self) -> None:
        self.writer.close()


class Link:
    def __init__(self, runtime_dir: Path, service: str):
        self.path, self.service = socket_path(runtime_dir), service
        self.hello: dict[str, Any] = {}
        self._commands: _Conn | None = None
        self._lock = asyncio.Lock()
        self._stream: _Conn | None = None

    async def _open(self) -> tuple[_Conn, dict[str, Any]]:
        try:
            reader, writer = await asyncio.open_unix_connection(str(self.path), limit=LIMIT)
        except OSError as exc:
            raise LinkError(f"control socket {self.path}: {exc.strerror or exc}") from None
        conn = _Conn(reader, writer)
        await conn.send({"cmd": "hello", "version": VERSION, "service": self.service})
        hello = await conn.receive()
        if not hello.get("ok"):
            conn.close()
            raise LinkError(f"the daemon refused: {hello.get('error')}")
        return conn, hello

    @classmethod
    async def connect(cls, runtime_dir: Path, service: str) -> Link:
        link = cls(runtime_dir, service)
        link._commands, link.hello = await link._open()
        return link

    async def command(self, req: dict[str, Any]) -> dict[str, Any]:
        """One request, its reply; reconnects once when the daemon closed an idle connection."""
        async with self._lock:
            for attempt in (1, 2):
                try:
                    if self._commands is None:
                        self._commands, self.hello = await self._open()
                    await self._commands.send(req)
                    return await self._commands.receive()
                except (LinkError, ConnectionError) as exc:
                    if self._commands is not None:
                        self._commands.close()
                    self._commands = None
                    if attempt == 2:
                        raise LinkError(str(exc)) from None
        raise AssertionError("unreachable")

    async def events(self, after: int | None = None) -> AsyncIterator[dict[str, Any]]:
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
                await conn.send({"cmd": "subscribe", "after": last})
                while True:
                    message = await conn.receive()
                    if "type" not in message:  # a reply: the subscription, or an error about an ack
                        if not message.get("ok", True):
                            log.warning("link.error", error=message.get("error"))
                        continue
                    if message.get("seq") is not None:
                        last = message["seq"]
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
                await self._stream.send({"cmd": "ack", "seq": seq})

    async def authorize_with(self, name: str, timeout_s: float,
                             handler: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]) -> None:
        """Answer the daemon's authorization requests with handler() until cancelled."""
        delay = 0.2
        while True:
            try:
                conn, _ = await self._open()
                await conn.send({"cmd": "authorizer", "name": name, "timeout_s": timeout_s})
                reply = await conn.receive()
                if not reply.get("ok"):
                    raise LinkError(f"authorizer refused: {reply.get('error')}")
                delay = 0.2
                tasks: set[asyncio.Task[None]] = set()
                while True:
                    message = await conn.receive()
                    if "authorize" in message:
                        task = asyncio.get_running_loop().create_task(self._answer(conn, message, handler))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
            except (LinkError, ConnectionError) as exc:
                log.warning("link.authorizer_lost", error=str(exc), retry_s=round(delay, 1))
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, 10.0)

    @staticmethod
    async def _answer(conn: _Conn, message: dict[str, Any],
                      handler: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]) -> None:
        try:
            answer = await handler(message)
        except Exception as exc:  # noqa: BLE001 - a failing handler does not know the card
            log.error("link.authorize_failed", error=repr(exc))
            answer = {"result": "unknown"}
        with contextlib.suppress(ConnectionError):
            await conn.send({**answer, "cmd": "authorized", "authorize": message["authorize"]})

    async def close(self) -> None:
        for conn in (self._commands, self._stream):
            if conn is not None:
                conn.close()
