"""The OCPP 2.0.1 components and variables this charging station has (the controllers, the station,
each EVSE and connector), with their characteristics, mutability and first values: data, pure."""

from __future__ import annotations

from dataclasses import dataclass

from evsed.config import Table

MEASURANDS = ("Energy.Active.Import.Register", "Power.Active.Import", "Current.Import", "Voltage",
              "Current.Offered")  # what the daemon's samples carry
TX_POINTS = ("EVConnected", "Authorized", "PowerPathClosed", "EnergyTransfer")
AVAILABILITY = ("Available", "Occupied", "Reserved", "Unavailable", "Faulted")


@dataclass(frozen=True)
class Variable:
    """One variable of one component (its Actual attribute: the only one evsed has)."""

    component: str
    name: str
    data_type: str              # boolean, integer, decimal, string, dateTime, OptionList, MemberList,
    default: str = ""           #   SequenceList (a write-only string: a password)
    mutability: str = "ReadOnly"
    unit: str = ""
    values: tuple[str, ...] = ()  # valuesList of the list types
    min: float | None = None      # minLimit/maxLimit: a number's range, a string's length
    max: float | None = None
    instance: str = ""            # the variable's instance ("TransactionEvent" of MessageAttempts)
    evse: int | None = None
    connector: int | None = None
    reboot: bool = False          # a change takes effect on the next connection: RebootRequired
    persistent: bool = True
    constant: bool = False        # fixed for this station (its hardware, its config file)
    live: bool = False            # read from the station's state when asked (AvailabilityState...)
    secret: bool = False          # kept outside the state file (BasicAuthPassword: password_file)

    @property
    def key(self) -> str:
        """Its name in the uplink's state: Component[@evse[.connector]]/Variable[:instance]."""
        where = "" if self.evse is None else f"@{self.evse}" + ("" if self.connector is None else f".{self.connector}")
        return f"{self.component}{where}/{self.name}" + (f":{self.instance}" if self.instance else "")


def key(component: str, name: str, instance: str = "", evse: int | None = None,
        connector: int | None = None) -> str:
    return Variable(component, name, "string", instance=instance, evse=evse, connector=connector).key


@dataclass(frozen=True)
class Station:
    """What the variables' fixed values come from: the config file and the daemon's hello."""

    identity: str
    vendor: str
    model: str
    connectors: tuple[int, ...]      # the daemon's connector ids: one EVSE each, with connector 1
    phases: int
    max_current_a: float
    voltage_v: float
    security_profile: int
    heartbeat_s: int = 300
    call_timeout_s: float = 30.0
    auth_timeout_s: float = 60.0
    reconnect_min_s: float = 1.0
    connector_type: str = "cType2"   # a tethered Type 2 cable; sType2 for a socket


def _rw(component: str, name: str, data_type: str, default: str, *, unit: str = "", values: tuple[str, ...] = (),
        min: float | None = None, max: float | None = None, instance: str = "", reboot: bool = False) -> Variable:
    return Variable(component, name, data_type, default, "ReadWrite", unit, values, min, max, instance,
                    reboot=reboot)


def _ro(component: str, name: str, data_type: str, default: str, *, unit: str = "", values: tuple[str, ...] = (),
        min: float | None = None, max: float | None = None, instance: str = "", evse: int | None = None,
        connector: int | None = None) -> Variable:
    return Variable(component, name, data_type, default, "ReadOnly", unit, values, min, max, instance, evse,
                    connector, constant=True)


def _live(component: str, name: str, data_type: str, *, unit: str = "", values: tuple[str, ...] = (),
          min: float | None = None, max: float | None = None, instance: str = "", evse: int | None = None,
          connector: int | None = None) -> Variable:
    return Variable(component, name, data_type, "", "ReadOnly", unit, values, min, max, instance, evse, connector,
                    persistent=False, live=True)


