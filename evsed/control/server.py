"""The control socket's server inside the safety daemon: JSON lines over a Unix socket (mode 0660).

It owns the transport: a connection cap, idle time-outs, framing and type checks of the
envelope, the event stream (backlog from the outbox, then live) and authorization requests
to services. What a command does is the host's business (the charger shell), so nothing
here waits on the charger, and nothing a client does can stop the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
from pathlib import Path
from typing import Any, Awaitable, Callable, Protocol

import structlog

from evsed.control.client import ControlError, request, socket_path
from evsed.errors import StartError

log = structlog.get_logger("evsed")

VERSION = 1
MAX_REQUEST = 64 * 1024
ACCEPT_BACKLOG = 16
MAX_CONNECTIONS = 64  # each costs a file descriptor; the unit's LimitNOFILE leaves room for devices
IDLE_S = 30.0  # a command connection that says nothing this long is closed (streams are exempt)
MAX_QUEUED = 10_000  # events waiting for a slow subscriber; past that it is dropped (it resumes by seq)
SERVICE_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")


class Host(Protocol):
    """What the server needs of the daemon."""

    def hello(self, service: str) -> dict[str, Any]: ...

    def dispatch(self, req: dict[str, Any]) -> dict[str, Any]: ...

    async def backlog(self, after: int) -> list[dict[str, Any]]: ...

    def ack(self, service: str, seq: int) -> None: ...

    def service_status(self, service: str, status: dict[str, Any]) -> None: ...

    def add_authorizer(self, name: str, timeout_s: float,
                       ask: Callable[[str, int], Awaitable[dict[str, Any]]]) -> Callable[[], None]: ...


class RequestError(ValueError):
    pass


def _int(req: dict[str, Any], key: str, lo: int, hi: int) -> int:
    value = req.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise RequestError(f"{key}: expected an integer {lo}..{hi}")
    return value


class Connection:
    def __init__(self, server: ControlServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.server, self.reader, self.writer = server, reader, writer
        self.service = ""
        self.outbox: asyncio.Queue[dict[str, Any] | None] | None = None  # set once subscribed
        self.sent_seq = 0
        self.streaming = False  # subscribed or an authorizer: long-lived, no idle time-out
        self.asks: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.remove_authorizer: Callable[[], None] | None = None

    def send(self, message: dict[str, Any]) -> None:
        self.writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    async def serve(self) -> None:
        while True:
            try:
                async with asyncio.timeout(None if self.streaming else IDLE_S):
                    line = await self.reader.readline()
            except TimeoutError:
                self.send({"ok": False, "error": f"idle for {IDLE_S:g} s: closing"})
                return
            except ValueError:  # longer than the limit: the rest of it cannot be framed
                self.send({"ok": False, "error": f"request longer than {MAX_REQUEST // 1024} KiB: closing"})
                return
            if not line:
                return
            reply = self.handle(line)
            if reply is not None:
                self.send(reply)
            await self.writer.drain()

    def handle(self, line: bytes) -> dict[str, Any] | None:
        try:
            req = json.loads(line)
            if not isinstance(req, dict):
                raise RequestError("expected a JSON object")
            cmd = req.get("cmd")
            if not isinstance(cmd, str):
                raise RequestError("cmd: expected a string")
            own = getattr(self, "_" + cmd.replace("-", "_"), None) if cmd in LOCAL_COMMANDS else None
            return own(req) if own is not None else self.server.host.dispatch(req)
        except (ValueError, KeyError, TypeError) as exc:  # a malformed request: an error for its sender
            return {"ok": False, "error": str(exc)[:300]}
        except Exception as exc:  # noqa: BLE001 - a client's request must never stop charging
            log.error("control.request_failed", error=repr(exc))
            return {"ok": False, "error": f"internal error: {type(exc).__name__}"}

    # --- commands of the connection itself ---------------------------------------------------
    def _hello(self, req: dict[str, Any]) -> dict[str, Any]:
        version = _int(req, "version", 1, 1_000)
        if version != VERSION:
            return {"ok": False, "error": f"protocol version {version} not spoken here (this daemon: {VERSION})"}
        service = req.get("service", "")
        if not isinstance(service, str) or not SERVICE_NAME.fullmatch(service):
            raise RequestError("service: expected 1..32 letters, digits, - or _")
        self.service = service
        return {"ok": True, "version": VERSION, **self.server.host.hello(service)}

    def _subscribe(self, req: dict[str, Any]) -> dict[str, Any]:
        after = _int(req, "after", 0, 2**62)
        if self.outbox is not None:
            raise RequestError("already subscribed")
        self.outbox = asyncio.Queue()
        self.streaming = True
        self.server.subscribers.add(self)
        self.tasks.append(asyncio.get_running_loop().create_task(self._stream(after)))
        return {"ok": True, "subscribed": True, "after": after}

    async def _stream(self, after: int) -> None:
        assert self.outbox is not None
        self.sent_seq = after
        try:
            while True:  # the backlog from the outbox, in pages, then the live events
                page = await self.server.host.backlog(self.sent_seq)
                for stored in page:
                    self.send(stored)
                    self.sent_seq = stored["seq"]
                await self.writer.drain()
                if len(page) < 1000:
                    break
            while True:
                event = await self.outbox.get()
                if event is None:
                    break
                seq = event.get("seq")
                if seq is not None:
                    if seq <= self.sent_seq:
                        continue  # already sent from the backlog
                    self.sent_seq = seq
                self.send(event)
                await self.writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self.writer.close()

    def _ack(self, req: dict[str, Any]) -> None:
        seq = _int(req, "seq", 0, 2**62)
        if not self.service:
            raise RequestError("ack: say hello with a service name first")
        if seq > self.sent_seq:
            raise RequestError(f"ack: seq {seq} was never sent")
        self.server.host.ack(self.service, seq)
        return None  # acks are not answered: the stream stays a stream

    def _service_status(self, req: dict[str, Any]) -> dict[str, Any]:
        """A service tells how it is doing (connected, queued...); `evsed status` shows it."""
        status = req.get("status")
        if not self.service:
            raise RequestError("service-status: say hello with a service name first")
        if not isinstance(status, dict) or len(json.dumps(status)) > 4096:
            raise RequestError("status: expected a JSON object of at most 4 KiB")
        self.server.host.service_status(self.service, status)
        return {"ok": True}

    def _authorizer(self, req: dict[str, Any]) -> dict[str, Any]:
        name = req.get("name", self.service)
        if not isinstance(name, str) or not SERVICE_NAME.fullmatch(name):
            raise RequestError("name: expected 1..32 letters, digits, - or _")
        timeout = req.get("timeout_s", 5.0)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0.1 <= timeout <= 60:
            raise RequestError("timeout_s: expected a number 0.1..60")
        if self.remove_authorizer is not None:
            raise RequestError("already an authorizer")
        self.streaming = True
        self.remove_authorizer = self.server.host.add_authorizer(name, float(timeout), self._ask)
        return {"ok": True, "authorizer": name}

    async def _ask(self, id_tag: str, connector: int) -> dict[str, Any]:
        ask_id = next(self.server.ask_ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.asks[ask_id] = future
        try:
            self.send({"authorize": ask_id, "id_tag": id_tag, "connector": connector})
            return await future
        finally:
            self.asks.pop(ask_id, None)

    def _authorized(self, req: dict[str, Any]) -> None:
        ask_id = _int(req, "authorize", 0, 2**62)
        future = self.asks.get(ask_id)
        if future is None or future.done():
            raise RequestError(f"authorize {ask_id}: no such request pending")
        future.set_result(req)
        return None

    def close(self) -> None:
        self.server.subscribers.discard(self)
        if self.outbox is not None:
            self.outbox.put_nowait(None)
        if self.remove_authorizer is not None:
            self.remove_authorizer()
        for future in self.asks.values():
            if not future.done():
                future.set_result({"result": "unknown"})
        for task in self.tasks:
            task.cancel()

    def push(self, event: dict[str, Any]) -> bool:
        """Queue an event for this subscriber; False when it is too slow and must go."""
        assert self.outbox is not None
        if self.outbox.qsize() >= MAX_QUEUED:
            return False
        self.outbox.put_nowait(event)
        return True


LOCAL_COMMANDS = frozenset({"hello", "subscribe", "ack", "authorizer", "authorized", "service-status"})


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
                request(runtime_dir, {"cmd": "ping"}, timeout_s=0.5)
            except ControlError:
                path.unlink()  # stale socket of a daemon that died
            else:
                raise StartError(f"another evsed answers on {path}")
        # backlog: the kernel's queue of connections not yet accepted, and (asyncio) how many are
        # accepted in one turn of the loop. Under a flood of clients 100, the default, put a hundred
        # accept callbacks ahead of a fault's open command (p99 7 ms with 1000 clients); 16 keeps
        # it under 2 ms. Clients beyond wait in connect() (blocking) or get EAGAIN, at no cost here.
        self.server = await asyncio.start_unix_server(self._accept, path=str(path), limit=MAX_REQUEST,
                                                      backlog=ACCEPT_BACKLOG)
        os.chmod(path, 0o660)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self.connections) >= MAX_CONNECTIONS:
            self.refused += 1
            if self.refused == 1 or self.refused % 100 == 0:
                log.warning("control.connection_refused", open=len(self.connections), refused=self.refused)
            writer.write(b'{"ok":false,"error":"too many connections"}\n')
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

    def push(self, event: dict[str, Any]) -> None:
        """An event for every subscriber (durable ones carry their seq, live ones None)."""
        for conn in list(self.subscribers):
            if not conn.push(event):
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
