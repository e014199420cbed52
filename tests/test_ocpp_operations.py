"""What the CSMS asks of the charge point: remote start/stop, reset, availability, unlock,
configuration, trigger, data transfer, reservations and diagnostics (firmware: test_ocpp_firmware.py)."""

from __future__ import annotations

import datetime as dt
import gzip
import http.server
import json
import threading

import protocol_records as pr
import pytest
from ocpp.v16 import call

from evsed import protocol as p
from evsed.uplink.connection import HardReset
from simulator.csms import CentralSystem
from test_ocpp_fakes import FakeLink, aio, booted, running, until


def start_session(link: FakeLink, session=1, tag="04A1B2C3", connector=1) -> None:
    link.emit("session.started", connector=connector, session=session, id_tag=tag, meter_start_wh=100,
              started_at="2026-11-28T16:20:00Z")


def stopping_link() -> FakeLink:
    """A link whose daemon ends the session when asked to (as the real one would)."""
    link = FakeLink()

    def remote_stop(req):
        link.emit("session.stopped", connector=req.connector, session=1, id_tag="04A1B2C3",
                  meter_stop_wh=400, energy_wh=300, reason="remote", stopped_at="2026-11-28T17:00:00Z")
        return p.StopReply(connector=req.connector, result="Accepted")
    link.replies["remote-stop"] = remote_stop
    return link


@aio
async def test_remote_start_asks_the_daemon_and_answers_what_it_said(tmp_path):
    csms = CentralSystem()
    async with running(csms, tmp_path) as (uplink, link):
        await booted(csms, uplink)
        result = await csms.call("CP1", call.RemoteStartTransaction(id_tag="04A1B2C3", connector_id=1))
        assert result.status == "Accepted"
        assert link.sent("remote-start") == [p.RemoteStart(connector=1, id_tag="04A1B2C3")]
        link.replies["remote-start"] = p.StartReply(connector=1, result="Rejected", reason="connector in use")
        result = await csms.call("CP1", call.RemoteStartTransaction(id_tag="04A1B2C3", connector_id=1))
        assert result.status == "Rejected"
        result = await csms.call("CP1", call.RemoteStartTransaction(id_tag="04A1B2C3", connector_id=7))
        assert result.status == "Rejected"


@aio
async def test_remote_start_with_authorize_remote_tx_requests_authorizes_first(tmp_path):
    csms = CentralSystem(id_tags={"0BAD": "Blocked"})
    async with running(csms, tmp_path, keys={"AuthorizeRemoteTxRequests": "true"}) as (uplink, link):
        await booted(csms, uplink)
        assert (await csms.call("CP1", call.RemoteStartTransaction(id_tag="0BAD", connector_id=1))).status == "Accepted"
        await csms.wait_for(lambda: csms.actions("Authorize"))
        assert (await csms.call("CP1", call.RemoteStartTransaction(id_tag="04A1B2C3", connector_id=1))).status == "Accepted"
        await link.wait_for(lambda: [c for c in link.sent("remote-start") if not c.check])
        assert [(c.id_tag, c.check) for c in link.sent("remote-start")] == [  # asked first, started once authorized
            ("0BAD", True), ("04A1B2C3", True), ("04A1B2C3", False)]


@aio
async def test_remote_stop_by_transaction_id_and_an_unknown_id_is_rejected(tmp_path):
    csms = CentralSystem()
    link = stopping_link()
    async with running(csms, tmp_path, link=link) as (uplink, _):
        await booted(csms, uplink)
        assert (await csms.call("CP1", call.RemoteStopTransaction(transaction_id=5))).status == "Rejected"
        start_session(link)
        await until(lambda: uplink.state.transaction_id("1") == 1001, what="transaction id")
        assert (await csms.call("CP1", call.RemoteStopTransaction(transaction_id=1001))).status == "Accepted"
        await csms.wait_for(lambda: csms.actions("StopTransaction"))
        assert csms.actions("StopTransaction")[0][1]["reason"] == "Remote"


@aio
async def test_soft_reset_ends_the_session_as_soft_reset_and_boots_again(tmp_path):
    csms = CentralSystem()
    link = stopping_link()
    async with running(csms, tmp_path, link=link) as (uplink, _):
        await booted(csms, uplink)
        start_session(link)
        await csms.wait_for(lambda: csms.actions("StartTransaction"))
        assert (await csms.call("CP1", call.Reset(type="Soft"))).status == "Accepted"
        await csms.wait_for(lambda: len(csms.actions("BootNotification")) == 2)
        await csms.wait_for(lambda: csms.actions("StopTransaction"))
        assert csms.actions("StopTransaction")[0][1]["reason"] == "SoftReset"


