"""Session records for the page: read-only from the daemon's SQLite store, summed in local time.

Reading goes through `each_session` only, so the store's own reports (with cost and revenue) can
replace the sums here without touching the handlers. Nothing here holds more than a page or a
month of sessions: the history may be any length.
"""

from __future__ import annotations

import calendar
import csv
import datetime as dt
import io
import json
import sqlite3
from pathlib import Path
from typing import Iterable, Iterator

from evsed.store.sessions import COLUMNS, Store
from evsed.web.view import mask

MONEY_KEYS = ("cost", "revenue", "price")  # summed when the store's rows carry them


def each_session(db_path: Path, *, since: str | None = None, until: str | None = None, card: str | None = None,
                 newest_first: bool = False, after_id: int | None = None, limit: int | None = None) -> Iterator[dict]:
    """Sessions oldest first (start times ISO UTC; newest first if asked), one row at a time, for
    sums over a window and for pages (Store.sessions); none while the daemon has written none.
    The read transaction lasts as long as the iteration: keep it to one page or one month."""
    if not db_path.exists():
        return
    try:
        store = Store.open_readonly(db_path)
    except sqlite3.Error:
        return
    try:
        yield from store.sessions(since=since, until=until, card=card or None, newest_first=newest_first,
                                  after_id=after_id, limit=limit)
    except sqlite3.OperationalError:  # no table yet
        return
    finally:
        store.close()


def local_day_start(when: dt.datetime, tz: dt.tzinfo) -> dt.datetime:
    local = when.astimezone(tz)
    return dt.datetime(local.year, local.month, local.day, tzinfo=tz)


def month_bounds(month: str, tz: dt.tzinfo) -> tuple[dt.datetime, dt.datetime]:
    """The first instant of YYYY-MM and of the next month, local time; ValueError when malformed."""
    year, mon = (int(x) for x in month.split("-"))
    if not 2000 <= year <= 2200 or not 1 <= mon <= 12 or len(month) != 7:
        raise ValueError(f"expected a month as YYYY-MM, got {month!r}")
    start = dt.datetime(year, mon, 1, tzinfo=tz)
    end = dt.datetime(year + (mon == 12), mon % 12 + 1, 1, tzinfo=tz)
    return start, end


def iso_utc(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).isoformat(timespec="seconds")


