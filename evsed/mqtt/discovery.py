"""Home Assistant MQTT discovery: the charger as one device, in one retained device-discovery message.

Sensors per connector (power, energy, session energy, state, current per phase, allowed current) and
charger controls (mode select, current number, pause and availability switches), all on topics.py's topics.
"""

from __future__ import annotations

import json
import re

from evsed import __version__
from evsed import protocol as p
from evsed.mqtt.settings import MqttSettings
from evsed.mqtt.topics import MODES, PHASES, Topics

# OCPP 1.6 ChargePointStatus: the values of <base>/connector/<n>/status (an enum sensor in Home Assistant).
STATUSES = ("Available", "Preparing", "Charging", "SuspendedEVSE", "SuspendedEV", "Finishing",
            "Reserved", "Unavailable", "Faulted")


def object_id(charger_id: str) -> str:
    """The charger id in the characters a discovery topic and a unique_id allow."""
    return "evsed_" + re.sub(r"[^A-Za-z0-9_-]", "_", charger_id)


def _name(label: str, text: str) -> str:
    # Home Assistant shows "<device> <entity>": sentence case, the connector first when there are several.
    return f"{label}{text[0].lower()}{text[1:]}" if label else text


def discovery_topic(settings: MqttSettings) -> str:
    return f"{settings.discovery_prefix}/device/{object_id(settings.charger_id)}/config"


def device_config(settings: MqttSettings, hello: p.HelloReply) -> dict:
    """The device-discovery payload (Home Assistant 2024.11 or newer)."""
    topics = Topics(settings.base_topic)
    oid = object_id(settings.charger_id)
    connectors = list(hello.connectors) or [1]
    phases = hello.phases
    components: dict[str, dict] = {}

    def add(key: str, platform: str, name: str, **options) -> None:
        components[key] = {"platform": platform, "name": name, "unique_id": f"{oid}_{key}", **options}

    for n in connectors:
        label = f"Connector {n} " if len(connectors) > 1 else ""
        key = f"c{n}_"
        add(key + "power", "sensor", _name(label, "Power"), device_class="power",
            unit_of_measurement="W", state_class="measurement", state_topic=topics.connector(n, "power_w"))
        add(key + "energy", "sensor", _name(label, "Energy"), device_class="energy",
            unit_of_measurement="Wh", state_class="total_increasing", state_topic=topics.connector(n, "energy_wh"))
        add(key + "session_energy", "sensor", _name(label, "Session energy"), device_class="energy",
            unit_of_measurement="Wh", state_class="total_increasing",
            state_topic=topics.connector(n, "session/energy_wh"))
        add(key + "state", "sensor", _name(label, "State"), device_class="enum", options=list(STATUSES),
            state_topic=topics.connector(n, "status"))
        add(key + "allowed_current", "sensor", _name(label, "Allowed current"), device_class="current",
            unit_of_measurement="A", state_class="measurement", state_topic=topics.connector(n, "allowed_a"))
        for phase in PHASES[:phases]:
            add(f"{key}current_{phase}", "sensor", _name(label, f"Current {phase.upper()}"),
                device_class="current", unit_of_measurement="A", state_class="measurement",
                state_topic=topics.connector(n, f"current_a/{phase}"))
    add("mode", "select", "Charging mode", options=list(MODES), icon="mdi:ev-station",
        state_topic=topics.charger("mode"), command_topic=topics.command("mode"))
    add("current_limit", "number", "Current limit", device_class="current", unit_of_measurement="A",
        min=6, max=settings.max_current_a, step=1, mode="box",
        state_topic=topics.charger("current_limit_a"), command_topic=topics.command("current_a"))
    add("pause", "switch", "Pause", icon="mdi:pause", state_topic=topics.charger("paused"),
        command_topic=topics.command("pause"))
    add("available", "switch", "Available", entity_category="config", state_topic=topics.charger("available"),
        command_topic=topics.command("available"))
    return {
        "device": {"identifiers": [oid], "name": settings.charger_id, "manufacturer": "evsed",
                   "model": "EV charger", "sw_version": __version__},
        "origin": {"name": "evsed", "sw_version": __version__},
        "availability_topic": topics.availability,
        "qos": 1,
        "components": components,
    }


def discovery_payload(settings: MqttSettings, hello: p.HelloReply) -> str:
    return json.dumps(device_config(settings, hello), separators=(",", ":"))
