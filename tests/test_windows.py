"""Time-of-use windows: precedence, both DST nights by hand, and a naive minute-by-minute
reference over years of transitions in four zones (hypothesis)."""

import functools
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, strategies as st

from evsed.core.windows import (Action, Schedule, UnsyncedRule, Window, evaluate,
                                first_instant, parse_hhmm)

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
SYDNEY = ZoneInfo("Australia/Sydney")
ALL_DAYS = frozenset(range(7))
SAT, SUN = 5, 6


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def window(name, start, end, action="forbid", days=ALL_DAYS, cap=None, groups=()):
    return Window(name, frozenset(days), parse_hhmm(start), parse_hhmm(end), Action(action),
                  cap, frozenset(groups))


def decide(tz, windows, when, group=None, **kw):
    return evaluate(Schedule(tz, tuple(windows), **kw), group, when)


# --- the rule, in UTC where no DST gets in the way -------------------------------------

def test_no_windows_allow_charging_without_cap_forever():
    d = decide(UTC, [], utc(2024, 5, 1, 12))
    assert (d.allowed, d.cap_a, d.until_utc) == (True, None, None)


def test_forbid_window_forbids_inside_and_says_until_when():
    d = decide(UTC, [window("peak", "17:00", "20:00")], utc(2024, 5, 1, 18))
    assert not d.allowed and d.until_utc == utc(2024, 5, 1, 20) and "peak" in d.reason


def test_outside_a_forbid_window_the_decision_lasts_until_it_opens():
    d = decide(UTC, [window("peak", "17:00", "20:00")], utc(2024, 5, 1, 12))
    assert d.allowed and d.until_utc == utc(2024, 5, 1, 17)


def test_window_past_midnight_runs_into_the_next_day():
    w = window("night", "22:00", "06:00", "cap", days=[SAT], cap=10.0)
    assert decide(UTC, [w], utc(2024, 6, 2, 5, 59)).cap_a == 10.0  # Sunday morning
    assert decide(UTC, [w], utc(2024, 6, 2, 6)).cap_a is None


def test_end_2400_closes_at_the_next_midnight():
    d = decide(UTC, [window("day", "08:00", "24:00", days=[SAT])], utc(2024, 6, 1, 23))
    assert d.until_utc == utc(2024, 6, 2)


def test_allow_windows_forbid_the_hours_outside_them():
    d = decide(UTC, [window("night", "22:00", "06:00", "allow")], utc(2024, 5, 1, 12))
    assert not d.allowed and d.reason == "outside the allowed windows"
    assert d.until_utc == utc(2024, 5, 1, 22)


def test_forbid_beats_allow():
    ws = [window("night", "22:00", "06:00", "allow"), window("maint", "23:00", "23:30")]
    assert not decide(UTC, ws, utc(2024, 5, 1, 23, 10)).allowed


def test_forbid_beats_cap():
    ws = [window("slow", "00:00", "24:00", "cap", cap=10.0), window("peak", "17:00", "20:00")]
    d = decide(UTC, ws, utc(2024, 5, 1, 18))
    assert not d.allowed and d.cap_a is None


def test_the_lowest_cap_wins():
    ws = [window("a", "00:00", "24:00", "cap", cap=16.0), window("b", "10:00", "14:00", "cap",
                                                                   cap=8.0)]
    d = decide(UTC, ws, utc(2024, 5, 1, 12))
    assert d.cap_a == 8.0 and "'b'" in d.reason and d.until_utc == utc(2024, 5, 1, 14)


def test_a_group_window_applies_only_to_its_group():
    ws = [window("staff-only", "08:00", "18:00", groups=["guests"])]
    assert not decide(UTC, ws, utc(2024, 5, 1, 12), group="guests").allowed
    assert decide(UTC, ws, utc(2024, 5, 1, 12), group="staff").allowed
    assert decide(UTC, ws, utc(2024, 5, 1, 12), group=None).allowed


def test_a_group_allow_window_adds_hours_but_does_not_lift_a_general_forbid():
    ws = [window("night", "22:00", "06:00", "allow"),
          window("fleet-day", "08:00", "18:00", "allow", groups=["fleet"]),
          window("peak", "17:00", "20:00")]
    assert decide(UTC, ws, utc(2024, 5, 1, 10), group="fleet").allowed
    assert not decide(UTC, ws, utc(2024, 5, 1, 10), group="guests").allowed
    assert not decide(UTC, ws, utc(2024, 5, 1, 17, 30), group="fleet").allowed


