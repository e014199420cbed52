"""What a 2.0.1 CSMS asks of the station, on the real websocket: RequestStart/StopTransaction,
Reset (immediate and on idle), ChangeAvailability, UnlockConnector, TriggerMessage,
GetTransactionStatus, the local list and cache, reservations, DataTransfer."""

from __future__ import annotations

import pytest
from ocpp.v201 import call

import protocol_records as pr
from evsed import protocol as p
from evsed.uplink.connection import HardReset
from simulator.csms201 import CentralSystem201
from test_ocpp201_fakes import running
from test_ocpp_fakes import FakeLink, aio, booted, until


def plug(link: FakeLink, connector: int = 1) -> None:
    link.emit("connector.status", connector=connector, status="Preparing", ev_connected=True)


def start(link: FakeLink, tag="04A1B2C3", session=1, connector=1, source="local") -> None:
    link.emit("session.started", connector=connector, session=session, id_tag=tag, auth_source=source,
              meter_start_wh=100, started_at="2026-11-28T16:20:00.000Z")


def stopping_link(connectors=(1,)) -> FakeLink:
    """A link whose daemon ends the session when asked to (as the real one would)."""
    link = FakeLink(connectors=connectors)

    def remote_stop(req):
        link.emit("session.stopped", connector=req.connector, session=1, id_tag="04A1B2C3",
                  meter_stop_wh=400, energy_wh=300, reason=req.reason, stopped_at="2026-11-28T17:00:00.000Z")
        return p.StopReply(connector=req.connector, result="Accepted")
    link.replies["remote-stop"] = remote_stop
    return link


def events(csms: CentralSystem201) -> list[dict]:
    return [p for _, p in csms.actions("TransactionEvent")]


@aio
async def test_request_start_asks_the_daemon_and_its_transaction_carries_the_remote_start_id(tmp_path):
    csms = CentralSystem201()
    variables = {"TxCtrlr/TxStartPoint": "Authorized"}
    async with running(csms, tmp_path, variables=variables) as (uplink, link):
        await booted(csms, uplink)
        token = {"id_token": "ab-12-cd", "type": "Central"}
        answer = await csms.call("CP1", call.RequestStartTransaction(id_token=token, remote_start_id=42, evse_id=1))
        assert answer.status == "Accepted"
        assert link.sent("remote-start") == [p.RemoteStart(connector=1, id_tag="ab-12-cd")]
        plug(link)
        start(link, tag="ab-12-cd", source="ocpp")
        await csms.wait_for(lambda: events(csms))
        rejected = await csms.call("CP1", call.RequestStartTransaction(id_token=token, remote_start_id=43, evse_id=1))
        assert rejected.status == "Rejected" and rejected.transaction_id == "tx-1"
        bad = await csms.call("CP1", call.RequestStartTransaction(id_token=token, remote_start_id=44, evse_id=7))
        assert bad.status == "Rejected"
    (started,) = events(csms)
    assert started["triggerReason"] == "RemoteStart" and started["transactionInfo"]["remoteStartId"] == 42
    assert started["idToken"] == {"idToken": "ab-12-cd", "type": "Central"}  # as the CSMS gave it
    assert csms.problems == []


@aio
async def test_request_start_with_authorize_remote_start_authorizes_first(tmp_path):
    csms = CentralSystem201(id_tags={"0BAD": "Blocked"})
    async with running(csms, tmp_path, variables={"AuthCtrlr/AuthorizeRemoteStart": "true"}) as (uplink, link):
        await booted(csms, uplink)
        for n, tag in enumerate(("0BAD", "04A1B2C3")):
            answer = await csms.call("CP1", call.RequestStartTransaction(
                id_token={"id_token": tag, "type": "ISO14443"}, remote_start_id=n, evse_id=1))
            assert answer.status == "Accepted"
        await link.wait_for(lambda: [c for c in link.sent("remote-start") if not c.check])
        assert [(c.id_tag, c.check) for c in link.sent("remote-start")] == [  # asked first, started once authorized
            ("0BAD", True), ("04A1B2C3", True), ("04A1B2C3", False)]
        assert [p["idToken"]["idToken"] for _, p in csms.actions("Authorize")] == ["0BAD", "04A1B2C3"]


