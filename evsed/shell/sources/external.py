"""The external cap input: a grid operator's control contact (§14a EnWG) caps the power while
it is active, as A per phase on the phases the EV draws on."""

from __future__ import annotations

from typing import Protocol

from evsed.core import limits as lm
from evsed.shell.sources import Connected


class Input(Protocol):
    @property
    def input_active(self) -> bool: ...
    @property
    def cap_w(self) -> float: ...
    @property
    def voltage_v(self) -> float: ...

    def phases_of(self, ctrl: Connected) -> tuple[int, ...]: ...


def limit(site: Input, ctrl: Connected) -> lm.Limit:
    return lm.external_cap(site.input_active, site.cap_w, len(site.phases_of(ctrl)), site.voltage_v)
