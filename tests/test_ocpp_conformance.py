"""Issue 19's rows against a CSMS that checks behaviour, not only schemas (simulator/csms_checks):
the uplink's own side of each, with the daemon's events as the control socket sends them. The
rows that need the daemon itself are in test_ocpp_daemon.py."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import replace

from ocpp.v16 import call

from evsed import protocol as p
from simulator.csms import CentralSystem
from test_ocpp_fakes import FakeLink, aio, booted, iso, running, until

ASK = p.AuthorizeRequest(authorize=1, id_tag="-", connector=1)


def ago(seconds: float) -> dt.datetime:
    """A whole second, that long before now."""
    return (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=seconds)).replace(microsecond=0)


def whole(moment: dt.datetime) -> str:
    """As the daemon's session record writes a time: whole seconds."""
    return moment.isoformat(timespec="seconds")


@aio
async def test_a_clean_shutdown_closes_the_websocket_going_away_not_internal_error(tmp_path):
    csms = CentralSystem()
    async with running(csms, tmp_path) as (uplink, _):
        await booted(csms, uplink)
        await csms.drop()  # the CSMS closes one connection itself: not the charge point's close
        await csms.wait_for(lambda: csms.connections == 2 and len(csms.actions("BootNotification")) == 2)
        await until(lambda: uplink.booted, what="booted again")
    await csms.wait_for(lambda: not csms.stations)
    assert csms.closes == [1001]
    assert csms.violations() == []


@aio
async def test_start_and_stop_keep_milliseconds_and_a_stop_is_never_timed_before_its_meter_values(tmp_path):
    # The session record keeps whole seconds (started 0.437 s into a second, stopped 0.6 s into
    # another); the events that tell them carry the milliseconds.
    t0 = ago(20)
    link = FakeLink()
    csms = CentralSystem()
    async with running(csms, tmp_path, link=link) as (uplink, _):
        await booted(csms, uplink)
        link.emit("session.started", session=1, id_tag="04A1B2C3", meter_start_wh=1000,
                  started_at=whole(t0), at=iso(t0 + dt.timedelta(seconds=0.437)))
        link.emit("session.sample", session=1, energy_wh=1010, power_w=7200.0, current_a=[10.0], voltage_v=[230.0], meter_last_wh=1010,
                  offered_a=16.0, at=iso(t0 + dt.timedelta(seconds=5.2)))
        await until(lambda: 1 in uplink.messages.samples and uplink.state.sessions(), what="the sample seen")
        assert uplink.messages.meter_values(1, "Sample.Periodic")
        uplink.sender.wake.set()
        await csms.wait_for(lambda: csms.actions("MeterValues"))
        link.emit("session.stopped", session=1, id_tag="04A1B2C3", meter_stop_wh=1012, energy_wh=12,
                  reason="ev_disconnected", stopped_at=whole(t0 + dt.timedelta(seconds=5)),
                  at=iso(t0 + dt.timedelta(seconds=5.6)))
        await csms.wait_for(lambda: csms.actions("StopTransaction"))
    (_, start), = csms.actions("StartTransaction")
    (_, meter), = csms.actions("MeterValues")
    (_, stop), = csms.actions("StopTransaction")
    assert start["timestamp"] == iso(t0 + dt.timedelta(seconds=0.437))
    assert meter["meterValue"][0]["timestamp"] == iso(t0 + dt.timedelta(seconds=5.2))
    assert stop["timestamp"] == iso(t0 + dt.timedelta(seconds=5.6))
    assert csms.violations() == []


@aio
async def test_a_power_loss_stop_is_never_below_or_before_what_was_sent(tmp_path):
    # After kill -9 the daemon ends the session at its last durable reading: here the start's
    # (0 Wh drawn, the start's time), although 29 Wh had reached the CSMS in a MeterValues.
    t0 = ago(120)
    link = FakeLink()
    csms = CentralSystem()
    async with running(csms, tmp_path, link=link) as (uplink, _):
        await booted(csms, uplink)
        link.emit("session.started", session=1, id_tag="04A1B2C3", meter_start_wh=5000, started_at=whole(t0))
        link.emit("session.sample", session=1, energy_wh=5029, power_w=11000.0, current_a=[16.0] * 3,
                  voltage_v=[230.0] * 3, offered_a=16.0, meter_last_wh=5029, at=iso(t0 + dt.timedelta(seconds=9.5)))
        await until(lambda: 1 in uplink.messages.samples and uplink.state.sessions(), what="the sample seen")
        assert uplink.messages.meter_values(1, "Sample.Periodic")
        uplink.sender.wake.set()
        await csms.wait_for(lambda: csms.actions("MeterValues"))
        link.emit("session.stopped", session=1, id_tag="04A1B2C3", meter_stop_wh=5000, energy_wh=0,
                  reason="power_loss", stopped_at=whole(t0))
        await csms.wait_for(lambda: csms.actions("StopTransaction"))
    (_, stop), = csms.actions("StopTransaction")
    assert stop["reason"] == "PowerLoss" and stop["meterStop"] == 5029
    assert stop["timestamp"] == iso(t0 + dt.timedelta(seconds=9.5))
    assert stop["transactionData"][-1]["sampledValue"][0]["value"] == "5029"
    assert csms.violations() == []


