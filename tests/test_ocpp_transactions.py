"""Transactions through the uplink, message by message: Start/Stop with meter values, the durable
queue across an offline period, and exactly-once delivery across kill -9 of the service."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from simulator.csms import CentralSystem
from test_ocpp_fakes import FakeLink, aio, booted, running, until

SAMPLE = dict(power_w=7200.0, current_a=[10.4, 10.5, 10.3], voltage_v=[230.1, 229.8, 230.4], offered_a=16.0)


def session_events(link: FakeLink, session=1, tag="04A1B2C3") -> None:
    link.emit("connector.status", status="Preparing")
    link.emit("session.started", session=session, id_tag=tag, card_name="Alice", group="family",
              auth_source="local", meter_start_wh=1000, started_at="2026-11-28T16:20:00.123456Z")
    link.emit("connector.status", status="Charging")
    link.emit("session.sample", session=session, energy_wh=1250, **SAMPLE)


def stop_events(link: FakeLink, session=1, tag="04A1B2C3") -> None:
    link.emit("session.stopped", session=session, id_tag=tag, meter_stop_wh=1500, energy_wh=500,
              reason="ev_disconnected", stopped_at="2026-11-28T16:50:00Z")
    link.emit("connector.status", status="Finishing")
    link.emit("connector.status", status="Available")


def flow(csms: CentralSystem) -> list[str]:
    return [a for a, _ in csms.actions() if a not in ("Heartbeat", "BootNotification")]


@aio
async def test_a_full_session_arrives_message_by_message(tmp_path):
    csms = CentralSystem()
    link = FakeLink()
    link.emit("connector.status", connector=0, status="Available")
    link.emit("connector.status", status="Available")
    async with running(csms, tmp_path, link=link, keys={"MeterValueSampleInterval": "1"}) as (uplink, _):
        await booted(csms)
        await csms.wait_for(lambda: len(csms.actions("StatusNotification")) == 2)
        session_events(link)
        await csms.wait_for(lambda: csms.actions("MeterValues"), timeout=5)
        stop_events(link)
        await csms.wait_for(lambda: flow(csms)[-1:] == ["StatusNotification"] and
                            csms.actions("StatusNotification")[-1][1]["status"] == "Available")
        await until(lambda: link.acked == link.events_list[-1].seq, what="every event acknowledged")
    steps = flow(csms)
    assert steps[:5] == ["StatusNotification", "StatusNotification", "StatusNotification",
                         "StartTransaction", "StatusNotification"]
    assert steps[-3:] == ["StopTransaction", "StatusNotification", "StatusNotification"]
    assert set(steps[5:-3]) == {"MeterValues"}
    (_, start), = csms.actions("StartTransaction")
    assert start == {"connectorId": 1, "idTag": "04A1B2C3", "meterStart": 1000,
                     "timestamp": "2026-11-28T16:20:00.123Z"}
    _, meter = csms.actions("MeterValues")[0]
    assert meter["transactionId"] == 1001
    measurands = {v["measurand"]: v for v in meter["meterValue"][0]["sampledValue"]}
    assert measurands["Energy.Active.Import.Register"] == {
        "value": "1250", "context": "Sample.Periodic", "measurand": "Energy.Active.Import.Register", "unit": "Wh"}
    assert measurands["Current.Offered"]["value"] == "16.0" and measurands["Power.Active.Import"]["unit"] == "W"
    (_, stop), = csms.actions("StopTransaction")
    assert stop["transactionId"] == 1001 and stop["meterStop"] == 1500 and stop["reason"] == "EVDisconnected"
    assert stop["idTag"] == "04A1B2C3" and stop["timestamp"] == "2026-11-28T16:50:00.000Z"
    begin, end = stop["transactionData"]
    assert begin["sampledValue"][0] == {"value": "1000", "context": "Transaction.Begin",
                                        "measurand": "Energy.Active.Import.Register", "unit": "Wh"}
    assert end["sampledValue"][0]["value"] == "1500" and end["sampledValue"][0]["context"] == "Transaction.End"


@aio
async def test_messages_queued_offline_are_sent_in_order_after_reconnect_with_the_real_transaction_id(tmp_path):
    csms = CentralSystem()
    port = await csms.start()
    link = FakeLink()
    async with running(csms, tmp_path, link=link, port=port) as (uplink, _):
        await booted(csms)
        await csms.stop()                                   # the CSMS goes away
        await until(lambda: not uplink.booted, what="offline")
        session_events(link)
        await until(lambda: 1 in uplink.messages.samples, what="the sample seen")
        assert uplink.messages.meter_values(1, "Sample.Periodic")
        stop_events(link)
        await until(lambda: link.acked == link.events_list[-1].seq, what="events queued and acked")
        assert [q.action for q in uplink.state.queued()] == [
            "StatusNotification", "StartTransaction", "StatusNotification", "MeterValues", "StopTransaction",
            "StatusNotification", "StatusNotification"]
        again = CentralSystem()
        await again.start(port=port)
        await again.wait_for(lambda: again.actions("StopTransaction"), timeout=10)
        await until(lambda: uplink.state.count("queue") == 0, what="queue empty")
        await again.stop()
    steps = flow(again)
    assert steps[:3] == ["StartTransaction", "MeterValues", "StopTransaction"]
    assert [p["transactionId"] for _, p in again.actions("MeterValues", "StopTransaction")] == [1001, 1001]
    assert {p["connectorId"]: p["status"] for _, p in again.actions("StatusNotification")}[1] == "Available"


@aio
async def test_a_message_the_csms_keeps_refusing_is_dropped_after_the_attempts_and_counted(tmp_path):
    csms = CentralSystem()
    link = FakeLink()
    keys = {"TransactionMessageAttempts": "2", "TransactionMessageRetryInterval": "0"}
    async with running(csms, tmp_path, link=link, keys=keys) as (uplink, _):
        await booted(csms)
        station = csms.stations["CP1"]
        station.route_map["MeterValues"]["_on_action"] = lambda **_: (_ for _ in ()).throw(RuntimeError())
        session_events(link)
        await csms.wait_for(lambda: csms.actions("StartTransaction"))
        await until(lambda: 1 in uplink.messages.samples, what="the sample seen")
        assert uplink.messages.meter_values(1, "Sample.Periodic")
        uplink.sender.wake.set()
        await until(lambda: uplink.sender.dropped == 1, what="one dropped")
        assert len(csms.actions("MeterValues")) == 2
        assert uplink.status().dropped == 1


CHILD = textwrap.dedent("""
    import asyncio, sys
    sys.path.insert(0, {tests!r})
    from test_ocpp_fakes import FakeLink, settings_for
    from test_ocpp_transactions import session_events, stop_events
    from evsed.uplink.v16.uplink import Uplink

    class Loud(FakeLink):
        async def ack(self, seq):
            await super().ack(seq)
            print("acked", seq, flush=True)

    async def main():
        link = Loud()
        session_events(link)
        stop_events(link)
        uplink = Uplink(settings_for({port}, __import__("pathlib").Path({state!r})), link)
        await uplink.run()
    asyncio.run(main())