@aio
async def test_request_stop_by_transaction_id_and_an_unknown_id_is_rejected(tmp_path):
    csms = CentralSystem201()
    link = stopping_link()
    async with running(csms, tmp_path, link=link) as (uplink, _):
        await booted(csms, uplink)
        assert (await csms.call("CP1", call.RequestStopTransaction(transaction_id="nope"))).status == "Rejected"
        plug(link)
        start(link)
        link.emit("contactor.closed", offered_a=16.0)
        await until(lambda: uplink.transactions() == {1: "tx-1"}, what="a transaction")
        assert (await csms.call("CP1", call.RequestStopTransaction(transaction_id="tx-1"))).status == "Accepted"
        await csms.wait_for(lambda: events(csms) and events(csms)[-1]["eventType"] == "Ended")
    end = events(csms)[-1]
    assert (end["triggerReason"], end["transactionInfo"]["stoppedReason"]) == ("RemoteStop", "Remote")


@aio
async def test_get_transaction_status_says_what_is_queued_and_what_runs(tmp_path):
    csms = CentralSystem201()
    async with running(csms, tmp_path) as (uplink, link):
        await booted(csms, uplink)
        plug(link)
        start(link)
        link.emit("contactor.closed", offered_a=16.0)
        await until(lambda: uplink.transactions() == {1: "tx-1"}, what="a transaction")
        await until(lambda: uplink.state.count("queue") == 0, what="sent")
        running_tx = await csms.call("CP1", call.GetTransactionStatus(transaction_id="tx-1"))
        other = await csms.call("CP1", call.GetTransactionStatus(transaction_id="tx-9"))
    assert (running_tx.ongoing_indicator, running_tx.messages_in_queue) == (True, False)
    assert other.ongoing_indicator is False


@aio
async def test_an_immediate_reset_ends_the_transaction_delivers_it_then_restarts_the_charger(tmp_path):
    csms = CentralSystem201()
    link = stopping_link()
    with pytest.raises(HardReset):
        async with running(csms, tmp_path, link=link) as (uplink, _):
            await booted(csms, uplink)
            plug(link)
            start(link)
            link.emit("contactor.closed", offered_a=16.0)
            await until(lambda: uplink.transactions(), what="a transaction")
            assert (await csms.call("CP1", call.Reset(type="Immediate"))).status == "Accepted"
            await link.wait_for(lambda: link.sent("restart"))
            await uplink.run()  # returns at once: the reset was taken
    end = events(csms)[-1]
    assert (end["eventType"], end["triggerReason"], end["transactionInfo"]["stoppedReason"]) == (
        "Ended", "ResetCommand", "ImmediateReset")
    assert [p["type"] for _, p in csms.actions("SecurityEventNotification")][-1] == "ResetOrReboot"
    assert link.sent("remote-stop") and link.commands.index(link.sent("remote-stop")[0]) < link.commands.index(
        link.sent("restart")[0])


@aio
async def test_a_reset_on_idle_waits_for_the_transaction_and_the_next_boot_says_why(tmp_path):
    csms = CentralSystem201()
    link = FakeLink()
    with pytest.raises(HardReset):
        async with running(csms, tmp_path, link=link) as (uplink, _):
            await booted(csms, uplink)
            plug(link)
            start(link)
            link.emit("contactor.closed", offered_a=16.0)
            await until(lambda: uplink.transactions(), what="a transaction")
            assert (await csms.call("CP1", call.Reset(type="OnIdle"))).status == "Scheduled"
            await until(lambda: uplink.state.count("queue") == 0, what="sent")
            assert not link.sent("restart") and not link.sent("remote-stop")
            link.emit("session.stopped", session=1, meter_stop_wh=300, reason="local")
            await link.wait_for(lambda: link.sent("restart"))
            await uplink.run()
    again = CentralSystem201()
    async with running(again, tmp_path) as (uplink, _):
        await booted(again, uplink)
    assert again.actions("BootNotification")[0][1]["reason"] == "ScheduledReset"