@aio
async def test_hard_reset_exits_the_service_for_its_manager_to_restart(tmp_path):
    from test_ocpp_fakes import settings_for
    from evsed.uplink.v16.uplink import Uplink
    import asyncio
    csms = CentralSystem()
    port = await csms.start()
    uplink = Uplink(settings_for(port, tmp_path / "s.sqlite"), FakeLink())
    task = asyncio.create_task(uplink.run())
    await booted(csms, uplink)
    assert (await csms.call("CP1", call.Reset(type="Hard"))).status == "Accepted"
    with pytest.raises(HardReset):
        await asyncio.wait_for(task, 10)
    uplink.close()
    await csms.stop()


@aio
async def test_change_availability_is_scheduled_while_charging(tmp_path):
    csms = CentralSystem()
    async with running(csms, tmp_path) as (uplink, link):
        await booted(csms, uplink)
        link.replies["availability"] = p.AvailabilityReply(result="Scheduled")
        result = await csms.call("CP1", call.ChangeAvailability(connector_id=0, type="Inoperative"))
        assert result.status == "Scheduled"
        assert link.sent("availability") == [p.Availability(connector=0, operative=False)]
        link.replies["availability"] = p.AvailabilityReply(result="Accepted")
        assert (await csms.call("CP1", call.ChangeAvailability(connector_id=1, type="Operative"))).status == "Accepted"
        assert (await csms.call("CP1", call.ChangeAvailability(connector_id=3, type="Operative"))).status == "Rejected"


@aio
async def test_unlock_connector_says_not_supported_when_the_daemon_has_no_lock(tmp_path):
    csms = CentralSystem()
    async with running(csms, tmp_path) as (uplink, link):
        await booted(csms, uplink)
        assert (await csms.call("CP1", call.UnlockConnector(connector_id=1))).status == "Unlocked"
        link.replies["unlock"] = p.UnlockReply(result="NotSupported")
        assert (await csms.call("CP1", call.UnlockConnector(connector_id=1))).status == "NotSupported"
        link.replies["unlock"] = p.Failure(error="lock jammed")
        assert (await csms.call("CP1", call.UnlockConnector(connector_id=1))).status == "UnlockFailed"


@aio
async def test_configuration_keys_read_change_persist_and_unknown(tmp_path):
    csms = CentralSystem()
    async with running(csms, tmp_path) as (uplink, link):
        await booted(csms, uplink)
        got = await csms.call("CP1", call.GetConfiguration(key=["HeartbeatInterval", "NumberOfConnectors", "Nope",
                                                                "AuthorizationKey"]))
        assert {k["key"]: (k["readonly"], k["value"]) for k in got.configuration_key} == {
            "HeartbeatInterval": (False, "300"), "NumberOfConnectors": (True, "1")}
        assert got.unknown_key == ["Nope", "AuthorizationKey"]
        change = lambda key, value: csms.call("CP1", call.ChangeConfiguration(key=key, value=value))  # noqa: E731
        assert (await change("MeterValueSampleInterval", "15")).status == "Accepted"
        assert (await change("NumberOfConnectors", "4")).status == "Rejected"
        assert (await change("HeartbeatInterval", "soon")).status == "Rejected"
        assert (await change("MeterValuesSampledData", "Energy.Active.Import.Register,SoC")).status == "Rejected"
        assert (await change("NoSuchKey", "1")).status == "NotSupported"
        assert (await change("WebSocketPingInterval", "30")).status == "RebootRequired"
        everything = await csms.call("CP1", call.GetConfiguration())
        assert "AuthorizationKey" not in {k["key"] for k in everything.configuration_key}
        assert len(everything.configuration_key) >= 30
    csms = CentralSystem()
    async with running(csms, tmp_path) as (uplink, link):
        await booted(csms, uplink)
        got = await csms.call("CP1", call.GetConfiguration(key=["MeterValueSampleInterval"]))
        assert got.configuration_key[0]["value"] == "15"


