"""Smart charging, pure and version-neutral: the limit installed charging profiles give at a time,
when it next changes, and the composite schedule. Times are POSIX seconds; limits A per phase.

Profiles are kept in one form for every version: the 1.6 csChargingProfiles object (camelCase,
one chargingSchedule; purposes ChargePointMaxProfile, TxDefaultProfile, TxProfile)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from evsed.uplink.times import iso, parse_time

PERIOD_S = {"Daily": 86400, "Weekly": 7 * 86400}


@dataclass(frozen=True)
class Installed:
    connector: int
    body: dict[str, Any]  # the csChargingProfiles object, camelCase; "_installed" is when it came
    session: str | None   # a TxProfile's transaction (the daemon's session id)


def _start(p: Installed, now: float, tx_start: float | None) -> float | None:
    body, schedule = p.body, p.body["chargingSchedule"]
    kind = body["chargingProfileKind"]
    if kind == "Relative":
        return tx_start if tx_start is not None else now
    base = parse_time(schedule["startSchedule"]) if "startSchedule" in schedule else body.get("_installed", now)
    if kind == "Recurring":
        period = PERIOD_S[body.get("recurrencyKind", "Daily")]
        return base + math.floor((now - base) / period) * period
    return base


def _value(p: Installed, now: float, tx_start: float | None, voltage_v: float, phases: int) -> float | None:
    """The limit in A that p gives at now, or None when it has no period then."""
    body = p.body
    if "validFrom" in body and now < parse_time(body["validFrom"]):
        return None
    if "validTo" in body and now >= parse_time(body["validTo"]):
        return None
    start = _start(p, now, tx_start)
    if start is None or now < start:
        return None
    schedule = body["chargingSchedule"]
    offset = now - start
    if "duration" in schedule and offset >= schedule["duration"]:
        return None
    period = None
    for item in schedule["chargingSchedulePeriod"]:
        if item["startPeriod"] <= offset:
            period = item
    if period is None:
        return None
    limit = float(period["limit"])
    if schedule["chargingRateUnit"] == "W":
        used = min(int(period.get("numberPhases", 3)), phases)
        limit = limit / (voltage_v * used)
    return limit


def _first(profiles: list[Installed], now: float, tx_start: float | None, voltage_v: float,
           phases: int) -> float | None:
    for p in sorted(profiles, key=lambda p: -p.body["stackLevel"]):
        value = _value(p, now, tx_start, voltage_v, phases)
        if value is not None:
            return value
    return None


def charger_limit(profiles: list[Installed], now: float, voltage_v: float, phases: int) -> float | None:
    """ChargePointMaxProfile at now: the charger's ceiling in A, None for none."""
    cp = [p for p in profiles if p.body["chargingProfilePurpose"] == "ChargePointMaxProfile"]
    return _first(cp, now, None, voltage_v, phases)


def connector_limit(profiles: list[Installed], connector: int, now: float, session: str | None,
                    tx_start: float | None, voltage_v: float, phases: int) -> float | None:
    """TxProfile of the running transaction, else TxDefaultProfile (the connector's before connector 0's)."""
    def of(purpose: str, where: int) -> list[Installed]:
        return [p for p in profiles if p.body["chargingProfilePurpose"] == purpose and p.connector == where]
    if session is not None:
        tx = [p for p in of("TxProfile", connector) if p.session == session]
        value = _first(tx, now, tx_start, voltage_v, phases)
        if value is not None:
            return value
    for where in (connector, 0):
        value = _first(of("TxDefaultProfile", where), now, tx_start, voltage_v, phases)
        if value is not None:
            return value
    return None


def next_change(profiles: list[Installed], now: float, tx_start: float | None) -> float | None:
    """The first time after now when some profile's value may change (None: never)."""
    times: list[float] = []
    for p in profiles:
        body, schedule = p.body, p.body["chargingSchedule"]
        times += [parse_time(body[k]) for k in ("validFrom", "validTo") if k in body]
        start = _start(p, now, tx_start)
        if start is None:
            continue
        starts = [start]
        if body["chargingProfileKind"] == "Recurring":
            starts.append(start + PERIOD_S[body.get("recurrencyKind", "Daily")])
        for s in starts:
            times += [s + item["startPeriod"] for item in schedule["chargingSchedulePeriod"]]
            if "duration" in schedule:
                times.append(s + schedule["duration"])
    later = [t for t in times if t > now + 1e-6]
    return min(later) if later else None


def composite(profiles: list[Installed], connector: int, now: float, duration_s: int, unit: str,
              session: str | None, tx_start: float | None, voltage_v: float, phases: int,
              max_a: float) -> dict[str, Any]:
    """GetCompositeSchedule's chargingSchedule from now for duration_s, in unit A or W."""
    periods: list[dict[str, float]] = []
    end, t = now + duration_s, now
    while t < end:
        limit = charger_limit(profiles, t, voltage_v, phases)
        if connector > 0:
            own = connector_limit(profiles, connector, t, session, tx_start, voltage_v, phases)
            limit = own if limit is None else limit if own is None else min(limit, own)
        value = max_a if limit is None else min(limit, max_a)
        if unit == "W":
            value *= voltage_v * phases
        value = math.floor(value * 10) / 10
        if not periods or periods[-1]["limit"] != value:
            periods.append({"startPeriod": int(t - now), "limit": value})
        step = next_change(profiles, t, tx_start)
        t = end if step is None else max(step, t + 1)
    return {"duration": duration_s, "startSchedule": iso(now), "chargingRateUnit": unit,
            "chargingSchedulePeriod": periods}
