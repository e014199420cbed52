"""The daemon's control host: what the control socket's clients see of the charger. It owns the
server (connections, roles, quotas), the services' positions in the event stream, their status,
the authorizers on the socket, and turns each permitted command into the charger's action.

The asyncio process (shell/daemon.py) makes one at start and stops it; nothing here blocks the
loop: the outbox is read in a worker thread, every reply is a bounded record.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sqlite3
import threading
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import structlog

from evsed import protocol as p
from evsed.config import Config
from evsed.control import roles as rolesmod
from evsed.control.connection import Refused
from evsed.control.server import ControlServer
from evsed.shell import commands
from evsed.shell.auth import Verdict
from evsed.shell.bus import ChargerEvent, utc_iso_ms
from evsed.store import outbox
from evsed.protocol_types import LastStop
from evsed.store.sessions import StoreWriter

if TYPE_CHECKING:
    from evsed.shell.charger import Charger

log = structlog.get_logger("evsed")
EXIT_RESTART = 75  # EX_TEMPFAIL: not a clean stop, so Restart=on-failure starts the daemon again


def config_roles(config: Config) -> rolesmod.Roles:
    """Root and this process's user are the administrator; each service's user (`[control]`) its role,
    with what the host grants it beyond that role (`[mqtt] restart_button`)."""
    users = {role: config.control.user(role) for role in p.SERVICES}
    granted = {role: config.control.granted(role) for role in p.SERVICES if config.control.granted(role)}
    roles, missing = rolesmod.resolve(users, frozenset({0, os.geteuid()}), granted)
    if missing:
        log.info("control.no_such_users", users=missing, note="their services, if run as units, read only")
    return roles


class ControlHost:
    def __init__(self, config: Config, wallclock: Callable[[], dt.datetime], restart: Callable[[], None]):
        self.config, self.wallclock, self._restart = config, wallclock, restart
        self.server = ControlServer(self, config_roles(config))
        self.charger: Charger | None = None
        self._acked: dict[str, int] = {}
        self._last_seq = 0  # the newest durable event streamed: where a service new to this charger starts
        self.started_at = ""  # this run's start and how the run before it ended, for every service's hello
        self.last_stop: LastStop = "clean"
        self._service_status: dict[str, p.ServiceState] = {}  # what each service role last said of itself
        self._reader_db: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()
        self.writer: StoreWriter | None = None

    def read_positions(self, db: sqlite3.Connection) -> None:
        """Each service's acknowledged event and the newest one (before the store's writer starts)."""
        self._acked = dict(db.execute("SELECT service, seq FROM service_acks").fetchall())
        self._last_seq = outbox.last_seq(db)

    def attach(self, db_path: Path, writer: StoreWriter, charger: Charger) -> None:
        """The store (read in a worker thread, written through its writer) and the charger."""
        self.writer = writer
        self._reader_db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, check_same_thread=False)
        self.charger = charger
        charger.bus.subscribe(self._live)

    async def start(self) -> None:
        await self.server.start(self.config.store.runtime_dir)

    async def stop(self) -> None:
        await self.server.close(self.config.store.runtime_dir)
        with self._reader_lock:  # a subscriber's backlog may be reading in a worker thread: never close under it
            db, self._reader_db = self._reader_db, None
            if db is not None:
                db.close()

    # --- events to the subscribers ------------------------------------------------------------------
    def stored(self, loop: asyncio.AbstractEventLoop, event: p.Event) -> None:
        """A durable event is committed (the store's thread): stream it from the loop."""
        loop.call_soon_threadsafe(self._push, event)

    def _push(self, event: p.Event) -> None:
        self._last_seq = max(self._last_seq, event.seq or 0)
        self.server.push(event)

    def _live(self, event: ChargerEvent) -> None:
        if not event.durable:
            self.server.push(event.wire())

    # --- what the server asks ------------------------------------------------------------------------
    def hello(self, service: str | None) -> p.HelloReply:
        c = self.config.charger
        return p.HelloReply(version=p.VERSION, charger=c.id, connectors=tuple(n.id for n in self.config.connectors),
                            phases=c.phases, voltage_v=c.voltage_v, acked=self._acked.get(service or "", 0),
                            last_seq=self._last_seq, started_at=self.started_at, last_stop=self.last_stop)

    def dispatch(self, command: p.Command[Any], role: str) -> p.Reply:
        assert self.charger is not None
        if isinstance(command, p.Ping):
            return p.Ok()
        if isinstance(command, p.Status):  # the CLI finds this daemon's config, and shows times in its zone
            return replace(self.charger.status(), services=dict(self._service_status),
                           config=str(self.charger.config.path.absolute()), timezone=self.charger.config.charger.timezone)
        if isinstance(command, p.Restart):  # a hard reset (or the button the host granted MQTT): sessions end as `reboot`,
            # the service manager starts us again
            log.warning("daemon.restart_requested", role=role)
            self._restart()
            return p.RestartReply(exit_status=EXIT_RESTART)
        unsimulated = commands.unsimulated(self.charger, command)
        if unsimulated is not None:  # `sim` only on a simulator config: refused as a role's command is
            raise Refused(unsimulated)
        if isinstance(command, p.RemoteStart) and role not in (p.ADMIN, p.OCPP):
            # the web page starts only for a card the host's own list accepts: no unknown card charges
            verdict = self.charger.auth.local.verdict(commands.id_tag(command.id_tag))
            if verdict.result != "accept":
                raise Refused(f"card {command.id_tag} is not one the local list accepts "
                              f"({verdict.reason or 'unknown card'})")
        return commands.run(self.charger, command)

    async def backlog(self, after: int) -> list[p.Event]:
        def read() -> list[dict[str, Any]]:
            with self._reader_lock:  # one connection, several subscribers' threads
                db = self._reader_db
                return [] if db is None else list(outbox.since(db, after))  # None: the daemon is stopping
        events = []
        for stored in await asyncio.to_thread(read):
            try:
                events.append(p.parse_event(stored))
            except p.WireError as exc:  # written by a release that said it otherwise: skipped, said once
                log.error("outbox.event_unreadable", seq=stored.get("seq"), error=str(exc))
        return events

    def ack(self, service: str, seq: int) -> None:
        at = utc_iso_ms(self.wallclock())
        self._acked[service] = max(seq, self._acked.get(service, 0))
        assert self.writer is not None
        self.writer.submit(lambda st: outbox.ack(st.db, service, seq, at))

    def service_status(self, role: str, status: p.ServiceState) -> None:
        self._service_status[role] = replace(status, at=utc_iso_ms(self.wallclock()))

    def add_authorizer(self, name: str, timeout_s: float,
                       ask: Callable[[str, int], Awaitable[p.Authorized]]) -> Callable[[], None]:
        assert self.charger is not None
        return self.charger.auth.add(_SocketAuthorizer(name, ask))


class _SocketAuthorizer:
    """A link of the authorizer chain answered by a service over the control socket."""

    def __init__(self, name: str, ask: Callable[[str, int], Awaitable[p.Authorized]]):
        self.name, self._ask = name, ask

    async def authorize(self, id_tag: str, connector: int) -> Verdict:
        answer = await self._ask(id_tag, connector)
        return Verdict(answer.result, answer.reason, answer.group, answer.max_current_a)

