"""The page's records end at the session's final reading (issue 25: every place that reports a
session's energy gives the same figure): the web service on a running daemon (its real control
socket, its real sessions.db), a session whose final reading, taken after the contactor opens, is
above the last sample taken while charging."""

from __future__ import annotations

import asyncio
import csv
import io

from aiohttp import ClientSession

from evsed import config
from evsed import protocol as p
from evsed.store.sessions import Store
from tests.test_daemon import ask, until, write_config
from tests.test_web_controls import WEB, web_on_daemon


def test_the_pages_sessions_and_csv_give_the_stored_final_energy_not_the_last_sample(tmp_path):
    cfg = config.load(write_config(tmp_path, "[timing]\nmeter_interval_s = 2\n" + WEB))

    async def main():
        async with web_on_daemon(cfg) as (daemon, service):
            ctrl, bench = daemon.connectors[1], daemon.world.connector(1)
            await ask(cfg, p.Plug())
            await ask(cfg, p.Tap(card="04A1B2C3"))
            await until(lambda: ctrl.last_reading is not None and ctrl.last_reading.power_total_w > 0, 10)
            sample = ctrl.last_reading
            await until(lambda: ctrl.last_reading is not sample, 10)  # a fresh reading: 2 s until the next

            def drawn_since_the_last_reading() -> float:
                bench.integrate()
                return bench.energy_wh_exact - ctrl.last_reading.energy_import_wh
            await until(lambda: drawn_since_the_last_reading() >= 2, 10)
            last_sample_wh = ctrl.last_reading.energy_import_wh - ctrl.session.meter_start_wh
            await ask(cfg, p.Unplug())
            db = cfg.store.state_dir / "sessions.db"
            await until(lambda: any(r["stopped_at"] for r in Store(db).sessions()), 15)
            async with ClientSession(base_url=service.url) as anonymous:
                async with anonymous.get("/api/sessions") as r:
                    assert r.status == 200
                    (shown,) = (await r.json())["sessions"]
                async with anonymous.get("/sessions.csv") as r:
                    (row_csv,) = list(csv.DictReader(io.StringIO(await r.text())))
            return last_sample_wh, shown, row_csv

    last_sample_wh, shown, row_csv = asyncio.run(main())
    (stored,) = Store(cfg.store.state_dir / "sessions.db").sessions()
    assert stored["energy_wh"] > last_sample_wh  # the final reading, not the last sample while charging
    assert shown["energy_wh"] == stored["energy_wh"]
    energy_column = next(k for k in row_csv if k.startswith("energy"))
    assert float(row_csv[energy_column]) in (stored["energy_wh"], stored["energy_wh"] / 1000)
