"""OCPP 2.0.1 UpdateFirmware and GetLog over the core's Firmware and Diagnostics: the signature the
request carries, the signing certificate's check, and their progress in 2.0.1's names with the
requestId (FirmwareStatusNotification, LogStatusNotification, the security events they raise)."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Coroutine

from evsed.uplink.diagnostics import Diagnostics
from evsed.uplink.firmware import Firmware
from evsed.uplink.settings import Settings
from evsed.uplink.state import State
from evsed.uplink.times import iso
from evsed.uplink.v201 import notify

Payload = dict[str, Any]
# the core's 1.6 names for an upload's progress -> LogStatusNotification's
LOG_STATUS = {"Uploading": "Uploading", "Uploaded": "Uploaded", "UploadFailed": "UploadFailure", "Idle": "Idle"}


class Transfers:
    """notify(action, payload) sends now (when booted); security_event(kind, info) queues one."""

    def __init__(self, settings: Settings, state: State, clock: Callable[[], float], *,
                 notify: Callable[[str, Payload], Awaitable[None]], security_event: Callable[[str, str], None],
                 collect: Callable[[], Awaitable[dict[str, Any]]], queued: Callable[[], None],
                 spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]):
        self.settings, self.state, self.clock = settings, state, clock
        self.notify, self.security_event, self.spawn = notify, security_event, spawn
        self.firmware = Firmware(state, clock, spool_dir=settings.spool, key_file=settings.update_key_file,
                                 notify=self.firmware_status, outcome=self._firmware_outcome, queued=queued,
                                 spawn=spawn)
        self.diagnostics = Diagnostics(settings.identity, clock, collect, self.log_status)
        self._log_request = 0
        self._firmware_said = ""  # the core's last firmware status

    def get_log(self, request_id: int, location: str, retries: int, interval_s: int) -> str:
        """GetLog (N01): the file name the bundle is uploaded as."""
        self._log_request = request_id
        name = self.diagnostics.file_name()
        self.spawn(self.diagnostics.upload(location, retries, interval_s))
        return name

    def update_firmware(self, request_id: int, firmware: Payload, retries: int, interval_s: int) -> str:
        """UpdateFirmware (L01): the release and its signature from the request go to the core's
        transfer; a signing certificate is accepted only with the [update] public key in it."""
        certificate = firmware.get("signingCertificate")
        if certificate is not None and not self._release_certificate(certificate):
            self.security_event("InvalidFirmwareSigningCertificate", "not the [update] public key")
            return "InvalidCertificate"
        self.state.set_meta("v201.firmware_request", request_id)
        signature = firmware.get("signature")
        self.firmware.start(firmware["location"], firmware["retrieveDateTime"], retries, interval_s,
                            signature.encode() if signature else None)
        return "Accepted"

    def _release_certificate(self, pem: str) -> bool:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        key_file = self.settings.update_key_file
        try:
            key = x509.load_pem_x509_certificate(pem.encode()).public_key()
            trusted = serialization.load_pem_public_key(key_file.read_bytes()) if key_file else None
        except (ValueError, OSError):
            return False
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        return trusted is not None and key.public_bytes(serialization.Encoding.DER, spki) == trusted.public_bytes(
            serialization.Encoding.DER, spki)

    async def log_status(self, status: str) -> None:
        payload: Payload = {"status": LOG_STATUS.get(status, status)}
        if status != "Idle":
            payload["requestId"] = self._log_request
        await self.notify("LogStatusNotification", payload)

    async def firmware_status(self, status: str) -> None:
        """The core's progress in 2.0.1 names: a verified signature says SignatureVerified before
        Installing, a refused one InvalidSignature (and a security event)."""
        request = self.state.meta("v201.firmware_request")
        statuses = [status]
        if status == "Installing" and self._firmware_said == "Downloaded":
            statuses = ["SignatureVerified", "Installing"]
        elif status == "InstallationFailed" and self.firmware.failure == "signature":
            statuses = ["InvalidSignature"]
            self.security_event("InvalidFirmwareSignature", "the release's signature is missing or not by the key")
        self._firmware_said = status
        for said in statuses:
            payload: Payload = {"status": said}
            if request and said != "Idle":
                payload["requestId"] = int(request)
            await self.notify("FirmwareStatusNotification", payload)

    def _firmware_outcome(self, result: str) -> None:
        request = self.state.meta("v201.firmware_request")
        self.state.enqueue("FirmwareStatusNotification", {"status": result, **(
            {"requestId": int(request)} if request else {})}, tx=False)
        if result == "Installed":
            self.state.enqueue("SecurityEventNotification", notify.security_event(
                "FirmwareUpdated", iso(self.clock()), self.settings.firmware_version), tx=False)
