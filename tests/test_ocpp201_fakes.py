"""A 2.0.1 Uplink on a loopback 2.0.1 CSMS (simulator/csms201.py) over the fake daemon Link of the
1.6 tests; and a check that the CSMS itself holds a station to the transaction rules."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from evsed.uplink.settings import Settings
from evsed.uplink.v201.messages import unique_ids
from evsed.uplink.v201.uplink import Uplink
from simulator.csms201 import CentralSystem201
from test_ocpp_fakes import FakeLink, settings_for


@contextlib.asynccontextmanager
async def running(csms: CentralSystem201, tmp_path: Path, link: FakeLink | None = None, variables=None,
                  port: int | None = None, **overrides: Any):
    """A 2.0.1 Uplink on a started CSMS; yields (uplink, link); stops both after. variables:
    {"Component/Variable[:instance]": value} stored before it starts, as a CSMS's SetVariables left them."""
    import asyncio

    if csms.server is None:
        port = await csms.start(port=port or 0)
    else:
        port = csms.server.sockets[0].getsockname()[1]
    link = link or FakeLink()
    settings: Settings = settings_for(port, tmp_path / "ocpp.sqlite", version="2.0.1", **overrides)
    if variables:
        from evsed.uplink.state import State
        state = State(settings.state_file)
        for key, value in variables.items():
            state.set_key(key, value)
        state.close()
    uplink = Uplink(settings, link, new_id=unique_ids())
    task = asyncio.create_task(uplink.run())
    try:
        yield uplink, link
    finally:
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=5)
        assert done, "the uplink did not stop when cancelled"
        uplink.close()
        await csms.stop()


def test_the_csms_holds_a_station_to_seq_no_and_event_order():
    csms = CentralSystem201()
    started = {"eventType": "Started", "timestamp": "2026-11-28T16:20:00.000Z", "triggerReason": "Authorized",
               "seqNo": 0, "transactionInfo": {"transactionId": "t1"}}
    csms.check("TransactionEvent", started)
    csms.check("TransactionEvent", {**started, "eventType": "Updated", "seqNo": 2})
    csms.check("TransactionEvent", {**started, "eventType": "Ended", "seqNo": 2})
    csms.check("TransactionEvent", {**started, "eventType": "Updated", "seqNo": 3})
    csms.check("StatusNotification", {"timestamp": "x", "connectorStatus": "Sleeping", "evseId": 1, "connectorId": 1})
    assert len(csms.problems) == 3, csms.problems
