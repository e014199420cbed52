"""Remote starts through the real daemon on the simulator and a CSMS on loopback: 2.0.1's
remoteStartId reaches the transaction's Started whichever TxStartPoint opens it, and a remote
start that is refused leaves its TxProfile to no later transaction (1.6 and 2.0.1)."""

from __future__ import annotations

import pytest
from ocpp.v16 import call as call16
from ocpp.v201 import call

from simulator.csms import CentralSystem
from simulator.csms201 import CentralSystem201
from test_ocpp_daemon import IDENTITY, Charger, booted, in_minutes
from test_ocpp_fakes import aio

TX_PROFILE_6A = {"chargingProfileId": 31, "stackLevel": 0, "chargingProfilePurpose": "TxProfile",
                 "chargingProfileKind": "Relative", "chargingSchedule": {
                     "chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 6.0}]}}


def charger201(tmp_path, port: int, start_point: str = "PowerPathClosed") -> Charger:
    charger = Charger(tmp_path, port, "simulator-ocpp201.toml")
    text = charger.path.read_text()
    assert 'TxStartPoint = "PowerPathClosed"' in text
    charger.path.write_text(text.replace('TxStartPoint = "PowerPathClosed"', f'TxStartPoint = "{start_point}"'))
    return charger


def transaction_events(csms: CentralSystem201) -> list[dict]:
    return [p for _, p in csms.actions("TransactionEvent")]


async def booted201(csms: CentralSystem201) -> None:
    await csms.wait_for(lambda: IDENTITY in csms.stations and csms.actions("StatusNotification"), timeout=30)


@pytest.mark.parametrize("start_point", ["EVConnected", "Authorized", "PowerPathClosed", "EnergyTransfer"])
@aio
async def test_the_started_event_carries_the_remote_start_id_whichever_tx_start_point(tmp_path, start_point):
    csms = CentralSystem201()
    charger = charger201(tmp_path, await csms.start(), start_point)
    charger.start()
    try:
        await booted201(csms)
        token = {"id_token": "ab-12-cd", "type": "Central"}
        asked = call.RequestStartTransaction(id_token=token, remote_start_id=41, evse_id=1)
        assert (await csms.call(IDENTITY, asked)).status == "Accepted"
        await charger.sim("plug")
        await charger.until(lambda c: c.status == "Charging", "charging")
        await csms.wait_for(lambda: any(p["eventType"] == "Started" for p in transaction_events(csms)), timeout=20)
    finally:
        await charger.stop()
        await csms.stop()
    events = transaction_events(csms)
    (started,) = [p for p in events if p["eventType"] == "Started"]
    assert started["transactionInfo"]["remoteStartId"] == 41
    assert started["triggerReason"] == "RemoteStart"
    assert [p for p in events if "remoteStartId" in p["transactionInfo"]] == [started]  # in its first event only
    assert csms.problems == []


PROFILE_201_6A = {"id": 31, "stack_level": 0, "charging_profile_purpose": "TxProfile", "charging_profile_kind": "Relative",
                  "charging_schedule": [{"id": 1, "charging_rate_unit": "A",
                                         "charging_schedule_period": [{"start_period": 0, "limit": 6.0}]}]}


@aio
async def test_the_tx_profile_of_a_request_start_limits_its_session_before_power_path_closed_opens_it(tmp_path):
    csms = CentralSystem201()
    charger = charger201(tmp_path, await csms.start())
    charger.start()
    try:
        await booted201(csms)
        asked = call.RequestStartTransaction(id_token={"id_token": "ab-12-cd", "type": "Central"}, remote_start_id=41,
                                             evse_id=1, charging_profile=PROFILE_201_6A)
        assert (await csms.call(IDENTITY, asked)).status == "Accepted"
        await charger.sim("plug")
        charging = await charger.until(lambda c: c.status == "Charging" and c.offered_a == 6.0, "charging at 6 A")
    finally:
        await charger.stop()
        await csms.stop()
    assert charging.offered_a == 6.0
    assert csms.problems == []


@aio
async def test_a_refused_request_start_leaves_its_id_and_tx_profile_to_no_card_session(tmp_path):
    csms = CentralSystem201()
    charger = charger201(tmp_path, await csms.start())
    charger.start()
    profile = PROFILE_201_6A
    try:
        await booted201(csms)
        reserve = call.ReserveNow(id=7, expiry_date_time=in_minutes(10),
                                  id_token={"id_token": "0RESERVED", "type": "Central"}, evse_id=1)
        assert (await csms.call(IDENTITY, reserve)).status == "Accepted"
        asked = call.RequestStartTransaction(id_token={"id_token": "ab-12-cd", "type": "Central"}, remote_start_id=41,
                                             evse_id=1, charging_profile=profile)
        assert (await csms.call(IDENTITY, asked)).status == "Rejected"  # reserved for another token
        assert (await csms.call(IDENTITY, call.CancelReservation(reservation_id=7))).status == "Accepted"
        await charger.sim("plug")
        await charger.sim("tap", "04A1B2C3")
        await csms.wait_for(lambda: any(p["eventType"] == "Started" for p in transaction_events(csms)), timeout=20)
        composite = await csms.call(IDENTITY, call.GetCompositeSchedule(duration=60, evse_id=1, charging_rate_unit="A"))
        charging = await charger.until(lambda c: c.status == "Charging", "charging")
    finally:
        await charger.stop()
        await csms.stop()
    (started,) = [p for p in transaction_events(csms) if p["eventType"] == "Started"]
    assert "remoteStartId" not in started["transactionInfo"] and started["triggerReason"] != "RemoteStart"
    assert composite.status == "Accepted"
    assert [period["limit"] for period in composite.schedule["charging_schedule_period"]] == [32.0]
    assert charging.offered_a == 32.0  # the charger's maximum, not the refused start's 6 A
    assert csms.problems == []


@aio
async def test_a_rejected_remote_start_leaves_its_tx_profile_to_no_card_session(tmp_path):
    csms = CentralSystem()
    charger = Charger(tmp_path, await csms.start())
    charger.start()
    try:
        await booted(csms)
        reserve = call16.ReserveNow(connector_id=1, expiry_date=in_minutes(10), id_tag="0RESERVED", reservation_id=7)
        assert (await csms.call(IDENTITY, reserve)).status == "Accepted"
        remote = call16.RemoteStartTransaction(id_tag="ab-12-cd", connector_id=1, charging_profile=TX_PROFILE_6A)
        assert (await csms.call(IDENTITY, remote)).status == "Rejected"  # reserved for another tag
        assert (await csms.call(IDENTITY, call16.CancelReservation(reservation_id=7))).status == "Accepted"
        await charger.sim("plug")
        await charger.sim("tap", "04A1B2C3")
        await csms.wait_for(lambda: csms.actions("StartTransaction"), timeout=20)
        composite = await csms.call(IDENTITY, call16.GetCompositeSchedule(connector_id=1, duration=60))
        charging = await charger.until(lambda c: c.status == "Charging", "charging")
    finally:
        await charger.stop()
        await csms.stop()
    assert composite.status == "Accepted"
    assert [period["limit"] for period in composite.charging_schedule["charging_schedule_period"]] == [32.0]
    assert charging.offered_a == 32.0  # the charger's maximum, not the rejected start's 6 A
    assert csms.violations() == []
