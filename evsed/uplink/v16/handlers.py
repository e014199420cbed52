"""What the CSMS may ask of an OCPP 1.6 charge point (the CALLs from the central system), each
answered through the narrow ports it needs. No handler awaits an outbound OCPP call (ocpp issue
#130): follow-up messages run in @after hooks or tasks beside the receive loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from ocpp.charge_point import snake_to_camel_case
from ocpp.v16 import call_result
from ocpp.v16.enums import Action

from evsed.uplink.auth import AuthStore
from evsed.uplink.diagnostics import Diagnostics
from evsed.uplink.firmware import Firmware
from evsed.uplink.times import iso, parse_time
from evsed.uplink.v16.framing import StrictChargePoint, after, on
from evsed.uplink.v16.keys import Values
from evsed.uplink.v16.messages import id_tag_info
from evsed.uplink.v16.profiles import Profiles
from evsed.uplink.v16.security import SecurityCommands

log = structlog.get_logger("evsed.uplink")
TRIGGERS = ("BootNotification", "DiagnosticsStatusNotification", "FirmwareStatusNotification",
            "Heartbeat", "MeterValues", "StatusNotification")


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
    """What the handlers ask of the charge point's own state and behaviour (the 1.6 uplink)."""

    def free_connector(self) -> int | None: ...
    def connector_of(self, transaction_id: int) -> int | None: ...
    def running(self, connector: int) -> bool: ...
    def stop_reason(self, connector: int, reason: str) -> None: ...
    def reserved(self, reservation_id: int, connector: int | None, id_tag: str) -> None: ...
    def start_authorized(self, connector: int, id_tag: str) -> None: ...
    async def reset(self, kind: str) -> None: ...
    async def trigger(self, message: str, connector: int | None) -> None: ...
    def change_password(self, value: str) -> str: ...
    def keys_changed(self, key: str) -> None: ...


@dataclass(frozen=True)
class Ports:
    daemon: Daemon
    station: Station
    keys: Values
    auth: AuthStore
    profiles: Profiles
    diagnostics: Diagnostics
    firmware: Firmware


