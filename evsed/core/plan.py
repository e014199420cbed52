"""Charging plans, pure: which hours deliver a session's energy by its departure at the least
cost under a price curve, and what the plan allows at an instant (the `plan` limit source).

Times are POSIX seconds (int), power W, energy Wh, prices per kWh in major units (exact
Fractions or Decimals). Nothing here reads the clock.

The rule: cost is linear in the energy taken inside each price segment and every segment can
give at most its power times its length, so the cheapest plan fills the cheapest segments
first (a fractional knapsack, optimal; among equal prices the earlier segment first, to finish
sooner). A segment taken only in part is charged at its end when the next segment is charged
too, else from its start, so that it adds no stop and start of the contactor where it can. Power is planned below what
the limit chain allows by a safety margin, so an EV that draws a little less still finishes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Iterable, Sequence
from zoneinfo import ZoneInfo

from evsed.core import prices, windows
from evsed.core.tariff import Pricing, Tariff, price_edges

MARGIN = Fraction(1, 10)  # plan at 90 % of the power the chain allows


@dataclass(frozen=True, slots=True)
class Segment:
    """A span of the price curve: [start_s, end_s), its price, and the power the limit chain
    is expected to allow in it (0 where a window forbids charging)."""

    start_s: int
    end_s: int
    price: Fraction
    power_w: Fraction

    @property
    def capacity_wh(self) -> Fraction:
        return self.power_w * (self.end_s - self.start_s) / 3600


@dataclass(frozen=True, slots=True)
class Slot:
    """A planned span of charging: [start_s, end_s) at power_w, its energy and price."""

    start_s: int
    end_s: int
    power_w: Fraction
    price: Fraction

    @property
    def energy_wh(self) -> Fraction:
        return self.power_w * (self.end_s - self.start_s) / 3600

    @property
    def cost(self) -> Fraction:
        return self.energy_wh * self.price / 1000


@dataclass(frozen=True, slots=True)
class Schedule:
    """The chosen slots in time order; feasible False when the energy cannot be delivered by the
    departure (then every slot with power is taken: charge as fast as allowed)."""

    slots: tuple[Slot, ...]
    feasible: bool
    energy_wh: Fraction  # what the slots deliver at the planned power
    shortfall_wh: Fraction  # what is missing at the departure (0 when feasible)

    @property
    def cost(self) -> Fraction:
        return sum((s.cost for s in self.slots), Fraction(0))

    @property
    def finish_s(self) -> int | None:
        return self.slots[-1].end_s if self.slots else None


def segments(curve: Iterable[tuple[int, int, Fraction | Decimal]], start_s: int, end_s: int,
             power_w: float | Fraction, margin: Fraction = MARGIN,
             caps: Iterable[tuple[int, int, float | Fraction]] = ()) -> list[Segment]:
    """The price curve cut to [start_s, end_s) at the planned power: power_w, or a cap's power
    where one of `caps` (start_s, end_s, W: a window that caps or forbids) is lower, less the
    margin. Gaps in the curve are not planned in (no price known: not chosen)."""
    def planned(w: float | Fraction) -> Fraction:
        return max(Fraction(0), Fraction(w) * (1 - margin))
    full = planned(power_w)
    lower = sorted((a, b, min(full, planned(w))) for a, b, w in caps if b > a and a < end_s and b > start_s)
    out: list[Segment] = []
    for lo, hi, price in sorted(curve):
        lo, hi = max(lo, start_s), min(hi, end_s)
        if hi <= lo:
            continue
        cost = price if isinstance(price, Fraction) else Fraction(price)
        inside = [c for c in lower if c[0] < hi and c[1] > lo]
        cuts = sorted({lo, hi, *(t for a, b, _ in inside for t in (a, b) if lo < t < hi)}) if inside else [lo, hi]
        for a, b in zip(cuts, cuts[1:]):
            power = min([full, *(w for c0, c1, w in inside if c0 <= a and b <= c1)]) if inside else full
            last = out[-1] if out else None
            if last is not None and last.end_s == a and last.price == cost and last.power_w == power:
                out[-1] = Segment(last.start_s, b, cost, power)
            else:
                out.append(Segment(a, b, cost, power))
    return out


def schedule(segs: Sequence[Segment], energy_wh: float | Fraction) -> Schedule:
    """The cheapest slots delivering energy_wh (see the module's rule)."""
    need = Fraction(energy_wh)
    if need <= 0:
        return Schedule((), True, Fraction(0), Fraction(0))
    chosen: list[Slot] = []
    got = Fraction(0)
    partial: tuple[Segment, int] | None = None
    for seg in sorted(segs, key=_cheapest_first):
        if got >= need:
            break
        if seg.power_w <= 0:
            continue
        if seg.capacity_wh <= need - got:
            chosen.append(Slot(seg.start_s, seg.end_s, seg.power_w, seg.price))
            got += seg.capacity_wh
            continue
        needed_s = int(-(-((need - got) * 3600) // seg.power_w))  # ceil: whole seconds
        partial = (seg, needed_s)
        got += seg.power_w * needed_s / 3600
    if partial is not None:
        seg, needed_s = partial
        # beside a slot already chosen, so that it adds no stop and start of its own
        if any(s.start_s == seg.end_s for s in chosen) and not any(s.end_s == seg.start_s for s in chosen):
            chosen.append(Slot(seg.end_s - needed_s, seg.end_s, seg.power_w, seg.price))
        else:
            chosen.append(Slot(seg.start_s, seg.start_s + needed_s, seg.power_w, seg.price))
    chosen.sort(key=lambda s: s.start_s)
    feasible = got >= need
    return Schedule(tuple(_merge(chosen)), feasible, got, Fraction(0) if feasible else need - got)


def _cheapest_first(seg: Segment) -> tuple[float, int]:
    """Price, then start: the float of a price sorts as the price does (prices carry at most six
    decimals), and a sort of hundreds of segments by Fraction took milliseconds on the loop."""
    return float(seg.price), seg.start_s


def _merge(slots: list[Slot]) -> list[Slot]:
    """Adjacent slots at one power and price read as one."""
    out: list[Slot] = []
    for s in slots:
        last = out[-1] if out else None
        if last and last.end_s == s.start_s and last.power_w == s.power_w and last.price == s.price:
            out[-1] = Slot(last.start_s, s.end_s, s.power_w, s.price)
        else:
            out.append(s)
    return out


def charging_now(plan: Schedule, now_s: float) -> bool:
    """Whether the plan has the EV charging at now_s."""
    return any(s.start_s <= now_s < s.end_s for s in plan.slots)


def next_change_s(plan: Schedule, now_s: float) -> int | None:
    """When charging_now next changes after now_s (None: never again)."""
    now = charging_now(plan, now_s)
    edges = sorted({t for s in plan.slots for t in (s.start_s, s.end_s) if t > now_s})
    return next((t for t in edges if charging_now(plan, t) != now), None)


@dataclass(frozen=True, slots=True)
class Decision:
    """What a plan does now. state: "waiting" (held paused until its next slot), "charging" (in
    a slot), "done" (its energy is delivered: held paused until the departure) or "infeasible"
    (it cannot finish in time: no hold, charging as fast as allowed)."""

    state: str
    schedule: Schedule
    next_s: int | None  # when the state changes by itself: a slot's edge, or the departure
    reason: str  # for people: "plan: waiting for 01:00, cheapest hours"

    @property
    def holds(self) -> bool:
        """Whether the plan holds the EV paused now (PWM off, session kept)."""
        return self.state in ("waiting", "done")


def decide(energy_wh: int, delivered_wh: int, departure_s: int, now_s: int, segs: Sequence[Segment],
           tz: dt.tzinfo) -> Decision:
    """The plan for what is still to deliver (energy_wh less delivered_wh, Wh) by departure_s,
    over the segments from now_s on; times in reasons in tz."""
    by = _local(departure_s, now_s, tz)
    need = Fraction(energy_wh - delivered_wh)
    if need <= 0:
        return Decision("done", Schedule((), True, Fraction(0), Fraction(0)), departure_s,
                        f"plan: {_kwh(energy_wh)} delivered; paused until {by} (departure)")
    chosen = schedule(segs, need)
    if not chosen.feasible:
        return Decision("infeasible", chosen, departure_s,
                        f"plan: {_kwh(need)} cannot be delivered by {by} ({_kwh(chosen.shortfall_wh)} short): "
                        "charging as fast as allowed")
    change = next_change_s(chosen, now_s)
    if charging_now(chosen, now_s):
        until = _local(change, now_s, tz) if change is not None else by
        return Decision("charging", chosen, change, f"plan: charging until {until}")
    return Decision("waiting", chosen, change, f"plan: waiting for {_local(change or departure_s, now_s, tz)}, "
                                               "cheapest hours")


def _kwh(wh: int | Fraction) -> str:
    return f"{float(wh) / 1000:.1f} kWh"


def _local(t: int, now_s: int, tz: dt.tzinfo) -> str:
    """A time as people read it on the charger: 01:00, or Tue 01:00 a day or more ahead."""
    when = dt.datetime.fromtimestamp(t, tz)
    return when.strftime("%H:%M") if t - now_s < 86_400 else when.strftime("%a %H:%M")


def next_departure(by_min: int, days: frozenset[int], after: dt.datetime, tz: dt.tzinfo) -> dt.datetime | None:
    """The first instant after `after` at which the local clock reads by_min (minutes after
    midnight) on one of `days` (0 = Monday), DST-correct (windows.first_instant); None: no such
    day within a week (`days` empty)."""
    local = after.astimezone(tz).date()
    for offset in range(9):
        day = local + dt.timedelta(days=offset)
        if day.weekday() not in days:
            continue
        when = windows.first_instant(tz, dt.datetime.combine(day, dt.time()) + dt.timedelta(minutes=by_min))
        if when > after:
            return when
    return None


def window_caps(schedule: windows.Schedule, group: str | None, start_s: int, end_s: int, synced: bool,
                w_per_a: float = 1.0) -> list[tuple[int, int, float]]:
    """The spans of [start_s, end_s) where the time-of-use windows forbid charging (0) or cap it
    (the cap in A, times w_per_a: in W for segments()' caps)."""
    caps = []
    t = start_s
    while t < end_s:
        d = windows.evaluate(schedule, group, dt.datetime.fromtimestamp(t, dt.timezone.utc), synced)
        until = min(end_s, int(d.until_utc.timestamp())) if d.until_utc is not None else end_s
        if not d.allowed or d.cap_a is not None:
            caps.append((t, until, 0.0 if not d.allowed else (d.cap_a or 0.0) * w_per_a))
        t = max(until, t + 1)
    return caps


def plan_curve(tariff: Tariff | None, group: str, timezone: str, dynamic: prices.Curve | None, start_s: int,
               end_s: int) -> list[prices.Span]:
    """The prices a plan uses over [start_s, end_s): the dynamic curve where it has prices, the
    group's tariff elsewhere, else one price everywhere (no tariff: as soon as possible)."""
    if tariff is None:
        fallback: list[prices.Span] = [(start_s, end_s, Decimal(0))]
    else:
        fallback = tariff_curve(tariff.pricing(group, timezone), dt.datetime.fromtimestamp(start_s, dt.timezone.utc),
                                dt.datetime.fromtimestamp(end_s, dt.timezone.utc))
    return prices.combine(dynamic, fallback, start_s, end_s)


def tariff_curve(pricing: Pricing, start: dt.datetime, end: dt.datetime) -> list[tuple[int, int, Decimal]]:
    """The host's time-of-use tariff as a price curve over [start, end): one span per price,
    cut at every window edge and UTC offset change (DST-correct)."""
    tz = ZoneInfo(pricing.timezone)
    cuts = [start] + [e for e in price_edges(pricing, tz, start, end) if start < e < end] + [end]
    curve: list[tuple[int, int, Decimal]] = []
    for lo, hi in zip(cuts, cuts[1:]):
        price = pricing.host_per_kwh((lo + (hi - lo) / 2).astimezone(tz))
        a, b = int(lo.timestamp()), int(hi.timestamp())
        if curve and curve[-1][2] == price and curve[-1][1] == a:
            curve[-1] = (curve[-1][0], b, price)
        elif b > a:
            curve.append((a, b, price))
    return curve
