"""OCPP 2.0.1 transactions, pure: the daemon's durable events -> TransactionEvent Started/Updated/Ended
per EVSE (seqNo, triggerReason, chargingState, offline, meter values, stoppedReason), with the
transaction's start and end where TxCtrlr's TxStartPoint and TxStopPoint put them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping

# daemon stop reason -> (stoppedReason, triggerReason of the Ended)
STOPS = {
    "ev_disconnected": ("EVDisconnected", "EVCommunicationLost"),
    "local": ("Local", "StopAuthorized"),
    "remote": ("Remote", "RemoteStop"),
    "deauthorized": ("DeAuthorized", "Deauthorized"),
    "emergency_stop": ("EmergencyStop", "AbnormalCondition"),
    "ground_fault": ("GroundFault", "AbnormalCondition"),
    "power_loss": ("PowerLoss", "AbnormalCondition"),
    "reboot": ("Reboot", "AbnormalCondition"),
    "other": ("Other", "AbnormalCondition"),
    "reset": ("ImmediateReset", "ResetCommand"),  # the uplink's own: a Reset it was asked for
}
CHARGING = {"Charging": "Charging", "SuspendedEV": "SuspendedEV", "SuspendedEVSE": "SuspendedEVSE"}
PLUGGED = frozenset({"Charging", "SuspendedEV", "SuspendedEVSE", "Finishing"})  # a status that needs an EV
UNPLUGGED = frozenset({"Available", "Unavailable"})
UNITS = {"Energy.Active.Import.Register": "Wh", "Power.Active.Import": "W", "Current.Import": "A",
         "Current.Offered": "A", "Voltage": "V"}


@dataclass(frozen=True)
class Tx:
    """The open transaction of an EVSE: its id (made here) and what was sent of it."""

    transaction_id: str
    seq_no: int                   # the next TransactionEvent's seqNo
    charging_state: str           # the last one sent
    id_token: str | None = None   # sent with the transaction (the daemon session's id tag)
    remote_start_id: int | None = None
    last_at: str = ""             # the newest timestamp sent: the next is never earlier


@dataclass(frozen=True)
class Evse:
    """What the daemon's durable events said of one EVSE, and its open transaction."""

    ev_connected: bool = False
    authorized: bool = False          # a daemon session runs (authorized with an EV)
    power_path_closed: bool = False   # the contactor is closed
    status: str = "Available"         # the daemon's connector status (1.6 names)
    session: str | None = None
    id_tag: str | None = None
    id_type: str = "ISO14443"         # the IdTokenEnumType of id_tag
    meter_wh: int | None = None       # the session's reading at its start or stop
    tx: Tx | None = None

    def points(self) -> dict[str, bool]:
        return {"EVConnected": self.ev_connected, "Authorized": self.authorized,
                "PowerPathClosed": self.power_path_closed, "EnergyTransfer": self.status == "Charging"}

    def charging_state(self) -> str:
        if self.status in CHARGING:
            return CHARGING[self.status]
        return "EVConnected" if self.ev_connected else "Idle"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Evse:
        tx = data.get("tx")
        return Evse(**{**data, "tx": Tx(**tx) if tx else None})


@dataclass(frozen=True)
class Context:
    """What a step needs besides the event: all given, nothing read from a clock or a store."""

    evse_id: int
    start_points: frozenset[str]
    stop_points: frozenset[str]
    new_transaction_id: str             # used when this step starts a transaction
    offline: bool = False               # the station has no accepted connection to the CSMS now
    sample: Mapping[str, Any] | None = None   # the newest session.sample of the EVSE
    started_measurands: tuple[str, ...] = ("Energy.Active.Import.Register",)
    ended_measurands: tuple[str, ...] = ("Energy.Active.Import.Register",)
    remote_start_id: int | None = None  # a RequestStartTransaction waiting for its transaction's first event
    reservation_id: int | None = None   # the reservation the session's id tag used
    id_type: str | None = None          # the type the CSMS gave the session's id tag (RequestStart, list)
    stop_reason: str | None = None      # a reason the uplink caused (a Reset), over the daemon's


def facts(before: Evse, event: Mapping[str, Any], id_type: str | None = None) -> Evse:
    """The EVSE after one durable daemon event (its transaction untouched)."""
    kind = event.get("type")
    if kind == "connector.status":
        status = str(event.get("status") or "Faulted")
        plugged = event.get("ev_connected")
        if not isinstance(plugged, bool):  # a daemon that does not say: what the status implies
            plugged = True if status in PLUGGED else False if status in UNPLUGGED else before.ev_connected
        return replace(before, status=status, ev_connected=plugged)
    if kind == "session.started":
        tag = str(event.get("id_tag") or "")
        return replace(before, authorized=True, ev_connected=True, session=str(event.get("session")),
                       id_tag=tag, id_type=id_type or token_type(tag, str(event.get("auth_source") or "")),
                       meter_wh=_int(event.get("meter_start_wh")))
    if kind == "session.stopped":
        gone = event.get("reason") == "ev_disconnected"
        return replace(before, authorized=False, ev_connected=before.ev_connected and not gone,
                       meter_wh=_int(event.get("meter_stop_wh")), session=None)
    if kind == "contactor.closed":
        return replace(before, power_path_closed=True)
    if kind == "contactor.opened":
        return replace(before, power_path_closed=False)
    return before


