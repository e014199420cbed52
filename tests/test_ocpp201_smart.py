"""OCPP 2.0.1 smart charging on the real websocket: profiles change the offered current through
the daemon's `ocpp` limit source (the same as 1.6), GetCompositeSchedule, GetChargingProfiles with
ReportChargingProfiles, ClearChargingProfile, the 2.0.1 rules for what is rejected."""

from __future__ import annotations

from ocpp.v201 import call

from simulator.csms201 import CentralSystem201
from test_ocpp201_fakes import running
from test_ocpp_fakes import aio, booted, until


def profile(pid: int, purpose: str, limit: float, stack: int = 0, **extra) -> dict:
    return {"id": pid, "stack_level": stack, "charging_profile_purpose": purpose,
            "charging_profile_kind": "Relative", "charging_schedule": [
                {"id": 1, "charging_rate_unit": "A",
                 "charging_schedule_period": [{"start_period": 0, "limit": limit}]}], **extra}


def absolute(body: dict, start: str = "2020-01-01T00:00:00Z") -> dict:
    schedule = {**body["charging_schedule"][0], "start_schedule": start}
    return {**body, "charging_profile_kind": "Absolute", "charging_schedule": [schedule]}


def limits(link) -> list[tuple[int, float | None]]:
    return [(c.connector, c.current_a) for c in link.sent("limit")]


@aio
async def test_a_default_profile_and_a_station_maximum_set_the_ocpp_limit_source(tmp_path):
    csms = CentralSystem201()
    async with running(csms, tmp_path) as (uplink, link):
        await booted(csms, uplink)
        default = await csms.call("CP1", call.SetChargingProfile(evse_id=1, charging_profile=profile(
            1, "TxDefaultProfile", 10.0)))
        assert default.status == "Accepted"
        await link.wait_for(lambda: (1, 10.0) in limits(link))
        station = await csms.call("CP1", call.SetChargingProfile(evse_id=0, charging_profile=absolute(profile(
            2, "ChargingStationMaxProfile", 8.0))))
        assert station.status == "Accepted"
        await link.wait_for(lambda: (0, 8.0) in limits(link))
        composite = await csms.call("CP1", call.GetCompositeSchedule(duration=600, evse_id=1, charging_rate_unit="A"))
        assert composite.status == "Accepted"
        assert composite.schedule["evse_id"] == 1 and composite.schedule["charging_schedule_period"][0]["limit"] == 8.0
        cleared = await csms.call("CP1", call.ClearChargingProfile(charging_profile_id=2))
        assert cleared.status == "Accepted"
        await link.wait_for(lambda: limits(link)[-1] == (0, None))
        unknown = await csms.call("CP1", call.ClearChargingProfile(charging_profile_id=99))
        assert unknown.status == "Unknown"
    assert csms.problems == []


@aio
async def test_profiles_the_2_0_1_rules_refuse_are_rejected_with_a_reason(tmp_path):
    csms = CentralSystem201()
    async with running(csms, tmp_path) as (uplink, link):
        await booted(csms, uplink)
        cases = [(1, profile(3, "TxProfile", 10.0)),                      # no transaction
                 (1, profile(4, "ChargingStationMaxProfile", 10.0)),      # not on evse 0
                 (9, profile(5, "TxDefaultProfile", 10.0)),               # no such EVSE
                 (1, profile(6, "TxDefaultProfile", 10.0, stack=99))]     # above ProfileStackLevel
        for evse, body in cases:
            answer = await csms.call("CP1", call.SetChargingProfile(evse_id=evse, charging_profile=body))
            assert answer.status == "Rejected" and answer.status_info["reason_code"] == "InvalidProfile", body
        first = await csms.call("CP1", call.SetChargingProfile(evse_id=1, charging_profile=profile(
            7, "TxDefaultProfile", 10.0, stack=1)))
        twin = await csms.call("CP1", call.SetChargingProfile(evse_id=1, charging_profile=profile(
            8, "TxDefaultProfile", 12.0, stack=1)))
        assert (first.status, twin.status) == ("Accepted", "Rejected")  # same stack level and purpose
        assert uplink.state.count("profiles") == 1


