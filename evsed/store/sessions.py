"""Session records in SQLite under the state directory, durable across power cuts.

A session row is written at start, checkpointed with its last meter reading and the meter
samples since the last checkpoint about once a minute (one commit: SD cards wear), and
completed at stop with its totals, cost, revenue and signed OCMF document in one commit.
Open rows found at start are closed with stop reason power_loss. A session's energy is its
own meter delta from its own start reading, never moved: a start below the connector's
previous stop (a reset or replaced meter) is a new baseline, flagged meter_rebaselined.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import queue
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from evsed.core import tariff as tariffs
from evsed.store import migrations, ocmf, outbox
from evsed.store.samples import MeterSample


class _Log:
    """structlog's "evsed" logger, imported at the first line the store logs: `evsed sessions`,
    `report` and `export` read the store without it (structlog imports asyncio: 70 ms of them)."""

    def __getattr__(self, level: str) -> Any:
        import structlog
        return getattr(structlog.get_logger("evsed"), level)


log = _Log()

COLUMNS = ("id", "connector_id", "id_tag", "card_name", "card_group", "auth_source", "started_at",
           "stopped_at", "meter_start_wh", "meter_stop_wh", "energy_wh", "peak_power_w", "stop_reason",
           "duration_s", "charging_s", "idle_s", "stop_final", "tariff", "tariff_name", "currency", "money_decimals",
           "cost_minor", "revenue_minor", "meter_id", "meter_signed_format", "meter_signed_data", "ocmf",
           "ocmf_public_key", "meter_rebaselined", "solar_wh", "grid_wh", "meter_vendor", "meter_model")
SAMPLE_COLUMNS = ("session_id", "t_ms", "energy_wh", "power_w", "l1_a", "l2_a", "l3_a", "l1_v", "l2_v", "l3_v")
NO_PRICES = tariffs.Tariff(name="", currency="")


def utc_iso(when: dt.datetime | None = None) -> str:
    return (when or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class LiveSession:
    """A running session as the shell tracks it; row_id is set once the start is stored."""

    connector_id: int
    id_tag: str
    card_name: str
    card_group: str
    auth_source: str
    started_at: str
    meter_start_wh: int
    meter_last_wh: int
    peak_power_w: float = 0.0
    power_w: float = 0.0
    row_id: int | None = None
    meter_start_unknown: bool = False  # no meter reading yet: the first one sets the start
    stopped: tuple[str, str] | None = None  # (stop reason, stop time) once it ended
    pricing: str = ""  # tariffs.Pricing.to_json() of the tariff in force at the start; "" = none
    meter_id: str = ""  # the meter's serial number, vendor and model, when its backend tells them
    meter_vendor: str = ""
    meter_model: str = ""
    meter_rebaselined: bool = False  # its start is a new meter baseline (a reset or replaced meter)
    solar_wh: int | None = None  # its energy from solar surplus and from the grid (None: no site meter)
    grid_wh: int | None = None

    @property
    def energy_wh(self) -> int:
        return max(0, self.meter_last_wh - self.meter_start_wh)


class Store:
    """Synchronous access to the session database; one instance per thread.

    signer: the charger's OCMF key; each finished session then gets a signed document.
    """

    def __init__(self, path: Path | str, *, signer: ocmf.SigningKey | None = None, charger_id: str = "evsed",
                 timezone: str = "UTC", version: str = "0", clock_synced: Callable[[], bool] = lambda: False):
        """clock_synced: whether the kernel says the clock is synchronised (OCMF time status S)."""
        self.path = Path(path)
        self.signer, self.charger_id, self.timezone, self.version = signer, charger_id, timezone, version
        self.clock_synced = clock_synced
        if str(path) != ":memory:":  # card UIDs and names: 0640 whatever the umask (-wal, -shm follow it):
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640))  # the services' group reads it
            os.chmod(self.path, 0o640)
        self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # a finished session survives a power cut
        before, after = migrations.migrate(self.db)
        if before != after:
            log.info("store.migrated", path=str(self.path), from_version=before, to_version=after)
        elif before > migrations.VERSION:  # a newer release migrated it additively, then was rolled back
            log.warning("store.newer_schema", path=str(self.path), version=before, this_version=migrations.VERSION,
                        min_writer=migrations.min_writer(self.db))
        self._columns: tuple[str, ...] = COLUMNS
        outbox.create(self.db)

    @classmethod
    def open_readonly(cls, path: Path | str) -> Store:
        """For readers (reports, export) beside a running daemon; never writes. A database an
        older daemon still writes reads with the newer columns empty."""
        self = cls.__new__(cls)
        self.path = Path(path)
        self.signer, self.clock_synced = None, lambda: False
        self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None,
                                  check_same_thread=False)
        have = {r[1] for r in self.db.execute("PRAGMA table_info(sessions)")}
        self._columns = tuple(c if c in have else f"NULL AS {c}" for c in COLUMNS)
        return self

    def close(self) -> None:
        self.db.close()

    def next_session_id(self) -> int:
        """The id the next session gets; the shell numbers sessions itself, so events can name them."""
        return int(self.db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM sessions").fetchone()[0])

    @contextlib.contextmanager
    def _tx(self):
        """One transaction, one commit: one fsync of the WAL. Inside the writer's batch (already
        in a transaction, each write in a savepoint) the batch's commit is that one."""
        if self.db.in_transaction:
            yield
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # --- the writer's operations ------------------------------------------------------------

    def start(self, s: LiveSession) -> None:
        """Store a new session as it started: its start reading is kept as read. One below the
        connector's previous stop (a reset or replaced meter) is a new baseline, flagged so."""
        with self._tx():
            if self._below_previous_stop(s.connector_id, s.meter_start_wh, s.row_id):
                s.meter_rebaselined = True
            p = tariffs.Pricing.from_json(s.pricing) if s.pricing else None
            cur = self.db.execute(
                "INSERT INTO sessions (id, connector_id, id_tag, card_name, card_group, auth_source, started_at,"
                " updated_at, meter_start_wh, meter_last_wh, tariff, tariff_name, currency, money_decimals, meter_id,"
                " meter_vendor, meter_model, meter_rebaselined) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (s.row_id, s.connector_id, s.id_tag, s.card_name, s.card_group, s.auth_source, s.started_at,
                 s.started_at, s.meter_start_wh, s.meter_last_wh, s.pricing,
                 f"{p.tariff}/{p.price.name}" if p else "", p.currency if p else "",
                 p.decimals if p else 2, s.meter_id, s.meter_vendor, s.meter_model, int(s.meter_rebaselined)))
        s.row_id = cur.lastrowid

    def _below_previous_stop(self, connector_id: int, meter_start_wh: int, row_id: int | None) -> bool:
        """Whether a start reading is below the stop of the connector's previous session: the
        meter was reset or replaced in between (logged; the reading is kept as read)."""
        prev = self.db.execute(
            "SELECT id, meter_stop_wh FROM sessions WHERE connector_id=? AND stopped_at IS NOT NULL AND id<?"
            " ORDER BY id DESC LIMIT 1", (connector_id, row_id if row_id is not None else 2**62)).fetchone()
        if prev is None or prev[1] is None or meter_start_wh >= prev[1]:
            return False
        log.warning("session.meter_rebaselined", connector=connector_id, session=row_id, previous=prev[0],
                    meter_start_wh=meter_start_wh, previous_stop_wh=prev[1])
        return True

    def set_meter(self, row_id: int, meter_start_wh: int, meter_last_wh: int, rebaselined: bool = False) -> None:
        """A running session's meter values anew: its first reading, or a replaced meter's
        (rebaselined: the meter became a new baseline during the session)."""
        with self._tx():
            row = self.db.execute("SELECT connector_id FROM sessions WHERE id=?", (row_id,)).fetchone()
            if row is None:
                return
            rebaselined = rebaselined or self._below_previous_stop(row[0], meter_start_wh, row_id)
            self.db.execute("UPDATE sessions SET meter_start_wh=?, meter_last_wh=?, energy_wh=MAX(0, ?-?),"
                            " meter_rebaselined=MAX(meter_rebaselined, ?) WHERE id=?",
                            (meter_start_wh, meter_last_wh, meter_last_wh, meter_start_wh, int(rebaselined), row_id))

    def checkpoint(self, row_id: int, meter_last_wh: int, peak_power_w: float, when: str,
                   samples: Sequence[MeterSample] = (), split: tuple[int, int] | None = None) -> None:
        """A running session's last reading and the samples since the last checkpoint, in one commit;
        split: its energy so far from solar surplus and from the grid (None: not known)."""
        solar, grid = split if split is not None else (None, None)
        with self._tx():
            self._insert_samples(row_id, samples)
            self.db.execute(
                "UPDATE sessions SET meter_last_wh=?, energy_wh=MAX(0, ?-meter_start_wh),"
                " peak_power_w=?, updated_at=?, solar_wh=COALESCE(?, solar_wh), grid_wh=COALESCE(?, grid_wh)"
                " WHERE id=? AND stopped_at IS NULL",
                (meter_last_wh, meter_last_wh, peak_power_w, when, solar, grid, row_id))

    def finish(self, s: LiveSession, samples: Sequence[MeterSample] = ()) -> None:
        """A finished session, whole: completes its row, or writes it anew when the start write failed."""
        assert s.stopped is not None and s.row_id is not None
        if self.db.execute("SELECT 1 FROM sessions WHERE id=?", (s.row_id,)).fetchone() is None:
            self.start(s)
        reason, when = s.stopped
        split = None if s.solar_wh is None or s.grid_wh is None else (s.solar_wh, s.grid_wh)
        self.stop(s.row_id, s.meter_last_wh, s.peak_power_w, reason, when, samples, split)

    def add_samples(self, row_id: int, samples: Sequence[MeterSample]) -> None:
        """Samples of a session in one commit (for a caller that batches them apart from checkpoints)."""
        with self._tx():
            self._insert_samples(row_id, samples)

    def _insert_samples(self, row_id: int, samples: Iterable[MeterSample]) -> None:
        self.db.executemany(f"INSERT OR REPLACE INTO samples ({', '.join(SAMPLE_COLUMNS)}) VALUES"
                            f" ({', '.join('?' * len(SAMPLE_COLUMNS))})", (s.row(row_id) for s in samples))

    def stop(self, row_id: int, meter_stop_wh: int, peak_power_w: float, reason: str, when: str,
             samples: Sequence[MeterSample] = (), split: tuple[int, int] | None = None) -> bool:
        """Finish a session with its final reading (taken after the contactor opened), totals,
        cost, revenue and OCMF document: durable on return, and fixed: a session already
        finished is not written again. split: its energy from solar surplus and from the grid.
        Returns whether it wrote."""
        solar, grid = split if split is not None else (None, None)
        with self._tx():
            self._insert_samples(row_id, samples)
            row = self.db.execute("SELECT stopped_at FROM sessions WHERE id=?", (row_id,)).fetchone()
            if row is None or row[0] is not None:
                return False
            when = self._not_before_start(row_id, when)
            self.db.execute(
                "UPDATE sessions SET stopped_at=?, updated_at=?, meter_last_wh=?, meter_stop_wh=?,"
                " energy_wh=MAX(0, ?-meter_start_wh), peak_power_w=?, stop_reason=?, stop_final=1,"
                " solar_wh=COALESCE(?, solar_wh), grid_wh=COALESCE(?, grid_wh) WHERE id=?",
                (when, when, meter_stop_wh, meter_stop_wh, meter_stop_wh, peak_power_w, reason, solar, grid, row_id))
            self._complete(row_id)
        return True

    def correct_times(self, row_id: int, started_at: str, stopped_at: str | None, by_s: float) -> None:
        """The wall clock stepped under a session timed on a wrong clock (evsed.shell.clocksteps):
        its start (and its stop when given), last update and stored samples move by by_s; a
        finished session's totals and document are made anew. A stop never precedes the start."""
        with self._tx():
            row = self.db.execute("SELECT updated_at, stopped_at FROM sessions WHERE id=?", (row_id,)).fetchone()
            if row is None:
                return
            updated = shifted_iso(row[0], by_s) if row[0] else started_at
            stop = row[1] if stopped_at is None else stopped_at
            if stop is not None:
                stop = _not_before(stop, started_at)
            self.db.execute("UPDATE sessions SET started_at=?, updated_at=?, stopped_at=? WHERE id=?",
                            (started_at, _not_before(updated, started_at), stop, row_id))
            self.db.execute("UPDATE samples SET t_ms=t_ms+? WHERE session_id=?", (round(by_s * 1000), row_id))
            if stop is not None:
                self._complete(row_id)

    def recover(self, closed: Callable[[dict], None] | None = None) -> list[int]:
        """Close sessions left open by a crash or power cut at their best durable reading (the last
        checkpoint, which holds what the uplink delivered to the CSMS, or a stored sample above
        it), with totals and a signed document; returns their ids. closed(row) runs in each one's
        transaction (the daemon's outbox event: a power cut keeps the close and its event, or neither)."""
        rows = [r[0] for r in self.db.execute("SELECT id FROM sessions WHERE stopped_at IS NULL")]
        for row_id in rows:
            with self._tx():
                self.db.execute(
                    "UPDATE sessions SET meter_last_wh=MAX(meter_last_wh, COALESCE("
                    "(SELECT MAX(energy_wh) FROM samples WHERE session_id=sessions.id), 0))"
                    " WHERE id=? AND meter_rebaselined=0", (row_id,))  # else samples hold another counter's
                self.db.execute(
                    "UPDATE sessions SET stopped_at=MAX(updated_at, started_at), meter_stop_wh=meter_last_wh,"
                    " energy_wh=MAX(0, meter_last_wh-meter_start_wh), stop_reason='power_loss', stop_final=1"
                    " WHERE id=?", (row_id,))
                self._complete(row_id)
                row = self.session(row_id)
                if closed is not None and row is not None:
                    closed(row)
        return rows

    def set_meter_signed(self, row_id: int, fmt: str, data: str) -> None:
        """Keep a meter's own signed data for the session exactly as the meter gave it
        (fmt e.g. "OCMF"); the controller's document is kept beside it, never instead."""
        self.db.execute("UPDATE sessions SET meter_signed_format=?, meter_signed_data=? WHERE id=?",
                        (fmt, data, row_id))

    def prune_samples(self, before: str) -> int:
        """Delete the samples of sessions that stopped before `before` (ISO 8601 UTC); sessions
        are kept. Returns the number of samples deleted."""
        with self._tx():
            cur = self.db.execute("DELETE FROM samples WHERE session_id IN"
                                  " (SELECT id FROM sessions WHERE stopped_at IS NOT NULL AND stopped_at < ?)",
                                  (before,))
        return cur.rowcount

    def _not_before_start(self, row_id: int, when: str) -> str:
        """A stop taken on a clock that stepped back under the session is its start (logged)."""
        started = self.db.execute("SELECT started_at FROM sessions WHERE id=?", (row_id,)).fetchone()[0]
        clamped = _not_before(when, started)
        if clamped != when:
            log.warning("session.stop_before_start", session=row_id, started_at=started, stopped_at=when)
        return clamped

    def _complete(self, row_id: int) -> None:
        """Totals, money and the OCMF document of a stopped row, inside the caller's transaction."""
        r = self.session(row_id)
        assert r is not None  # every caller has just updated this row in the same transaction
        pricing = (tariffs.Pricing.from_json(r["tariff"]) if r["tariff"]
                   else NO_PRICES.pricing("", self.timezone or "UTC"))
        start, stop = dt.datetime.fromisoformat(r["started_at"]), dt.datetime.fromisoformat(r["stopped_at"])
        c = tariffs.charge(pricing, start, max(start, stop), r["meter_start_wh"], r["meter_stop_wh"],
                           (tariffs.Sample(s.at, s.energy_wh, s.power_w) for s in self.samples(row_id)))
        priced = bool(r["tariff"])
        values: dict[str, object] = {"duration_s": c.duration_s, "charging_s": c.charging_s, "idle_s": c.idle_s,
                  "cost_minor": c.cost if priced else None, "revenue_minor": c.revenue if priced else None}
        if self.signer is not None:
            doc_row = {**r, **values, "tariff_text": _tariff_text(pricing) if priced else ""}
            values["ocmf"] = ocmf.document(doc_row, self.signer, charger_id=self.charger_id, version=self.version,
                                           timezone=pricing.timezone if priced else self.timezone,
                                           synced=self.clock_synced())
            values["ocmf_public_key"] = self.signer.public_key_hex
        sets = ", ".join(f"{k}=?" for k in values)
        self.db.execute(f"UPDATE sessions SET {sets} WHERE id=?", (*values.values(), row_id))

    # --- readers ----------------------------------------------------------------------------

    def session(self, row_id: int) -> dict | None:
        row = self.db.execute(f"SELECT {', '.join(self._columns)} FROM sessions WHERE id=?", (row_id,)).fetchone()
        return None if row is None else dict(zip(COLUMNS, row))

    def samples(self, session_id: int) -> Iterator[MeterSample]:
        for r in self.db.execute(f"SELECT {', '.join(SAMPLE_COLUMNS[1:])} FROM samples WHERE session_id=?"
                                 " ORDER BY t_ms", (session_id,)):
            yield MeterSample(r[0], r[1], r[2], tuple(x for x in r[3:6] if x is not None),
                              tuple(x for x in r[6:9] if x is not None))

    def sessions(self, *, since: str | None = None, until: str | None = None, card: str | None = None,
                 newest_first: bool = False, after_id: int | None = None, limit: int | None = None) -> Iterator[dict]:
        """Sessions oldest first (or newest first), filtered by start time (ISO, UTC) and card uid
        or name; a page of them: at most `limit`, those after session `after_id` in that order."""
        window = self.window(since, until, after_id, newest_first)
        if window is None:
            return
        where, args = window
        if card:
            where.append("(id_tag = ? OR card_name = ?)")
            args += [card, card]
        sql = f"SELECT {', '.join(self._columns)} FROM sessions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_at DESC, id DESC" if newest_first else " ORDER BY started_at, id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        for row in self.db.execute(sql, args):
            yield dict(zip(COLUMNS, row))

    def window(self, since: str | None, until: str | None, after_id: int | None,
               newest_first: bool = False) -> tuple[list[str], list[object]] | None:
        """The WHERE terms (and their arguments) for sessions started in [since, until) (ISO UTC)
        that follow session after_id in the order (started_at, id), or its reverse; None when there
        is no session after_id. One bound a side: given two (a start time and the page's key),
        SQLite walks the started_at index from the one it picks, and from `since` a page of the
        export cost every session before it (all pages: the history squared)."""
        lower = ("started_at >= ?", [since]) if since else None
        upper = ("started_at < ?", [until]) if until else None
        if after_id is not None:
            key = self.db.execute("SELECT started_at, id FROM sessions WHERE id = ?", (after_id,)).fetchone()
            if key is None:
                return None
            # the key's own bound wins unless the window's is beyond it (which then holds it)
            if newest_first and (until is None or key[0] < until):
                upper = ("(started_at, id) < (?, ?)", list(key))
            elif not newest_first and (since is None or key[0] >= since):
                lower = ("(started_at, id) > (?, ?)", list(key))
        terms = [t for t in (lower, upper) if t is not None]
        return [sql for sql, _ in terms], [a for _, args in terms for a in args]


