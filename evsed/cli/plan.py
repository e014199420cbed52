"""`evsed plan`: set a charging plan (20kWh or 80 % by a time), cancel it, show every plan with its
slots and prices; and the plan's lines in `evsed status`."""

from __future__ import annotations

import argparse
import re
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from typing import Any, TypeVar

    from evsed import protocol as p

    R = TypeVar("R", bound=p.Reply)

EXIT_FAILURE = 1


def energy(text: str) -> tuple[str, float]:
    """'20kWh', '20 kwh', '20' (kWh) or '80%' (a target state of charge)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(kwh|%)?\s*", text, re.IGNORECASE)
    if m is None:
        raise argparse.ArgumentTypeError(f"expected an energy such as 20kWh, or a state of charge such as 80%, "
                                         f"got {text!r}")
    return ("soc_pct" if m.group(2) == "%" else "energy_kwh"), float(m.group(1))


def percent(text: str) -> float:
    try:
        return float(text.strip().rstrip("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a state of charge such as 35%, got {text!r}") from None


def _request(args: Any, command: p.Command[R]) -> R | p.Failure:
    from evsed.cli import where
    return where.request(args, command)


def _fail(reply: p.Failure) -> int:
    print(f"evsed: {reply.error}", file=sys.stderr)
    return EXIT_FAILURE


def cmd_plan(args: Any) -> int:
    from evsed import protocol as p  # here: `evsed status` shows plans without the whole protocol (2 ms)
    card, connector = args.card, None if args.card else args.connector
    if args.cancel:
        cancelled = _request(args, p.CancelPlan(connector=connector, card=card))
        if isinstance(cancelled, p.Failure):
            return _fail(cancelled)
        print("plan cancelled" if cancelled.cancelled else "no plan to cancel")
        return 0
    if args.energy is None:
        shown = _request(args, p.Plans())
        return _fail(shown) if isinstance(shown, p.Failure) else show(shown)
    if args.by is None:
        print("evsed plan: say by when, e.g. --by 07:00", file=sys.stderr)
        return EXIT_FAILURE
    key, value = args.energy
    try:
        command = p.SetPlan(connector=connector, card=card, by=args.by, origin="cli", soc_now_pct=args.soc,
                            **{key: value})
    except p.WireError as exc:
        print(f"evsed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    reply = _request(args, command)
    if isinstance(reply, p.Failure):
        return _fail(reply)
    if reply.waiting is not None:
        print("\n".join(format_waiting(reply.waiting)))
    else:
        print("\n".join(format_plan(reply.plan, f"connector {reply.connector}")))
    return 0


def show(reply: p.PlansReply) -> int:
    lines = []
    for plan in reply.plans:
        lines += format_plan(plan, f"connector {plan.connector}")
    for waiting in reply.card_plans:
        lines += format_waiting(waiting)
    print("\n".join(lines) if lines else f"no plans (prices: {reply.prices})")
    return 0


def _hhmm(iso: str | None) -> str:
    """The local time of an ISO time the daemon gave in the charger's zone: 07:00."""
    return iso[11:16] if iso and len(iso) >= 16 else (iso or "-")


def format_waiting(w: p.WaitingPlan) -> list[str]:
    return [f"card {w.id_tag}: {w.energy_wh / 1000:.1f} kWh by {w.by[:10]} {_hhmm(w.by)} ({w.origin}): "
            "pending, for its next session"]


def format_plan(plan: p.PlanNow | None, who: str) -> list[str]:
    """A plan as `evsed plan` and `evsed status` show it."""
    if plan is None:
        return []
    lines = [f"{who}: {plan.energy_wh / 1000:.1f} kWh by {plan.by[:10]} {_hhmm(plan.by)} ({plan.origin}): {plan.state}"]
    if plan.reason:
        lines.append(f"  {plan.reason}")
    if plan.cost is not None:
        finish = f"finish {_hhmm(plan.finish)}, " if plan.finish else ""
        lines.append(f"  delivered {plan.delivered_wh / 1000:.1f} kWh; {finish}cost {plan.cost:.2f} "
                     f"{plan.currency} (prices: {plan.prices})".rstrip())
        for s in plan.slots:
            lines.append(f"  slot {_hhmm(s.start)}-{_hhmm(s.end)}  {s.power_w / 1000:4.1f} kW  {s.price:.3f}/kWh")
    return lines


def status_lines(c: p.ConnectorStatus) -> list[str]:
    """The plan's lines under a connector in `evsed status`."""
    return ["  " + line for line in format_plan(c.plan, "plan")]


def add_options(sp: argparse.ArgumentParser) -> None:
    """`evsed plan`'s options (evsed.cli registers the command; this module is imported only for it,
    and for the plan's lines in `evsed status`)."""
    sp.add_argument("energy", nargs="?", type=energy, help="20kWh, or a target state of charge such as 80%%")
    sp.add_argument("--by", help="departure: 07:00 (the next time the charger's clock reads it) or an ISO time")
    sp.add_argument("--soc", type=percent, help="the vehicle's present state of charge, with a target such as 80%%")
    sp.add_argument("--connector", type=int, help="connector number (default: the first)")
    sp.add_argument("--card", help="for this card's next session, on any connector")
    sp.add_argument("--cancel", action="store_true", help="drop the plan")
