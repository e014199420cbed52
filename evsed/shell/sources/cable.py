"""The cable source: a socket's plugged cable, rated by its proximity pilot resistor (a tethered
cable's rating is in the core's own chain, from the config)."""

from __future__ import annotations

import structlog

from evsed.core import limits as lm
from evsed.core.state import PLUGGED_STATES
from evsed.shell.sources import Connected
from hal import ProximityPilot

log = structlog.get_logger("evsed")


def limit(ctrl: Connected, pilot: object) -> lm.Limit:
    """pilot: the connector's pilot device (a ProximityPilot reads the PP)."""
    if not isinstance(pilot, ProximityPilot) or ctrl.state.pilot not in PLUGGED_STATES:
        return lm.Limit("cable", None, "socket: charger maximum")  # no PP on this board, or nothing plugged
    try:
        ohm = pilot.proximity_ohm()
    except Exception as exc:  # noqa: BLE001 - a failed PP read blocks charging, with the reason
        log.warning("pp.read_failed", connector=ctrl.id, error=repr(exc))
        ohm = None
    return lm.cable_from_pp(ohm)