Op = Callable[["Store"], object]  # what an op returns is not used


def shifted_iso(iso: str, by_s: float) -> str:
    return utc_iso(dt.datetime.fromisoformat(iso) + dt.timedelta(seconds=by_s))


def _not_before(iso: str, start_iso: str) -> str:
    """iso, or start_iso when iso is earlier (compared as instants, not as text)."""
    return start_iso if dt.datetime.fromisoformat(iso) < dt.datetime.fromisoformat(start_iso) else iso


def _tariff_text(p: tariffs.Pricing) -> str:
    """OCMF TT: the driver's price in words (at most 250 characters)."""
    d, cur = p.price, p.currency
    parts = [f"{d.per_kwh} {cur}/kWh", f"{d.per_hour} {cur}/h", f"{d.per_session} {cur}/session"]
    if d.idle_per_hour:
        cap = f", max {d.idle_cap} {cur}" if d.idle_cap is not None else ""
        parts.append(f"idle {d.idle_per_hour} {cur}/h after {d.idle_grace_s // 60} min{cap}")
    return f"{p.tariff}/{d.name}: " + ", ".join(parts)


class StoreWriter:
    """Runs store operations in order on one thread, so SQLite never blocks the event loop."""

    def __init__(self, store: Store):
        self.store = store
        self._queue: queue.Queue[tuple[Op, Callable[[], None] | None] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="evsed-store", daemon=True)
        self.errors: list[BaseException] = []
        self._thread.start()

    def submit(self, op: Op, after_commit: Callable[[], None] | None = None) -> None:
        """Queue a write; after_commit runs in the writer thread once it is durable."""
        self._queue.put((op, after_commit))

    def _run(self) -> None:
        """Everything queued meanwhile goes into one transaction (one fsync), each write in its own
        savepoint so that one bad write loses only itself."""
        stop = False
        while not stop:
            batch: list[tuple[Op, Callable[[], None] | None]] = []
            item = self._queue.get()
            while item is not None:
                batch.append(item)
                if self._queue.empty():
                    break
                item = self._queue.get_nowait()
            stop = item is None
            if batch:
                self._write(batch)

    def _write(self, batch: list[tuple[Op, Callable[[], None] | None]]) -> None:
        db = self.store.db
        try:
            db.execute("BEGIN")
        except sqlite3.Error as exc:
            self._failed(exc)
            return
        done = []
        for op, after in batch:
            db.execute("SAVEPOINT op")
            try:
                op(self.store)
            except Exception as exc:  # noqa: BLE001 - the writer must outlive one bad write
                db.execute("ROLLBACK TO op")
                self._failed(exc)
            else:
                done.append(after)
            db.execute("RELEASE op")
        try:
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._failed(exc)
            db.execute("ROLLBACK") if db.in_transaction else None
            return
        for after in done:
            if after is not None:
                after()

    def _failed(self, exc: BaseException) -> None:
        self.errors.append(exc)
        log.error("store.write_failed", error=repr(exc), path=str(self.store.path))

    def close(self, timeout_s: float = 5.0) -> None:
        """Finish every queued write, then stop."""
        self._queue.put(None)
        self._thread.join(timeout_s)


class InlineWriter:
    """The same interface run in the caller's thread (scenarios, tests)."""

    def __init__(self, store: Store):
        self.store = store
        self.errors: list[BaseException] = []

    def submit(self, op: Op, after_commit: Callable[[], None] | None = None) -> None:
        try:
            op(self.store)
        except Exception as exc:  # noqa: BLE001 - as the threaded writer: logged, survived
            self.errors.append(exc)
            log.error("store.write_failed", error=repr(exc), path=str(self.store.path))
            return
        if after_commit is not None:
            after_commit()

    def close(self, timeout_s: float = 0.0) -> None:
        pass
