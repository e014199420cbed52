"""Tariffs: a session's cost and revenue, split exactly at window boundaries and DST changes."""

import datetime as dt
from decimal import Decimal as D

import pytest
from hypothesis import given, strategies as st

from evsed.core.tariff import (DriverPrice, EnergyRate, Pricing, Sample, Tariff, Window, charge,
                               format_money)

UTC = dt.timezone.utc
ALL = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS = ALL[:5]


def at(day, hh, mm=0):
    return dt.datetime(2026, 10, day, hh, mm, tzinfo=UTC)


def berlin_tariff(**price) -> Pricing:
    tariff = Tariff(
        name="home-2026", currency="EUR", decimals=2, energy_per_kwh=D("0.30"),
        energy=(EnergyRate("night", Window.parse(ALL, "22:00", "06:00"), D("0.18")),
                EnergyRate("peak", Window.parse(WEEKDAYS, "17:00", "20:00"), D("0.45"))),
        prices={"guests": DriverPrice("guests", per_kwh=D("0.37"), per_hour=D("0.25"), per_session=D("0.50"),
                                      idle_per_hour=D("4.00"), idle_grace_s=1800, idle_cap=D("3.00"), **price)})
    return tariff.pricing("guests", "Europe/Berlin")


def test_hand_worked_session_across_a_boundary_and_the_dst_night_with_idle_time():
    # Europe/Berlin; summer time ends Sun 2026-10-25 at 03:00 CEST -> 02:00 CET (01:00 UTC).
    # Host: night 22:00-06:00 every day 0.18 EUR/kWh, otherwise 0.30 (the weekday peak does not
    # apply on a weekend). Guests pay 0.37/kWh, 0.25 per hour of charging, 0.50 per session,
    # idle 4.00/h after 30 min of grace, at most 3.00.
    #
    #   reading   UTC          local            meter Wh   power W
    #   start     Sat 19:30    21:30 CEST Sat   10 000
    #   S1        Sat 20:30    22:30 CEST       17 000     7000   7 000 Wh, 22:00 halves it:
    #                                                                3 500 day + 3 500 night
    #   S2        Sun 00:30    02:30 CEST       38 000     5000  21 000 Wh night
    #   S3        Sun 01:30    02:30 CET        41 000     3000   3 000 Wh night (the repeated hour)
    #   S4        Sun 05:30    06:30 CET        44 500      900   3 500 Wh over 4 h; 06:00 CET is
    #                                                                05:00 UTC: 3.5 h night, 0.5 h day
    #                                                                = 3 062.5 night + 437.5 day
    #   S5        Sun 06:00    07:00 CET        44 500        0   the EV stopped drawing at S4
    #   stop      Sun 07:00    08:00 CET        44 500
    #
    # Energy 34 500 Wh. Day 3 500 + 437.5 = 3 937.5 Wh; night 3 500 + 21 000 + 3 000 + 3 062.5
    # = 30 562.5 Wh.
    # Cost: 3.9375 kWh x 0.30 = 1.18125; 30.5625 kWh x 0.18 = 5.50125; sum 6.6825 EUR
    #       = 668.25 cents -> 668.
    # Charging: start to S4 = 10 h of real time (the wall clock shows 9 h: the night had 25).
    # Revenue: energy 34.5 kWh x 0.37 = 12.765 EUR = 1276.5 cents -> 1276 (a tie: half to even)
    #          time    10 h x 0.25          =  250
    #          session                      =   50
    #          idle    S4 to stop = 1.5 h, less 0.5 h grace = 1 h x 4.00 = 400, capped at 300
    #          total 1276 + 250 + 50 + 300 = 1876 cents = 18.76 EUR; margin 1876 - 668 = 1208.
    samples = [Sample(at(24, 20, 30), 17_000, 7000), Sample(at(25, 0, 30), 38_000, 5000),
               Sample(at(25, 1, 30), 41_000, 3000), Sample(at(25, 5, 30), 44_500, 900),
               Sample(at(25, 6, 0), 44_500, 0)]
    c = charge(berlin_tariff(), at(24, 19, 30), at(25, 7, 0), 10_000, 44_500, samples)
    assert c.energy_wh == 34_500
    assert c.cost == 668
    assert (c.revenue_energy, c.revenue_time, c.revenue_session, c.revenue_idle) == (1276, 250, 50, 300)
    assert c.revenue == 1876 and c.revenue - c.cost == 1208
    assert (c.duration_s, c.charging_s, c.idle_s) == (11.5 * 3600, 10 * 3600, 1.5 * 3600)
    assert format_money(c.revenue, c.decimals) == "18.76"


def test_energy_is_priced_where_the_samples_put_it_not_spread_over_the_session():
    # 22:00-06:00 night at 0.18, day 0.30 (UTC zone: no offsets to think about).
    pricing = Tariff(energy_per_kwh=D("0.30"),
                     energy=(EnergyRate("night", Window.parse(ALL, "22:00", "06:00"), D("0.18")),)
                     ).pricing("", "UTC")
    # 10 kWh all drawn in the first hour (day), none in the night hour after it.
    c = charge(pricing, at(20, 21), at(20, 23), 0, 10_000, [Sample(at(20, 22), 10_000, 0)])
    assert c.cost == 300  # 10 kWh x 0.30; spread evenly it would have been 240
    assert c.idle_s == 3600