class CentralCommands(SecurityCommands, StrictChargePoint):
    def __init__(self, id: str, connection: Any, ports: Ports, response_timeout: float = 30):
        super().__init__(id, connection, response_timeout)
        self.ports = ports

    def _connector_ok(self, connector: int | None, zero: bool = True) -> bool:
        return connector is None or connector in self.ports.daemon.connectors or (zero and connector == 0)

    @on(Action.remote_start_transaction)
    async def on_remote_start(self, id_tag: str, connector_id: int | None = None,
                              charging_profile: dict[str, Any] | None = None, **_: Any) -> Any:
        p = self.ports
        if charging_profile and charging_profile.get("charging_profile_purpose") != "TxProfile":
            return call_result.RemoteStartTransaction(status="Rejected")
        connector = connector_id if connector_id is not None else p.station.free_connector()
        if connector is None or connector not in p.daemon.connectors:
            return call_result.RemoteStartTransaction(status="Rejected")
        authorize_first = p.keys.bool("AuthorizeRemoteTxRequests")
        if authorize_first and not await p.daemon.remote_start(connector, id_tag, check=True):
            return call_result.RemoteStartTransaction(status="Rejected")  # §5.11: it will not start
        waiting = p.profiles.remote_start(connector, id_tag, snake_to_camel_case(charging_profile)) \
            if charging_profile else None
        if authorize_first:  # Accepted now; the tag is authorized, then started (no outbound call awaited here)
            p.station.start_authorized(connector, id_tag)
            return call_result.RemoteStartTransaction(status="Accepted")
        started = await p.daemon.remote_start(connector, id_tag)
        if not started and waiting is not None:
            p.profiles.remote_start_over(connector, waiting)
        return call_result.RemoteStartTransaction(status="Accepted" if started else "Rejected")

    @on(Action.remote_stop_transaction)
    async def on_remote_stop(self, transaction_id: int, **_: Any) -> Any:
        connector = self.ports.station.connector_of(transaction_id)
        if connector is None:
            return call_result.RemoteStopTransaction(status="Rejected")
        stopped = await self.ports.daemon.remote_stop(connector, "remote")
        return call_result.RemoteStopTransaction(status="Accepted" if stopped else "Rejected")

    @on(Action.reset)
    def on_reset(self, type: str, **_: Any) -> Any:
        return call_result.Reset(status="Accepted")

    @after(Action.reset)
    async def after_reset(self, type: str, **_: Any) -> None:
        await self.ports.station.reset(type)

    @on(Action.change_availability)
    async def on_change_availability(self, connector_id: int, type: str, **_: Any) -> Any:
        if not self._connector_ok(connector_id):
            return call_result.ChangeAvailability(status="Rejected")
        status = await self.ports.daemon.availability(connector_id, type == "Operative")
        return call_result.ChangeAvailability(status=status)

    @on(Action.unlock_connector)
    async def on_unlock(self, connector_id: int, **_: Any) -> Any:
        p = self.ports
        if connector_id not in p.daemon.connectors:
            return call_result.UnlockConnector(status="NotSupported")
        if p.station.running(connector_id):  # the session ends first (reason UnlockCommand)
            p.station.stop_reason(connector_id, "UnlockCommand")
            await p.daemon.remote_stop(connector_id, "remote")
        return call_result.UnlockConnector(status=await p.daemon.unlock(connector_id))

    @on(Action.get_configuration)
    def on_get_configuration(self, key: list[str] | None = None, **_: Any) -> Any:
        known, unknown = self.ports.keys.get(key)
        return call_result.GetConfiguration(configuration_key=known or None, unknown_key=unknown or None)

    @on(Action.change_configuration)
    def on_change_configuration(self, key: str, value: str, **_: Any) -> Any:
        if key == "AuthorizationKey":
            return call_result.ChangeConfiguration(status=self.ports.station.change_password(value))
        status = self.ports.keys.change(key, value)
        if status in ("Accepted", "RebootRequired"):
            log.info("ocpp.configuration_changed", key=key, value=value)
            self.ports.station.keys_changed(key)
        return call_result.ChangeConfiguration(status=status)

    @on(Action.clear_cache)
    def on_clear_cache(self, **_: Any) -> Any:
        self.ports.auth.clear_cache()
        return call_result.ClearCache(status="Accepted")

    @on(Action.data_transfer)
    def on_data_transfer(self, vendor_id: str, **_: Any) -> Any:
        return call_result.DataTransfer(status="UnknownVendorId")

    @on(Action.get_local_list_version)
    def on_get_local_list_version(self, **_: Any) -> Any:
        return call_result.GetLocalListVersion(list_version=self.ports.auth.list_version())

    @on(Action.send_local_list)
    def on_send_local_list(self, list_version: int, update_type: str,
                           local_authorization_list: list[dict[str, Any]] | None = None, **_: Any) -> Any:
        entries = [(str(e["id_tag"]), id_tag_info(e["id_tag_info"]) if e.get("id_tag_info") else None)
                   for e in local_authorization_list or []]
        status = self.ports.auth.update_list(list_version, update_type == "Full", entries)
        return call_result.SendLocalList(status=status)

    @on(Action.reserve_now)
    async def on_reserve_now(self, connector_id: int, expiry_date: str, id_tag: str, reservation_id: int,
                             **_: Any) -> Any:
        if not self._connector_ok(connector_id):
            return call_result.ReserveNow(status="Rejected")
        try:
            until = iso(parse_time(expiry_date))
        except ValueError:
            return call_result.ReserveNow(status="Rejected")
        status = await self.ports.daemon.reserve(connector_id, id_tag, until, reservation_id)
        if status == "Accepted":
            self.ports.station.reserved(reservation_id, connector_id, id_tag)
        return call_result.ReserveNow(status=status)

    @on(Action.cancel_reservation)
    async def on_cancel_reservation(self, reservation_id: int, **_: Any) -> Any:
        accepted = await self.ports.daemon.cancel_reservation(reservation_id)
        if accepted:
            self.ports.station.reserved(reservation_id, None, "")
        return call_result.CancelReservation(status="Accepted" if accepted else "Rejected")

    @on(Action.trigger_message)
    def on_trigger_message(self, requested_message: str, connector_id: int | None = None, **_: Any) -> Any:
        if requested_message not in TRIGGERS or not self._connector_ok(connector_id):
            return call_result.TriggerMessage(status="Rejected")
        return call_result.TriggerMessage(status="Accepted")

    @after(Action.trigger_message)
    async def after_trigger_message(self, requested_message: str, connector_id: int | None = None,
                                    **_: Any) -> None:
        if requested_message in TRIGGERS and self._connector_ok(connector_id):
            await self.ports.station.trigger(requested_message, connector_id)

    @on(Action.get_diagnostics)
    def on_get_diagnostics(self, location: str, **_: Any) -> Any:
        return call_result.GetDiagnostics(file_name=self.ports.diagnostics.file_name())

    @after(Action.get_diagnostics)
    async def after_get_diagnostics(self, location: str, retries: int | None = None,
                                    retry_interval: int | None = None, **_: Any) -> None:
        await self.ports.diagnostics.upload(location, retries or 1, retry_interval or 30)

    @on(Action.update_firmware)
    def on_update_firmware(self, location: str, retrieve_date: str, **_: Any) -> Any:
        return call_result.UpdateFirmware()

    @after(Action.update_firmware)
    async def after_update_firmware(self, location: str, retrieve_date: str, retries: int | None = None,
                                    retry_interval: int | None = None, **_: Any) -> None:
        self.ports.firmware.start(location, retrieve_date, retries or 1, retry_interval or 30)

    @on(Action.set_charging_profile)
    def on_set_charging_profile(self, connector_id: int, cs_charging_profiles: dict[str, Any], **_: Any) -> Any:
        status = self.ports.profiles.install(connector_id, snake_to_camel_case(cs_charging_profiles))
        return call_result.SetChargingProfile(status=status)

    @on(Action.clear_charging_profile)
    def on_clear_charging_profile(self, id: int | None = None, connector_id: int | None = None,
                                  charging_profile_purpose: str | None = None, stack_level: int | None = None,
                                  **_: Any) -> Any:
        removed = self.ports.profiles.clear(id, connector_id, charging_profile_purpose, stack_level)
        return call_result.ClearChargingProfile(status="Accepted" if removed else "Unknown")

    @on(Action.get_composite_schedule)
    def on_get_composite_schedule(self, connector_id: int, duration: int, charging_rate_unit: str | None = None,
                                  **_: Any) -> Any:
        if not self._connector_ok(connector_id):
            return call_result.GetCompositeSchedule(status="Rejected")
        schedule = self.ports.profiles.composite(connector_id, duration, charging_rate_unit or "A")
        return call_result.GetCompositeSchedule(
            status="Accepted", connector_id=connector_id, schedule_start=schedule["startSchedule"],
            charging_schedule=schedule)
