"""What the MQTT service publishes for a status reply and an event: pure functions, no broker."""

import datetime as dt
import json
from dataclasses import replace
from zoneinfo import ZoneInfo

import protocol_records as pr
from evsed import protocol as p
from evsed.mqtt import publish, topics as tp

T = tp.Topics("evsed/garage")
AMS = ZoneInfo("Europe/Amsterdam")
NOW = dt.datetime(2026, 11, 28, 14, 0, tzinfo=AMS)
AT = "2026-11-28T13:00:00Z"

CONNECTOR_FIELDS = dict(
    status="Charging", state="C", contactor="closed", offered_a=16.0, allowed_a=16.0, reason="",
    measured=p.Measured(current_a=(15.9, 16.01, 15.8), power_w=10980.4, energy_wh=123456, stale=False),
    session=pr.session(id=3, card_name="Alice", group="family", started_at="2026-11-28T16:00:00Z", energy_wh=2400,
                       power_w=10980.4, peak_power_w=11000.0),
    limits={"cable": 32.0, "mqtt": 16.0})
CONNECTOR = pr.connector(**CONNECTOR_FIELDS)
CHARGING = pr.status(CONNECTOR, charger="garage", mode="solar")


def published(reply, **kw):
    return {m.topic: (m.payload, m.retain) for m in publish.state_messages(T, reply, NOW, **kw)}


def connector(**changes):
    return pr.status(replace(CONNECTOR, **changes))


def events(kind, **fields):
    return {m.topic: (m.payload, m.retain)
            for m in publish.event_messages(T, pr.event(kind, seq=fields.pop("seq", 9), at=AT, **fields))}


def test_status_reply_publishes_retained_state_power_energy_and_current_per_phase():
    out = published(CHARGING)
    assert out["evsed/garage/connector/1/status"] == ("Charging", True)
    assert out["evsed/garage/connector/1/state"] == ("C", True)
    assert out["evsed/garage/connector/1/power_w"] == ("10980", True)
    assert out["evsed/garage/connector/1/energy_wh"] == ("123456", True)
    assert [out[f"evsed/garage/connector/1/current_a/{p}"][0] for p in ("l1", "l2", "l3")] == ["15.9", "16.0", "15.8"]
    assert out["evsed/garage/connector/1/session/energy_wh"] == ("2400", True)
    assert json.loads(out["evsed/garage/connector/1/session"][0])["card_name"] == "Alice"
    assert out["evsed/garage/mode"] == ("solar", True)


def test_numbers_are_published_as_people_read_them():
    out = published(connector(allowed_a=15.999999999999998, measured=replace(
        CONNECTOR.measured, power_w=6872.400000000001, current_a=(9.96000000001, 10.0, 10.04)),
        session=replace(CONNECTOR.session, power_w=6872.400000000001, peak_power_w=7000.6)))
    assert out["evsed/garage/connector/1/power_w"][0] == "6872"
    assert out["evsed/garage/connector/1/allowed_a"][0] == "16.0"
    assert out["evsed/garage/connector/1/current_a/l1"][0] == "10.0"
    session = json.loads(out["evsed/garage/connector/1/session"][0])
    assert (session["power_w"], session["peak_power_w"]) == (6872, 7001)
    stopped = events("session.stopped", session=3, energy_wh=155, peak_power_w=6872.400000000001, meter_stop_wh=1155)
    assert '"peak_power_w":6872,' in stopped["evsed/garage/event"][0]


def test_a_stale_meter_reading_is_said_stale_and_publishes_no_power_energy_or_current():
    out = published(connector(measured=replace(CONNECTOR.measured, stale=True)))
    assert not [t for t in out if t.endswith(("power_w", "/energy_wh", "l1", "l2", "l3")) and "session" not in t]
    assert out["evsed/garage/connector/1/reading"][0] == "stale"
    assert published(CHARGING)["evsed/garage/connector/1/reading"][0] == "fresh"


def test_the_binding_source_is_the_daemons():
    out = published(pr.status(pr.connector(**{**CONNECTOR_FIELDS, "binding": "mqtt"})))
    limit = json.loads(out["evsed/garage/connector/1/limit"][0])
    assert limit == {"allowed_a": 16.0, "binding": "mqtt", "limits": {"hardware": 32.0, "cable": 32.0, "mqtt": 16.0}}
    assert out["evsed/garage/connector/1/allowed_a"][0] == "16.0"
    assert out["evsed/garage/current_limit_a"][0] == "16.0"


