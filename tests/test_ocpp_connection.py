"""The uplink's connection: ocpp1.6 websocket, identity in the path, BootNotification rules,
Heartbeat, StatusNotification after boot, reconnect, basic auth."""

from __future__ import annotations

from simulator.csms import CentralSystem
from test_ocpp_fakes import FakeLink, aio, booted, running, until


@aio
async def test_boots_with_identity_in_the_path_and_the_ocpp16_subprotocol(tmp_path):
    csms = CentralSystem()
    async with running(csms, tmp_path) as (uplink, link):
        await booted(csms)
        assert list(csms.stations) == ["CP1"]
        assert csms.stations["CP1"]._connection.subprotocol == "ocpp1.6"
        (_, boot), = csms.actions("BootNotification")
        assert boot["chargePointVendor"] == "evsed" and boot["chargePointModel"] == "evsed"


@aio
async def test_nothing_but_boot_is_sent_until_accepted_and_boot_is_retried_at_the_interval(tmp_path):
    csms = CentralSystem(boot=[("Pending", 1), ("Rejected", 1)])
    link = FakeLink()
    link.emit("connector.status", connector=1, status="Available")
    async with running(csms, tmp_path, link=link) as (uplink, link):
        await csms.wait_for(lambda: len(csms.actions("BootNotification")) == 3, timeout=10)
        await csms.wait_for(lambda: csms.actions("StatusNotification"))
        actions = [a for a, _ in csms.actions()]
        assert actions[:3] == ["BootNotification"] * 3
        assert "StatusNotification" in actions[3:]


@aio
async def test_status_of_every_connector_incl_connector_0_after_boot_with_error_codes(tmp_path):
    link = FakeLink(connectors=(1, 2))
    link.emit("connector.status", connector=0, status="Available")
    link.emit("fault.raised", connector=1, fault="rcd", lockout=False, detail="rcd tripped")
    link.emit("connector.status", connector=1, status="Faulted", reason="rcd")
    link.emit("connector.status", connector=2, status="Preparing")
    csms = CentralSystem()
    async with running(csms, tmp_path, link=link):
        await csms.wait_for(lambda: {p["connectorId"] for _, p in csms.actions("StatusNotification")} == {0, 1, 2})
        by_connector = {p["connectorId"]: p for _, p in csms.actions("StatusNotification")}
        assert by_connector[1]["errorCode"] == "GroundFailure" and by_connector[1]["status"] == "Faulted"
        assert by_connector[1]["info"] == "rcd tripped"
        assert by_connector[2]["status"] == "Preparing"
        assert all(p["timestamp"].endswith("Z") and len(p["timestamp"]) <= 24 for _, p in csms.actions("StatusNotification"))


@aio
async def test_heartbeat_follows_the_interval_the_csms_gives(tmp_path):
    csms = CentralSystem(boot=[("Accepted", 1)])
    async with running(csms, tmp_path) as (uplink, _):
        await csms.wait_for(lambda: len(csms.actions("Heartbeat")) >= 2, timeout=5)
        assert uplink.keys.int("HeartbeatInterval") == 1


@aio
async def test_reconnects_and_boots_again_after_the_csms_drops_the_connection(tmp_path):
    csms = CentralSystem()
    async with running(csms, tmp_path) as (uplink, _):
        await booted(csms)
        await csms.drop()
        await csms.wait_for(lambda: csms.connections == 2 and len(csms.actions("BootNotification")) == 2)


@aio
async def test_basic_auth_profile_1_sends_the_password_and_a_wrong_one_gets_no_session(tmp_path):
    csms = CentralSystem(password="secret-password-1")
    async with running(csms, tmp_path, security_profile=1, password="secret-password-1"):
        await booted(csms)
    csms = CentralSystem(password="secret-password-1")
    async with running(csms, tmp_path, security_profile=1, password="wrong-password-99") as (uplink, _):
        await until(lambda: uplink.connection.attempts >= 3, what="three refused attempts")
        assert csms.messages == [] and uplink.connection.connections == 0


def last_error_code(csms: CentralSystem) -> str | None:
    """The errorCode of the newest StatusNotification; None before the first (the predicate is
    checked at every message, the BootNotification's included)."""
    sent = csms.actions("StatusNotification")
    return sent[-1][1]["errorCode"] if sent else None


@aio
async def test_a_cleared_fault_sends_the_status_again_with_no_error(tmp_path):
    link = FakeLink()
    link.emit("connector.status", status="Available", reason="")
    csms = CentralSystem()
    async with running(csms, tmp_path, link=link) as (uplink, _):
        await booted(csms, uplink)
        link.emit("fault.raised", fault="overcurrent", lockout=False, detail="drew 20 A of 16")
        await csms.wait_for(lambda: last_error_code(csms) == "OverCurrentFailure")
        link.emit("fault.cleared", faults=["overcurrent"])
        await csms.wait_for(lambda: last_error_code(csms) == "NoError")
        assert [p["status"] for _, p in csms.actions("StatusNotification")] == ["Available"] * 3
