"""OCPP 1.6 messages from the charger's events, queued durably (one SQLite transaction per event,
with its seq): StatusNotification with the error code of the connector's latched faults,
Start/StopTransaction and MeterValues; and the delivery of a queued message, its transactionId
filled in from the StartTransaction's answer."""

from __future__ import annotations

from typing import Any, Callable

import structlog
from ocpp.charge_point import camel_to_snake_case
from ocpp.v16 import call

from evsed import protocol as p
from evsed.uplink.charger import Reading
from evsed.uplink.metering import energy_wh
from evsed.uplink.queue import Refused
from evsed.uplink.state import Queued, State
from evsed.uplink.times import iso, ms, parse_time
from evsed.uplink.v16.keys import Values

log = structlog.get_logger("evsed.uplink")

REASONS = {"ev_disconnected": "EVDisconnected", "local": "Local", "remote": "Remote",
           "deauthorized": "DeAuthorized", "emergency_stop": "EmergencyStop", "power_loss": "PowerLoss",
           "reboot": "Reboot", "other": "Other", "hard_reset": "HardReset", "soft_reset": "SoftReset",
           "unlock_command": "UnlockCommand"}  # ground_fault has no 1.6 Reason: Other
STATUSES = {"Available", "Preparing", "Charging", "SuspendedEVSE", "SuspendedEV", "Finishing",
            "Reserved", "Unavailable", "Faulted"}
FAULT_CODES = {"rcd": "GroundFailure", "rcd_self_test": "GroundFailure", "overcurrent": "OverCurrentFailure",
               "welded": "PowerSwitchFailure", "contactor_mismatch": "PowerSwitchFailure",
               "diode": "EVCommunicationError", "meter": "PowerMeterFailure", "pilot": "EVCommunicationError"}
CALLS = {"StartTransaction": call.StartTransaction, "StopTransaction": call.StopTransaction,
         "MeterValues": call.MeterValues, "StatusNotification": call.StatusNotification,
         "FirmwareStatusNotification": call.FirmwareStatusNotification}  # an update's outcome


def id_tag(text: str) -> str:
    """OCPP 1.6 IdToken: at most 20 characters."""
    return str(text)[:20]


Payload = dict[str, Any]


def sampled_values(reading: Reading | None, measurands: list[str], context: str,
                   energy_wh: int | None = None) -> list[dict[str, str]]:
    """The sampledValue entries for one reading (energy_wh: the register instead of the reading's),
    only the measurands asked for."""
    out: list[dict[str, str]] = []
    energy = energy_wh if energy_wh is not None else reading.energy_wh if reading is not None else None

    def add(measurand: str, value: object, unit: str, phase: str | None = None) -> None:
        entry = {"value": str(value), "context": context, "measurand": measurand, "unit": unit}
        if phase:
            entry["phase"] = phase
        out.append(entry)

    for m in measurands:
        if m == "Energy.Active.Import.Register" and energy is not None:
            add(m, energy, "Wh")
        elif reading is None:
            continue
        elif m == "Power.Active.Import" and reading.power_w is not None:
            add(m, round(reading.power_w, 1), "W")
        elif m == "Current.Offered" and reading.offered_a is not None:
            add(m, round(reading.offered_a, 1), "A")
        elif m == "Current.Import":
            for n, amps in enumerate(reading.current_a, 1):
                add(m, round(amps, 1), "A", f"L{n}")
        elif m == "Voltage":
            for n, volts in enumerate(reading.voltage_v, 1):
                add(m, round(volts, 1), "V", f"L{n}-N")
    return out


def precise(stamp: str | None, at: str | None) -> str | None:
    """A session's start or stop time (whole seconds in the session record) with the milliseconds
    of the event that told it, when that event is from the same second; else the time as it is
    (a power-loss stop is told long after the cut)."""
    if stamp is None or at is None:
        return stamp or at
    whole = parse_time(stamp)
    return at if whole.is_integer() and 0 <= parse_time(at) - whole < 1 else stamp


