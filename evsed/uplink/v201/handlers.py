"""What the CSMS may ask of an OCPP 2.0.1 charging station (the CALLs from the central system), each
answered through the narrow ports it needs, payloads in and out as camelCase dicts. No handler
awaits an outbound OCPP call (ocpp issue #130): follow-ups run in @after hooks beside the loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from ocpp.v201.enums import Action

from evsed.uplink.auth import AuthStore, Info
from evsed.uplink.certificates import STATION, Certificates
from evsed.uplink.times import iso, parse_time
from evsed.uplink.v201.device_model import DeviceModel
from evsed.uplink.v201.framing import CallRejected, StrictChargePoint, after, on
from evsed.uplink.v201.profiles import Profiles

log = structlog.get_logger("evsed.uplink")
Payload = dict[str, Any]
TRIGGERS = ("BootNotification", "LogStatusNotification", "FirmwareStatusNotification", "Heartbeat", "MeterValues",
            "SignChargingStationCertificate", "StatusNotification", "TransactionEvent")


class Daemon(Protocol):
    """The daemon's commands a CSMS request becomes (evsed.uplink.charger.Charger)."""

    connectors: list[int]

    async def remote_start(self, connector: int, id_tag: str, check: bool = False) -> bool: ...
    async def remote_stop(self, connector: int, reason: str) -> bool: ...
    async def availability(self, connector: int, operative: bool) -> str: ...
    async def unlock(self, connector: int) -> str: ...
    async def reserve(self, connector: int, id_tag: str, until: str, reservation_id: int) -> str: ...
    async def cancel_reservation(self, reservation_id: int) -> bool: ...


class Station(Protocol):
    """What the handlers ask of the station's own state and behaviour (the 2.0.1 uplink)."""

    def registration(self) -> str: ...
    def free_evse(self) -> int | None: ...
    def transactions(self) -> dict[int, str]: ...
    def authorized(self, evse: int) -> bool: ...
    def remote_start(self, evse: int, remote_start_id: int, id_token: Payload, profile: Payload | None) -> None: ...
    def remote_start_over(self, evse: int, remote_start_id: int) -> None: ...
    def start_authorized(self, evse: int, remote_start_id: int, id_token: Payload) -> None: ...
    def stop_reason(self, evse: int, reason: str) -> None: ...
    def reserved(self, reservation_id: int, evse: int | None, id_token: str | None) -> None: ...
    def queued_for(self, transaction_id: str | None) -> bool: ...
    async def reset(self, on_idle: bool) -> None: ...
    async def trigger(self, message: str, evse: int | None) -> None: ...
    async def report(self, request_id: int, data: list[Payload]) -> None: ...
    async def report_profiles(self, request_id: int, found: list[tuple[int, Payload]]) -> None: ...
    def variables_changed(self, names: list[str]) -> None: ...
    def variables_answered(self) -> None: ...
    def set_password(self, value: str) -> bool: ...
    def get_log(self, request_id: int, location: str, retries: int, interval_s: int) -> str: ...
    def update_firmware(self, request_id: int, firmware: Payload, retries: int, interval_s: int) -> str: ...
    def security_event(self, kind: str, info: str = "") -> None: ...
    def cost_updated(self, transaction_id: str, total_cost: float) -> None: ...


@dataclass(frozen=True)
class Ports:
    daemon: Daemon
    station: Station
    model: DeviceModel
    auth: AuthStore
    profiles: Profiles
    certificates: Certificates


def info_of(token_info: Payload | None) -> Info:
    """A 2.0.1 idTokenInfo in the core's id tag form ({"status", "expiryDate", "parentIdTag"})."""
    if not token_info:
        return {}
    out: Info = {"status": token_info.get("status", "Invalid")}
    if token_info.get("cacheExpiryDateTime"):
        out["expiryDate"] = token_info["cacheExpiryDateTime"]
    group = token_info.get("groupIdToken")
    if isinstance(group, dict) and group.get("idToken"):
        out["parentIdTag"] = group["idToken"]
    return out


