"""What the uplink's core and the 2.0.1 device model read of each other: the authorization
policy from the variables, and the live variables from the station's state."""

from __future__ import annotations

from typing import Callable

from evsed.uplink.certificates import Certificates
from evsed.uplink.state import State
from evsed.uplink.times import iso
from evsed.uplink.v201 import notify
from evsed.uplink.v201.device_model import DeviceModel
from evsed.uplink.v201.messages import Messages
from evsed.uplink.v201.variables import Variable


class AuthVariables:
    """The core's authorization policy read from the device model at each use."""

    def __init__(self, model: DeviceModel):
        self.model = model

    def local_list_enabled(self) -> bool:
        return self.model.bool("LocalAuthListCtrlr", "Enabled")

    def cache_enabled(self) -> bool:
        return self.model.bool("AuthCacheCtrlr", "Enabled")

    def local_pre_authorize(self) -> bool:
        return self.model.bool("AuthCtrlr", "LocalPreAuthorize")

    def local_authorize_offline(self) -> bool:
        return self.model.bool("AuthCtrlr", "LocalAuthorizeOffline")

    def allow_offline_unknown(self) -> bool:
        return self.model.bool("AuthCtrlr", "OfflineTxForUnknownIdEnabled")

    def local_list_max(self) -> int:
        return 10000

    def update_max(self) -> int:
        return self.model.int("LocalAuthListCtrlr", "ItemsPerMessage")


class LiveValues:
    """A live variable's value now (AvailabilityState, Entries, DateTime, Power, Problem...)."""

    def __init__(self, state: State, clock: Callable[[], float], connectors: list[int], certificates: Certificates):
        self.state, self.clock, self.connectors, self.certificates = state, clock, connectors, certificates
        self.messages: Messages | None = None  # set once built (the device model comes first)

    def __call__(self, v: Variable) -> str:
        messages = self.messages
        assert messages is not None
        if v.name == "AvailabilityState":
            if v.evse is None:
                states = [self(Variable("EVSE", v.name, v.data_type, evse=e)) for e in self.connectors]
                return "Faulted" if "Faulted" in states else "Unavailable" if states and all(
                    s == "Unavailable" for s in states) else "Available"
            evse = messages.evse(v.evse)
            return notify.connector_status(evse.status, evse.ev_connected)
        if v.name == "DateTime":
            return iso(self.clock())
        if v.name == "Entries":
            return str(self.state.count("local_list" if v.component == "LocalAuthListCtrlr" else "profiles"))
        if v.name == "CertificateEntries":
            return str(self.certificates.count())
        if v.name == "Power" and v.evse is not None:
            return str(round(float(messages.samples.get(v.evse, {}).get("power_w") or 0.0), 1))
        if v.name == "Problem":
            return "true" if any(messages.evse(e).status == "Faulted" for e in self.connectors) else "false"
        return ""
