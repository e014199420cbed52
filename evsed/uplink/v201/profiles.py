"""OCPP 2.0.1 smart charging over the core's charging limits: which profiles SetChargingProfile
accepts (ChargingStationMaxProfile, TxDefaultProfile, TxProfile; the 2.0.1 rules), their neutral
form for the composite schedule, GetChargingProfiles' and ClearChargingProfile's selection."""

from __future__ import annotations

from typing import Any, Callable

import structlog

from evsed.uplink.limits import Body, ChargingLimits
from evsed.uplink.times import parse_time
from evsed.uplink.v201.device_model import DeviceModel

log = structlog.get_logger("evsed.uplink")
PURPOSES = {"ChargingStationMaxProfile": "ChargePointMaxProfile", "TxDefaultProfile": "TxDefaultProfile",
            "TxProfile": "TxProfile"}
MAX_PROFILES = 32   # SmartChargingCtrlr Entries ChargingProfiles' maxLimit
ORIGINAL = "_v201"  # the profile as the CSMS sent it, kept in the neutral body for reports


def check(profile: Body, evse: int, evses: list[int], transaction_id: str | None, max_stack: int,
          max_periods: int, phase_switching: bool = False) -> str | None:
    """None when SetChargingProfile may install profile on evse, else why not (Rejected; K01)."""
    purpose = profile["chargingProfilePurpose"]
    if purpose not in PURPOSES:
        return f"{purpose} is not supported"
    if evse != 0 and evse not in evses:
        return "no such EVSE"
    if profile["stackLevel"] > max_stack:
        return "stackLevel above ProfileStackLevel"
    schedules = profile["chargingSchedule"]
    if len(schedules) != 1:
        return "one chargingSchedule per profile (there are no ISO 15118 schedules here)"
    schedule = schedules[0]
    periods = schedule["chargingSchedulePeriod"]
    if len(periods) > max_periods:
        return "more periods than PeriodsPerSchedule"
    starts = [p["startPeriod"] for p in periods]
    if starts[0] != 0 or starts != sorted(set(starts)):
        return "periods must start at 0 and increase"
    for period in periods:
        if "phaseToUse" in period and period.get("numberPhases", 3) != 1:
            return "phaseToUse needs numberPhases 1"  # K01.FR.19
        if "phaseToUse" in period and not phase_switching:
            return "phaseToUse without ACPhaseSwitchingSupported"  # K01.FR.20
    if purpose == "ChargingStationMaxProfile" and evse != 0:
        return "ChargingStationMaxProfile belongs on evseId 0"
    if purpose == "ChargingStationMaxProfile" and profile["chargingProfileKind"] == "Relative":
        return "a ChargingStationMaxProfile cannot be Relative"  # K01.FR.38
    if purpose == "TxProfile":
        if evse == 0 or transaction_id is None:
            return "TxProfile needs a transaction on the EVSE"
        if profile.get("transactionId") not in (None, transaction_id):
            return "transactionId is not the EVSE's transaction"
    if profile["chargingProfileKind"] == "Recurring" and (
            "recurrencyKind" not in profile or "startSchedule" not in schedule):
        return "a Recurring profile needs recurrencyKind and startSchedule"
    if profile["chargingProfileKind"] == "Absolute" and "startSchedule" not in schedule:
        return "an Absolute profile needs startSchedule"
    if profile["chargingProfileKind"] == "Relative" and "startSchedule" in schedule:
        return "a Relative profile has no startSchedule"  # K01.FR.41
    try:
        for key in ("validFrom", "validTo"):
            if key in profile:
                parse_time(profile[key])
        if "startSchedule" in schedule:
            parse_time(schedule["startSchedule"])
    except ValueError:
        return "unreadable date-time"
    return None


def neutral(profile: Body) -> Body:
    """The core's form (1.6 names: one chargingSchedule object, ChargePointMaxProfile) of a profile."""
    body = {k: v for k, v in profile.items() if k in (
        "stackLevel", "chargingProfileKind", "recurrencyKind", "validFrom", "validTo")}
    body["chargingProfileId"] = profile["id"]
    body["chargingProfilePurpose"] = PURPOSES[profile["chargingProfilePurpose"]]
    schedule = dict(profile["chargingSchedule"][0])
    schedule.pop("id", None)
    body["chargingSchedule"] = schedule
    body[ORIGINAL] = profile
    return body


