"""CLI commands for the policies: `evsed mode`, `evsed reload`, `evsed cards learn`, the limit
lines of `evsed status`, and `evsed sim site` / `evsed sim cable`."""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, TypeVar

from evsed import protocol as p
from evsed.control import client as control

EXIT_FAILURE = 1
R = TypeVar("R", bound=p.Reply)


def _request(args: Any, command: p.Command[R]) -> R | p.Failure:
    from evsed.cli import _runtime_dir, load_config_if_any
    return control.request(_runtime_dir(load_config_if_any(args)), command)


def _fail(reply: p.Failure | p.ReloadReply) -> int:
    print(f"evsed: {reply.error if isinstance(reply, p.Failure) else reply.reason}", file=sys.stderr)
    return EXIT_FAILURE


def cmd_mode(args: Any) -> int:
    reply = _request(args, p.SetMode(mode=args.mode))
    if isinstance(reply, p.Failure):
        return _fail(reply)
    print(f"mode {reply.mode}")
    return 0


def cmd_reload(args: Any) -> int:
    reply = _request(args, p.Reload())
    if isinstance(reply, p.Failure) or reply.result != "Accepted":
        return _fail(reply)
    print("config reloaded; running sessions continue")
    return 0


def cmd_cards_learn(args: Any, sleep: Callable[[float], None] = time.sleep) -> int:
    """Wait for the next tap on the daemon's reader; print its UID and a [[card]] block."""
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
    """Every limit source's value and which one binds, for `evsed status`."""
    if not c.limit_chain:
        return []
    lines = [f"  mode        {c.mode}" + (f", group {c.group!r}" if c.group else "")]
    for source, lim in c.limit_chain.items():
        value = "blocks" if lim.blocked else ("-" if lim.current_a is None else f"{lim.current_a:g} A")
        mark = "  <- binds" if source == c.binding else ""
        detail = lim.blocked or lim.detail or ""
        lines.append(f"  limit       {source:<13}{value:>8}  {detail}{mark}".rstrip())
    return lines


def sim_command(args: Any) -> p.Command[Any]:
    """`evsed sim site` and `evsed sim cable`."""
    if args.sim_action == "site":
        fields = {key: getattr(args, key) for key in ("l1_a", "l2_a", "l3_a", "pv_w", "profile", "meter")}
        return p.SetSite(input=None if args.input is None else args.input == "on", **fields)
    return p.SetCable(connector=args.connector, ohm=args.ohm)


def add_commands(add: Callable[..., Any], sim_sub: Any) -> None:
    sp = add("mode", cmd_mode, "charge fast, from solar surplus only, or 6 A plus the surplus")
    sp.add_argument("mode", choices=("fast", "solar", "min+solar"))
    add("reload", cmd_reload, "apply the changed config file; running sessions continue")
    sp = add("cards", lambda a: cmd_cards_learn(a), "cards: `evsed cards learn` reads the next tap")
    sp.add_argument("action", choices=("learn",))
    sp.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a tap")
    site = sim_sub.add_parser("site", help="the simulated site: house loads, PV, a profile, the contact")
    for key, help_ in (("l1_a", "house load on L1, A"), ("l2_a", "... on L2"), ("l3_a", "... on L3"),
                       ("pv_w", "PV production, W")):
        site.add_argument(f"--{key.replace('_', '-')}", dest=key, type=float, help=help_)
    site.add_argument("--profile", help="CSV (t_s,l1_a,l2_a,l3_a,pv_w) or TOML [[point]] file")
    site.add_argument("--input", choices=("on", "off"), help="the grid operator's control contact")
    site.add_argument("--meter", choices=("ok", "silent"), help="make the site meter stop answering")
    site.add_argument("--connector", type=int, default=1, help=__import__("argparse").SUPPRESS)
    cable = sim_sub.add_parser("cable", help="the PP resistor of the simulated socket's cable (ohm)")
    cable.add_argument("ohm", type=float)
    cable.add_argument("--connector", type=int, default=1)
