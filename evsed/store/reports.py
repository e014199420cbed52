"""Reports (totals by card, group, local day, or a combination) and the raw-data export, read from the store.

Totals are summed by SQLite over the start-time index; the export streams row by row from a
cursor, so memory stays flat however many sessions there are. Money stays integer minor
units until it is printed in major units with its currency's decimals.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from typing import IO, Iterable, Iterator, Literal, Sequence

from evsed.core.tariff import format_money
from evsed.store.sessions import Store

BY = ("card", "group", "day")
REPORT_FIELDS = ("key", "name", "currency", "sessions", "energy_kwh", "solar_kwh", "grid_kwh", "hours",
                 "charging_hours", "cost", "revenue", "margin")


def report(store: Store, since: str, until: str, by: str | Sequence[str] | None, tz: dt.tzinfo) -> list[dict]:
    """Finished sessions started in [since, until) (ISO UTC), summed per `by` (None or empty: one
    total; several: per combination, `key` their values joined by a space) and per currency.
    Values in display units: kWh, hours, money in major units as text."""
    keys = (by,) if isinstance(by, str) else tuple(by or ())
    if not set(keys) <= set(BY) or len(set(keys)) != len(keys):
        raise ValueError(f"by: expected some of {', '.join(BY)}, each once, got {','.join(keys)!r}")
    solar, grid = (f"s.{c}" if _has(store, c) else "NULL" for c in ("solar_wh", "grid_wh"))
    sums = (f"COUNT(*), SUM(s.energy_wh), SUM({solar}), SUM({grid}), SUM(COALESCE(s.duration_s, 0)),"
            " SUM(COALESCE(s.charging_s, 0)), SUM(s.cost_minor), SUM(s.revenue_minor), MAX(s.money_decimals)")
    where = "s.stopped_at IS NOT NULL AND s.started_at >= ? AND s.started_at < ?"
    args: list = [since, until]
    columns = [{"card": "s.id_tag", "group": "s.card_group", "day": "d.day"}[k] for k in keys]
    key = columns[0] if len(columns) == 1 else " || ' ' || ".join(f"COALESCE({c}, '')" for c in columns) or "'total'"
    name = "MAX(s.card_name)" if "card" in keys else "''"
    group = "".join(f"{c}, " for c in columns)
    source, head = "sessions s", ""
    if "day" in keys:
        days = _local_days(since, until, tz)
        head = f"WITH d(day, lo, hi) AS (VALUES {', '.join('(?, ?, ?)' for _ in days)}) "
        source = "d JOIN sessions s ON s.started_at >= d.lo AND s.started_at < d.hi"
        args = [x for day in days for x in day] + args
    sql = (f"{head}SELECT {key}, {name}, s.currency, {sums} FROM {source} WHERE {where}"
           f" GROUP BY {group}s.currency ORDER BY {group}s.currency")
    out = []
    for k, name, cur, n, wh, sun, net, dur, chg, cost, rev, dec in store.db.execute(sql, args):
        margin = None if cost is None or rev is None else rev - cost
        out.append({"key": k, "name": name, "currency": cur, "sessions": n, "energy_kwh": _kwh(wh or 0),
                    "solar_kwh": "" if sun is None else _kwh(sun), "grid_kwh": "" if net is None else _kwh(net),
                     "hours": _hours(dur), "charging_hours": _hours(chg),
                     **{f: money_text(v, dec)
                        for f, v in (("cost", cost), ("revenue", rev), ("margin", margin))}})
    return out


def _has(store: Store, column: str) -> bool:
    """Whether the sessions table has this column (a database an older daemon still writes may not)."""
    return any(r[1] == column for r in store.db.execute("PRAGMA table_info(sessions)"))


def _local_days(since: str, until: str, tz: dt.tzinfo) -> list[tuple[str, str, str]]:
    """(local date, its start, the next day's start as ISO UTC) for each local day in the range."""
    day = dt.datetime.fromisoformat(since).astimezone(tz).date()
    end = dt.datetime.fromisoformat(until)
    out: list[tuple[str, str, str]] = []
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
                  "stop_reason", "tariff", "currency", "cost", "revenue", "margin", "solar_wh", "grid_wh",
                  "meter_rebaselined")
SAMPLE_EXPORT = ("session_id", "time", "energy_wh", "power_w", "l1_a", "l2_a", "l3_a", "l1_v", "l2_v", "l3_v")