def step(before: Evse, event: Mapping[str, Any], ctx: Context) -> tuple[Evse, list[dict[str, Any]]]:
    """One durable event: the EVSE after it and the TransactionEvent payloads it causes (0-2)."""
    after = facts(before, event, ctx.id_type)
    was, now = before.points(), after.points()
    out: list[dict[str, Any]] = []
    tx = after.tx
    at = str(event.get("stopped_at") or event.get("started_at") or event.get("at") or "")
    at = max(at, tx.last_at) if tx is not None else at  # ISO 8601 UTC with ms: ordered as text
    fell = [p for p in ctx.stop_points if was[p] and not now[p]]
    gone = before.ev_connected and not after.ev_connected  # StopTxOnEVSideDisconnect
    empty = not (after.ev_connected or after.authorized or after.power_path_closed)  # nothing left of it
    if tx is not None and (fell or gone or empty):
        return replace(after, tx=None, meter_wh=None), [_ended(after, tx, event, ctx, at)]
    rose = [p for p in ("Authorized", "EVConnected", "PowerPathClosed", "EnergyTransfer") if now[p] and not was[p]]
    if tx is None:
        started = [p for p in rose if p in ctx.start_points]
        if not started:
            return after, out
        tx = Tx(ctx.new_transaction_id, 0, after.charging_state(), remote_start_id=ctx.remote_start_id)
        trigger = _trigger(started[0], ctx)
        payload = _event("Started", at, trigger, tx, after, ctx)
        payload["evse"] = {"id": ctx.evse_id, "connectorId": 1}
        if ctx.reservation_id is not None and after.authorized:
            payload["reservationId"] = ctx.reservation_id
        energy = _sample_wh(ctx.sample)
        if event.get("type") == "session.started" or (energy is None and after.authorized):
            energy = after.meter_wh  # the session's own start reading
        values = sampled(ctx.sample, energy, ctx.started_measurands, "Transaction.Begin")
        if values:
            payload["meterValue"] = [{"timestamp": at, "sampledValue": values}]
        return _sent(after, tx, payload), [payload]
    if after.authorized and tx.id_token is None and after.id_tag is not None:
        remote = ctx.remote_start_id if tx.remote_start_id is None else None
        payload = _event("Updated", at, "Authorized" if remote is None else "RemoteStart", tx, after, ctx)
        if ctx.reservation_id is not None:
            payload["reservationId"] = ctx.reservation_id
        if remote is not None:
            tx = replace(tx, remote_start_id=remote)
            payload["transactionInfo"]["remoteStartId"] = remote
        return _sent(after, tx, payload), [payload]
    if before.authorized and not after.authorized:  # the authorization ended, the transaction goes on
        reason = ctx.stop_reason or str(event.get("reason"))
        payload = _event("Updated", at, STOPS.get(reason, STOPS["other"])[1], tx, after, ctx)
        return _sent(after, tx, payload), [payload]
    if after.charging_state() != tx.charging_state:
        trigger = "CablePluggedIn" if "EVConnected" in rose else "ChargingStateChanged"
        payload = _event("Updated", at, trigger, tx, after, ctx)
        return _sent(after, tx, payload), [payload]
    return after, out


def meter_update(evse: Evse, at: str, trigger: str, values: list[dict[str, Any]], offline: bool,
                 always: bool = False) -> tuple[Evse, dict[str, Any] | None]:
    """TransactionEvent Updated with meter values (MeterValuePeriodic, MeterValueClock, Trigger) of
    the open transaction; None without one, or without values unless always (a TriggerMessage
    TransactionEvent it accepted)."""
    tx = evse.tx
    if tx is None or not (values or always):
        return evse, None
    at = max(at, tx.last_at)
    payload: dict[str, Any] = {
        "eventType": "Updated", "timestamp": at, "triggerReason": trigger, "seqNo": tx.seq_no,
        "transactionInfo": {"transactionId": tx.transaction_id, "chargingState": evse.charging_state()}}
    if values:
        payload["meterValue"] = [{"timestamp": at, "sampledValue": values}]
    if offline:
        payload["offline"] = True
    return replace(evse, tx=replace(tx, seq_no=tx.seq_no + 1, charging_state=evse.charging_state(), last_at=at)), payload


