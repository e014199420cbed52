"""The uplink answers the CSMS from the daemon's real replies: a daemon on the simulator, the
services' Link over its control socket, an Uplink on a CSMS on loopback. No reply is faked here."""

from __future__ import annotations

import asyncio

from ocpp.v16 import call

from evsed import config
from evsed.services.link import Link
from simulator.csms import CentralSystem
from test_daemon import charging, write_config
from test_ocpp_fakes import aio, booted
from test_ocpp_fakes import running as uplink_on


@aio
async def test_remote_start_is_rejected_when_the_daemon_refuses_it(tmp_path):
    cfg = config.load(write_config(tmp_path))
    async with charging(cfg) as daemon:  # Alice charges on connector 1: the daemon refuses another start
        link = await Link.connect(cfg.store.runtime_dir, "ocpp")
        csms = CentralSystem()
        async with uplink_on(csms, tmp_path, link=link) as (uplink, _):
            await booted(csms, uplink)
            result = await csms.call("CP1", call.RemoteStartTransaction(id_tag="04D4E5F6", connector_id=1))
            session = daemon.connectors[1].session
        await link.close()
    assert result.status == "Rejected"
    assert session is not None and session.id_tag == "04A1B2C3"  # Alice's session runs on, untouched


@aio
async def test_change_availability_is_scheduled_when_a_session_runs(tmp_path):
    cfg = config.load(write_config(tmp_path))
    async with charging(cfg) as daemon:
        link = await Link.connect(cfg.store.runtime_dir, "ocpp")
        csms = CentralSystem()
        async with uplink_on(csms, tmp_path, link=link) as (uplink, _):
            await booted(csms, uplink)
            during = await csms.call("CP1", call.ChangeAvailability(connector_id=0, type="Inoperative"))
            ctrl = daemon.connectors[1]
            charging_on = ctrl.state.contactor_closed
            daemon.world.connector(1).unplug()
            for _ in range(500):  # the daemon's own loop ends the session; bounded, no sleeping
                if ctrl.session is None:
                    break
                await asyncio.sleep(0)
            after = await csms.call("CP1", call.ChangeAvailability(connector_id=1, type="Operative"))
        await link.close()
    assert during.status == "Scheduled" and charging_on  # the session finishes first
    assert after.status == "Accepted"
