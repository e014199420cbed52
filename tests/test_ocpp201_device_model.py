"""The OCPP 2.0.1 device model: GetVariables and SetVariables answered per the specification,
values persisted, base and custom reports that fit the official NotifyReport schema, paged."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, strategies as st
from ocpp.messages import MessageType, get_validator

from evsed.uplink.v201.device_model import DeviceModel, pages
from evsed.uplink.v201.variables import Station, Variable, variables

STATION = Station(identity="CP1", vendor="evsed", model="evsed", connectors=(1, 2), phases=3,
                  max_current_a=32, voltage_v=230, security_profile=1)


def model(stored=None, secrets=None):
    kept = dict(stored or {})
    live = {"AvailabilityState": "Available", "Entries": "0", "Problem": "false", "Power": "0",
            "DateTime": "2026-11-28T16:20:00.000Z", "CertificateEntries": "0"}

    def keep_secret(v: Variable, value: str) -> bool:
        if secrets is None:
            return False
        secrets[v.name] = value
        return True
    return DeviceModel(variables(STATION), kept, kept.__setitem__, lambda v: live[v.name], keep_secret), kept


def ask(component, variable, **extra):
    return {"component": component, "variable": variable, **extra}


def valid(action: str, payload: dict, response: bool = False) -> None:
    validator = get_validator(MessageType.CallResult if response else MessageType.Call, action, "2.0.1")
    errors = list(validator.iter_errors(payload))
    assert not errors, errors[0].message


def test_a_known_variable_is_read_with_its_value():
    dm, _ = model()
    (result,) = dm.get([ask({"name": "OCPPCommCtrlr"}, {"name": "HeartbeatInterval"})])
    assert result["attributeStatus"] == "Accepted" and result["attributeValue"] == "300"
    valid("GetVariables", {"getVariableResult": [result]}, response=True)


def test_an_unknown_component_and_an_unknown_variable_are_told_apart():
    dm, _ = model()
    results = dm.get([ask({"name": "CoffeeCtrlr"}, {"name": "HeartbeatInterval"}),
                      ask({"name": "OCPPCommCtrlr"}, {"name": "Espresso"})])
    assert [r["attributeStatus"] for r in results] == ["UnknownComponent", "UnknownVariable"]
    valid("GetVariables", {"getVariableResult": results}, response=True)


def test_names_compare_without_regard_to_case_as_cistrings_do():
    dm, _ = model()
    (result,) = dm.get([ask({"name": "ocppcommctrlr"}, {"name": "heartbeatinterval"})])
    assert result["attributeStatus"] == "Accepted"


def test_a_variable_instance_is_part_of_its_address():
    dm, _ = model()
    ok, missing = dm.get([ask({"name": "OCPPCommCtrlr"}, {"name": "MessageAttempts", "instance": "TransactionEvent"}),
                          ask({"name": "OCPPCommCtrlr"}, {"name": "MessageAttempts"})])
    assert ok["attributeValue"] == "3" and missing["attributeStatus"] == "UnknownVariable"


def test_evse_and_connector_components_are_addressed_by_evse_and_connector_id():
    dm, _ = model()
    results = dm.get([ask({"name": "EVSE", "evse": {"id": 2}}, {"name": "SupplyPhases"}),
                      ask({"name": "Connector", "evse": {"id": 1, "connectorId": 1}}, {"name": "ConnectorType"}),
                      ask({"name": "EVSE", "evse": {"id": 3}}, {"name": "SupplyPhases"}),
                      ask({"name": "EVSE"}, {"name": "SupplyPhases"})])
    assert [r["attributeStatus"] for r in results] == ["Accepted", "Accepted", "UnknownComponent", "UnknownComponent"]
    assert results[1]["attributeValue"] == "cType2"


def test_a_write_only_variable_is_never_read():
    dm, _ = model()
    (result,) = dm.get([ask({"name": "SecurityCtrlr"}, {"name": "BasicAuthPassword"})])
    assert result["attributeStatus"] == "Rejected" and "attributeValue" not in result


def test_attribute_types_other_than_actual_are_not_supported():
    dm, _ = model()
    (got,) = dm.get([ask({"name": "OCPPCommCtrlr"}, {"name": "HeartbeatInterval"}, attributeType="Target")])
    (results, _) = dm.set([ask({"name": "OCPPCommCtrlr"}, {"name": "HeartbeatInterval"}, attributeType="MaxSet",
                               attributeValue="60")])
    assert got["attributeStatus"] == results[0]["attributeStatus"] == "NotSupportedAttributeType"


def test_a_set_value_is_accepted_persisted_and_read_back_by_the_next_process():
    dm, kept = model()
    results, changed = dm.set([ask({"name": "OCPPCommCtrlr"}, {"name": "HeartbeatInterval"}, attributeValue="60")])
    assert results[0]["attributeStatus"] == "Accepted" and [v.name for v in changed] == ["HeartbeatInterval"]
    valid("SetVariables", {"setVariableResult": results}, response=True)
    again, _ = model(kept)
    assert again.int("OCPPCommCtrlr", "HeartbeatInterval") == 60


def test_a_read_only_variable_is_rejected_with_its_reason():
    dm, kept = model()
    results, changed = dm.set([ask({"name": "SecurityCtrlr"}, {"name": "SecurityProfile"}, attributeValue="3")])
    assert results[0]["attributeStatus"] == "Rejected" and results[0]["attributeStatusInfo"]["reasonCode"] == "ReadOnly"
    assert changed == [] and kept == {}


def test_values_outside_the_characteristics_are_rejected_and_change_nothing():
    dm, kept = model()
    cases = [("OCPPCommCtrlr", "HeartbeatInterval", "soon", "InvalidValue"),
             ("OCPPCommCtrlr", "HeartbeatInterval", "0", "ValueTooLow"),
             ("TxCtrlr", "TxStartPoint", "EVConnected,ParkingBayOccupancy", "InvalidValue"),
             ("TxCtrlr", "StopTxOnInvalidId", "yes", "InvalidValue"),
             ("SmartChargingCtrlr", "LimitChangeSignificance", "101", "ValueTooHigh")]
    for component, name, value, reason in cases:
        results, _ = dm.set([ask({"name": component}, {"name": name}, attributeValue=value)])
        assert (results[0]["attributeStatus"], results[0]["attributeStatusInfo"]["reasonCode"]) == ("Rejected", reason)
        valid("SetVariables", {"setVariableResult": results}, response=True)
    assert kept == {}


def test_a_setting_that_needs_a_new_connection_answers_reboot_required():
    dm, kept = model()
    results, _ = dm.set([ask({"name": "OCPPCommCtrlr"}, {"name": "WebSocketPingInterval"}, attributeValue="30")])
    assert results[0]["attributeStatus"] == "RebootRequired" and kept


def test_the_basic_auth_password_goes_to_its_own_store_never_the_state():
    secrets: dict = {}
    dm, kept = model(secrets=secrets)
    short, _ = dm.set([ask({"name": "SecurityCtrlr"}, {"name": "BasicAuthPassword"}, attributeValue="short")])
    ok, _ = dm.set([ask({"name": "SecurityCtrlr"}, {"name": "BasicAuthPassword"}, attributeValue="0123456789abcdef")])
    assert short[0]["attributeStatus"] == "Rejected" and ok[0]["attributeStatus"] == "Accepted"
    assert secrets == {"BasicAuthPassword": "0123456789abcdef"} and kept == {}


def test_member_lists_are_kept_normalized():
    dm, _ = model()
    dm.set([ask({"name": "TxCtrlr"}, {"name": "TxStopPoint"}, attributeValue=" EVConnected , PowerPathClosed")])
    assert dm.member_list("TxCtrlr", "TxStopPoint") == ["EVConnected", "PowerPathClosed"]
    assert dm.text("TxCtrlr", "TxStopPoint") == "EVConnected,PowerPathClosed"


def test_first_values_from_the_config_are_checked_and_lose_to_a_csms_setting():
    dm, kept = model({"TxCtrlr/TxStartPoint": "Authorized"})
    problems = dm.first({"TxCtrlr.TxStartPoint": "EVConnected", "OCPPCommCtrlr.HeartbeatInterval": "120",
                         "SecurityCtrlr.SecurityProfile": "3", "TxCtrlr.Nope": "1",
                         "SampledDataCtrlr.TxUpdatedInterval": "-1"})
    assert set(problems) == {"SecurityCtrlr.SecurityProfile", "TxCtrlr.Nope", "SampledDataCtrlr.TxUpdatedInterval"}
    assert dm.text("TxCtrlr", "TxStartPoint") == "Authorized" and dm.int("OCPPCommCtrlr", "HeartbeatInterval") == 120


def test_the_configuration_inventory_holds_what_an_operator_may_set():
    dm, _ = model()
    report = dm.base_report("ConfigurationInventory")
    mutability = {r["variableAttribute"][0]["mutability"] for r in report}
    assert mutability == {"ReadWrite", "WriteOnly"}
    password = next(r for r in report if r["variable"]["name"] == "BasicAuthPassword")
    assert "value" not in password["variableAttribute"][0]


def test_the_full_inventory_holds_every_controller_and_each_evse_and_connector():
    dm, _ = model()
    report = dm.base_report("FullInventory")
    components = {(r["component"]["name"], r["component"].get("evse", {}).get("id")) for r in report}
    for name in ("OCPPCommCtrlr", "TxCtrlr", "AuthCtrlr", "AuthCacheCtrlr", "LocalAuthListCtrlr", "SampledDataCtrlr",
                 "AlignedDataCtrlr", "SmartChargingCtrlr", "SecurityCtrlr", "DeviceDataCtrlr", "ReservationCtrlr",
                 "ClockCtrlr", "ChargingStation"):
        assert (name, None) in components, name
    assert {("EVSE", 1), ("EVSE", 2), ("Connector", 1), ("Connector", 2)} <= components
    for data, tbc in pages(report, 20):
        valid("NotifyReport", {"requestId": 1, "generatedAt": "2026-11-28T16:20:00.000Z", "seqNo": 0,
                               "reportData": data, "tbc": tbc})


def test_the_summary_inventory_holds_availability_and_problems():
    dm, _ = model()
    names = {r["variable"]["name"] for r in dm.base_report("SummaryInventory")}
    assert names == {"AvailabilityState", "Available", "Problem"}


def test_a_custom_report_picks_components_variables_and_criteria():
    dm, _ = model()
    whole = dm.custom_report([{"component": {"name": "TxCtrlr"}}], None)
    assert {r["variable"]["name"] for r in whole} >= {"TxStartPoint", "TxStopPoint", "StopTxOnInvalidId"}
    one = dm.custom_report([{"component": {"name": "EVSE", "evse": {"id": 2}}, "variable": {"name": "SupplyPhases"}}],
                           None)
    assert [(r["component"]["evse"]["id"], r["variable"]["name"]) for r in one] == [(2, "SupplyPhases")]
    every_evse = dm.custom_report([{"component": {"name": "EVSE"}, "variable": {"name": "Power"}}], None)
    assert len(every_evse) == 2
    enabled = dm.custom_report(None, ["Enabled"])
    assert {r["component"]["name"] for r in enabled} >= {"SampledDataCtrlr", "AuthCacheCtrlr", "ReservationCtrlr"}
    assert "OCPPCommCtrlr" not in {r["component"]["name"] for r in enabled}  # it has no Enabled variable
    assert dm.custom_report([{"component": {"name": "CoffeeCtrlr"}}], None) == []


def test_a_report_is_paged_with_tbc_on_every_page_but_the_last():
    items = [{"n": i} for i in range(250)]
    paged = pages(items, 100)
    assert [(len(chunk), tbc) for chunk, tbc in paged] == [(100, True), (100, True), (50, False)]
    assert [item for chunk, _ in paged for item in chunk] == items
    assert pages([], 100) == [([], False)]


writable = [v for v in variables(STATION) if v.mutability == "ReadWrite"]


@given(v=st.sampled_from(writable), value=st.text(max_size=40) | st.integers(-10, 10**6).map(str)
       | st.sampled_from(["true", "FALSE", "EVConnected,Authorized", "Energy.Active.Import.Register", "1.5"]))
def test_any_set_is_accepted_and_read_back_or_rejected_leaving_the_value(v, value):
    dm, kept = model()
    component = {"name": v.component}
    variable = {"name": v.name, "instance": v.instance} if v.instance else {"name": v.name}
    before = dm.value(v)
    (result,), _ = dm.set([{"component": component, "variable": variable, "attributeValue": value}])
    valid("SetVariables", {"setVariableResult": [result]}, response=True)
    (read,) = dm.get([{"component": component, "variable": variable}])
    if result["attributeStatus"] in ("Accepted", "RebootRequired"):
        assert read["attributeValue"].lower() == ",".join(x.strip() for x in value.split(",") if x.strip()).lower() \
            or read["attributeValue"] == value
        assert kept[v.key] == read["attributeValue"]
    else:
        assert result["attributeStatus"] == "Rejected" and read["attributeValue"] == before and kept == {}


def test_the_clock_reads_as_a_date_time():
    dm, _ = model()
    (result,) = dm.get([ask({"name": "ClockCtrlr"}, {"name": "DateTime"})])
    assert dt.datetime.fromisoformat(result["attributeValue"].replace("Z", "+00:00")).year == 2026
