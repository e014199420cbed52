"""Price curves for charging plans, pure: a dynamic curve (day-ahead hourly or quarter-hourly
prices) read from JSON with every part bounded, and the curve a plan uses.

The input is a JSON array of entries, or an object {"prices": [...]}; each entry is
{"start": ISO 8601 with its UTC offset, "end": optional, "price": per kWh in major units}. An
entry without an end runs to the next one's start (the last one: as long as the one before it,
else an hour). Entries are in time order and do not overlap. A plan uses the dynamic prices
where they are known and the host's tariff elsewhere (evsed.core.plan.tariff_curve).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable

MAX_BYTES = 256 * 1024  # a week of quarter-hours is about 60 kB of JSON
MAX_ENTRIES = 512  # five days of quarter-hours (the control socket's request holds this many)
MAX_SPAN_S = 8 * 86_400  # from the first start to the last end
MIN_ENTRY_S, MAX_ENTRY_S = 60, 86_400
MAX_PRICE = Decimal(10_000)  # per kWh, either sign, as [tariff] allows (negative day-ahead prices happen)
ENTRY_KEYS = frozenset({"start", "end", "price"})

Span = tuple[int, int, Decimal]  # [start_s, end_s) POSIX seconds, price per kWh


class PriceError(ValueError):
    """A price curve that cannot be used; the message names the entry and key."""


@dataclass(frozen=True, slots=True)
class Curve:
    """A dynamic price curve: spans in time order, where it came from, when it was received."""

    spans: tuple[Span, ...]
    source: str
    received_s: int

    @property
    def start_s(self) -> int:
        return self.spans[0][0]

    @property
    def end_s(self) -> int:
        return self.spans[-1][1]

    def to_json(self) -> dict[str, Any]:
        """The curve as stored (plans.json) and as `plans` shows it."""
        return {"source": self.source, "received_s": self.received_s,
                "prices": [{"start": _iso(a), "end": _iso(b), "price": float(p)} for a, b, p in self.spans]}

    @classmethod
    def from_json(cls, data: Any) -> Curve:
        if not isinstance(data, dict):
            raise PriceError("expected an object with source, received_s and prices")
        received = data.get("received_s")
        if isinstance(received, bool) or not isinstance(received, int):
            raise PriceError("received_s: expected an integer")
        return parse(data.get("prices"), str(data.get("source", ""))[:32], received)


def parse_text(text: str | bytes, source: str, received_s: int) -> Curve:
    """A curve from JSON text (a file, an MQTT payload, a URL's body); raises PriceError."""
    if len(text) > MAX_BYTES:
        raise PriceError(f"{len(text)} bytes, at most {MAX_BYTES}")
    try:
        data = json.loads(text, parse_float=Decimal, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise PriceError(f"not JSON: {str(exc)[:80]}") from None
    return parse(data, source, received_s)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a price")


def parse(data: Any, source: str, received_s: int) -> Curve:
    """A curve from decoded JSON: a list of entries or {"prices": [...]}; raises PriceError."""
    if isinstance(data, dict):
        if set(data) != {"prices"}:
            raise PriceError("expected a list of prices, or an object with only the key \"prices\"")
        data = data["prices"]
    if not isinstance(data, list):
        raise PriceError("expected a list of {\"start\", \"end\", \"price\"} entries")
    if not data:
        raise PriceError("no prices")
    if len(data) > MAX_ENTRIES:
        raise PriceError(f"{len(data)} entries, at most {MAX_ENTRIES}")
    raw = [_entry(i, item) for i, item in enumerate(data)]
    for i in range(1, len(raw)):
        if raw[i][0] <= raw[i - 1][0]:
            raise PriceError(f"entry {i}: start: not after entry {i - 1}'s (entries in time order)")
    spans: list[Span] = []
    for i, (start, end, price) in enumerate(raw):
        if end is None:
            if i + 1 < len(raw):
                end = raw[i + 1][0]
            else:
                end = start + (spans[-1][1] - spans[-1][0] if spans else 3600)
        if spans and start < spans[-1][1]:
            raise PriceError(f"entry {i}: start: before the end of entry {i - 1} (entries in time order, "
                             "not overlapping)")
        if not MIN_ENTRY_S <= end - start <= MAX_ENTRY_S:
            raise PriceError(f"entry {i}: end: {end - start} s after its start, expected "
                             f"{MIN_ENTRY_S}..{MAX_ENTRY_S}")
        spans.append((start, end, price))
    if spans[-1][1] - spans[0][0] > MAX_SPAN_S:
        raise PriceError(f"spans {(spans[-1][1] - spans[0][0]) / 86_400:.1f} days, at most "
                         f"{MAX_SPAN_S // 86_400}")
    return Curve(tuple(spans), source, received_s)


def _entry(i: int, item: Any) -> tuple[int, int | None, Decimal]:
    if not isinstance(item, dict):
        raise PriceError(f"entry {i}: expected an object with start, end and price")
    unknown = set(item) - ENTRY_KEYS
    if unknown:
        raise PriceError(f"entry {i}: unknown key {sorted(map(str, unknown))[0][:32]!r} "
                         "(start, end and price only)")
    if "start" not in item or "price" not in item:
        raise PriceError(f"entry {i}: {'start' if 'start' not in item else 'price'} missing")
    start = _time(i, "start", item["start"])
    end = _time(i, "end", item["end"]) if item.get("end") is not None else None
    return start, end, _price(i, item["price"])


def _time(i: int, key: str, value: Any) -> int:
    if not isinstance(value, str) or len(value) > 40:
        raise PriceError(f"entry {i}: {key}: expected an ISO 8601 time such as 2026-01-05T22:00:00+01:00")
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise PriceError(f"entry {i}: {key}: not an ISO 8601 time: {value!r}") from None
    if when.tzinfo is None:
        raise PriceError(f"entry {i}: {key}: {value!r} has no UTC offset")
    if not 2000 <= when.year <= 2200:
        raise PriceError(f"entry {i}: {key}: {value!r} is no time a price is for")
    return int(when.timestamp())


def _price(i: int, value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise PriceError(f"entry {i}: price: expected a number per kWh, got {str(value)[:20]!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise PriceError(f"entry {i}: price: {value!r} is not a price")
    try:
        price = Decimal(str(value)) if not isinstance(value, Decimal) else value
    except InvalidOperation:  # pragma: no cover - str() of a finite number always parses
        raise PriceError(f"entry {i}: price: not a number") from None
    if not price.is_finite() or abs(price) > MAX_PRICE:
        raise PriceError(f"entry {i}: price: {str(value)[:20]} out of range -{MAX_PRICE}..{MAX_PRICE} per kWh")
    return price.quantize(Decimal("0.000001"))


def combine(dynamic: Curve | None, fallback: Iterable[Span], start_s: int, end_s: int) -> list[Span]:
    """The curve a plan uses over [start_s, end_s): the dynamic prices where they are known, the
    fallback (the tariff's) elsewhere, in time order."""
    known = [(max(a, start_s), min(b, end_s), p) for a, b, p in (dynamic.spans if dynamic else ())
             if b > start_s and a < end_s]
    out: list[Span] = list(known)
    for a, b, p in fallback:
        a, b = max(a, start_s), min(b, end_s)
        for lo, hi in _uncovered(a, b, known):
            out.append((lo, hi, p))
    return sorted(out)


def _uncovered(a: int, b: int, spans: list[Span]) -> list[tuple[int, int]]:
    """The parts of [a, b) no span covers."""
    out, t = [], a
    for lo, hi, _ in spans:
        if hi <= t or lo >= b:
            continue
        if lo > t:
            out.append((t, lo))
        t = max(t, hi)
    if t < b:
        out.append((t, b))
    return out


def _iso(t: int) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat().replace("+00:00", "Z")
