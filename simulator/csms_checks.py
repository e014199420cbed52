"""What a strict central system checks of a charge point's behaviour beyond the schemas, over the
CALLs it received in order: each transaction started and stopped once, its meterStop never below
a reading it sent and its times never going backwards, StatusNotifications in the order of their
timestamps, connector 0's status after each boot (told by the next boot: a recording may end
before it), and a clean close code."""

from __future__ import annotations

import datetime as dt
from typing import Any, Sequence

Received = tuple[str, str, dict[str, Any], str]  # identity, action, payload, unique id
CLEAN_CLOSES = (1000, 1001)


def _time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _energy(meter_value: dict[str, Any]) -> int | None:
    for v in meter_value.get("sampledValue", []):
        if v.get("measurand", "Energy.Active.Import.Register") == "Energy.Active.Import.Register":
            return int(float(v["value"]))
    return None


def violations(received: list[Received], transactions: dict[int, dict[str, Any]],
               closes: Sequence[int | None] = ()) -> list[str]:
    """Every breach found, as a sentence; transactions: transaction id -> its StartTransaction
    (as the CSMS answered it). A session open at the end is not a breach."""
    found: list[str] = []
    stops: dict[int, int] = {}
    sent: dict[int, list[tuple[dt.datetime, int | None]]] = {}  # transaction -> (time, Wh) of its MeterValues
    status_at: dict[str, dt.datetime] = {}
    owed: dict[str, int] = {}  # identity -> messages since its last boot while connector 0's status is owed

    def settle(identity: str) -> None:
        if owed.pop(identity, 0):  # it sent on after the boot, never connector 0's status
            found.append(f"{identity}: no connector 0 StatusNotification after a BootNotification")

    for identity, action, payload, _ in received:
        if action == "BootNotification":
            settle(identity)
            owed[identity] = 0
            continue
        if identity in owed:
            owed[identity] += 1
        if action == "StatusNotification":
            at = _time(payload["timestamp"])
            if identity in status_at and at < status_at[identity]:
                found.append(f"{identity}: StatusNotification {payload['status']} on connector "
                             f"{payload['connectorId']} at {payload['timestamp']}, before one sent earlier")
            status_at[identity] = max(at, status_at.get(identity, at))
            if payload["connectorId"] == 0:
                owed.pop(identity, None)
        elif action == "MeterValues" and "transactionId" in payload:
            for mv in payload["meterValue"]:
                sent.setdefault(payload["transactionId"], []).append((_time(mv["timestamp"]), _energy(mv)))
        elif action == "StopTransaction":
            tid = payload["transactionId"]
            stops[tid] = stops.get(tid, 0) + 1
            if stops[tid] == 2:
                found.append(f"transaction {tid}: StopTransaction received twice")
            start = transactions.get(tid)
            if start is None:
                found.append(f"transaction {tid}: stopped, never started")
                continue
            at, meter = _time(payload["timestamp"]), payload["meterStop"]
            readings = [(_time(start["timestamp"]), start["meterStart"])] + sent.get(tid, [])
            for when, wh in readings:
                if wh is not None and meter < wh:
                    found.append(f"transaction {tid}: meterStop {meter} below {wh} Wh already sent")
                if at < when:
                    found.append(f"transaction {tid}: stopped at {payload['timestamp']}, before a message "
                                 f"of it timed {when.isoformat()}")
    found += [f"the charge point closed the connection with {code}" for code in closes
              if code not in CLEAN_CLOSES]
    return found
