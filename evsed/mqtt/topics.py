"""The charger's MQTT topic names, and what a command topic asks of the daemon.

Pure functions over plain values; publish.py turns status and events into messages, service.py does
the I/O. The layout is documented in README.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast

from evsed import protocol as p

ON, OFF = "ON", "OFF"
NONE = "None"                  # Home Assistant's "unknown" for a sensor, a number, a binary sensor
PRESS = "PRESS"                # what a Home Assistant button sends
MODES = p.MODES
LIMIT_SOURCE = "mqtt"          # the current limit set over MQTT: one ceiling of the limit chain
PAUSE_SOURCE = "mqtt-pause"    # pause is a ceiling of 0 A from its own source, so a limit set later keeps it
MAX_PAYLOAD = 64               # bytes: every command payload is a word or a number
PHASES = ("l1", "l2", "l3")
MIN_CURRENT_A = 6.0            # the lowest PWM offer (IEC 61851): below it an EV pauses, which set/pause says


class BadCommand(ValueError):
    """A command topic or payload we do not accept; the message says why (for the log)."""


@dataclass(frozen=True)
class Message:
    topic: str
    payload: str
    retain: bool = True


@dataclass(frozen=True)
class Rules:
    """What the commands may ask: the charger's connectors, the current limit's range (the same the
    discovered number declares), and the card a start from MQTT charges on."""

    connectors: tuple[int, ...] = (1,)
    min_a: float = MIN_CURRENT_A
    max_a: float = 32.0
    start_id_tag: str | None = None  # [mqtt] start_card's UID; None: no start over MQTT


class Topics:
    """Topic names under the base topic."""

    def __init__(self, base: str):
        self.base = base
        self.availability = f"{base}/availability"
        self.event = f"{base}/event"

    def charger(self, name: str) -> str:
        return f"{self.base}/{name}"

    def connector(self, n: int, name: str) -> str:
        return f"{self.base}/connector/{n}/{name}"

    def command(self, name: str, connector: int = 0) -> str:
        return f"{self.base}/set/{name}" if connector == 0 else f"{self.base}/connector/{connector}/set/{name}"

    def command_filters(self) -> tuple[str, str]:
        return f"{self.base}/set/+", f"{self.base}/connector/+/set/+"


def command_request(topics: Topics, topic: str, payload: bytes, rules: Rules) -> p.Command[Any]:
    """The control-socket command a command topic asks for; raises BadCommand."""
    if not topic.startswith(topics.base + "/"):
        raise BadCommand(f"not a command topic: {topic!r}")
    parts = topic[len(topics.base) + 1:].split("/")
    if len(parts) == 2 and parts[0] == "set":
        connector, name = 0, parts[1]
    elif len(parts) == 4 and parts[0] == "connector" and parts[2] == "set" and parts[1].isdigit():
        connector, name = int(parts[1]), parts[3]
        if connector not in rules.connectors:
            raise BadCommand(f"no connector {connector}")
    else:
        raise BadCommand(f"not a command topic: {topic!r}")
    if len(payload) > MAX_PAYLOAD:
        raise BadCommand(f"payload of {len(payload)} bytes is too long")
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise BadCommand("payload is not UTF-8 text") from None
    if name == "current_a":
        return p.Limit(source=LIMIT_SOURCE, connector=connector, current_a=_current(text, rules))
    if name == "pause":
        return p.Limit(source=PAUSE_SOURCE, connector=connector, current_a=0 if _on_off(text) else None)
    if name == "available":
        return p.Availability(connector=connector, operative=_on_off(text))
    if name in ("mode", "restart"):
        if connector != 0:
            raise BadCommand(f"{name} is the charger's: use <base>/set/{name}")
        if name == "restart":
            _press(name, text)
            return p.Restart()
        if text.lower() not in MODES:
            raise BadCommand(f"mode: expected one of {', '.join(MODES)}, got {text!r}")
        return p.SetMode(mode=cast(p.Mode, text.lower()))
    if name in ("start", "stop"):
        if connector == 0:
            raise BadCommand(f"{name} is a connector's: use <base>/connector/<n>/set/{name}")
        _press(name, text)
        if name == "start":
            if rules.start_id_tag is None:
                raise BadCommand("start: set [mqtt] start_card to the card a start from MQTT charges on")
            return p.RemoteStart(connector=connector, id_tag=rules.start_id_tag)
        return p.RemoteStop(connector=connector, reason="remote")
    raise BadCommand(f"unknown command {name!r}")


def _current(text: str, rules: Rules) -> float | None:
    if text.lower() in ("", "none", "null"):
        return None  # lift the MQTT limit
    try:
        value = float(text)
    except ValueError:
        raise BadCommand(f"current_a: expected a number of A, or none to lift, got {text!r}") from None
    if not math.isfinite(value) or not rules.min_a <= value <= rules.max_a:
        raise BadCommand(f"current_a: {text!r} out of range {rules.min_a:g}..{rules.max_a:g} A "
                         "(set/pause ON stops charging; none lifts the limit)")
    return value


def _on_off(text: str) -> bool:
    word = text.lower()
    if word in ("on", "true", "1"):
        return True
    if word in ("off", "false", "0"):
        return False
    raise BadCommand(f"expected ON or OFF, got {text!r}")


def _press(name: str, text: str) -> None:
    if text.upper() != PRESS:
        raise BadCommand(f"{name}: expected {PRESS}, got {text!r}")
