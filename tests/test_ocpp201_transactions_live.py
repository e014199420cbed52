"""OCPP 2.0.1 transactions against a 2.0.1 CSMS on the real websocket: a full session's
TransactionEvents, the durable queue across an offline period and across kill -9 (exactly once,
in order, the station's transaction id kept), MessageAttempts, and a deauthorizing answer; and
RequestStartTransaction through the real daemon, Rejected where the daemon will not start it."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from evsed import protocol as p
from ocpp.v201 import call

from simulator.csms201 import CentralSystem201
from test_ocpp201_fakes import running
from test_ocpp_fakes import FakeLink, aio, booted, until

SAMPLE = dict(power_w=7200.0, current_a=(10.4, 10.5, 10.3), voltage_v=(230.1, 229.8, 230.4), offered_a=16.0)


def session_events(link: FakeLink, session=1, tag="04A1B2C3") -> None:
    link.emit("connector.status", status="Preparing", ev_connected=True)
    link.emit("session.started", session=session, id_tag=tag, auth_source="local", meter_start_wh=1000,
              started_at="2026-11-28T16:20:00.123456Z")
    link.emit("session.sample", session=session, energy_wh=1250, **SAMPLE)
    link.emit("contactor.closed", offered_a=16.0)
    link.emit("connector.status", status="Charging", ev_connected=True)


def stop_events(link: FakeLink, session=1, tag="04A1B2C3", reason="ev_disconnected") -> None:
    link.emit("contactor.opened", reason="session stopped")
    link.emit("session.stopped", session=session, id_tag=tag, meter_stop_wh=1500, energy_wh=500, reason=reason,
              stopped_at="2026-11-28T16:50:00Z")
    link.emit("connector.status", status="Available", ev_connected=False)


def tx_flow(csms: CentralSystem201) -> list[tuple[str, int, str]]:
    return [(p["eventType"], p["seqNo"], p["triggerReason"]) for _, p in csms.actions("TransactionEvent")]


@aio
async def test_a_full_session_arrives_as_started_updated_ended(tmp_path):
    csms = CentralSystem201()
    link = FakeLink()
    link.emit("connector.status", status="Available", ev_connected=False)
    async with running(csms, tmp_path, link=link, variables={"SampledDataCtrlr/TxUpdatedInterval": "1"}) as (uplink, _):
        await booted(csms, uplink)
        session_events(link)
        await csms.wait_for(lambda: any(p["triggerReason"] == "MeterValuePeriodic"
                                        for _, p in csms.actions("TransactionEvent")), timeout=10)
        stop_events(link)
        await csms.wait_for(lambda: any(p["eventType"] == "Ended" for _, p in csms.actions("TransactionEvent")))
        await until(lambda: uplink.state.count("queue") == 0, what="queue empty")
    flow = tx_flow(csms)
    assert flow[0] == ("Started", 0, "ChargingStateChanged") and flow[1] == ("Updated", 1, "ChargingStateChanged")
    assert flow[-1][0] == "Ended" and flow[-1][2] == "EVCommunicationLost"
    assert {t for _, _, t in flow[2:-1]} == {"MeterValuePeriodic"}
    events = [p for _, p in csms.actions("TransactionEvent")]
    assert {p["transactionInfo"]["transactionId"] for p in events} == {"tx-1"}
    assert events[0]["idToken"] == {"idToken": "04A1B2C3", "type": "ISO14443"}
    assert events[0]["evse"] == {"id": 1, "connectorId": 1}
    assert events[-1]["transactionInfo"]["stoppedReason"] == "EVDisconnected"
    assert events[-1]["meterValue"][0]["sampledValue"][0]["value"] == 1500
    periodic = events[2]["meterValue"][0]["sampledValue"]
    assert {v["measurand"] for v in periodic} == {"Energy.Active.Import.Register", "Power.Active.Import",
                                                  "Current.Offered"}
    statuses = [p["connectorStatus"] for _, p in csms.actions("StatusNotification")]
    assert statuses[-2:] == ["Occupied", "Available"]
    assert csms.problems == [] and all("offline" not in p for p in events)


@aio
async def test_events_while_offline_are_flagged_and_sent_in_order_after_reconnect(tmp_path):
    csms = CentralSystem201()
    port = await csms.start()
    link = FakeLink()
    async with running(csms, tmp_path, link=link, port=port) as (uplink, _):
        await booted(csms, uplink)
        await csms.stop()
        await until(lambda: not uplink.booted, what="offline")
        session_events(link)
        stop_events(link)
        await until(lambda: link.acked == link.events_list[-1].seq, what="events queued and acked")
        again = CentralSystem201()
        await again.start(port=port)
        await again.wait_for(lambda: any(p["eventType"] == "Ended" for _, p in again.actions("TransactionEvent")))
        await until(lambda: uplink.state.count("queue") == 0, what="queue empty")
        await again.stop()
    events = [p for _, p in again.actions("TransactionEvent")]
    assert [p["eventType"] for p in events] == ["Started", "Updated", "Ended"]
    assert all(p["offline"] is True for p in events)
    assert again.problems == []


@aio
async def test_a_transaction_event_the_csms_keeps_refusing_is_dropped_after_message_attempts(tmp_path):
    csms = CentralSystem201()
    link = FakeLink()
    variables = {"OCPPCommCtrlr/MessageAttempts:TransactionEvent": "2",
                 "OCPPCommCtrlr/MessageAttemptInterval:TransactionEvent": "0"}
    async with running(csms, tmp_path, link=link, variables=variables) as (uplink, _):
        await booted(csms, uplink)
        station = csms.stations["CP1"]
        station.route_map["TransactionEvent"]["_on_action"] = lambda **_: (_ for _ in ()).throw(RuntimeError())
        session_events(link)
        await until(lambda: uplink.sender.dropped >= 1, what="one dropped")
        started = [p for _, p in csms.actions("TransactionEvent") if p["eventType"] == "Started"]
        assert len(started) == 2  # MessageAttemptsTransactionEvent


@aio
async def test_a_token_the_csms_refuses_in_its_answer_stops_the_session(tmp_path):
    csms = CentralSystem201(id_tags={"04A1B2C3": "Blocked"})
    link = FakeLink()
    async with running(csms, tmp_path, link=link) as (uplink, _):
        await booted(csms, uplink)
        session_events(link)
        await link.wait_for(lambda: link.sent("remote-stop"))
    assert link.sent("remote-stop")[0] == p.RemoteStop(connector=1, reason="deauthorized")


CHILD = textwrap.dedent("""
    import asyncio, sys
    sys.path.insert(0, {tests!r})
    from test_ocpp_fakes import FakeLink, settings_for
    from test_ocpp201_transactions_live import session_events, stop_events
    from evsed.uplink.v201.uplink import Uplink

    class Loud(FakeLink):
        async def ack(self, seq):
            await super().ack(seq)
            print("acked", seq, flush=True)

    async def main():
        link = Loud()
        session_events(link)
        stop_events(link)
        settings = settings_for({port}, __import__("pathlib").Path({state!r}), version="2.0.1")
        await Uplink(settings, link).run()
    asyncio.run(main())
