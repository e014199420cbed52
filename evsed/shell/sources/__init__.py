"""The limit sources, one module each (window, group, cable, external input, load management,
solar, ocpp): each reads what it needs of the charger through a small Protocol and answers
the core's Limit. evsed.shell.policy sends them to the core, which keeps the one chain
(evsed.core.state.limit_chain) that the offer, status, the web page, MQTT and OCPP all read.
"""

from __future__ import annotations

from typing import Protocol

from evsed.core.state import Connector
from hal import MeterReading


class Connected(Protocol):
    """What a source reads of one connector."""

    @property
    def id(self) -> int: ...
    @property
    def state(self) -> Connector: ...
    @property
    def last_reading(self) -> MeterReading | None: ...
