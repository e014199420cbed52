"""CLI commands for the policies: `evsed mode`, `evsed reload`, `evsed cards learn`, the limit
lines of `evsed status`, and `evsed sim site` / `evsed sim cable`."""

from __future__ import annotations

import sys
import time

from evsed.cli import text, where

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (2 ms of `evsed status`)
if TYPE_CHECKING:
    from typing import Any, Callable, TypeVar

    from evsed import protocol as p

    R = TypeVar("R", bound=p.Reply)

EXIT_FAILURE = 1


def _request(args: Any, command: p.Command[R]) -> R | p.Failure:
    return where.request(args, command)


def _fail(reply: p.Failure | p.ReloadReply) -> int:
    from evsed import protocol as p
    print(f"evsed: {reply.error if isinstance(reply, p.Failure) else reply.reason}", file=sys.stderr)
    return EXIT_FAILURE


def cmd_mode(args: Any) -> int:
    from evsed import protocol as p
    reply = _request(args, p.SetMode(mode=args.mode))
    if isinstance(reply, p.Failure):
        return _fail(reply)
    print(f"mode {reply.mode}")
    return 0


def cmd_reload(args: Any) -> int:
    from evsed import protocol as p
    reply = _request(args, p.Reload())
    if isinstance(reply, p.Failure) or reply.result != "Accepted":
        return _fail(reply)
    print("config reloaded; running sessions continue")
    return 0


def cmd_cards_learn(args: Any, sleep: Callable[[float], None] = time.sleep) -> int:
    """Wait for the next tap on the daemon's reader; print its UID and a [[card]] block."""
    from evsed import protocol as p
    started = _request(args, p.Learn(timeout_s=args.timeout))
    if isinstance(started, p.Failure):
        return _fail(started)
    print(f"tap a card on the reader (waiting {args.timeout:g} s) ...", file=sys.stderr)
    while True:
        sleep(0.2)
        reply = _request(args, p.Learned())
        if isinstance(reply, p.Failure):
            return _fail(reply)
        card = reply.card
        if card is not None:
            break
        if not reply.waiting:
            print("evsed: no card was tapped", file=sys.stderr)
            return EXIT_FAILURE
    print(f"UID {card.uid}")
    if card.known:
        who = f" as {card.name!r}" if card.name else ""
        group = f", group {card.group!r}" if card.group else ""
        print(f"this card is already known{who}{group}")
        return 0
    print(card.toml, end="")
    return 0


def format_limits(c: p.ConnectorStatus) -> list[str]:
    """The limit sources that hold a value, which one binds, and the unset ones on one line."""
    if not c.limit_chain:
        return []
    lines = [f"  mode        {c.mode}" + (f", group {c.group}" if c.group else "")]
    unset = []
    for lim in c.limit_chain:
        source = lim.source
        detail = lim.blocked or lim.detail or ""
        if lim.current_a is None and not lim.blocked:
            unset.append(f"{source} ({detail})" if detail else source)
            continue
        value = "blocks" if lim.blocked or lim.current_a is None else text.amps(lim.current_a)
        mark = "  <- binds" if lim.binding else ""
        lines.append(f"  limit       {source:<13}{value:>8}  {detail}{mark}".rstrip())
    if unset:
        lines.append(f"  no limit    {', '.join(unset)}")
    return lines


def sim_command(args: Any) -> p.Command[Any]:
    """`evsed sim site` and `evsed sim cable`."""
    from evsed import protocol_sim as p
    if args.sim_action == "site":
        fields = {key: getattr(args, key) for key in ("l1_a", "l2_a", "l3_a", "pv_w", "profile", "meter")}
        return p.SetSite(input=None if args.input is None else args.input == "on", **fields)
    return p.SetCable(connector=args.connector, ohm=args.ohm)


def add_commands(add: Callable[..., None]) -> None:
    """Register mode, reload and cards; `add(name, func, help, options)`."""
    add("mode", cmd_mode, "charge fast, from solar surplus only, or 6 A plus the surplus",
        lambda sp: sp.add_argument("mode", choices=("fast", "solar", "min+solar"), help="fast, solar or min+solar"))
    add("reload", cmd_reload, "apply the changed config file; running sessions continue")
    add("cards", lambda a: cmd_cards_learn(a), "cards: `evsed cards learn` reads the next tap", _cards_options)


def _cards_options(sp: Any) -> None:
    sp.add_argument("action", choices=("learn",), help="learn: print the next tapped card's UID and a "
                    "[[card]] block to paste into the config")
    sp.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS", help="how long to wait for a tap "
                    "(default 60)")


def add_sim_actions(sim_action: Callable[..., Any]) -> None:
    """`evsed sim site` and `evsed sim cable`."""
    site = sim_action("site", "the simulated site: house loads, PV, a profile, the contact", connector=False)
    for key, help_ in (("l1_a", "house load on L1, A"), ("l2_a", "house load on L2, A"),
                       ("l3_a", "house load on L3, A"), ("pv_w", "PV production, W")):
        site.add_argument(f"--{key.replace('_', '-')}", dest=key, type=float, help=help_)
    site.add_argument("--profile", metavar="FILE", help="CSV (t_s,l1_a,l2_a,l3_a,pv_w) or TOML [[point]] file")
    site.add_argument("--input", choices=("on", "off"), help="the grid operator's control contact")
    site.add_argument("--meter", choices=("ok", "silent"), help="make the site meter stop answering (silent)")
    site.set_defaults(connector=1)
    cable = sim_action("cable", "the PP resistor of the simulated socket's cable (ohm)")
    cable.add_argument("ohm", type=float, help="the resistor in ohm (680: a 20 A cable)")