@aio
async def test_change_availability_of_an_evse_and_of_the_station(tmp_path):
    csms = CentralSystem201()
    link = FakeLink(connectors=(1, 2))
    link.replies["availability"] = lambda req: p.AvailabilityReply(result="Scheduled" if req.connector == 2
                                                                   else "Accepted")
    async with running(csms, tmp_path, link=link) as (uplink, _):
        await booted(csms, uplink)
        one = await csms.call("CP1", call.ChangeAvailability(operational_status="Inoperative", evse={"id": 1}))
        two = await csms.call("CP1", call.ChangeAvailability(operational_status="Inoperative", evse={"id": 2}))
        whole = await csms.call("CP1", call.ChangeAvailability(operational_status="Operative"))
        unknown = await csms.call("CP1", call.ChangeAvailability(operational_status="Operative", evse={"id": 9}))
    assert [one.status, two.status, whole.status, unknown.status] == ["Accepted", "Scheduled", "Accepted", "Rejected"]
    assert [(c.connector, c.operative) for c in link.sent("availability")] == [(1, False), (2, False), (0, True)]


@aio
async def test_unlock_is_refused_during_an_authorized_transaction(tmp_path):
    csms = CentralSystem201()
    link = FakeLink()
    async with running(csms, tmp_path, link=link) as (uplink, _):
        await booted(csms, uplink)
        assert (await csms.call("CP1", call.UnlockConnector(evse_id=1, connector_id=1))).status == "Unlocked"
        assert (await csms.call("CP1", call.UnlockConnector(evse_id=3, connector_id=1))).status == "UnknownConnector"
        plug(link)
        start(link)
        await until(lambda: uplink.authorized(1), what="authorized")
        answer = await csms.call("CP1", call.UnlockConnector(evse_id=1, connector_id=1))
    assert answer.status == "OngoingAuthorizedTransaction" and len(link.sent("unlock")) == 1


@aio
async def test_trigger_message_sends_what_was_asked(tmp_path):
    csms = CentralSystem201()
    async with running(csms, tmp_path) as (uplink, link):
        await booted(csms, uplink)
        plug(link)  # no session: the reading comes from the daemon's status (as evcc reads a meter)
        link.replies["status"] = pr.status(pr.connector(id=1, offered_a=0.0, measured=p.Measured(
            current_a=(0.0,), power_w=10.0, energy_wh=777, stale=False)))
        for message in ("StatusNotification", "MeterValues", "Heartbeat"):
            answer = await csms.call("CP1", call.TriggerMessage(requested_message=message,
                                                                evse={"id": 1, "connector_id": 1}))
            assert answer.status == "Accepted", message
        bad = await csms.call("CP1", call.TriggerMessage(requested_message="SignV2GCertificate"))
        assert bad.status == "NotImplemented"
        await csms.wait_for(lambda: csms.actions("MeterValues") and csms.actions("Heartbeat"))
    (_, meter), = csms.actions("MeterValues")
    assert meter["evseId"] == 1 and meter["meterValue"][0]["sampledValue"][0]["value"] == 777
    assert meter["meterValue"][0]["sampledValue"][0]["context"] == "Trigger"
    assert csms.problems == []


@aio
async def test_trigger_message_refuses_what_it_would_not_send(tmp_path):
    # F06.FR.17: no second boot once accepted; F06.FR.12: a StatusNotification names its EVSE and
    # connector; a TransactionEvent needs a transaction (an Accepted trigger is followed by its message).
    csms = CentralSystem201()
    async with running(csms, tmp_path, link=FakeLink(connectors=(1, 2))) as (uplink, link):
        await booted(csms, uplink)
        answers = {}
        for name, message, evse in (("boot", "BootNotification", None), ("status", "StatusNotification", None),
                                    ("status-evse", "StatusNotification", {"id": 1}),
                                    ("status-connector-2", "StatusNotification", {"id": 1, "connector_id": 2}),
                                    ("tx-evse", "TransactionEvent", {"id": 1}), ("tx", "TransactionEvent", None)):
            answer = await csms.call("CP1", call.TriggerMessage(requested_message=message, evse=evse))
            answers[name] = answer.status
        heartbeat = await csms.call("CP1", call.TriggerMessage(requested_message="Heartbeat"))
        assert heartbeat.status == "Accepted"
        await csms.wait_for(lambda: csms.actions("Heartbeat"))
    assert set(answers.values()) == {"Rejected"}, answers
    assert len(csms.actions("BootNotification")) == 1
    assert csms.problems == []


