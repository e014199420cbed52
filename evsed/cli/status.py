"""The commands that only talk to the running daemon: `evsed status`, `reserve`, `clear-faults`
and `sim`; and how status reads (local times, whole amperes, no unset rows, no Python values)."""

from __future__ import annotations

import argparse
import json
import sys

from evsed.cli import text, where

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (2 ms of `evsed status`)
if TYPE_CHECKING:
    import datetime as dt
    from typing import Any, Callable, TypeVar

    from evsed import protocol as p

    R = TypeVar("R", bound=p.Reply)

EXIT_FAILURE = 1
CONFIG_HELP = "config file (default: $EVSED_CONFIG, else /etc/evsed/evsed.toml)"


def cmd_status(args: argparse.Namespace) -> int:
    from evsed.protocol_status import Status  # not the whole protocol (2 ms)
    reply = where.ask(args, Status())
    if args.json:
        print(json.dumps(reply.to_wire(), indent=2, ensure_ascii=False))
        return 0
    for c in reply.connectors:
        print(format_status(c, reply.timezone))
    if reply.card_reader_error:
        print(f"card reader: unavailable: {reply.card_reader_error}")
    for name, state in sorted(reply.services.items()):
        print(f"service {name}: {text.fields(state.fields_wire()) or 'running'}")
    return 0


def format_status(c: p.ConnectorStatus, tz: dt.tzinfo | str | None = None) -> str:
    """One connector's status; times in the zone tz (this machine's when None)."""
    from evsed.cli import plan, policy
    lines = [f"connector {c.id}: {c.status}"]
    out = c.pilot_output
    pwm = f"PWM {c.duty_pct:.1f} % = {text.amps(c.offered_a)} offered" if out == "pwm" else (
        "steady +12 V (no PWM)" if out == "off" else "steady -12 V (state F: not available)")
    lines.append(f"  pilot       state {c.state or '?'}, {pwm}")
    if c.pilot_error:
        lines.append(f"  pilot       unavailable: {c.pilot_error}")
    if c.meter_error:
        lines.append(f"  meter       no reading: {c.meter_error}")
    lines.append(f"  contactor   {c.contactor}")
    m = c.measured
    if m:
        phases = " / ".join(f"{a:.1f}" for a in m.current_a)
        lines.append(f"  measured    {phases} A, {m.power_w:.0f} W, meter {m.energy_wh} Wh")
    s = c.session
    if s:
        who = f"{s.card_name} ({s.id_tag})" if s.card_name else s.id_tag
        lines.append(f"  session     {who} since {text.local_time(s.started_at, tz)}: {s.energy_wh} Wh, "
                     f"peak {s.peak_power_w:.0f} W")
    for f in c.faults:
        when = "locked out: clear with `evsed clear-faults`" if f.lockout else (
            f"retry in {f.retry_in_s:.0f} s" if f.retry_in_s is not None else "clears when the EV unplugs")
        lines.append(f"  fault       {f.fault} ({f.detail}); {when}")
    if c.last_refusal:
        r = c.last_refusal
        lines.append(f"  refused     card {r.id_tag}: {r.reason} (at {text.local_time(r.at, tz)})")
    if c.reason:
        lines.append(f"  why         {c.reason}")
    lines += policy.format_limits(c)
    lines += plan.status_lines(c)
    return "\n".join(lines)


def cmd_reserve(args: argparse.Namespace) -> int:
    from evsed import protocol as p
    if args.cancel:
        cancelled = where.request(args, p.CancelReservation(connector=args.connector or 1))
        return _reply(cancelled, lambda r: f"reservation cancelled: {r.result}")
    if not args.card:
        raise SystemExit("evsed reserve: give the card (UID) to reserve for, or --cancel")
    reply = where.request(args, p.Reserve(connector=args.connector, id_tag=args.card, for_s=args.duration))
    if isinstance(reply, p.ReserveReply) and reply.result != "Accepted":
        print(f"evsed: reservation {reply.result}", file=sys.stderr)
        return EXIT_FAILURE
    return _reply(reply, lambda r: f"connector {r.connector} reserved for {args.card} "
                                   f"for {args.duration / 60:g} min")


def cmd_clear_faults(args: argparse.Namespace) -> int:
    from evsed import protocol as p
    reply = where.request(args, p.ClearFaults(connector=args.connector))
    return _reply(reply, lambda r: f"faults cleared on connector {r.connector}")


def _reply(reply: R | p.Failure, message: Callable[[R], str]) -> int:
    """The message of a reply, or the daemon's error on stderr and exit status 1."""
    from evsed.protocol_types import Failure
    if isinstance(reply, Failure):
        print(f"evsed: {reply.error}", file=sys.stderr)
        return EXIT_FAILURE
    print(message(reply))
    return 0


