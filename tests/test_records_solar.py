"""Solar accounting per session (issue 22, Records): the energy a session took from solar surplus
and from the grid, integrated sample by sample in the shell by the site meter, stored with the
session, in `evsed report` and in the export."""

import datetime as dt

from evsed import config as configmod
from evsed.shell.charger import Charger
from evsed.shell.devices import ConnectorDevices, Devices
from evsed.store import reports
from evsed.store.sessions import InlineWriter, Store
from hal import MeterReading
from test_connector import CONFIG, Clock, Contactor, Meter, Pilot, charge, reading

SITE = '\n[site.meter]\nbackend = "sim"\n'
EV_W = 16.0 * 230 * 3  # what reading() says the EV draws: 11040 W


def make(tmp_path, clock, extra=SITE):
    store = Store(tmp_path / "s.db")
    pilot, contactor = Pilot(), Contactor()
    cfg = configmod.parse(CONFIG % 60.0 + extra, tmp_path / "evsed.toml")
    devices = Devices(connectors={1: ConnectorDevices(pilot, contactor, meter=Meter())})
    charger = Charger(cfg, devices, clock=clock, wallclock=lambda: dt.datetime(2026, 1, 5, 9, tzinfo=dt.timezone.utc),
                      writer=InlineWriter(store), first_session_id=1)
    return charger, charger.connectors[1], pilot, store


def site(power_w):
    return MeterReading(energy_import_wh=0, power_total_w=power_w, current_a=(0.0, 0.0, 0.0))


def a_sunny_then_cloudy_session(tmp_path, extra=SITE, site_silent=False):
    """site_silent: the site meter answers only at the start (its reading is stale by the next)."""
    clock = Clock()
    charger, ctrl, pilot, store = make(tmp_path, clock, extra)
    charge(ctrl, pilot, clock)  # starts at 1000 Wh
    clock.now += 1
    ctrl.meter_sampled(reading(1000))  # drawing 11040 W from here
    if extra:  # the site exports 2 kW on top: all the EV's power is surplus
        charger.site_sampled(site(-2000.0))
    clock.now += 360
    if extra and not site_silent:  # the site meter reads on, as it does every meter period
        charger.site_sampled(site(-2000.0))
    ctrl.meter_sampled(reading(2104))  # 1104 Wh in the sun
    if extra and not site_silent:  # clouds: the grid gives 3040 W of the 11040
        charger.site_sampled(site(EV_W - 8000.0))
    clock.now += 360
    if extra and not site_silent:
        charger.site_sampled(site(EV_W - 8000.0))
    ctrl.meter_sampled(reading(3208))  # 1104 Wh more, 304 of them from the grid
    pilot.high_v = 12.0
    ctrl.poll_inputs(ctrl.read_pilot())
    ctrl.meter_sampled(reading(3208, 0.0))  # the final reading
    return store


def test_a_sessions_energy_from_solar_surplus_and_the_grid_is_stored_with_it(tmp_path):
    store = a_sunny_then_cloudy_session(tmp_path)
    (row,) = store.sessions()
    assert (row["energy_wh"], row["solar_wh"], row["grid_wh"]) == (2208, 1904, 304)


def test_the_report_by_card_group_and_day_and_the_export_carry_the_split(tmp_path):
    store = a_sunny_then_cloudy_session(tmp_path)
    utc = dt.timezone.utc
    for by in ("card", "group", "day"):
        (total,) = reports.report(store, "2026-01-01T00:00:00+00:00", "2026-02-01T00:00:00+00:00", by, utc)
        assert (total["energy_kwh"], total["solar_kwh"], total["grid_kwh"]) == ("2.208", "1.904", "0.304")
    (row,) = reports.export_sessions(store, None, None, utc)
    exported = dict(zip(reports.SESSION_EXPORT, row))
    assert (exported["solar_wh"], exported["grid_wh"], exported["meter_rebaselined"]) == (1904, 304, 0)


def test_without_a_site_meter_the_split_is_unknown_not_zero(tmp_path):
    store = a_sunny_then_cloudy_session(tmp_path, extra="")
    (row,) = store.sessions()
    assert row["energy_wh"] == 2208 and (row["solar_wh"], row["grid_wh"]) == (None, None)


def test_a_stale_site_reading_counts_the_energy_as_grid(tmp_path):
    store = a_sunny_then_cloudy_session(tmp_path, site_silent=True)  # the sunny reading is 360 s old
    (row,) = store.sessions()
    assert (row["energy_wh"], row["solar_wh"], row["grid_wh"]) == (2208, 0, 2208)
