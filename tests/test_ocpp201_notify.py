"""OCPP 2.0.1 notifications, pure: connector statuses, the core's faults as NotifyEvent components
and variables, security events; each fits the official schema."""

from __future__ import annotations

from ocpp.messages import MessageType, get_validator

from evsed.core.events import Fault
from evsed.uplink.v201.notify import FAULTS, connector_status, fault_event, security_event, status_notification

AT = "2026-11-28T16:20:00.123Z"


def valid(action: str, payload: dict) -> None:
    errors = list(get_validator(MessageType.Call, action, "2.0.1").iter_errors(payload))
    assert not errors, errors[0].message


def test_the_daemon_statuses_map_to_the_five_of_2_0_1():
    assert connector_status("Preparing", True) == "Occupied"
    assert connector_status("Preparing", False) == "Available"  # a card tapped, no EV yet
    assert connector_status("Finishing", None) == "Occupied"
    assert connector_status("SuspendedEVSE", True) == "Occupied"
    assert connector_status("Reserved", False) == "Reserved"
    assert connector_status("garbage", None) == "Faulted"
    valid("StatusNotification", status_notification(2, "Charging", True, AT))


def test_every_core_fault_has_a_component_and_variable():
    assert {f.value for f in Fault} <= set(FAULTS)


def test_a_fault_raised_and_cleared_fits_notify_event():
    raised = fault_event(1, 1, "rcd", True, AT, detail="30 mA residual current", transaction_id="tx-1")
    cleared = fault_event(2, 1, "rcd", False, AT)
    assert (raised["component"], raised["variable"], raised["actualValue"]) == (
        {"name": "RCD", "evse": {"id": 1}}, {"name": "Tripped"}, "true")
    assert cleared["cleared"] is True and cleared["actualValue"] == "false"
    valid("NotifyEvent", {"generatedAt": AT, "seqNo": 0, "eventData": [raised, cleared]})
    assert fault_event(3, 2, "something new", True, AT)["component"] == {"name": "EVSE", "evse": {"id": 2}}


def test_security_events_fit_their_schema():
    valid("SecurityEventNotification", security_event("StartupOfTheDevice", AT, "power up"))
