"""The charger's MQTT topic names, and what a command topic asks of the daemon.

Pure functions over plain values; publish.py turns status and events into messages, service.py does
the I/O. The layout is documented in README.md.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from dataclasses import dataclass
from typing import Any, cast

from evsed import protocol as p

ON, OFF = "ON", "OFF"
NONE = "None"                  # Home Assistant's "unknown" for a sensor, a number, a binary sensor
PRESS = "PRESS"                # what a Home Assistant button sends
MODES = p.MODES
LIMIT_SOURCE = "mqtt"          # the current limit set over MQTT: one ceiling of the limit chain
PAUSE_SOURCE = "mqtt-pause"    # pause is a ceiling of 0 A from its own source, so a limit set later keeps it
MAX_PAYLOAD = 64               # bytes: every command payload is a word or a number, but these two:
PLAN_MAX_PAYLOAD = 256         # set/plan's JSON object
PLAN_COMMANDS = ("plan", "plan_energy_kwh", "plan_by", "plan_cancel")  # a connector's
PLAN_KEYS = ("energy_kwh", "soc_pct", "soc_now_pct", "by")  # what set/plan's object may hold
PLAN_MIN_KWH, PLAN_MAX_KWH = 0.1, 300.0  # what the plan command takes (evsed.protocol_plans.SetPlan)
HHMM = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")  # a departure as Home Assistant's text entity sends it
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
    discovered number declares), the card a start from MQTT charges on, and whether the host granted
    the restart."""

    connectors: tuple[int, ...] = (1,)
    min_a: float = MIN_CURRENT_A
    max_a: float = 32.0
    start_id_tag: str | None = None  # [mqtt] start_card's UID; None: no start over MQTT
    restart: bool = False  # [mqtt] restart_button; the daemon refuses the restart without it anyway


@dataclass(frozen=True)
class PlanPart:
    """One value of a connector's plan, as Home Assistant's number (energy) and text (departure) send it:
    the service sets the plan once it knows both (complete_plan)."""

    connector: int
    energy_kwh: float | None = None
    by: str | None = None  # "HH:MM" (the next time the charger's clock reads it), or an ISO time with its offset


@dataclass(frozen=True)
class PlanDraft:
    """What a PlanPart completes: the energy and departure last set over MQTT or seen in the connector's plan."""

    energy_kwh: float | None = None
    by: str | None = None
    planned: bool = False  # both seen in the connector's plan (not yet ended)


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


def command_request(topics: Topics, topic: str, payload: bytes, rules: Rules) -> p.Command[Any] | PlanPart:
    """The control-socket command a command topic asks for (or one value of a plan, which the service
    completes); raises BadCommand."""
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
    limit = p.PRICES_MAX_BYTES if name == "prices" else PLAN_MAX_PAYLOAD if name == "plan" else MAX_PAYLOAD
    if len(payload) > limit:
        raise BadCommand(f"payload of {len(payload)} bytes is too long (at most {limit})")
    if name == "prices":
        if connector != 0:
            raise BadCommand("prices are the charger's: use <base>/set/prices")
        try:
            return p.prices_from_json(payload, "mqtt")
        except p.WireError as exc:
            raise BadCommand(f"prices: {exc}") from None
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
            if not rules.restart:
                raise BadCommand("restart: the host grants it to MQTT with [mqtt] restart_button = true")
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
    if name in PLAN_COMMANDS:
        if connector == 0:
            raise BadCommand(f"{name} is a connector's: use <base>/connector/<n>/set/{name}")
        return _plan(name, connector, text)
    raise BadCommand(f"unknown command {name!r}")


def _plan(name: str, connector: int, text: str) -> p.Command[Any] | PlanPart:
    """set/plan (a JSON object: energy_kwh, or soc_pct with soc_now_pct; and by) and plan_cancel as
    commands; plan_energy_kwh and plan_by as a PlanPart."""
    if name == "plan_cancel":
        _press(name, text)
        return p.CancelPlan(connector=connector)
    if name == "plan_energy_kwh":
        return PlanPart(connector, energy_kwh=_energy_kwh(text))
    if name == "plan_by":
        return PlanPart(connector, by=_by(name, text))
    try:
        fields = json.loads(text)
    except ValueError:
        raise BadCommand(f"plan: expected a JSON object like {{\"energy_kwh\": 20, \"by\": \"07:00\"}}, "
                         f"got {text[:40]!r}") from None
    if not isinstance(fields, dict) or not fields.keys() <= set(PLAN_KEYS) or not isinstance(fields.get("by"), str):
        raise BadCommand(f"plan: expected an object of {', '.join(PLAN_KEYS)} (by, and energy_kwh or soc_pct "
                         f"with soc_now_pct), got {text[:60]!r}")
    _by("plan: by", fields["by"])
    try:
        return p.SetPlan.from_wire({**fields, "connector": connector, "origin": "mqtt"})
    except p.WireError as exc:
        raise BadCommand(f"plan: {exc}") from None


def complete_plan(part: PlanPart, draft: PlanDraft) -> tuple[PlanDraft, p.SetPlan | None]:
    """The draft with part's value, and the plan to set when it holds both the energy and the departure."""
    draft = PlanDraft(part.energy_kwh if part.energy_kwh is not None else draft.energy_kwh,
                      part.by if part.by is not None else draft.by)
    if draft.energy_kwh is None or draft.by is None:
        return draft, None
    return draft, p.SetPlan(connector=part.connector, energy_kwh=draft.energy_kwh, by=draft.by, origin="mqtt")


def seen_plan(draft: PlanDraft, plan: p.PlanNow | None) -> PlanDraft:
    """The draft after a status: a running plan's energy and departure; once it has ended, its departure's
    clock time, so that a new energy plans for the same time of day."""
    if plan is not None:
        return PlanDraft(plan.energy_wh / 1000, plan.by, planned=True)
    if draft.planned and draft.by is not None:
        return PlanDraft(draft.energy_kwh, departure_hhmm(draft.by))
    return draft  # a departure given over MQTT, waiting for its energy, stays as given


def departure_hhmm(by: str) -> str:
    """The clock time of an ISO departure as the charger reads it (the plan's `by` carries its offset)."""
    return dt.datetime.fromisoformat(by).strftime("%H:%M")


def _energy_kwh(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BadCommand(f"plan_energy_kwh: expected a number of kWh, got {text!r}") from None
    if not math.isfinite(value) or not PLAN_MIN_KWH <= value <= PLAN_MAX_KWH:
        raise BadCommand(f"plan_energy_kwh: {text!r} out of range {PLAN_MIN_KWH:g}..{PLAN_MAX_KWH:g} kWh")
    return value


def _by(name: str, text: str) -> str:
    """A departure: HH:MM, or an ISO 8601 time with its UTC offset (the daemon checks it is ahead)."""
    if HHMM.fullmatch(text):
        return text
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        when = None
    if when is None or when.tzinfo is None or len(text) > 40:
        raise BadCommand(f"{name}: expected HH:MM or an ISO 8601 time with its offset, got {text[:40]!r}")
    return text


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
