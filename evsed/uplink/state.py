"""The uplink's own state file (SQLite): the durable outbound message queue, transaction ids,
configuration keys, local list, authorization cache, charging profiles and the event position."""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS keys (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT, unique_id TEXT NOT NULL, action TEXT NOT NULL,
    payload TEXT NOT NULL, session TEXT, connector INTEGER, tx INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS txmap (session TEXT PRIMARY KEY, transaction_id INTEGER);
CREATE TABLE IF NOT EXISTS sessions (
    connector INTEGER PRIMARY KEY, session TEXT NOT NULL, id_tag TEXT NOT NULL,
    started_at TEXT NOT NULL, meter_start_wh INTEGER NOT NULL, begin TEXT);
CREATE TABLE IF NOT EXISTS status (
    connector INTEGER PRIMARY KEY, status TEXT NOT NULL, error_code TEXT NOT NULL, info TEXT);
CREATE TABLE IF NOT EXISTS local_list (id_tag TEXT PRIMARY KEY, info TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cache (id_tag TEXT PRIMARY KEY, info TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS profiles (id INTEGER PRIMARY KEY, connector INTEGER NOT NULL,
    session TEXT, body TEXT NOT NULL);
"""


class StateBusy(Exception):
    """Another uplink holds the state file."""


@dataclass(frozen=True)
class Queued:
    id: int
    unique_id: str
    action: str
    payload: dict
    session: str | None
    connector: int | None
    tx: bool
    attempts: int
    next_at: float


class State:
    """One connection, used from the event loop only; every write commits (synchronous=FULL)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        # One uplink per state file: a second would send every queued message again.
        self._lock = open(f"{path}.lock", "a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise StateBusy(f"{path} is in use by another OCPP uplink") from None
        self.db = sqlite3.connect(str(path), isolation_level=None)
        os.chmod(path, 0o600)  # holds id tags
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()
        self._lock.close()

    def transaction(self):
        """A context manager: everything inside commits together, or nothing does."""
        return _Tx(self.db)

    # meta
    def meta(self, key: str, default: str = "") -> str:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: object) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, str(value)))

    def bump(self, key: str) -> int:
        value = int(self.meta(key, "0")) + 1
        self.set_meta(key, value)
        return value

    def claim(self, version: str) -> int:
        """Make the file this OCPP version's: a queue another version left (the [ocpp] version
        changed) is dropped, never sent in a protocol it is not; how many messages that was."""
        were = self.meta("version")
        dropped = 0
        if were and were != version:
            with self.transaction():
                dropped = self.count("queue")
                self.db.execute("DELETE FROM queue")
                self.set_meta("version", version)
        elif not were:
            self.set_meta("version", version)
        return dropped

    # configuration keys
    def keys(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT key, value FROM keys"))

    def set_key(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO keys VALUES (?, ?)", (key, value))

    # the outbound queue
    def enqueue(self, action: str, payload: dict, *, session: str | None = None,
                connector: int | None = None, tx: bool = True) -> None:
        self.db.execute(
            "INSERT INTO queue (unique_id, action, payload, session, connector, tx) VALUES (?,?,?,?,?,?)",
            (str(uuid.uuid4()), action, json.dumps(payload), session, connector, int(tx)))

    def head(self) -> Queued | None:
        row = self.db.execute("SELECT * FROM queue ORDER BY id LIMIT 1").fetchone()
        if row is None:
            return None
        return Queued(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5], bool(row[6]),
                      row[7], row[8])

    def queued(self) -> list[Queued]:
        rows = self.db.execute("SELECT * FROM queue ORDER BY id").fetchall()
        return [Queued(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], bool(r[6]), r[7], r[8])
                for r in rows]

    def dequeue(self, id_: int) -> None:
        self.db.execute("DELETE FROM queue WHERE id=?", (id_,))

    def retry_later(self, id_: int, next_at: float) -> None:
        self.db.execute("UPDATE queue SET attempts=attempts+1, next_at=? WHERE id=?", (next_at, id_))

    def collapse_status(self) -> None:
        """Keep only the newest queued StatusNotification of each connector (sent after reconnect)."""
        self.db.execute(
            "DELETE FROM queue WHERE action='StatusNotification' AND id NOT IN "
            "(SELECT MAX(id) FROM queue WHERE action='StatusNotification' GROUP BY connector)")

    # transactions
    def transaction_id(self, session: str) -> int | None:
        row = self.db.execute("SELECT transaction_id FROM txmap WHERE session=?", (session,)).fetchone()
        return row[0] if row else None

    def set_transaction_id(self, session: str, transaction_id: int) -> None:
        self.db.execute("INSERT OR REPLACE INTO txmap VALUES (?, ?)", (session, transaction_id))

    def session_of(self, transaction_id: int) -> str | None:
        row = self.db.execute("SELECT session FROM txmap WHERE transaction_id=? ORDER BY rowid DESC",
                              (transaction_id,)).fetchone()
        return row[0] if row else None

    def forget_transaction(self, session: str) -> None:
        self.db.execute("DELETE FROM txmap WHERE session=?", (session,))

    def open_session(self, connector: int, session: str, id_tag: str, started_at: str,
                     meter_start_wh: int) -> None:
        self.db.execute("INSERT OR REPLACE INTO sessions VALUES (?,?,?,?,?,NULL)",
                        (connector, session, id_tag, started_at, meter_start_wh))

    def close_session(self, connector: int) -> None:
        self.db.execute("DELETE FROM sessions WHERE connector=?", (connector,))

    def sessions(self) -> dict[int, dict]:
        rows = self.db.execute("SELECT connector, session, id_tag, started_at, meter_start_wh FROM sessions")
        return {r[0]: {"session": r[1], "id_tag": r[2], "started_at": r[3], "meter_start_wh": r[4]}
                for r in rows}

    # connector status
    def set_status(self, connector: int, status: str, error_code: str, info: str | None) -> None:
        self.db.execute("INSERT OR REPLACE INTO status VALUES (?,?,?,?)", (connector, status, error_code, info))

    def statuses(self) -> dict[int, tuple[str, str, str | None]]:
        return {r[0]: (r[1], r[2], r[3]) for r in self.db.execute("SELECT * FROM status")}

    # local authorization list and cache: id_tag -> idTagInfo (camelCase, as OCPP sends it)
    def auth_entry(self, table: str, id_tag: str) -> dict | None:
        assert table in ("local_list", "cache")
        row = self.db.execute(f"SELECT info FROM {table} WHERE id_tag=?", (id_tag,)).fetchone()
        return json.loads(row[0]) if row else None

    def put_auth(self, table: str, id_tag: str, info: dict | None) -> None:
        assert table in ("local_list", "cache")
        if info is None:
            self.db.execute(f"DELETE FROM {table} WHERE id_tag=?", (id_tag,))
        else:
            self.db.execute(f"INSERT OR REPLACE INTO {table} VALUES (?, ?)", (id_tag, json.dumps(info)))

    def clear_auth(self, table: str) -> None:
        assert table in ("local_list", "cache")
        self.db.execute(f"DELETE FROM {table}")

    def count(self, table: str) -> int:
        assert table in ("local_list", "cache", "queue", "profiles")
        return self.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]

    # charging profiles (camelCase bodies)
    def profiles(self) -> list[tuple[int, dict, str | None]]:
        rows = self.db.execute("SELECT connector, body, session FROM profiles ORDER BY id")
        return [(r[0], json.loads(r[1]), r[2]) for r in rows]

    def put_profile(self, connector: int, body: dict, session: str | None) -> None:
        self.db.execute("INSERT OR REPLACE INTO profiles VALUES (?,?,?,?)",
                        (body["chargingProfileId"], connector, session, json.dumps(body)))

    def delete_profile(self, profile_id: int) -> None:
        self.db.execute("DELETE FROM profiles WHERE id=?", (profile_id,))


class _Tx:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, kind, value, tb):
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")
        return False
