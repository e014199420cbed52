"""Installed charging profiles (persisted) and their composite schedule as the daemon's `ocpp`
limit source, whatever the OCPP version: the limit per connector (0: the charger) is sent
whenever it changes, waking at the next change time. The version's adapter decides which
profiles it accepts (its own rules) and hands them over in the neutral form of smart.py."""

from __future__ import annotations

import asyncio
import math
from typing import Any, Awaitable, Callable

import structlog

from evsed.uplink import smart
from evsed.uplink.aio import wait_event
from evsed.uplink.state import State
from evsed.uplink.times import parse_time

log = structlog.get_logger("evsed.uplink")
Body = dict[str, Any]


class ChargingLimits:
    def __init__(self, state: State, clock: Callable[[], float], connectors: list[int], *, phases: int,
                 voltage_v: float, max_current_a: float,
                 send_limit: Callable[[int, float | None], Awaitable[bool]]):
        self.state, self.clock, self.connectors = state, clock, connectors
        self.phases, self.voltage_v, self.max_current_a = phases, voltage_v, max_current_a
        self.send_limit = send_limit             # the daemon's `limit` command: whether it took it
        self.changed = asyncio.Event()           # profiles or sessions changed
        self.sent: dict[int, float | None] = {}  # connector -> the limit the daemon has

    def installed(self) -> list[smart.Installed]:
        return [smart.Installed(c, body, session) for c, body, session in self.state.profiles()]

    def by_id(self) -> dict[int, tuple[int, Body, str | None]]:
        return {body["chargingProfileId"]: (c, body, s) for c, body, s in self.state.profiles()}

    def transaction(self, connector: int) -> tuple[str | None, float | None]:
        """The session running on connector and when it started (None, None: none)."""
        running = self.state.sessions().get(connector)
        if running is None:
            return None, None
        try:
            return running["session"], parse_time(running["started_at"])
        except ValueError:
            return running["session"], None

    def replaced_by(self, connector: int, body: Body) -> list[int]:
        """The installed profiles that body replaces: the same id, or the same connector, stack
        level and purpose."""
        return [pid for pid, (c, b, _) in self.by_id().items() if pid == body["chargingProfileId"] or (
            c == connector and b["stackLevel"] == body["stackLevel"]
            and b["chargingProfilePurpose"] == body["chargingProfilePurpose"])]

    def install(self, connector: int, body: Body, session: str | None) -> None:
        """Install an accepted profile (a TxProfile bound to session) in place of those it replaces."""
        with self.state.transaction():
            for pid in self.replaced_by(connector, body):
                self.state.delete_profile(pid)
            self.state.put_profile(connector, {**body, "_installed": self.clock()}, session)
        log.info("ocpp.profile_installed", profile=body["chargingProfileId"], connector=connector,
                 purpose=body["chargingProfilePurpose"], stack_level=body["stackLevel"])
        self.changed.set()

    def clear(self, match: Callable[[int, int, Body], bool]) -> int:
        """Remove the profiles match(id, connector, body) selects; how many."""
        removed = 0
        for pid, (c, body, _) in self.by_id().items():
            if match(pid, c, body):
                self.state.delete_profile(pid)
                removed += 1
        if removed:
            self.changed.set()
        return removed

    def session_ended(self, session: str) -> None:
        """A transaction's own profiles end with it."""
        for pid, (_, _, owner) in self.by_id().items():
            if owner == session:
                self.state.delete_profile(pid)
        self.changed.set()

    def composite(self, connector: int, duration_s: int, unit: str) -> Body:
        session, tx_start = self.transaction(connector) if connector else (None, None)
        return smart.composite(self.installed(), connector, self.clock(), duration_s, unit, session, tx_start,
                               self.voltage_v, self.phases, self.max_current_a)

    def wanted(self, now: float) -> tuple[dict[int, float | None], float | None]:
        """The limit per connector (0: the charger) at now, and when it may next change."""
        profiles = self.installed()
        wanted = {0: smart.charger_limit(profiles, now, self.voltage_v, self.phases)}
        changes = [smart.next_change(profiles, now, None)]
        for connector in self.connectors:
            session, tx_start = self.transaction(connector)
            wanted[connector] = smart.connector_limit(profiles, connector, now, session, tx_start,
                                                      self.voltage_v, self.phases)
            changes.append(smart.next_change(profiles, now, tx_start))
        rounded = {c: None if v is None else math.floor(v * 10) / 10 for c, v in wanted.items()}
        later = [t for t in changes if t is not None]
        return rounded, min(later) if later else None

    async def run(self) -> None:
        """Tell the daemon the composite limit per connector when it changes, for ever."""
        while True:
            self.changed.clear()
            wanted, change_at = self.wanted(self.clock())
            failed = False
            for connector, value in wanted.items():
                if connector in self.sent and self.sent[connector] == value:
                    continue
                if await self.send_limit(connector, value):
                    self.sent[connector] = value
                    log.info("ocpp.limit_sent", connector=connector, current_a=value)
                else:
                    failed = True
            timeout = 3600.0 if change_at is None else max(0.0, change_at - self.clock())
            await wait_event(self.changed, min(timeout, 5.0 if failed else 3600.0))
