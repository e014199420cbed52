"""The `evsed` command: run the daemon, ask it for status, list sessions, drive the simulator.

Config errors exit with status 2 and one line naming file, line and key; no traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any, Callable, TypeVar
from zoneinfo import ZoneInfo

from evsed import config as configmod
from evsed import protocol as p
from evsed.cli import ops, probe, records
from evsed.cli import plan as plan_cli
from evsed.cli import policy as policy_cli
from evsed.control import client as control

EXIT_FAILURE, EXIT_CONFIG = 1, 2
R = TypeVar("R", bound=p.Reply)


def _config_path(args) -> tuple[Path, bool]:
    """The config file and whether the user named it (-c or $EVSED_CONFIG)."""
    if args.config:
        return Path(args.config), True
    if os.environ.get("EVSED_CONFIG"):
        return Path(os.environ["EVSED_CONFIG"]), True
    return configmod.DEFAULT_PATH, False


def load_config(args) -> configmod.Config:
    return configmod.load(_config_path(args)[0])


def load_config_if_any(args) -> configmod.Config | None:
    """The config when one is named or the default exists (status and sessions work without)."""
    path, named = _config_path(args)
    if not named and not path.exists():
        return None
    return configmod.load(path)


def _runtime_dir(cfg: configmod.Config | None) -> Path:
    return cfg.store.runtime_dir if cfg else configmod.default_runtime_dir()


def _state_dir(cfg: configmod.Config | None) -> Path:
    return cfg.store.state_dir if cfg else configmod.default_state_dir()


# --- commands ----------------------------------------------------------------------------------


def cmd_run(args) -> int:
    cfg = load_config(args)
    from evsed.shell import logs
    from evsed.errors import StartError
    from evsed.shell.daemon import Daemon
    from hal import DeviceUnavailable
    logs.configure(cfg.log.level, cfg.log.format)
    try:
        # Under systemd the services are units of their own (systemd/README.md), not children.
        return asyncio.run(Daemon(cfg, start_services=os.environ.get("EVSED_SERVICES") != "units").run())
    except (StartError, DeviceUnavailable) as exc:
        logs.flush()
        print(f"evsed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        logs.flush()


def cmd_service(args) -> int:
    cfg = load_config(args)
    from evsed.services.run import ServiceError, run
    from evsed.shell import logs
    logs.configure(cfg.log.level, cfg.log.format)
    try:
        return asyncio.run(run(cfg, args.name))
    except ServiceError as exc:
        logs.flush()
        print(f"evsed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        logs.flush()


def cmd_check(args) -> int:
    cfg = load_config(args)
    from evsed.ops import update
    update.settings(cfg)  # [update] is read by `evsed update`; its errors show here first
    from evsed.services.run import check_sections
    check_sections(cfg)  # [ocpp], [mqtt], [web], [prices] are read by their services; their errors show here first
    from evsed.cli import check
    from evsed.shell import logs
    logs.configure("error", "text")  # the report is the output
    try:
        return check.main(cfg, args.json)
    finally:
        logs.flush()


def cmd_status(args) -> int:
    cfg = load_config_if_any(args)
    reply = control.ask(_runtime_dir(cfg), p.Status())
    if args.json:
        print(json.dumps(reply.to_wire(), indent=2, ensure_ascii=False))
        return 0
    for c in reply.connectors:
        print(format_status(c))
    if reply.card_reader_error:
        print(f"card reader: unavailable: {reply.card_reader_error}")
    for name, state in sorted(reply.services.items()):
        print(f"service {name}: " + ", ".join(f"{k}={v}" for k, v in state.fields_wire().items() if k != "at"))
    return 0


def format_status(c: p.ConnectorStatus) -> str:
    lines = [f"connector {c.id}: {c.status}"]
    out = c.pilot_output
    pwm = f"PWM {c.duty_pct} % = {c.offered_a:g} A offered" if out == "pwm" else (
        "steady +12 V (no PWM)" if out == "off" else "steady -12 V (state F: not available)")
    lines.append(f"  pilot       state {c.state or '?'}, {pwm}")
    if c.pilot_error:
        lines.append(f"  pilot       unavailable: {c.pilot_error}")
    if c.meter_error:
        lines.append(f"  meter       no reading: {c.meter_error}")
    lines.append(f"  contactor   {c.contactor}")
    m = c.measured
    if m:
        amps = " / ".join(f"{a:.1f}" for a in m.current_a)
        lines.append(f"  measured    {amps} A, {m.power_w:.0f} W, meter {m.energy_wh} Wh")
    s = c.session
    if s:
        who = f"{s.card_name} ({s.id_tag})" if s.card_name else s.id_tag
        lines.append(f"  session     {who} since {s.started_at}: {s.energy_wh} Wh, "
                     f"peak {s.peak_power_w:.0f} W")
    for f in c.faults:
        when = "locked out: clear with `evsed clear-faults`" if f.lockout else (
            f"retry in {f.retry_in_s} s" if f.retry_in_s is not None else "clears when the EV unplugs")
        lines.append(f"  fault       {f.fault} ({f.detail}); {when}")
    if c.last_refusal:
        r = c.last_refusal
        lines.append(f"  refused     card {r.id_tag}: {r.reason} (at {r.at})")
    if c.reason:
        lines.append(f"  why         {c.reason}")
    lines += policy_cli.format_limits(c)
    lines += plan_cli.status_lines(c)
    return "\n".join(lines)


def _duration_s(text: str) -> float:
    """'30m', '2h', '90s' or plain seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        return float(text[:-1]) * units[text[-1]] if text and text[-1] in units else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a duration such as 30m, 2h or 90s, got {text!r}") from None


