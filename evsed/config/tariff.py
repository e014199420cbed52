"""The [tariff] table: the host's energy cost by window and the drivers' prices by card group.

Prices are written in major units (0.37 = 37 cents) and kept as exact Decimals; the money
itself is computed in evsed.core.tariff.
"""

from __future__ import annotations

from decimal import Decimal
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from evsed.core import tariff as tariffs

if TYPE_CHECKING:
    from evsed.config import _Table

PRICE_KEYS = ("per_kwh", "per_hour", "per_session", "idle_per_hour", "idle_grace_s", "idle_cap")


def _money(t: _Table, key: str, default: Decimal | None) -> Decimal | None:
    value = t.get(key, (float, str), None)
    if value is None:
        return default
    try:
        amount = Decimal(str(value))
    except ArithmeticError:
        raise t.error(key, f"expected an amount such as 0.37, got {value!r}") from None
    if not amount.is_finite() or amount < 0 or amount > 10_000:
        raise t.error(key, f"expected an amount 0..10000, got {value!r}")
    return amount


def _price(t: _Table, name: str) -> tariffs.DriverPrice:
    zero = Decimal(0)
    price = tariffs.DriverPrice(
        name=name, per_kwh=_money(t, "per_kwh", zero) or zero, per_hour=_money(t, "per_hour", zero) or zero,
        per_session=_money(t, "per_session", zero) or zero, idle_per_hour=_money(t, "idle_per_hour", zero) or zero,
        idle_grace_s=t.get("idle_grace_s", int, 0, min=0, max=86_400), idle_cap=_money(t, "idle_cap", None))
    t.done()
    return price


def parse(top: _Table) -> tariffs.Tariff | None:
    """The [tariff] table, or None when there is none (sessions then carry no money)."""
    from evsed.config import _Table as Table
    t = top.table("tariff")
    if t is None:
        return None
    currency = t.get("currency", str, "EUR")
    if len(currency) != 3 or not currency.isalpha() or not currency.isupper():
        raise t.error("currency", f"expected an ISO 4217 code such as \"EUR\", got {currency[:20]!r}")
    t.used.add("energy")
    raw: Any = t.data.get("energy", [])
    if not isinstance(raw, list):
        raise t.error("energy", "expected [[tariff.energy]] tables")
    rates = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise t.error("energy", "expected [[tariff.energy]] tables")
        r = Table(t.path, t.lines, item, f"tariff.energy[{i}]")
        name = r.get("name", str, f"rate {i + 1}")
        days = r.get("days", list, list(tariffs.DAYS))
        try:
            window = tariffs.Window.parse(days, r.get("start", str), r.get("end", str))
        except (ValueError, TypeError) as exc:  # the message starts with the part it is about
            key, _, message = str(exc).partition(": ")
            raise (r.error(key, message) if key in ("days", "start", "end") else r.error("start", str(exc))) from None
        per_kwh = _money(r, "per_kwh", None)
        if per_kwh is None:
            raise r.error("per_kwh", "missing (required)")
        r.done()
        rates.append(tariffs.EnergyRate(name, window, per_kwh))
    default = _price(t.table("price") or Table(t.path, t.lines, {}, "tariff.price"), "default")
    groups = t.table("group")
    prices = {}
    if groups is not None:
        for group in groups.data:
            groups.used.add(group)
            table = groups.table(group)
            assert table is not None
            prices[group] = _price(table, group)
        groups.done()
    tariff = tariffs.Tariff(
        name=t.get("name", str, "default"), currency=currency, decimals=t.get("decimals", int, 2, min=0, max=4),
        energy_per_kwh=_money(t, "energy_per_kwh", Decimal(0)) or Decimal(0), energy=tuple(rates),
        default_price=default, prices=MappingProxyType(prices))
    t.done()
    return tariff
