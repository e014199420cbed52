"""A silent site meter, on the simulator over the control socket: status marks its last reading
stale, the web page shows no solar view from it, solar assumes no surplus and load management
never raises an offer on it (issues 23 and 25)."""

import asyncio

from evsed import config
from evsed import protocol as p
from evsed.web.view import solar_view
from test_daemon import ask, running, until, write_config

SITE = """
[site]
breaker_a = 25
meter_timeout_s = 1
solar_start_s = 0
[site.meter]
backend = "sim"
"""


def _config(tmp_path, mode: str = "fast"):
    path = write_config(tmp_path, SITE)
    path.write_text(path.read_text().replace('voltage_v = 230', f'voltage_v = 230\nmode = "{mode}"', 1))
    return config.load(path)


async def _status(cfg) -> p.StatusReply:
    return await ask(cfg, p.Status())


async def _until_status(cfg, predicate, timeout_s: float = 10.0) -> p.StatusReply:
    """The first status that satisfies predicate; the timeout only guards against a hang."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        st = await _status(cfg)
        if predicate(st):
            return st
        if loop.time() > deadline:
            raise AssertionError(f"condition not reached: {st}")


def test_a_silent_site_meter_is_stale_in_status_and_the_solar_view_and_solar_stop(tmp_path):
    cfg = _config(tmp_path, "solar")

    async def scenario():
        async with running(cfg) as daemon:
            await ask(cfg, p.SetSite(pv_w=11000.0))  # 16 A of export on three phases
            await ask(cfg, p.Plug())
            await ask(cfg, p.Tap(card="04A1B2C3"))
            await until(lambda: daemon.connectors[1].state.contactor_closed)
            fresh = await _until_status(cfg, lambda st: st.site is not None and not st.site.stale
                                        and (st.connector(1).limits.get("solar") or 0) >= 6)
            await ask(cfg, p.SetSite(meter="silent"))
            silent = await _until_status(cfg, lambda st: st.site is not None and st.site.stale
                                         and st.connector(1).limits.get("solar") == 0)
            await ask(cfg, p.SetSite(meter="ok"))
            back = await _until_status(cfg, lambda st: st.site is not None and not st.site.stale)
            return fresh, silent, back

    fresh, silent, back = asyncio.run(scenario())
    assert solar_view(fresh) is not None
    assert solar_view(silent) is None  # the old import is not shown as now's
    assert "site meter silent" in silent.connector(1).link("solar").detail
    assert solar_view(back) is not None


def test_a_silent_site_meter_never_lets_load_management_start_a_waiting_ev(tmp_path):
    cfg = _config(tmp_path)

    async def scenario():
        async with running(cfg) as daemon:
            await ask(cfg, p.SetSite(l1_a=22.0, l2_a=22.0, l3_a=22.0))  # 2 A of room: under 6 A
            await _until_status(cfg, lambda st: st.site is not None and st.site.current_a[0] == 22.0)
            await ask(cfg, p.Plug())
            await ask(cfg, p.Tap(card="04A1B2C3"))
            waiting = await _until_status(cfg, lambda st: "waiting for room" in _site_detail(st))
            await ask(cfg, p.SetSite(meter="silent"))
            silent = await _until_status(cfg, lambda st: st.site is not None and st.site.stale
                                         and "silent" in _site_detail(st))
            return waiting, silent, daemon.connectors[1].state.contactor_closed

    waiting, silent, closed = asyncio.run(scenario())
    assert waiting.connector(1).limits["site"] == 0.0
    assert silent.connector(1).limits["site"] == 0.0  # fallback_a (6 A) would fit the EV: not offered
    assert silent.connector(1).offered_a == 0.0 and not closed


def _site_detail(st: p.StatusReply) -> str:
    link = st.connector(1).link("site")
    return link.detail if link is not None else ""
