"""Home Assistant MQTT discovery: the charger as one device, in one retained device-discovery message.

Per connector the sensors, binary sensors, start/stop buttons and its charging plan's entities; the charger's controls (mode select of
the modes it can follow, current number in the range set/current_a takes, pause and availability
switches, and restart when the host grants it). All on topics.py's topics; README.md lists every entity.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Sequence

from evsed import __version__
from evsed import protocol as p
from evsed.mqtt.publish import PILOT_STATES
from evsed.mqtt.settings import MqttSettings
from evsed.mqtt.topics import HHMM, MODES, NONE, PHASES, PLAN_MAX_KWH, PLAN_MIN_KWH, PRESS, Rules, Topics

# OCPP 1.6 ChargePointStatus: the values of <base>/connector/<n>/status (an enum sensor in Home Assistant).
STATUSES = ("Available", "Preparing", "Charging", "SuspendedEVSE", "SuspendedEV", "Finishing",
            "Reserved", "Unavailable", "Faulted")

PLAN_STATES = ("none",) + p.choices(p.PlanState)  # <base>/connector/<n>/plan/state
# Home Assistant's text entity has no "unknown": a connector without a plan shows an empty departure,
# which the pattern (the departure as the daemon takes it, HH:MM) lets through.
DEPARTURE_PATTERN = f"^({HHMM.pattern})?$"
NO_DEPARTURE = "{{ '' if value == 'None' else value }}"
NO_PLAN_ATTRIBUTES = "{{ '{}' if value == 'null' else value }}"  # attributes must be an object


def object_id(charger_id: str) -> str:
    """The charger id in the characters a discovery topic and a unique_id allow."""
    return "evsed_" + re.sub(r"[^A-Za-z0-9_-]", "_", charger_id)


def _name(label: str, text: str) -> str:
    # Home Assistant shows "<device> <entity>": sentence case, the connector first when there are several.
    return f"{label}{text[0].lower()}{text[1:]}" if label else text


def discovery_topic(settings: MqttSettings) -> str:
    return f"{settings.discovery_prefix}/device/{object_id(settings.charger_id)}/config"


def rules(settings: MqttSettings, hello: p.HelloReply) -> Rules:
    """What the commands take: the one range the current number declares, from the charger's real limits."""
    return Rules(connectors=hello.connectors or (1,), max_a=settings.max_current_a,
                 start_id_tag=settings.start_id_tag, restart=settings.restart_button)


def device_config(settings: MqttSettings, hello: p.HelloReply, modes: Sequence[str] = MODES) -> dict:
    """The device-discovery payload (Home Assistant 2024.11 or newer); modes: those the charger can follow."""
    topics = Topics(settings.base_topic)
    limits = rules(settings, hello)
    oid = object_id(settings.charger_id)
    phases = hello.phases
    online = {"topic": topics.availability}
    components: dict[str, dict] = {}

    def add(key: str, platform: str, name: str, **options: Any) -> None:
        components[key] = {"platform": platform, "name": name, "unique_id": f"{oid}_{key}", **options}

    def sensor(key: str, name: str, topic: str, unit: str, device_class: str, precision: int, **options: Any) -> None:
        add(key, "sensor", name, device_class=device_class, unit_of_measurement=unit,
            suggested_display_precision=precision, state_topic=topic, **options)

    for n in limits.connectors:
        label = f"Connector {n} " if len(limits.connectors) > 1 else ""
        key = f"c{n}_"
        # a meter reading that is stale (or missing) makes these unavailable, not an old value shown as now's
        measured = {"availability": [online, {"topic": topics.connector(n, "reading"),
                                              "payload_available": "fresh", "payload_not_available": "stale"}],
                    "availability_mode": "all"}
        sensor(key + "power", _name(label, "Power"), topics.connector(n, "power_w"), "W", "power", 0,
               state_class="measurement", **measured)
        sensor(key + "energy", _name(label, "Energy"), topics.connector(n, "energy_wh"), "Wh", "energy", 0,
               state_class="total_increasing", **measured)
        for phase in PHASES[:phases]:
            sensor(f"{key}current_{phase}", _name(label, f"Current {phase.upper()}"),
                   topics.connector(n, f"current_a/{phase}"), "A", "current", 1, state_class="measurement", **measured)
        sensor(key + "session_energy", _name(label, "Session energy"), topics.connector(n, "session/energy_wh"),
               "Wh", "energy", 0, state_class="total_increasing")
        if settings.currency:
            sensor(key + "session_cost", _name(label, "Session cost"), topics.connector(n, "session/cost"),
                   settings.currency, "monetary", settings.currency_decimals, state_class="total")
        sensor(key + "allowed_current", _name(label, "Allowed current"), topics.connector(n, "allowed_a"),
               "A", "current", 1, state_class="measurement")
        add(key + "state", "sensor", _name(label, "State"), device_class="enum", options=list(STATUSES),
            state_topic=topics.connector(n, "status"))
        add(key + "plugged", "binary_sensor", _name(label, "Plugged in"), device_class="plug",
            state_topic=topics.connector(n, "plugged"))
        add(key + "charging", "binary_sensor", _name(label, "Charging"), device_class="battery_charging",
            state_topic=topics.connector(n, "charging"))
        add(key + "problem", "binary_sensor", _name(label, "Problem"), device_class="problem",
            state_topic=topics.connector(n, "problem"))
        add(key + "fault", "sensor", _name(label, "Fault"), icon="mdi:alert-circle-outline",
            state_topic=topics.connector(n, "fault"))
        add(key + "pilot", "sensor", _name(label, "Pilot state"), device_class="enum", options=list(PILOT_STATES),
            entity_category="diagnostic", state_topic=topics.connector(n, "state"))
        add(key + "card", "sensor", _name(label, "Card"), icon="mdi:card-account-details-outline",
            entity_category="diagnostic", state_topic=topics.connector(n, "session/card"))
        add(key + "card_group", "sensor", _name(label, "Card group"), icon="mdi:account-group-outline",
            entity_category="diagnostic", state_topic=topics.connector(n, "session/group"))
        _plan_entities(add, topics, label, key, n, settings)
        if limits.start_id_tag is not None:  # [mqtt] start_card: the daemon starts only for a known card
            add(key + "start", "button", _name(label, "Start charging"), icon="mdi:play",
                payload_press=PRESS, command_topic=topics.command("start", n))
        add(key + "stop", "button", _name(label, "Stop charging"), icon="mdi:stop",
            payload_press=PRESS, command_topic=topics.command("stop", n))
    add("mode", "select", "Charging mode", options=[m for m in MODES if m in modes] or ["fast"],
        icon="mdi:ev-station", state_topic=topics.charger("mode"), command_topic=topics.command("mode"))
    add("current_limit", "number", "Current limit", device_class="current", unit_of_measurement="A",
        min=limits.min_a, max=limits.max_a, step=1, mode="box", payload_reset=NONE,
        state_topic=topics.charger("current_limit_a"), command_topic=topics.command("current_a"))
    add("lift_current_limit", "button", "Lift current limit", icon="mdi:arrow-expand-up",
        payload_press="none", command_topic=topics.command("current_a"))
    add("pause", "switch", "Pause", icon="mdi:pause", state_topic=topics.charger("paused"),
        command_topic=topics.command("pause"))
    add("available", "switch", "Available", entity_category="config", state_topic=topics.charger("available"),
        command_topic=topics.command("available"))
    add("available_pending", "binary_sensor", "Unavailable after the session", icon="mdi:timer-sand",
        entity_category="diagnostic", state_topic=topics.charger("available_pending"))
    if limits.restart:  # [mqtt] restart_button: the host granted it; else the daemon would refuse it
        add("restart", "button", "Restart", device_class="restart", entity_category="config",
            payload_press=PRESS, command_topic=topics.command("restart"))
    device = {"identifiers": [oid], "name": settings.charger_id, "manufacturer": "evsed", "model": "EV charger",
              "sw_version": __version__}
    if settings.configuration_url:
        device["configuration_url"] = settings.configuration_url
    return {
        "device": device,
        "origin": {"name": "evsed", "sw_version": __version__},
        "availability": [online],
        "qos": 1,
        "components": components,
    }


