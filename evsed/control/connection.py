"""One client of the control socket: its role, its requests and their replies (records of
evsed.protocol), its event stream once subscribed, and its seat in the authorizer chain.

A command the role may not send is refused with a typed error naming the role and the command,
logged once per connection; nothing here waits on the charger.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Protocol

import structlog

from evsed import protocol as p

if TYPE_CHECKING:
    from evsed.control.server import ControlServer

log = structlog.get_logger("evsed")

IDLE_S = 30.0  # a command connection that says nothing this long is closed (streams are exempt)
MAX_QUEUED = 10_000  # events waiting for a slow subscriber; past that it is dropped (it resumes by seq)
MAX_QUEUED_BYTES = 8 * 1024 * 1024  # and their bytes
BACKLOG_PAGE = 1000


class Host(Protocol):
    """What the server needs of the daemon."""

    def hello(self, service: str | None) -> p.HelloReply: ...

    def dispatch(self, command: p.Command[Any], role: str) -> p.Reply: ...

    async def backlog(self, after: int) -> list[p.Event]: ...

    def ack(self, service: str, seq: int) -> None: ...

    def service_status(self, role: str, status: p.ServiceState) -> None: ...

    def add_authorizer(self, name: str, timeout_s: float,
                       ask: Callable[[str, int], Awaitable[p.Authorized]]) -> Callable[[], None]: ...


class Turns:
    """The pace of requests: each role at most its rate (requests per second, a burst of a quarter
    second's), and at most `per_turn` requests handled in one turn of the event loop; the others wait.
    However many clients ask at once, the safety loop's timers come between every few requests and
    the daemon keeps CPU to spare (48 connections asking without pause held the heartbeat for tens
    of milliseconds)."""

    def __init__(self, per_turn: int, rates: dict[str, float]):
        self.per_turn, self.used, self.rates = per_turn, 0, rates
        self._next: asyncio.Future[None] | None = None
        self._tokens = {role: rate / 4 for role, rate in rates.items()}
        self._at = {role: 0.0 for role in rates}

    async def take(self, role: str) -> None:
        loop = asyncio.get_running_loop()
        rate = self.rates.get(role)
        if rate is not None:
            while True:
                now = loop.time()
                self._tokens[role] = min(rate / 4, self._tokens[role] + (now - self._at[role]) * rate)
                self._at[role] = now
                if self._tokens[role] >= 1:
                    self._tokens[role] -= 1
                    break
                await asyncio.sleep((1 - self._tokens[role]) / rate)
        while self.used >= self.per_turn:
            if self._next is None:
                self._next = loop.create_future()
                loop.call_soon(self._turn)
            await asyncio.shield(self._next)
        self.used += 1
        if self.used == 1:  # the first of a turn: the count starts again at the next one
            loop.call_soon(self._turn)

    def _turn(self) -> None:
        self.used = 0
        waiting, self._next = self._next, None
        if waiting is not None and not waiting.done():
            waiting.set_result(None)


class RequestError(ValueError):
    """A command this connection cannot take in its state (an ack before hello, a second subscribe)."""


class Refused(ValueError):
    """The host's own refusal of a role's command (the web page starting for an unknown card)."""


class Connection:
    def __init__(self, server: ControlServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 role: str, uid: int | None):
        self.server, self.reader, self.writer = server, reader, writer
        self.role, self.counted_as, self.uid = role, role, uid  # a quota is counted by the role at connect
        self.service = ""
        self.outbox: asyncio.Queue[tuple[int | None, bytes] | None] | None = None  # set once subscribed
        self.queued_bytes = 0
        self.sent_seq = 0
        self.streaming = False  # subscribed or an authorizer: long-lived, no idle time-out
        self.refusals = 0
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
            await self.server.turns.take(self.role)
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
        why = p.refusal(self.role, command, self.server.roles.granted.get(self.role, frozenset()))
        if why is not None:
            return self.refuse(command, why)
        try:
            local = LOCAL.get(type(command))
            reply = local(self, command) if local is not None else self.server.host.dispatch(command, self.role)
        except Refused as exc:
            return self.refuse(command, str(exc))
        except ValueError as exc:  # the charger cannot do it now (CommandError), or not on this connection
            return p.Failure(error=str(exc), code="failed")
        except Exception as exc:  # noqa: BLE001 - a client's request must never stop charging
            log.error("control.request_failed", cmd=command.LABEL, error=repr(exc))
            return p.Failure(error=f"internal error: {type(exc).__name__}", code="internal")
        return None if isinstance(reply, p.NoReply) else reply

    def refuse(self, command: p.Command[Any], why: str) -> p.Failure:
        self.refusals += 1
        if self.refusals == 1:  # once per client: a flood of refused requests does not flood the log
            log.warning("control.refused", role=self.role, cmd=command.LABEL, uid=self.uid,
                        service=self.service or None, why=why)
        return p.Failure(error=f"refused: {why}", code="refused", role=self.role, cmd=command.LABEL)

    # --- commands of the connection itself ---------------------------------------------------
    def _hello(self, req: p.Hello) -> p.Reply | p.Failure:
        if req.version != p.VERSION:
            return p.Failure(error=f"protocol version {req.version} not spoken here (this daemon: {p.VERSION})",
                             code="invalid")
        if req.service in p.SERVICES:
            self.role = req.service  # the administrator speaking for a service takes that service's role only
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
                self.queued_bytes -= len(line)
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
        """A service tells how it is doing (connected, queued...); `evsed status` shows it, one per role."""
        self.server.host.service_status(self.role, req.status)
        return p.Ok()

    def _authorizer(self, req: p.Authorizer) -> p.AuthorizerReply:
        name = req.name or self.service or self.role
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
            self.remove_authorizer = None
        for ask_id, future in self.asks.items():
            if not future.done():
                future.set_result(p.Authorized(authorize=ask_id, result="unknown"))
        for task in self.tasks:
            task.cancel()

    def push(self, seq: int | None, line: bytes) -> bool:
        """Queue an event for this subscriber; False when it is too slow and must go."""
        assert self.outbox is not None
        if self.outbox.qsize() >= MAX_QUEUED or self.queued_bytes + len(line) > MAX_QUEUED_BYTES:
            return False
        self.queued_bytes += len(line)
        self.outbox.put_nowait((seq, line))
        return True


LOCAL: dict[type[p.Command[Any]], Callable[[Connection, Any], p.Reply | p.Failure]] = {
    p.Hello: Connection._hello, p.Subscribe: Connection._subscribe, p.Ack: Connection._ack,
    p.Authorizer: Connection._authorizer, p.Authorized: Connection._authorized,
    p.ServiceStatus: Connection._service_status,
}
