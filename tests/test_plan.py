"""Charging plans, pure: the cheapest slots that deliver a session's energy by its departure."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

from hypothesis import given, settings, strategies as st

from evsed.core import plan
from evsed.core.tariff import EnergyRate, Tariff, Window

HOUR = 3600


def reference_cost(segs: list[plan.Segment], need: Fraction) -> Fraction | None:
    """Brute force over the linear programme's vertices: some segments used whole, at most one
    more in part. None when no choice delivers `need`."""
    best: Fraction | None = None
    for r in range(len(segs) + 1):
        for whole in itertools.combinations(range(len(segs)), r):
            got = sum((segs[i].capacity_wh for i in whole), Fraction(0))
            cost = sum((segs[i].capacity_wh * segs[i].price / 1000 for i in whole), Fraction(0))
            if got >= need:
                if got == need and (best is None or cost < best):
                    best = cost
                continue
            for p in set(range(len(segs))) - set(whole):
                if got + segs[p].capacity_wh >= need:
                    c = cost + (need - got) * segs[p].price / 1000
                    if best is None or c < best:
                        best = c
    return best


@st.composite
def curves(draw: st.DrawFn) -> list[plan.Segment]:
    n = draw(st.integers(1, 6))
    t = 0
    segs = []
    for _ in range(n):
        length = draw(st.sampled_from([900, 1800, HOUR, 2 * HOUR]))
        price = Fraction(draw(st.integers(0, 60)), 100)
        power = Fraction(draw(st.sampled_from([0, 1380, 4140, 7360, 11040])))
        segs.append(plan.Segment(t, t + length, price, power))
        t += length
    return segs


@settings(max_examples=300, deadline=None)
@given(curves(), st.integers(0, 40_000))
def test_the_plan_delivers_the_energy_when_possible_and_nothing_cheaper_exists(segs, need_wh):
    need = Fraction(need_wh)
    got = plan.schedule(segs, need)
    best = reference_cost(segs, need)
    if best is None:
        assert not got.feasible
        assert got.shortfall_wh == need - sum((s.capacity_wh for s in segs), Fraction(0))
        return
    assert got.feasible and got.energy_wh >= need
    # whole seconds: the last slot may run up to one second past the exact need
    slack = max((s.power_w for s in segs), default=Fraction(0)) / 3600 * max((s.price for s in segs),
                                                                               default=Fraction(0)) / 1000
    assert best <= got.cost <= best + slack


@settings(max_examples=200, deadline=None)
@given(curves(), st.integers(1, 40_000))
def test_slots_lie_inside_the_curve_in_time_order_and_only_where_power_is_allowed(segs, need_wh):
    got = plan.schedule(segs, need_wh)
    for a, b in zip(got.slots, got.slots[1:]):
        assert a.end_s < b.start_s or (a.price, a.power_w) != (b.price, b.power_w)  # else merged
        assert a.end_s <= b.start_s
    for slot in got.slots:
        covered = [s for s in segs if s.start_s < slot.end_s and slot.start_s < s.end_s]
        assert covered and all(s.power_w == slot.power_w and s.price == slot.price for s in covered)


def test_a_part_hour_sits_beside_the_hour_after_it_so_the_contactor_closes_once():
    segs = [plan.Segment(0, HOUR, Fraction(20, 100), Fraction(10_000)),
            plan.Segment(HOUR, 2 * HOUR, Fraction(10, 100), Fraction(10_000))]
    got = plan.schedule(segs, 12_500)
    assert [(s.start_s, s.end_s) for s in got.slots] == [(HOUR - 900, HOUR), (HOUR, 2 * HOUR)]


def test_a_plan_that_cannot_finish_takes_every_hour_it_can_and_says_how_much_is_missing():
    segs = [plan.Segment(0, HOUR, Fraction(3, 10), Fraction(7000)),
            plan.Segment(HOUR, 2 * HOUR, Fraction(1, 10), Fraction(0)),  # a forbid window
            plan.Segment(2 * HOUR, 3 * HOUR, Fraction(2, 10), Fraction(7000))]
    got = plan.schedule(segs, 20_000)
    assert not got.feasible
    assert got.shortfall_wh == 6000
    assert [(s.start_s, s.end_s) for s in got.slots] == [(0, HOUR), (2 * HOUR, 3 * HOUR)]


def test_the_cheapest_hours_are_taken_and_charging_is_held_outside_them():
    segs = [plan.Segment(0, HOUR, Fraction(30, 100), Fraction(10_000)),
            plan.Segment(HOUR, 2 * HOUR, Fraction(10, 100), Fraction(10_000)),
            plan.Segment(2 * HOUR, 3 * HOUR, Fraction(20, 100), Fraction(10_000))]
    got = plan.schedule(segs, 15_000)
    assert [(s.start_s, s.end_s) for s in got.slots] == [(HOUR, 2 * HOUR), (2 * HOUR, 3 * HOUR - 1800)]
    assert got.cost == Fraction(10_000 * 10 + 5_000 * 20, 100 * 1000)
    assert not plan.charging_now(got, 0)
    assert plan.next_change_s(got, 0) == HOUR
    assert plan.charging_now(got, HOUR) and plan.charging_now(got, 2 * HOUR)
    assert plan.next_change_s(got, HOUR) == 3 * HOUR - 1800
    assert got.finish_s == 3 * HOUR - 1800


def test_the_planned_power_keeps_a_margin_below_what_the_chain_allows():
    segs = plan.segments([(0, HOUR, Decimal("0.2"))], 0, HOUR, 10_000)
    assert segs[0].power_w == 9000


def night_tariff() -> Tariff:
    every = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    return Tariff(energy_per_kwh=Decimal("0.30"), energy=(
        EnergyRate("night", Window.parse(every, "00:00", "05:00"), Decimal("0.10")),
        EnergyRate("shoulder", Window.parse(every, "22:00", "00:00"), Decimal("0.20"))))


def test_the_tariff_gives_the_price_curve_of_a_night_with_three_levels():
    tz = ZoneInfo("Europe/Berlin")
    start = dt.datetime(2026, 3, 10, 18, 0, tzinfo=tz)
    curve = plan.tariff_curve(night_tariff().pricing("default", "Europe/Berlin"), start,
                              start + dt.timedelta(hours=13))
    local = [(dt.datetime.fromtimestamp(a, tz).strftime("%H:%M"), dt.datetime.fromtimestamp(b, tz).strftime("%H:%M"),
              p) for a, b, p in curve]
    assert local == [("18:00", "22:00", Decimal("0.30")), ("22:00", "00:00", Decimal("0.20")),
                     ("00:00", "05:00", Decimal("0.10")), ("05:00", "07:00", Decimal("0.30"))]


def test_on_the_night_the_clocks_go_back_the_cheap_window_is_an_hour_longer():
    tz = ZoneInfo("Europe/Berlin")
    start = dt.datetime(2026, 10, 24, 18, 0, tzinfo=tz)
    end = dt.datetime(2026, 10, 25, 7, 0, tzinfo=tz)
    curve = plan.tariff_curve(night_tariff().pricing("default", "Europe/Berlin"), start, end)
    night = [(b - a) for a, b, p in curve if p == Decimal("0.10")]
    assert night == [6 * HOUR]  # 00:00-05:00 local holds 02:00-03:00 twice
    segs = plan.segments(curve, int(start.timestamp()), int(end.timestamp()), 11_000)
    got = plan.schedule(segs, 50_000)  # 50 kWh at 9.9 kW: 5.05 h, all in the 6 cheap hours
    assert got.feasible
    assert {s.price for s in got.slots} == {Fraction(1, 10)}


def test_a_window_that_forbids_or_caps_lowers_the_power_of_its_hours():
    segs = plan.segments([(0, 3 * HOUR, Decimal("0.1"))], 0, 3 * HOUR, 10_000,
                         caps=[(HOUR, 2 * HOUR, 0), (2 * HOUR, 3 * HOUR, 5_000)])
    assert [(s.start_s, s.end_s, s.power_w) for s in segs] == [
        (0, HOUR, 9000), (HOUR, 2 * HOUR, 0), (2 * HOUR, 3 * HOUR, 4500)]


TZ = ZoneInfo("Europe/Berlin")


def test_a_plan_waits_for_its_first_slot_and_says_until_when():
    start = int(dt.datetime(2026, 3, 10, 22, 0, tzinfo=TZ).timestamp())
    segs = [plan.Segment(start, start + HOUR, Fraction(3, 10), Fraction(9000)),
            plan.Segment(start + HOUR, start + 2 * HOUR, Fraction(1, 10), Fraction(9000))]
    d = plan.decide(9000, 0, start + 2 * HOUR, start, segs, TZ)
    assert (d.state, d.holds, d.next_s) == ("waiting", True, start + HOUR)
    assert d.reason == "plan: waiting for 23:00, cheapest hours"
    d = plan.decide(9000, 0, start + 2 * HOUR, start + HOUR, segs[1:], TZ)
    assert (d.state, d.holds, d.next_s) == ("charging", False, start + 2 * HOUR)


def test_a_plan_that_has_delivered_its_energy_holds_until_the_departure():
    now = int(dt.datetime(2026, 3, 10, 3, 0, tzinfo=TZ).timestamp())
    d = plan.decide(20_000, 20_400, now + 4 * HOUR, now, [], TZ)
    assert (d.state, d.holds, d.next_s) == ("done", True, now + 4 * HOUR)
    assert d.reason == "plan: 20.0 kWh delivered; paused until 07:00 (departure)"


def test_a_plan_that_cannot_finish_in_time_says_so_and_does_not_hold():
    now = int(dt.datetime(2026, 3, 10, 5, 0, tzinfo=TZ).timestamp())
    segs = [plan.Segment(now, now + 2 * HOUR, Fraction(3, 10), Fraction(9000))]
    d = plan.decide(30_000, 0, now + 2 * HOUR, now, segs, TZ)
    assert (d.state, d.holds) == ("infeasible", False)
    assert d.reason == "plan: 30.0 kWh cannot be delivered by 07:00 (12.0 kWh short): charging as fast as allowed"


def test_the_windows_forbid_and_cap_the_hours_they_cover():
    from evsed.core import windows
    tz = ZoneInfo("Europe/Berlin")
    every = frozenset(range(7))
    schedule = windows.Schedule(tz, (
        windows.Window("peak", every, 17 * 60, 20 * 60, windows.Action.FORBID),
        windows.Window("night cap", every, 22 * 60, 6 * 60, windows.Action.CAP, 10.0)))
    start = int(dt.datetime(2026, 3, 10, 16, 0, tzinfo=tz).timestamp())
    caps = plan.window_caps(schedule, None, start, start + 10 * HOUR, True, 690.0)
    assert caps == [(start + HOUR, start + 4 * HOUR, 0.0), (start + 6 * HOUR, start + 10 * HOUR, 6900.0)]
    assert plan.window_caps(schedule, None, start, start + 10 * HOUR, False, 690.0) == []  # unsynced: ignored