@aio
async def test_a_triggered_transaction_event_is_sent_without_a_meter_sample(tmp_path):
    csms = CentralSystem201()
    async with running(csms, tmp_path) as (uplink, link):
        await booted(csms, uplink)
        plug(link)
        start(link)
        link.emit("contactor.closed", offered_a=16.0)
        await until(lambda: uplink.transactions() == {1: "tx-1"}, what="a transaction")
        answer = await csms.call("CP1", call.TriggerMessage(requested_message="TransactionEvent", evse={"id": 1}))
        assert answer.status == "Accepted"
        await csms.wait_for(lambda: any(p["triggerReason"] == "Trigger" for p in events(csms)))
    (triggered,) = [p for p in events(csms) if p["triggerReason"] == "Trigger"]
    assert triggered["eventType"] == "Updated" and triggered["transactionInfo"]["transactionId"] == "tx-1"
    assert csms.problems == []


@aio
async def test_the_local_list_authorizes_offline_and_the_cache_clears(tmp_path):
    csms = CentralSystem201()
    port = await csms.start()
    async with running(csms, tmp_path, port=port) as (uplink, link):
        await booted(csms, uplink)
        entry = {"id_token": {"id_token": "0A0B0C0D", "type": "ISO14443"}, "id_token_info": {"status": "Accepted"}}
        answer = await csms.call("CP1", call.SendLocalList(version_number=3, update_type="Full",
                                                            local_authorization_list=[entry]))
        assert answer.status == "Accepted"
        assert (await csms.call("CP1", call.GetLocalListVersion())).version_number == 3
        stale = await csms.call("CP1", call.SendLocalList(version_number=2, update_type="Differential"))
        assert stale.status == "VersionMismatch"
        assert (await csms.call("CP1", call.ClearCache())).status == "Accepted"
        await csms.stop()
        await until(lambda: not uplink.booted, what="offline")
        await link.wait_for(lambda: link.authorizer is not None)
        reply = await link.authorizer(p.AuthorizeRequest(authorize=1, id_tag="0A0B0C0D", connector=1))
        unknown = await link.authorizer(p.AuthorizeRequest(authorize=2, id_tag="DEADBEEF", connector=1))
    assert reply.result == "accept" and unknown.result == "unknown"


@aio
async def test_reservations_go_to_the_daemon(tmp_path):
    csms = CentralSystem201()
    link = FakeLink()
    async with running(csms, tmp_path, link=link) as (uplink, _):
        await booted(csms, uplink)
        answer = await csms.call("CP1", call.ReserveNow(id=5, expiry_date_time="2030-01-01T00:00:00Z",
                                                        id_token={"id_token": "04A1B2C3", "type": "ISO14443"}))
        assert answer.status == "Accepted"
        assert (await csms.call("CP1", call.CancelReservation(reservation_id=5))).status == "Accepted"
        transfer = await csms.call("CP1", call.DataTransfer(vendor_id="com.example"))
    (reserve,) = link.sent("reserve")
    assert (reserve.connector, reserve.id_tag, reserve.reservation_id) == (0, "04A1B2C3", 5)
    assert transfer.status == "UnknownVendorId"


@aio
async def test_cost_updated_is_in_the_uplinks_status_for_the_daemon_while_its_transaction_runs(tmp_path):
    csms = CentralSystem201()
    async with running(csms, tmp_path) as (uplink, link):
        await booted(csms, uplink)
        plug(link)
        start(link)
        link.emit("contactor.closed", offered_a=16.0)
        await until(lambda: uplink.transactions() == {1: "tx-1"}, what="a transaction")
        await csms.call("CP1", call.CostUpdated(total_cost=3.25, transaction_id="tx-1"))
        await csms.call("CP1", call.CostUpdated(total_cost=9.0, transaction_id="tx-404"))
        # what the core's status report tells the daemon (evsed status, the web page)
        assert uplink.status().costs == {"1": 3.25}
        link.emit("session.stopped", session=1, meter_stop_wh=300, reason="local")
        await until(lambda: uplink.status().costs == {}, what="the cost gone with its transaction")
