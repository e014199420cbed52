"""Time-of-use windows: weekly allow / forbid / cap windows in the charger's local time.

evaluate() says whether a session of a group may charge now, at what cap, and until when.

Precedence, one rule: windows only ever restrict, and they never override each other.
  - A forbid window that applies (general, or naming the session's group) forbids.
  - If any allow window applies to the group, charging outside all of them is forbidden
    ("outside the allowed windows"); with no allow window at all, every hour is allowed.
  - Caps of all active cap windows that apply combine to the lowest (ties: the first listed).
  So forbid beats cap beats allow, and a group-specific window counts exactly like a
  general one: a group can be given extra allow hours, never an exemption from a forbid.

Local time, and the two DST nights. A window opens at the first instant the wall clock
reads its start time or later, and closes at the first instant it reads its end or later:
  - spring forward (Berlin, 2024-03-31: 02:00 CET jumps to 03:00 CEST): a boundary in the
    skipped hour (02:30) takes effect at the jump, 03:00 CEST; a window ending at 02:30
    ends then, one starting at 02:30 starts then.
  - fall back (2024-10-27: 03:00 CEST falls to 02:00 CET): a boundary in the repeated
    hour means its first pass (02:30 CEST). A window does not reopen in the second pass:
    01:00-02:30 ends at 02:30 CEST, and 02:30-03:00 runs 90 minutes, to 03:00 CET.
Each window is therefore one contiguous stretch of real time per listed day; it is the
same as comparing boundaries against the highest wall-clock reading seen so far.

Times: minutes after local midnight in Window, aware datetimes (any zone) in and UTC out.
"""

from __future__ import annotations

import math

import enum
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone, tzinfo

MINUTES_PER_DAY = 1440
_LOOK_BACK_DAYS = 2  # a window lasts at most a day; DST shifts a boundary by hours at most
_LOOK_AHEAD_DAYS = 8  # a weekly schedule with no change in 7 days never changes
OUTSIDE_ALLOWED = "outside the allowed windows"  # the reason when allow windows apply and none is open


class Action(str, enum.Enum):
    ALLOW = "allow"
    FORBID = "forbid"
    CAP = "cap"


class UnsyncedRule(str, enum.Enum):
    """What windows do while the system clock is not known to be synchronized."""

    IGNORE = "ignore"  # charge at the fixed limits: no window caps or forbids (default)
    FORBID = "forbid"  # no charging until the clock is synchronized
    APPLY = "apply"  # trust the clock anyway


@dataclass(frozen=True, slots=True)
class Window:
    """One weekly window. It starts on each of `days` (0 = Monday) at start_min after local
    midnight and ends at end_min (1440 = "24:00"); end_min <= start_min ends the next day,
    so 22:00-06:00 on Friday runs into Saturday morning and 00:00-00:00 is a whole day."""

    name: str
    days: frozenset[int]
    start_min: int
    end_min: int
    action: Action
    max_current_a: float | None = None  # cap windows only
    groups: frozenset[str] = frozenset()  # empty: everyone

    def __post_init__(self) -> None:
        if not self.days or not self.days <= frozenset(range(7)):
            raise ValueError(f"window {self.name!r}: days must be a non-empty subset of 0..6")
        if not 0 <= self.start_min < MINUTES_PER_DAY:
            raise ValueError(f"window {self.name!r}: start must be 00:00..23:59")
        if not 0 <= self.end_min <= MINUTES_PER_DAY:
            raise ValueError(f"window {self.name!r}: end must be 00:00..24:00")
        if (self.action is Action.CAP) != (self.max_current_a is not None):
            raise ValueError(f"window {self.name!r}: max_current_a goes with action = cap only")
        if self.max_current_a is not None and not self.max_current_a >= 0:
            raise ValueError(f"window {self.name!r}: max_current_a must be >= 0")

    def applies_to(self, group: str | None) -> bool:
        return not self.groups or group in self.groups


@dataclass(frozen=True, slots=True)
class Schedule:
    """The charger's windows. tz is built by the config (zoneinfo.ZoneInfo(key)), so the
    core never reads the time zone database itself."""

    tz: tzinfo
    windows: tuple[Window, ...] = ()
    unsynced: UnsyncedRule = UnsyncedRule.IGNORE


@dataclass(frozen=True, slots=True)
class Decision:
    """allowed and cap_a (A, None: no cap) hold until until_utc, the next instant the
    decision or its reason changes (None: never); the shell arms a wall-clock timer on it."""

    allowed: bool
    cap_a: float | None
    until_utc: datetime | None
    reason: str


