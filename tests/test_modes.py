"""The solar modes need a site meter: without one the config refuses them wherever a mode is set, the
`mode` command refuses them with the reason (the CLI, the page and MQTT all send it), and the status
says which modes the charger can follow, so each of them offers only those."""

import asyncio
import datetime as dt
import subprocess
import sys
from zoneinfo import ZoneInfo

import pytest

from evsed import config
from evsed import protocol as p
from evsed.web.view import page_view
from protocol_records import status as status_of
from test_daemon import ROOT, ask, running, write_config

SITE_METER = '[site.meter]\nbackend = "sim"\n'
BASE = '''
[charger]
timezone = "Europe/Berlin"
{charger}
[[connector]]
[connector.pilot]
backend = "sim"
[connector.contactor]
backend = "sim"
'''


def error(charger: str = "", extra: str = "") -> str:
    with pytest.raises(config.ConfigError) as exc:
        config.parse(BASE.format(charger=charger) + extra, "evsed.toml")
    return str(exc.value)


def test_a_solar_charger_mode_without_a_site_meter_is_refused_at_its_line():
    assert error('mode = "solar"') == ("evsed.toml:4: [charger] mode: solar needs a site meter ([site.meter]) "
                                       "to measure the surplus")


@pytest.mark.parametrize("table", [
    '[[group]]\nname = "staff"\nmode = "min+solar"\n',
    '[[window]]\nstart = "11:00"\nend = "15:00"\naction = "mode"\nmode = "solar"\n',
])
def test_a_group_or_window_with_a_solar_mode_needs_a_site_meter_too(table):
    assert "mode: " in error(extra=table) and "needs a site meter" in error(extra=table)
    assert config.parse(BASE.format(charger="") + table + SITE_METER, "evsed.toml")


def test_with_a_site_meter_every_mode_may_be_configured():
    cfg = config.parse(BASE.format(charger='mode = "min+solar"') + SITE_METER, "evsed.toml")
    assert cfg.charger.mode == "min+solar"


def test_the_mode_command_refuses_solar_without_a_site_meter_and_status_offers_only_fast(tmp_path):
    cfg = config.load(write_config(tmp_path))

    async def scenario():
        async with running(cfg):
            refused = await ask(cfg, p.SetMode(mode="solar"))
            status = await ask(cfg, p.Status())
            accepted = await ask(cfg, p.SetMode(mode="fast"))
        return refused, status, accepted

    refused, status, accepted = asyncio.run(scenario())
    assert isinstance(refused, p.Failure) and refused.error == (
        "mode solar needs a site meter ([site.meter]) to measure the surplus; this charger can follow: fast")
    assert status.mode == "fast" and status.modes == ("fast",)
    assert accepted == p.ModeReply(mode="fast")


def test_with_a_site_meter_the_solar_modes_are_offered_and_taken(tmp_path):
    cfg = config.load(write_config(tmp_path, SITE_METER))

    async def scenario():
        async with running(cfg):
            reply = await ask(cfg, p.SetMode(mode="min+solar"))
            return reply, await ask(cfg, p.Status())

    reply, status = asyncio.run(scenario())
    assert reply == p.ModeReply(mode="min+solar")
    assert status.modes == ("fast", "solar", "min+solar") and status.mode == "min+solar"


def test_evsed_mode_solar_says_why_it_cannot(tmp_path):
    path = write_config(tmp_path)
    cfg = config.load(path)

    async def scenario():
        async with running(cfg):
            return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "evsed", "mode", "solar",
                                                            "-c", str(path)],
                                           capture_output=True, text=True, cwd=ROOT)

    done = asyncio.run(scenario())
    assert done.returncode == 1
    assert "solar needs a site meter ([site.meter])" in done.stderr


def test_the_page_offers_the_modes_the_status_names():
    hello = p.HelloReply(version=1, charger="x", connectors=(1,), phases=3, voltage_v=230, acked=0, last_seq=0)
    view = page_view(hello, status_of(modes=("fast",)), {}, dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
                     ZoneInfo("UTC"), show_tags=False, online=True)
    assert view["modes"] == ["fast"]