def test_until_skips_boundaries_where_nothing_changes():
    ws = [window("a", "10:00", "12:00"), window("a", "12:00", "14:00")]
    assert decide(UTC, ws, utc(2024, 5, 1, 11)).until_utc == utc(2024, 5, 1, 14)


def test_a_whole_week_forbidden_never_changes():
    d = decide(UTC, [window("off", "00:00", "00:00")], utc(2024, 5, 1, 11))
    assert not d.allowed and d.until_utc is None


def test_until_may_be_days_ahead():
    d = decide(UTC, [window("sat", "09:00", "10:00", days=[SAT])], utc(2024, 5, 27, 12))  # Mon
    assert d.until_utc == utc(2024, 6, 1, 9)


def test_unsynced_clock_ignores_windows_by_default():
    assert not decide(UTC, [window("all", "00:00", "00:00")], utc(2024, 5, 1)).allowed
    d = evaluate(Schedule(UTC, (window("all", "00:00", "00:00"),)), None, utc(2024, 5, 1),
                 clock_synced=False)
    assert d.allowed and d.cap_a is None and d.until_utc is None and "not synchronized" in d.reason


def test_unsynced_clock_may_forbid_or_trust_the_windows():
    ws = (window("cap", "00:00", "00:00", "cap", cap=8.0),)
    d = evaluate(Schedule(UTC, ws, UnsyncedRule.FORBID), None, utc(2024, 5, 1), False)
    assert not d.allowed
    d = evaluate(Schedule(UTC, ws, UnsyncedRule.APPLY), None, utc(2024, 5, 1), False)
    assert d.allowed and d.cap_a == 8.0


@pytest.mark.parametrize("text", ["24:01", "7:5", "12:60", "ab:cd", "1200", ""])
def test_bad_times_are_refused(text):
    with pytest.raises(ValueError):
        parse_hhmm(text)


def test_a_cap_window_needs_its_current():
    with pytest.raises(ValueError):
        Window("x", ALL_DAYS, 0, 60, Action.CAP)
    with pytest.raises(ValueError):
        Window("x", frozenset(), 0, 60, Action.FORBID)


# --- DST by hand --------------------------------------------------------------------------
# Berlin 2024-03-31: 01:00 UTC, 02:00 CET -> 03:00 CEST.  2024-10-27: 01:00 UTC, 03:00 CEST ->
# 02:00 CET.  New York 2024-11-03: 06:00 UTC, 02:00 EDT -> 01:00 EST.  Sydney 2024-04-07:
# 16:00 UTC on the 6th, 03:00 AEDT -> 02:00 AEST; 2024-10-06: 16:00 UTC on the 5th, 02:00 AEST
# -> 03:00 AEDT.

def test_spring_forward_a_window_ending_in_the_skipped_hour_ends_at_the_jump():
    w = window("night", "22:00", "02:30", days=[SAT])
    d = decide(BERLIN, [w], utc(2024, 3, 31, 0, 30))  # 01:30 CET
    assert not d.allowed and d.until_utc == utc(2024, 3, 31, 1)  # 03:00 CEST
    assert decide(BERLIN, [w], utc(2024, 3, 31, 1)).allowed


def test_spring_forward_a_window_starting_in_the_skipped_hour_starts_at_the_jump():
    w = window("early", "02:30", "05:00", days=[SUN])
    assert decide(BERLIN, [w], utc(2024, 3, 31, 0, 59)).until_utc == utc(2024, 3, 31, 1)
    d = decide(BERLIN, [w], utc(2024, 3, 31, 1))
    assert not d.allowed and d.until_utc == utc(2024, 3, 31, 3)  # 05:00 CEST


def test_spring_forward_a_window_inside_the_skipped_hour_never_happens():
    w = window("ghost", "02:10", "02:50", days=[SUN])
    d = decide(BERLIN, [w], utc(2024, 3, 31, 0, 30))
    assert d.allowed and d.until_utc == utc(2024, 4, 7, 0, 10)  # next Sunday, 02:10 CEST


