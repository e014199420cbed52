"""The uplink's smart-charging side: installed profiles (persisted), SetChargingProfile and
ClearChargingProfile, GetCompositeSchedule, and the composite limit sent to the daemon as a
limit source ("ocpp") whenever it changes, waking at the next change time."""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Awaitable, Callable

import structlog

from evsed.uplink import smart
from evsed.uplink.state import wait_event

if TYPE_CHECKING:
    from evsed.uplink.keys import Values
    from evsed.uplink.settings import Settings
    from evsed.uplink.state import State

log = structlog.get_logger("evsed.uplink")


class SmartCharging:
    """Mixed into Uplink; uses its state, keys, clock, connectors, phases, voltage_v, command()."""

    # What Uplink provides (annotations only: no class attributes are made).
    state: State
    keys: Values
    settings: Settings
    clock: Callable[[], float]
    connectors: list[int]
    phases: int
    voltage_v: float
    reprofile: asyncio.Event
    limits_sent: dict[int, float | None]
    command: Callable[[dict], Awaitable[dict]]

    def _profiles(self) -> list[smart.Installed]:
        return [smart.Installed(c, body, session) for c, body, session in self.state.profiles()]

    def _profiles_by_id(self) -> dict[int, tuple[int, dict, str | None]]:
        return {body["chargingProfileId"]: (c, body, s) for c, body, s in self.state.profiles()}

    def _tx(self, connector: int) -> tuple[str | None, float | None]:
        running = self.state.sessions().get(connector)
        if running is None:
            return None, None
        try:
            return running["session"], smart.parse_time(running["started_at"])
        except ValueError:
            return running["session"], None

    def install_profile(self, connector: int, body: dict) -> str:
        """SetChargingProfile: Accepted or Rejected (why is logged)."""
        session, _ = self._tx(connector) if connector else (None, None)
        transaction_id = self.state.transaction_id(session) if session else None
        why = smart.check(body, connector, len(self.connectors), session, transaction_id,
                          self.keys.int("ChargeProfileMaxStackLevel"), self.keys.int("ChargingScheduleMaxPeriods"))
        installed = self._profiles_by_id()
        replaced = [pid for pid, (c, b, _) in installed.items() if pid == body["chargingProfileId"] or (
            c == connector and b["stackLevel"] == body["stackLevel"]
            and b["chargingProfilePurpose"] == body["chargingProfilePurpose"])]
        if why is None and len(installed) - len(replaced) >= self.keys.int("MaxChargingProfilesInstalled"):
            why = "MaxChargingProfilesInstalled reached"
        if why is not None:
            log.info("ocpp.profile_rejected", profile=body.get("chargingProfileId"), why=why)
            return "Rejected"
        with self.state.transaction():
            for pid in replaced:
                self.state.delete_profile(pid)
            self.state.put_profile(connector, {**body, "_installed": self.clock()},
                                   session if body["chargingProfilePurpose"] == "TxProfile" else None)
        log.info("ocpp.profile_installed", profile=body["chargingProfileId"], connector=connector,
                 purpose=body["chargingProfilePurpose"], stack_level=body["stackLevel"])
        self.reprofile.set()
        return "Accepted"

    def clear_profiles(self, profile_id, connector, purpose, stack_level) -> int:
        """ClearChargingProfile: how many were removed (an id alone decides when given)."""
        removed = 0
        for pid, (c, body, _) in self._profiles_by_id().items():
            if profile_id is not None:
                match = pid == profile_id
            else:
                match = ((connector is None or c == connector)
                         and (purpose is None or body["chargingProfilePurpose"] == purpose)
                         and (stack_level is None or body["stackLevel"] == stack_level))
            if match:
                self.state.delete_profile(pid)
                removed += 1
        if removed:
            self.reprofile.set()
        return removed

    def composite(self, connector: int, duration_s: int, unit: str) -> dict:
        session, tx_start = self._tx(connector) if connector else (None, None)
        return smart.composite(self._profiles(), connector, self.clock(), duration_s, unit, session, tx_start,
                               self.voltage_v, self.phases, self.settings.max_current_a)

    def _wanted_limits(self, now: float) -> tuple[dict[int, float | None], float | None]:
        profiles = self._profiles()
        wanted = {0: smart.charger_limit(profiles, now, self.voltage_v, self.phases)}
        changes = [smart.next_change(profiles, now, None)]
        for connector in self.connectors:
            session, tx_start = self._tx(connector)
            wanted[connector] = smart.connector_limit(profiles, connector, now, session, tx_start,
                                                      self.voltage_v, self.phases)
            changes.append(smart.next_change(profiles, now, tx_start))
        wanted = {c: None if v is None else math.floor(v * 10) / 10 for c, v in wanted.items()}
        later = [t for t in changes if t is not None]
        return wanted, min(later) if later else None

    async def _limits(self) -> None:
        """Tell the daemon the composite limit per connector (0: the charger) when it changes."""
        while True:
            self.reprofile.clear()
            now = self.clock()
            wanted, change_at = self._wanted_limits(now)
            failed = False
            for connector, value in wanted.items():
                if connector in self.limits_sent and self.limits_sent[connector] == value:
                    continue
                reply = await self.command({"cmd": "limit", "source": "ocpp", "connector": connector,
                                            "current_a": value})
                if reply.get("ok"):
                    self.limits_sent[connector] = value
                    log.info("ocpp.limit_sent", connector=connector, current_a=value)
                else:
                    failed = True
            timeout = 3600.0 if change_at is None else max(0.0, change_at - self.clock())
            await wait_event(self.reprofile, min(timeout, 5.0 if failed else 3600.0))