def _plan_entities(add: Callable[..., None], topics: Topics, label: str, key: str, n: int,
                   settings: MqttSettings) -> None:
    """A connector's charging plan: what it does and why (the whole plan as its attributes), whether it can
    finish, when, at what cost; its energy and departure to set (the plan is set once both are known) and
    a button to cancel it."""
    def topic(name: str) -> str:
        return topics.connector(n, name)
    add(key + "plan", "sensor", _name(label, "Plan"), icon="mdi:calendar-clock", state_topic=topic("plan/reason"),
        json_attributes_topic=topic("plan"), json_attributes_template=NO_PLAN_ATTRIBUTES)
    add(key + "plan_state", "sensor", _name(label, "Plan state"), device_class="enum", options=list(PLAN_STATES),
        state_topic=topic("plan/state"))
    add(key + "plan_infeasible", "binary_sensor", _name(label, "Plan cannot finish in time"), device_class="problem",
        state_topic=topic("plan/infeasible"))
    add(key + "plan_finish", "sensor", _name(label, "Plan finish"), device_class="timestamp",
        state_topic=topic("plan/finish"))
    if settings.currency:
        add(key + "plan_cost", "sensor", _name(label, "Plan cost"), device_class="monetary",
            unit_of_measurement=settings.currency, suggested_display_precision=settings.currency_decimals,
            state_topic=topic("plan/cost"))
    add(key + "plan_energy", "number", _name(label, "Plan energy"), device_class="energy", unit_of_measurement="kWh",
        min=PLAN_MIN_KWH, max=PLAN_MAX_KWH, step=0.1, mode="box", payload_reset=NONE,
        state_topic=topic("plan/energy_kwh"), command_topic=topics.command("plan_energy_kwh", n))
    add(key + "plan_by", "text", _name(label, "Plan departure"), icon="mdi:clock-end", min=0, max=5,
        pattern=DEPARTURE_PATTERN, value_template=NO_DEPARTURE, state_topic=topic("plan/departure"),
        command_topic=topics.command("plan_by", n))
    add(key + "plan_cancel", "button", _name(label, "Cancel plan"), icon="mdi:calendar-remove",
        payload_press=PRESS, command_topic=topics.command("plan_cancel", n))


def discovery_payload(settings: MqttSettings, hello: p.HelloReply, modes: Sequence[str] = MODES) -> str:
    return json.dumps(device_config(settings, hello, modes), separators=(",", ":"))