def cmd_reserve(args) -> int:
    cfg = load_config_if_any(args)
    if args.cancel:
        cancelled = control.request(_runtime_dir(cfg), p.CancelReservation(connector=args.connector or 1))
        return _reply(cancelled, lambda r: f"reservation cancelled: {r.result}")
    if not args.card:
        raise SystemExit("evsed reserve: give the card (UID) to reserve for, or --cancel")
    reply = control.request(_runtime_dir(cfg), p.Reserve(connector=args.connector, id_tag=args.card,
                                                         for_s=args.duration))
    if isinstance(reply, p.ReserveReply) and reply.result != "Accepted":
        print(f"evsed: reservation {reply.result}", file=sys.stderr)
        return EXIT_FAILURE
    return _reply(reply, lambda r: f"connector {r.connector} reserved for {args.card} "
                                   f"for {args.duration / 60:g} min")


def cmd_clear_faults(args) -> int:
    cfg = load_config_if_any(args)
    reply = control.request(_runtime_dir(cfg), p.ClearFaults(connector=args.connector))
    return _reply(reply, lambda r: f"faults cleared on connector {r.connector}")


def _reply(reply: R | p.Failure, message: Callable[[R], str]) -> int:
    if isinstance(reply, p.Failure):
        print(f"evsed: {reply.error}", file=sys.stderr)
        return EXIT_FAILURE
    print(message(reply))
    return 0


def cmd_sim(args) -> int:
    if args.sim_action == "scenario":
        from evsed.shell import logs
        from evsed.shell.scenario import run_files
        logs.configure("critical", "text")  # the expectations are the report; the log would drown them
        return run_files([Path(f) for f in args.files], verbose=not args.quiet)
    cfg = load_config_if_any(args)
    command: p.Command[Any]
    if args.sim_action == "tap":
        command = p.Tap(card=args.card, connector=args.connector)
    elif args.sim_action == "ev":
        command = p.SetEv(connector=args.connector, **{
            key: getattr(args, key) for key in ("max_current_a", "phases", "ventilation", "asleep", "wants_energy",
                                                "ignore_stop", "obey_pwm")})
    elif args.sim_action == "fault":
        command = p.InjectFault(connector=args.connector, kind=args.kind, clear=args.clear)
    elif args.sim_action == "plug":
        command = p.Plug(connector=args.connector)
    elif args.sim_action == "unplug":
        command = p.Unplug(connector=args.connector)
    else:
        command = policy_cli.sim_command(args)
    reply = control.request(_runtime_dir(cfg), command)
    return _reply(reply, lambda r: "ok" + (f": card {r.card}" if isinstance(r, p.TapReply) else ""))