class CentralCommands(StrictChargePoint):
    def __init__(self, id: str, connection: Any, ports: Ports, response_timeout: float = 30, **kw: Any):
        super().__init__(id, connection, response_timeout, **kw)
        self.ports = ports

    def _evse_ok(self, evse: int | None) -> bool:
        return evse is None or evse in self.ports.daemon.connectors

    def refused(self, action: str, payload: Payload) -> CallRejected | None:
        """A Rejected station answers the CSMS nothing but a TriggerMessage (for its boot, B03)."""
        if self.ports.station.registration() == "Rejected" and action != Action.trigger_message:
            return CallRejected("SecurityError", "the CSMS rejected this station's BootNotification")
        return None

    def _accepted(self) -> bool:
        """Whether the CSMS accepted the station's boot: before, it is configured, not used (B02)."""
        return self.ports.station.registration() == "Accepted"

    # -- device model (B05-B08) -----------------------------------------------------------------
    @on(Action.get_variables)
    def on_get_variables(self, p: Payload) -> Payload:
        model = self.ports.model
        if len(p["getVariableData"]) > model.int("DeviceDataCtrlr", "ItemsPerMessage", "GetVariables"):
            raise CallRejected("OccurrenceConstraintViolation", "more than ItemsPerMessageGetVariables")
        return {"getVariableResult": model.get(p["getVariableData"])}

    @on(Action.set_variables)
    def on_set_variables(self, p: Payload) -> Payload:
        model = self.ports.model
        if len(p["setVariableData"]) > model.int("DeviceDataCtrlr", "ItemsPerMessage", "SetVariables"):
            raise CallRejected("OccurrenceConstraintViolation", "more than ItemsPerMessageSetVariables")
        results, changed = model.set(p["setVariableData"])
        if changed:
            log.info("ocpp.variables_changed", variables=[v.key for v in changed if not v.secret])
            self.ports.station.variables_changed([v.name for v in changed])
        return {"setVariableResult": results}

    @after(Action.set_variables)
    async def after_set_variables(self, p: Payload) -> None:
        self.ports.station.variables_answered()  # a new password: reconnect once the answer is out

    @on(Action.get_base_report)
    def on_get_base_report(self, p: Payload) -> Payload:
        return {"status": "Accepted"}

    @after(Action.get_base_report)
    async def after_get_base_report(self, p: Payload) -> None:
        await self.ports.station.report(p["requestId"], self.ports.model.base_report(p["reportBase"]))

    @on(Action.get_report)
    def on_get_report(self, p: Payload) -> Payload:
        found = self.ports.model.custom_report(p.get("componentVariable"), p.get("componentCriteria"))
        return {"status": "Accepted" if found else "EmptyResultSet"}

    @after(Action.get_report)
    async def after_get_report(self, p: Payload) -> None:
        found = self.ports.model.custom_report(p.get("componentVariable"), p.get("componentCriteria"))
        if found:
            await self.ports.station.report(p["requestId"], found)

    @on(Action.set_network_profile)
    def on_set_network_profile(self, p: Payload) -> Payload:
        return {"status": "Rejected", "statusInfo": {"reasonCode": "UnsupportedRequest",
                                                     "additionalInfo": "the CSMS endpoint is set in evsed.toml [ocpp]"}}

    # -- transactions (F01-F06) -------------------------------------------------------------------
    @on(Action.request_start_transaction)
    async def on_request_start(self, p: Payload) -> Payload:
        ports, token = self.ports, p["idToken"]
        profile = p.get("chargingProfile")
        evse = p.get("evseId") or ports.station.free_evse()
        if not self._accepted() or evse is None or not self._evse_ok(evse) or (
                profile is not None and profile["chargingProfilePurpose"] != "TxProfile"):
            return {"status": "Rejected"}
        running = ports.station.transactions().get(evse)
        if ports.station.authorized(evse):
            return {"status": "Rejected", **({"transactionId": running} if running else {})}
        authorize_first = ports.model.bool("AuthCtrlr", "AuthorizeRemoteStart")
        # Rejected when the daemon will not start it, whether it is asked to start now or only after
        # the token is authorized (then Accepted first: no outbound call is awaited here)
        accepted = not authorize_first or await ports.daemon.remote_start(evse, token["idToken"], check=True)
        if accepted:
            ports.station.remote_start(evse, p["remoteStartId"], token, profile)
            if authorize_first:
                ports.station.start_authorized(evse, p["remoteStartId"], token)
            elif not await ports.daemon.remote_start(evse, token["idToken"]):
                accepted = False
                ports.station.remote_start_over(evse, p["remoteStartId"])
        answer: Payload = {"status": "Accepted" if accepted else "Rejected"}
        if running:
            answer["transactionId"] = running
        return answer

    @on(Action.request_stop_transaction)
    async def on_request_stop(self, p: Payload) -> Payload:
        for evse, tid in self.ports.station.transactions().items():
            if tid == p["transactionId"] and self._accepted():
                ok = await self.ports.daemon.remote_stop(evse, "remote")
                return {"status": "Accepted" if ok else "Rejected"}
        return {"status": "Rejected"}

    @on(Action.get_transaction_status)
    def on_get_transaction_status(self, p: Payload) -> Payload:
        tid = p.get("transactionId")
        answer: Payload = {"messagesInQueue": self.ports.station.queued_for(tid)}
        if tid is not None:
            answer["ongoingIndicator"] = tid in self.ports.station.transactions().values()
        return answer

    @on(Action.cost_updated)
    def on_cost_updated(self, p: Payload) -> Payload:
        log.info("ocpp.cost_updated", transaction=p["transactionId"], total_cost=p["totalCost"])
        self.ports.station.cost_updated(p["transactionId"], float(p["totalCost"]))
        return {}

    # -- availability, reset, unlock, trigger (B11-B12, G03-G04, F05-F06) ----------------------------
    @on(Action.reset)
    def on_reset(self, p: Payload) -> Payload:
        if p.get("evseId") is not None:  # one EVSE alone cannot restart: the daemon runs them all
            return {"status": "Rejected", "statusInfo": {"reasonCode": "UnsupportedRequest"}}
        if p["type"] == "OnIdle" and self.ports.station.transactions():
            return {"status": "Scheduled"}
        return {"status": "Accepted"}

    @after(Action.reset)
    async def after_reset(self, p: Payload) -> None:
        if p.get("evseId") is None:
            await self.ports.station.reset(on_idle=p["type"] == "OnIdle")

    @on(Action.change_availability)
    async def on_change_availability(self, p: Payload) -> Payload:
        evse = (p.get("evse") or {}).get("id", 0)
        connector = (p.get("evse") or {}).get("connectorId")
        if evse and (not self._evse_ok(evse) or connector not in (None, 1)):
            return {"status": "Rejected", "statusInfo": {"reasonCode": "UnknownEvse"}}
        status = await self.ports.daemon.availability(evse, p["operationalStatus"] == "Operative")
        return {"status": status}

    @on(Action.unlock_connector)
    async def on_unlock(self, p: Payload) -> Payload:
        evse = p["evseId"]
        if not evse or not self._evse_ok(evse) or p["connectorId"] != 1:
            return {"status": "UnknownConnector"}
        if self.ports.station.authorized(evse):
            return {"status": "OngoingAuthorizedTransaction"}
        result = await self.ports.daemon.unlock(evse)
        return {"status": "Unlocked" if result == "Unlocked" else "UnlockFailed"}

    @on(Action.trigger_message)
    def on_trigger_message(self, p: Payload) -> Payload:
        if p["requestedMessage"] not in TRIGGERS:
            return {"status": "NotImplemented"}
        return {"status": "Accepted" if self._triggered(p) else "Rejected"}

    def _triggered(self, p: Payload) -> bool:
        """Whether the message a TriggerMessage asks for will be sent (F06): an accepted station
        boots no more (F06.FR.17), a StatusNotification names its EVSE and connector (F06.FR.12),
        a TransactionEvent needs a transaction there."""
        message, evse = p["requestedMessage"], p.get("evse") or {}
        station, evse_id = self.ports.station, evse.get("id")
        if not self._evse_ok(evse_id) or evse.get("connectorId") not in (None, 1):
            return False
        if message == "BootNotification":
            return station.registration() != "Accepted"
        if station.registration() == "Rejected":  # nothing but its boot (B03)
            return False
        if message == "StatusNotification":
            return evse_id is not None and evse.get("connectorId") is not None
        if message == "TransactionEvent":
            return any(evse_id in (None, e) for e in station.transactions())
        return True

    @after(Action.trigger_message)
    async def after_trigger_message(self, p: Payload) -> None:
        if p["requestedMessage"] in TRIGGERS and self._triggered(p):
            await self.ports.station.trigger(p["requestedMessage"], (p.get("evse") or {}).get("id"))

    @on(Action.data_transfer)
    def on_data_transfer(self, p: Payload) -> Payload:
        return {"status": "UnknownVendorId"}

    # -- authorization (C10-C14) --------------------------------------------------------------------
    @on(Action.clear_cache)
    def on_clear_cache(self, p: Payload) -> Payload:
        if not self.ports.model.bool("AuthCacheCtrlr", "Enabled"):
            return {"status": "Rejected"}
        self.ports.auth.clear_cache()
        return {"status": "Accepted"}

    @on(Action.get_local_list_version)
    def on_get_local_list_version(self, p: Payload) -> Payload:
        return {"versionNumber": self.ports.auth.list_version()}

    @on(Action.send_local_list)
    def on_send_local_list(self, p: Payload) -> Payload:
        entries = [(e["idToken"]["idToken"], info_of(e.get("idTokenInfo")) or None)
                   for e in p.get("localAuthorizationList") or []]
        status = self.ports.auth.update_list(p["versionNumber"], p["updateType"] == "Full", entries)
        return {"status": "Failed" if status == "NotSupported" else status}

    @on(Action.reserve_now)
    async def on_reserve_now(self, p: Payload) -> Payload:
        evse = p.get("evseId")
        if not self._evse_ok(evse) or not self.ports.model.bool("ReservationCtrlr", "Enabled"):
            return {"status": "Rejected"}
        try:
            until = iso(parse_time(p["expiryDateTime"]))
        except ValueError:
            return {"status": "Rejected"}
        token = p["idToken"]["idToken"]
        status = await self.ports.daemon.reserve(evse or 0, token, until, p["id"])
        if status == "Accepted":
            self.ports.station.reserved(p["id"], evse, token)
        return {"status": status}

    @on(Action.cancel_reservation)
    async def on_cancel_reservation(self, p: Payload) -> Payload:
        accepted = await self.ports.daemon.cancel_reservation(p["reservationId"])
        if accepted:
            self.ports.station.reserved(p["reservationId"], None, None)
        return {"status": "Accepted" if accepted else "Rejected"}

    # -- smart charging (K01-K10) ---------------------------------------------------------------------
    @on(Action.set_charging_profile)
    def on_set_charging_profile(self, p: Payload) -> Payload:
        why = self.ports.profiles.install(p["evseId"], p["chargingProfile"])
        if why is None:
            return {"status": "Accepted"}
        return {"status": "Rejected", "statusInfo": {"reasonCode": "InvalidProfile", "additionalInfo": why[:512]}}

    @on(Action.get_charging_profiles)
    def on_get_charging_profiles(self, p: Payload) -> Payload:
        found = self.ports.profiles.select(p.get("evseId"), p["chargingProfile"])
        return {"status": "Accepted" if found else "NoProfiles"}

    @after(Action.get_charging_profiles)
    async def after_get_charging_profiles(self, p: Payload) -> None:
        found = self.ports.profiles.select(p.get("evseId"), p["chargingProfile"])
        if found:
            await self.ports.station.report_profiles(p["requestId"], found)

    @on(Action.clear_charging_profile)
    def on_clear_charging_profile(self, p: Payload) -> Payload:
        removed = self.ports.profiles.clear(p.get("chargingProfileId"), p.get("chargingProfileCriteria"))
        return {"status": "Accepted" if removed else "Unknown"}

    @on(Action.get_composite_schedule)
    def on_get_composite_schedule(self, p: Payload) -> Payload:
        evse = p["evseId"]
        if evse != 0 and not self._evse_ok(evse):
            return {"status": "Rejected", "statusInfo": {"reasonCode": "UnknownEvse"}}
        schedule = self.ports.profiles.composite(evse, p["duration"], p.get("chargingRateUnit") or "A")
        return {"status": "Accepted", "schedule": schedule}

    # -- diagnostics and firmware (N01, L01) -----------------------------------------------------------
    @on(Action.get_log)
    def on_get_log(self, p: Payload) -> Payload:
        name = self.ports.station.get_log(p["requestId"], p["log"]["remoteLocation"], p.get("retries") or 1,
                                          p.get("retryInterval") or 30)
        return {"status": "Accepted", "filename": name}

    @on(Action.update_firmware)
    def on_update_firmware(self, p: Payload) -> Payload:
        status = self.ports.station.update_firmware(p["requestId"], p["firmware"], p.get("retries") or 1,
                                                    p.get("retryInterval") or 30)
        return {"status": status}

    # -- security (A02-A04, M03-M05) ----------------------------------------------------------------------
    @on(Action.certificate_signed)
    def on_certificate_signed(self, p: Payload) -> Payload:
        if p.get("certificateType", STATION) != STATION:
            return {"status": "Rejected", "statusInfo": {"reasonCode": "UnsupportedRequest",
                                                         "additionalInfo": "no ISO 15118 here"}}
        status = self.ports.certificates.signed(p["certificateChain"])
        self.ports.station.security_event("ReconfigurationOfSecurityParameters" if status == "Accepted"
                                          else "InvalidChargingStationCertificate", "CertificateSigned")
        return {"status": status}

    @on(Action.install_certificate)
    def on_install_certificate(self, p: Payload) -> Payload:
        status = self.ports.certificates.install(p["certificateType"], p["certificate"])
        if status == "Accepted":
            self.ports.station.security_event("ReconfigurationOfSecurityParameters", p["certificateType"])
        return {"status": status}

    @on(Action.get_installed_certificate_ids)
    def on_get_installed_certificate_ids(self, p: Payload) -> Payload:
        found = self.ports.certificates.installed(p.get("certificateType"))
        if not found:
            return {"status": "NotFound"}
        return {"status": "Accepted", "certificateHashDataChain": [
            {"certificateType": use, "certificateHashData": data} for use, data in found]}

    @on(Action.delete_certificate)
    def on_delete_certificate(self, p: Payload) -> Payload:
        return {"status": self.ports.certificates.delete(p["certificateHashData"])}