def _start(row: dict) -> dt.datetime | None:
    try:
        when = dt.datetime.fromisoformat(str(row["started_at"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def local_text(iso: str | None, tz: dt.tzinfo) -> str:
    """A stored UTC time as the charger's local 'YYYY-MM-DD HH:MM' ('' when missing)."""
    when = _start({"started_at": iso}) if iso else None
    return when.astimezone(tz).strftime("%Y-%m-%d %H:%M") if when else ""


def _hours(row: dict) -> float:
    start = _start(row)
    try:
        stop = dt.datetime.fromisoformat(str(row.get("stopped_at")).replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    if start is None:
        return 0.0
    stop = stop if stop.tzinfo else stop.replace(tzinfo=dt.timezone.utc)
    return max(0.0, (stop - start).total_seconds() / 3600)


def report(rows: Iterable[dict], tz: dt.tzinfo, *, show_tags: bool = True) -> dict:
    """Totals and per-card lines: sessions, kWh, hours (and money when the rows carry it); a card
    without a name by its UID, masked unless show_tags."""
    total = _zero()
    by_card: dict[str, dict] = {}
    for row in rows:
        key = row.get("card_name") or (row.get("id_tag") if show_tags else mask(row.get("id_tag"))) or "?"
        for acc in (total, by_card.setdefault(key, _zero())):
            acc["sessions"] += 1
            acc["energy_wh"] += int(row.get("energy_wh") or 0)
            acc["hours"] += _hours(row)
            for money in MONEY_KEYS:
                if isinstance(row.get(money), (int, float)):
                    acc[money] = acc.get(money, 0.0) + row[money]
    return {"total": total, "by_card": [dict(card=k, **v) for k, v in sorted(by_card.items())]}


def _zero() -> dict:
    return {"sessions": 0, "energy_wh": 0, "hours": 0.0}


def usage(rows: Iterable[dict], month: str, tz: dt.tzinfo) -> dict:
    """Energy per local day of the month (Wh, by start day) and sessions per local hour of day."""
    start, _ = month_bounds(month, tz)
    days = [0] * calendar.monthrange(start.year, start.month)[1]
    hours = [0] * 24
    for row in rows:
        when = _start(row)
        if when is None:
            continue
        local = when.astimezone(tz)
        if (local.year, local.month) == (start.year, start.month):
            days[local.day - 1] += int(row.get("energy_wh") or 0)
            hours[local.hour] += 1
    return {"month": month, "energy_wh_by_day": days, "sessions_by_hour": hours}


def totals(rows: Iterable[dict], now: dt.datetime, tz: dt.tzinfo) -> dict:
    """Today's and this month's energy and sessions (by start time, local) from this month's rows;
    a running session counts with the energy its row carries (pass the live figure in the row)."""
    today = local_day_start(now, tz)
    out = {"today_wh": 0, "today_sessions": 0, "month_wh": 0, "month_sessions": 0}
    for row in rows:
        when = _start(row)
        if when is None:
            continue
        energy = int(row.get("energy_wh") or 0)
        if when.astimezone(tz).strftime("%Y-%m") == now.astimezone(tz).strftime("%Y-%m"):
            out["month_wh"] += energy
            out["month_sessions"] += 1
        if when >= today:
            out["today_wh"] += energy
            out["today_sessions"] += 1
    return out


def csv_text(rows: Iterable[dict], *, show_tags: bool, header: bool = True) -> str:
    """The sessions as CSV (header first if asked), written into one growing buffer (2,000 rows
    as 2,000 small strings left 0.9 MB of fragments behind)."""
    columns = list(COLUMNS)
    buf = io.StringIO()
    writer = csv.writer(buf)
    if header:
        writer.writerow(columns)
    for row in rows:
        if not show_tags:
            row = dict(row, id_tag=mask(row.get("id_tag")))
        writer.writerow([row.get(c, "") if row.get(c) is not None else "" for c in columns])
    return buf.getvalue()


def newest_json(db_path: Path, tz: dt.tzinfo, *, show_tags: bool, limit: int, before: int | None = None,
                since: str | None = None, until: str | None = None, card: str | None = None) -> tuple[str, int | None]:
    """A page of sessions, newest first: the `limit` before session `before` (the newest without),
    as a JSON array, each with its local start and stop times and its UID masked unless
    show_tags; and the id of the page's last one when older ones follow (None: none do).
    Rows become text as they are read: a page never stands in memory as dicts."""
    texts: list[str] = []
    last: int | None = None
    for row in each_session(db_path, since=since, until=until, card=card, newest_first=True, after_id=before,
                            limit=limit + 1):
        if len(texts) == limit:  # one more than the page: older ones follow
            return "[" + ", ".join(texts) + "]", last
        last = row.get("id")
        texts.append(json.dumps(dict(row, id_tag=row.get("id_tag") if show_tags else mask(row.get("id_tag")),
                                     started_local=local_text(row.get("started_at"), tz),
                                     stopped_local=local_text(row.get("stopped_at"), tz))))
    return "[" + ", ".join(texts) + "]", None


def csv_page(db_path: Path, *, show_tags: bool, after_id: int | None, limit: int, since: str | None = None,
             until: str | None = None, card: str | None = None) -> tuple[bytes, int | None]:
    """One part of the CSV export, oldest first: the header and the first `limit` sessions when
    after_id is None, else the `limit` after session after_id; and the id to go on after (None:
    the end). Each part is its own short read: a slow download holds no transaction open."""
    rows = list(each_session(db_path, since=since, until=until, card=card, after_id=after_id, limit=limit))
    text = csv_text(rows, show_tags=show_tags, header=after_id is None).encode()
    return text, (rows[-1]["id"] if len(rows) == limit else None)