def sampled(sample: Mapping[str, Any] | None, energy_wh: int | None, measurands: tuple[str, ...] | list[str],
            context: str) -> list[dict[str, Any]]:
    """The sampledValue entries of one daemon session.sample (energy_wh over its reading), only the
    measurands asked for."""
    sample = sample or {}
    out: list[dict[str, Any]] = []

    def add(measurand: str, value: float, phase: str | None = None) -> None:
        entry: dict[str, Any] = {"value": value, "context": context, "measurand": measurand,
                                 "unitOfMeasure": {"unit": UNITS[measurand]}}
        if phase:
            entry["phase"] = phase
        out.append(entry)

    for m in measurands:
        if m == "Energy.Active.Import.Register" and energy_wh is not None:
            add(m, int(energy_wh))
        elif m == "Power.Active.Import" and sample.get("power_w") is not None:
            add(m, round(float(sample["power_w"]), 1))
        elif m == "Current.Offered" and sample.get("offered_a") is not None:
            add(m, round(float(sample["offered_a"]), 1))
        elif m == "Current.Import":
            for n, amps in enumerate(sample.get("current_a") or [], 1):
                add(m, round(float(amps), 1), f"L{n}")
        elif m == "Voltage":
            for n, volts in enumerate(sample.get("voltage_v") or [], 1):
                add(m, round(float(volts), 1), f"L{n}-N")
    return out


def _sample_wh(sample: Mapping[str, Any] | None) -> int | None:
    return _int((sample or {}).get("energy_wh"))


def _int(value: object) -> int | None:
    try:
        return None if value is None else int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def _trigger(point: str, ctx: Context) -> str:
    """The triggerReason of a Started reached at point: RemoteStart when it carries the remoteStartId
    of the RequestStartTransaction it follows (F02.FR.01), whichever TxStartPoint it reached."""
    if ctx.remote_start_id is not None:
        return "RemoteStart"
    return {"Authorized": "Authorized", "EVConnected": "CablePluggedIn"}.get(point, "ChargingStateChanged")


def _event(kind: str, at: str, trigger: str, tx: Tx, evse: Evse, ctx: Context) -> dict[str, Any]:
    info: dict[str, Any] = {"transactionId": tx.transaction_id, "chargingState": evse.charging_state()}
    if kind == "Started" and tx.remote_start_id is not None:
        info["remoteStartId"] = tx.remote_start_id
    payload: dict[str, Any] = {"eventType": kind, "timestamp": at, "triggerReason": trigger, "seqNo": tx.seq_no,
                               "transactionInfo": info}
    if ctx.offline:
        payload["offline"] = True
    if evse.authorized and evse.id_tag is not None and tx.id_token is None:
        token = "" if evse.id_type == "NoAuthorization" else evse.id_tag[:36]
        payload["idToken"] = {"idToken": token, "type": evse.id_type}
    return payload


def _sent(evse: Evse, tx: Tx, payload: Mapping[str, Any]) -> Evse:
    token = tx.id_token or (evse.id_tag if "idToken" in payload else None)
    return replace(evse, tx=replace(tx, seq_no=tx.seq_no + 1, charging_state=evse.charging_state(), id_token=token,
                                    last_at=max(tx.last_at, str(payload["timestamp"]))))


def _ended(evse: Evse, tx: Tx, event: Mapping[str, Any], ctx: Context, at: str) -> dict[str, Any]:
    if event.get("type") == "session.stopped":
        reason, trigger = STOPS.get(ctx.stop_reason or str(event.get("reason")), STOPS["other"])
    elif event.get("type") == "connector.status" and not evse.ev_connected:
        reason, trigger = STOPS["ev_disconnected"]
    else:  # the contactor opened or the energy transfer ended, at a TxStopPoint
        reason, trigger = ("StoppedByEV" if evse.status == "SuspendedEV" else "Other"), "ChargingStateChanged"
    payload = _event("Ended", at, trigger, tx, evse, ctx)
    payload["transactionInfo"]["stoppedReason"] = reason
    payload["transactionInfo"]["chargingState"] = "EVConnected" if evse.ev_connected else "Idle"  # no more energy
    ended = not evse.authorized and evse.meter_wh is not None  # the session's stop reading, once it stopped
    energy = evse.meter_wh if ended else _sample_wh(ctx.sample)
    values = sampled(ctx.sample, energy, ctx.ended_measurands, "Transaction.End")
    if values:
        payload["meterValue"] = [{"timestamp": at, "sampledValue": values}]
    return payload


def token_type(tag: str, auth_source: str) -> str:
    """The IdTokenEnumType of a daemon session's id tag the CSMS did not type: free vend is
    NoAuthorization, a card UID (hex, 4, 7 or 10 bytes) ISO14443, anything else Local."""
    if auth_source == "free_vend":
        return "NoAuthorization"
    is_uid = len(tag) in (8, 14, 20) and all(c in "0123456789ABCDEFabcdef" for c in tag)
    return "ISO14443" if is_uid else "Local"