@aio
async def test_status_notifications_leave_in_the_order_of_their_timestamps(tmp_path):
    # A ground fault while Preparing: the fault's error code goes out with the Preparing status,
    # then the Faulted status follows 1 ms later; the first must not be timed after the second,
    # however late the uplink gets to them (its clock a minute ahead here).
    ahead = [0.0]
    link = FakeLink()
    csms = CentralSystem()
    async with running(csms, tmp_path, link=link, clock=lambda: time.time() + ahead[0]) as (uplink, _):
        await booted(csms, uplink)
        t0 = dt.datetime.now(dt.timezone.utc)
        ahead[0] = 60.0
        link.emit("connector.status", status="Preparing", reason="", at=iso(t0))
        link.emit("fault.raised", fault="rcd", lockout=False, detail="rcd tripped",
                  at=iso(t0 + dt.timedelta(seconds=0.918)))
        link.emit("connector.status", status="Faulted", reason="rcd", at=iso(t0 + dt.timedelta(seconds=0.919)))
        await csms.wait_for(lambda: [msg["status"] for _, msg in csms.actions("StatusNotification")][-1:] == ["Faulted"])
    sent = [(msg["status"], msg["errorCode"], msg["timestamp"]) for _, msg in csms.actions("StatusNotification")
            if msg["connectorId"] == 1]
    assert sent[-2:] == [("Preparing", "GroundFailure", iso(t0 + dt.timedelta(seconds=0.918))),
                         ("Faulted", "GroundFailure", iso(t0 + dt.timedelta(seconds=0.919)))]
    assert csms.violations() == []


@aio
async def test_connector_0_status_is_sent_at_the_first_boot(tmp_path):
    csms = CentralSystem()
    async with running(csms, tmp_path) as (uplink, link):
        await csms.wait_for(lambda: any(msg["connectorId"] == 0 for _, msg in csms.actions("StatusNotification")))
        await csms.call("CP1", call.TriggerMessage(requested_message="Heartbeat"))
        await csms.wait_for(lambda: csms.actions("Heartbeat"))  # anything after: the boot went on
    (_, status), = [(a, msg) for a, msg in csms.actions("StatusNotification") if msg["connectorId"] == 0]
    assert status["status"] == "Available"
    assert csms.violations() == []


def stopping_link() -> FakeLink:
    """A link whose daemon ends the session when asked to (as the real one would)."""
    link = FakeLink()

    def remote_stop(req):
        link.emit("session.stopped", connector=req.connector, session=1, id_tag="04A1B2C3",
                  meter_stop_wh=400, energy_wh=300, reason="other", stopped_at=iso())
        return p.StopReply(connector=req.connector, result="Accepted")
    link.replies["remote-stop"] = remote_stop
    return link


@aio
async def test_a_reset_finishes_the_stop_exchange_before_the_connection_closes(tmp_path):
    # The CSMS takes 0.5 s to store a StopTransaction: a reset that closed the connection before
    # its answer sent the Stop again after the reboot, and the CSMS stored it twice.
    csms = CentralSystem(delays={"StopTransaction": 0.5})
    link = stopping_link()
    async with running(csms, tmp_path, link=link) as (uplink, _):
        await booted(csms, uplink)
        link.emit("session.started", session=1, id_tag="04A1B2C3", meter_start_wh=100, started_at=iso())
        await until(lambda: uplink.state.transaction_id("1") == 1001, what="the transaction id")
        assert (await csms.call("CP1", call.Reset(type="Soft"))).status == "Accepted"
        await csms.wait_for(lambda: len(csms.actions("BootNotification")) == 2)
        await until(lambda: uplink.booted and uplink.state.count("queue") == 0, what="the queue sent")
    (_, stop), = csms.actions("StopTransaction")
    assert stop["reason"] == "SoftReset"
    assert csms.violations() == []


@aio
async def test_the_local_list_and_the_cache_compare_id_tags_without_case(tmp_path):
    csms = CentralSystem(id_tags={"abcdef01": "Accepted"})
    async with running(csms, tmp_path) as (uplink, link):
        await booted(csms, uplink)
        await until(lambda: link.authorizer is not None)
        entry = {"idTag": "0a0b0c0d", "idTagInfo": {"status": "Accepted"}}
        result = await csms.call("CP1", call.SendLocalList(list_version=1, update_type="Full",
                                                           local_authorization_list=[entry]))
        assert result.status == "Accepted"
        assert (await link.authorizer(replace(ASK, id_tag="abcdef01"))).result == "accept"  # cached as sent
        await csms.stop()
        await until(lambda: not uplink.booted, what="offline")
        local = await link.authorizer(replace(ASK, id_tag="0A0B0C0D"))
        assert (local.result, local.reason) == ("accept", "local list (offline)")
        cached = await link.authorizer(replace(ASK, id_tag="ABCDEF01"))
        assert (cached.result, cached.reason) == ("accept", "cache (offline)")