""")


@aio
async def test_queued_transaction_events_survive_kill_9_exactly_once_in_order_with_their_id(tmp_path):
    csms = CentralSystem201()
    port = await csms.start()
    await csms.stop()                                       # nothing listens: the service is offline
    state = tmp_path / "ocpp.sqlite"
    code = CHILD.format(tests=str(Path(__file__).parent), port=port, state=str(state))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        for line in child.stdout:
            if line.split() == ["acked", "7"]:
                break
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    link = FakeLink()                                       # the daemon replays what it kept
    session_events(link)
    stop_events(link)
    again = CentralSystem201()
    async with running(again, tmp_path, link=link, port=port) as (uplink, _):
        await again.wait_for(lambda: any(p["eventType"] == "Ended" for _, p in again.actions("TransactionEvent")))
        await until(lambda: uplink.state.count("queue") == 0, what="queue empty")
    events = [p for _, p in again.actions("TransactionEvent")]
    assert [p["eventType"] for p in events] == ["Started", "Updated", "Ended"]
    assert len({p["transactionInfo"]["transactionId"] for p in events}) == 1
    assert again.problems == []


@aio
async def test_a_fault_is_a_notify_event_on_its_component_and_the_evse_shows_faulted(tmp_path):
    csms = CentralSystem201()
    link = FakeLink()
    async with running(csms, tmp_path, link=link) as (uplink, _):
        await booted(csms, uplink)
        link.emit("fault.raised", fault="rcd", lockout=False, detail="30 mA residual current")
        link.emit("connector.status", status="Faulted", ev_connected=False)
        link.emit("fault.cleared", faults=("rcd",))
        link.emit("connector.status", status="Available", ev_connected=False)
        await csms.wait_for(lambda: len(csms.actions("NotifyEvent")) == 2
                            and csms.actions("StatusNotification")[-1][1]["connectorStatus"] == "Available")
    raised, cleared = (p["eventData"][0] for _, p in csms.actions("NotifyEvent"))
    assert (raised["component"], raised["variable"], raised["actualValue"], raised["techInfo"]) == (
        {"name": "RCD", "evse": {"id": 1}}, {"name": "Tripped"}, "true", "30 mA residual current")
    assert cleared["actualValue"] == "false" and cleared["cleared"] is True and cleared["eventId"] > raised["eventId"]
    assert [p["connectorStatus"] for _, p in csms.actions("StatusNotification")][-2:] == ["Faulted", "Available"]
    assert csms.problems == []


CUT = textwrap.dedent("""
    import asyncio, sys
    sys.path.insert(0, {tests!r})
    from test_ocpp_fakes import FakeLink, settings_for
    from test_ocpp201_transactions_live import session_events
    from evsed.uplink.v201.uplink import Uplink

    async def main():
        link = FakeLink()
        session_events(link)
        settings = settings_for({port}, __import__("pathlib").Path({state!r}), version="2.0.1")
        uplink = Uplink(settings, link)
        task = asyncio.ensure_future(uplink.run())
        while uplink.state.count("queue") or not uplink.booted or link.acked < 4:
            await asyncio.sleep(0.01)
        print("delivered", flush=True)
        await task
    asyncio.run(main())
