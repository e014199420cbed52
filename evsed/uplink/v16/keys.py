"""The OCPP 1.6 configuration keys: which exist, their types and read-only flags, and the
Get/ChangeConfiguration rules over the persisted values (pure; the store persists)."""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Callable, Iterable

from evsed.config import Table

MEASURANDS = ("Energy.Active.Import.Register", "Power.Active.Import", "Current.Import",
              "Voltage", "Current.Offered")  # what the daemon's samples carry
PROFILES = "Core,FirmwareManagement,LocalAuthListManagement,Reservation,SmartCharging,RemoteTrigger"


@dataclass(frozen=True)
class Key:
    kind: str                 # bool, int, csl (comma-separated list), str
    default: str
    readonly: bool = False
    secret: bool = False      # write-only: never reported (AuthorizationKey)
    reboot: bool = False      # takes effect on the next connection: RebootRequired
    choices: tuple[str, ...] = ()   # for csl: the allowed members
    max_items: int = 0
    min: int = 0


KEYS: dict[str, Key] = {
    # Core profile
    "AllowOfflineTxForUnknownId": Key("bool", "false"),
    "AuthorizationCacheEnabled": Key("bool", "true"),
    "AuthorizeRemoteTxRequests": Key("bool", "false"),
    "ClockAlignedDataInterval": Key("int", "0"),
    "ConnectionTimeOut": Key("int", "60", readonly=True),   # the daemon's [timing] auth_timeout_s
    "ConnectorPhaseRotation": Key("csl", "NotApplicable"),
    "GetConfigurationMaxKeys": Key("int", "64", readonly=True),
    "HeartbeatInterval": Key("int", "300", min=1),
    "LocalAuthorizeOffline": Key("bool", "true"),
    "LocalPreAuthorize": Key("bool", "false"),
    "MeterValuesAlignedData": Key("csl", "Energy.Active.Import.Register", choices=MEASURANDS, max_items=5),
    "MeterValuesAlignedDataMaxLength": Key("int", "5", readonly=True),
    "MeterValuesSampledData": Key("csl", "Energy.Active.Import.Register,Power.Active.Import,Current.Offered",
                                  choices=MEASURANDS, max_items=5),
    "MeterValuesSampledDataMaxLength": Key("int", "5", readonly=True),
    "MeterValueSampleInterval": Key("int", "60"),
    "NumberOfConnectors": Key("int", "1", readonly=True),
    "ResetRetries": Key("int", "1"),
    "StopTransactionOnEVSideDisconnect": Key("bool", "true", readonly=True),  # the core always stops
    "StopTransactionOnInvalidId": Key("bool", "true"),
    "StopTxnAlignedData": Key("csl", "", choices=MEASURANDS, max_items=5),
    "StopTxnAlignedDataMaxLength": Key("int", "5", readonly=True),
    "StopTxnSampledData": Key("csl", "Energy.Active.Import.Register", choices=MEASURANDS, max_items=5),
    "StopTxnSampledDataMaxLength": Key("int", "5", readonly=True),
    "SupportedFeatureProfiles": Key("csl", PROFILES, readonly=True),
    "TransactionMessageAttempts": Key("int", "3", min=1),
    "TransactionMessageRetryInterval": Key("int", "60"),
    "UnlockConnectorOnEVSideDisconnect": Key("bool", "true", readonly=True),  # the lock follows the core
    "WebSocketPingInterval": Key("int", "60", reboot=True),
    # Local Auth List Management profile
    "LocalAuthListEnabled": Key("bool", "true"),
    "LocalAuthListMaxLength": Key("int", "10000", readonly=True),
    "SendLocalListMaxLength": Key("int", "1000", readonly=True),
    # Reservation profile
    "ReserveConnectorZeroSupported": Key("bool", "true", readonly=True),
    # Smart Charging profile
    "ChargeProfileMaxStackLevel": Key("int", "20", readonly=True),
    "ChargingScheduleAllowedChargingRateUnit": Key("csl", "Current,Power", readonly=True),
    "ChargingScheduleMaxPeriods": Key("int", "48", readonly=True),
    "ConnectorSwitch3to1PhaseSupported": Key("bool", "false", readonly=True),
    "MaxChargingProfilesInstalled": Key("int", "32", readonly=True),
    # Security whitepaper (edition 2)
    "AuthorizationKey": Key("str", "", secret=True, reboot=True),
    "SecurityProfile": Key("int", "0", readonly=True),  # set in [ocpp] security_profile
}


