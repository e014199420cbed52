"""What the MQTT service publishes for a status reply and an event, what a command topic asks of the daemon,
and the Home Assistant discovery payload: pure functions, no broker."""

import json
from dataclasses import replace

import pytest

import protocol_records as pr
from evsed import protocol as p
from evsed.mqtt import discovery, topics as tp
from evsed.mqtt.settings import MqttSettings

T = tp.Topics("evsed/garage")

CHARGING = pr.status(pr.connector(
    status="Charging", state="C", contactor="closed", offered_a=16.0, allowed_a=16.0, reason="",
    measured=p.Measured(current_a=(15.9, 16.01, 15.8), power_w=10980.4, energy_wh=123456, stale=False),
    session=pr.session(card_name="Alice", started_at="2026-11-28T16:00:00Z", energy_wh=2400, power_w=10980.4,
                            peak_power_w=11000.0),
    limits={"cable": 32.0, "mqtt": 16.0}), charger="garage", mode="solar")


def published(messages):
    return {m.topic: (m.payload, m.retain) for m in messages}


def with_connector(**fields) -> p.StatusReply:
    return replace(CHARGING, connectors=(replace(CHARGING.connectors[0], **fields),))


def test_status_reply_publishes_retained_state_power_energy_and_current_per_phase():
    out = published(tp.state_messages(T, CHARGING))
    assert out["evsed/garage/connector/1/status"] == ("Charging", True)
    assert out["evsed/garage/connector/1/state"] == ("C", True)
    assert out["evsed/garage/connector/1/power_w"] == ("10980", True)
    assert out["evsed/garage/connector/1/energy_wh"] == ("123456", True)
    assert [out[f"evsed/garage/connector/1/current_a/{ph}"][0] for ph in ("l1", "l2", "l3")] == ["15.9", "16.0", "15.8"]
    assert out["evsed/garage/connector/1/session/energy_wh"] == ("2400", True)
    assert json.loads(out["evsed/garage/connector/1/session"][0])["card_name"] == "Alice"
    assert out["evsed/garage/mode"] == ("solar", True)


def test_a_stale_meter_reading_publishes_no_power_energy_or_current():
    stale = with_connector(measured=replace(CHARGING.connectors[0].measured, stale=True))
    out = published(tp.state_messages(T, stale))
    assert not [t for t in out if t.endswith(("power_w", "/energy_wh", "l1", "l2", "l3")) and "session" not in t]
    assert out["evsed/garage/connector/1/status"][0] == "Charging"


def test_the_binding_limit_is_the_lowest_source():
    out = published(tp.state_messages(T, CHARGING))
    limit = json.loads(out["evsed/garage/connector/1/limit"][0])
    assert limit == {"allowed_a": 16.0, "binding": "mqtt", "limits": {"cable": 32.0, "mqtt": 16.0}}
    assert out["evsed/garage/connector/1/allowed_a"][0] == "16.0"
    assert out["evsed/garage/current_limit_a"][0] == "16.0"


def test_pause_and_lifted_limit_states_follow_the_limits_by_source():
    out = published(tp.state_messages(T, with_connector(limits={"mqtt-pause": 0})))
    assert out["evsed/garage/paused"][0] == "ON"
    assert out["evsed/garage/current_limit_a"][0] == "None"  # Home Assistant's "unknown"
    assert published(tp.state_messages(T, CHARGING))["evsed/garage/paused"][0] == "OFF"


def test_an_inoperative_connector_reads_unavailable():
    out = published(tp.state_messages(T, with_connector(status="Unavailable")))
    assert out["evsed/garage/connector/1/available"][0] == "OFF" and out["evsed/garage/available"][0] == "OFF"


def test_session_start_and_stop_are_events_and_the_last_session_is_retained():
    started = pr.event("session.started", seq=7, at="2026-11-28T16:00:00.000Z", session=3)
    out = published(tp.event_messages(T, started))
    assert json.loads(out["evsed/garage/connector/1/session/started"][0])["seq"] == 7
    assert out["evsed/garage/connector/1/session/started"][1] is False
    assert out["evsed/garage/connector/1/session/energy_wh"] == ("0", True)
    stopped = pr.event("session.stopped", seq=9, at="2026-11-28T17:00:00.000Z", session=3, energy_wh=2400)
    out = published(tp.event_messages(T, stopped))
    assert out["evsed/garage/connector/1/session/stopped"][1] is False
    assert out["evsed/garage/connector/1/session/last"][1] is True
    assert out["evsed/garage/event"][1] is False


def test_meter_samples_are_not_events_on_mqtt():
    sample = pr.event("session.sample", seq=None, at="2026-11-28T16:00:00.000Z", session=3, power_w=7000)
    assert tp.event_messages(T, sample) == []


