"""Versioned schema of the session database: PRAGMA user_version, the steps between versions, and
the oldest version whose code may still write a database a newer release migrated.

Version 0 is the schema evsed 0.1.0 wrote (it never set user_version). A new database is
made the same way an old one upgrades: version 0, then every step, so the upgrade path runs
in every test. Each step is one transaction: a power cut leaves the old version or the new.

A step is additive when code that knows only the versions before it still writes the database
right: it adds tables, indexes, or columns that are nullable or have a default, and the newer
code reads rows that leave them so (an older release writes such rows after a rollback). An
additive step keeps schema_compat.min_writer; any other step raises it to its own version. An
evsed opens a database newer than itself when min_writer is at most its VERSION, so a release
rolled back after an additive migration keeps the sessions the newer one stored.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

V0 = """
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

# 1: totals, the tariff used, money, signed meter data, a final stop, and meter samples.
V1 = """
ALTER TABLE sessions ADD COLUMN duration_s INTEGER;            -- stop - start, real seconds
ALTER TABLE sessions ADD COLUMN charging_s INTEGER;            -- time the EV drew energy
ALTER TABLE sessions ADD COLUMN idle_s INTEGER;                -- from the last draw to the stop
ALTER TABLE sessions ADD COLUMN stop_final INTEGER NOT NULL DEFAULT 0;  -- 1: the stop reading is fixed
ALTER TABLE sessions ADD COLUMN tariff TEXT NOT NULL DEFAULT '';        -- Pricing JSON, as at the start
ALTER TABLE sessions ADD COLUMN tariff_name TEXT NOT NULL DEFAULT '';   -- "tariff/driver price", for reports
ALTER TABLE sessions ADD COLUMN currency TEXT NOT NULL DEFAULT '';
ALTER TABLE sessions ADD COLUMN money_decimals INTEGER NOT NULL DEFAULT 2;
ALTER TABLE sessions ADD COLUMN cost_minor INTEGER;            -- host's energy cost, minor units
ALTER TABLE sessions ADD COLUMN revenue_minor INTEGER;         -- driver's price, minor units
ALTER TABLE sessions ADD COLUMN meter_id TEXT NOT NULL DEFAULT '';      -- meter serial, when known
ALTER TABLE sessions ADD COLUMN meter_signed_format TEXT;      -- a meter's own signed data (e.g. OCMF),
ALTER TABLE sessions ADD COLUMN meter_signed_data TEXT;        --   kept exactly as the meter gave it
ALTER TABLE sessions ADD COLUMN ocmf TEXT;                     -- the controller-signed OCMF document
ALTER TABLE sessions ADD COLUMN ocmf_public_key TEXT;          -- hex DER of the key that signed it
UPDATE sessions SET stop_final = 1,
    duration_s = CAST(strftime('%s', stopped_at) AS INTEGER) - CAST(strftime('%s', started_at) AS INTEGER)
    WHERE stopped_at IS NOT NULL;
CREATE INDEX sessions_connector ON sessions(connector_id, id);
CREATE TABLE samples (
    session_id INTEGER NOT NULL,
    t_ms INTEGER NOT NULL,             -- Unix time, ms
    energy_wh INTEGER NOT NULL,        -- import register
    power_w INTEGER,
    l1_a REAL, l2_a REAL, l3_a REAL,   -- per phase, where the meter gives them
    l1_v REAL, l2_v REAL, l3_v REAL,
    PRIMARY KEY (session_id, t_ms)
) WITHOUT ROWID;
"""


# 2: a session whose start reading is a new meter baseline (a reset or replaced meter counted below the
# connector's previous stop, or was found so during the session). Its energy is its own delta all the
# same; the flag tells why the readings do not follow on from the previous session's. And the session's
# energy from solar surplus and from the grid, by the site meter (NULL: no site meter).
V2 = """
ALTER TABLE sessions ADD COLUMN meter_rebaselined INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN solar_wh INTEGER;
ALTER TABLE sessions ADD COLUMN grid_wh INTEGER;
"""

# 3: the meter's vendor and model beside its serial (meter_id), as its backend told them when the
# meter opened (OCMF MV, MM, MS); '' where it could not tell.
V3 = """
ALTER TABLE sessions ADD COLUMN meter_vendor TEXT NOT NULL DEFAULT '';
ALTER TABLE sessions ADD COLUMN meter_model TEXT NOT NULL DEFAULT '';
"""


@dataclass(frozen=True)
class Step:
    sql: str
    additive: bool  # older code may still write the database after it (see the module's docstring)


# V1 is not additive: its code counts on the backfill (stop_final, duration_s) of every stopped row.
# V2 is additive: older code leaves the flag 0, and a 0 only says no new baseline was seen.
# V3 is additive: older code leaves them '', which says only that the meter did not tell.
STEPS = (Step(V1, additive=False), Step(V2, additive=True), Step(V3, additive=True))
VERSION = len(STEPS)

COMPAT = "CREATE TABLE IF NOT EXISTS schema_compat (min_writer INTEGER NOT NULL)"  # one row


class SchemaTooNew(Exception):
    """The database was migrated by a newer evsed in a way this one cannot write; it must not touch it."""


def version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def min_writer(db: sqlite3.Connection) -> int:
    """The oldest schema version whose code may write this database. One that no step of this
    scheme migrated (no schema_compat row) is writable only by code of its own version or newer."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_compat'").fetchone():
        row = db.execute("SELECT MAX(min_writer) FROM schema_compat").fetchone()
        if row[0] is not None:
            return int(row[0])
    return version(db)


def check_writable(db: sqlite3.Connection) -> None:
    """Raise SchemaTooNew unless this evsed may write the database (as it is, or once migrated)."""
    found = version(db)
    if found > VERSION and (needed := min_writer(db)) > VERSION:
        raise SchemaTooNew(f"session database schema version {found} is newer than this evsed's ({VERSION}) "
                           f"and may be written only by schema version {needed} or newer")


def migrate(db: sqlite3.Connection) -> tuple[int, int]:
    """Bring the database to VERSION in place; returns (from, to). A newer database this evsed
    may write stays as it is: (found, found). The connection must be in autocommit mode
    (isolation_level=None)."""
    check_writable(db)
    found = version(db)
    if found >= VERSION:
        return found, found
    if found == 0:
        db.executescript(V0)
    writer = min_writer(db)
    for n in range(found, VERSION):
        if not STEPS[n].additive:
            writer = n + 1
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(STEPS[n].sql):
                db.execute(statement)
            db.execute(COMPAT)
            db.execute("DELETE FROM schema_compat")
            db.execute("INSERT INTO schema_compat (min_writer) VALUES (?)", (writer,))
            db.execute(f"PRAGMA user_version = {n + 1}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return found, VERSION


def _statements(script: str) -> list[str]:
    """A step's statements (sqlite3 runs one per execute; executescript would commit)."""
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    return out
