"""The control socket's server inside the safety daemon: JSON lines over a Unix socket (mode 0660),
and the sockets it hands the services it starts.

It owns the transport: each connection's role (from the peer's uid, or from the channel a started
service was handed), the quotas per role, framing, the event stream's fan-out. What a command does
is the host's business (the charger shell), so nothing here waits on the charger, and nothing a
client does can stop the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
from pathlib import Path

import structlog

from evsed import protocol as p
from evsed.control.client import ControlError, request, socket_path
from evsed.control.connection import Connection, Host, Turns
from evsed.control.roles import Quota, Roles, peer_uid
from evsed.errors import StartError

log = structlog.get_logger("evsed")

ACCEPT_BACKLOG = 16
CONNECT = b"c"  # a started service asks its channel for a connection
REQUESTS_PER_TURN = 4  # handled in one turn of the loop, whoever asks (bench/flood.py)
RATES = {p.ADMIN: 400.0, p.OCPP: 200.0, p.WEB: 200.0, p.MQTT: 200.0, p.PRICES: 200.0, p.READ: 100.0}  # requests/s


class ControlServer:
    def __init__(self, host: Host, roles: Roles):
        self.host, self.roles = host, roles
        self.quota = Quota()
        self.turns = Turns(REQUESTS_PER_TURN, RATES)
        self.connections: set[Connection] = set()
        self.subscribers: set[Connection] = set()
        self.ask_ids = itertools.count(1)
        self.server: asyncio.AbstractServer | None = None
        self.refused = 0
        self._channels: set[asyncio.Task[None]] = set()

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
        uid = peer_uid(writer.get_extra_info("socket"))
        await self.serve(reader, writer, self.roles.of(uid), uid)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, role: str,
                    uid: int | None) -> None:
        if not self.quota.admit(role):
            self.refused += 1
            if self.refused == 1 or self.refused % 100 == 0:
                log.warning("control.connection_refused", role=role, open=dict(self.quota.open), refused=self.refused)
            writer.write(p.encode_line(p.Failure(error=f"too many connections for the {role} role", code="busy",
                                                 role=role).to_wire()))
            writer.close()
            return
        conn = Connection(self, reader, writer, role, uid)
        self.connections.add(conn)
        try:
            await conn.serve()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError, OSError):
            pass
        finally:
            self.connections.discard(conn)
            self.quota.release(conn.counted_as)
            conn.close()
            writer.close()

    # --- the channels of the services `evsed run` starts ---------------------------------------------
    def hand_out(self, role: str) -> socket.socket:
        """A channel for a service this daemon starts, which the child inherits: each byte it writes
        asks for a connection of `role`, which comes back over the channel (SCM_RIGHTS). No uid is
        guessed: the role is the daemon's to say. The caller passes the socket on and closes it."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.setblocking(False)
        task = asyncio.get_running_loop().create_task(self._channel(ours, role), name=f"channel-{role}")
        self._channels.add(task)
        task.add_done_callback(self._channels.discard)
        return theirs

    async def _channel(self, channel: socket.socket, role: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            while await loop.sock_recv(channel, 1) == CONNECT:
                ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                with theirs:
                    try:
                        reader, writer = await asyncio.open_unix_connection(sock=ours, limit=p.MAX_REQUEST)
                    except OSError:
                        ours.close()
                        raise
                    loop.create_task(self.serve(reader, writer, role, None))
                    socket.send_fds(channel, [CONNECT], [theirs.fileno()])
        except (OSError, ConnectionError):
            pass  # the service ended; its connections end on their own
        finally:
            channel.close()

    # --- events ------------------------------------------------------------------------------------
    def push(self, event: p.Event) -> None:
        """An event for every subscriber (durable ones carry their seq, live ones None)."""
        if not self.subscribers:
            return
        line = p.encode_line(event.to_wire())  # once, whatever the number of subscribers
        for conn in list(self.subscribers):
            if not conn.push(event.seq, line):
                log.warning("control.subscriber_too_slow", service=conn.service, role=conn.role, seq=conn.sent_seq)
                conn.close()

    async def close(self, runtime_dir: Path) -> None:
        for task in list(self._channels):
            task.cancel()
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