def test_weekday_peak_applies_on_weekdays_only():
    pricing = berlin_tariff()
    friday = charge(pricing, dt.datetime(2026, 10, 23, 15, 30, tzinfo=UTC), dt.datetime(2026, 10, 23, 16, 30, tzinfo=UTC),
                    0, 1000)  # 17:30-18:30 CEST
    saturday = charge(pricing, dt.datetime(2026, 10, 24, 15, 30, tzinfo=UTC),
                      dt.datetime(2026, 10, 24, 16, 30, tzinfo=UTC), 0, 1000)
    assert (friday.cost, saturday.cost) == (45, 30)


def test_a_window_edge_in_the_skipped_spring_hour_takes_effect_at_the_change():
    # Berlin springs from 02:00 CET to 03:00 CEST on Sun 2026-03-29 (01:00 UTC). A cheap window
    # from 02:30 has no 02:30 that day: it starts when the clock jumps, 01:00 UTC.
    pricing = Tariff(energy_per_kwh=D("0.30"),
                     energy=(EnergyRate("cheap", Window.parse(ALL, "02:30", "05:00"), D("0.10")),)
                     ).pricing("", "Europe/Berlin")
    start, stop = dt.datetime(2026, 3, 29, 0, 0, tzinfo=UTC), dt.datetime(2026, 3, 29, 2, 0, tzinfo=UTC)
    c = charge(pricing, start, stop, 0, 2000)  # 1 kWh 01:00-02:00 CET at 0.30, 1 kWh after the jump at 0.10
    assert c.cost == 40


def test_no_samples_spreads_the_energy_between_start_and_stop():
    pricing = Tariff(energy_per_kwh=D("0.30"),
                     energy=(EnergyRate("night", Window.parse(ALL, "22:00", "06:00"), D("0.20")),)
                     ).pricing("", "UTC")
    c = charge(pricing, at(20, 21), at(20, 23), 0, 10_000)
    assert c.cost == 250  # 5 kWh x 0.30 + 5 kWh x 0.20


def test_idle_fee_waits_for_the_grace_and_a_session_that_never_drew_is_all_idle():
    pricing = Tariff(default_price=DriverPrice(idle_per_hour=D("1.20"), idle_grace_s=600)).pricing("x", "UTC")
    c = charge(pricing, at(20, 10), at(20, 11), 500, 500)
    assert (c.charging_s, c.idle_s, c.revenue_idle) == (0, 3600, 100)  # 50 min x 1.20/h


def test_a_counter_that_goes_down_counts_nothing_negative():
    pricing = Tariff(energy_per_kwh=D("1")).pricing("", "UTC")
    c = charge(pricing, at(20, 10), at(20, 12), 1000, 900, [Sample(at(20, 11), 1500, 0)])
    assert c.energy_wh == 500 and c.cost == 50


@given(cuts=st.lists(st.integers(1, 7199), unique=True, max_size=12),
       wh=st.lists(st.integers(0, 3000), min_size=13, max_size=13))
def test_splitting_never_changes_a_flat_price_cost(cuts, wh):
    pricing = Tariff(energy_per_kwh=D("0.2713"),
                     energy=(EnergyRate("same", Window.parse(ALL, "21:17", "05:00"), D("0.2713")),)
                     ).pricing("", "Europe/Berlin")
    start = at(25, 0)
    samples, meter = [], 0
    for i, s in enumerate(sorted(cuts)):
        meter += wh[i]
        samples.append(Sample(start + dt.timedelta(seconds=s), meter, 1000))
    c = charge(pricing, start, start + dt.timedelta(hours=2), 0, meter + wh[-1], samples)
    assert c.cost == round(D(c.energy_wh) * D("0.2713") / 10, 0)


@pytest.mark.parametrize("days, start, end", [(["monday"], "22:00", "06:00"), ([], "22:00", "06:00"),
                                              (ALL, "22", "06:00"), (ALL, "22:00", "24:00")])
def test_window_syntax_errors_name_the_part(days, start, end):
    with pytest.raises(ValueError):
        Window.parse(days, start, end)


def test_overnight_window_belongs_to_the_day_it_starts():
    w = Window.parse(["fri"], "22:00", "06:00")
    assert w.contains(dt.datetime(2026, 10, 23, 23, 0))  # Fri 23:00
    assert w.contains(dt.datetime(2026, 10, 24, 5, 59))  # Sat 05:59
    assert not w.contains(dt.datetime(2026, 10, 24, 23, 0))  # Sat 23:00
    assert not w.contains(dt.datetime(2026, 10, 23, 5, 0))  # Fri 05:00 belongs to Thursday


def test_pricing_round_trips_through_the_stored_json():
    p = berlin_tariff()
    assert Pricing.from_json(p.to_json()) == p


def test_money_formats_in_major_units_with_the_currency_decimals():
    assert [format_money(m, d) for m, d in ((1234, 2), (-5, 2), (7, 0), (1, 3))] == ["12.34", "-0.05", "7", "0.001"]