def export_sessions(store: Store, since: str | None, until: str | None, tz: dt.tzinfo, *, card: str | None = None,
                    after_id: int | None = None, limit: int | None = None) -> Iterator[tuple]:
    """Finished and running sessions started in [since, until), oldest first, one at a time, as
    tuples in SESSION_EXPORT order; of one card (its UID or name) if asked; a page of them: at
    most `limit`, those after session `after_id` (the order of Store.sessions)."""
    sql = ("SELECT id, connector_id, id_tag, card_name, card_group, started_at, stopped_at, duration_s, charging_s,"
           " idle_s, meter_start_wh, meter_stop_wh, energy_wh, peak_power_w, stop_reason, tariff_name, currency,"
           " cost_minor, revenue_minor, money_decimals, "
           + ", ".join(c if _has(store, c) else "NULL" for c in ("solar_wh", "grid_wh", "meter_rebaselined"))
           + " FROM sessions")
    window = store.window(since, until, after_id)
    if window is None:
        return
    where, args = window
    if card:
        where.append("(id_tag = ? OR card_name = ?)")
        args += [card, card]
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY started_at, id"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    local = _LocalTime(tz)
    for (i, conn, tag, name, group, start, stop, dur, chg, idle, m0, m1, wh, peak, reason, tariff, cur,
         cost, rev, dec, sun, net, rebaselined) in store.db.execute(sql, args):
        margin = None if cost is None or rev is None else rev - cost
        yield (i, conn, tag, name, group, local(start), local(stop), dur, chg, idle, m0, m1, wh,
               f"{wh // 1000}.{wh % 1000:03d}", round(peak), reason or "", tariff, cur,
               money_text(cost, dec), money_text(rev, dec), money_text(margin, dec), sun, net, rebaselined or 0)


def export_samples(store: Store, since: str | None, until: str | None, tz: dt.tzinfo) -> Iterator[tuple]:
    """Meter samples of the sessions started in [since, until), by session, then time, as tuples
    in SAMPLE_EXPORT order."""
    sql = ("SELECT m.session_id, m.t_ms, m.energy_wh, m.power_w, m.l1_a, m.l2_a, m.l3_a, m.l1_v, m.l2_v, m.l3_v"
           " FROM sessions s JOIN samples m ON m.session_id = s.id"
           " WHERE s.started_at >= ? AND s.started_at < ? ORDER BY s.started_at, s.id, m.t_ms")
    for r in store.db.execute(sql, (since or "", until or "9999")):
        yield (r[0], dt.datetime.fromtimestamp(r[1] / 1000, tz).isoformat(timespec="milliseconds"), *r[2:])


class _LocalTime:
    """Stored ISO 8601 UTC text as local time with its offset; the offset is looked up once per
    UTC hour; an hour with an offset change in it (or text of another form) takes the slow way."""

    def __init__(self, tz: dt.tzinfo):
        self.tz = tz
        # UTC hour -> (its offset, that offset as text), or False when the offset changes in it
        self._hours: dict[str, tuple[dt.timedelta, str] | Literal[False]] = {}

    def __call__(self, iso: str | None) -> str:
        if not iso:
            return ""
        hour = iso[:13]
        found = self._hours.get(hour)
        if found is None:
            if len(self._hours) > 64:  # rows come in time order: old hours are not asked again
                self._hours.clear()
            utc = dt.datetime.fromisoformat(hour + ":00:00+00:00")
            a, b = utc.astimezone(self.tz).utcoffset(), (utc + dt.timedelta(minutes=59)).astimezone(self.tz).utcoffset()
            assert a is not None  # astimezone gave an aware time: its zone has an offset for it
            found = self._hours[hour] = (a, dt.datetime(2000, 1, 1, tzinfo=dt.timezone(a)).isoformat()[19:]) \
                if a == b else False
        if found is False or len(iso) != 25 or not iso.endswith("+00:00"):  # an offset change, or not ours
            return dt.datetime.fromisoformat(iso).astimezone(self.tz).isoformat(timespec="seconds")
        return (dt.datetime.fromisoformat(iso[:19]) + found[0]).isoformat(timespec="seconds") + found[1]


def money_text(minor: int | None, decimals: int) -> str:
    """Integer minor units as major units ("" for none), as reports and the export print money."""
    return "" if minor is None else format_money(minor, decimals)


def write(rows: Iterable[tuple], fields: tuple[str, ...], fmt: str, out: IO[str], *, header: bool = True) -> int:
    """Stream rows as CSV (a header unless header is False, RFC 4180 CRLF lines, empty cells for
    none) or as a JSON array with one object per line; returns the number of rows."""
    n = 0
    if fmt == "csv":
        w = csv.writer(out)
        if header:
            w.writerow(fields)
        for n, row in enumerate(rows, 1):
            w.writerow(row)  # None is written as an empty cell
        return n
    out.write("[")
    for n, row in enumerate(rows, 1):
        out.write(("\n" if n == 1 else ",\n") + json.dumps(dict(zip(fields, row)), separators=(",", ":")))
    out.write("\n]\n")
    return n
