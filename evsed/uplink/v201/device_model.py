"""The OCPP 2.0.1 device model's rules, pure: values over the persisted ones, GetVariables and
SetVariables answers, GetBaseReport/GetReport contents and their NotifyReport pages (camelCase dicts)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Callable, Iterable, Mapping

from evsed.uplink.v201.variables import Variable

# GetReport componentCriteria: the variable whose value "true" makes a component match
CRITERIA = ("Active", "Available", "Enabled", "Problem")
# SummaryInventory: the station's charging availability and its problem conditions
SUMMARY = frozenset({"AvailabilityState", "Available", "Problem", "Tripped", "Operated"})
LIST_TYPES = ("OptionList", "MemberList", "SequenceList")


def check(v: Variable, value: str) -> tuple[str, str] | None:
    """None when value suits v, else (reasonCode, why) for a Rejected SetVariableResult."""
    if len(value) > 1000:  # DeviceDataCtrlr ConfigurationValueSize
        return "TooLargeElement", "longer than ConfigurationValueSize (1000)"
    kind = v.data_type
    if kind == "boolean":
        return None if value.lower() in ("true", "false") else ("InvalidValue", "expected true or false")
    if kind in ("integer", "decimal"):
        try:
            number = int(value) if kind == "integer" else float(value)
        except ValueError:
            return "InvalidValue", f"expected an {kind}" if kind == "integer" else "expected a decimal"
        if number != number or number in (float("inf"), float("-inf")):
            return "InvalidValue", "expected a finite number"
        if v.min is not None and number < v.min:
            return "ValueTooLow", f"below {v.min:g}"
        if v.max is not None and number > v.max:
            return "ValueTooHigh", f"above {v.max:g}"
        return None
    if kind in LIST_TYPES:
        items = members(value)
        if kind == "OptionList" and len(items) != 1:
            return "InvalidValue", "expected one of " + ",".join(v.values)
        bad = [item for item in items if item not in v.values]
        if bad:
            return "InvalidValue", f"not in the valuesList: {','.join(bad)}"[:512]
        if len(set(items)) != len(items):
            return "InvalidValue", "a member repeated"
        return None
    if kind == "dateTime":
        try:
            dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return "InvalidValue", "expected an RFC 3339 date-time"
        return None
    if v.min is not None and len(value) < v.min:
        return "ValueTooLow", f"shorter than {v.min:g} characters"
    if v.max is not None and len(value) > v.max:
        return "ValueTooHigh", f"longer than {v.max:g} characters"
    return None


def members(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def normal(v: Variable, value: str) -> str:
    """value as it is kept: booleans lower case, list members without blanks."""
    if v.data_type == "boolean":
        return value.lower()
    if v.data_type in LIST_TYPES:
        return ",".join(members(value))
    return value


def _same(a: str | None, b: str | None) -> bool:
    """Identifiers are CiString: compared without regard to case."""
    return (a or "").lower() == (b or "").lower()


def component_of(v: Variable) -> dict[str, Any]:
    out: dict[str, Any] = {"name": v.component}
    if v.evse is not None:
        out["evse"] = {"id": v.evse} if v.connector is None else {"id": v.evse, "connectorId": v.connector}
    return out


def variable_of(v: Variable) -> dict[str, Any]:
    return {"name": v.name, "instance": v.instance} if v.instance else {"name": v.name}


class DeviceModel:
    """The variables with their effective values: live ones read when asked, constant ones from the
    station, the rest persisted (persist(key, value) on every accepted SetVariables) over defaults."""

    def __init__(self, table: Iterable[Variable], stored: Mapping[str, str], persist: Callable[[str, str], None],
                 live: Callable[[Variable], str], secret: Callable[[Variable, str], bool] | None = None):
        self.table = list(table)
        self.by_key = {v.key: v for v in self.table}
        self.stored = {k: s for k, s in stored.items() if k in self.by_key}
        self.persist, self.live = persist, live
        self.secret = secret or (lambda v, value: False)  # stores a write-only value elsewhere

    # -- values the adapter reads -------------------------------------------------------------------
    def value(self, v: Variable) -> str:
        if v.live:
            return self.live(v)
        if v.constant or v.secret:
            return v.default
        return self.stored.get(v.key, v.default)

    def text(self, component: str, name: str, instance: str = "") -> str:
        return self.value(self.by_key[f"{component}/{name}" + (f":{instance}" if instance else "")])

    def int(self, component: str, name: str, instance: str = "") -> int:
        try:
            return int(float(self.text(component, name, instance)))
        except ValueError:
            return 0

    def bool(self, component: str, name: str) -> bool:
        return self.text(component, name).lower() == "true"

    def member_list(self, component: str, name: str) -> list[str]:
        return members(self.text(component, name))

    def first(self, values: Mapping[str, str]) -> dict[str, str]:
        """Check first values ([ocpp.variables]: "Component.Variable[:instance]" -> text); the
        problems by name. The good ones are kept as defaults below what a CSMS sets."""
        problems = {}
        for name, value in values.items():
            component, _, variable = name.partition(".")
            v = self.by_key.get(f"{component}/{variable}")
            if v is None:
                problems[name] = "no such writable variable"
            elif v.mutability != "ReadWrite":
                problems[name] = f"{v.mutability}: not set by the config"
            elif (why := check(v, value)) is not None:
                problems[name] = why[1]
            else:
                self.stored.setdefault(v.key, normal(v, value))
        return problems

    # -- GetVariables / SetVariables ----------------------------------------------------------------
    def find(self, component: Mapping[str, Any], variable: Mapping[str, Any]) -> Variable | str:
        """The variable addressed, or UnknownComponent / UnknownVariable."""
        evse = component.get("evse") or {}
        of_component = [v for v in self.table if _same(v.component, component.get("name"))
                        and not component.get("instance")
                        and v.evse == evse.get("id") and v.connector == evse.get("connectorId")]
        if not of_component:
            return "UnknownComponent"
        for v in of_component:
            if _same(v.name, variable.get("name")) and _same(v.instance, variable.get("instance")):
                return v
        return "UnknownVariable"

    def get(self, data: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """GetVariablesResponse getVariableResult, one per getVariableData, in order."""
        out = []
        for item in data:
            found = self.find(item["component"], item["variable"])
            attribute = item.get("attributeType") or "Actual"
            result: dict[str, Any] = {"component": dict(item["component"]), "variable": dict(item["variable"])}
            if item.get("attributeType"):
                result["attributeType"] = attribute
            if isinstance(found, str):
                result["attributeStatus"] = found
            elif attribute != "Actual":
                result["attributeStatus"] = "NotSupportedAttributeType"
            elif found.mutability == "WriteOnly":
                result["attributeStatus"] = "Rejected"
                result["attributeStatusInfo"] = {"reasonCode": "WriteOnly"}
            else:
                result["attributeStatus"] = "Accepted"
                result["attributeValue"] = self.value(found)[:2500]  # ReportingValueSize
            out.append(result)
        return out

    def set(self, data: list[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[Variable]]:
        """SetVariablesResponse setVariableResult, in order, and the variables that changed."""
        out, changed = [], []
        for item in data:
            found = self.find(item["component"], item["variable"])
            attribute = item.get("attributeType") or "Actual"
            result: dict[str, Any] = {"component": dict(item["component"]), "variable": dict(item["variable"])}
            if item.get("attributeType"):
                result["attributeType"] = attribute
            status, info = self._set(found, attribute, str(item["attributeValue"]))
            result["attributeStatus"] = status
            if info is not None:
                result["attributeStatusInfo"] = {"reasonCode": info[0], "additionalInfo": info[1]}
            if status in ("Accepted", "RebootRequired") and isinstance(found, Variable):
                changed.append(found)
            out.append(result)
        return out, changed

    def _set(self, v: Variable | str, attribute: str, value: str) -> tuple[str, tuple[str, str] | None]:
        if isinstance(v, str):
            return v, None
        if attribute != "Actual":
            return "NotSupportedAttributeType", None
        if v.mutability == "ReadOnly":
            return "Rejected", ("ReadOnly", f"{v.component}.{v.name} is read-only")
        problem = check(v, value)
        if problem is not None:
            return "Rejected", problem
        value = normal(v, value)
        if v.secret:
            if not self.secret(v, value):
                return "Rejected", ("InternalError", "not stored")
        else:
            self.persist(v.key, value)
            self.stored[v.key] = value
        return ("RebootRequired" if v.reboot else "Accepted"), None

    # -- reports --------------------------------------------------------------------------------------
    def report_data(self, v: Variable) -> dict[str, Any]:
        attribute: dict[str, Any] = {"type": "Actual", "mutability": v.mutability, "persistent": v.persistent,
                                     "constant": v.constant}
        if v.mutability != "WriteOnly":
            attribute["value"] = self.value(v)[:2500]
        characteristics: dict[str, Any] = {"dataType": v.data_type, "supportsMonitoring": False}
        if v.unit:
            characteristics["unit"] = v.unit
        if v.values:
            characteristics["valuesList"] = ",".join(v.values)
        if v.min is not None:
            characteristics["minLimit"] = v.min
        if v.max is not None:
            characteristics["maxLimit"] = v.max
        return {"component": component_of(v), "variable": variable_of(v), "variableAttribute": [attribute],
                "variableCharacteristics": characteristics}

    def base_report(self, base: str) -> list[dict[str, Any]]:
        """GetBaseReport: ConfigurationInventory (what an operator may set), FullInventory, or
        SummaryInventory (availability and problem conditions)."""
        if base == "ConfigurationInventory":
            chosen = [v for v in self.table if v.mutability != "ReadOnly"]
        elif base == "SummaryInventory":
            chosen = [v for v in self.table if v.name in SUMMARY]
        else:
            chosen = self.table
        return [self.report_data(v) for v in chosen]

    def custom_report(self, wanted: list[Mapping[str, Any]] | None, criteria: list[str] | None) -> list[dict[str, Any]]:
        """GetReport: the componentVariables asked for (a component alone: all its variables) of the
        components meeting every criterion; empty when nothing matches."""
        chosen = list(self.table)
        if wanted:
            chosen = [v for v in self.table if any(_asked(v, item) for item in wanted)]
        for criterion in criteria or []:
            meeting = {(v.component, v.evse, v.connector) for v in self.table
                       if v.name == criterion and not v.instance and self.value(v).lower() == "true"}
            chosen = [v for v in chosen if (v.component, v.evse, v.connector) in meeting]
        return [self.report_data(v) for v in chosen]


def _asked(v: Variable, item: Mapping[str, Any]) -> bool:
    """Whether a GetReport componentVariable names v: a component without evse names it on every
    EVSE, one without variable names all its variables."""
    component, variable = item["component"], item.get("variable")
    evse = component.get("evse")
    if not _same(v.component, component.get("name")) or component.get("instance"):
        return False
    if evse is not None and (v.evse != evse.get("id") or (
            evse.get("connectorId") is not None and v.connector != evse.get("connectorId"))):
        return False
    if variable is None:
        return True
    return _same(v.name, variable.get("name")) and (not variable.get("instance") or _same(v.instance, variable["instance"]))


def pages(items: list[dict[str, Any]], per_page: int) -> list[tuple[list[dict[str, Any]], bool]]:
    """NotifyReport pages: (reportData, tbc) with at most per_page items each, seqNo their index."""
    per_page = max(1, per_page)
    chunks = [items[i:i + per_page] for i in range(0, len(items), per_page)] or [[]]
    return [(chunk, n < len(chunks) - 1) for n, chunk in enumerate(chunks)]
