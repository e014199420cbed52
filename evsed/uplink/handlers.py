"""What the CSMS may ask of the charge point (OCPP 1.6 CALLs from the central system), answered
through the daemon's control commands. No handler awaits an outbound OCPP call (ocpp issue #130):
follow-up messages run in @after hooks or tasks beside the receive loop."""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
from ocpp.charge_point import snake_to_camel_case
from ocpp.routing import after, on
from ocpp.v16 import call_result
from ocpp.v16.enums import Action

from evsed.uplink import smart
from evsed.uplink.protocol import StrictChargePoint

if TYPE_CHECKING:
    from evsed.uplink.service import Uplink

log = structlog.get_logger("evsed.uplink")
TRIGGERS = ("BootNotification", "DiagnosticsStatusNotification", "FirmwareStatusNotification",
            "Heartbeat", "MeterValues", "StatusNotification")


class CentralCommands(StrictChargePoint):
    def __init__(self, id, connection, uplink: Uplink, response_timeout: float = 30):
        super().__init__(id, connection, response_timeout)
        self.up = uplink

    def _connector_ok(self, connector: int | None, zero: bool = True) -> bool:
        return connector is None or connector in self.up.connectors or (zero and connector == 0)

    @on(Action.remote_start_transaction)
    async def on_remote_start(self, id_tag, connector_id=None, charging_profile=None, **_):
        up = self.up
        if charging_profile and charging_profile.get("charging_profile_purpose") != "TxProfile":
            return call_result.RemoteStartTransaction(status="Rejected")
        connector = connector_id if connector_id is not None else up.free_connector()
        if connector is None or connector not in up.connectors:
            return call_result.RemoteStartTransaction(status="Rejected")
        if charging_profile:
            up.pending_profiles[connector] = snake_to_camel_case(charging_profile)
        if up.keys.bool("AuthorizeRemoteTxRequests"):
            up.spawn(up.remote_start_authorized(connector, id_tag))
            return call_result.RemoteStartTransaction(status="Accepted")
        reply = await up.command({"cmd": "remote-start", "connector": connector, "id_tag": id_tag})
        return call_result.RemoteStartTransaction(status="Accepted" if reply.get("ok") else "Rejected")

    @on(Action.remote_stop_transaction)
    async def on_remote_stop(self, transaction_id, **_):
        connector = self.up.connector_of(transaction_id)
        if connector is None:
            return call_result.RemoteStopTransaction(status="Rejected")
        reply = await self.up.command({"cmd": "remote-stop", "connector": connector, "reason": "remote"})
        return call_result.RemoteStopTransaction(status="Accepted" if reply.get("ok") else "Rejected")

    @on(Action.reset)
    def on_reset(self, type, **_):
        return call_result.Reset(status="Accepted")

    @after(Action.reset)
    async def after_reset(self, type, **_):
        await self.up.reset(type)

    @on(Action.change_availability)
    async def on_change_availability(self, connector_id, type, **_):
        if not self._connector_ok(connector_id):
            return call_result.ChangeAvailability(status="Rejected")
        reply = await self.up.command({"cmd": "availability", "connector": connector_id,
                                       "operative": type == "Operative"})
        status = "Scheduled" if reply.get("scheduled") else "Accepted" if reply.get("ok") else "Rejected"
        return call_result.ChangeAvailability(status=status)

    @on(Action.unlock_connector)
    async def on_unlock(self, connector_id, **_):
        if connector_id not in self.up.connectors:
            return call_result.UnlockConnector(status="NotSupported")
        if connector_id in self.up.state.sessions():  # the session ends first (reason UnlockCommand)
            self.up.outbox.stop_reasons[connector_id] = "UnlockCommand"
            await self.up.command({"cmd": "remote-stop", "connector": connector_id, "reason": "remote"})
        reply = await self.up.command({"cmd": "unlock", "connector": connector_id})
        said = str(reply.get("result") or reply.get("error") or "")
        if "NotSupported" in said:
            return call_result.UnlockConnector(status="NotSupported")
        return call_result.UnlockConnector(status="Unlocked" if reply.get("ok") else "UnlockFailed")

    @on(Action.get_configuration)
    def on_get_configuration(self, key=None, **_):
        known, unknown = self.up.keys.get(key)
        return call_result.GetConfiguration(configuration_key=known or None, unknown_key=unknown or None)

    @on(Action.change_configuration)
    def on_change_configuration(self, key, value, **_):
        if key == "AuthorizationKey":
            return call_result.ChangeConfiguration(status=self.up.change_password(value))
        status = self.up.keys.change(key, value)
        if status in ("Accepted", "RebootRequired"):
            log.info("ocpp.configuration_changed", key=key, value=value)
            self.up.keys_changed(key)
        return call_result.ChangeConfiguration(status=status)

    @on(Action.clear_cache)
    def on_clear_cache(self, **_):
        self.up.state.clear_auth("cache")
        return call_result.ClearCache(status="Accepted")

    @on(Action.data_transfer)
    def on_data_transfer(self, vendor_id, **_):
        return call_result.DataTransfer(status="UnknownVendorId")

    @on(Action.get_local_list_version)
    def on_get_local_list_version(self, **_):
        return call_result.GetLocalListVersion(list_version=self.up.authorizer.list_version())

    @on(Action.send_local_list)
    def on_send_local_list(self, list_version, update_type, local_authorization_list=None, **_):
        status = self.up.authorizer.send_local_list(list_version, update_type, local_authorization_list)
        return call_result.SendLocalList(status=status)

    @on(Action.reserve_now)
    async def on_reserve_now(self, connector_id, expiry_date, id_tag, reservation_id, **_):
        if not self._connector_ok(connector_id):
            return call_result.ReserveNow(status="Rejected")
        try:
            until = smart.iso(smart.parse_time(expiry_date))
        except ValueError:
            return call_result.ReserveNow(status="Rejected")
        reply = await self.up.command({"cmd": "reserve", "connector": connector_id, "id_tag": id_tag,
                                       "until": until, "reservation_id": reservation_id})
        status = reply.get("result") if reply.get("result") in (
            "Accepted", "Faulted", "Occupied", "Rejected", "Unavailable") else "Rejected"
        if status == "Accepted":
            self.up.outbox.reservations[reservation_id] = {"connector": connector_id, "id_tag": id_tag}
        return call_result.ReserveNow(status=status)

    @on(Action.cancel_reservation)
    async def on_cancel_reservation(self, reservation_id, **_):
        reply = await self.up.command({"cmd": "cancel-reservation", "reservation_id": reservation_id})
        accepted = reply.get("result") == "Accepted"
        if accepted:
            self.up.outbox.reservations.pop(reservation_id, None)
        return call_result.CancelReservation(status="Accepted" if accepted else "Rejected")

    @on(Action.trigger_message)
    def on_trigger_message(self, requested_message, connector_id=None, **_):
        if requested_message not in TRIGGERS or not self._connector_ok(connector_id):
            return call_result.TriggerMessage(status="Rejected")
        return call_result.TriggerMessage(status="Accepted")

    @after(Action.trigger_message)
    async def after_trigger_message(self, requested_message, connector_id=None, **_):
        if requested_message in TRIGGERS and self._connector_ok(connector_id):
            await self.up.trigger(requested_message, connector_id)

    @on(Action.get_diagnostics)
    def on_get_diagnostics(self, location, **_):
        return call_result.GetDiagnostics(file_name=self.up.diagnostics.file_name())

    @after(Action.get_diagnostics)
    async def after_get_diagnostics(self, location, retries=None, retry_interval=None, **_):
        await self.up.diagnostics.upload(location, retries or 1, retry_interval or 30)

    @on(Action.update_firmware)
    def on_update_firmware(self, location, retrieve_date, **_):
        return call_result.UpdateFirmware()

    @after(Action.update_firmware)
    async def after_update_firmware(self, location, retrieve_date, retries=None, retry_interval=None, **_):
        self.up.firmware.start(location, retrieve_date, retries or 1, retry_interval or 30)

    @on(Action.set_charging_profile)
    def on_set_charging_profile(self, connector_id, cs_charging_profiles, **_):
        body = snake_to_camel_case(cs_charging_profiles)
        status = self.up.install_profile(connector_id, body)
        return call_result.SetChargingProfile(status=status)

    @on(Action.clear_charging_profile)
    def on_clear_charging_profile(self, id=None, connector_id=None, charging_profile_purpose=None,
                                  stack_level=None, **_):
        removed = self.up.clear_profiles(id, connector_id, charging_profile_purpose, stack_level)
        return call_result.ClearChargingProfile(status="Accepted" if removed else "Unknown")

    @on(Action.get_composite_schedule)
    def on_get_composite_schedule(self, connector_id, duration, charging_rate_unit=None, **_):
        if not self._connector_ok(connector_id):
            return call_result.GetCompositeSchedule(status="Rejected")
        schedule = self.up.composite(connector_id, duration, charging_rate_unit or "A")
        return call_result.GetCompositeSchedule(
            status="Accepted", connector_id=connector_id, schedule_start=schedule["startSchedule"],
            charging_schedule=schedule)