@aio
async def test_authorization_key_is_written_0600_and_never_logged(tmp_path):
    import structlog
    secret = tmp_path / "password"
    secret.write_text("old-password-12345\n")
    secret.chmod(0o600)
    csms = CentralSystem(password="old-password-12345")
    with structlog.testing.capture_logs() as logs:
        async with running(csms, tmp_path, security_profile=1, password="old-password-12345",
                           password_file=secret) as (uplink, link):
            await booted(csms, uplink)
            result = await csms.call("CP1", call.ChangeConfiguration(key="AuthorizationKey",
                                                                     value="new-password-0123456789"))
            assert result.status == "Accepted"
            csms.password = "new-password-0123456789"
            await csms.drop()
            await csms.wait_for(lambda: len(csms.actions("BootNotification")) == 2)
    assert secret.read_text().strip() == "new-password-0123456789" and secret.stat().st_mode & 0o777 == 0o600
    assert "password-" not in repr(logs)


@aio
async def test_every_trigger_message_is_answered_and_sent(tmp_path):
    csms = CentralSystem()
    link = FakeLink()
    link.emit("connector.status", status="Available")
    measured = p.Measured(current_a=(0.0,), power_w=0.0, energy_wh=5, stale=False)
    link.replies["status"] = pr.status(pr.connector(id=1, measured=measured))
    async with running(csms, tmp_path, link=link) as (uplink, _):
        await booted(csms, uplink)
        for message in ("BootNotification", "DiagnosticsStatusNotification", "FirmwareStatusNotification",
                        "Heartbeat", "MeterValues", "StatusNotification"):
            before = len(csms.actions(message))
            result = await csms.call("CP1", call.TriggerMessage(requested_message=message, connector_id=1))
            assert result.status == "Accepted"
            await csms.wait_for(lambda: len(csms.actions(message)) > before)
        assert (await csms.call("CP1", call.TriggerMessage(requested_message="Heartbeat", connector_id=9))).status == "Rejected"


@aio
async def test_data_transfer_is_answered_unknown_vendor(tmp_path):
    csms = CentralSystem()
    async with running(csms, tmp_path) as (uplink, _):
        await booted(csms, uplink)
        assert (await csms.call("CP1", call.DataTransfer(vendor_id="acme"))).status == "UnknownVendorId"


@aio
async def test_reservations_reach_the_daemon_and_start_transaction_carries_the_id(tmp_path):
    csms = CentralSystem()
    async with running(csms, tmp_path) as (uplink, link):
        await booted(csms, uplink)
        link.replies["reserve"] = p.ReserveReply(connector=1, result="Accepted")
        result = await csms.call("CP1", call.ReserveNow(connector_id=0, expiry_date="2026-11-28T18:00:00+01:00",
                                                        id_tag="04A1B2C3", reservation_id=42))
        assert result.status == "Accepted"
        until = dt.datetime(2026, 11, 28, 17, tzinfo=dt.timezone.utc)
        assert link.sent("reserve") == [p.Reserve(connector=0, id_tag="04A1B2C3", until=until, reservation_id=42)]
        link.replies["reserve"] = p.ReserveReply(result="Occupied")
        assert (await csms.call("CP1", call.ReserveNow(connector_id=1, expiry_date="2026-11-28T18:00:00Z",
                                                       id_tag="X", reservation_id=43))).status == "Occupied"
        link.replies["cancel-reservation"] = p.CancelReply(result="Rejected")
        assert (await csms.call("CP1", call.CancelReservation(reservation_id=43))).status == "Rejected"
        start_session(link)
        await csms.wait_for(lambda: csms.actions("StartTransaction"))
        assert csms.actions("StartTransaction")[0][1]["reservationId"] == 42


class _Upload(http.server.BaseHTTPRequestHandler):
    received: dict = {}

    def do_PUT(self):
        self.received[self.path] = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(201)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    server = http.server.HTTPServer(("127.0.0.1", 0), _Upload)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_get_diagnostics_uploads_a_bundle_by_http_without_the_password(tmp_path, http_server):
    @aio
    async def scenario():
        csms = CentralSystem()
        async with running(csms, tmp_path, security_profile=0, password="do-not-leak-this") as (uplink, _):
            await booted(csms, uplink)
            result = await csms.call("CP1", call.GetDiagnostics(location=http_server + "/upload/"))
            assert result.file_name.startswith("diagnostics-CP1-")
            await csms.wait_for(lambda: [p["status"] for _, p in csms.actions("DiagnosticsStatusNotification")]
                                == ["Uploading", "Uploaded"])
            return result.file_name
    name = scenario()
    body = _Upload.received["/upload/" + name]
    bundle = json.loads(gzip.decompress(body))
    assert bundle["identity"] == "CP1" and "do-not-leak-this" not in json.dumps(bundle)
