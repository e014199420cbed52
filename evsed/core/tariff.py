"""Tariffs: the host's energy cost by time-of-use window and the driver's price per card group,
and what one session cost and earned, split exactly at window boundaries and DST changes.

Pure: every instant is an argument (timezone-aware datetimes), nothing reads the clock.

Rounding rule (the only one): every money component (the host's energy cost; the driver's
energy, time, session and idle charge) is computed exactly, as a Fraction of the currency's
minor unit, and rounded once, half to even, to an integer number of minor units. Totals are
sums of rounded components. Prices are exact Decimals in major units (EUR, not cents), since
a per-kWh price often has fractions of a cent.

Energy between two consecutive meter samples is taken to flow evenly between them (the
samples are all there is); a session is never spread evenly from start to stop when samples
exist. A sample interval is "drawing" when its energy rose or its closing sample's power is
at least DRAWING_W; charging time is the sum of drawing intervals, idle time runs from the end
of the last drawing interval to the stop (the whole session when the EV never drew).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from types import MappingProxyType
from typing import Iterable, Mapping, Sequence
from zoneinfo import ZoneInfo

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DRAWING_W = 50  # below this an EV with a stuck counter is not drawing
ZERO = Decimal(0)


# --- windows -------------------------------------------------------------------------------
# Same syntax as the policy windows (days = ["mon", ...], start = "22:00", end = "06:00");
# kept self-contained here so the two can be unified later without touching the money.


@dataclass(frozen=True)
class Window:
    """A weekly window in local wall-clock time. A window whose end is not after its start runs
    past midnight into the next day (days name the day it starts); start == end is all day."""

    days: frozenset[int]  # 0 = Monday
    start: dt.time
    end: dt.time

    @classmethod
    def parse(cls, days: Sequence[str], start: str, end: str) -> Window:
        """From config text; ValueError names the bad part."""
        bad = [d for d in days if d not in DAYS]
        if bad or not days:
            raise ValueError(f"days: expected some of {', '.join(DAYS)}, got {list(days)!r}")
        return cls(frozenset(DAYS.index(d) for d in days), _hhmm(start, "start"), _hhmm(end, "end"))

    def contains(self, local: dt.datetime) -> bool:
        """Whether a local wall-clock time lies in the window."""
        t, day = local.time(), local.weekday()
        if self.start == self.end:
            return day in self.days
        if self.start < self.end:
            return day in self.days and self.start <= t < self.end
        return (day in self.days and t >= self.start) or ((day - 1) % 7 in self.days and t < self.end)

    def to_dict(self) -> dict[str, object]:
        return {"days": [DAYS[d] for d in sorted(self.days)], "start": self.start.strftime("%H:%M"),
                "end": self.end.strftime("%H:%M")}


def _hhmm(text: str, what: str) -> dt.time:
    try:
        hh, mm = text.split(":")
        if len(hh) == 2 and len(mm) == 2:
            return dt.time(int(hh), int(mm))
    except ValueError:
        pass
    raise ValueError(f"{what}: expected HH:MM (00:00-23:59), got {text!r}")


# --- tariff inputs (the config parses into these) --------------------------------------------


@dataclass(frozen=True)
class EnergyRate:
    """The host's energy cost per kWh (major units) inside a window."""

    name: str
    window: Window
    per_kwh: Decimal


@dataclass(frozen=True)
class DriverPrice:
    """What a card group pays, in major units: per kWh, per hour of charging, per session, and an
    idle (parking) fee per hour after the EV stopped drawing, past a grace time, up to a cap."""

    name: str = "default"
    per_kwh: Decimal = ZERO
    per_hour: Decimal = ZERO
    per_session: Decimal = ZERO
    idle_per_hour: Decimal = ZERO
    idle_grace_s: int = 0
    idle_cap: Decimal | None = None  # None: no cap