""")


@aio
async def test_queued_messages_survive_kill_9_and_arrive_exactly_once_in_order(tmp_path):
    csms = CentralSystem()
    port = await csms.start()
    await csms.stop()                                       # nothing listens: the service is offline
    state = tmp_path / "ocpp.sqlite"
    code = CHILD.format(tests=str(Path(__file__).parent), port=port, state=str(state))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        for line in child.stdout:
            if line.split() == ["acked", "6"]:
                break
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    link = FakeLink()                                       # the daemon replays what it kept
    session_events(link)
    stop_events(link)
    again = CentralSystem()
    async with running(again, tmp_path, link=link, port=port) as (uplink, _):
        await again.wait_for(lambda: again.actions("StopTransaction"), timeout=10)
        await until(lambda: uplink.state.count("queue") == 0, what="queue empty")
    assert [a for a, _ in again.actions("StartTransaction", "StopTransaction")] == [
        "StartTransaction", "StopTransaction"]
    assert again.actions("StopTransaction")[0][1]["transactionId"] == 1001


def test_a_second_uplink_on_the_same_state_file_is_refused(tmp_path):
    import pytest
    from evsed.uplink.state import State, StateBusy
    first = State(tmp_path / "ocpp.sqlite")
    with pytest.raises(StateBusy):
        State(tmp_path / "ocpp.sqlite")
    first.close()
    State(tmp_path / "ocpp.sqlite").close()
