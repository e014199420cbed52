"""`evsed report`, `evsed export` and `evsed sessions --ocmf ID`: what charging cost and earned,
the raw data, and a session's signed meter data, read beside a running daemon."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

from evsed.store import reports
from evsed.store.sessions import Store

EXIT_FAILURE = 1


def add_commands(add) -> None:
    """Register the commands on the `evsed` parser; `add(name, func, help)` makes a subparser."""
    sp = add("report", cmd_report, "totals: sessions, kWh, hours, cost, revenue and margin")
    sp.add_argument("--month", help="YYYY-MM (charger's local time; default: this month)")
    sp.add_argument("--from", dest="from_day", help="first day, YYYY-MM-DD")
    sp.add_argument("--to", dest="to_day", help="last day, YYYY-MM-DD (inclusive)")
    sp.add_argument("--by", choices=reports.BY, help="one row per card, group or day (default: one total)")
    sp.add_argument("--format", choices=("table", "csv", "json"), default="table")
    sp = add("export", cmd_export, "raw data, streamed: sessions, or with --samples the meter samples")
    sp.add_argument("--format", choices=("csv", "json"), default="csv")
    sp.add_argument("--samples", action="store_true", help="the meter samples instead of the sessions")
    sp.add_argument("--since", help="first day, YYYY-MM-DD (charger's local time)")
    sp.add_argument("--until", help="day after the last, YYYY-MM-DD")


def _context(args):
    from evsed import cli
    cfg = cli.load_config_if_any(args)
    tz = ZoneInfo(cfg.charger.timezone) if cfg else dt.timezone.utc
    return cli._state_dir(cfg) / "sessions.db", tz


def _day(text: str, what: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise SystemExit(f"evsed: {what}: expected a date YYYY-MM-DD, got {text!r}") from None


def _utc(day: dt.date, tz: dt.tzinfo) -> str:
    return dt.datetime.combine(day, dt.time(), tz).astimezone(dt.timezone.utc).isoformat(timespec="seconds")


def report_range(args, tz: dt.tzinfo, today: dt.date) -> tuple[dt.date, dt.date]:
    """[first day, day after the last) from --month or --from/--to; this month by default."""
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


def cmd_report(args) -> int:
    path, tz = _context(args)
    first, end = report_range(args, tz, dt.datetime.now(tz).date())
    rows = []
    if path.exists():
        store = Store.open_readonly(path)
        rows = reports.report(store, _utc(first, tz), _utc(end, tz), args.by, tz)
        store.close()
    if args.format == "table":
        print(f"{first} to {end - dt.timedelta(days=1)}" + (f", by {args.by}" if args.by else ""))
        print(format_report(rows))
    else:
        reports.write((tuple(r[f] for f in reports.REPORT_FIELDS) for r in rows), reports.REPORT_FIELDS, args.format,
                      sys.stdout)
    return 0


def format_report(rows: list[dict]) -> str:
    head = ("", "sessions", "kWh", "hours", "charging h", "cost", "revenue", "margin", "")
    table = [head] + [(r["key"] + (f" ({r['name']})" if r["name"] else ""), str(r["sessions"]), r["energy_kwh"],
                       r["hours"], r["charging_hours"], r["cost"], r["revenue"], r["margin"], r["currency"])
                      for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             .rstrip() for row in table]
    if not rows:
        lines.append("(no sessions)")
    return "\n".join(lines)


def cmd_export(args) -> int:
    path, tz = _context(args)
    since = _utc(_day(args.since, "--since"), tz) if args.since else None
    until = _utc(_day(args.until, "--until"), tz) if args.until else None
    if not path.exists():
        rows: object = iter(())
    else:
        store = Store.open_readonly(path)
        rows = (reports.export_samples if args.samples else reports.export_sessions)(store, since, until, tz)
    fields = reports.SAMPLE_EXPORT if args.samples else reports.SESSION_EXPORT
    reports.write(rows, fields, args.format, sys.stdout)  # type: ignore[arg-type]
    return 0


def cmd_ocmf(args, path: Path) -> int:
    """Print a session's OCMF document and under it the public key, hex DER."""
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
