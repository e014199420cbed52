"""The charging plans on the control socket (docs/protocol.md, Plans): a plan as status shows it,
the commands that set, cancel and show plans and hand the daemon a price curve (plan.changed is
with the other events, so that `evsed status` reads a plan without importing them).

Standard library only, like the rest of the protocol; evsed.protocol holds these records too.
"""

from __future__ import annotations

import json as _json  # private: evsed.protocol re-exports this module's public names

from evsed.protocol_types import (
    ADMIN, MQTT, PRICES, ROLES, WEB, Command, ConnectorId, IdTag, Reply, Sentence, Tag, Watts, Wh,
)
from evsed.wire import Annotated, Items, Literal, Range, Record, Text, WireError

PlanState = Literal["pending", "measuring", "waiting", "charging", "done", "infeasible"]
Origin = Literal["cli", "mqtt", "web", "group", "scenario", "command"]
PriceSource = Literal["mqtt", "file", "url", "command"]
Price = Annotated[float, Range(-10_000, 10_000)]  # per kWh in major units, as [tariff] allows (negative too)
Money = Annotated[float, Range(-1e9, 1e9)]
Currency = Annotated[str, Text(8)]
Percent = Annotated[float, Range(0, 100)]
Time = Annotated[str, Text(32, min=10, pattern=r"[0-9A-Za-z:+.\-]+")]  # ISO 8601 with its offset: ASCII
SLOTS_SHOWN = 8  # the first slots a plan carries in status (its finish and cost count them all)
SLOTS_PLANS = 96  # ... and in `plans` (a day of quarter-hours)
CARD_PLANS = 8  # plans waiting for a card's next session
Words = Annotated[str, Text(120, clip=True)]  # a plan's reason: "plan: waiting for 01:00, cheapest hours"
MAX_PRICES = 512  # a curve handed over (five days of quarter-hours); and `plans` shows at most this many
PRICES_MAX_BYTES = 60 * 1024  # a curve as JSON that a service reads: the control socket takes a request of 64 KiB


class PlanSlot(Record):
    """A stretch the plan charges in: local times, the power it plans with, the price there."""

    start: Time
    end: Time
    power_w: Watts
    price: Price


class PricePoint(Record):
    start: Time
    end: Time
    price: Price


class PlanNow(Record):
    """A charging plan: `energy_wh` by `by`; `state` pending (no session yet), measuring (the EV's
    draw first), waiting (held paused until its next slot), charging, done (held until `by`) or
    infeasible (cannot finish in time: charging as fast as allowed); `reason` says it for people.
    `slots` (the first 8; `plans` gives 96), `finish` and `cost` under `prices` (where the curve comes from: tariff,
    none, or a dynamic curve's source); `plans` shows the prices themselves."""

    energy_wh: Wh
    by: Time
    origin: Origin
    state: PlanState
    reason: Words = ""
    delivered_wh: Wh = 0
    slots: Annotated[tuple[PlanSlot, ...], Items(SLOTS_SHOWN)] = ()
    finish: Time | None = None
    cost: Money | None = None
    currency: Currency = ""
    shortfall_wh: Wh = 0
    prices: Literal["tariff", "none", "mqtt", "file", "url", "command"] = "none"


class WaitingPlan(Record):
    """A plan waiting for a card's next session."""

    energy_wh: Wh
    by: Time
    origin: Origin
    id_tag: Tag


class PlanReply(Reply):
    connector: ConnectorId | None = None
    card: IdTag | None = None
    plan: PlanNow | None = None  # the connector's plan as status shows it
    waiting: WaitingPlan | None = None  # the card's


class SetPlan(Command[PlanReply], cmd="plan", roles=(ADMIN, WEB, MQTT)):
    """Charge `energy_kwh` (or to `soc_pct` from `soc_now_pct`, with the card group's battery_kwh)
    by `by` (HH:MM: the next time the charger's clock reads it; or an ISO time), in the cheapest
    hours; for a connector (its session, else its next) or for a `card`'s next session."""

    connector: ConnectorId | None = None
    card: IdTag | None = None
    energy_kwh: Annotated[float, Range(0.1, 300)] | None = None
    soc_pct: Percent | None = None
    soc_now_pct: Percent | None = None
    by: Annotated[str, Text(40, min=4)]
    origin: Origin = "command"

    def validate(self) -> None:
        if self.energy_kwh is None and self.soc_pct is None:
            raise WireError("plan: give energy_kwh, or soc_pct with soc_now_pct")


class CancelPlanReply(Reply):
    cancelled: bool


class CancelPlan(Command[CancelPlanReply], cmd="plan-cancel", roles=(ADMIN, WEB, MQTT)):
    """Drop the connector's plan (or the one waiting for `card`)."""

    connector: ConnectorId | None = None
    card: IdTag | None = None


class ConnectorPlan(PlanNow):
    """A connector's plan as `plans` shows it: with its first 96 slots."""

    connector: ConnectorId
    slots: Annotated[tuple[PlanSlot, ...], Items(SLOTS_PLANS)] = ()


class PlansReply(Reply):
    plans: Annotated[tuple[ConnectorPlan, ...], Items(8)]
    card_plans: Annotated[tuple[WaitingPlan, ...], Items(CARD_PLANS)] = ()
    prices: Literal["tariff", "none", "mqtt", "file", "url", "command"]
    curve: Annotated[tuple[PricePoint, ...], Items(MAX_PRICES)] = ()


class Plans(Command[PlansReply], cmd="plans", roles=ROLES):
    """Every plan, and the prices plans use from now to the last departure (at least a day)."""


class PriceEntry(Record):
    """One price of a curve: `end` left out runs to the next entry's start."""

    start: Time
    end: Time | None = None
    price: Price


class PricesReply(Reply):
    entries: Annotated[int, Range(1, MAX_PRICES)]
    start: Time
    end: Time


class SetPrices(Command[PricesReply], cmd="prices", roles=(ADMIN, MQTT, PRICES)):
    """A dynamic price curve (day-ahead hourly or quarter-hourly): in time order, over at most 8 days;
    used where it has prices, the host's tariff elsewhere. Refused whole when an entry is wrong."""

    prices: Annotated[tuple[PriceEntry, ...], Items(MAX_PRICES)]
    source: PriceSource = "command"


def prices_from_json(body: bytes, source: PriceSource) -> SetPrices:
    """The `prices` command for a curve as JSON (README, Charging plans: a list of entries, or
    {"prices": [...]}), as the prices service reads it and the MQTT service receives it; raises
    WireError saying why not (the daemon checks the rest: order, span, the past)."""
    if len(body) > PRICES_MAX_BYTES:
        raise WireError(f"more than {PRICES_MAX_BYTES // 1024} KiB")
    try:
        data = _json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise WireError(f"not JSON: {str(exc)[:120]}") from None
    if isinstance(data, dict) and set(data) == {"prices"}:
        data = data["prices"]
    return SetPrices.from_wire({"prices": data, "source": source})
