"""Reports (totals by card, group or local day) and the raw-data export, read from the store.

Totals are summed by SQLite over the start-time index; the export streams row by row from a
cursor, so memory stays flat however many sessions there are. Money stays integer minor
units until it is printed in major units with its currency's decimals.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from typing import IO, Iterator

from evsed.core.tariff import format_money
from evsed.store.sessions import Store

BY = ("card", "group", "day")
REPORT_FIELDS = ("key", "name", "currency", "sessions", "energy_kwh", "hours", "charging_hours", "cost",
                 "revenue", "margin")


def report(store: Store, since: str, until: str, by: str | None, tz: dt.tzinfo) -> list[dict]:
    """Finished sessions started in [since, until) (ISO UTC), summed per `by` (None: one total)
    and per currency. Values in display units: kWh, hours, money in major units as text."""
    if by not in (None, *BY):
        raise ValueError(f"by: expected one of {', '.join(BY)}, got {by!r}")
    sums = ("COUNT(*), SUM(s.energy_wh), SUM(COALESCE(s.duration_s, 0)), SUM(COALESCE(s.charging_s, 0)),"
            " SUM(s.cost_minor), SUM(s.revenue_minor), MAX(s.money_decimals)")
    where = "s.stopped_at IS NOT NULL AND s.started_at >= ? AND s.started_at < ?"
    args: list = [since, until]
    if by == "day":
        days = _local_days(since, until, tz)
        values = ", ".join("(?, ?, ?)" for _ in days)
        sql = (f"WITH d(day, lo, hi) AS (VALUES {values}) SELECT d.day, '', s.currency, {sums}"
               f" FROM d JOIN sessions s ON s.started_at >= d.lo AND s.started_at < d.hi WHERE {where}"
               " GROUP BY d.day, s.currency ORDER BY d.day, s.currency")
        args = [x for day in days for x in day] + args
    else:
        key = {"card": "s.id_tag, MAX(s.card_name)", "group": "s.card_group, ''", None: "'total', ''"}[by]
        group = {"card": "s.id_tag, ", "group": "s.card_group, ", None: ""}[by]
        sql = (f"SELECT {key}, s.currency, {sums} FROM sessions s WHERE {where}"
               f" GROUP BY {group}s.currency ORDER BY 1, 3")
    out = []
    for k, name, cur, n, wh, dur, chg, cost, rev, dec in store.db.execute(sql, args):
        margin = None if cost is None or rev is None else rev - cost
        out.append({"key": k, "name": name, "currency": cur, "sessions": n, "energy_kwh": _kwh(wh or 0),
                     "hours": _hours(dur), "charging_hours": _hours(chg),
                     **{f: "" if v is None else format_money(v, dec)
                        for f, v in (("cost", cost), ("revenue", rev), ("margin", margin))}})
    return out


def _local_days(since: str, until: str, tz: dt.tzinfo) -> list[tuple[str, str, str]]:
    """(local date, its start, the next day's start as ISO UTC) for each local day in the range."""
    day = dt.datetime.fromisoformat(since).astimezone(tz).date()
    end = dt.datetime.fromisoformat(until)
    out = []
    while True:
        lo = dt.datetime.combine(day, dt.time(), tz).astimezone(dt.timezone.utc)
        if lo >= end:
            return out
        nxt = day + dt.timedelta(days=1)
        hi = dt.datetime.combine(nxt, dt.time(), tz).astimezone(dt.timezone.utc)
        out.append((day.isoformat(), lo.isoformat(timespec="seconds"), hi.isoformat(timespec="seconds")))
        day = nxt


def _kwh(wh: int) -> str:
    return f"{wh // 1000}.{wh % 1000:03d}"


def _hours(seconds: int) -> str:
    return f"{seconds / 3600:.2f}"


# --- export --------------------------------------------------------------------------------------

SESSION_EXPORT = ("id", "connector", "card_uid", "card_name", "group", "start", "stop", "duration_s", "charging_s",
                  "idle_s", "meter_start_wh", "meter_stop_wh", "energy_wh", "energy_kwh", "peak_power_w",
                  "stop_reason", "tariff", "currency", "cost", "revenue", "margin")
SAMPLE_EXPORT = ("session_id", "time", "energy_wh", "power_w", "l1_a", "l2_a", "l3_a", "l1_v", "l2_v", "l3_v")


def export_sessions(store: Store, since: str | None, until: str | None, tz: dt.tzinfo) -> Iterator[dict]:
    """Finished and running sessions started in [since, until), oldest first, one at a time."""
    sql = ("SELECT id, connector_id, id_tag, card_name, card_group, started_at, stopped_at, duration_s, charging_s,"
           " idle_s, meter_start_wh, meter_stop_wh, energy_wh, peak_power_w, stop_reason,"
           " CASE WHEN tariff = '' THEN '' ELSE json_extract(tariff, '$.tariff') || '/' ||"
           " json_extract(tariff, '$.price.name') END, currency, cost_minor, revenue_minor, money_decimals"
           " FROM sessions WHERE started_at >= ? AND started_at < ? ORDER BY started_at, id")
    for r in store.db.execute(sql, (since or "", until or "9999")):
        cost, rev, dec = r[17], r[18], r[19]
        yield dict(zip(SESSION_EXPORT, (
            r[0], r[1], r[2], r[3], r[4], _local(r[5], tz), _local(r[6], tz), r[7], r[8], r[9], r[10], r[11],
            r[12], _kwh(r[12]), round(r[13]), r[14] or "", r[15], r[16],
            _money(cost, dec), _money(rev, dec), _money(None if cost is None or rev is None else rev - cost, dec))))


def export_samples(store: Store, since: str | None, until: str | None, tz: dt.tzinfo) -> Iterator[dict]:
    """Meter samples of the sessions started in [since, until), by session, then time."""
    sql = ("SELECT m.session_id, m.t_ms, m.energy_wh, m.power_w, m.l1_a, m.l2_a, m.l3_a, m.l1_v, m.l2_v, m.l3_v"
           " FROM sessions s JOIN samples m ON m.session_id = s.id"
           " WHERE s.started_at >= ? AND s.started_at < ? ORDER BY s.started_at, s.id, m.t_ms")
    for r in store.db.execute(sql, (since or "", until or "9999")):
        when = dt.datetime.fromtimestamp(r[1] / 1000, tz).isoformat(timespec="milliseconds")
        yield dict(zip(SAMPLE_EXPORT, (r[0], when, *r[2:])))


def _local(iso: str | None, tz: dt.tzinfo) -> str:
    return "" if not iso else dt.datetime.fromisoformat(iso).astimezone(tz).isoformat(timespec="seconds")


def _money(minor: int | None, decimals: int) -> str:
    return "" if minor is None else format_money(minor, decimals)


def write(rows: Iterator[dict], fields: tuple[str, ...], fmt: str, out: IO[str]) -> int:
    """Stream rows as CSV (a header, RFC 4180 CRLF lines, empty cells for none) or as a JSON array
    with one object per line; returns the number of rows."""
    n = 0
    if fmt == "csv":
        w = csv.writer(out)
        w.writerow(fields)
        for n, row in enumerate(rows, 1):
            w.writerow(["" if v is None else v for v in row.values()])
        return n
    out.write("[")
    for n, row in enumerate(rows, 1):
        out.write(("\n" if n == 1 else ",\n") + json.dumps(row, separators=(",", ":")))
    out.write("\n]\n")
    return n
