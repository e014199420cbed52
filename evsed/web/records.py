"""Session records for the page: read-only from the daemon's SQLite store, summed in local time.

Reading goes through `each_session` only, so the store's own reports (with cost and revenue) can
replace the sums here without touching the handlers. Nothing here holds more than a page or a
month of sessions: the history may be any length.
"""

from __future__ import annotations

import calendar
import datetime as dt
import io
import json
import sqlite3
from pathlib import Path
from typing import Iterable, Iterator

from evsed.store import reports as store_reports
from evsed.store.sessions import Store
from evsed.web.view import mask

# What the page's sessions table gets of a row: never the signed data (OCMF holds the card UID)
ROW_FIELDS = ("id", "connector_id", "card_name", "card_group", "started_at", "stopped_at", "energy_wh",
              "peak_power_w", "stop_reason", "currency")


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


def report(db_path: Path, since: str, until: str, tz: dt.tzinfo, *, show_tags: bool) -> dict:
    """The month's report as `evsed report` computes it (the store's sums, money in major units):
    one line per card and the total per currency; card UIDs masked unless show_tags."""
    if not db_path.exists():
        return {"by_card": [], "total": []}
    store = Store.open_readonly(db_path)
    try:
        by_card = store_reports.report(store, since, until, "card", tz)
        total = store_reports.report(store, since, until, None, tz)
    except sqlite3.OperationalError:  # no table yet
        return {"by_card": [], "total": []}
    finally:
        store.close()
    if not show_tags:
        by_card = [dict(r, key=mask(r["key"])) for r in by_card]
    return {"by_card": by_card, "total": total}


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


def newest_json(db_path: Path, tz: dt.tzinfo, *, show_tags: bool, limit: int, before: int | None = None,
                since: str | None = None, until: str | None = None, card: str | None = None) -> tuple[str, int | None]:
    """A page of sessions, newest first: the `limit` before session `before` (the newest without),
    as a JSON array of what the page shows (ROW_FIELDS, money, local start and stop times, the UID
    masked unless show_tags); and the id of the page's last one when older ones follow (None: none
    do). Rows become text as they are read: a page never stands in memory as dicts."""
    texts: list[str] = []
    last: int | None = None
    for row in each_session(db_path, since=since, until=until, card=card, newest_first=True, after_id=before,
                            limit=limit + 1):
        if len(texts) == limit:  # one more than the page: older ones follow
            return "[" + ", ".join(texts) + "]", last
        last = row.get("id")
        texts.append(json.dumps({**{k: row.get(k) for k in ROW_FIELDS}, **money(row),
                                 "id_tag": row.get("id_tag") if show_tags else mask(row.get("id_tag")),
                                 "started_local": local_text(row.get("started_at"), tz),
                                 "stopped_local": local_text(row.get("stopped_at"), tz)}))
    return "[" + ", ".join(texts) + "]", None


def money(row: dict) -> dict[str, str]:
    """A session's cost (the host's energy), paid (the driver's price) and margin, in major units
    with the currency's code ("" where the session has no tariff)."""
    cost, paid, decimals = row.get("cost_minor"), row.get("revenue_minor"), row.get("money_decimals") or 0
    currency = f" {row['currency']}" if row.get("currency") else ""

    def show(minor: int | None) -> str:
        return "" if minor is None else store_reports.money_text(minor, decimals) + currency
    return {"cost": show(cost), "paid": show(paid),
            "margin": show(None if cost is None or paid is None else paid - cost)}


def csv_page(db_path: Path, tz: dt.tzinfo, *, show_tags: bool, after_id: int | None, limit: int,
             since: str | None = None, until: str | None = None, card: str | None = None) -> tuple[bytes, int | None]:
    """One part of the CSV, as `evsed export --format csv` writes it (its columns and rows), oldest
    first: the header and the first `limit` sessions when after_id is None, else the `limit` after
    session after_id; and the id to go on after (None: the end). Card UIDs masked unless show_tags.
    Each part is its own short read: a slow download holds no transaction open."""
    out = io.StringIO()
    rows: list[tuple] = []
    if db_path.exists():
        store = Store.open_readonly(db_path)
        try:
            rows = list(store_reports.export_sessions(store, since, until, tz, card=card, after_id=after_id,
                                                      limit=limit))
        except sqlite3.OperationalError:  # no table yet
            pass
        finally:
            store.close()
    uid = store_reports.SESSION_EXPORT.index("card_uid")
    shown = rows if show_tags else [r[:uid] + (mask(r[uid]),) + r[uid + 1:] for r in rows]
    store_reports.write(shown, store_reports.SESSION_EXPORT, "csv", out, header=after_id is None)
    return out.getvalue().encode(), (rows[-1][0] if len(rows) == limit else None)