@dataclass(frozen=True)
class Tariff:
    """The whole [tariff] table: host rates by window (first match wins, else energy_per_kwh),
    driver prices by card group (else default_price), currency and its minor-unit decimals."""

    name: str = "default"
    currency: str = "EUR"
    decimals: int = 2
    energy_per_kwh: Decimal = ZERO
    energy: tuple[EnergyRate, ...] = ()
    default_price: DriverPrice = DriverPrice()
    prices: Mapping[str, DriverPrice] = field(default_factory=lambda: MappingProxyType({}))

    def pricing(self, group: str, timezone: str) -> Pricing:
        """What applies to one session of a card in `group` at a charger in `timezone`."""
        return Pricing(self.name, timezone, self.currency, self.decimals, self.energy_per_kwh, self.energy,
                       self.prices.get(group, self.default_price))


@dataclass(frozen=True)
class Pricing:
    """The tariff one session runs under; stored with the session as JSON (the tariff used)."""

    tariff: str
    timezone: str
    currency: str
    decimals: int
    energy_per_kwh: Decimal
    energy: tuple[EnergyRate, ...]
    price: DriverPrice

    def host_per_kwh(self, local: dt.datetime) -> Decimal:
        for rate in self.energy:
            if rate.window.contains(local):
                return rate.per_kwh
        return self.energy_per_kwh

    def to_json(self) -> str:
        p = self.price
        return json.dumps({
            "tariff": self.tariff, "timezone": self.timezone, "currency": self.currency,
            "decimals": self.decimals, "energy_per_kwh": str(self.energy_per_kwh),
            "energy": [{"name": r.name, **r.window.to_dict(), "per_kwh": str(r.per_kwh)} for r in self.energy],
            "price": {"name": p.name, "per_kwh": str(p.per_kwh), "per_hour": str(p.per_hour),
                      "per_session": str(p.per_session), "idle_per_hour": str(p.idle_per_hour),
                      "idle_grace_s": p.idle_grace_s,
                      "idle_cap": None if p.idle_cap is None else str(p.idle_cap)}},
            separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Pricing:
        d = json.loads(text)
        p = d["price"]
        return cls(d["tariff"], d["timezone"], d["currency"], int(d["decimals"]), Decimal(d["energy_per_kwh"]),
                   tuple(EnergyRate(r["name"], Window.parse(r["days"], r["start"], r["end"]), Decimal(r["per_kwh"]))
                         for r in d["energy"]),
                   DriverPrice(p["name"], Decimal(p["per_kwh"]), Decimal(p["per_hour"]), Decimal(p["per_session"]),
                               Decimal(p["idle_per_hour"]), int(p["idle_grace_s"]),
                               None if p["idle_cap"] is None else Decimal(p["idle_cap"])))


# --- what a session cost and earned ---------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """A meter reading during a session: when, the import register in Wh, total power in W."""

    at: dt.datetime
    energy_wh: int
    power_w: int | None = None


@dataclass(frozen=True)
class Charge:
    """A session's totals; money in integer minor units of `currency`."""

    energy_wh: int
    duration_s: int
    charging_s: int
    idle_s: int
    currency: str
    decimals: int
    cost: int  # the host's energy cost
    revenue_energy: int
    revenue_time: int
    revenue_session: int
    revenue_idle: int

    @property
    def revenue(self) -> int:
        return self.revenue_energy + self.revenue_time + self.revenue_session + self.revenue_idle


def round_half_even(x: Fraction) -> int:
    """The one rounding rule: to the nearest integer, a tie to the even one."""
    return round(x)  # Fraction.__round__ rounds half to even, exactly


def charge(pricing: Pricing, start: dt.datetime, stop: dt.datetime, meter_start_wh: int,
           meter_stop_wh: int, samples: Iterable[Sample] = ()) -> Charge:
    """Cost and revenue of one session from its start and stop readings and the samples between.

    Samples outside (start, stop) are ignored; a counter that goes down is held (never negative).
    """
    points = [Sample(start, meter_start_wh)]
    for s in samples:
        if start < s.at < stop:
            points.append(Sample(s.at, max(s.energy_wh, points[-1].energy_wh), s.power_w))
    points.append(Sample(stop, max(meter_stop_wh, points[-1].energy_wh)))
    tz = ZoneInfo(pricing.timezone)
    edges = price_edges(pricing, tz, start, stop)
    minor = Fraction(10) ** pricing.decimals
    cost = Fraction(0)  # in major units x Wh / 1000 until the end
    charging = dt.timedelta()
    drew_until = start
    for a, b in zip(points, points[1:]):
        wh = b.energy_wh - a.energy_wh
        span = b.at - a.at
        if wh > 0 or (b.power_w or 0) >= DRAWING_W:
            charging += span
            drew_until = b.at
        if wh <= 0:
            continue
        if span <= dt.timedelta():  # two readings at one instant: the energy is priced there
            cost += wh * Fraction(pricing.host_per_kwh(a.at.astimezone(tz)))
            continue
        cuts = [a.at] + [e for e in edges if a.at < e < b.at] + [b.at]
        for lo, hi in zip(cuts, cuts[1:]):
            share = Fraction(wh) * _seconds(hi - lo) / _seconds(span)
            cost += share * Fraction(pricing.host_per_kwh((lo + (hi - lo) / 2).astimezone(tz)))
    energy_wh = points[-1].energy_wh - points[0].energy_wh
    p = pricing.price
    idle_s = _seconds(stop - drew_until)
    idle_billed = max(Fraction(0), idle_s - p.idle_grace_s) * Fraction(p.idle_per_hour) / 3600
    if p.idle_cap is not None:
        idle_billed = min(idle_billed, Fraction(p.idle_cap))
    return Charge(
        energy_wh=energy_wh, duration_s=int(_seconds(stop - start)), charging_s=int(_seconds(charging)),
        idle_s=int(idle_s), currency=pricing.currency, decimals=pricing.decimals,
        cost=round_half_even(cost / 1000 * minor),
        revenue_energy=round_half_even(Fraction(energy_wh) * Fraction(p.per_kwh) / 1000 * minor),
        revenue_time=round_half_even(_seconds(charging) * Fraction(p.per_hour) / 3600 * minor),
        revenue_session=round_half_even(Fraction(p.per_session) * minor),
        revenue_idle=round_half_even(idle_billed * minor))


def _seconds(td: dt.timedelta) -> Fraction:
    return Fraction(td // dt.timedelta(microseconds=1), 1_000_000)


def price_edges(pricing: Pricing, tz: ZoneInfo, start: dt.datetime, stop: dt.datetime) -> list[dt.datetime]:
    """Every instant in [start, stop] where the host's price may change: each window edge on
    each local day (both readings of an ambiguous wall time) and each UTC offset change (a
    window edge inside a skipped hour takes effect at the change)."""
    if not pricing.energy:
        return []
    first = start.astimezone(tz).date() - dt.timedelta(days=1)
    last = stop.astimezone(tz).date() + dt.timedelta(days=1)
    times = {t for r in pricing.energy for t in (r.window.start, r.window.end)}
    edges: set[dt.datetime] = set()
    day = first
    while day <= last:
        for t in times:
            for fold in (0, 1):
                edges.add(dt.datetime.combine(day, t, tz).replace(fold=fold).astimezone(dt.timezone.utc))
        lo = dt.datetime.combine(day, dt.time(), tz).astimezone(dt.timezone.utc)
        hi = lo + dt.timedelta(days=1)
        if lo.astimezone(tz).utcoffset() != hi.astimezone(tz).utcoffset():
            edges.add(_offset_change(tz, lo, hi))
        day += dt.timedelta(days=1)
    return sorted(e for e in edges if start <= e <= stop)


def _offset_change(tz: ZoneInfo, lo: dt.datetime, hi: dt.datetime) -> dt.datetime:
    """The first whole second in (lo, hi] with hi's UTC offset (one change between them)."""
    want = hi.astimezone(tz).utcoffset()
    a, b = 0, int((hi - lo).total_seconds())
    while b - a > 1:
        mid = (a + b) // 2
        if (lo + dt.timedelta(seconds=mid)).astimezone(tz).utcoffset() == want:
            b = mid
        else:
            a = mid
    return lo + dt.timedelta(seconds=b)


def format_money(minor: int, decimals: int) -> str:
    """Integer minor units as major units with a dot: 1234, 2 -> '12.34'; -5, 2 -> '-0.05'."""
    if decimals == 0:
        return str(minor)
    sign, m = ("-" if minor < 0 else ""), abs(minor)
    return f"{sign}{m // 10 ** decimals}.{m % 10 ** decimals:0{decimals}d}"
