"""OCPP 2.0.1 messages from the charger's events, queued durably (one SQLite transaction per event,
with its seq and the EVSE's transaction state): StatusNotification, TransactionEvent, NotifyEvent
for faults, SecurityEventNotification; MeterValues; and the delivery of a queued message."""

from __future__ import annotations

import itertools
import json
import uuid
from typing import Any, Callable

import structlog
from ocpp.charge_point import camel_to_snake_case, snake_to_camel_case
from ocpp.v201 import call
from websockets.exceptions import ConnectionClosed

from evsed import protocol as p
from evsed.uplink.queue import Refused
from evsed.uplink.state import Queued, State
from evsed.uplink.times import iso, ms
from evsed.uplink.v201 import notify, transactions
from evsed.uplink.v201.device_model import DeviceModel
from evsed.uplink.v201.transactions import Context, Evse

log = structlog.get_logger("evsed.uplink")
PLUGGED = ("B", "C", "D")  # pilot states with an EV


def sample_of(event: p.SessionSample) -> dict[str, Any]:
    """A daemon meter sample in the form transactions.sampled reads."""
    return {"energy_wh": event.energy_wh, "power_w": event.power_w, "current_a": list(event.current_a),
            "voltage_v": list(event.voltage_v), "offered_a": event.offered_a}


def fact(event: p.Event) -> dict[str, Any] | None:
    """What the transaction mapping reads of one durable event (transactions.step's input), None for
    the events it does not follow; times in OCPP's form."""
    at = ms(event.at)
    if isinstance(event, p.StatusChanged):
        return {"type": "connector.status", "status": event.status, "ev_connected": event.ev_connected, "at": at}
    if isinstance(event, p.SessionStarted):
        return {"type": "session.started", "session": str(event.session), "id_tag": event.id_tag,
                "auth_source": event.auth_source, "meter_start_wh": event.meter_start_wh,
                "started_at": ms(event.started_at), "at": at}
    if isinstance(event, p.SessionStopped):
        return {"type": "session.stopped", "session": str(event.session), "reason": event.reason,
                "meter_stop_wh": event.meter_stop_wh, "stopped_at": ms(event.stopped_at), "at": at}
    if isinstance(event, (p.ContactorClosed, p.ContactorOpened)):
        return {"type": event.TYPE, "at": at}
    return None


def request(action: str, payload: dict[str, Any]) -> Any:
    """The ocpp package's request object for a camelCase payload (it validates it when sent)."""
    return getattr(call, action)(**camel_to_snake_case(payload))


