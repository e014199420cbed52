"""What a command topic asks of the daemon, and the Home Assistant discovery payload: pure functions, no
broker (test_mqtt_publish.py has what is published for a status reply and an event)."""

import datetime as dt
import json
import re
from dataclasses import replace
from pathlib import Path
from zoneinfo import ZoneInfo

import jinja2.sandbox
import pytest

import protocol_records as pr
from evsed import protocol as p
from evsed.mqtt import discovery, publish, topics as tp
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


RULES = tp.Rules(connectors=(1,), max_a=16, start_id_tag="04A1B2C3", restart=True)


@pytest.mark.parametrize("topic, payload, wanted", [
    ("evsed/garage/set/current_a", b"16", p.Limit(source="mqtt", connector=0, current_a=16.0)),
    ("evsed/garage/set/current_a", b"6", p.Limit(source="mqtt", connector=0, current_a=6.0)),
    ("evsed/garage/set/current_a", b" none ", p.Limit(source="mqtt", connector=0, current_a=None)),
    ("evsed/garage/connector/1/set/current_a", b"10.5", p.Limit(source="mqtt", connector=1, current_a=10.5)),
    ("evsed/garage/set/pause", b"ON", p.Limit(source="mqtt-pause", connector=0, current_a=0)),
    ("evsed/garage/set/pause", b"off", p.Limit(source="mqtt-pause", connector=0, current_a=None)),
    ("evsed/garage/set/mode", b"min+solar", p.SetMode(mode="min+solar")),
    ("evsed/garage/set/available", b"OFF", p.Availability(connector=0, operative=False)),
    ("evsed/garage/connector/1/set/available", b"true", p.Availability(connector=1, operative=True)),
    ("evsed/garage/connector/1/set/start", b"PRESS", p.RemoteStart(connector=1, id_tag="04A1B2C3")),
    ("evsed/garage/connector/1/set/stop", b"PRESS", p.RemoteStop(connector=1, reason="remote")),
    ("evsed/garage/set/restart", b"press", p.Restart()),
])
def test_command_topics_become_control_socket_requests(topic, payload, wanted):
    assert tp.command_request(T, topic, payload, RULES) == wanted


@pytest.mark.parametrize("topic, payload, why", [
    ("evsed/garage/set/current_a", b"sixteen", "expected a number"),
    ("evsed/garage/set/current_a", b"nan", "out of range"),
    ("evsed/garage/set/current_a", b"3", r"'3' out of range 6..16 A \(set/pause ON stops charging"),
    ("evsed/garage/set/current_a", b"16.5", "out of range 6..16 A"),
    ("evsed/garage/set/current_a", b"0", "out of range"),
    ("evsed/garage/set/pause", b"maybe", "expected ON or OFF"),
    ("evsed/garage/set/mode", b"turbo", "expected one of"),
    ("evsed/garage/set/mode", b"\xff\xfe", "not UTF-8"),
    ("evsed/garage/set/current_a", b"1" * 100, "too long"),
    ("evsed/garage/connector/2/set/pause", b"ON", "no connector 2"),
    ("evsed/garage/connector/1/set/mode", b"fast", "the charger's"),
    ("evsed/garage/set/start", b"PRESS", "a connector's"),
    ("evsed/garage/connector/1/set/stop", b"ON", "expected PRESS"),
    ("evsed/garage/connector/1/set/restart", b"PRESS", "the charger's"),
    ("evsed/garage/set/reboot", b"now", "unknown command"),
    ("evsed/garage/set/a/b", b"1", "not a command topic"),
])
def test_malformed_commands_are_refused_with_a_reason(topic, payload, why):
    with pytest.raises(tp.BadCommand, match=why):
        tp.command_request(T, topic, payload, RULES)


def test_a_start_needs_the_card_it_charges_on():
    with pytest.raises(tp.BadCommand, match=r"set \[mqtt\] start_card"):
        tp.command_request(T, "evsed/garage/connector/1/set/start", b"PRESS", replace(RULES, start_id_tag=None))
    assert "c1_start" not in discovery.device_config(settings(), HELLO)["components"]


def test_a_restart_needs_the_hosts_grant():
    with pytest.raises(tp.BadCommand, match=r"\[mqtt\] restart_button = true"):
        tp.command_request(T, "evsed/garage/set/restart", b"PRESS", replace(RULES, restart=False))
    assert "restart" not in discovery.device_config(settings(), HELLO)["components"]
    assert "restart" in discovery.device_config(settings(restart_button=True), HELLO)["components"]


