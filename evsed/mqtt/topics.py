"""The charger's MQTT topics: what a status reply and an event publish, and what a command topic asks.

Pure functions over plain values; service.py does the I/O. The layout is documented in README.md.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Iterable, cast

from evsed import protocol as p

ON, OFF = "ON", "OFF"
MODES = p.MODES
LIMIT_SOURCE = "mqtt"          # the current limit set over MQTT: one ceiling of the limit chain
PAUSE_SOURCE = "mqtt-pause"    # pause is a ceiling of 0 A from its own source, so a limit set later keeps it
MAX_PAYLOAD = 64               # bytes: every command payload is a word or a number
PHASES = ("l1", "l2", "l3")


class BadCommand(ValueError):
    """A command topic or payload we do not accept; the message says why (for the log)."""


@dataclass(frozen=True)
class Message:
    topic: str
    payload: str
    retain: bool = True


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


def _number(value: Any, digits: int = 0) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return ""  # an empty retained payload would delete the topic: callers skip ""
    return str(round(value)) if digits == 0 else str(round(float(value), digits))


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def binding_limit(limits: dict) -> str | None:
    """The source whose ceiling is lowest (the one that binds), or None when no source limits."""
    numeric = {k: v for k, v in limits.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    return min(numeric, key=lambda k: (numeric[k], k)) if numeric else None


def state_messages(topics: Topics, reply: p.StatusReply) -> list[Message]:
    """Retained state topics from a `status` reply (docs/protocol.md)."""
    out: list[Message] = []
    for c in reply.connectors:
        out += _connector_state(topics, c)
    out.append(Message(topics.charger("mode"), reply.mode))
    if reply.connectors:
        limits = [c.limits for c in reply.connectors]
        paused = any(m.get(PAUSE_SOURCE) is not None for m in limits)
        out.append(Message(topics.charger("paused"), ON if paused else OFF))
        own = next((m[LIMIT_SOURCE] for m in limits if m.get(LIMIT_SOURCE) is not None), None)
        # Home Assistant's number takes "None" as "unknown": the MQTT limit is lifted.
        out.append(Message(topics.charger("current_limit_a"), _number(own, 1) or "None"))
        operative = any(c.status != "Unavailable" for c in reply.connectors)
        out.append(Message(topics.charger("available"), ON if operative else OFF))
    return [m for m in out if m.payload != ""]


def _connector_state(topics: Topics, c: p.ConnectorStatus) -> list[Message]:
    n, measured, session, limits = c.id, c.measured, c.session, dict(c.limits)
    out = [
        Message(topics.connector(n, "status"), c.status),
        Message(topics.connector(n, "state"), c.state or ""),
        Message(topics.connector(n, "contactor"), c.contactor),
        Message(topics.connector(n, "offered_a"), _number(c.offered_a, 1)),
        Message(topics.connector(n, "allowed_a"), _number(c.allowed_a, 1)),
        Message(topics.connector(n, "limit"), _json({"allowed_a": c.allowed_a, "binding": binding_limit(limits),
                                                     "limits": limits})),
        Message(topics.connector(n, "available"), OFF if c.status == "Unavailable" else ON),
        Message(topics.connector(n, "session"), _json(session.to_wire() if session else None)),
        Message(topics.connector(n, "faults"), _json([f.to_wire() for f in c.faults])),
    ]
    if measured is not None and not measured.stale:  # a stale reading is not today's power: keep the last one
        out.append(Message(topics.connector(n, "power_w"), _number(measured.power_w)))
        out.append(Message(topics.connector(n, "energy_wh"), _number(measured.energy_wh)))
        for phase, value in zip(PHASES, measured.current_a):
            out.append(Message(topics.connector(n, f"current_a/{phase}"), _number(value, 1)))
    elif measured is None and session is None:
        out.append(Message(topics.connector(n, "power_w"), "0"))
    if session is not None:
        out.append(Message(topics.connector(n, "session/energy_wh"), _number(session.energy_wh)))
    return out


def event_messages(topics: Topics, event: p.Event) -> list[Message]:
    """What one event of the stream publishes: every event but meter samples on <base>/event, and the
    session start and stop on the connector's topics (not retained: they happened once)."""
    if isinstance(event, p.SessionSample):
        return []
    body, n = _json(event.to_wire()), event.connector
    out = [Message(topics.event, body, retain=False)]
    if n > 0:
        if isinstance(event, p.SessionStarted):
            out.append(Message(topics.connector(n, "session/started"), body, retain=False))
            out.append(Message(topics.connector(n, "session/energy_wh"), "0"))
        elif isinstance(event, p.SessionStopped):
            out.append(Message(topics.connector(n, "session/stopped"), body, retain=False))
            out.append(Message(topics.connector(n, "session/last"), body))
    return out


def command_request(topics: Topics, topic: str, payload: bytes, connectors: Iterable[int]) -> p.Command[Any]:
    """The control-socket command a command topic asks for; raises BadCommand."""
    if not topic.startswith(topics.base + "/"):
        raise BadCommand(f"not a command topic: {topic!r}")
    parts = topic[len(topics.base) + 1:].split("/")
    if len(parts) == 2 and parts[0] == "set":
        connector, name = 0, parts[1]
    elif len(parts) == 4 and parts[0] == "connector" and parts[2] == "set" and parts[1].isdigit():
        connector, name = int(parts[1]), parts[3]
        if connector not in set(connectors):
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
        return p.Limit(source=LIMIT_SOURCE, connector=connector, current_a=_current(text))
    if name == "pause":
        return p.Limit(source=PAUSE_SOURCE, connector=connector, current_a=0 if _on_off(text) else None)
    if name == "available":
        return p.Availability(connector=connector, operative=_on_off(text))
    if name == "mode":
        if connector != 0:
            raise BadCommand("the charging mode is the charger's: use <base>/set/mode")
        if text.lower() not in MODES:
            raise BadCommand(f"mode: expected one of {', '.join(MODES)}, got {text!r}")
        return p.SetMode(mode=cast(p.Mode, text.lower()))
    raise BadCommand(f"unknown command {name!r}")


def _current(text: str) -> float | None:
    if text.lower() in ("", "none", "null"):
        return None  # lift the MQTT limit
    try:
        value = float(text)
    except ValueError:
        raise BadCommand(f"current_a: expected a number of A, or none to lift, got {text!r}") from None
    if not math.isfinite(value) or not 0 <= value <= 80:
        raise BadCommand(f"current_a: {text!r} out of range 0..80 A")
    return value


def _on_off(text: str) -> bool:
    word = text.lower()
    if word in ("on", "true", "1"):
        return True
    if word in ("off", "false", "0"):
        return False
    raise BadCommand(f"expected ON or OFF, got {text!r}")
