"""What the charging plans' commands do (evsed.protocol_plans): set a plan, cancel it, show every
plan with the prices, hand the daemon a price curve. Registered in evsed.shell.commands' table,
so the control socket and the scenarios run them like every other command.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, cast

from evsed import protocol as p
from evsed.core import plan as planner
from evsed.core import prices, windows
from evsed.shell.commands import HANDLERS, HANDLERS_BY_NAME, CommandError, Handler, id_tag
from evsed.shell.planfile import Plan
from evsed.shell.plans import MAX_AHEAD_S, PlanError

if TYPE_CHECKING:
    from evsed.shell.charger import Charger

CURVE_AHEAD_S = 86_400  # `plans` shows the prices from now to the last departure, at least a day


def departure(charger: Charger, by: str) -> int:
    """"07:00" (the next time the charger's clock reads it) or an ISO 8601 time with its offset."""
    now = charger.wallclock()
    if len(by) <= 5:
        try:
            minutes = windows.parse_hhmm(by)
        except ValueError as exc:
            raise CommandError(f"plan: by: {exc}") from None
        when = planner.next_departure(minutes % windows.MINUTES_PER_DAY, frozenset(range(7)), now, charger.tz)
        assert when is not None  # every day is allowed
        return int(when.timestamp())
    try:
        when = dt.datetime.fromisoformat(by.replace("Z", "+00:00"))
    except ValueError:
        raise CommandError(f"plan: by: expected HH:MM or an ISO 8601 time, got {by[:40]!r}") from None
    if when.tzinfo is None:
        raise CommandError(f"plan: by: {by[:40]!r} needs its UTC offset")
    return int(when.timestamp())


def _energy_wh(charger: Charger, cmd: p.SetPlan) -> int:
    """energy_kwh, or soc_pct from soc_now_pct with the battery of the vehicle's card group."""
    if cmd.energy_kwh is not None:
        if cmd.soc_pct is not None:
            raise CommandError("plan: give energy_kwh, or soc_pct with soc_now_pct, not both")
        return round(cmd.energy_kwh * 1000)
    assert cmd.soc_pct is not None  # the record checks one of them is there
    if cmd.soc_now_pct is None:
        raise CommandError("plan: soc_pct needs the vehicle's present state of charge (soc_now_pct)")
    group = _group(charger, cmd)
    battery = charger.config.policy.group(group).battery_kwh
    if battery is None:
        raise CommandError(f"plan: a target state of charge needs the battery size: set battery_kwh in the "
                           f"[[group]] {group!r}" if group else
                           "plan: a target state of charge needs the vehicle's card group and its battery_kwh")
    return max(0, round((cmd.soc_pct - cmd.soc_now_pct) / 100 * battery * 1000))


def _group(charger: Charger, cmd: p.SetPlan) -> str:
    if cmd.card is not None:
        card = charger.auth.local.card(id_tag(cmd.card))
        return card.group if card is not None else ""
    ctrl = charger.connector(cmd.connector)
    return ctrl.session.card_group if ctrl.session is not None else ""


def _plan(charger: Charger, cmd: p.SetPlan) -> p.PlanReply:
    if cmd.card is not None and cmd.connector is not None:
        raise CommandError("plan: for a connector or for a card's next session, not both")
    card = id_tag(cmd.card) if cmd.card is not None else None
    cid = None if card is not None else charger.connector(cmd.connector).id
    try:
        charger.plans.set(Plan(_energy_wh(charger, cmd), departure(charger, cmd.by), cmd.origin, connector=cid,
                               id_tag=card))
    except PlanError as exc:
        raise CommandError(f"plan: {exc}") from None
    if cid is None:
        return p.PlanReply(card=card, waiting=next(w for w in charger.plans.waiting() if w.id_tag == card))
    return p.PlanReply(connector=cid, plan=charger.plans.now(charger.connector(cid)))


def _cancel(charger: Charger, cmd: p.CancelPlan) -> p.CancelPlanReply:
    card = id_tag(cmd.card) if cmd.card is not None else None
    cid = None if card is not None else charger.connector(cmd.connector).id
    return p.CancelPlanReply(cancelled=charger.plans.cancel(cid, card))


def _show(charger: Charger, cmd: p.Plans) -> p.PlansReply:
    plans = charger.plans
    now = int(charger.wallclock().timestamp())
    until = min(max([plan.departure_s for plan in plans.plans.values()] + [now + CURVE_AHEAD_S]), now + MAX_AHEAD_S)
    curve = plans.curve_for(None, now, until)[:p.MAX_PRICES]
    shown = []
    for cid, ctrl in charger.connectors.items():
        now_plan = plans.now(ctrl, slots=p.SLOTS_PLANS)
        if now_plan is not None:
            shown.append(p.ConnectorPlan.from_wire({**now_plan.to_wire(), "connector": cid}))
    return p.PlansReply(plans=tuple(shown), card_plans=plans.waiting(), prices=cast(Any, plans.price_source(until)),
                        curve=tuple(p.PricePoint(start=prices._iso(a), end=prices._iso(b), price=float(price))
                                    for a, b, price in curve))


def _prices(charger: Charger, cmd: p.SetPrices) -> p.PricesReply:
    now = int(charger.wallclock().timestamp())
    entries = [entry.fields_wire() for entry in cmd.prices]
    try:
        curve = prices.parse(entries, cmd.source, now)
    except prices.PriceError as exc:
        raise CommandError(f"prices: {exc}") from None
    if curve.end_s <= now:
        raise CommandError("prices: every entry is in the past")
    charger.plans.set_prices(curve)
    return p.PricesReply(entries=len(curve.spans), start=prices._iso(curve.start_s), end=prices._iso(curve.end_s))


PLAN_HANDLERS: dict[type[p.Command[Any]], Handler] = {p.SetPlan: _plan, p.CancelPlan: _cancel, p.Plans: _show,
                                                      p.SetPrices: _prices}
HANDLERS.update(PLAN_HANDLERS)
HANDLERS_BY_NAME.update({cls.CMD: cls for cls in PLAN_HANDLERS})
