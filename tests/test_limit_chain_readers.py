"""One limit chain: the core's offer and binding source are what every reader says, over the real
control socket: `status`, the web page's view, MQTT's published limit and the OCPP uplink's
Current.Offered, with a capping window, the grid operator's cap and load management all active
(and two of them tied: before the chain was one value the web page broke ties by name)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from zoneinfo import ZoneInfo

import pytest

from evsed import config
from evsed import protocol as p
from evsed.mqtt import publish
from evsed.mqtt.topics import Topics
from evsed.services.link import Channel, Link
from evsed.uplink.charger import Charger as UplinkCharger
from evsed.uplink.state import State
from evsed.web.view import page_view
from test_daemon import ask, running, until, write_config

SOURCES = """
[[window]]
start = "00:00"
end = "24:00"
action = "cap"
max_current_a = 6

[site]
breaker_a = 25
[site.meter]
backend = "sim"
[site.input]
backend = "sim"
cap_kw = 4.2
"""
AMS = ZoneInfo("Europe/Amsterdam")


async def as_role(daemon, cfg, role: str) -> Link:
    """A Link with a service's role, over a channel the daemon hands out as `evsed run` does."""
    return await Link.connect(cfg.store.runtime_dir, role, Channel(daemon.server.hand_out(role)))


def test_every_reader_says_the_cores_offer_and_binding_source(tmp_path):
    path = write_config(tmp_path, SOURCES)
    path.write_text(path.read_text().replace('timezone = "Europe/Amsterdam"',
                                             'timezone = "Europe/Amsterdam"\nunsynced_clock = "apply"'))
    cfg = config.load(path)

    async def scenario():
        async with running(cfg) as daemon:
            await ask(cfg, p.SetSite(input=True))  # §14a: 4.2 kW, 6.09 A on three phases
            await ask(cfg, p.Plug())
            await ask(cfg, p.Tap(card="04A1B2C3"))
            ctrl = daemon.connectors[1]
            await until(lambda: ctrl.state.contactor_closed and ctrl.state.limits.get("site") is not None
                        and (ctrl.state.limits["site"].current_a or 0) > 0)
            core = ctrl.chain()
            said = {}
            for role in (p.READ, p.WEB, p.MQTT, p.OCPP):
                link = await as_role(daemon, cfg, role)
                said[role] = await link.command(p.Status())
                if role == p.OCPP:
                    uplink = UplinkCharger(link, State(tmp_path / "ocpp.db"), phases=3, voltage_v=230)
                    said["ocpp_readings"] = await uplink.readings()
                await link.close()
            return core, said

    core, said = asyncio.run(scenario())
    sources = {lim.source for lim in core.limits}
    assert {"window", "site", "external_cap"} <= sources, sources  # several sources active at once
    # load management shares out what the others allow: its 6 A ties the window's, and the chain's
    # rule (the first in CHAIN order among equals) names the window wherever it is read
    ceilings = core.ceilings()
    assert ceilings["window"] == ceilings["site"] == core.current_a == 6.0 and ceilings["external_cap"] > 6.0
    assert core.binding == "window"

    status = said[p.READ].connector(1)
    assert (status.offer_a, status.binding, status.allowed_a) == (core.current_a, core.binding, core.allowed_a)
    assert [(link.source, link.current_a, link.binding) for link in status.limit_chain] == [
        (lim.source, lim.current_a, lim.source == core.binding) for lim in core.limits]

    now = dt.datetime.now(AMS)
    web = page_view(p.HelloReply(version=p.VERSION, charger="evsed-sim", connectors=(1,), phases=3, voltage_v=230,
                                 acked=0, last_seq=0), said[p.WEB], {}, now, AMS, show_tags=False, online=True)
    page = web["connectors"][0]
    assert [e["source"] for e in page["limits"] if e["binding"]] == [core.binding]
    assert page["allowed_a"] == core.allowed_a

    topics = {m.topic: m.payload for m in publish.state_messages(Topics("evsed/sim"), said[p.MQTT], now)}
    limit = json.loads(topics["evsed/sim/connector/1/limit"])
    assert limit["binding"] == core.binding and limit["allowed_a"] == pytest.approx(core.allowed_a, abs=0.01)

    offered = said["ocpp_readings"][1].offered_a  # the uplink's Current.Offered: the PWM's own figure
    assert offered == pytest.approx(core.current_a, abs=0.1)