class Messages:
    """Turns daemon events into queued messages; drop(item, why) takes one off the queue for good."""

    def __init__(self, state: State, keys: Values, clock: Callable[[], float],
                 drop: Callable[[Queued, str], None]):
        self.state, self.keys, self.clock, self.drop = state, keys, clock, drop
        self.samples: dict[int, Reading] = {}      # the newest session.sample per connector
        self.reservations: dict[int, dict[str, Any]] = {}  # reservation_id -> connector, id_tag
        self.stop_reasons: dict[int, str] = {}     # connector -> Reason the uplink caused
        self.faults: dict[int, dict[str, str]] = {}  # connector -> latched fault -> detail
        self.on_started: Callable[[int, str], None] = lambda connector, session: None
        self.on_stopped: Callable[[int, str], None] = lambda connector, session: None
        self.on_available: Callable[[int], None] = lambda connector: None  # no authorization waits on it

    def on_event(self, event: p.Event) -> bool:
        """Apply one event; True when it was made durable with its seq (live events: False)."""
        connector = event.connector
        if isinstance(event, p.SessionSample):
            self.samples[connector] = Reading.of_sample(event)
        if event.seq is None:
            return False
        with self.state.transaction():
            if isinstance(event, p.StatusChanged):
                self._status(connector, event.status, event.reason, event.at)
            elif isinstance(event, (p.FaultRaised, p.FaultCleared)):
                self._fault(connector, event)
            elif isinstance(event, p.SessionStarted):
                self._started(connector, event)
            elif isinstance(event, p.SessionStopped):
                self._stopped(connector, event)
            self.state.set_meta("seq", event.seq)
        if isinstance(event, p.SessionStarted):
            self.on_started(connector, str(event.session))
        elif isinstance(event, p.SessionStopped):
            self.on_stopped(connector, str(event.session))
        elif isinstance(event, p.StatusChanged) and event.status == "Available":
            self.on_available(connector)
        return True

    def seed(self, status: p.ConnectorStatus) -> None:
        """A connector as the daemon's status reports it (its latched faults, its status): what an
        uplink new to the charger starts from, queued as a StatusNotification."""
        for fault in status.faults:
            self.faults.setdefault(status.id, {})[fault.fault] = (fault.detail or fault.fault)[:50]
        self._status(status.id, status.status, status.reason)

    def seed_charger(self, available: bool) -> None:
        """Connector 0, the charger as a whole, at the uplink's first contact."""
        self._status(0, "Available" if available else "Unavailable")

    def _fault(self, connector: int, event: p.FaultRaised | p.FaultCleared) -> None:
        """Faults give the error code of the connector's StatusNotification (sent when it changes),
        timed by the fault, so that it leaves before the status the fault leads to."""
        faults = self.faults.setdefault(connector, {})
        if isinstance(event, p.FaultRaised):
            faults[event.fault] = (event.detail or event.fault)[:50]
        else:
            for name in event.faults:
                faults.pop(name, None)
        before = self.state.statuses().get(connector)
        if before is not None and before[1] != self.error_code(connector):
            self._status(connector, before[0], at=event.at)

    def error_code(self, connector: int) -> str:
        for fault in self.faults.get(connector, {}):
            return FAULT_CODES.get(fault, "OtherError")
        return "NoError"

    def _status(self, connector: int, status: str, reason: str = "", at: str | None = None) -> None:
        status = _one_of(status, STATUSES, "Faulted")
        error = self.error_code(connector)
        faults = self.faults.get(connector)
        info = ((next(iter(faults.values())) if faults else "") or reason)[:50] or None
        self.state.set_status(connector, status, error, info)
        self.state.enqueue("StatusNotification", self.status_payload(connector, status, error, info, ms(at)),
                           connector=connector, tx=False)

    def status_payload(self, connector: int, status: str, error: str, info: str | None,
                       at: str | None = None) -> Payload:
        """StatusNotifications leave in the order of their timestamps: none is timed before one
        queued earlier (a daemon's clock step, a fault's status built after the event)."""
        stamp = max(at or iso(self.clock()), self.state.meta("status_at"))
        self.state.set_meta("status_at", stamp)
        payload: Payload = {"connectorId": connector, "errorCode": error, "status": status, "timestamp": stamp}
        if info:
            payload["info"] = info
        return payload

    def _started(self, connector: int, event: p.SessionStarted) -> None:
        session, tag = str(event.session), id_tag(event.id_tag)
        started_at = precise(ms(event.started_at), ms(event.at)) or iso(self.clock())
        meter = event.meter_start_wh
        self.state.open_session(connector, session, tag, started_at, meter)
        payload: Payload = {"connectorId": connector, "idTag": tag, "meterStart": meter, "timestamp": started_at}
        for rid, res in list(self.reservations.items()):
            if res["id_tag"].lower() == tag.lower() and res["connector"] in (0, connector):  # CiString
                payload["reservationId"] = rid
                del self.reservations[rid]
                break
        self.state.enqueue("StartTransaction", payload, session=session, connector=connector)

    def _stopped(self, connector: int, event: p.SessionStopped) -> None:
        """StopTransaction with the session's final reading as the daemon tells it, never below a
        reading already sent in the transaction, at a time never before one already sent."""
        session = str(event.session)
        opened = self.state.sessions().get(connector)
        if opened is None or opened["session"] != session:
            # started before the uplink followed the charger (its first contact): no transaction at the CSMS
            log.info("ocpp.session_before_uplink", connector=connector, session=session)
            return
        told = precise(ms(event.stopped_at), ms(event.at)) or iso(self.clock())
        stopped_at = max(told, opened["last_at"])
        meter = max(event.meter_stop_wh, int(opened["meter_high_wh"]))
        if meter != event.meter_stop_wh or stopped_at != told:
            log.warning("ocpp.stop_below_sent", connector=connector, session=session,
                        meter_stop_wh=event.meter_stop_wh, sent_wh=opened["meter_high_wh"],
                        stopped_at=told, sent_at=opened["last_at"])
        reason = self.stop_reasons.pop(connector, None) or REASONS.get(event.reason, "Other")
        payload: Payload = {"meterStop": meter, "timestamp": stopped_at, "reason": reason,
                            "transactionId": 0}  # the real id is filled in when it is sent
        if event.id_tag:
            payload["idTag"] = id_tag(event.id_tag)
        data: list[Payload] = [{"timestamp": opened["started_at"], "sampledValue": [{
            "value": str(opened["meter_start_wh"]), "context": "Transaction.Begin",
            "measurand": "Energy.Active.Import.Register", "unit": "Wh"}]}]
        values = sampled_values(self.samples.get(connector), self.keys.list("StopTxnSampledData"), "Transaction.End",
                                energy_wh=meter)
        if values:
            data.append({"timestamp": stopped_at, "sampledValue": values})
        payload["transactionData"] = data
        self.state.close_session(connector)
        self.samples.pop(connector, None)
        self.state.enqueue("StopTransaction", payload, session=session, connector=connector)

    def meter_values(self, connector: int, context: str, reading: Reading | None = None) -> bool:
        """Queue a MeterValues (Sample.Periodic, Sample.Clock, Trigger) from reading, by default the
        connector's newest session.sample; False when there is nothing to send."""
        reading = reading if reading is not None else self.samples.get(connector)
        key = "MeterValuesAlignedData" if context == "Sample.Clock" else "MeterValuesSampledData"
        values = sampled_values(reading, self.keys.list(key), context)
        if not values:
            return False
        session = self.state.sessions().get(connector)
        at = ms(reading.at if reading is not None else None) or iso(self.clock())
        if session:
            at = max(at, session["last_at"])
        payload: Payload = {"connectorId": connector, "meterValue": [{"timestamp": at, "sampledValue": values}]}
        with self.state.transaction():
            if session:
                payload["transactionId"] = 0
                self.state.sent(connector, energy_wh([{"sampledValue": values}]), at)
            self.state.enqueue("MeterValues", payload, session=session["session"] if session else None,
                               connector=connector, tx=session is not None)
        return True

    async def deliver(self, cp: Any, item: Queued) -> Any:
        """Send item; its CALLRESULT once dequeued (None: dropped). Raises Refused for a CALLERROR
        or no answer; a lost connection propagates."""
        payload = dict(item.payload)
        if "transactionId" in payload and item.session is not None:
            tid = self.state.transaction_id(item.session)
            if tid is None and item.action == "StopTransaction":
                self.drop(item, "its StartTransaction was never answered")
                return None
            if tid is None:
                del payload["transactionId"]
            else:
                payload["transactionId"] = tid
        request = CALLS[item.action](**camel_to_snake_case(payload))
        try:
            result = await cp.call(request, suppress=False, unique_id=item.unique_id)
        except Exception as exc:  # any CSMS refusal, or none in time; not a lost connection
            if isinstance(exc, ConnectionError) or _closed(exc):
                raise
            raise Refused(f"{type(exc).__name__}: {exc}") from None
        with self.state.transaction():
            self.state.dequeue(item.id)
            if item.action in ("StartTransaction", "StopTransaction"):
                session = item.session
                assert session is not None  # _started and _stopped queue them with their session
                if item.action == "StartTransaction":
                    self.state.set_transaction_id(session, int(result.transaction_id))
                else:
                    self.state.forget_transaction(session)
        return result


def _one_of(value: object, allowed: set[str], default: str) -> str:
    """value when it is one of allowed, else default (an event's field from the daemon)."""
    return value if isinstance(value, str) and value in allowed else default


def _closed(exc: BaseException) -> bool:
    from websockets.exceptions import ConnectionClosed
    return isinstance(exc, ConnectionClosed)


def id_tag_info(info: Any) -> dict[str, Any]:
    """A 1.6 idTagInfo as the core keeps it: camelCase, no empty fields (the package hands it in
    snake_case, as a dict or a dataclass)."""
    if info is None:
        return {}
    if not isinstance(info, dict):
        info = vars(info)
    names = {"status": "status", "expiry_date": "expiryDate", "parent_id_tag": "parentIdTag"}
    return {names.get(k, k): v for k, v in info.items() if v is not None}