def settings(**kw) -> MqttSettings:
    return MqttSettings(host="localhost", port=1883, tls=False, base_topic="evsed/garage", client_id="x",
                        charger_id="garage", max_current_a=16, **kw)


HELLO = p.HelloReply(version=1, charger="garage", connectors=(1,), phases=3, voltage_v=230, acked=0, last_seq=0)


def test_discovery_is_one_device_with_sensors_and_controls():
    cfg = discovery.device_config(settings(start_id_tag="04A1B2C3", restart_button=True), HELLO)
    assert discovery.discovery_topic(settings()) == "homeassistant/device/evsed_garage/config"
    assert cfg["device"]["identifiers"] == ["evsed_garage"] and cfg["origin"]["name"] == "evsed"
    assert cfg["availability"] == [{"topic": "evsed/garage/availability"}]
    by_key = cfg["components"]
    assert {k: c["platform"] for k, c in by_key.items()} == {
        "c1_power": "sensor", "c1_energy": "sensor", "c1_current_l1": "sensor", "c1_current_l2": "sensor",
        "c1_current_l3": "sensor", "c1_session_energy": "sensor", "c1_allowed_current": "sensor",
        "c1_state": "sensor", "c1_plugged": "binary_sensor", "c1_charging": "binary_sensor",
        "c1_problem": "binary_sensor", "c1_fault": "sensor", "c1_pilot": "sensor", "c1_card": "sensor",
        "c1_card_group": "sensor", "c1_plan": "sensor", "c1_plan_state": "sensor",
        "c1_plan_infeasible": "binary_sensor", "c1_plan_finish": "sensor", "c1_plan_energy": "number",
        "c1_plan_by": "text", "c1_plan_cancel": "button", "c1_start": "button", "c1_stop": "button", "mode": "select",
        "current_limit": "number", "lift_current_limit": "button", "pause": "switch", "available": "switch",
        "available_pending": "binary_sensor", "restart": "button"}
    assert len({c["unique_id"] for c in by_key.values()}) == len(by_key)
    assert "configuration_url" not in cfg["device"]


def test_discovery_units_classes_and_precision_follow_home_assistant():
    c = discovery.device_config(settings(restart_button=True), HELLO)["components"]
    assert (c["c1_power"]["device_class"], c["c1_power"]["unit_of_measurement"]) == ("power", "W")
    for key in ("c1_energy", "c1_session_energy"):
        assert (c[key]["device_class"], c[key]["unit_of_measurement"], c[key]["state_class"]) == \
            ("energy", "Wh", "total_increasing")
    sensors = {k: v for k, v in c.items() if "unit_of_measurement" in v and v["platform"] == "sensor"}
    assert {k: v["suggested_display_precision"] for k, v in sensors.items()} == {
        "c1_power": 0, "c1_energy": 0, "c1_session_energy": 0, "c1_allowed_current": 1,
        "c1_current_l1": 1, "c1_current_l2": 1, "c1_current_l3": 1}
    assert c["c1_state"]["device_class"] == "enum" and "Charging" in c["c1_state"]["options"]
    assert (c["c1_plugged"]["device_class"], c["c1_charging"]["device_class"], c["c1_problem"]["device_class"]) \
        == ("plug", "battery_charging", "problem")
    assert c["c1_pilot"]["options"] == ["A", "B", "C", "D", "E", "F"]
    assert {c[k]["entity_category"] for k in ("c1_pilot", "c1_card", "c1_card_group")} == {"diagnostic"}
    assert (c["restart"]["device_class"], c["restart"]["entity_category"]) == ("restart", "config")
    assert c["pause"]["command_topic"] == "evsed/garage/set/pause"


def test_the_current_number_declares_the_range_set_current_a_takes_and_can_be_lifted():
    c = discovery.device_config(settings(), HELLO)["components"]
    number, lift = c["current_limit"], c["lift_current_limit"]
    assert (number["min"], number["max"]) == (6, 16)
    rules = discovery.rules(settings(), HELLO)
    for value in (number["min"], number["max"]):
        assert tp.command_request(T, number["command_topic"], str(value).encode(), rules).current_a == value
    for value in (number["min"] - 0.1, number["max"] + 0.1):
        with pytest.raises(tp.BadCommand):
            tp.command_request(T, number["command_topic"], str(value).encode(), rules)
    assert number["payload_reset"] == "None"  # the state topic's "lifted"
    lifted = tp.command_request(T, lift["command_topic"], lift["payload_press"].encode(), rules)
    assert lifted == p.Limit(source="mqtt", connector=0, current_a=None)


