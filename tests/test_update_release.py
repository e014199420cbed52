"""`evsed update` to a real next release: built from this source tree with a newer version and one
more (additive) migration step, installed into a fresh environment, failing in its probation.

The update migrates the session database forward, the rollback keeps it, and the old release
(the evsed under test) writes it: no session is lost, neither the ones before the update nor
the one the new release stored before it failed.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from evsed import protocol as p
from evsed.control import client as control
from evsed.ops import update
from evsed.store import migrations
from test_update import ROOT, finished_session, signed, site  # noqa: F401 - site is a fixture

NEXT = "0.2.0"
NEW_STEP = "ALTER TABLE sessions ADD COLUMN vehicle_id TEXT NOT NULL DEFAULT '';"  # additive


@pytest.fixture(scope="module")
def next_release(tmp_path_factory) -> Path:
    """The wheel of evsed NEXT: this tree with its version bumped and NEW_STEP appended to the
    migrations (built once for the module: about 3 s)."""
    src = tmp_path_factory.mktemp("next-src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("evsed", "hal", "simulator", "config"):  # evsed/ops/examples links to config
        shutil.copytree(ROOT / name, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    patch(src / "pyproject.toml", 'version = "0.1.0"', f'version = "{NEXT}"')
    patch(src / "evsed/__init__.py", '__version__ = "0.1.0"', f'__version__ = "{NEXT}"')
    patch(src / "evsed/store/migrations.py", "Step(V3, additive=True))",
          f"Step(V3, additive=True), Step({NEW_STEP!r}, additive=True))")
    dist = tmp_path_factory.mktemp("next-dist")
    build = subprocess.run([sys.executable, "-m", "build", "--wheel", "-o", str(dist), str(src)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = dist.glob(f"evsed-{NEXT}-py3-none-any.whl")
    return wheel


def patch(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{path}: {old!r} is not there once: the test must follow the source"
    path.write_text(text.replace(old, new))


def until(predicate: Callable[[], object], what: str, timeout_s: float = 20.0) -> None:
    """Poll a real daemon until predicate() holds; the timeout only guards against a hang."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout_s:g} s")
        time.sleep(0.05)


def stopped(db: Path, session_id: int) -> bool:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = con.execute("SELECT stopped_at FROM sessions WHERE id=?", (session_id,)).fetchone()
    except sqlite3.OperationalError:  # the daemon holds a write lock for a moment
        return False
    finally:
        con.close()
    return row is not None and row[0] is not None


def a_session(cfg, session_id: int) -> None:
    """Plug, tap Alice's card, charge, unplug on the running daemon; wait until the session is stored."""
    ask = lambda req: control.ask(cfg.store.runtime_dir, req)  # noqa: E731
    ask(p.Plug())
    ask(p.Tap(card="04A1B2C3"))
    until(lambda: ask(p.Status()).connectors[0].contactor == "closed", "charging")
    ask(p.Unplug())
    until(lambda: stopped(cfg.store.state_dir / "sessions.db", session_id), f"session {session_id} stored")


def test_an_update_migrates_forward_and_its_rollback_keeps_the_database_the_old_release_writes(
        site, next_release, tmp_path):  # noqa: F811 - the fixture
    updater, key, service, said = site
    cfg, db = updater.cfg, updater.cfg.store.state_dir / "sessions.db"
    finished_session(cfg)  # session 1, stored by the running release

    def in_probation():  # the new release charges a session, then crashes
        if service.started[-1].endswith(NEXT) and service.proc is not None and service.proc.poll() is None:
            a_session(cfg, 2)
            service.proc.kill()
            service.proc.wait(10)
    updater.clock.hooks.append(in_probation)
    wheel = Path(shutil.copy(next_release, tmp_path / next_release.name))
    with pytest.raises(update.UpdateError, match=rf"update to {NEXT} failed: it stopped \d+ s after READY"):
        updater.update(wheel, signed(key, wheel))

    assert service.started == [str(updater.opt / f"releases/{NEXT}"), str(updater.opt / "releases/0.1.0")]
    assert f"the session database stays as {NEXT} migrated it: 0.1.0 writes it (sessions.db.before-{NEXT} is " \
           "the copy from before the update)" in said
    assert not db.with_name(f"sessions.db.from-{NEXT}").exists()  # nothing was put back
    a_session(cfg, 3)  # the old release writes the migrated database
    service.stop()

    con = sqlite3.connect(db)
    assert migrations.version(con) == migrations.VERSION + 1  # NEXT migrated it forward at its start
    assert migrations.min_writer(con) == 1  # V1's floor: every later step, NEXT's too, is additive
    assert con.execute("SELECT id, vehicle_id, stop_reason IS NOT NULL FROM sessions ORDER BY id").fetchall() == [
        (1, "", 1), (2, "", 1), (3, "", 1)]
    con.close()
    before = sqlite3.connect(db.with_name(f"sessions.db.before-{NEXT}"))
    assert migrations.version(before) == migrations.VERSION  # the copy is from before the migration
    before.close()