def first_values(t: Table) -> dict[str, str]:
    """[ocpp.keys]: first values of OCPP configuration keys, checked like ChangeConfiguration."""
    sub = t.table("keys")
    if sub is None:
        return {}
    out: dict[str, str] = {}
    for name, spec in KEYS.items():
        if name in sub.data and not spec.secret:
            kind = {"bool": bool, "int": int}.get(spec.kind, str)
            value = sub.get(name, kind)
            problem = check(spec, to_text(value))
            if problem:
                raise sub.error(name, problem)
            out[name] = to_text(value)
    sub.done()
    return out


def to_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def check(spec: Key, value: str) -> str | None:
    """None when value suits the key, else why not (ChangeConfiguration answers Rejected)."""
    if len(value) > 500:
        return "longer than 500 characters"
    if spec.kind == "bool":
        return None if value.lower() in ("true", "false") else "expected true or false"
    if spec.kind == "int":
        if not value.strip().lstrip("-").isdigit():
            return "expected an integer"
        n = int(value)
        return None if spec.min <= n <= 2**31 - 1 else f"expected {spec.min} or more"
    if spec.kind == "csl":
        items = [item.strip() for item in value.split(",") if item.strip()]
        if spec.max_items and len(items) > spec.max_items:
            return f"at most {spec.max_items} items"
        bad = [item for item in items if spec.choices and item not in spec.choices]
        return f"not supported: {', '.join(bad)}" if bad else None
    if spec.secret and not 16 <= len(value) <= 40:
        return "expected 16-40 characters"
    return None


class Values:
    """The effective values: the persisted ones over [ocpp.keys] over the defaults."""

    def __init__(self, fixed: dict[str, str], stored: dict[str, str],
                 persist: Callable[[str, str], None]):
        self.fixed, self.stored, self.persist = fixed, stored, persist

    def text(self, name: str) -> str:
        spec = KEYS[name]
        if name in self.fixed:
            return self.fixed[name]
        return self.stored.get(name, spec.default)

    def bool(self, name: str) -> bool:
        return self.text(name).lower() == "true"

    def int(self, name: str) -> int:
        try:
            return int(self.text(name))
        except ValueError:
            return int(KEYS[name].default)

    def list(self, name: str) -> list[str]:
        return [item.strip() for item in self.text(name).split(",") if item.strip()]

    # builtins.list: in this class body, list names the method above
    def get(self, names: Iterable[str] | None) -> tuple[builtins.list[dict], builtins.list[str]]:
        """GetConfiguration: (configurationKey entries, unknownKey) for names (None: all)."""
        wanted = list(KEYS) if not names else list(names)
        known, unknown = [], []
        for name in wanted:
            spec = KEYS.get(name)
            if spec is None or spec.secret:  # a write-only key is reported like an unknown one
                unknown.append(name)
                continue
            known.append({"key": name, "readonly": spec.readonly, "value": self.text(name)})
        return known, unknown

    def change(self, name: str, value: str) -> str:
        """ChangeConfiguration: Accepted, Rejected, RebootRequired or NotSupported."""
        spec = KEYS.get(name)
        if spec is None:
            return "NotSupported"
        if spec.readonly or check(spec, value) is not None:
            return "Rejected"
        if spec.kind == "bool":
            value = value.lower()
        if spec.kind == "csl":
            value = ",".join(item.strip() for item in value.split(",") if item.strip())
        self.persist(name, value)
        if not spec.secret:
            self.stored[name] = value
        return "RebootRequired" if spec.reboot else "Accepted"


class AuthKeys:
    """The core's AuthPolicy read from the 1.6 keys."""

    def __init__(self, values: Values):
        self.values = values

    def local_list_enabled(self) -> bool:
        return self.values.bool("LocalAuthListEnabled")

    def cache_enabled(self) -> bool:
        return self.values.bool("AuthorizationCacheEnabled")

    def local_pre_authorize(self) -> bool:
        return self.values.bool("LocalPreAuthorize")

    def local_authorize_offline(self) -> bool:
        return self.values.bool("LocalAuthorizeOffline")

    def allow_offline_unknown(self) -> bool:
        return self.values.bool("AllowOfflineTxForUnknownId")

    def local_list_max(self) -> int:
        return self.values.int("LocalAuthListMaxLength")

    def update_max(self) -> int:
        return self.values.int("SendLocalListMaxLength")