def test_the_mode_select_offers_the_modes_the_charger_can_follow():
    assert discovery.device_config(settings(), HELLO, ["fast"])["components"]["mode"]["options"] == ["fast"]
    everything = discovery.device_config(settings(), HELLO, ["fast", "solar", "min+solar"])["components"]["mode"]
    assert everything["options"] == ["fast", "solar", "min+solar"]


def test_measured_sensors_are_unavailable_while_the_reading_is_stale():
    c = discovery.device_config(settings(), HELLO)["components"]
    for key in ("c1_power", "c1_energy", "c1_current_l1"):
        assert c[key]["availability_mode"] == "all"
        assert c[key]["availability"][1] == {"topic": "evsed/garage/connector/1/reading",
                                             "payload_available": "fresh", "payload_not_available": "stale"}
    assert "availability" not in c["c1_session_energy"]


def test_a_tariff_adds_a_session_cost_sensor_in_its_currency():
    c = discovery.device_config(settings(currency="CHF", currency_decimals=2), HELLO)["components"]
    cost = c["c1_session_cost"]
    assert (cost["device_class"], cost["unit_of_measurement"], cost["state_class"]) == ("monetary", "CHF", "total")
    assert cost["state_topic"] == "evsed/garage/connector/1/session/cost"
    assert "c1_session_cost" not in discovery.device_config(settings(), HELLO)["components"]


def test_the_device_links_to_the_page():
    cfg = discovery.device_config(settings(configuration_url="http://evse.lan:8080/"), HELLO)
    assert cfg["device"]["configuration_url"] == "http://evse.lan:8080/"


def test_discovered_topics_are_the_ones_published_and_accepted():
    c = discovery.device_config(settings(currency="EUR"), HELLO)["components"]
    charging = replace(CHARGING, connectors=(replace(CHARGING.connectors[0],
                                                    session=replace(CHARGING.connectors[0].session, price=1.2)),))
    now = dt.datetime(2026, 11, 28, 17, 0, tzinfo=ZoneInfo("Europe/Amsterdam"))
    published_topics = set(published(publish.state_messages(T, charging, now)))
    rules = discovery.rules(settings(), HELLO)
    for comp in c.values():
        if "state_topic" in comp:
            assert comp["state_topic"] in published_topics, comp
        for extra in comp.get("availability", []):
            assert extra["topic"] in published_topics | {"evsed/garage/availability"}
        if "command_topic" in comp:
            sample = {"switch": b"ON", "select": b"fast", "number": b"10", "text": b"07:00"}.get(comp["platform"])
            payload = comp.get("payload_press", "").encode() if comp["platform"] == "button" else sample
            assert isinstance(tp.command_request(T, comp["command_topic"], payload, rules), (p.Command, tp.PlanPart))


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


@pytest.mark.parametrize("topic, payload, wanted", [
    ("evsed/garage/connector/1/set/plan", b'{"energy_kwh": 20, "by": "07:00"}',
     p.SetPlan(connector=1, energy_kwh=20, by="07:00", origin="mqtt")),
    ("evsed/garage/connector/1/set/plan", b'{"soc_pct": 80, "soc_now_pct": 35, "by": "2026-11-29T07:00:00+01:00"}',
     p.SetPlan(connector=1, soc_pct=80, soc_now_pct=35, by="2026-11-29T07:00:00+01:00", origin="mqtt")),
    ("evsed/garage/connector/1/set/plan_cancel", b"PRESS", p.CancelPlan(connector=1)),
    ("evsed/garage/connector/1/set/plan_energy_kwh", b"12.5", tp.PlanPart(1, energy_kwh=12.5)),
    ("evsed/garage/connector/1/set/plan_by", b"06:30", tp.PlanPart(1, by="06:30")),
    ("evsed/garage/connector/1/set/plan_by", b"2026-11-29T06:30:00Z", tp.PlanPart(1, by="2026-11-29T06:30:00Z")),
])
def test_plan_topics_become_plan_commands_or_parts_of_one(topic, payload, wanted):
    assert tp.command_request(T, topic, payload, RULES) == wanted


