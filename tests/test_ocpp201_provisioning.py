"""OCPP 2.0.1 provisioning against a 2.0.1 CSMS on the real websocket: BootNotification with its
reason, Pending and Rejected, each EVSE's status after the boot, the device model read and written
(GetVariables, SetVariables, persisted), and a base report paged over NotifyReport."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from ocpp.exceptions import SecurityError
from ocpp.v201 import call

from evsed import config
from evsed import protocol as p
from evsed.control import client as control
from evsed.shell import last_stop
from evsed.uplink.state import State
from simulator.csms201 import CentralSystem201
from test_ocpp201_fakes import running
from test_daemon import start_process, write_config
from test_ocpp_fakes import FakeLink, aio, booted, until


@aio
async def test_boot_says_power_up_then_every_evse_status_and_the_startup_security_event(tmp_path):
    csms = CentralSystem201()
    link = FakeLink(connectors=(1, 2))
    link.emit("connector.status", connector=1, status="Available", ev_connected=False)
    link.emit("connector.status", connector=2, status="Preparing", ev_connected=True)
    async with running(csms, tmp_path, link=link) as (uplink, _):
        await booted(csms, uplink)
        await csms.wait_for(lambda: len(csms.actions("StatusNotification")) >= 2
                            and csms.actions("SecurityEventNotification"))
    (_, boot), = csms.actions("BootNotification")
    assert boot["reason"] == "PowerUp" and boot["chargingStation"]["vendorName"] == "evsed"
    statuses = {p["evseId"]: p["connectorStatus"] for _, p in csms.actions("StatusNotification")}
    assert statuses == {1: "Available", 2: "Occupied"}
    assert csms.actions("SecurityEventNotification")[0][1]["type"] == "StartupOfTheDevice"
    assert csms.problems == []


@aio
async def test_pending_and_rejected_boots_are_retried_and_nothing_else_is_sent_before_accepted(tmp_path):
    csms = CentralSystem201(boot=[("Pending", 1), ("Rejected", 1)])
    async with running(csms, tmp_path) as (uplink, _):
        await csms.wait_for(lambda: len(csms.actions("BootNotification")) == 3, timeout=10)
        await until(lambda: uplink.booted, what="accepted")
        await csms.wait_for(lambda: csms.actions("StatusNotification"))
    actions = [a for a, _ in csms.actions()]
    assert actions[:3] == ["BootNotification"] * 3


@aio
async def test_the_csms_reads_and_writes_variables_and_a_write_persists(tmp_path):
    csms = CentralSystem201()
    async with running(csms, tmp_path) as (uplink, _):
        await booted(csms, uplink)
        got = await csms.call("CP1", call.GetVariables(get_variable_data=[
            {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}},
            {"component": {"name": "TxCtrlr"}, "variable": {"name": "TxStartPoint"}},
            {"component": {"name": "EVSE", "evse": {"id": 1}}, "variable": {"name": "AvailabilityState"}},
            {"component": {"name": "Nope"}, "variable": {"name": "X"}}]))
        results = [(r["attribute_status"], r.get("attribute_value")) for r in got.get_variable_result]
        assert results == [("Accepted", "300"), ("Accepted", "PowerPathClosed"), ("Accepted", "Available"),
                           ("UnknownComponent", None)]
        written = await csms.call("CP1", call.SetVariables(set_variable_data=[
            {"component": {"name": "TxCtrlr"}, "variable": {"name": "TxStartPoint"}, "attribute_value": "EVConnected"},
            {"component": {"name": "SecurityCtrlr"}, "variable": {"name": "Identity"}, "attribute_value": "x"},
            {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "WebSocketPingInterval"},
             "attribute_value": "30"}]))
        assert [r["attribute_status"] for r in written.set_variable_result] == ["Accepted", "Rejected", "RebootRequired"]
    state = State(tmp_path / "ocpp.sqlite")
    try:
        assert state.keys()["TxCtrlr/TxStartPoint"] == "EVConnected"
    finally:
        state.close()
    assert csms.problems == []


@aio
async def test_a_full_base_report_arrives_in_pages_by_seq_no(tmp_path):
    csms = CentralSystem201()
    async with running(csms, tmp_path, link=FakeLink(connectors=(1, 2, 3, 4))) as (uplink, _):
        await booted(csms, uplink)
        total = len(uplink.model.base_report("FullInventory"))
        assert total > 100  # more than ItemsPerMessageGetReport
        answer = await csms.call("CP1", call.GetBaseReport(request_id=7, report_base="FullInventory"))
        assert answer.status == "Accepted"
        await csms.wait_for(lambda: csms.actions("NotifyReport") and csms.actions("NotifyReport")[-1][1]["tbc"] is False)
    pages = [p for _, p in csms.actions("NotifyReport")]
    assert [p["seqNo"] for p in pages] == list(range(len(pages))) and len(pages) == -(-total // 100)
    assert sum(len(p["reportData"]) for p in pages) == total
    assert all(p["tbc"] for p in pages[:-1]) and all(p["requestId"] == 7 for p in pages)
    names = {(d["component"]["name"], d["variable"]["name"]) for p in pages for d in p["reportData"]}
    assert ("TxCtrlr", "TxStopPoint") in names and ("Connector", "ConnectorType") in names
    assert csms.problems == []


@aio
async def test_a_pending_station_answers_reports_and_variables_and_boots_when_triggered(tmp_path):
    # CitrineOS's onboarding: Pending, a full report, its variables set, then TriggerMessage BootNotification.
    csms = CentralSystem201(boot=[("Pending", 300)])
    async with running(csms, tmp_path) as (uplink, _):
        await csms.wait_for(lambda: csms.actions("BootNotification") and "CP1" in csms.stations)
        assert (await csms.call("CP1", call.GetBaseReport(request_id=1, report_base="FullInventory"))).status == "Accepted"
        await csms.wait_for(lambda: csms.actions("NotifyReport") and csms.actions("NotifyReport")[-1][1]["tbc"] is False)
        written = await csms.call("CP1", call.SetVariables(set_variable_data=[{
            "component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}, "attribute_value": "120"}]))
        assert written.set_variable_result[0]["attribute_status"] == "Accepted"
        assert not uplink.booted
        trigger = await csms.call("CP1", call.TriggerMessage(requested_message="BootNotification"))
        assert trigger.status == "Accepted"
        await until(lambda: uplink.booted, what="accepted")
        await csms.wait_for(lambda: csms.actions("StatusNotification"))
    actions = [a for a, _ in csms.actions()]
    accepted = actions.index("BootNotification", 1)
    assert set(actions[:accepted]) == {"BootNotification", "NotifyReport"}  # nothing else while Pending
    assert csms.actions("BootNotification")[1][1]["reason"] == "Triggered"
    assert csms.problems == []


@aio
async def test_a_pending_station_refuses_remote_start_and_stop_but_sends_a_triggered_heartbeat(tmp_path):
    # B02: a Pending station is configured, not used; what a TriggerMessage asks for it may send (B02.FR.02).
    csms = CentralSystem201(boot=[("Pending", 300)])
    async with running(csms, tmp_path) as (uplink, link):
        await until(lambda: uplink.registration() == "Pending", what="pending")
        token = {"id_token": "ab-12-cd", "type": "Central"}
        started = await csms.call("CP1", call.RequestStartTransaction(id_token=token, remote_start_id=1, evse_id=1))
        stopped = await csms.call("CP1", call.RequestStopTransaction(transaction_id="tx-1"))
        heartbeat = await csms.call("CP1", call.TriggerMessage(requested_message="Heartbeat"))
        await csms.wait_for(lambda: csms.actions("Heartbeat"))
        assert not uplink.booted
    assert (started.status, stopped.status, heartbeat.status) == ("Rejected", "Rejected", "Accepted")
    assert link.sent("remote-start") == [] and link.sent("remote-stop") == []


@aio
async def test_a_rejected_station_answers_nothing_but_a_triggered_boot(tmp_path):
    # B03: a Rejected station sends nothing until its next boot; the CSMS may only trigger that boot.
    csms = CentralSystem201(boot=[("Rejected", 300)])
    async with running(csms, tmp_path) as (uplink, link):
        await until(lambda: uplink.registration() == "Rejected", what="rejected")
        token = {"id_token": "ab-12-cd", "type": "Central"}
        with pytest.raises(SecurityError):
            await csms.call("CP1", call.RequestStartTransaction(id_token=token, remote_start_id=1, evse_id=1))
        with pytest.raises(SecurityError):
            await csms.call("CP1", call.GetVariables(get_variable_data=[
                {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}]))
        heartbeat = await csms.call("CP1", call.TriggerMessage(requested_message="Heartbeat"))
        boot = await csms.call("CP1", call.TriggerMessage(requested_message="BootNotification"))
        await until(lambda: uplink.booted, what="accepted")
    assert (heartbeat.status, boot.status) == ("Rejected", "Accepted")
    assert link.sent("remote-start") == [] and csms.actions("Heartbeat") == []
    assert csms.actions("BootNotification")[1][1]["reason"] == "Triggered"


def hellos_across_a_kill_and_an_orderly_stop(tmp_path) -> tuple[p.HelloReply, p.HelloReply]:
    """A real daemon on the simulator killed with SIGKILL, started again and stopped with SIGTERM,
    started again: the two later runs' hellos over the control socket."""
    path = write_config(tmp_path)
    cfg = config.load(path)
    hellos = []
    proc = start_process(path)
    for sig in (signal.SIGKILL, signal.SIGTERM):
        proc.send_signal(sig)
        proc.wait(timeout=10)
        proc.stderr.close()
        proc = start_process(path)
        hellos.append(control.ask(cfg.store.runtime_dir, p.Hello()))
    proc.send_signal(signal.SIGTERM)
    proc.stderr.read()
    proc.wait(timeout=10)
    proc.stderr.close()
    return hellos[0], hellos[1]


