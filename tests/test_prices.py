"""Dynamic price curves: read from JSON with every part bounded, combined with the tariff's."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given, settings, strategies as st

from evsed.core import prices

T0 = 1_767_650_400  # 2026-01-05T22:00:00Z


def iso(t: int) -> str:
    return prices._iso(t)


def test_hourly_prices_without_ends_run_to_the_next_start_and_the_last_as_long_as_the_one_before():
    curve = prices.parse_text(json.dumps([{"start": iso(T0), "price": 0.3}, {"start": iso(T0 + 3600), "price": 0.1}]),
                              "mqtt", T0)
    assert curve.spans == ((T0, T0 + 3600, Decimal("0.3")), (T0 + 3600, T0 + 7200, Decimal("0.1")))
    assert (curve.source, curve.start_s, curve.end_s) == ("mqtt", T0, T0 + 7200)


def test_quarter_hours_with_offsets_and_an_object_wrapper():
    text = json.dumps({"prices": [{"start": "2026-01-05T23:00:00+01:00", "end": "2026-01-05T23:15:00+01:00",
                                   "price": -0.02}]})
    assert prices.parse_text(text, "file", T0).spans == ((T0, T0 + 900, Decimal("-0.02")),)


@pytest.mark.parametrize("data, message", [
    ([], "no prices"),
    ({"prices": [], "x": 1}, "only the key"),
    ("0.3", "expected a list"),
    ([{"start": iso(T0)}], "entry 0: price missing"),
    ([{"start": "tomorrow", "price": 1}], "entry 0: start: not an ISO 8601 time"),
    ([{"start": "2026-01-05T22:00:00", "price": 1}], "has no UTC offset"),
    ([{"start": iso(T0), "price": "0.3"}], "entry 0: price: expected a number"),
    ([{"start": iso(T0), "price": True}], "expected a number"),
    ([{"start": iso(T0), "price": 1e9}], "out of range"),
    ([{"start": iso(T0), "price": 1, "level": "cheap"}], "unknown key 'level'"),
    ([{"start": iso(T0 + 3600), "price": 1}, {"start": iso(T0), "price": 1}], "entry 1: start: not after entry 0"),
    ([{"start": iso(T0), "end": iso(T0 + 10), "price": 1}], "entry 0: end: 10 s after its start"),
    ([{"start": iso(T0 + 86_400 * d), "price": 1} for d in range(10)], "days, at most 8"),
    ([{"start": iso(T0 + 900 * i), "price": 1} for i in range(513)], "513 entries, at most 512"),
])
def test_garbage_is_refused_naming_the_entry_and_key(data, message):
    with pytest.raises(prices.PriceError, match=message):
        prices.parse_text(json.dumps(data), "mqtt", T0)


@pytest.mark.parametrize("text", ['[{"start": "%s", "price": NaN}]' % iso(T0), "[" * 100_000, "x" * 300_000, "{"])
def test_text_that_is_no_curve_is_a_price_error_never_another_exception(text):
    with pytest.raises(prices.PriceError):
        prices.parse_text(text, "mqtt", T0)


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
                    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(
                        st.sampled_from(["start", "end", "price", "prices", "x"]), inner, max_size=4)))
def test_any_json_value_gives_a_curve_or_a_price_error(data):
    try:
        curve = prices.parse(data, "mqtt", T0)
    except prices.PriceError:
        return
    assert 0 < len(curve.spans) <= prices.MAX_ENTRIES
    assert all(a < b for a, b, _ in curve.spans)


def test_a_stored_curve_reads_back_the_same():
    curve = prices.parse([{"start": iso(T0), "price": 0.123456}, {"start": iso(T0 + 900), "price": 2}], "file", T0)
    assert prices.Curve.from_json(json.loads(json.dumps(curve.to_json()))) == curve


def test_the_dynamic_prices_replace_the_tariff_where_they_are_known():
    tariff = [(T0 - 3600, T0 + 5 * 3600, Decimal("0.30"))]
    curve = prices.parse([{"start": iso(T0 + 3600), "price": 0.1}, {"start": iso(T0 + 7200), "price": 0.2}], "mqtt", T0)
    assert prices.combine(curve, tariff, T0, T0 + 4 * 3600) == [
        (T0, T0 + 3600, Decimal("0.30")), (T0 + 3600, T0 + 7200, Decimal("0.1")),
        (T0 + 7200, T0 + 3 * 3600, Decimal("0.2")), (T0 + 3 * 3600, T0 + 4 * 3600, Decimal("0.30"))]
    assert prices.combine(None, tariff, T0, T0 + 3600) == [(T0, T0 + 3600, Decimal("0.30"))]


def test_overlapping_entries_are_refused():
    with pytest.raises(prices.PriceError, match="entry 1: start: before the end of entry 0"):
        prices.parse([{"start": iso(T0), "end": iso(T0 + 7200), "price": 1}, {"start": iso(T0 + 3600), "price": 1}],
                     "mqtt", T0)
