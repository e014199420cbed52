"""The event outbox: every durable charger event, sequence-numbered, kept until each service
that subscribed has acknowledged it (or it is older than the retention).

A service resumes from the last sequence it acknowledged, so nothing is lost or repeated
when either side is killed. The sequence is SQLite's rowid: contiguous and never reused.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Iterator

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,                  -- ISO 8601 UTC, milliseconds
    type TEXT NOT NULL,
    connector INTEGER NOT NULL,
    data TEXT NOT NULL                 -- JSON object
);
CREATE TABLE IF NOT EXISTS service_acks (
    service TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    at TEXT NOT NULL
);
"""

KEEP_UNACKED = 100_000  # at most this many events wait for a service that never comes back


def create(db: sqlite3.Connection) -> None:
    db.executescript(SCHEMA)


def append(db: sqlite3.Connection, at: str, type_: str, connector: int, data: dict[str, Any]) -> int:
    """Store one event; returns its sequence number."""
    cur = db.execute("INSERT INTO events (at, type, connector, data) VALUES (?,?,?,?)",
                     (at, type_, connector, json.dumps(data, separators=(",", ":"))))
    assert cur.lastrowid is not None
    return cur.lastrowid


def since(db: sqlite3.Connection, after: int, limit: int = 1000) -> Iterator[dict[str, Any]]:
    """Events with seq > after, oldest first, as the control socket sends them."""
    rows = db.execute("SELECT seq, at, type, connector, data FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                      (after, limit))
    for seq, at, type_, connector, data in rows:
        yield {"seq": seq, "at": at, "type": type_, "connector": connector, **json.loads(data)}


def last_seq(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])


def ack(db: sqlite3.Connection, service: str, seq: int, at: str) -> None:
    """The service has what it needs of every event up to seq; acks never move backwards."""
    db.execute("INSERT INTO service_acks (service, seq, at) VALUES (?,?,?) ON CONFLICT(service) DO UPDATE"
               " SET seq=MAX(seq, excluded.seq), at=excluded.at", (service, seq, at))


def acked(db: sqlite3.Connection, service: str) -> int:
    row = db.execute("SELECT seq FROM service_acks WHERE service=?", (service,)).fetchone()
    return int(row[0]) if row else 0


def prune(db: sqlite3.Connection, older_than: str) -> int:
    """Drop events every known service acknowledged, and any older than `older_than` (ISO UTC,
    the retention: a service away longer misses them); at most KEEP_UNACKED stay. Returns how many went."""
    floor = db.execute("SELECT MIN(seq) FROM service_acks").fetchone()[0] or 0
    newest = last_seq(db)
    cur = db.execute("DELETE FROM events WHERE seq <= ? OR at < ? OR seq <= ?",
                     (floor, older_than, newest - KEEP_UNACKED))
    return cur.rowcount