def parse_hhmm(text: str) -> int:
    """"HH:MM" (00:00..24:00) as minutes after midnight; ValueError otherwise."""
    hh, sep, mm = text.partition(":")
    if not sep or len(mm) != 2 or not hh.isdigit() or not mm.isdigit():
        raise ValueError(f"expected HH:MM, got {text!r}")
    minutes = int(hh) * 60 + int(mm)
    if int(mm) > 59 or minutes > MINUTES_PER_DAY:
        raise ValueError(f"expected 00:00..24:00, got {text!r}")
    return minutes


def first_instant(tz: tzinfo, wall: datetime) -> datetime:
    """The first instant (UTC) at which the wall clock of tz reads `wall` (naive) or later:
    the jump for a time in the spring gap, the first pass for a repeated time."""
    first = wall.replace(tzinfo=tz, fold=0).astimezone(timezone.utc)
    if _wall(tz, first) == wall:
        return first
    # In a gap: fold=0 and fold=1 straddle the jump; find it to the second.
    other = wall.replace(tzinfo=tz, fold=1).astimezone(timezone.utc)
    lo, hi = sorted((int(first.timestamp()), int(other.timestamp())))
    while hi - lo > 1:  # invariant: wall(lo) < wall <= wall(hi)
        mid = (lo + hi) // 2
        if _wall(tz, datetime.fromtimestamp(mid, timezone.utc)) >= wall:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, timezone.utc)


def evaluate(schedule: Schedule, group: str | None, when_utc: datetime,
             clock_synced: bool = True) -> Decision:
    """The windows' decision for a session of `group` (None: no group) at when_utc."""
    if when_utc.tzinfo is None:
        raise ValueError("when_utc must be an aware datetime")
    if not clock_synced and schedule.unsynced is not UnsyncedRule.APPLY:
        if schedule.unsynced is UnsyncedRule.FORBID:
            return Decision(False, None, None, "clock not synchronized: waiting for it")
        return Decision(True, None, None, "clock not synchronized: windows not applied")
    windows = [w for w in schedule.windows if w.applies_to(group)]
    has_allow = any(w.action is Action.ALLOW for w in windows)
    spans, horizon = _occurrences(schedule.tz, windows, when_utc)
    now = _decide(spans, has_allow, when_utc)
    boundaries = sorted({t for _, _, start, end in spans for t in (start, end)
                         if when_utc < t < horizon})
    for t in boundaries:
        if _decide(spans, has_allow, t) != now:
            return Decision(now[0], now[1], t, now[2])
    return Decision(now[0], now[1], None, now[2])


def _wall(tz: tzinfo, instant: datetime) -> datetime:
    return instant.astimezone(tz).replace(tzinfo=None)


Span = tuple[int, "Window", datetime, datetime]  # index in the list, window, start, end (UTC)


def _occurrences(tz: tzinfo, windows: list[Window], when_utc: datetime) -> tuple[list[Span], datetime]:
    """Every occurrence (index in windows, window, start, end in UTC) that can matter from
    when_utc up to the horizon, and the horizon: the local day _LOOK_AHEAD_DAYS ahead."""
    today = when_utc.astimezone(tz).date()
    spans: list[Span] = []
    for offset in range(-_LOOK_BACK_DAYS, _LOOK_AHEAD_DAYS):
        day = today + timedelta(days=offset)
        midnight = datetime.combine(day, time())
        for index, w in enumerate(windows):
            if day.weekday() not in w.days:
                continue
            end_min = w.end_min if w.end_min > w.start_min else w.end_min + MINUTES_PER_DAY
            start = first_instant(tz, midnight + timedelta(minutes=w.start_min))
            end = first_instant(tz, midnight + timedelta(minutes=end_min))
            spans.append((index, w, start, end))
    horizon = first_instant(tz, datetime.combine(today + timedelta(days=_LOOK_AHEAD_DAYS),
                                                 time()))
    return spans, horizon


def _decide(spans: list[Span], has_allow: bool, at: datetime) -> tuple[bool, float | None, str]:
    """(allowed, cap_a, reason) at one instant, by the module's precedence rule; among
    equals, the window listed first gives the reason."""
    active = [w for _, w, start, end in sorted(spans, key=lambda s: s[0]) if start <= at < end]
    for w in active:
        if w.action is Action.FORBID:
            return False, None, f"forbidden by window {w.name!r}"
    allow = next((w for w in active if w.action is Action.ALLOW), None)
    if has_allow and allow is None:
        return False, None, OUTSIDE_ALLOWED
    caps = [w for w in active if w.action is Action.CAP]
    if caps:
        # a cap window always has max_current_a (Window checks it); min() keeps the first of equals
        cap = min(caps, key=lambda w: w.max_current_a if w.max_current_a is not None else math.inf)
        return True, cap.max_current_a, f"capped at {cap.max_current_a:g} A by window {cap.name!r}"
    if allow is not None:
        return True, None, f"allowed by window {allow.name!r}"
    return True, None, "no window applies"