SESSION_FIELDS = ("id", "connector_id", "id_tag", "card_name", "card_group", "started_at", "stopped_at",
                  "meter_start_wh", "meter_stop_wh", "energy_wh", "peak_power_w", "stop_reason", "duration_s",
                  "charging_s", "idle_s", "cost", "revenue", "currency")


def _session_row(r: dict) -> dict:
    """A stored session as `evsed sessions` shows it: money in major units ("3.10"), "" when unpriced."""
    from evsed.core.tariff import format_money
    out = {k: r[k] for k in SESSION_FIELDS if k in r}
    for key in ("cost", "revenue"):
        minor = r.get(f"{key}_minor")
        out[key] = "" if minor is None else format_money(minor, r.get("money_decimals") or 0)
    out["currency"] = r.get("currency") or ""
    return out


def _day_utc(text: str | None, tz: dt.tzinfo) -> str | None:
    if not text:
        return None
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise SystemExit(f"evsed: expected a date YYYY-MM-DD, got {text!r}") from None
    return dt.datetime.combine(day, dt.time(), tz).astimezone(dt.timezone.utc).isoformat(timespec="seconds")


def cmd_sessions(args) -> int:
    from evsed.store.sessions import Store
    cfg = load_config_if_any(args)
    tz = ZoneInfo(cfg.charger.timezone) if cfg else dt.timezone.utc
    path = _state_dir(cfg) / "sessions.db"
    if args.ocmf is not None:
        return records.cmd_ocmf(args, path)
    rows = []
    if path.exists():
        store = Store.open_readonly(path)
        rows = list(store.sessions(since=_day_utc(args.since, tz), until=_day_utc(args.until, tz), card=args.card))
        store.close()
    rows = [_session_row(r) for r in rows]
    if args.format == "json":
        json.dump(rows, sys.stdout, indent=2)
        print()
    elif args.format == "csv":
        import csv
        w = csv.DictWriter(sys.stdout, fieldnames=SESSION_FIELDS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    else:
        print(format_sessions(rows, tz))
    return 0


def format_sessions(rows: list[dict], tz: dt.tzinfo) -> str:
    def local(iso):
        return dt.datetime.fromisoformat(iso).astimezone(tz).strftime("%Y-%m-%d %H:%M:%S") if iso else "running"
    head = ("id", "conn", "card", "start", "stop", "meter start Wh", "meter stop Wh", "energy Wh", "peak W", "stop reason",
            "cost", "revenue")
    table = [head] + [(str(r["id"]), str(r["connector_id"]), r["card_name"] or r["id_tag"], local(r["started_at"]),
                       local(r["stopped_at"]), str(r["meter_start_wh"]),
                       "" if r["meter_stop_wh"] is None else str(r["meter_stop_wh"]), str(r["energy_wh"]),
                       f"{r['peak_power_w']:.0f}", r["stop_reason"] or "",
                       f"{r['cost']} {r['currency']}".strip(), f"{r['revenue']} {r['currency']}".strip()) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    if not rows:
        lines.append("(no sessions)")
    return "\n".join(lines)


# --- parser ------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evsed", description="Controller daemon for a stand-alone EV charger.")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name, func, help_):
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.add_argument("-c", "--config", help="config file (default: $EVSED_CONFIG, else /etc/evsed/evsed.toml)")
        sp.set_defaults(func=func)
        return sp

    add("run", cmd_run, "run the daemon")
    sp = add("check", cmd_check, "validate the config and open every configured device once")
    sp.add_argument("--json", action="store_true")
    probe.add_command(add)
    sp = add("service", cmd_service, "run one service process (ocpp, mqtt, web, prices) beside the daemon")
    sp.add_argument("name", choices=("ocpp", "mqtt", "web", "prices"))
    sp = add("status", cmd_status, "live status of the running daemon")
    sp.add_argument("--json", action="store_true")
    sp = add("sessions", cmd_sessions, "list session records")
    sp.add_argument("--since", help="first day, YYYY-MM-DD (charger's local time)")
    sp.add_argument("--until", help="day after the last, YYYY-MM-DD")
    sp.add_argument("--card", help="card UID or name")
    sp.add_argument("--format", choices=("table", "csv", "json"), default="table")
    sp.add_argument("--ocmf", type=records.ocmf_id, metavar="ID",
                    help="print session ID's signed OCMF document and the public key (hex DER)")
    records.add_commands(add)
    ops.add_commands(add)
    plan_cli.add_commands(add)
    sp = add("reserve", cmd_reserve, "reserve a connector for a card for a time (or --cancel)")
    sp.add_argument("card", nargs="?")
    sp.add_argument("--for", dest="duration", type=_duration_s, default=1800.0, help="30m, 2h, 90s (default 30m)")
    sp.add_argument("--connector", type=int, default=0, help="connector number (default: any free one)")
    sp.add_argument("--cancel", action="store_true")
    sp = add("clear-faults", cmd_clear_faults, "clear latched faults and lock-outs after an inspection")
    sp.add_argument("--connector", type=int, default=1)

    sim = add("sim", cmd_sim, "drive the simulator of a running daemon, or run scenario files")
    sim_sub = sim.add_subparsers(dest="sim_action", required=True)
    for name, help_ in (("plug", "plug the simulated EV in"), ("unplug", "unplug it")):
        sim_sub.add_parser(name, help=help_).add_argument("--connector", type=int, default=1)
    tap = sim_sub.add_parser("tap", help="tap a card on the simulated reader")
    tap.add_argument("card")
    tap.add_argument("--connector", type=int, default=1)
    evp = sim_sub.add_parser("ev", help="change the simulated EV")
    evp.add_argument("--connector", type=int, default=1)
    evp.add_argument("--max-current", dest="max_current_a", type=float)
    evp.add_argument("--phases", type=int, choices=(1, 2, 3))
    for flag in ("ventilation", "asleep", "wants-energy", "ignore-stop", "obey-pwm"):
        evp.add_argument(f"--{flag}", dest=flag.replace("-", "_"), type=_bool, metavar="yes|no")
    fault = sim_sub.add_parser("fault", help="inject (or --clear) a hardware fault")
    from simulator.hardware import FAULT_KINDS
    fault.add_argument("kind", choices=FAULT_KINDS)
    fault.add_argument("--clear", action="store_true")
    fault.add_argument("--connector", type=int, default=1)
    policy_cli.add_commands(add, sim_sub)
    for action_parser in (*sim_sub.choices.values(),):
        action_parser.add_argument("-c", "--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    scen = sim_sub.add_parser("scenario", help="run scenario files on a virtual clock")
    scen.add_argument("files", nargs="+")
    scen.add_argument("-q", "--quiet", action="store_true", help="print only failures and the summary")
    return p


def _bool(text: str) -> bool:
    if text.lower() in ("yes", "true", "1", "on"):
        return True
    if text.lower() in ("no", "false", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected yes or no, got {text!r}")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except configmod.ConfigError as exc:
        print(f"evsed: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (control.ControlError, p.DaemonError, p.WireError) as exc:
        print(f"evsed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    except OSError as exc:  # a state or runtime directory that cannot be made or used
        print(f"evsed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except sqlite3.Error as exc:
        print(f"evsed: session database: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:  # `evsed sessions | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