""")


@aio
async def test_a_transaction_cut_by_kill_9_ends_later_with_its_own_id_and_the_next_seq_no(tmp_path):
    csms = CentralSystem201()
    port = await csms.start()
    state = tmp_path / "ocpp.sqlite"
    code = CUT.format(tests=str(Path(__file__).parent), port=port, state=str(state))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        while (line := await asyncio.to_thread(child.stdout.readline)) and line.strip() != "delivered":
            pass  # the child's log lines
        assert line.strip() == "delivered"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    before = [p for _, p in csms.actions("TransactionEvent")]
    assert [p["eventType"] for p in before] == ["Started", "Updated"]
    link = FakeLink()                                       # the daemon replays what it kept, then ends it
    session_events(link)
    stop_events(link, reason="power_loss")
    async with running(csms, tmp_path, link=link, port=port) as (uplink, _):
        await csms.wait_for(lambda: any(p["eventType"] == "Ended" for _, p in csms.actions("TransactionEvent")))
    events = [p for _, p in csms.actions("TransactionEvent")]
    assert [p["eventType"] for p in events] == ["Started", "Updated", "Ended"]
    assert events[-1]["transactionInfo"]["transactionId"] == before[0]["transactionInfo"]["transactionId"]
    assert events[-1]["seqNo"] == 2 and events[-1]["transactionInfo"]["stoppedReason"] == "PowerLoss"
    assert csms.problems == []


@aio
async def test_with_authorize_remote_start_request_start_is_rejected_where_the_daemon_will_not_start(tmp_path):
    # Issue 19 row 1 for 2.0.1: with AuthCtrlr.AuthorizeRemoteStart it was Accepted before the daemon was asked
    from test_ocpp_daemon import Charger
    csms = CentralSystem201()
    charger = Charger(tmp_path, await csms.start(), "simulator-ocpp201.toml")
    charger.start()
    station = "evsed-sim"

    async def request_start(tag: str, n: int) -> str:
        token = {"id_token": tag, "type": "Central"}
        return (await csms.call(station, call.RequestStartTransaction(id_token=token, remote_start_id=n,
                                                                      evse_id=1))).status

    def started() -> list[dict]:
        return [p for _, p in csms.actions("TransactionEvent") if p["eventType"] == "Started"]
    try:
        await csms.wait_for(lambda: station in csms.stations and csms.actions("StatusNotification"), timeout=20)
        key = {"component": {"name": "AuthCtrlr"}, "variable": {"name": "AuthorizeRemoteStart"}, "attribute_value": "true"}
        written = await csms.call(station, call.SetVariables(set_variable_data=[key]))
        assert written.set_variable_result[0]["attribute_status"] == "Accepted"
        reserve = call.ReserveNow(id=7, expiry_date_time=(dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=10))
                                  .isoformat(), id_token={"id_token": "0RESERVED", "type": "Central"}, evse_id=1)
        assert (await csms.call(station, reserve)).status == "Accepted"
        assert await request_start("ab-12-cd", 1) == "Rejected"  # reserved for another token
        assert (await csms.call(station, call.CancelReservation(reservation_id=7))).status == "Accepted"
        inoperative = call.ChangeAvailability(operational_status="Inoperative", evse={"id": 1})
        assert (await csms.call(station, inoperative)).status == "Accepted"
        assert await request_start("ab-12-cd", 2) == "Rejected"  # unavailable
        operative = call.ChangeAvailability(operational_status="Operative", evse={"id": 1})
        assert (await csms.call(station, operative)).status == "Accepted"
        await charger.sim("plug")
        assert await request_start("ab-12-cd", 3) == "Accepted"  # free: authorized, then started
        await csms.wait_for(started, timeout=20)
        await charger.until(lambda c: c.status == "Charging", "charging")
        assert await request_start("0BEEF", 4) == "Rejected"  # in use
    finally:
        await charger.stop()
        await csms.stop()
    assert [p["idToken"]["idToken"] for _, p in csms.actions("Authorize")] == ["ab-12-cd"]  # only the one it started
    (begin,) = started()
    assert begin["idToken"]["idToken"] == "ab-12-cd"
    assert csms.problems == []