def variables(s: Station) -> list[Variable]:
    """Every variable of the station, in report order (controllers, station, EVSEs and connectors)."""
    m = ",".join(MEASURANDS)
    power_w = s.max_current_a * s.voltage_v * s.phases
    out = [
        # OCPPCommCtrlr
        _ro("OCPPCommCtrlr", "FileTransferProtocols", "MemberList", "HTTP,HTTPS,FTP",
            values=("HTTP", "HTTPS", "FTP")),
        _rw("OCPPCommCtrlr", "HeartbeatInterval", "integer", str(s.heartbeat_s), unit="s", min=1, max=86400),
        _ro("OCPPCommCtrlr", "MessageTimeout", "integer", str(int(s.call_timeout_s)), unit="s", instance="Default"),
        _rw("OCPPCommCtrlr", "MessageAttemptInterval", "integer", "60", unit="s", min=0, max=86400,
            instance="TransactionEvent"),
        _rw("OCPPCommCtrlr", "MessageAttempts", "integer", "3", min=1, max=100, instance="TransactionEvent"),
        _ro("OCPPCommCtrlr", "NetworkConfigurationPriority", "SequenceList", "0", values=("0",)),
        _ro("OCPPCommCtrlr", "NetworkProfileConnectionAttempts", "integer", "3"),
        _rw("OCPPCommCtrlr", "OfflineThreshold", "integer", "60", unit="s", min=0, max=86400),
        _ro("OCPPCommCtrlr", "QueueAllMessages", "boolean", "false"),
        _ro("OCPPCommCtrlr", "ResetRetries", "integer", "0"),  # a reset is the service manager's restart
        _ro("OCPPCommCtrlr", "RetryBackOffRandomRange", "integer", str(max(1, int(s.reconnect_min_s))), unit="s"),
        _ro("OCPPCommCtrlr", "RetryBackOffRepeatTimes", "integer", "20"),
        _ro("OCPPCommCtrlr", "RetryBackOffWaitMinimum", "integer", str(max(1, int(s.reconnect_min_s))), unit="s"),
        _ro("OCPPCommCtrlr", "UnlockOnEVSideDisconnect", "boolean", "true"),
        _rw("OCPPCommCtrlr", "WebSocketPingInterval", "integer", "60", unit="s", min=0, max=3600, reboot=True),
        # TxCtrlr
        _ro("TxCtrlr", "EVConnectionTimeOut", "integer", str(int(s.auth_timeout_s)), unit="s"),
        _ro("TxCtrlr", "StopTxOnEVSideDisconnect", "boolean", "true"),
        _rw("TxCtrlr", "StopTxOnInvalidId", "boolean", "true"),
        _ro("TxCtrlr", "TxBeforeAcceptedEnabled", "boolean", "false"),
        _rw("TxCtrlr", "TxStartPoint", "MemberList", "PowerPathClosed", values=TX_POINTS),
        _rw("TxCtrlr", "TxStopPoint", "MemberList", "EVConnected,Authorized", values=TX_POINTS),
        # SampledDataCtrlr
        _rw("SampledDataCtrlr", "Enabled", "boolean", "true"),
        _ro("SampledDataCtrlr", "TxEndedInterval", "integer", "0", unit="s"),
        _rw("SampledDataCtrlr", "TxEndedMeasurands", "MemberList", "Energy.Active.Import.Register",
            values=MEASURANDS),
        _rw("SampledDataCtrlr", "TxStartedMeasurands", "MemberList", "Energy.Active.Import.Register",
            values=MEASURANDS),
        _rw("SampledDataCtrlr", "TxUpdatedInterval", "integer", "60", unit="s", min=0, max=86400),
        _rw("SampledDataCtrlr", "TxUpdatedMeasurands", "MemberList",
            "Energy.Active.Import.Register,Power.Active.Import,Current.Offered", values=MEASURANDS),
        # AlignedDataCtrlr
        _rw("AlignedDataCtrlr", "Enabled", "boolean", "true"),
        _rw("AlignedDataCtrlr", "Interval", "integer", "0", unit="s", min=0, max=86400),
        _rw("AlignedDataCtrlr", "Measurands", "MemberList", "Energy.Active.Import.Register", values=MEASURANDS),
        _ro("AlignedDataCtrlr", "SendDuringIdle", "boolean", "false"),  # the daemon samples for sessions only
        _ro("AlignedDataCtrlr", "TxEndedInterval", "integer", "0", unit="s"),
        _ro("AlignedDataCtrlr", "TxEndedMeasurands", "MemberList", "", values=MEASURANDS),
        # AuthCtrlr
        _ro("AuthCtrlr", "Enabled", "boolean", "true"),
        _rw("AuthCtrlr", "AuthorizeRemoteStart", "boolean", "false"),
        _rw("AuthCtrlr", "DisableRemoteAuthorization", "boolean", "false"),
        _rw("AuthCtrlr", "LocalAuthorizeOffline", "boolean", "true"),
        _rw("AuthCtrlr", "LocalPreAuthorize", "boolean", "false"),
        _rw("AuthCtrlr", "OfflineTxForUnknownIdEnabled", "boolean", "false"),
        # AuthCacheCtrlr
        _ro("AuthCacheCtrlr", "Available", "boolean", "true"),
        _rw("AuthCacheCtrlr", "Enabled", "boolean", "true"),
        # LocalAuthListCtrlr
        _ro("LocalAuthListCtrlr", "Available", "boolean", "true"),
        _ro("LocalAuthListCtrlr", "BytesPerMessage", "integer", "65536"),
        _rw("LocalAuthListCtrlr", "Enabled", "boolean", "true"),
        _live("LocalAuthListCtrlr", "Entries", "integer", max=10000),
        _ro("LocalAuthListCtrlr", "ItemsPerMessage", "integer", "1000"),
        # SmartChargingCtrlr
        _ro("SmartChargingCtrlr", "ACPhaseSwitchingSupported", "boolean", "false"),
        _ro("SmartChargingCtrlr", "Available", "boolean", "true"),
        _ro("SmartChargingCtrlr", "Enabled", "boolean", "true"),
        _live("SmartChargingCtrlr", "Entries", "integer", instance="ChargingProfiles", max=32),
        _ro("SmartChargingCtrlr", "ExternalControlSignalsEnabled", "boolean", "false"),
        _rw("SmartChargingCtrlr", "LimitChangeSignificance", "decimal", "10", unit="Percent", min=0, max=100),
        _ro("SmartChargingCtrlr", "PeriodsPerSchedule", "integer", "48"),
        _ro("SmartChargingCtrlr", "Phases3to1", "boolean", "false"),
        _ro("SmartChargingCtrlr", "ProfileStackLevel", "integer", "20"),
        _ro("SmartChargingCtrlr", "RateUnit", "MemberList", "A,W", values=("A", "W")),
        # SecurityCtrlr
        Variable("SecurityCtrlr", "BasicAuthPassword", "string", "", "WriteOnly", min=16, max=40,
                 secret=True, persistent=True),
        _live("SecurityCtrlr", "CertificateEntries", "integer"),
        _rw("SecurityCtrlr", "CertSigningRepeatTimes", "integer", "3", min=0, max=100),
        _rw("SecurityCtrlr", "CertSigningWaitMinimum", "integer", "60", unit="s", min=1, max=86400),
        _ro("SecurityCtrlr", "Identity", "string", s.identity, max=48),
        _ro("SecurityCtrlr", "MaxCertificateChainSize", "integer", "10000"),
        _rw("SecurityCtrlr", "OrganizationName", "string", s.vendor, max=64),
        _ro("SecurityCtrlr", "SecurityProfile", "integer", str(s.security_profile), min=0, max=3),
        # DeviceDataCtrlr
        *[_ro("DeviceDataCtrlr", "BytesPerMessage", "integer", "65536", instance=i)
          for i in ("GetReport", "GetVariables", "SetVariables")],
        _ro("DeviceDataCtrlr", "ConfigurationValueSize", "integer", "1000"),
        *[_ro("DeviceDataCtrlr", "ItemsPerMessage", "integer", n, instance=i)
          for i, n in (("GetReport", "100"), ("GetVariables", "100"), ("SetVariables", "100"))],
        _ro("DeviceDataCtrlr", "ReportingValueSize", "integer", "2500"),
        _ro("DeviceDataCtrlr", "ValueSize", "integer", "2500"),
        # ReservationCtrlr
        _ro("ReservationCtrlr", "Available", "boolean", "true"),
        _rw("ReservationCtrlr", "Enabled", "boolean", "true"),
        _ro("ReservationCtrlr", "NonEvseSpecific", "boolean", "true"),
        # ClockCtrlr
        _live("ClockCtrlr", "DateTime", "dateTime"),
        _ro("ClockCtrlr", "TimeSource", "SequenceList", "NTP", values=("NTP", "Heartbeat")),
        # ChargingStation
        _live("ChargingStation", "AvailabilityState", "OptionList", values=AVAILABILITY),
        _ro("ChargingStation", "Available", "boolean", "true"),
        _ro("ChargingStation", "Model", "string", s.model),
        _live("ChargingStation", "Problem", "boolean"),
        _ro("ChargingStation", "SupplyPhases", "integer", str(s.phases)),
        _ro("ChargingStation", "VendorName", "string", s.vendor),
    ]
    for evse in s.connectors:
        out += [
            _live("EVSE", "AvailabilityState", "OptionList", values=AVAILABILITY, evse=evse),
            _ro("EVSE", "Available", "boolean", "true", evse=evse),
            _live("EVSE", "Power", "decimal", unit="W", min=0, max=round(power_w), evse=evse),
            _ro("EVSE", "SupplyPhases", "integer", str(s.phases), evse=evse),
            _live("Connector", "AvailabilityState", "OptionList", values=AVAILABILITY, evse=evse, connector=1),
            _ro("Connector", "Available", "boolean", "true", evse=evse, connector=1),
            _ro("Connector", "ConnectorType", "string", s.connector_type, evse=evse, connector=1),
            _ro("Connector", "SupplyPhases", "integer", str(s.phases), evse=evse, connector=1),
        ]
    return out


