"""The limit chain: every source's value, the one that binds, and the proximity pilot."""

import math

import pytest
from hypothesis import given, strategies as st

from evsed.core import limits as lm
from evsed.core.limits import Limit, chain


def standard_chain(**over):
    parts = dict(hardware=lm.hardware(32.0), cable=lm.cable_fixed(32.0), breaker=lm.breaker(25.0),
                 window=lm.window(True, None, "no window applies"), group=lm.group("staff", None),
                 authorization=lm.authorization("staff", None),
                 site=lm.site(None), external_cap=lm.external_cap(False, 4200.0, 3, 230.0),
                 solar=lm.solar(None, "fast"), ocpp=lm.ocpp(None), plan=lm.plan(False, ""))
    parts.update(over)
    return chain(parts[name] for name in lm.CHAIN)


def test_the_lowest_source_binds_and_every_source_is_reported():
    r = standard_chain()
    assert (r.current_a, r.binding, r.not_charging) == (25.0, "breaker", None)
    assert [lim.source for lim in r.limits] == list(lm.CHAIN)


def test_a_group_cap_binds_when_lowest():
    r = standard_chain(group=lm.group("guests", 10.0))
    assert (r.current_a, r.binding) == (10.0, "group")
    assert "guests" in r.limits[lm.CHAIN.index("group")].detail


def test_a_window_cap_binds_when_lowest():
    r = standard_chain(window=lm.window(True, 8.0, "capped at 8 A by window 'night'"))
    assert (r.current_a, r.binding) == (8.0, "window")


def test_a_plan_outside_its_slots_stops_charging_with_its_reason():
    r = standard_chain(plan=lm.plan(True, "plan: waiting for 01:00, cheapest hours"))
    assert (r.current_a, r.binding, r.not_charging) == (0.0, "plan", "plan: waiting for 01:00, cheapest hours")
    assert standard_chain(plan=lm.plan(False, "plan: charging until 03:00, cheapest hours")).binding == "breaker"


def test_a_forbidding_window_stops_charging_with_its_reason():
    r = standard_chain(window=lm.window(False, None, "forbidden by window 'peak'"))
    assert r.current_a == 0.0 and r.binding == "window" and "peak" in r.not_charging


def test_among_equal_limits_the_first_in_the_chain_binds():
    assert standard_chain(breaker=lm.breaker(32.0)).binding == "hardware"


def test_a_site_share_under_6_a_means_no_charging_and_says_which_source():
    r = standard_chain(site=lm.site(4.2))
    assert r.current_a == 0.0 and r.binding == "site" and "under 6 A" in r.not_charging


def test_a_site_pause_at_0_a_says_so():
    r = standard_chain(site=lm.site(0.0, "paused by load management until 12:03"))
    assert r.current_a == 0.0 and "paused by load management" in r.not_charging


def test_nan_from_a_source_reads_as_0_a():
    r = standard_chain(ocpp=lm.ocpp(math.nan))
    assert r.current_a == 0.0 and r.binding == "ocpp"


def test_external_cap_converts_kw_to_a_per_phase_on_three_phases():
    lim = lm.external_cap(True, 4200.0, 3, 230.0)
    assert lim.current_a == pytest.approx(6.087, abs=1e-3)
    assert standard_chain(external_cap=lim).binding == "external_cap"


def test_external_cap_on_one_phase_allows_more_current():
    assert lm.external_cap(True, 4200.0, 1, 230.0).current_a == pytest.approx(18.26, abs=0.01)


def test_external_cap_inactive_sets_no_limit():
    assert lm.external_cap(False, 4200.0, 3, 230.0).current_a is None


def test_solar_waiting_for_surplus_means_no_charging():
    r = standard_chain(solar=lm.solar(0.0, "waiting for surplus"))
    assert r.current_a == 0.0 and "waiting for surplus" in r.not_charging


def test_no_source_at_all_means_no_charging():
    assert chain([]).not_charging == "no source sets a limit"


# --- proximity pilot -------------------------------------------------------------------

@pytest.mark.parametrize("ohm, amps", [(1500.0, 13.0), (680.0, 20.0), (220.0, 32.0),
                                       (100.0, 63.0)])
def test_the_nominal_pp_resistors_code_their_cable(ohm, amps):
    assert lm.cable_from_pp(ohm).current_a == amps


@pytest.mark.parametrize("ohm, amps", [(2460.0, 13.0), (937.0, 13.0), (936.0, 20.0),
                                       (309.0, 20.0), (308.0, 32.0), (141.0, 32.0),
                                       (140.0, 63.0), (81.0, 63.0)])
def test_pp_band_edges(ohm, amps):
    assert lm.cable_from_pp(ohm).current_a == amps


@pytest.mark.parametrize("ohm", [1500.0 * 0.97, 1500.0 * 1.03, 680.0 * 0.97, 680.0 * 1.03,
                                 220.0 * 0.97, 220.0 * 1.03, 100.0 * 0.97, 100.0 * 1.03])
def test_pp_resistors_within_their_3_percent_tolerance_read_as_nominal(ohm):
    nominal = min((1500.0, 680.0, 220.0, 100.0), key=lambda n: abs(n - ohm))
    assert lm.cable_from_pp(ohm).current_a == lm.cable_from_pp(nominal).current_a


def test_an_open_pp_blocks_charging_with_the_reason():
    r = standard_chain(cable=lm.cable_from_pp(math.inf))
    assert r.current_a == 0.0 and r.binding == "cable" and "PP open" in r.not_charging


@pytest.mark.parametrize("ohm", [0.0, 50.0, 80.0, 3000.0, 4700.0, math.nan, None])
def test_a_shorted_unreadable_or_uncoded_pp_blocks_charging(ohm):
    lim = lm.cable_from_pp(ohm)
    assert lim.blocked is not None and lim.current_a is None


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_a_socket_never_offers_more_than_its_coded_cable(ohm):
    r = chain([lm.hardware(80.0), lm.cable_from_pp(ohm)])
    assert r.current_a in (0.0, 13.0, 20.0, 32.0, 63.0)
    if r.current_a:
        assert ohm > lm.PP_SHORT_OHM and ohm <= 2460.0


@given(st.lists(st.tuples(st.sampled_from(lm.CHAIN),
                          st.none() | st.floats(min_value=-5, max_value=100)), min_size=1))
def test_the_offer_is_0_or_the_lowest_limit_and_at_least_6_a(parts):
    r = chain(Limit(source, a) for source, a in parts)
    values = [a for _, a in parts if a is not None]
    if not values:
        assert r.current_a == 0.0
    elif min(values) >= 6.0:
        assert r.current_a == min(values) and r.not_charging is None
    else:
        assert r.current_a == 0.0 and r.not_charging is not None