@pytest.mark.parametrize("topic, payload, wanted", [
    ("evsed/garage/set/current_a", b"16", p.Limit(source="mqtt", connector=0, current_a=16.0)),
    ("evsed/garage/set/current_a", b" none ", p.Limit(source="mqtt", connector=0, current_a=None)),
    ("evsed/garage/connector/1/set/current_a", b"10.5",
     p.Limit(source="mqtt", connector=1, current_a=10.5)),
    ("evsed/garage/set/pause", b"ON", p.Limit(source="mqtt-pause", connector=0, current_a=0)),
    ("evsed/garage/set/pause", b"off", p.Limit(source="mqtt-pause", connector=0, current_a=None)),
    ("evsed/garage/set/mode", b"min+solar", p.SetMode(mode="min+solar")),
    ("evsed/garage/set/available", b"OFF", p.Availability(connector=0, operative=False)),
    ("evsed/garage/connector/1/set/available", b"true", p.Availability(connector=1, operative=True)),
])
def test_command_topics_become_control_socket_requests(topic, payload, wanted):
    assert tp.command_request(T, topic, payload, [1]) == wanted


@pytest.mark.parametrize("topic, payload, why", [
    ("evsed/garage/set/current_a", b"sixteen", "expected a number"),
    ("evsed/garage/set/current_a", b"nan", "out of range"),
    ("evsed/garage/set/current_a", b"200", "out of range"),
    ("evsed/garage/set/pause", b"maybe", "expected ON or OFF"),
    ("evsed/garage/set/mode", b"turbo", "expected one of"),
    ("evsed/garage/set/mode", b"\xff\xfe", "not UTF-8"),
    ("evsed/garage/set/current_a", b"1" * 100, "too long"),
    ("evsed/garage/connector/2/set/pause", b"ON", "no connector 2"),
    ("evsed/garage/connector/1/set/mode", b"fast", "the charger's"),
    ("evsed/garage/set/reboot", b"now", "unknown command"),
    ("evsed/garage/set/a/b", b"1", "not a command topic"),
])
def test_malformed_commands_are_refused_with_a_reason(topic, payload, why):
    with pytest.raises(tp.BadCommand, match=why):
        tp.command_request(T, topic, payload, [1])


def settings(**kw) -> MqttSettings:
    return MqttSettings(host="localhost", port=1883, tls=False, base_topic="evsed/garage", client_id="x",
                        charger_id="garage", max_current_a=16, **kw)


HELLO = p.HelloReply(version=1, charger="garage", connectors=(1,), phases=3, voltage_v=230, acked=0, last_seq=0)


def test_discovery_is_one_device_with_sensors_and_controls():
    cfg = discovery.device_config(settings(), HELLO)
    assert discovery.discovery_topic(settings()) == "homeassistant/device/evsed_garage/config"
    assert cfg["device"]["identifiers"] == ["evsed_garage"] and cfg["origin"]["name"] == "evsed"
    assert cfg["availability_topic"] == "evsed/garage/availability"
    by_key = cfg["components"]
    assert {k: c["platform"] for k, c in by_key.items()} == {
        "c1_power": "sensor", "c1_energy": "sensor", "c1_session_energy": "sensor", "c1_state": "sensor",
        "c1_allowed_current": "sensor", "c1_current_l1": "sensor", "c1_current_l2": "sensor",
        "c1_current_l3": "sensor", "mode": "select", "current_limit": "number", "pause": "switch",
        "available": "switch"}
    assert len({c["unique_id"] for c in by_key.values()}) == len(by_key)


def test_discovery_units_and_classes_follow_home_assistant():
    c = discovery.device_config(settings(), HELLO)["components"]
    assert (c["c1_power"]["device_class"], c["c1_power"]["unit_of_measurement"]) == ("power", "W")
    for key in ("c1_energy", "c1_session_energy"):
        assert (c[key]["device_class"], c[key]["unit_of_measurement"], c[key]["state_class"]) == \
            ("energy", "Wh", "total_increasing")
    assert c["c1_state"]["device_class"] == "enum" and "Charging" in c["c1_state"]["options"]
    assert c["mode"]["options"] == ["fast", "solar", "min+solar"]
    assert (c["current_limit"]["min"], c["current_limit"]["max"]) == (6, 16)
    assert c["pause"]["command_topic"] == "evsed/garage/set/pause"


def test_discovered_topics_are_the_ones_published_and_accepted():
    c = discovery.device_config(settings(), HELLO)["components"]
    published_topics = set(published(tp.state_messages(T, CHARGING))) | {"evsed/garage/connector/1/session/energy_wh"}
    for comp in c.values():
        assert comp["state_topic"] in published_topics, comp
        if "command_topic" in comp:
            sample = {"switch": b"ON", "select": b"fast", "number": b"10"}[comp["platform"]]
            assert isinstance(tp.command_request(T, comp["command_topic"], sample, [1]), p.Command)


def test_a_two_connector_single_phase_charger_names_its_connectors():
    cfg = discovery.device_config(settings(), replace(HELLO, connectors=(1, 2), phases=1))
    c = cfg["components"]
    assert c["c2_power"]["name"] == "Connector 2 power" and "c2_current_l2" not in c
    assert c["mode"]["name"] == "Charging mode"


def test_a_charger_id_with_odd_characters_gives_a_valid_object_id():
    assert discovery.object_id("Garage West #2") == "evsed_Garage_West__2"


def test_the_state_sensor_knows_every_status_the_core_reports():
    from evsed.core.events import ConnectorStatus
    assert set(discovery.STATUSES) == {s.value for s in ConnectorStatus}  # an unknown one makes HA log errors