def test_pause_and_lifted_limit_states_follow_the_limits_by_source():
    out = published(pr.status(pr.connector(**{**CONNECTOR_FIELDS, "limits": {"mqtt-pause": 0}})))
    assert out["evsed/garage/paused"][0] == "ON"
    assert out["evsed/garage/current_limit_a"][0] == "None"  # Home Assistant's "unknown"
    assert published(CHARGING)["evsed/garage/paused"][0] == "OFF"


def test_an_inoperative_connector_reads_unavailable():
    out = published(connector(status="Unavailable", operative=False, session=None))
    assert out["evsed/garage/connector/1/available"][0] == "OFF" and out["evsed/garage/available"][0] == "OFF"
    assert out["evsed/garage/available_pending"][0] == "OFF"


def test_unavailable_during_a_session_is_pending_and_the_connector_still_available():
    out = published(connector(operative=False))
    assert out["evsed/garage/connector/1/available"][0] == "ON" and out["evsed/garage/available"][0] == "ON"
    assert out["evsed/garage/connector/1/available_pending"][0] == "ON"
    assert out["evsed/garage/available_pending"][0] == "ON"
    assert published(CHARGING)["evsed/garage/available_pending"][0] == "OFF"


def test_an_rcd_trip_is_a_problem_with_the_pages_words_and_no_allowed_current():
    faulted = connector(status="Faulted", contactor="open", allowed_a=16.0, session=None,
                        faults=(p.FaultNow(fault="rcd", detail="", clears_by="retry", lockout=False,
                                           retry_in_s=300.0),))
    out = published(faulted)
    assert out["evsed/garage/connector/1/problem"][0] == "ON"
    assert out["evsed/garage/connector/1/fault"][0] == "RCD tripped, retry at 14:05"
    assert out["evsed/garage/connector/1/allowed_a"][0] == "0.0"
    assert json.loads(out["evsed/garage/connector/1/limit"][0])["binding"] == "fault"
    clear = published(CHARGING)
    assert (clear["evsed/garage/connector/1/problem"][0], clear["evsed/garage/connector/1/fault"][0]) == ("OFF", "none")


def test_a_lost_pilot_device_is_a_problem_too():
    out = published(connector(pilot_error="no answer from /dev/ttyUSB0", state=None))
    assert out["evsed/garage/connector/1/problem"][0] == "ON"
    assert out["evsed/garage/connector/1/fault"][0] == "Pilot unavailable: no answer from /dev/ttyUSB0"
    assert out["evsed/garage/connector/1/state"][0] == "None" and out["evsed/garage/connector/1/plugged"][0] == "None"


def test_plugged_in_and_charging_follow_the_pilot_and_the_status():
    out = published(CHARGING)
    assert (out["evsed/garage/connector/1/plugged"][0], out["evsed/garage/connector/1/charging"][0]) == ("ON", "ON")
    idle = published(connector(state="A", status="Available", session=None))
    assert (idle["evsed/garage/connector/1/plugged"][0], idle["evsed/garage/connector/1/charging"][0]) == ("OFF", "OFF")
    waiting = published(connector(state="B", status="SuspendedEV"))
    assert (waiting["evsed/garage/connector/1/plugged"][0], waiting["evsed/garage/connector/1/charging"][0]) == \
        ("ON", "OFF")


def test_the_sessions_card_is_its_name_and_group_and_no_uid_is_published():
    out = published(CHARGING)
    assert out["evsed/garage/connector/1/session/card"][0] == "Alice"
    assert out["evsed/garage/connector/1/session/group"][0] == "family"
    assert not [t for t, (payload, _) in out.items() if "04A1B2C3" in payload]
    idle = published(connector(session=None, status="Available", state="A"))
    assert idle["evsed/garage/connector/1/session/card"][0] == "None"


def test_card_uids_are_published_only_when_the_config_says_so():
    out = published(CHARGING, card_uids=True)
    assert json.loads(out["evsed/garage/connector/1/session"][0])["id_tag"] == "04A1B2C3"
    event = pr.event("session.stop_by_card", seq=None, at=AT, id_tag="0A0B0C0D", started_by="04A1B2C3")
    assert "0A0B0C0D" not in repr(publish.event_messages(T, event))
    assert "04A1B2C3" not in repr(publish.event_messages(T, event))
    assert "0A0B0C0D" in publish.event_messages(T, event, card_uids=True)[0].payload
    for kind in ("session.started", "session.stopped"):  # their defaults carry the UID 04A1B2C3
        assert "04A1B2C3" not in repr(events(kind, session=3))