def test_fall_back_a_window_ending_in_the_repeated_hour_ends_in_its_first_pass():
    w = window("late", "01:00", "02:30", days=[SUN])
    d = decide(BERLIN, [w], utc(2024, 10, 26, 23, 30))  # 01:30 CEST
    assert not d.allowed and d.until_utc == utc(2024, 10, 27, 0, 30)  # 02:30 CEST
    assert decide(BERLIN, [w], utc(2024, 10, 27, 1, 15)).allowed  # 02:15 CET: not reopened


def test_fall_back_a_window_starting_in_the_repeated_hour_covers_both_passes():
    w = window("cap", "02:30", "03:00", "cap", days=[SUN], cap=10.0)
    d = decide(BERLIN, [w], utc(2024, 10, 27, 0, 30))  # 02:30 CEST
    assert d.cap_a == 10.0 and d.until_utc == utc(2024, 10, 27, 2)  # 03:00 CET, 90 min later
    assert decide(BERLIN, [w], utc(2024, 10, 27, 1, 10)).cap_a == 10.0  # 02:10 CET


def test_fall_back_a_night_window_lasts_an_hour_longer_in_real_time():
    w = window("night", "22:00", "06:00", "allow", days=[SAT])
    d = decide(NEW_YORK, [w], utc(2024, 11, 3, 3))  # 23:00 EDT on Saturday
    assert d.allowed and d.until_utc == utc(2024, 11, 3, 11)  # 06:00 EST: 9 hours after 22:00


def test_new_york_fall_back_window_ending_at_0130_ends_in_the_first_pass():
    w = window("w", "00:00", "01:30", days=[SUN])
    d = decide(NEW_YORK, [w], utc(2024, 11, 3, 5))  # 01:00 EDT
    assert d.until_utc == utc(2024, 11, 3, 5, 30)  # 01:30 EDT, not 01:30 EST


def test_sydney_autumn_and_spring_nights():
    w = window("w", "02:30", "03:00", days=[SUN])
    d = decide(SYDNEY, [w], utc(2024, 4, 6, 15, 30))  # 02:30 AEDT, first pass
    assert not d.allowed and d.until_utc == utc(2024, 4, 6, 17)  # 03:00 AEST
    d = decide(SYDNEY, [w], utc(2024, 10, 5, 15, 59))  # 01:59 AEST; 02:30 does not exist
    assert d.allowed and d.until_utc == utc(2024, 10, 12, 15, 30)  # next Sunday 02:30 AEDT


def test_first_instant_is_the_jump_for_a_skipped_time_and_the_first_pass_for_a_repeated_one():
    assert first_instant(BERLIN, datetime(2024, 3, 31, 2, 30)) == utc(2024, 3, 31, 1)
    assert first_instant(BERLIN, datetime(2024, 10, 27, 2, 30)) == utc(2024, 10, 27, 0, 30)
    assert first_instant(BERLIN, datetime(2024, 7, 1, 12)) == utc(2024, 7, 1, 10)


# --- hypothesis against a naive reference ------------------------------------------------

ZONES = [BERLIN, NEW_YORK, SYDNEY, UTC]
YEARS = range(2020, 2031)
BOUNDARY_MIN = [0, 30, 60, 90, 120, 150, 180, 210, 240, 1320, 1440]  # around the DST hours


@functools.cache
def transitions(tz) -> tuple[datetime, ...]:
    """UTC instants where tz's offset changes in YEARS (found by a day, then a minute scan)."""
    found = []
    t, end = utc(YEARS[0], 1, 1), utc(YEARS[-1] + 1, 1, 1)
    while t < end:
        nxt = t + timedelta(days=1)
        if t.astimezone(tz).utcoffset() != nxt.astimezone(tz).utcoffset():
            lo = t
            while (lo + timedelta(minutes=1)).astimezone(tz).utcoffset() == lo.astimezone(
                    tz).utcoffset():
                lo += timedelta(minutes=1)
            found.append(lo + timedelta(minutes=1))
        t = nxt
    return tuple(found) or (utc(2024, 3, 31, 1), utc(2024, 10, 27, 1))