class Profiles:
    def __init__(self, limits: ChargingLimits, model: DeviceModel, transaction_of: Callable[[int], str | None]):
        self.limits, self.model, self.transaction_of = limits, model, transaction_of
        self.pending: dict[int, Body] = {}  # evse -> the TxProfile of a RequestStartTransaction

    def install(self, evse: int, profile: Body, started: bool = False) -> str | None:
        """SetChargingProfile: None when installed, else why it was rejected. started: the TxProfile
        of a RequestStartTransaction whose session began, before a later TxStartPoint opens its
        transaction (it limits the session from its start)."""
        transaction = self.transaction_of(evse) if evse else None
        if started and transaction is None:
            transaction = ""
        why = check(profile, evse, self.limits.connectors, transaction,
                    self.model.int("SmartChargingCtrlr", "ProfileStackLevel"),
                    self.model.int("SmartChargingCtrlr", "PeriodsPerSchedule"),
                    self.model.bool("SmartChargingCtrlr", "ACPhaseSwitchingSupported"))
        body = neutral(profile) if why is None else {}
        if why is None:  # K01.FR.06; K01.FR.39 for a TxProfile (those on an EVSE are its transaction's)
            for pid, (where, other, _) in self.limits.by_id().items():
                if pid != profile["id"] and where == evse and other["stackLevel"] == body["stackLevel"] \
                        and other["chargingProfilePurpose"] == body["chargingProfilePurpose"]:
                    why = f"profile {pid} has this stackLevel and purpose on the EVSE"
            replaced = self.limits.replaced_by(evse, body)
            if why is None and len(self.limits.by_id()) - len(replaced) >= MAX_PROFILES:
                why = f"{MAX_PROFILES} profiles are installed already"
        if why is not None:
            log.info("ocpp.profile_rejected", profile=profile.get("id"), why=why)
            return why
        session, _ = self.limits.transaction(evse) if evse else (None, None)
        self.limits.install(evse, body, session if profile["chargingProfilePurpose"] == "TxProfile" else None)
        return None

    def select(self, evse: int | None, criterion: Body) -> list[tuple[int, Body]]:
        """GetChargingProfiles: (evse, profile as sent) of each installed profile meeting criterion."""
        ids = criterion.get("chargingProfileId")
        sources = criterion.get("chargingLimitSource")
        out = []
        for pid, (where, body, _) in sorted(self.limits.by_id().items()):
            original = body.get(ORIGINAL) or {}
            if (evse is not None and where != evse) or (ids and pid not in ids) or (
                    sources and "CSO" not in sources):
                continue
            if criterion.get("chargingProfilePurpose") not in (None, original.get("chargingProfilePurpose")):
                continue
            if criterion.get("stackLevel") not in (None, original.get("stackLevel")):
                continue
            out.append((where, original))
        return out

    def clear(self, profile_id: int | None, criteria: Body | None) -> int:
        """ClearChargingProfile: how many were removed (an id decides alone when given)."""
        criteria = criteria or {}

        def match(pid: int, where: int, body: Body) -> bool:
            original = body.get(ORIGINAL) or {}
            if profile_id is not None:
                return pid == profile_id
            return ((criteria.get("evseId") is None or where == criteria["evseId"])
                    and criteria.get("chargingProfilePurpose") in (None, original.get("chargingProfilePurpose"))
                    and criteria.get("stackLevel") in (None, original.get("stackLevel")))
        return self.limits.clear(match)

    def composite(self, evse: int, duration_s: int, unit: str) -> dict[str, Any]:
        """GetCompositeSchedule's schedule (the 2.0.1 CompositeScheduleType)."""
        schedule = self.limits.composite(evse, duration_s, unit)
        return {"evseId": evse, "duration": schedule["duration"], "scheduleStart": schedule["startSchedule"],
                "chargingRateUnit": schedule["chargingRateUnit"],
                "chargingSchedulePeriod": schedule["chargingSchedulePeriod"]}

    def session_started(self, evse: int) -> None:
        """The transaction a RequestStartTransaction asked for began: its TxProfile applies."""
        profile = self.pending.pop(evse, None)
        if profile is not None:
            self.install(evse, profile, started=True)
        self.limits.changed.set()

    def session_stopped(self, session: str) -> None:
        self.limits.session_ended(session)
