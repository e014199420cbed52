"""The uplink as a link of the authorizer chain: Authorize online, the local list (full and
differential, persisted), the cache, and the offline rules of OCPP 1.6."""

from __future__ import annotations

from dataclasses import replace

from ocpp.v16 import call

from evsed import protocol as p
from simulator.csms import CentralSystem
from test_ocpp_fakes import FakeLink, aio, booted, running, until

ASK = p.AuthorizeRequest(authorize=1, id_tag="04A1B2C3", connector=1)


async def offline(csms: CentralSystem, uplink) -> None:
    await csms.stop()
    await until(lambda: not uplink.booted, what="offline")


@aio
async def test_authorize_online_accepts_and_rejects_as_the_csms_says(tmp_path):
    csms = CentralSystem(id_tags={"04A1B2C3": "Accepted", "0BAD": "Blocked"})
    async with running(csms, tmp_path) as (uplink, link):
        await booted(csms, uplink)
        await until(lambda: link.authorizer is not None)
        assert (await link.authorizer(ASK)).result == "accept"
        refused = await link.authorizer(replace(ASK, id_tag="0BAD"))
        assert refused.result == "reject" and "Blocked" in refused.reason
        assert [payload["idTag"] for _, payload in csms.actions("Authorize")] == ["04A1B2C3", "0BAD"]


@aio
async def test_the_cache_answers_offline_and_keeps_expiry_and_parent(tmp_path):
    info = {"status": "Accepted", "expiryDate": "2099-01-01T00:00:00.000Z", "parentIdTag": "FLEET"}
    csms = CentralSystem(id_tags={"04A1B2C3": info})
    async with running(csms, tmp_path) as (uplink, link):
        await booted(csms, uplink)
        await until(lambda: link.authorizer is not None)
        await link.authorizer(ASK)
        await offline(csms, uplink)
        reply = await link.authorizer(ASK)
        assert reply == p.Authorized(authorize=1, result="accept", reason="cache (offline)",
                                     valid_until="2099-01-01T00:00:00.000Z", parent_id_tag="FLEET")


@aio
async def test_an_expired_cache_entry_is_refused_offline(tmp_path):
    csms = CentralSystem(id_tags={"04A1B2C3": {"status": "Accepted", "expiryDate": "2001-01-01T00:00:00Z"}})
    async with running(csms, tmp_path) as (uplink, link):
        await booted(csms, uplink)
        await until(lambda: link.authorizer is not None)
        await link.authorizer(ASK)
        await offline(csms, uplink)
        reply = await link.authorizer(ASK)
        assert reply.result == "reject" and "Expired" in reply.reason


@aio
async def test_cache_disabled_leaves_unknown_ids_to_the_daemon_offline(tmp_path):
    csms = CentralSystem()
    async with running(csms, tmp_path, keys={"AuthorizationCacheEnabled": "false"}) as (uplink, link):
        await booted(csms, uplink)
        await until(lambda: link.authorizer is not None)
        await link.authorizer(ASK)
        await offline(csms, uplink)
        assert (await link.authorizer(ASK)).result == "unknown"


@aio
async def test_allow_offline_tx_for_unknown_id_accepts_offline(tmp_path):
    csms = CentralSystem()
    async with running(csms, tmp_path, keys={"AllowOfflineTxForUnknownId": "true"}) as (uplink, link):
        await booted(csms, uplink)
        await until(lambda: link.authorizer is not None)
        await offline(csms, uplink)
        assert (await link.authorizer(ASK)).result == "accept"


@aio
async def test_local_list_full_and_differential_with_versions_persisted(tmp_path):
    csms = CentralSystem()
    entry = {"idTag": "04A1B2C3", "idTagInfo": {"status": "Accepted", "parentIdTag": "FLEET"}}
    async with running(csms, tmp_path) as (uplink, link):
        await booted(csms, uplink)
        full = await csms.call("CP1", call.SendLocalList(list_version=5, update_type="Full",
                                                         local_authorization_list=[entry]))
        assert full.status == "Accepted"
        assert (await csms.call("CP1", call.GetLocalListVersion())).list_version == 5
        stale = await csms.call("CP1", call.SendLocalList(list_version=5, update_type="Differential",
                                                          local_authorization_list=[]))
        assert stale.status == "VersionMismatch"
        await offline(csms, uplink)
        assert (await link.authorizer(ASK)).parent_id_tag == "FLEET"
    csms = CentralSystem()
    async with running(csms, tmp_path) as (uplink, link):
        await booted(csms, uplink)
        assert (await csms.call("CP1", call.GetLocalListVersion())).list_version == 5
        removed = await csms.call("CP1", call.SendLocalList(
            list_version=6, update_type="Differential", local_authorization_list=[{"idTag": "04A1B2C3"}]))
        assert removed.status == "Accepted"
        assert uplink.state.auth_entry("local_list", "04A1B2C3") is None


@aio
async def test_local_pre_authorize_answers_from_the_list_without_asking_the_csms(tmp_path):
    csms = CentralSystem()
    async with running(csms, tmp_path, keys={"LocalPreAuthorize": "true"}) as (uplink, link):
        await booted(csms, uplink)
        await csms.call("CP1", call.SendLocalList(list_version=1, update_type="Full", local_authorization_list=[
            {"idTag": "04A1B2C3", "idTagInfo": {"status": "Accepted"}}]))
        await until(lambda: link.authorizer is not None)
        assert (await link.authorizer(ASK)).reason == "local list"
        assert csms.actions("Authorize") == []


@aio
async def test_clear_cache_empties_the_cache(tmp_path):
    csms = CentralSystem()
    async with running(csms, tmp_path) as (uplink, link):
        await booted(csms, uplink)
        await until(lambda: link.authorizer is not None)
        await link.authorizer(ASK)
        assert uplink.state.count("cache") == 1
        assert (await csms.call("CP1", call.ClearCache())).status == "Accepted"
        assert uplink.state.count("cache") == 0


@aio
async def test_an_invalid_id_answered_to_start_transaction_stops_the_session(tmp_path):
    csms = CentralSystem(id_tags={"0BAD": "Invalid"})
    link = FakeLink()
    async with running(csms, tmp_path, link=link) as (uplink, _):
        await booted(csms, uplink)
        link.emit("session.started", session=9, id_tag="0BAD", meter_start_wh=0,
                  started_at="2026-11-28T16:20:00Z")
        await link.wait_for(lambda: link.sent("remote-stop"))
        assert link.sent("remote-stop") == [p.RemoteStop(connector=1, reason="deauthorized")]


@aio
async def test_an_id_tag_longer_than_20_characters_is_refused(tmp_path):
    csms = CentralSystem()
    async with running(csms, tmp_path) as (uplink, link):
        await until(lambda: link.authorizer is not None)
        assert (await link.authorizer(replace(ASK, id_tag="X" * 21))).result == "reject"