class Messages:
    """Turns daemon events into queued 2.0.1 messages. online() says whether the station has an
    accepted connection now (the offline flag); drop(item, why) takes one off the queue for good."""

    def __init__(self, state: State, model: DeviceModel, clock: Callable[[], float], connectors: list[int],
                 online: Callable[[], bool], new_id: Callable[[], str] = lambda: str(uuid.uuid4())):
        self.state, self.model, self.clock, self.connectors = state, model, clock, connectors
        self.online, self.new_id = online, new_id
        self.samples: dict[int, dict[str, Any]] = {}      # the newest session.sample per EVSE
        self.reservations: dict[int, dict[str, Any]] = {}  # reservation id -> evse (None: any), id token
        self.stop_reasons: dict[int, str] = {}            # evse -> the reason the uplink caused (reset)
        self.id_types: dict[str, str] = {}                # id token -> the type the CSMS gave it
        self._next_id = ""                                # the id the next transaction gets
        self.on_started: Callable[[int, str], None] = lambda evse, session: None
        self.on_stopped: Callable[[int, str], None] = lambda evse, session: None
        self.on_remote_over: Callable[[int], None] = lambda evse: None  # a remote start that will not start

    # -- the EVSEs' persisted state ---------------------------------------------------------------
    def evse(self, evse_id: int) -> Evse:
        text = self.state.meta(f"v201.evse.{evse_id}")
        return Evse.from_json(json.loads(text)) if text else Evse()

    def _put(self, evse_id: int, evse: Evse) -> None:
        self.state.set_meta(f"v201.evse.{evse_id}", json.dumps(evse.to_json(), separators=(",", ":")))

    def open_transactions(self) -> dict[int, str]:
        """evse -> its open transaction's id."""
        out = {}
        for evse_id in self.connectors:
            tx = self.evse(evse_id).tx
            if tx is not None:
                out[evse_id] = tx.transaction_id
        return out

    def remote_start(self, evse_id: int, remote_start_id: int, id_token: dict[str, Any]) -> None:
        """A RequestStartTransaction going to the daemon: its id waits for the first TransactionEvent
        of the transaction it starts, whichever TxStartPoint opens it (F02.FR.01)."""
        self.state.set_meta(f"v201.remote.{evse_id}", json.dumps([remote_start_id, id_token["idToken"],
                                                                   id_token["type"]]))
        self.id_types[id_token["idToken"]] = id_token["type"]

    def remote_start_over(self, evse_id: int, remote_start_id: int | None = None) -> bool:
        """A RequestStartTransaction that will not start a transaction waits no more (None: whichever
        waits); True when one did."""
        waiting = self.state.meta(f"v201.remote.{evse_id}")
        if not waiting or remote_start_id not in (None, json.loads(waiting)[0]):
            return False
        self.state.set_meta(f"v201.remote.{evse_id}", "")
        return True

    # -- events --------------------------------------------------------------------------------------
    def on_event(self, event: p.Event) -> bool:
        """Apply one event; True when it was made durable with its seq (live events: False)."""
        evse_id = event.connector
        if isinstance(event, p.SessionSample):
            self.samples[evse_id] = sample_of(event)
        if event.seq is None:
            return False
        with self.state.transaction():
            seen = fact(event)
            if evse_id in self.connectors and seen is not None:
                self._evse_event(evse_id, seen, durable=True)
            elif isinstance(event, (p.FaultRaised, p.FaultCleared)):
                self._fault(evse_id, event)
            elif isinstance(event, p.SessionClockCorrected):
                self.state.enqueue("SecurityEventNotification", notify.security_event(
                    "SettingSystemTime", self._at(event.at), f"a session's clock moved {event.by_s:+.0f} s"),
                    tx=False)
            self.state.set_meta("seq", event.seq)
        if isinstance(event, p.SessionStarted):
            self.on_started(evse_id, str(event.session))
        elif isinstance(event, p.SessionStopped):
            self.samples.pop(evse_id, None)
            self.on_stopped(evse_id, str(event.session))
        return True

    def seed(self, status: p.ConnectorStatus) -> None:
        """An EVSE as the daemon's status shows it at the uplink's first contact: its status is sent."""
        if status.id in self.connectors:
            self._evse_event(status.id, {"type": "connector.status", "status": status.status,
                                         "ev_connected": status.state in PLUGGED, "at": iso(self.clock())})

    def seed_charger(self, available: bool) -> None:
        """The station as a whole has no StatusNotification in 2.0.1 (its EVSEs' connectors tell it)."""

    def _evse_event(self, evse_id: int, event: dict[str, Any], durable: bool = False) -> None:
        before = self.evse(evse_id)
        ctx = self._context(evse_id, event, before)
        after, payloads = transactions.step(before, event, ctx)
        if after.tx is not None and after.tx.transaction_id == self._next_id:
            self._next_id = ""  # taken
        if event["type"] == "connector.status":
            self.state.set_status(evse_id, after.status, "NoError", None)
            if notify.connector_status(after.status, after.ev_connected) != \
                    notify.connector_status(before.status, before.ev_connected) or not durable:
                self.state.enqueue("StatusNotification", notify.status_notification(
                    evse_id, after.status, after.ev_connected, self._at(event.get("at"))), connector=evse_id,
                    tx=False)
        elif event["type"] == "session.started":
            self.state.open_session(evse_id, str(event.get("session")), str(event.get("id_tag") or ""),
                                    event.get("started_at") or self._at(event.get("at")),
                                    int(event.get("meter_start_wh") or 0))
        elif event["type"] == "session.stopped":
            self.state.close_session(evse_id)
            self.stop_reasons.pop(evse_id, None)
        self._remote_taken(evse_id, event, after, ctx, payloads)
        for payload in payloads:
            self.state.enqueue("TransactionEvent", payload, session=after.session or before.session,
                               connector=evse_id)
            log.info("ocpp.transaction_event", evse=evse_id, event_type=payload["eventType"],
                     trigger=payload["triggerReason"], seq_no=payload["seqNo"])
        self._put(evse_id, after)

    def _remote_taken(self, evse_id: int, event: dict[str, Any], after: Evse, ctx: Context,
                      payloads: list[dict[str, Any]]) -> None:
        """The waiting remote start ends with the TransactionEvent that carries its id; or without
        one, when another token's session starts, the session ends, or the EVSE is Available again
        (its authorization expired unused)."""
        if any("remoteStartId" in payload["transactionInfo"] for payload in payloads):
            self.remote_start_over(evse_id)
        elif ((event["type"] == "session.started" and ctx.remote_start_id is None)
              or event["type"] == "session.stopped"
              or (event["type"] == "connector.status" and after.status == "Available")):
            if self.remote_start_over(evse_id):
                log.info("ocpp.remote_start_over", evse=evse_id, event=event["type"])
                self.on_remote_over(evse_id)

    def _context(self, evse_id: int, event: dict[str, Any], before: Evse) -> Context:
        m = self.model
        remote_id, id_type = None, None
        tag = str(event.get("id_tag") or "")
        waiting = self.state.meta(f"v201.remote.{evse_id}")
        if event["type"] == "session.started":
            id_type = self.id_types.get(tag)
        if waiting:
            rid, remote_tag, remote_type = json.loads(waiting)
            if event["type"] != "session.started":  # the EVSE's authorization is the remote start's
                remote_id = int(rid)
            elif remote_tag == tag:  # kept across a restart with the type the CSMS gave
                remote_id, id_type = int(rid), remote_type
        reservation = None
        for rid, res in list(self.reservations.items()):
            if event["type"] == "session.started" and res["id_token"] == tag and res["evse"] in (None, evse_id):
                reservation = rid
                del self.reservations[rid]
                break
        return Context(
            evse_id=evse_id, start_points=frozenset(m.member_list("TxCtrlr", "TxStartPoint")),
            stop_points=frozenset(m.member_list("TxCtrlr", "TxStopPoint")), new_transaction_id=self._new_id(),
            offline=not self.online(), sample=self.samples.get(evse_id),
            started_measurands=tuple(m.member_list("SampledDataCtrlr", "TxStartedMeasurands")),
            ended_measurands=tuple(m.member_list("SampledDataCtrlr", "TxEndedMeasurands")),
            remote_start_id=remote_id, reservation_id=reservation, id_type=id_type,
            stop_reason=self.stop_reasons.get(evse_id))

    def _new_id(self) -> str:
        self._next_id = self._next_id or self.new_id()
        return self._next_id

    def _fault(self, evse_id: int, event: p.FaultRaised | p.FaultCleared) -> None:
        at, tx = self._at(event.at), self.evse(evse_id).tx if evse_id in self.connectors else None
        where = evse_id if evse_id in self.connectors else (self.connectors or [1])[0]
        if isinstance(event, p.FaultRaised):
            faults = [(event.fault, True, event.detail)]
        else:
            faults = [(name, False, "") for name in event.faults]
        data = [notify.fault_event(self.state.bump("v201.event_id"), where, name, raised, at, detail,
                                   tx.transaction_id if tx else None) for name, raised, detail in faults]
        if data:
            self.state.enqueue("NotifyEvent", {"generatedAt": at, "seqNo": 0, "eventData": data}, tx=False)

    def _at(self, at: object) -> str:
        return ms(at) or iso(self.clock())

    # -- meter values ------------------------------------------------------------------------------
    def meter_values(self, evse_id: int, context: str, reading: dict[str, Any] | None = None,
                     always: bool = False) -> bool:
        """Queue the meter values due (Sample.Periodic, Sample.Clock, Trigger) for an EVSE: a
        TransactionEvent of its open transaction (always: even without values), else (clock-aligned
        while idle, or a trigger) a MeterValues. reading: a meter reading in session.sample's form
        for an EVSE without a session (the daemon's status). False when nothing was queued."""
        m, evse = self.model, self.evse(evse_id)
        sample = self.samples.get(evse_id) or reading  # between sessions: the daemon's last reading
        if context == "Sample.Periodic":
            measurands, trigger = m.member_list("SampledDataCtrlr", "TxUpdatedMeasurands"), "MeterValuePeriodic"
        elif context == "Sample.Clock":
            measurands, trigger = m.member_list("AlignedDataCtrlr", "Measurands"), "MeterValueClock"
        else:
            measurands, trigger = m.member_list("AlignedDataCtrlr", "Measurands"), "Trigger"
        energy = transactions._int((sample or {}).get("energy_wh"))
        values = transactions.sampled(sample, energy, measurands, context)
        at = iso(self.clock())
        with self.state.transaction():
            after, payload = transactions.meter_update(evse, at, trigger, values, not self.online(), always)
            if payload is not None:
                self.state.enqueue("TransactionEvent", payload, session=evse.session, connector=evse_id)
                self._put(evse_id, after)
                return True
            if values and (context == "Trigger" or m.bool("AlignedDataCtrlr", "SendDuringIdle")):
                self.state.enqueue("MeterValues", {"evseId": evse_id, "meterValue": [
                    {"timestamp": at, "sampledValue": values}]}, connector=evse_id, tx=False)
                return True
        return False

    async def deliver(self, cp: Any, item: Queued) -> dict[str, Any]:
        """Send item; its CALLRESULT's payload (camelCase) once dequeued. Raises Refused for a
        CALLERROR, no answer, or a payload the official schema refuses; a lost connection propagates."""
        try:
            result = await cp.call(request(item.action, item.payload), suppress=False, unique_id=item.unique_id)
        except Exception as exc:  # any CSMS refusal, or none in time; not a lost connection
            if isinstance(exc, (ConnectionError, ConnectionClosed)):
                raise
            raise Refused(f"{type(exc).__name__}: {exc}") from None
        self.state.dequeue(item.id)
        answer: dict[str, Any] = snake_to_camel_case({k: v for k, v in vars(result).items() if v is not None})
        return answer

    def statuses(self) -> list[dict[str, Any]]:
        """Every EVSE's StatusNotification as it stands (after a boot, or a trigger)."""
        at = iso(self.clock())
        return [notify.status_notification(e, self.evse(e).status, self.evse(e).ev_connected, at)
                for e in self.connectors]


def unique_ids() -> Callable[[], str]:
    """Transaction ids for tests: tx-1, tx-2..."""
    counter = itertools.count(1)
    return lambda: f"tx-{next(counter)}"