@aio
async def test_profiles_the_k01_schedule_rules_refuse_are_rejected(tmp_path):
    csms = CentralSystem201()
    async with running(csms, tmp_path) as (uplink, link):
        await booted(csms, uplink)
        one_phase = {"start_period": 0, "limit": 10.0, "number_phases": 1, "phase_to_use": 1}
        three_phase = {"start_period": 0, "limit": 10.0, "number_phases": 3, "phase_to_use": 1}
        cases = [(0, profile(1, "ChargingStationMaxProfile", 10.0)),   # Relative (K01.FR.38)
                 (1, absolute(profile(2, "TxDefaultProfile", 10.0, stack=1)) | {  # Relative with a start (K01.FR.41)
                     "charging_profile_kind": "Relative"}),
                 (1, profile(3, "TxDefaultProfile", 10.0, stack=2) | {"charging_schedule": [{  # no phase switching (K01.FR.20)
                     "id": 1, "charging_rate_unit": "A", "charging_schedule_period": [one_phase]}]}),
                 (1, profile(4, "TxDefaultProfile", 10.0, stack=3) | {"charging_schedule": [{  # phaseToUse of 3 (K01.FR.19)
                     "id": 1, "charging_rate_unit": "A", "charging_schedule_period": [three_phase]}]})]
        answers = []
        for evse, body in cases:
            answer = await csms.call("CP1", call.SetChargingProfile(evse_id=evse, charging_profile=body))
            answers.append(answer.status)
        link.emit("connector.status", status="Preparing", ev_connected=True)
        link.emit("session.started", session=1, id_tag="04A1B2C3", meter_start_wh=0,
                  started_at="2026-11-28T16:20:00.000Z")
        link.emit("contactor.closed", offered_a=16.0)
        await until(lambda: uplink.transactions() == {1: "tx-1"}, what="a transaction")
        first = await csms.call("CP1", call.SetChargingProfile(evse_id=1, charging_profile=profile(
            5, "TxProfile", 6.0, stack=2, transaction_id="tx-1")))
        twin = await csms.call("CP1", call.SetChargingProfile(evse_id=1, charging_profile=profile(
            6, "TxProfile", 8.0, stack=2, transaction_id="tx-1")))  # same stackLevel, same transaction (K01.FR.39)
    assert answers == ["Rejected"] * len(cases)
    assert (first.status, twin.status) == ("Accepted", "Rejected")
    assert (1, 8.0) not in limits(link)


@aio
async def test_a_tx_profile_applies_to_its_transaction_and_ends_with_it(tmp_path):
    csms = CentralSystem201()
    async with running(csms, tmp_path) as (uplink, link):
        await booted(csms, uplink)
        link.emit("connector.status", status="Preparing", ev_connected=True)
        link.emit("session.started", session=1, id_tag="04A1B2C3", meter_start_wh=0,
                  started_at="2026-11-28T16:20:00.000Z")
        link.emit("contactor.closed", offered_a=16.0)
        await until(lambda: uplink.transactions() == {1: "tx-1"}, what="a transaction")
        wrong = await csms.call("CP1", call.SetChargingProfile(evse_id=1, charging_profile=profile(
            9, "TxProfile", 6.0, transaction_id="tx-7")))
        right = await csms.call("CP1", call.SetChargingProfile(evse_id=1, charging_profile=profile(
            9, "TxProfile", 6.0, transaction_id="tx-1")))
        assert (wrong.status, right.status) == ("Rejected", "Accepted")
        await link.wait_for(lambda: (1, 6.0) in limits(link))
        report = await csms.call("CP1", call.GetChargingProfiles(request_id=3, charging_profile={
            "charging_profile_purpose": "TxProfile"}))
        assert report.status == "Accepted"
        await csms.wait_for(lambda: csms.actions("ReportChargingProfiles"))
        link.emit("session.stopped", session=1, meter_stop_wh=10, reason="local")
        await link.wait_for(lambda: limits(link)[-1] == (1, None))
        none = await csms.call("CP1", call.GetChargingProfiles(request_id=4, charging_profile={}))
    (_, reported), = csms.actions("ReportChargingProfiles")
    assert reported["requestId"] == 3 and reported["evseId"] == 1
    assert [p["id"] for p in reported["chargingProfile"]] == [9]
    assert none.status == "NoProfiles" and csms.problems == []