@pytest.mark.parametrize("topic, payload, why", [
    ("evsed/garage/connector/1/set/plan", b"20kWh by 07:00", "expected a JSON object"),
    ("evsed/garage/connector/1/set/plan", b'{"energy_kwh": 20}', "an object of energy_kwh"),
    ("evsed/garage/connector/1/set/plan", b'{"energy_kwh": 20, "by": "07:00", "card": "04A1B2C3"}', "an object of"),
    ("evsed/garage/connector/1/set/plan", b'{"energy_kwh": 900, "by": "07:00"}', "energy_kwh: .*300"),
    ("evsed/garage/connector/1/set/plan", b'{"by": "07:00"}', "give energy_kwh, or soc_pct"),
    ("evsed/garage/connector/1/set/plan", b'{"energy_kwh": 20, "by": "tomorrow"}', "by: expected HH:MM"),
    ("evsed/garage/connector/1/set/plan", b'{"energy_kwh": 20, "by": "07:00"}' + b" " * 300, "too long"),
    ("evsed/garage/set/plan", b'{"energy_kwh": 20, "by": "07:00"}', "a connector's"),
    ("evsed/garage/connector/1/set/plan_energy_kwh", b"0", r"out of range 0.1..300 kWh"),
    ("evsed/garage/connector/1/set/plan_energy_kwh", b"inf", "out of range"),
    ("evsed/garage/connector/1/set/plan_energy_kwh", b"lots", "expected a number of kWh"),
    ("evsed/garage/connector/1/set/plan_by", b"25:00", "expected HH:MM"),
    ("evsed/garage/connector/1/set/plan_by", b"", "expected HH:MM"),
    ("evsed/garage/connector/1/set/plan_by", b"2026-11-29T06:30", "with its offset"),
    ("evsed/garage/connector/1/set/plan_cancel", b"ON", "expected PRESS"),
    ("evsed/garage/connector/2/set/plan_cancel", b"PRESS", "no connector 2"),
    ("evsed/garage/set/prices", b"[{", "prices: not JSON"),
    ("evsed/garage/set/prices", b'[{"start": "soon", "price": 1}]', "prices: .*start"),
    ("evsed/garage/set/prices", b"[" + b" " * p.PRICES_MAX_BYTES + b"]", "too long"),
    ("evsed/garage/connector/1/set/prices", b"[]", "the charger's"),
])
def test_malformed_plans_and_prices_are_refused_with_a_reason(topic, payload, why):
    with pytest.raises(tp.BadCommand, match=why):
        tp.command_request(T, topic, payload, RULES)


def test_a_price_curve_on_set_prices_is_the_prices_command_from_mqtt():
    curve = b'{"prices": [{"start": "2026-11-29T01:00:00+01:00", "end": "2026-11-29T02:00:00+01:00", "price": 0.08}]}'
    req = tp.command_request(T, "evsed/garage/set/prices", curve, RULES)
    assert req == p.SetPrices(prices=(p.PriceEntry(start="2026-11-29T01:00:00+01:00", end="2026-11-29T02:00:00+01:00",
                                                   price=0.08),), source="mqtt")


def test_a_plan_is_set_once_its_energy_and_departure_are_both_known():
    draft, plan = tp.complete_plan(tp.PlanPart(1, energy_kwh=20), tp.PlanDraft())
    assert plan is None and draft == tp.PlanDraft(20, None)
    draft, plan = tp.complete_plan(tp.PlanPart(1, by="07:00"), draft)
    assert plan == p.SetPlan(connector=1, energy_kwh=20, by="07:00", origin="mqtt")
    draft, plan = tp.complete_plan(tp.PlanPart(1, energy_kwh=8), draft)  # a new energy: the same departure
    assert plan == p.SetPlan(connector=1, energy_kwh=8, by="07:00", origin="mqtt")


def test_the_draft_follows_the_running_plan_and_keeps_its_clock_time_after_it_ends():
    running = p.PlanNow(energy_wh=12_500, by="2026-11-30T06:30:00+01:00", origin="cli", state="waiting")
    draft = tp.seen_plan(tp.PlanDraft(20, "07:00"), running)
    assert (draft.energy_kwh, draft.by) == (12.5, "2026-11-30T06:30:00+01:00")  # its exact departure, days ahead
    assert tp.seen_plan(draft, None) == tp.PlanDraft(12.5, "06:30")  # ended: the next 06:30 for a new energy
    assert tp.seen_plan(tp.PlanDraft(), None) == tp.PlanDraft()
    given = tp.complete_plan(tp.PlanPart(1, by="2026-11-30T06:30:00+01:00"), tp.PlanDraft())[0]
    assert tp.seen_plan(given, None) == given  # given over MQTT, waiting for its energy: kept as given


