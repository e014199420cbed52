"""`evsed sessions`, `evsed report`, `evsed export` and `evsed sessions --ocmf ID`: the session
records, what charging cost and earned, the raw data, and a session's signed meter data, read
beside a running daemon. Times in the charger's zone; every day range includes its last day."""

from __future__ import annotations

import argparse
import json
import sys

from evsed import dirs
from evsed.cli import text, where

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (2 ms of `evsed status`)
if TYPE_CHECKING:
    import datetime as dt  # imported where used: registering these commands must not cost `evsed status` 1 ms
    from pathlib import Path
    from typing import Any, Callable

EXIT_FAILURE = 1
DAY_HELP = "YYYY-MM-DD in the charger's time zone"


def add_commands(add: Callable[..., None]) -> None:
    """Register sessions, report and export; `add(name, func, help, options)`."""
    add("sessions", _store_errors(cmd_sessions), "list session records", _sessions_options)
    add("report", _store_errors(cmd_report), "totals: sessions, kWh, hours, cost, revenue and margin",
        _report_options)
    add("export", _store_errors(cmd_export), "raw data, streamed: sessions, or with --samples the meter samples",
        _export_options)


def _store_errors(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A command reading the sessions database: a database error is a line, exit 1."""
    def run(args: argparse.Namespace) -> int:
        import sqlite3
        try:
            return command(args)
        except sqlite3.Error as exc:
            print(f"evsed: session database: {exc}", file=sys.stderr)
            return EXIT_FAILURE
    return run


def _sessions_options(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--since", metavar="DAY", help=f"first day, {DAY_HELP}")
    sp.add_argument("--until", metavar="DAY", help=f"last day (included), {DAY_HELP}")
    sp.add_argument("--card", help="card UID or name")
    sp.add_argument("--format", choices=("table", "csv", "json"), default="table", help="default: table")
    sp.add_argument("--ocmf", type=ocmf_id, metavar="ID",
                    help="print session ID's signed OCMF document and the public key (hex DER)")


def _report_options(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--month", help="YYYY-MM (charger's time zone; default: this month)")
    sp.add_argument("--from", dest="from_day", metavar="DAY", help=f"first day, {DAY_HELP}")
    sp.add_argument("--to", dest="to_day", metavar="DAY", help=f"last day (included), {DAY_HELP}")
    sp.add_argument("--by", type=by_keys, metavar="card,group,day",
                    help="one row per card, group or day, or per combination: --by card,day (default: one total)")
    sp.add_argument("--format", choices=("table", "csv", "json"), default="table", help="default: table")


def _export_options(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--format", choices=("csv", "json"), default="csv", help="default: csv")
    sp.add_argument("--samples", action="store_true", help="the meter samples instead of the sessions")
    sp.add_argument("--since", metavar="DAY", help=f"first day, {DAY_HELP}")
    sp.add_argument("--until", metavar="DAY", help=f"last day (included), {DAY_HELP}")


def by_keys(value: str) -> tuple[str, ...]:
    from evsed.store.reports import BY  # only when `report --by` is given
    keys = tuple(k.strip() for k in value.split(",") if k.strip())
    wrong = [k for k in keys if k not in BY]
    if not keys or wrong or len(set(keys)) != len(keys):
        raise argparse.ArgumentTypeError(f"expected some of {', '.join(BY)}, each once, separated by commas; "
                                         f"got {value!r}")
    return keys


def _context(args: argparse.Namespace) -> tuple[Path, dt.tzinfo]:
    """The sessions database and the charger's time zone, from the config where.load_for_records finds."""
    cfg = where.load_for_records(args)
    if cfg is None:
        return dirs.default_state_dir() / "sessions.db", text.zone(None)
    return cfg.store.state_dir / "sessions.db", text.zone(cfg.charger.timezone)


def _day(value: str, what: str) -> dt.date:
    import datetime as dt
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise SystemExit(f"evsed: {what}: expected a date YYYY-MM-DD, got {value!r}") from None


def _utc(day: dt.date, tz: dt.tzinfo) -> str:
    """The instant the local day begins, as the store keeps times (ISO UTC)."""
    import datetime as dt
    return dt.datetime.combine(day, dt.time(), tz).astimezone(dt.timezone.utc).isoformat(timespec="seconds")


def day_range(first: str | None, last: str | None, tz: dt.tzinfo, names: tuple[str, str]) -> tuple[str | None, str | None]:
    """[start of the first day, start of the day after the last) as ISO UTC; None where not given.
    The one rule of every command: both days are included."""
    import datetime as dt
    since = _utc(_day(first, names[0]), tz) if first else None
    until = _utc(_day(last, names[1]) + dt.timedelta(days=1), tz) if last else None
    return since, until


SESSION_FIELDS = ("id", "connector_id", "id_tag", "card_name", "card_group", "started_at", "stopped_at",
                  "meter_start_wh", "meter_stop_wh", "energy_wh", "peak_power_w", "stop_reason", "duration_s",
                  "charging_s", "idle_s", "cost", "revenue", "currency", "solar_wh", "grid_wh", "meter_rebaselined")


def _session_row(r: dict[str, Any], tz: dt.tzinfo) -> dict[str, Any]:
    """A stored session as `evsed sessions` shows it: times with the charger's offset, money in
    major units ("3.10"), "" when unpriced."""
    from evsed.core.tariff import format_money
    out = {k: r[k] for k in SESSION_FIELDS if k in r}
    out["started_at"], out["stopped_at"] = text.local_iso(r["started_at"], tz), text.local_iso(r["stopped_at"], tz)
    for key in ("cost", "revenue"):
        minor = r.get(f"{key}_minor")
        out[key] = "" if minor is None else format_money(minor, r.get("money_decimals") or 0)
    out["currency"] = r.get("currency") or ""
    return out


def cmd_sessions(args: argparse.Namespace) -> int:
    from evsed.store.sessions import Store
    path, tz = _context(args)
    if args.ocmf is not None:
        return cmd_ocmf(args, path)
    since, until = day_range(args.since, args.until, tz, ("--since", "--until"))
    rows = []
    if path.exists():
        store = Store.open_readonly(path)
        rows = [_session_row(r, tz) for r in store.sessions(since=since, until=until, card=args.card)]
        store.close()
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


def format_sessions(rows: list[dict[str, Any]], tz: dt.tzinfo) -> str:
    head = ("id", "conn", "card", "start", "stop", "meter start Wh", "meter stop Wh", "energy Wh", "peak W",
            "stop reason", "cost", "revenue")
    table = [head] + [(str(r["id"]), str(r["connector_id"]), r["card_name"] or r["id_tag"],
                       text.local_time(r["started_at"], tz), text.local_time(r["stopped_at"], tz, "running"),
                       str(r["meter_start_wh"]), "" if r["meter_stop_wh"] is None else str(r["meter_stop_wh"]),
                       str(r["energy_wh"]), f"{r['peak_power_w']:.0f}", r["stop_reason"] or "",
                       f"{r['cost']} {r['currency']}".strip(), f"{r['revenue']} {r['currency']}".strip())
                      for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    if not rows:
        lines.append("(no sessions)")
    return "\n".join(lines)


def report_range(args: argparse.Namespace, today: dt.date) -> tuple[dt.date, dt.date]:
    """[first day, day after the last) from --month or --from/--to; this month by default."""
    import datetime as dt
    if args.month and (args.from_day or args.to_day):
        raise SystemExit("evsed: report: give --month or --from/--to, not both")
    if args.from_day or args.to_day:
        first = _day(args.from_day, "--from") if args.from_day else dt.date(1970, 1, 1)
        last = _day(args.to_day, "--to") if args.to_day else today
        return first, last + dt.timedelta(days=1)
    month = args.month or today.strftime("%Y-%m")
    try:
        first = dt.date.fromisoformat(month + "-01")
    except ValueError:
        raise SystemExit(f"evsed: --month: expected YYYY-MM, got {month!r}") from None
    return first, (first + dt.timedelta(days=32)).replace(day=1)


def cmd_report(args: argparse.Namespace) -> int:
    import datetime as dt
    from evsed.store import reports
    from evsed.store.sessions import Store
    path, tz = _context(args)
    first, end = report_range(args, dt.datetime.now(tz).date())
    rows = []
    if path.exists():
        store = Store.open_readonly(path)
        rows = reports.report(store, _utc(first, tz), _utc(end, tz), args.by, tz)
        store.close()
    if args.format == "table":
        print(f"{first} to {end - dt.timedelta(days=1)}" + (f", by {', '.join(args.by)}" if args.by else ""))
        print(format_report(rows))
    else:
        reports.write((tuple(r[f] for f in reports.REPORT_FIELDS) for r in rows), reports.REPORT_FIELDS, args.format,
                      sys.stdout)
    return 0


def format_report(rows: list[dict[str, Any]]) -> str:
    solar = any(r.get("solar_kwh") for r in rows)  # with a site meter: the kWh from solar surplus and the grid
    head = ("", "sessions", "kWh", *(("solar kWh", "grid kWh") if solar else ()), "hours", "charging h", "cost",
            "revenue", "margin", "")
    table = [head] + [(r["key"] + (f" ({r['name']})" if r["name"] else ""), str(r["sessions"]), r["energy_kwh"],
                       *((r["solar_kwh"], r["grid_kwh"]) if solar else ()),
                       r["hours"], r["charging_hours"], r["cost"], r["revenue"], r["margin"], r["currency"])
                      for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             .rstrip() for row in table]
    if not rows:
        lines.append("(no sessions)")
    return "\n".join(lines)


def cmd_export(args: argparse.Namespace) -> int:
    from evsed.store import reports
    from evsed.store.sessions import Store
    path, tz = _context(args)
    since, until = day_range(args.since, args.until, tz, ("--since", "--until"))
    if not path.exists():
        rows: object = iter(())
    else:
        store = Store.open_readonly(path)
        rows = (reports.export_samples if args.samples else reports.export_sessions)(store, since, until, tz)
    fields = reports.SAMPLE_EXPORT if args.samples else reports.SESSION_EXPORT
    reports.write(rows, fields, args.format, sys.stdout)  # type: ignore[arg-type]
    return 0


def cmd_ocmf(args: argparse.Namespace, path: Path) -> int:
    """Print a session's OCMF document and under it the public key, hex DER."""
    from evsed.store.sessions import Store
    row = Store.open_readonly(path).session(args.ocmf) if path.exists() else None
    if row is None:
        print(f"evsed: no session {args.ocmf}", file=sys.stderr)
        return EXIT_FAILURE
    if not row["ocmf"]:
        print(f"evsed: session {args.ocmf} has no signed document"
              + (" (still running)" if row["stopped_at"] is None else ""), file=sys.stderr)
        return EXIT_FAILURE
    if args.format == "json":
        print(json.dumps({"ocmf": row["ocmf"], "public_key": row["ocmf_public_key"],
                          "meter_signed_format": row["meter_signed_format"],
                          "meter_signed_data": row["meter_signed_data"]}, indent=2))
        return 0
    print(row["ocmf"])
    print(row["ocmf_public_key"])
    if row["meter_signed_data"]:
        print(f"# the meter's own signed data ({row['meter_signed_format']}):")
        print(row["meter_signed_data"])
    return 0


def ocmf_id(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a session id, got {text!r}") from None