def first_values(t: Table) -> dict[str, str]:
    """[ocpp.variables]: first values of ReadWrite variables by component (a CSMS's SetVariables
    persists over them), checked as SetVariables checks them:
        TxCtrlr.TxStartPoint = "EVConnected"
        OCPPCommCtrlr."MessageAttempts:TransactionEvent" = 5"""
    from evsed.uplink.v201.device_model import check, normal  # the rules live with the device model

    sub = t.table("variables")
    if sub is None:
        return {}
    writable = {v.key: v for v in variables(Station("", "", "", (1,), 3, 32, 230, 0)) if v.mutability == "ReadWrite"}
    components = sorted({v.component for v in writable.values()})
    out: dict[str, str] = {}
    for component in list(sub.data):
        if component not in components:
            sub.get(component, object)
            raise sub.error(component, f"not a component with writable variables ({', '.join(components)})")
        inner = sub.table(component)
        assert inner is not None
        for name in list(inner.data):
            v = writable.get(f"{component}/{name}")
            if v is None:
                inner.get(name, object)
                raise inner.error(name, "not a writable variable of " + component)
            kind: type = {"boolean": bool, "integer": int, "decimal": float}.get(v.data_type, str)
            value = inner.get(name, kind)
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            problem = check(v, text)
            if problem:
                raise inner.error(name, problem[1])
            out[v.key] = normal(v, text)
        inner.done()
    sub.done()
    return out