def cmd_sim(args: argparse.Namespace) -> int:
    if args.sim_action == "scenario":
        from pathlib import Path

        from evsed.shell import logs
        from evsed.shell.scenario import run_files
        logs.configure("critical", "text")  # the expectations are the report; the log would drown them
        return run_files([Path(f) for f in args.files], verbose=not args.quiet)
    from evsed import protocol_sim as ps  # the simulator's commands, not the whole protocol (2 ms)
    from evsed.cli import policy
    command: p.Command[Any]
    if args.sim_action == "tap":
        command = ps.Tap(card=args.card, connector=args.connector)
    elif args.sim_action == "ev":
        command = ps.SetEv(connector=args.connector, **{
            key: getattr(args, key) for key in ("max_current_a", "phases", "ventilation", "asleep", "wants_energy",
                                                "ignore_stop", "obey_pwm")})
    elif args.sim_action == "fault":
        command = ps.InjectFault(connector=args.connector, kind=args.kind, clear=args.clear)
    elif args.sim_action == "plug":
        command = ps.Plug(connector=args.connector)
    elif args.sim_action == "unplug":
        command = ps.Unplug(connector=args.connector)
    else:
        command = policy.sim_command(args)
    reply = where.request(args, command)
    return _reply(reply, lambda r: "ok" + (f": card {r.card}" if isinstance(r, ps.TapReply) else ""))


def duration_s(value: str) -> float:
    """'30m', '2h', '90s' or plain seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        return float(value[:-1]) * units[value[-1]] if value and value[-1] in units else float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a duration such as 30m, 2h or 90s, got {value!r}") from None


def yes_no(value: str) -> bool:
    if value.lower() in ("yes", "true", "1", "on"):
        return True
    if value.lower() in ("no", "false", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected yes or no, got {value!r}")


def add_commands(add: Callable[..., None]) -> None:
    """Register status, reserve, clear-faults and sim; `add(name, func, help, options)`."""
    add("status", cmd_status, "live status of the running daemon",
        lambda sp: sp.add_argument("--json", action="store_true", help="the daemon's reply as JSON"))
    add("reserve", cmd_reserve, "reserve a connector for a card for a time (or --cancel)", _reserve_options)
    add("clear-faults", cmd_clear_faults, "clear latched faults and lock-outs after an inspection",
        lambda sp: sp.add_argument("--connector", type=int, default=1, help="connector number (default 1)"))
    add("sim", cmd_sim, "drive the simulator of a running daemon, or run scenario files", _sim_options)


def _reserve_options(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("card", nargs="?", help="the card's UID")
    sp.add_argument("--for", dest="duration", type=duration_s, default=1800.0, metavar="TIME",
                    help="how long: 30m, 2h, 90s (default 30m)")
    sp.add_argument("--connector", type=int, default=0, help="connector number (default: any free one)")
    sp.add_argument("--cancel", action="store_true", help="cancel the reservation instead")


def _sim_options(sim: argparse.ArgumentParser) -> None:
    sim_sub = sim.add_subparsers(dest="sim_action", required=True, metavar="ACTION")

    def sim_action(name: str, help_: str, connector: bool = True) -> argparse.ArgumentParser:
        action = sim_sub.add_parser(name, help=help_, description=help_, formatter_class=sim.formatter_class)
        action.add_argument("-c", "--config", default=argparse.SUPPRESS, metavar="FILE", help=CONFIG_HELP)
        if connector:
            action.add_argument("--connector", type=int, default=1, help="connector number (default 1)")
        return action

    sim_action("plug", "plug the simulated EV in")
    sim_action("unplug", "unplug the simulated EV")
    sim_action("tap", "tap a card on the simulated reader").add_argument("card", help="the card's UID, in hex")
    evp = sim_action("ev", "change the simulated EV")
    evp.add_argument("--max-current", dest="max_current_a", type=float, metavar="A",
                     help="what the EV draws at most, A per phase")
    evp.add_argument("--phases", type=int, choices=(1, 2, 3), help="how many phases the EV draws on")
    for flag, help_ in (("ventilation", "the EV asks for ventilation (state D)"),
                        ("asleep", "the EV ignores the PWM until the wake-up sequence"),
                        ("wants-energy", "no: the battery is full, the EV goes back to B"),
                        ("ignore-stop", "yes: the EV stays in C and goes on drawing when the PWM goes off"),
                        ("obey-pwm", "no: the EV keeps drawing its first offer after the PWM changes")):
        evp.add_argument(f"--{flag}", dest=flag.replace("-", "_"), type=yes_no, metavar="yes|no", help=help_)
    fault = sim_action("fault", "inject (or --clear) a hardware fault")
    from simulator import FAULT_KINDS  # `evsed sim` only
    fault.add_argument("kind", choices=FAULT_KINDS, help="one of: " + ", ".join(FAULT_KINDS))
    fault.add_argument("--clear", action="store_true", help="clear the fault instead")
    scenario = sim_action("scenario", "run scenario files on a virtual clock (no daemon needed)", connector=False)
    scenario.add_argument("files", nargs="+", metavar="FILE", help="scenario TOML files")
    scenario.add_argument("-q", "--quiet", action="store_true", help="print only failures and the summary")
    from evsed.cli import policy
    policy.add_sim_actions(sim_action)