def test_the_plan_entities_declare_what_their_commands_take_and_what_is_published():
    c = discovery.device_config(settings(currency="EUR", currency_decimals=2), HELLO)["components"]
    energy, by, cancel = c["c1_plan_energy"], c["c1_plan_by"], c["c1_plan_cancel"]
    assert (energy["device_class"], energy["unit_of_measurement"], energy["min"], energy["max"]) == \
        ("energy", "kWh", 0.1, 300)
    for value in (energy["min"], energy["max"]):  # the record's own bounds take what the number declares
        p.SetPlan(connector=1, energy_kwh=value, by="07:00")
        assert tp.command_request(T, energy["command_topic"], str(value).encode(), RULES) == \
            tp.PlanPart(1, energy_kwh=value)
    for value in (energy["min"] - 0.05, energy["max"] + 0.1):
        with pytest.raises(tp.BadCommand):
            tp.command_request(T, energy["command_topic"], str(value).encode(), RULES)
    assert by["platform"] == "text" and by["max"] == 5
    pattern = re.compile(by["pattern"])
    for hhmm in ("00:00", "07:05", "23:59"):
        assert pattern.fullmatch(hhmm) and tp.command_request(T, by["command_topic"], hhmm.encode(), RULES).by == hhmm
    for text in ("24:00", "7:00", "07:60", "None"):
        assert not pattern.fullmatch(text)
    assert tp.command_request(T, cancel["command_topic"], cancel["payload_press"].encode(), RULES) == \
        p.CancelPlan(connector=1)
    assert c["c1_plan_state"]["options"] == ["none", *p.choices(p.PlanState)]
    assert (c["c1_plan_infeasible"]["device_class"], c["c1_plan_finish"]["device_class"]) == ("problem", "timestamp")
    cost = c["c1_plan_cost"]
    assert (cost["device_class"], cost["unit_of_measurement"], cost["suggested_display_precision"]) == \
        ("monetary", "EUR", 2) and "state_class" not in cost
    assert "c1_plan_cost" not in discovery.device_config(settings(), HELLO)["components"]


def render(template: str, value: str) -> str:
    """A template discovery sends, rendered as Home Assistant renders it (jinja2, sandboxed)."""
    return jinja2.sandbox.ImmutableSandboxedEnvironment().from_string(template).render(value=value)


def test_every_published_departure_is_one_the_text_entity_accepts_and_no_plan_gives_no_attributes():
    c = discovery.device_config(settings(), HELLO)["components"]
    by, plan = c["c1_plan_by"], c["c1_plan"]
    pattern = re.compile(by["pattern"])
    planned = p.PlanNow(energy_wh=20_000, by="2026-11-29T07:00:00+01:00", origin="mqtt", state="pending")
    now = dt.datetime(2026, 11, 28, 17, 0, tzinfo=ZoneInfo("Europe/Amsterdam"))
    for plan_now in (None, planned):
        status = replace(CHARGING, connectors=(replace(CHARGING.connectors[0], plan=plan_now),))
        out = published(publish.state_messages(T, status, now))
        shown = render(by["value_template"], out[by["state_topic"]][0])
        assert pattern.fullmatch(shown) and len(shown) <= by["max"]
        assert isinstance(json.loads(render(plan["json_attributes_template"], out[plan["json_attributes_topic"]][0])),
                          dict)
    assert shown == "07:00"


def readme_entities() -> dict[str, str]:
    """The README's Home Assistant entity table: name -> platform ("Current L1, L2, L3" is three names)."""
    text = (Path(__file__).parent.parent / "README.md").read_text()
    table = text[text.index("| entity | platform |"):]
    table = table[:table.index("\n\n")]
    names: dict[str, str] = {}
    for row in table.splitlines()[2:]:
        first, platform = [cell.strip() for cell in row.strip("|").split("|")[:2]]
        parts = first.split(", ")
        for part in parts:  # "L2" after "Current L1" is "Current L2"
            name = f"{parts[0].rsplit(' ', 1)[0]} {part}" if len(part) <= 2 else part
            names[name] = platform.split(" (")[0].replace(" ", "_")
    return names


def test_the_readme_lists_every_discovered_entity_and_its_platform():
    c = discovery.device_config(settings(currency="EUR", start_id_tag="04A1B2C3", restart_button=True), HELLO)["components"]
    listed = readme_entities()
    assert {comp["name"]: comp["platform"] for comp in c.values()} == listed
