"""Smart charging: stack levels, purposes, kinds and units (pure), and profiles changing the limit
the daemon offers, at the time the schedule says."""

from __future__ import annotations

from ocpp.v16 import call

from evsed.uplink import smart, times
from evsed.uplink.v16 import profiles
from simulator.csms import CentralSystem
from test_ocpp_fakes import FakeLink, aio, booted, running, until

T0 = times.parse_time("2026-11-28T12:00:00Z")


def profile(pid, purpose="TxDefaultProfile", stack=0, periods=((0, 16),), unit="A", kind="Absolute", **extra):
    schedule = {"chargingRateUnit": unit, "chargingSchedulePeriod": [
        {"startPeriod": s, "limit": lim} for s, lim in periods]}
    if kind == "Absolute":
        schedule["startSchedule"] = "2026-11-28T12:00:00Z"
    schedule.update(extra.pop("schedule", {}))
    return {"chargingProfileId": pid, "stackLevel": stack, "chargingProfilePurpose": purpose,
            "chargingProfileKind": kind, "chargingSchedule": schedule, **extra}


def installed(*bodies, connector=1, session=None):
    return [smart.Installed(connector if b["chargingProfilePurpose"] != "ChargePointMaxProfile" else 0, b,
                            session) for b in bodies]


def test_the_highest_stack_level_with_a_period_now_wins():
    profiles = installed(profile(1, stack=0, periods=((0, 16),)),
                         profile(2, stack=5, periods=((0, 10),), schedule={"duration": 3600}))
    assert smart.connector_limit(profiles, 1, T0 + 60, None, None, 230, 3) == 10
    assert smart.connector_limit(profiles, 1, T0 + 3600, None, None, 230, 3) == 16


def test_watts_become_amps_per_phase_with_number_of_phases():
    p = profile(1, unit="W", periods=((0, 11040),))
    p["chargingSchedule"]["chargingSchedulePeriod"][0]["numberPhases"] = 1
    assert smart.connector_limit(installed(profile(2, unit="W", periods=((0, 11040),))), 1, T0, None, None, 230, 3) == 16
    assert smart.connector_limit(installed(p), 1, T0, None, None, 230, 3) == 48


def test_a_daily_recurring_profile_repeats_the_next_day():
    p = profile(1, kind="Recurring", recurrencyKind="Daily", periods=((0, 6), (3600, 32)),
                schedule={"startSchedule": "2026-11-01T12:00:00Z"})
    profiles = installed(p)
    assert smart.connector_limit(profiles, 1, T0 + 60, None, None, 230, 3) == 6
    assert smart.connector_limit(profiles, 1, T0 + 3601, None, None, 230, 3) == 32
    assert smart.next_change(profiles, T0 + 60, None) == T0 + 3600


def test_a_relative_profile_counts_from_the_transaction_start_and_tx_profile_beats_default():
    relative = profile(1, purpose="TxProfile", kind="Relative", periods=((0, 8), (600, 20)))
    default = profile(2, periods=((0, 16),))
    profiles = installed(relative, session="s1") + installed(default)
    assert smart.connector_limit(profiles, 1, T0 + 700, "s1", T0, 230, 3) == 20
    assert smart.connector_limit(profiles, 1, T0 + 700, "other", T0, 230, 3) == 16


def test_charge_point_max_caps_the_composite_schedule():
    profiles = installed(profile(1, purpose="ChargePointMaxProfile", periods=((0, 10), (1800, 32))),
                         profile(2, periods=((0, 16),)))
    schedule = smart.composite(profiles, 1, T0, 3600, "A", None, None, 230, 3, 32)
    assert schedule["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 10.0},
                                                  {"startPeriod": 1800, "limit": 16.0}]
    in_watts = smart.composite(profiles, 0, T0, 3600, "W", None, None, 230, 3, 32)
    assert in_watts["chargingSchedulePeriod"][0]["limit"] == 6900.0


def test_a_tx_profile_needs_a_running_transaction():
    body = profile(1, purpose="TxProfile")
    assert profiles.check(body, 1, 1, None, None, 20, 48) is not None
    assert profiles.check(body, 1, 1, "s1", 1001, 20, 48) is None
    assert profiles.check(profile(2, stack=21), 1, 1, None, None, 20, 48) is not None


@aio
async def test_profiles_change_the_offered_limit_at_the_scheduled_time_and_clearing_lifts_it(tmp_path):
    csms = CentralSystem()
    link = FakeLink()
    async with running(csms, tmp_path, link=link) as (uplink, _):
        await booted(csms, uplink)
        start = times.iso(uplink.clock())
        body = {"chargingProfileId": 7, "stackLevel": 1, "chargingProfilePurpose": "TxDefaultProfile",
                "chargingProfileKind": "Absolute", "chargingSchedule": {
                    "startSchedule": start, "chargingRateUnit": "A", "chargingSchedulePeriod": [
                        {"startPeriod": 0, "limit": 10.0}, {"startPeriod": 1, "limit": 6.5}]}}
        result = await csms.call("CP1", call.SetChargingProfile(connector_id=1, cs_charging_profiles=body))
        assert result.status == "Accepted"
        limits = lambda: [c.current_a for c in link.sent("limit") if c.connector == 1]  # noqa: E731
        await link.wait_for(lambda: limits()[-1:] == [6.5], timeout=5)
        assert limits()[-3:] == [None, 10.0, 6.5]
        composite = await csms.call("CP1", call.GetCompositeSchedule(connector_id=1, duration=60))
        assert composite.status == "Accepted"
        assert composite.charging_schedule["charging_schedule_period"][0]["limit"] == 6.5
        assert (await csms.call("CP1", call.ClearChargingProfile(id=7))).status == "Accepted"
        await link.wait_for(lambda: limits()[-1] is None)
        assert (await csms.call("CP1", call.ClearChargingProfile(id=7))).status == "Unknown"
        assert all(c.source == "ocpp" for c in link.sent("limit"))


@aio
async def test_remote_start_with_a_tx_profile_installs_it_for_that_transaction(tmp_path):
    csms = CentralSystem()
    link = FakeLink()
    async with running(csms, tmp_path, link=link) as (uplink, _):
        await booted(csms, uplink)
        body = {"chargingProfileId": 3, "stackLevel": 0, "chargingProfilePurpose": "TxProfile",
                "chargingProfileKind": "Relative", "chargingSchedule": {
                    "chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 12.0}]}}
        assert (await csms.call("CP1", call.SetChargingProfile(connector_id=1, cs_charging_profiles=body))).status == "Rejected"
        result = await csms.call("CP1", call.RemoteStartTransaction(id_tag="04A1B2C3", connector_id=1,
                                                                    charging_profile=body))
        assert result.status == "Accepted"
        link.emit("session.started", session=1, id_tag="04A1B2C3", meter_start_wh=0,
                  started_at=times.iso(uplink.clock()))
        await link.wait_for(lambda: any(c.current_a == 12.0 for c in link.sent("limit")))
        link.emit("session.stopped", session=1, id_tag="04A1B2C3", meter_stop_wh=10, energy_wh=10,
                  reason="ev_disconnected", stopped_at=times.iso(uplink.clock()))
        await link.wait_for(lambda: [c.current_a for c in link.sent("limit") if c.connector == 1][-1] is None)
        await until(lambda: uplink.state.count("profiles") == 0)
