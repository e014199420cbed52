"""The OCPP 1.6 security whitepaper's certificate messages (CertificateSigned, InstallCertificate,
GetInstalledCertificateIds, DeleteCertificate, ExtendedTriggerMessage SignChargePointCertificate)
over the core's Certificates, the same store and rules as 2.0.1's; mixed into CentralCommands."""

from __future__ import annotations

from typing import Any, Protocol

from ocpp.charge_point import snake_to_camel_case
from ocpp.routing import after, on
from ocpp.v16 import call_result
from ocpp.v16.enums import Action

from evsed.uplink.certificates import Certificates

USES = {"CentralSystemRootCertificate": "CSMSRootCertificate", "ManufacturerRootCertificate": "ManufacturerRootCertificate"}
TRIGGERS = ("BootNotification", "FirmwareStatusNotification", "Heartbeat", "MeterValues", "StatusNotification")


class Secured(Protocol):
    """What the messages need of the 1.6 uplink."""

    certificates: Certificates

    async def sign_certificate(self) -> None: ...
    async def trigger(self, message: str, connector: int | None) -> None: ...


class SecurityCommands:
    """Mixed into the 1.6 CentralCommands, whose ports.station is Secured."""

    ports: Any

    def _secured(self) -> Secured:
        station: Secured = self.ports.station
        return station

    @on(Action.certificate_signed)
    def on_certificate_signed(self, certificate_chain: str, **_: Any) -> Any:
        return call_result.CertificateSigned(status=self._secured().certificates.signed(certificate_chain))

    @on(Action.install_certificate)
    def on_install_certificate(self, certificate_type: str, certificate: str, **_: Any) -> Any:
        return call_result.InstallCertificate(
            status=self._secured().certificates.install(USES[certificate_type], certificate))

    @on(Action.get_installed_certificate_ids)
    def on_get_installed_certificate_ids(self, certificate_type: str, **_: Any) -> Any:
        found = self._secured().certificates.installed([USES[certificate_type]])
        return call_result.GetInstalledCertificateIds(status="Accepted" if found else "NotFound",
                                                      certificate_hash_data=[data for _, data in found] or None)

    @on(Action.delete_certificate)
    def on_delete_certificate(self, certificate_hash_data: dict[str, Any], **_: Any) -> Any:
        status = self._secured().certificates.delete(snake_to_camel_case(certificate_hash_data))
        return call_result.DeleteCertificate(status=status)

    @on(Action.extended_trigger_message)
    def on_extended_trigger_message(self, requested_message: str, connector_id: int | None = None,
                                    **_: Any) -> Any:
        known = requested_message == "SignChargePointCertificate" or requested_message in TRIGGERS
        return call_result.ExtendedTriggerMessage(status="Accepted" if known else "NotImplemented")

    @after(Action.extended_trigger_message)
    async def after_extended_trigger_message(self, requested_message: str, connector_id: int | None = None,
                                             **_: Any) -> None:
        if requested_message == "SignChargePointCertificate":
            await self._secured().sign_certificate()
        elif requested_message in TRIGGERS:
            await self._secured().trigger(requested_message, connector_id)