def test_the_session_cost_is_the_drivers_price_in_the_tariffs_decimals():
    priced = connector(session=replace(CONNECTOR.session, price=3.1, currency="EUR"))
    assert published(priced)["evsed/garage/connector/1/session/cost"] == ("3.10", True)
    assert "evsed/garage/connector/1/session/cost" not in published(CHARGING)


def test_the_modes_the_charger_can_follow_are_published():
    assert published(CHARGING)["evsed/garage/modes"][0] == '["fast","solar","min+solar"]'
    assert published(replace(CHARGING, modes=("fast",)))["evsed/garage/modes"][0] == '["fast"]'


def test_no_empty_payload_is_published():
    idle = pr.status()  # no meter read yet, nothing limited
    assert all(m.payload != "" for m in publish.state_messages(T, idle, NOW))  # an empty retained payload deletes


def test_session_start_and_stop_are_events_and_the_last_session_is_retained():
    out = events("session.started", seq=7, session=3, card_name="Alice", group="family")
    assert json.loads(out["evsed/garage/connector/1/session/started"][0])["seq"] == 7
    assert out["evsed/garage/connector/1/session/started"][1] is False
    assert out["evsed/garage/connector/1/session/energy_wh"] == ("0", True)
    assert out["evsed/garage/connector/1/session/card"] == ("Alice", True)
    out = events("session.stopped", seq=9, session=3, energy_wh=2400)
    assert out["evsed/garage/connector/1/session/stopped"][1] is False
    assert out["evsed/garage/connector/1/session/last"][1] is True
    assert out["evsed/garage/connector/1/session/energy_wh"] == ("2400", True)  # the stop's figure, as stored
    assert out["evsed/garage/event"][1] is False


def test_meter_samples_are_not_events_on_mqtt():
    assert publish.event_messages(T, pr.event("session.sample", seq=None, at=AT, session=3, power_w=7000.0)) == []


PLAN = p.PlanNow(energy_wh=20_000, by="2026-11-29T07:00:00+01:00", origin="mqtt", state="waiting",
                 reason="plan: waiting for 01:00, cheapest hours", delivered_wh=1234,
                 slots=(p.PlanSlot(start="2026-11-29T01:00:00+01:00", end="2026-11-29T03:30:00+01:00",
                                   power_w=9900.4, price=0.1),),
                 finish="2026-11-29T03:30:00+01:00", cost=2.123, currency="EUR", prices="tariff")


def test_a_plan_is_published_whole_and_as_what_its_entities_read():
    out = published(connector(plan=PLAN), currency_decimals=2)
    c1 = "evsed/garage/connector/1/plan"
    whole = json.loads(out[c1][0])
    assert whole["energy_wh"] == 20_000 and whole["slots"][0]["power_w"] == 9900 and whole["prices"] == "tariff"
    assert json.loads(out[f"{c1}/slots"][0]) == whole["slots"]
    assert {k: out[f"{c1}/{k}"][0] for k in ("state", "reason", "infeasible", "energy_kwh", "by", "departure",
                                            "finish", "cost")} == {
        "state": "waiting", "reason": "plan: waiting for 01:00, cheapest hours", "infeasible": "OFF",
        "energy_kwh": "20.0", "by": "2026-11-29T07:00:00+01:00", "departure": "07:00",
        "finish": "2026-11-29T03:30:00+01:00", "cost": "2.12"}
    assert all(retained for topic, (_, retained) in out.items() if topic.startswith(c1))


def test_a_plan_that_cannot_finish_in_time_is_said_so():
    infeasible = replace(PLAN, state="infeasible", shortfall_wh=4200,
                         reason="plan: 30.0 kWh cannot be delivered by 07:00 (4.2 kWh short): charging as fast as allowed")
    out = published(connector(plan=infeasible))
    assert out["evsed/garage/connector/1/plan/infeasible"][0] == "ON"
    assert "cannot be delivered by 07:00" in out["evsed/garage/connector/1/plan/reason"][0]
    assert json.loads(out["evsed/garage/connector/1/plan"][0])["shortfall_wh"] == 4200


def test_without_a_plan_its_topics_say_none():
    out = published(connector(plan=None))
    c1 = "evsed/garage/connector/1/plan"
    assert json.loads(out[c1][0]) is None and out[f"{c1}/state"][0] == "none" and out[f"{c1}/infeasible"][0] == "OFF"
    assert {out[f"{c1}/{k}"][0] for k in ("energy_kwh", "by", "departure", "finish", "cost")} == {"None"}
