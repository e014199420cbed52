"""OCPP 1.6 smart charging over the core's charging limits: which profiles SetChargingProfile
accepts (the 1.6 rules and keys), ClearChargingProfile's selection, GetCompositeSchedule, and
the TxProfile a RemoteStartTransaction brings for the transaction it starts."""

from __future__ import annotations

from typing import Callable

import structlog

from evsed.uplink.limits import Body, ChargingLimits
from evsed.uplink.times import parse_time
from evsed.uplink.v16.keys import Values

log = structlog.get_logger("evsed.uplink")


def check(body: Body, connector: int, connectors: int, session: str | None,
          transaction_id: int | None, max_stack: int, max_periods: int) -> str | None:
    """None when SetChargingProfile may install body on connector, else why not (Rejected)."""
    purpose, schedule = body["chargingProfilePurpose"], body["chargingSchedule"]
    if connector > connectors:
        return "no such connector"
    if body["stackLevel"] > max_stack:
        return "stack level above ChargeProfileMaxStackLevel"
    if len(schedule["chargingSchedulePeriod"]) > max_periods:
        return "more periods than ChargingScheduleMaxPeriods"
    starts = [p["startPeriod"] for p in schedule["chargingSchedulePeriod"]]
    if starts[0] != 0 or starts != sorted(set(starts)):
        return "periods must start at 0 and increase"
    if purpose == "ChargePointMaxProfile" and connector != 0:
        return "ChargePointMaxProfile belongs on connector 0"
    if purpose == "TxProfile":
        if connector == 0 or session is None:
            return "TxProfile needs a running transaction on the connector"
        if body.get("transactionId") not in (None, transaction_id):
            return "transactionId is not the running transaction"
    kind = body["chargingProfileKind"]
    if kind == "Recurring" and ("recurrencyKind" not in body or "startSchedule" not in schedule):
        return "a Recurring profile needs recurrencyKind and startSchedule"
    try:
        for key in ("validFrom", "validTo"):
            if key in body:
                parse_time(body[key])
        if "startSchedule" in schedule:
            parse_time(schedule["startSchedule"])
    except ValueError:
        return "unreadable date-time"
    return None


class Profiles:
    def __init__(self, limits: ChargingLimits, keys: Values, transaction_id: Callable[[str], int | None]):
        self.limits, self.keys, self.transaction_id = limits, keys, transaction_id
        self.pending: dict[int, tuple[str, Body]] = {}  # connector -> a RemoteStartTransaction's id tag, TxProfile

    def install(self, connector: int, body: Body) -> str:
        """SetChargingProfile: Accepted or Rejected (why is logged)."""
        session, _ = self.limits.transaction(connector) if connector else (None, None)
        transaction_id = self.transaction_id(session) if session else None
        why = check(body, connector, len(self.limits.connectors), session, transaction_id,
                    self.keys.int("ChargeProfileMaxStackLevel"), self.keys.int("ChargingScheduleMaxPeriods"))
        installed, replaced = self.limits.by_id(), self.limits.replaced_by(connector, body)
        if why is None and len(installed) - len(replaced) >= self.keys.int("MaxChargingProfilesInstalled"):
            why = "MaxChargingProfilesInstalled reached"
        if why is not None:
            log.info("ocpp.profile_rejected", profile=body.get("chargingProfileId"), why=why)
            return "Rejected"
        self.limits.install(connector, body, session if body["chargingProfilePurpose"] == "TxProfile" else None)
        return "Accepted"

    def clear(self, profile_id: int | None, connector: int | None, purpose: str | None,
              stack_level: int | None) -> int:
        """ClearChargingProfile: how many were removed (an id alone decides when given)."""
        def match(pid: int, where: int, body: Body) -> bool:
            if profile_id is not None:
                return pid == profile_id
            return ((connector is None or where == connector)
                    and (purpose is None or body["chargingProfilePurpose"] == purpose)
                    and (stack_level is None or body["stackLevel"] == stack_level))
        return self.limits.clear(match)

    def composite(self, connector: int, duration_s: int, unit: str) -> Body:
        return self.limits.composite(connector, duration_s, unit)

    def remote_start(self, connector: int, id_tag: str, body: Body) -> tuple[str, Body]:
        """A RemoteStartTransaction going to the daemon: its TxProfile waits for its transaction."""
        self.pending[connector] = waiting = (id_tag, body)
        return waiting

    def remote_start_over(self, connector: int, waiting: tuple[str, Body] | None = None) -> None:
        """A remote start that will not start (refused, its tag not authorized, its authorization
        expired): its TxProfile is dropped, not left for the connector's next transaction (None:
        whichever waits)."""
        if connector in self.pending and waiting in (None, self.pending[connector]):
            log.info("ocpp.remote_profile_dropped", connector=connector,
                     profile=self.pending.pop(connector)[1].get("chargingProfileId"))

    def session_started(self, connector: int, id_tag: str | None) -> None:
        """A transaction began: the TxProfile of the RemoteStartTransaction that asked for it
        applies; another tag's (a card that took the connector first) drops it."""
        waiting = self.pending.pop(connector, None)
        if waiting is not None and id_tag is not None and waiting[0].lower() == id_tag.lower():  # CiString
            self.install(connector, waiting[1])
        self.limits.changed.set()

    def session_stopped(self, session: str) -> None:
        self.limits.session_ended(session)