async def boot_reason_with(hello: p.HelloReply, tmp_path) -> str:
    csms = CentralSystem201()
    link = FakeLink()
    link.hello = hello  # the daemon's own reply record, as the real Link would hand it over
    async with running(csms, tmp_path, link=link) as (uplink, _):
        await booted(csms, uplink)
    (_, boot), = csms.actions("BootNotification")
    return boot["reason"]


def test_a_daemon_killed_while_the_machine_stays_up_boots_as_watchdog_an_orderly_stop_as_power_up(tmp_path):
    killed, stopped = hellos_across_a_kill_and_an_orderly_stop(tmp_path)
    assert (killed.last_stop, stopped.last_stop) == ("killed", "clean")
    assert killed.started_at < stopped.started_at
    assert asyncio.run(boot_reason_with(killed, tmp_path / "a")) == "Watchdog"
    assert asyncio.run(boot_reason_with(stopped, tmp_path / "b")) == "PowerUp"


def test_how_the_daemons_last_run_ended_is_read_from_its_marker_and_the_kernels_boot_id(tmp_path):
    assert last_stop.judge(None, "boot-1") == "clean"
    assert last_stop.judge({"boot_id": "boot-1", "stopped": ""}, "boot-1") == "killed"
    assert last_stop.judge({"boot_id": "boot-0", "stopped": ""}, "boot-1") == "power_loss"  # or a hard reset
    assert last_stop.judge({}, "boot-1") == "power_loss"  # torn by the cut itself
    assert last_stop.judge({"boot_id": "boot-1", "stopped": "error"}, "boot-1") == "error"
    assert last_stop.begin(tmp_path, "t1") == "clean"
    last_stop.end(tmp_path, error=True)  # a stop on the daemon's own fatal error
    assert last_stop.begin(tmp_path, "t2") == "error"
    last_stop.end(tmp_path, error=False)
    assert last_stop.begin(tmp_path, "t3") == "clean"
    assert last_stop.begin(tmp_path, "t4") == ("killed" if last_stop.boot_id() else "power_loss")


