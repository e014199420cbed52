"""What OCPP 2.0.1 notifications say, pure: a connector's status (StatusNotification), the core's
faults as components and variables (NotifyEvent), and the security events the station reports."""

from __future__ import annotations

from typing import Any

# The daemon's (OCPP 1.6) connector status -> ConnectorStatusEnumType. Preparing without an EV (a card
# tapped first) is still Available in 2.0.1: Occupied means something is plugged in.
STATUS = {"Available": "Available", "Preparing": "Occupied", "Charging": "Occupied", "SuspendedEV": "Occupied",
          "SuspendedEVSE": "Occupied", "Finishing": "Occupied", "Reserved": "Reserved",
          "Unavailable": "Unavailable", "Faulted": "Faulted"}

# Each latched fault of the core -> (component, variable) whose value "true" reports it.
FAULTS = {
    "rcd": ("RCD", "Tripped"),
    "rcd_self_test": ("RCD", "Problem"),
    "welded": ("PowerContactor", "Problem"),
    "contactor_mismatch": ("PowerContactor", "Problem"),
    "overcurrent": ("OverCurrentProtection", "Operated"),
    "diode": ("CPPWMController", "Problem"),
    "cp_short": ("CPPWMController", "Problem"),
}

# Security events (OCPP 2.0.1 part 2, appendix 1) the station sends, by what happened.
SECURITY_EVENTS = frozenset({
    "StartupOfTheDevice", "ResetOrReboot", "FirmwareUpdated", "SettingSystemTime", "InvalidCsmsCertificate",
    "FailedToAuthenticateAtCsms", "ReconfigurationOfSecurityParameters", "InvalidFirmwareSignature", "InvalidFirmwareSigningCertificate",
    "InvalidChargingStationCertificate", "InvalidMessages",
})


def connector_status(status: str, ev_connected: bool | None) -> str:
    if status == "Preparing" and ev_connected is False:
        return "Available"
    return STATUS.get(status, "Faulted")


def status_notification(evse: int, status: str, ev_connected: bool | None, at: str) -> dict[str, Any]:
    return {"timestamp": at, "connectorStatus": connector_status(status, ev_connected), "evseId": evse,
            "connectorId": 1}


def fault_event(event_id: int, evse: int, fault: str, raised: bool, at: str, detail: str = "",
                transaction_id: str | None = None) -> dict[str, Any]:
    """One NotifyEvent eventData for a fault raised or cleared on an EVSE (unknown faults: the
    EVSE's own Problem)."""
    component, variable = FAULTS.get(fault, ("EVSE", "Problem"))
    data: dict[str, Any] = {
        "eventId": event_id, "timestamp": at, "trigger": "Delta", "actualValue": "true" if raised else "false",
        "eventNotificationType": "HardWiredNotification", "techCode": fault[:50],
        "component": {"name": component, "evse": {"id": evse}}, "variable": {"name": variable}}
    if detail:
        data["techInfo"] = detail[:500]
    if not raised:
        data["cleared"] = True
    if transaction_id:
        data["transactionId"] = transaction_id[:36]
    return data


def security_event(kind: str, at: str, info: str = "") -> dict[str, Any]:
    assert kind in SECURITY_EVENTS, kind
    payload: dict[str, Any] = {"type": kind, "timestamp": at}
    if info:
        payload["techInfo"] = info[:255]
    return payload
