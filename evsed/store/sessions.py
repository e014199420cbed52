"""Session records in SQLite under the state directory, durable across power cuts.

A session row is written at start, checkpointed with its last meter reading about once
a minute (SD cards wear), and completed at stop; open rows found at start are closed
with stop reason power_loss.
"""

from __future__ import annotations

import datetime as dt
import queue
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import structlog

from evsed.store import outbox

log = structlog.get_logger("evsed")

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY,
    connector_id INTEGER NOT NULL,
    id_tag TEXT NOT NULL,
    card_name TEXT NOT NULL DEFAULT '',
    card_group TEXT NOT NULL DEFAULT '',
    auth_source TEXT NOT NULL DEFAULT '',
    started_at TEXT NOT NULL,          -- ISO 8601 UTC
    stopped_at TEXT,                   -- NULL while running
    updated_at TEXT NOT NULL,          -- last checkpoint
    meter_start_wh INTEGER NOT NULL,
    meter_last_wh INTEGER NOT NULL,
    meter_stop_wh INTEGER,
    energy_wh INTEGER NOT NULL DEFAULT 0,
    peak_power_w REAL NOT NULL DEFAULT 0,
    stop_reason TEXT
);
CREATE INDEX IF NOT EXISTS sessions_started ON sessions(started_at);
"""

COLUMNS = ("id", "connector_id", "id_tag", "card_name", "card_group", "auth_source", "started_at",
           "stopped_at", "meter_start_wh", "meter_stop_wh", "energy_wh", "peak_power_w", "stop_reason")


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

    @property
    def energy_wh(self) -> int:
        return max(0, self.meter_last_wh - self.meter_start_wh)


class Store:
    """Synchronous access to the session database; one instance per thread."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # a finished session survives a power cut
        self.db.executescript(SCHEMA)
        outbox.create(self.db)

    @classmethod
    def open_readonly(cls, path: Path | str) -> Store:
        """For readers (reports, export) beside a running daemon; never writes."""
        self = cls.__new__(cls)
        self.path = Path(path)
        self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)
        return self

    def close(self) -> None:
        self.db.close()

    def next_session_id(self) -> int:
        """The id the next session gets; the shell numbers sessions itself, so events can name them."""
        return int(self.db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM sessions").fetchone()[0])

    def start(self, s: LiveSession) -> None:
        cur = self.db.execute(
            "INSERT INTO sessions (id, connector_id, id_tag, card_name, card_group, auth_source, started_at,"
            " updated_at, meter_start_wh, meter_last_wh) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (s.row_id, s.connector_id, s.id_tag, s.card_name, s.card_group, s.auth_source, s.started_at,
             s.started_at, s.meter_start_wh, s.meter_last_wh))
        s.row_id = cur.lastrowid

    def set_meter(self, row_id: int, meter_start_wh: int, meter_last_wh: int) -> None:
        """A running session's meter values anew (first reading, or a replaced meter)."""
        self.db.execute("UPDATE sessions SET meter_start_wh=?, meter_last_wh=?, energy_wh=MAX(0, ?-?) WHERE id=?",
                        (meter_start_wh, meter_last_wh, meter_last_wh, meter_start_wh, row_id))

    def checkpoint(self, row_id: int, meter_last_wh: int, peak_power_w: float, when: str) -> None:
        self.db.execute(
            "UPDATE sessions SET meter_last_wh=?, energy_wh=MAX(0, ?-meter_start_wh),"
            " peak_power_w=?, updated_at=? WHERE id=? AND stopped_at IS NULL",
            (meter_last_wh, meter_last_wh, peak_power_w, when, row_id))

    def finish(self, s: LiveSession) -> None:
        """A finished session, whole: completes its row, or writes it anew when the start write failed."""
        assert s.stopped is not None
        if self.db.execute("SELECT 1 FROM sessions WHERE id=?", (s.row_id,)).fetchone() is None:
            self.start(s)
        reason, when = s.stopped
        self.stop(s.row_id, s.meter_last_wh, s.peak_power_w, reason, when)

    def stop(self, row_id: int | None, meter_stop_wh: int, peak_power_w: float, reason: str, when: str) -> None:
        self.db.execute(
            "UPDATE sessions SET stopped_at=?, updated_at=?, meter_last_wh=?, meter_stop_wh=?,"
            " energy_wh=MAX(0, ?-meter_start_wh), peak_power_w=?, stop_reason=? WHERE id=?",
            (when, when, meter_stop_wh, meter_stop_wh, meter_stop_wh, peak_power_w, reason, row_id))

    def set_stop_meter(self, row_id: int, meter_stop_wh: int) -> None:
        """A finished session's stop reading completed by the first reading after the open."""
        self.db.execute("UPDATE sessions SET meter_last_wh=?, meter_stop_wh=?, energy_wh=MAX(0, ?-meter_start_wh)"
                        " WHERE id=? AND stopped_at IS NOT NULL", (meter_stop_wh, meter_stop_wh, meter_stop_wh, row_id))

    def recover(self) -> list[int]:
        """Close sessions left open by a crash or power cut; returns their ids."""
        rows = [r[0] for r in self.db.execute("SELECT id FROM sessions WHERE stopped_at IS NULL")]
        self.db.execute(
            "UPDATE sessions SET stopped_at=updated_at, meter_stop_wh=meter_last_wh,"
            " energy_wh=MAX(0, meter_last_wh-meter_start_wh), stop_reason='power_loss'"
            " WHERE stopped_at IS NULL")
        return rows

    def sessions(self, *, since: str | None = None, until: str | None = None,
                 card: str | None = None) -> Iterator[dict]:
        """Sessions oldest first, filtered by start time (ISO, UTC) and card uid or name."""
        where, args = [], []
        if since:
            where.append("started_at >= ?")
            args.append(since)
        if until:
            where.append("started_at < ?")
            args.append(until)
        if card:
            where.append("(id_tag = ? OR card_name = ?)")
            args += [card, card]
        sql = f"SELECT {', '.join(COLUMNS)} FROM sessions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        for row in self.db.execute(sql + " ORDER BY started_at, id", args):
            yield dict(zip(COLUMNS, row))


Op = Callable[["Store"], None]


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