@aio
async def test_a_daemon_run_after_a_fatal_error_boots_as_application_reset_once(tmp_path):
    csms = CentralSystem201()
    link = FakeLink()
    link.hello = p.HelloReply(version=1, charger="evsed", connectors=(1,), phases=3, voltage_v=230, acked=0,
                              last_seq=0, started_at="2026-11-28T16:20:00.000Z", last_stop="error")
    async with running(csms, tmp_path, link=link) as (uplink, _):
        await booted(csms, uplink)
    again = CentralSystem201()
    async with running(again, tmp_path, link=link) as (uplink, _):  # the service again, the same daemon run
        await booted(again, uplink)
    assert [b["reason"] for c in (csms, again) for _, b in c.actions("BootNotification")] == [
        "ApplicationReset", "PowerUp"]


@aio
async def test_an_uplink_killed_under_a_running_daemon_boots_as_watchdog_when_the_daemon_starts_it_again(tmp_path):
    from test_ocpp201_transactions_live import CUT
    csms = CentralSystem201()
    port = await csms.start()
    state = tmp_path / "ocpp.sqlite"
    code = CUT.format(tests=str(Path(__file__).parent), port=port, state=str(state))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        while (line := await asyncio.to_thread(child.stdout.readline)) and line.strip() != "delivered":
            pass
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
    async with running(csms, tmp_path, port=port) as (uplink, _):
        await csms.wait_for(lambda: len(csms.actions("BootNotification")) == 2)
    again = CentralSystem201()
    async with running(again, tmp_path) as (uplink, _):  # after an orderly stop
        await booted(again, uplink)
    assert [b["reason"] for c in (csms, again) for _, b in c.actions("BootNotification")] == [
        "PowerUp", "Watchdog", "PowerUp"]
