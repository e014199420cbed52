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
from evsed.uplink.queue import Refused
from evsed.uplink.state import Queued, State
from evsed.uplink.times import iso, ms
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


def sampled_values(sample: p.SessionSample | None, measurands: list[str], context: str,
                   energy_wh: int | None = None) -> list[dict]:
    """The sampledValue entries for one daemon session.sample (energy_wh: the register instead of the
    sample's), only the measurands asked for."""
    out: list[dict] = []
    energy = energy_wh if energy_wh is not None else sample.energy_wh if sample is not None else None

    def add(measurand, value, unit, phase=None):
        entry = {"value": str(value), "context": context, "measurand": measurand, "unit": unit}
        if phase:
            entry["phase"] = phase
        out.append(entry)

    for m in measurands:
        if m == "Energy.Active.Import.Register" and energy is not None:
            add(m, energy, "Wh")
        elif sample is None:
            continue
        elif m == "Power.Active.Import":
            add(m, round(sample.power_w, 1), "W")
        elif m == "Current.Offered":
            add(m, round(sample.offered_a, 1), "A")
        elif m == "Current.Import":
            for n, amps in enumerate(sample.current_a, 1):
                add(m, round(amps, 1), "A", f"L{n}")
        elif m == "Voltage":
            for n, volts in enumerate(sample.voltage_v, 1):
                add(m, round(volts, 1), "V", f"L{n}-N")
    return out


class Messages:
    """Turns daemon events into queued messages; drop(item, why) takes one off the queue for good."""

    def __init__(self, state: State, keys: Values, clock: Callable[[], float],
                 drop: Callable[[Queued, str], None]):
        self.state, self.keys, self.clock, self.drop = state, keys, clock, drop
        self.samples: dict[int, p.SessionSample] = {}  # the newest session.sample per connector
        self.reservations: dict[int, dict] = {}    # reservation_id -> connector, id_tag
        self.stop_reasons: dict[int, str] = {}     # connector -> Reason the uplink caused
        self.faults: dict[int, dict[str, str]] = {}  # connector -> latched fault -> detail
        self.on_started: Callable[[int, str], None] = lambda connector, session: None
        self.on_stopped: Callable[[int, str], None] = lambda connector, session: None

    def on_event(self, event: p.Event) -> bool:
        """Apply one event; True when it was made durable with its seq (live events: False)."""
        connector = event.connector
        if isinstance(event, p.SessionSample):
            self.samples[connector] = event
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
        return True

    def seed(self, status: p.ConnectorStatus) -> None:
        """A connector as the daemon's status reports it (its latched faults, its status): what an
        uplink new to the charger starts from, queued as a StatusNotification."""
        for fault in status.faults:
            self.faults.setdefault(status.id, {})[fault.fault] = (fault.detail or fault.fault)[:50]
        self._status(status.id, status.status, status.reason)

    def _fault(self, connector: int, event: p.FaultRaised | p.FaultCleared) -> None:
        """Faults give the error code of the connector's StatusNotification (sent when it changes)."""
        faults = self.faults.setdefault(connector, {})
        if isinstance(event, p.FaultRaised):
            faults[event.fault] = (event.detail or event.fault)[:50]
        else:
            for name in event.faults:
                faults.pop(name, None)
        before = self.state.statuses().get(connector)
        if before is not None and before[1] != self.error_code(connector):
            self._status(connector, before[0])

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
        self.state.enqueue("StatusNotification", self.status_payload(connector, status, error, info, at),
                           connector=connector, tx=False)

    def status_payload(self, connector, status, error, info, at=None) -> dict:
        payload = {"connectorId": connector, "errorCode": error, "status": status,
                   "timestamp": ms(at) if at else iso(self.clock())}
        if info:
            payload["info"] = info
        return payload

    def _started(self, connector: int, event: p.SessionStarted) -> None:
        session, tag = str(event.session), id_tag(event.id_tag)
        started_at = ms(event.started_at or event.at) or iso(self.clock())
        meter = event.meter_start_wh
        self.state.open_session(connector, session, tag, started_at, meter)
        payload = {"connectorId": connector, "idTag": tag, "meterStart": meter, "timestamp": started_at}
        for rid, res in list(self.reservations.items()):
            if res["id_tag"] == tag and res["connector"] in (0, connector):
                payload["reservationId"] = rid
                del self.reservations[rid]
                break
        self.state.enqueue("StartTransaction", payload, session=session, connector=connector)

    def _stopped(self, connector: int, event: p.SessionStopped) -> None:
        session = str(event.session)
        opened = self.state.sessions().get(connector)
        if opened is None or opened["session"] != session:
            # started before the uplink followed the charger (its first contact): no transaction at the CSMS
            log.info("ocpp.session_before_uplink", connector=connector, session=session)
            return
        stopped_at = ms(event.stopped_at or event.at) or iso(self.clock())
        meter = event.meter_stop_wh
        reason = self.stop_reasons.pop(connector, None) or REASONS.get(event.reason, "Other")
        payload = {"meterStop": meter, "timestamp": stopped_at, "reason": reason,
                   "transactionId": 0}  # the real id is filled in when it is sent
        if event.id_tag:
            payload["idTag"] = id_tag(event.id_tag)
        data = []
        if opened and opened["session"] == session:
            data.append({"timestamp": opened["started_at"], "sampledValue": [{
                "value": str(opened["meter_start_wh"]), "context": "Transaction.Begin",
                "measurand": "Energy.Active.Import.Register", "unit": "Wh"}]})
        values = sampled_values(self.samples.get(connector), self.keys.list("StopTxnSampledData"), "Transaction.End",
                                energy_wh=meter)
        if values:
            data.append({"timestamp": stopped_at, "sampledValue": values})
        if data:
            payload["transactionData"] = data
        self.state.close_session(connector)
        self.samples.pop(connector, None)
        self.state.enqueue("StopTransaction", payload, session=session, connector=connector)

    def meter_values(self, connector: int, context: str) -> bool:
        """Queue a MeterValues from the newest sample (Sample.Periodic or Sample.Clock)."""
        sample = self.samples.get(connector)
        key = "MeterValuesAlignedData" if context == "Sample.Clock" else "MeterValuesSampledData"
        values = sampled_values(sample, self.keys.list(key), context)
        if not values:
            return False
        session = self.state.sessions().get(connector)
        payload = {"connectorId": connector, "meterValue": [{"timestamp": iso(self.clock()),
                                                              "sampledValue": values}]}
        if session:
            payload["transactionId"] = 0
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
