"""The control socket's server inside the safety daemon: JSON lines over a Unix socket (mode 0660).

It owns the transport: a connection cap, idle time-outs, framing, the protocol's records
(evsed.protocol) on both directions, the event stream (backlog from the outbox, then live) and
authorization requests to services. What a command does is the host's business (the charger
shell), so nothing here waits on the charger, and nothing a client does can stop the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from pathlib import Path
from typing import Any, Awaitable, Callable, Protocol

import structlog

from evsed import protocol as p
from evsed.control.client import ControlError, request, socket_path
from evsed.errors import StartError

log = structlog.get_logger("evsed")

ACCEPT_BACKLOG = 16
MAX_CONNECTIONS = 64  # each costs a file descriptor; the unit's LimitNOFILE leaves room for devices
IDLE_S = 30.0  # a command connection that says nothing this long is closed (streams are exempt)
MAX_QUEUED = 10_000  # events waiting for a slow subscriber; past that it is dropped (it resumes by seq)
BACKLOG_PAGE = 1000


class Host(Protocol):
    """What the server needs of the daemon."""

    def hello(self, service: str | None) -> p.HelloReply: ...

    def dispatch(self, command: p.Command[Any]) -> p.Reply: ...

    async def backlog(self, after: int) -> list[p.Event]: ...

    def ack(self, service: str, seq: int) -> None: ...

    def service_status(self, service: str, status: p.ServiceState) -> None: ...

    def add_authorizer(self, name: str, timeout_s: float,
                       ask: Callable[[str, int], Awaitable[p.Authorized]]) -> Callable[[], None]: ...


class RequestError(ValueError):
    """A command this connection cannot take in its state (an ack before hello, a second subscribe)."""


class Connection:
    def __init__(self, server: ControlServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.server, self.reader, self.writer = server, reader, writer
        self.service = ""
        self.outbox: asyncio.Queue[tuple[int | None, bytes] | None] | None = None  # set once subscribed
        self.sent_seq = 0
        self.streaming = False  # subscribed or an authorizer: long-lived, no idle time-out
        self.asks: dict[int, asyncio.Future[p.Authorized]] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.remove_authorizer: Callable[[], None] | None = None

    def send(self, message: p.Record) -> None:
        line = p.encode_line(message.to_wire())
        if len(line) > p.MAX_REPLY:  # the records' bounds keep every reply under it: a defect if not
            log.error("control.reply_too_large", size=len(line), type=type(message).__name__)
            line = p.encode_line(p.Failure(error="reply too large", code="internal").to_wire())
        self.writer.write(line)

    async def serve(self) -> None:
        while True:
            try:
                async with asyncio.timeout(None if self.streaming else IDLE_S):
                    line = await self.reader.readline()
            except TimeoutError:
                arrived = await self._arrived()
                if arrived is None:  # said to nobody's request: a client reading it asks again elsewhere
                    self.send(p.Failure(error=f"idle for {IDLE_S:g} s: closing", code="closing"))
                    return
                line = arrived
            except ValueError:  # longer than the limit: the rest of it cannot be framed
                self.send(p.Failure(error=f"request longer than {p.MAX_REQUEST // 1024} KiB: closing",
                                    code="closing"))
                return
            if not line:
                return
            reply = self.handle(line)
            if reply is not None:
                self.send(reply)
            await self.writer.drain()

    async def _arrived(self) -> bytes | None:
        """A whole request already read from the socket when the idle time ran out: it is answered,
        never met by the closing notice (issue 26). None when nothing complete is there."""
        try:
            async with asyncio.timeout(0):
                return await self.reader.readline()
        except (TimeoutError, ValueError):
            return None

    def handle(self, line: bytes) -> p.Reply | p.Failure | None:
        try:
            command = p.parse_request(p.decode_line(line))
        except p.UnknownCommand as exc:
            return p.Failure(error=str(exc), code="unknown")
        except p.WireError as exc:  # a malformed request: an error for its sender
            return p.Failure(error=str(exc), code="invalid")
        try:
            local = LOCAL.get(type(command))
            reply = local(self, command) if local is not None else self.server.host.dispatch(command)
        except ValueError as exc:  # the charger cannot do it now (CommandError), or not on this connection
            return p.Failure(error=str(exc), code="failed")
        except Exception as exc:  # noqa: BLE001 - a client's request must never stop charging
            log.error("control.request_failed", cmd=command.LABEL, error=repr(exc))
            return p.Failure(error=f"internal error: {type(exc).__name__}", code="internal")
        return None if isinstance(reply, p.NoReply) else reply

    # --- commands of the connection itself ---------------------------------------------------
    def _hello(self, req: p.Hello) -> p.Reply | p.Failure:
        if req.version != p.VERSION:
            return p.Failure(error=f"protocol version {req.version} not spoken here (this daemon: {p.VERSION})",
                             code="invalid")
        self.service = req.service or ""
        return self.server.host.hello(req.service)

    def _subscribe(self, req: p.Subscribe) -> p.SubscribeReply:
        if self.outbox is not None:
            raise RequestError("already subscribed")
        self.outbox = asyncio.Queue()
        self.streaming = True
        self.server.subscribers.add(self)
        self.tasks.append(asyncio.get_running_loop().create_task(self._stream(req.after)))
        return p.SubscribeReply(after=req.after)

    async def _stream(self, after: int) -> None:
        assert self.outbox is not None
        self.sent_seq = after
        try:
            while True:  # the backlog from the outbox, in pages, then the live events
                page = await self.server.host.backlog(self.sent_seq)
                for stored in page:
                    self.send(stored)
                    self.sent_seq = stored.seq or self.sent_seq
                await self.writer.drain()
                if len(page) < BACKLOG_PAGE:
                    break
            while True:
                item = await self.outbox.get()
                if item is None:
                    break
                seq, line = item
                if seq is not None:
                    if seq <= self.sent_seq:
                        continue  # already sent from the backlog
                    self.sent_seq = seq
                self.writer.write(line)
                await self.writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self.writer.close()

    def _ack(self, req: p.Ack) -> p.NoReply:
        if not self.service:
            raise RequestError("ack: say hello with a service name first")
        if req.seq > self.sent_seq:
            raise RequestError(f"ack: seq {req.seq} was never sent")
        self.server.host.ack(self.service, req.seq)
        return p.NoReply()  # acks are not answered: the stream stays a stream

    def _service_status(self, req: p.ServiceStatus) -> p.Ok:
        """A service tells how it is doing (connected, queued...); `evsed status` shows it."""
        if not self.service:
            raise RequestError("service-status: say hello with a service name first")
        self.server.host.service_status(self.service, req.status)
        return p.Ok()

    def _authorizer(self, req: p.Authorizer) -> p.AuthorizerReply:
        name = req.name or self.service
        if not name:
            raise RequestError("authorizer: give a name, or say hello with a service name first")
        if self.remove_authorizer is not None:
            raise RequestError("already an authorizer")
        self.streaming = True
        self.remove_authorizer = self.server.host.add_authorizer(name, req.timeout_s, self._ask)
        return p.AuthorizerReply(authorizer=name)

    async def _ask(self, id_tag: str, connector: int) -> p.Authorized:
        ask_id = next(self.server.ask_ids)
        future: asyncio.Future[p.Authorized] = asyncio.get_running_loop().create_future()
        self.asks[ask_id] = future
        try:
            self.send(p.AuthorizeRequest(authorize=ask_id, id_tag=id_tag, connector=connector))
            return await future
        finally:
            self.asks.pop(ask_id, None)

    def _authorized(self, req: p.Authorized) -> p.NoReply:
        future = self.asks.get(req.authorize)
        if future is None or future.done():
            raise RequestError(f"authorize {req.authorize}: no such request pending")
        future.set_result(req)
        return p.NoReply()

    def close(self) -> None:
        self.server.subscribers.discard(self)
        if self.outbox is not None:
            self.outbox.put_nowait(None)
        if self.remove_authorizer is not None:
            self.remove_authorizer()
        for ask_id, future in self.asks.items():
            if not future.done():
                future.set_result(p.Authorized(authorize=ask_id, result="unknown"))
        for task in self.tasks:
            task.cancel()

    def push(self, seq: int | None, line: bytes) -> bool:
        """Queue an event for this subscriber; False when it is too slow and must go."""
        assert self.outbox is not None
        if self.outbox.qsize() >= MAX_QUEUED:
            return False
        self.outbox.put_nowait((seq, line))
        return True


LOCAL: dict[type[p.Command[Any]], Callable[[Connection, Any], p.Reply | p.Failure]] = {
    p.Hello: Connection._hello, p.Subscribe: Connection._subscribe, p.Ack: Connection._ack,
    p.Authorizer: Connection._authorizer, p.Authorized: Connection._authorized,
    p.ServiceStatus: Connection._service_status,
}


class ControlServer:
    def __init__(self, host: Host):
        self.host = host
        self.connections: set[Connection] = set()
        self.subscribers: set[Connection] = set()
        self.ask_ids = itertools.count(1)
        self.server: asyncio.AbstractServer | None = None
        self.refused = 0

    async def start(self, runtime_dir: Path) -> None:
        path = socket_path(runtime_dir)
        if path.exists() or path.is_symlink():
            try:
                request(runtime_dir, p.Ping(), timeout_s=0.5)
            except ControlError:
                path.unlink()  # stale socket of a daemon that died
            else:
                raise StartError(f"another evsed answers on {path}")
        # backlog: the kernel's queue of connections not yet accepted, and (asyncio) how many are
        # accepted in one turn of the loop. Under a flood of clients 100, the default, put a hundred
        # accept callbacks ahead of a fault's open command (p99 7 ms with 1000 clients); 16 keeps
        # it under 2 ms. Clients beyond wait in connect() (blocking) or get EAGAIN, at no cost here.
        self.server = await asyncio.start_unix_server(self._accept, path=str(path), limit=p.MAX_REQUEST,
                                                      backlog=ACCEPT_BACKLOG)
        os.chmod(path, 0o660)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self.connections) >= MAX_CONNECTIONS:
            self.refused += 1
            if self.refused == 1 or self.refused % 100 == 0:
                log.warning("control.connection_refused", open=len(self.connections), refused=self.refused)
            writer.write(p.encode_line(p.Failure(error="too many connections", code="busy").to_wire()))
            writer.close()
            return
        conn = Connection(self, reader, writer)
        self.connections.add(conn)
        try:
            await conn.serve()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError, OSError):
            pass
        finally:
            self.connections.discard(conn)
            conn.close()
            writer.close()

    def push(self, event: p.Event) -> None:
        """An event for every subscriber (durable ones carry their seq, live ones None)."""
        if not self.subscribers:
            return
        line = p.encode_line(event.to_wire())  # once, whatever the number of subscribers
        for conn in list(self.subscribers):
            if not conn.push(event.seq, line):
                log.warning("control.subscriber_too_slow", service=conn.service, seq=conn.sent_seq)
                conn.close()

    async def close(self, runtime_dir: Path) -> None:
        if self.server is None:
            return  # never served: the socket (if any) is another daemon's
        self.server.close()
        for conn in list(self.connections):
            conn.close()
            conn.writer.close()
        socket_path(runtime_dir).unlink(missing_ok=True)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await self.server.wait_closed()