def reference(tz, windows, group, minutes: list[datetime]) -> list[tuple]:
    """The decision at each whole UTC minute, from the wall-clock definition: a window is in
    force while the highest wall-clock reading so far lies in [start, end) of a day it
    starts on. minutes must be consecutive; the first few hours only warm up the reading."""
    out, highest = [], None
    mine = [w for w in windows if not w.groups or group in w.groups]
    has_allow = any(w.action is Action.ALLOW for w in mine)
    for m in minutes:
        wall = m.astimezone(tz).replace(tzinfo=None)
        highest = wall if highest is None or wall > highest else highest
        minute = highest.hour * 60 + highest.minute
        yesterday = (highest.weekday() - 1) % 7
        active = [w for w in mine
                  if (highest.weekday() in w.days and w.start_min <= minute
                      and (w.end_min <= w.start_min or minute < w.end_min))
                  or (yesterday in w.days and w.end_min <= w.start_min and minute < w.end_min)]
        forbid = [w for w in active if w.action is Action.FORBID]
        allow = [w for w in active if w.action is Action.ALLOW]
        caps = sorted((w.max_current_a, i) for i, w in enumerate(active)
                      if w.action is Action.CAP)
        if forbid:
            out.append((False, None, f"forbidden by window {forbid[0].name!r}"))
        elif has_allow and not allow:
            out.append((False, None, "outside the allowed windows"))
        elif caps:
            cap, i = caps[0]
            out.append((True, cap, f"capped at {cap:g} A by window {active[i].name!r}"))
        elif allow:
            out.append((True, None, f"allowed by window {allow[0].name!r}"))
        else:
            out.append((True, None, "no window applies"))
    return out


windows_st = st.lists(st.builds(
    lambda name, days, start, end, action, cap, groups: Window(
        name, frozenset(days), start, end, action, cap if action is Action.CAP else None,
        frozenset(groups)),
    st.sampled_from("abcd"),
    st.just(ALL_DAYS) | st.sets(st.integers(0, 6), min_size=1),
    st.sampled_from(BOUNDARY_MIN[:-1]) | st.integers(0, 1439),
    st.sampled_from(BOUNDARY_MIN) | st.integers(0, 1440),
    st.sampled_from(list(Action)),
    st.sampled_from([6.0, 10.0, 16.0]),
    st.sampled_from([(), ("fleet",), ("guests",)])), max_size=4)

SCAN = timedelta(days=2)


@given(tz=st.sampled_from(ZONES), windows=windows_st, group=st.sampled_from([None, "fleet"]),
       index=st.integers(0, 10_000),
       offset_min=st.integers(-6 * 60, 6 * 60) | st.integers(-36 * 60, 36 * 60))
def test_evaluate_matches_the_minute_by_minute_reference_around_dst(tz, windows, group, index,
                                                                     offset_min):
    transition = transitions(tz)[index % len(transitions(tz))]
    when = transition + timedelta(minutes=offset_min)
    d = evaluate(Schedule(tz, tuple(windows)), group, when)
    warm = when - timedelta(hours=6)
    end = when + SCAN if d.until_utc is None else min(d.until_utc, when + SCAN)
    count = int((end - warm).total_seconds()) // 60 + 1
    minutes = [warm + timedelta(minutes=i) for i in range(count)]
    ref = reference(tz, windows, group, minutes)
    expected = ref[minutes.index(when)]
    assert (d.allowed, d.cap_a, d.reason) == expected
    held = ref[minutes.index(when):-1] if d.until_utc is not None and end == d.until_utc else \
        ref[minutes.index(when):]
    assert all(r == expected for r in held), "the decision changed before until_utc"
    if d.until_utc is not None and end == d.until_utc:
        assert d.until_utc.second == 0 and ref[-1] != expected, "nothing changed at until_utc"


@given(tz=st.sampled_from(ZONES), windows=windows_st,
       day=st.integers(0, 365 * 10), minute=st.integers(0, 1439))
def test_evaluate_matches_the_reference_on_any_day(tz, windows, day, minute):
    when = utc(2020, 1, 1) + timedelta(days=day, minutes=minute)
    d = evaluate(Schedule(tz, tuple(windows)), None, when)
    ref = reference(tz, windows, None, [when - timedelta(hours=6) + timedelta(minutes=i)
                                        for i in range(6 * 60 + 1)])
    assert (d.allowed, d.cap_a, d.reason) == ref[-1]
