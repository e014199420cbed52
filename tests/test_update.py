"""`evsed update`: a signed wheel into a fresh release, switched to between sessions, and switched
back when it does not reach READY, with the session database the old release can open.

The service here is the real daemon started the way systemd starts a Type=notify unit: the
release's bin/evsed under NOTIFY_SOCKET, READY=1 awaited on a datagram socket.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.metadata
import json
import os
import socket
import sqlite3
import stat
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

import protocol_records as pr
from evsed import config
from evsed import protocol as p
from evsed.cli import main
from evsed.control import client as control
from evsed.ops import update
from evsed.store import migrations
from evsed.store.sessions import LiveSession, Store

ROOT = Path(__file__).parent.parent


class NotifyService:
    """Starts opt/current/bin/evsed like systemd's Type=notify: READY=1 on NOTIFY_SOCKET or failure."""

    def __init__(self, opt: Path, config_path: Path, tmp: Path):
        self.opt, self.config_path = opt, config_path
        self.address = str(tmp / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.address)
        self.proc: subprocess.Popen | None = None
        self.started: list[str] = []  # the release each start ran

    def start(self, timeout_s: float) -> bool:
        self.started.append(os.readlink(self.opt / "current"))
        self.proc = subprocess.Popen([str(self.opt / "current/bin/evsed"), "run", "-c", str(self.config_path)],
                                     env={**os.environ, "NOTIFY_SOCKET": self.address},
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.sock.settimeout(0.05)
        for _ in range(int(timeout_s / 0.05)):
            try:
                if b"READY=1" in self.sock.recv(4096).split(b"\n"):
                    return True
            except TimeoutError:
                if self.proc.poll() is not None:
                    return False  # exited before READY (systemd: start failed)
        return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def health(self) -> update.Health:
        running = self.proc is not None and self.proc.poll() is None
        return update.Health("active" if running else "failed", self.proc.pid if self.proc else 0, 0)


class FakeClock:
    """The updater's clock and sleep: probation and --wait pass at once; each sleep first runs
    the hooks (a test lets the release under probation do what it does meanwhile)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.hooks: list = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        for hook in self.hooks:
            hook()
        self.now += seconds


def make_wheel(directory: Path, version: str, main: str, metadata: str = "") -> Path:
    """A minimal evsed wheel: its console script `evsed` runs `main` (the body of a function);
    `metadata`: more METADATA lines (Provides-Extra, Requires-Dist)."""
    name = f"evsed-{version}-py3-none-any.whl"
    info = f"evsed-{version}.dist-info"
    module = "def main():\n    import os, sys\n" + "".join(f"    {line}\n" for line in main.splitlines())
    files = {"evsed_release.py": module,
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: evsed\nVersion: {version}\n{metadata}",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
             f"{info}/entry_points.txt": "[console_scripts]\nevsed = evsed_release:main\n"}
    files[f"{info}/RECORD"] = "".join(f"{f},,\n" for f in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(directory / name, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
    return directory / name


# The release that works: the evsed under test, started from the new environment.
GOOD = f"os.execv({sys.executable!r}, [{sys.executable!r}, '-m', 'evsed', *sys.argv[1:]])"
# The release that fails at start after migrating the session database past this evsed's schema,
# in a way older code must not write (not additive), as a release with such a migration and a
# crash right after it would.
BROKEN = f"""if sys.argv[1:2] != ['run']:
    return 0
import sqlite3, tomllib
cfg = tomllib.load(open(sys.argv[-1], 'rb'))
db = sqlite3.connect(cfg['store']['state_dir'] + '/sessions.db')
db.execute('ALTER TABLE sessions ADD COLUMN from_the_future TEXT')
db.execute('UPDATE schema_compat SET min_writer = {migrations.VERSION + 1}')
db.execute('PRAGMA user_version = {migrations.VERSION + 1}')
db.commit()
sys.exit('evsed: ImportError: a module this release forgot')"""
# The release that starts, says READY=1, and dies right after (its probation must catch it).
DIES_AFTER_READY = """if sys.argv[1:2] != ['run']:
    return 0
import socket
socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b'READY=1', os.environ['NOTIFY_SOCKET'])
sys.exit('evsed: a task died after READY')"""


def running_release(old: Path) -> None:
    """An environment in `old` as pip leaves a release: its python sees the evsed under test, and
    its site-packages holds evsed's metadata (the updater reads the running version there)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(old)], check=True, timeout=60)
    purelib = Path(subprocess.run([str(old / "bin/python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    (purelib / "evsed-under-test.pth").write_text(f"import site; site.addsitedir({sysconfig.get_path('purelib')!r})\n")
    version = importlib.metadata.version("evsed")
    (purelib / f"evsed-{version}.dist-info").mkdir()
    (purelib / f"evsed-{version}.dist-info/METADATA").write_text(f"Metadata-Version: 2.1\nName: evsed\nVersion: {version}\n")


@pytest.fixture
def site(tmp_path):
    """A board with release 0.1.0 current (the evsed under test), a signing key and its config."""
    opt = tmp_path / "opt"
    old = opt / "releases/0.1.0"
    running_release(old)
    (old / "bin/evsed").write_text(f"#!/bin/sh\nexec {sys.executable} -m evsed \"$@\"\n")
    (old / "bin/evsed").chmod(0o755)
    (opt / "current").symlink_to(old)
    key = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "release.pub").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    text = (ROOT / "config/simulator.toml").read_text()
    text += (f'\n[store]\nstate_dir = "{tmp_path / "state"}"\nruntime_dir = "{tmp_path / "run"}"\n'
             '\n[update]\npublic_key_file = "release.pub"\nready_timeout_s = 20\n')
    (tmp_path / "evsed.toml").write_text(text)
    cfg = config.load(tmp_path / "evsed.toml")
    service = NotifyService(opt, cfg.path, tmp_path)
    said: list[str] = []
    clock = FakeClock()
    updater = update.Updater(cfg, update.settings(cfg), service, lambda: None, said.append, opt=opt,
                             clock=clock, sleep=clock.sleep)
    yield updater, key, service, said
    service.stop()


def signed(key, wheel: Path) -> Path:
    sig = wheel.with_name(wheel.name + ".sig")
    sig.write_bytes(key.sign(wheel.read_bytes()))
    return sig


def finished_session(cfg) -> None:
    """A session the running release stored: it must survive the update and its rollback."""
    cfg.store.state_dir.mkdir(parents=True)
    store = Store(cfg.store.state_dir / "sessions.db")
    store.db.execute("INSERT INTO sessions (id, connector_id, id_tag, started_at, stopped_at, updated_at, "
                     "meter_start_wh, meter_last_wh, meter_stop_wh, energy_wh, stop_reason) VALUES "
                     "(1, 1, '04A1B2C3', '2025-01-01T10:00:00+00:00', '2025-01-01T11:00:00+00:00', "
                     "'2025-01-01T11:00:00+00:00', 0, 7000, 7000, 7000, 'ev_unplugged')")
    store.close()


def test_a_release_that_fails_at_start_is_rolled_back_and_the_old_one_opens_the_database(site, tmp_path):
    updater, key, service, said = site
    finished_session(updater.cfg)
    wheel = make_wheel(tmp_path, "0.2.0", BROKEN)
    with pytest.raises(update.UpdateError, match="update to 0.2.0 failed: it did not reach READY within 20 s; rolled back to 0.1.0"):
        updater.update(wheel, signed(key, wheel))
    opt = updater.opt
    assert service.started == [str(opt / "releases/0.2.0"), str(opt / "releases/0.1.0")]
    assert (opt / "current").resolve() == opt / "releases/0.1.0"
    assert not (opt / "releases/0.2.0").exists()
    # the old release is READY on the database it knows, with the session stored before the update
    assert service.proc is not None and service.proc.poll() is None
    reply = control.ask(updater.cfg.store.runtime_dir, p.Status())
    assert reply.connectors[0].contactor == "open"
    service.stop()
    store = Store.open_readonly(updater.cfg.store.state_dir / "sessions.db")
    assert [r["energy_wh"] for r in store.sessions()] == [7000]
    assert migrations.version(store.db) == migrations.VERSION
    store.close()
    assert (updater.cfg.store.state_dir / "sessions.db.from-0.2.0").exists()  # kept for a look
    assert said[-1] == "rolled back to 0.1.0; it is ready"
    assert (f"0.1.0 cannot write the session database 0.2.0 migrated (session database schema version "
            f"{migrations.VERSION + 1} is newer than this evsed's ({migrations.VERSION}) and may be written only by "
            f"schema version {migrations.VERSION + 1} or newer): it is back as it was before the update; the "
            "migrated one, with any session 0.2.0 stored, is sessions.db.from-0.2.0") in said


def test_the_copies_of_the_database_taken_before_updates_are_pruned_to_the_last_two(site, tmp_path):
    updater, key, service, said = site
    finished_session(updater.cfg)
    state = updater.cfg.store.state_dir
    for n, version in enumerate(("0.1.5", "0.1.6", "0.1.7"), 1):  # from earlier updates, oldest first
        (state / f"sessions.db.before-{version}").write_bytes(b"")
        os.utime(state / f"sessions.db.before-{version}", (n * 100, n * 100))
    wheel = make_wheel(tmp_path, "0.2.0", GOOD)
    assert updater.update(wheel, signed(key, wheel)) == "0.2.0"
    assert sorted(f.name for f in state.glob("sessions.db.before-*")) == [
        "sessions.db.before-0.1.7", "sessions.db.before-0.2.0"]
    assert [r["energy_wh"] for r in Store.open_readonly(state / "sessions.db.before-0.2.0").sessions()] == [7000]
    assert ("removed sessions.db.before-0.1.5: the last 2 copies from before an update are kept" in said
            and "removed sessions.db.before-0.1.6: the last 2 copies from before an update are kept" in said)


def test_a_good_release_is_switched_to_and_the_old_one_kept(site, tmp_path):
    updater, key, service, said = site
    wheel = make_wheel(tmp_path, "0.3.0", GOOD)
    umask = os.umask(0o077)  # a root shell's: the release must still be the evsed user's to run
    try:
        assert updater.update(wheel, signed(key, wheel)) == "0.3.0"
    finally:
        os.umask(umask)
    assert (updater.opt / "current").resolve() == updater.opt / "releases/0.3.0"
    assert stat.S_IMODE((updater.opt / "releases/0.3.0").stat().st_mode) == 0o755
    assert stat.S_IMODE((updater.opt / "releases/0.3.0/bin/evsed").stat().st_mode) & 0o005 == 0o005
    assert (updater.opt / "releases/0.1.0/bin/evsed").exists()
    assert service.started == [str(updater.opt / "releases/0.3.0")]
    assert control.ask(updater.cfg.store.runtime_dir, p.Status()).connectors[0].id == 1
    assert updater.clock() >= 120 and "evsed 0.3.0 ran 120 s without failing: it stays" in said


def test_a_release_that_dies_in_its_probation_is_rolled_back(site, tmp_path):
    updater, key, service, said = site
    updater.clock.hooks.append(lambda: service.proc.wait(10) if service.proc else None)  # it dies meanwhile
    wheel = make_wheel(tmp_path, "0.2.0", DIES_AFTER_READY)
    with pytest.raises(update.UpdateError, match=r"update to 0.2.0 failed: it stopped \d+ s after READY "
                       r"\(it is failed\); rolled back to 0.1.0"):
        updater.update(wheel, signed(key, wheel))
    assert service.started == [str(updater.opt / "releases/0.2.0"), str(updater.opt / "releases/0.1.0")]
    assert (updater.opt / "current").resolve() == updater.opt / "releases/0.1.0"
    assert service.proc is not None and service.proc.poll() is None  # the old one runs
    assert "evsed 0.2.0 is ready; watching it for 120 s" in said


def test_a_release_restarted_in_its_probation_is_rolled_back_though_it_runs_again(site, tmp_path):
    updater, key, service, said = site

    def health():  # systemd's Restart=on-failure 30 s after READY: active again, another pid, one restart
        restarted = updater.clock() >= 30
        return update.Health("active", 4343 if restarted else 4242, 1 if restarted else 0)
    service.health = health
    wheel = make_wheel(tmp_path, "0.3.0", GOOD)
    with pytest.raises(update.UpdateError, match="it restarted 30 s after READY; rolled back to 0.1.0"):
        updater.update(wheel, signed(key, wheel))
    assert (updater.opt / "current").resolve() == updater.opt / "releases/0.1.0"


def test_systemd_health_is_read_from_systemctl_show(tmp_path, monkeypatch):
    (tmp_path / "systemctl").write_text("#!/bin/sh\n[ \"$*\" = 'show -p ActiveState,MainPID,NRestarts "
                                        "evsed.service' ] || exit 1\nprintf 'NRestarts=2\\nActiveState=active"
                                        "\\nMainPID=812\\n'\n")
    (tmp_path / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert update.SystemdService(print).health() == update.Health("active", 812, 2)


def test_a_wheel_with_a_bad_signature_changes_nothing(site, tmp_path):
    updater, key, service, said = site
    wheel = make_wheel(tmp_path, "0.3.0", GOOD)
    sig = signed(ed25519.Ed25519PrivateKey.generate(), wheel)  # someone else's key
    with pytest.raises(update.UpdateError, match="is not a valid signature of evsed-0.3.0"):
        updater.update(wheel, sig)
    assert not (updater.opt / "releases/0.3.0").exists() and service.started == []


def test_no_switch_while_a_session_runs(site, tmp_path):
    updater, key, service, said = site
    updater.status = lambda: pr.status(pr.connector(id=2, session=pr.session()))
    wheel = make_wheel(tmp_path, "0.3.0", GOOD)
    with pytest.raises(update.UpdateError, match="a session runs on connector 2"):
        updater.update(wheel, signed(key, wheel))
    assert service.started == [] and (updater.opt / "current").resolve().name == "0.1.0"


def test_the_charger_is_made_unavailable_before_the_stop_and_a_session_begun_meanwhile_is_waited_for(tmp_path):
    # The last look at the sessions and the stop are apart: a driver may tap in between. Across the
    # real socket, the daemon answers the hold `Scheduled` then, and the updater must read it so.
    from test_daemon import running, write_config
    cfg = config.load(write_config(tmp_path))
    runtime = cfg.store.runtime_dir
    clock, looks, holds = FakeClock(), [], []

    def until_session(running: bool) -> None:
        for _ in range(2000):  # bounded: the daemon's loop does it within a few of its turns
            if (control.ask(runtime, p.Status()).connectors[0].session is not None) == running:
                return
        raise AssertionError(f"session running never {running}")

    def status() -> p.StatusReply:
        reply = control.ask(runtime, p.Status())
        looks.append(reply.connectors[0].session is not None)
        if len(looks) == 1:  # a driver plugs in and taps right after the updater's first look
            control.ask(runtime, p.Plug())
            control.ask(runtime, p.Tap(card="04A1B2C3"))
            until_session(True)
        return reply

    def hold(inoperative: bool) -> p.AvailabilityReply | p.Failure:
        holds.append((inoperative, control.request(runtime, p.Availability(connector=0, operative=not inoperative, hold=True))))
        return holds[-1][1]

    def unplug() -> None:  # while the updater waits, the session ends
        if control.ask(runtime, p.Status()).connectors[0].session is not None:
            control.ask(runtime, p.Unplug())
            until_session(False)
    clock.hooks.append(unplug)

    async def scenario():
        async with running(cfg) as daemon:
            updater = update.Updater(cfg, update.settings(cfg), None, status, [].append, clock=clock,
                                     sleep=clock.sleep, hold=hold)
            await asyncio.to_thread(updater._wait_between_sessions, 3600)
            return daemon.connectors[1].state.status.value

    final = asyncio.run(scenario())
    assert looks == [False, True, False]
    assert [(inoperative, reply.result) for inoperative, reply in holds] == [
        (True, "Scheduled"), (False, "Accepted"), (True, "Accepted")]  # held last: nothing runs at the stop
    assert final == "Unavailable"


def test_an_ecdsa_signature_in_base64_is_accepted(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    pub = tmp_path / "k.pub"
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    wheel = make_wheel(tmp_path, "1.0", GOOD)
    sig = tmp_path / "sig"
    sig.write_bytes(base64.b64encode(key.sign(wheel.read_bytes(), ec.ECDSA(hashes.SHA256()))))
    update.verify(wheel, sig, pub)
    wheel.write_bytes(wheel.read_bytes() + b"\0")
    with pytest.raises(update.UpdateError):
        update.verify(wheel, sig, pub)


def migrated_by_a_newer_release(path: Path, monkeypatch, additive: bool) -> None:
    """The database as a release with one more migration step leaves it."""
    step = migrations.Step("ALTER TABLE sessions ADD COLUMN from_the_future TEXT NOT NULL DEFAULT 'unset';", additive)
    with monkeypatch.context() as newer:
        newer.setattr(migrations, "STEPS", (*migrations.STEPS, step))
        newer.setattr(migrations, "VERSION", migrations.VERSION + 1)
        Store(path).close()


def test_older_code_writes_a_database_a_newer_release_migrated_additively(tmp_path, monkeypatch):
    """What a rollback after an additive migration counts on: the old store opens it as it is."""
    path = tmp_path / "sessions.db"
    migrated_by_a_newer_release(path, monkeypatch, additive=True)
    store = Store(path)
    store.start(s := LiveSession(1, "04A1B2C3", "Alice", "", "local", "2026-01-05T09:00:00+00:00", 1000, 1000))
    store.stop(s.row_id, 2100, 7400.0, "ev_unplugged", "2026-01-05T10:00:00+00:00")
    assert migrations.version(store.db) == migrations.VERSION + 1  # not touched
    assert migrations.min_writer(store.db) == 1  # V1's floor: V2 and the newer step are additive
    assert store.db.execute("SELECT energy_wh, from_the_future FROM sessions").fetchall() == [(1100, "unset")]
    store.close()


def test_older_code_refuses_a_database_a_newer_release_migrated_otherwise(tmp_path, monkeypatch):
    path = tmp_path / "sessions.db"
    migrated_by_a_newer_release(path, monkeypatch, additive=False)
    with pytest.raises(migrations.SchemaTooNew, match=f"may be written only by schema version {migrations.VERSION + 1}"):
        Store(path)
    store = Store.open_readonly(path)  # readers (reports, export) still read it
    assert list(store.sessions()) == [] and migrations.version(store.db) == migrations.VERSION + 1
    store.close()


def test_a_release_older_than_the_running_one_is_refused_unless_a_downgrade_is_asked_for(site, tmp_path):
    # well signed, but older: it may have the hole the running release closed
    updater, key, service, said = site
    running = importlib.metadata.version("evsed")  # what opt/current runs: the evsed under test
    wheel = make_wheel(tmp_path, "0.0.9", GOOD)
    with pytest.raises(update.UpdateError, match=f"release 0.0.9 is older than the running {running}: refused; "
                       "run `evsed update --allow-downgrade`"):
        updater.update(wheel, signed(key, wheel))
    spool = tmp_path / "state/update"
    spooled(spool, key, "0.0.9")  # what a CSMS may ask: never a downgrade
    result = updater.run_spool(spool)
    assert result is not None and result.result == "InstallationFailed" and "older than the running" in result.reason
    assert service.started == [] and not (updater.opt / "releases/0.0.9").exists()
    updater.allow_downgrade = True  # `evsed update --allow-downgrade`, by hand
    assert updater.update(wheel, signed(key, wheel)) == "0.0.9"
    assert (updater.opt / "current").resolve() == updater.opt / "releases/0.0.9"


def test_the_updater_imports_nothing_from_the_folder_it_is_run_from(site, tmp_path, monkeypatch):
    # root runs it by hand from anywhere: a sysconfig.py or an evsed/ there must not stand in
    updater, key, service, said = site
    (tmp_path / "cwd" / "evsed").mkdir(parents=True)
    (tmp_path / "cwd" / "evsed" / "__init__.py").write_text("raise SystemExit('the folder\\'s evsed')\n")
    (tmp_path / "cwd" / "sysconfig.py").write_text("raise SystemExit('the folder\\'s sysconfig')\n")
    monkeypatch.chdir(tmp_path / "cwd")
    wheel = make_wheel(tmp_path, "0.0.9", GOOD)
    with pytest.raises(update.UpdateError, match="release 0.0.9 is older than the running"):  # it read the version
        updater.update(wheel, signed(key, wheel))


def test_release_versions_are_ordered_as_pep_440_orders_them():
    update.check_not_older("0.10.0", "0.9.0", allow_downgrade=False)  # not as strings
    update.check_not_older("1.0", "1.0rc2", allow_downgrade=False)
    update.check_not_older("1.0.post1", "1.0", allow_downgrade=False)
    for older, running in (("1.0rc2", "1.0"), ("1.0", "1.0.post1"), ("0.9.0", "0.10.0")):
        with pytest.raises(update.UpdateError, match="older than the running"):
            update.check_not_older(older, running, allow_downgrade=False)
    with pytest.raises(update.UpdateError, match="cannot tell which evsed version runs"):
        update.check_not_older("2.0", None, allow_downgrade=False)


def test_update_needs_a_public_key_in_the_config(site, tmp_path):
    updater, key, service, said = site
    updater.settings = update.UpdateSettings()
    wheel = make_wheel(tmp_path, "0.3.0", GOOD)
    with pytest.raises(update.UpdateError, match=r"\[update\] public_key_file is not set"):
        updater.update(wheel, signed(key, wheel))


# --- a release the OCPP uplink spooled (`evsed update --spool`) --------------------------------------

def spooled(spool: Path, key, version: str = "0.3.0", main: str = GOOD, request_id: str = "r1") -> Path:
    """What the uplink leaves: the wheel, its signature by `key`, then request.json."""
    spool.mkdir(parents=True, exist_ok=True)
    wheel = make_wheel(spool, version, main)
    signed(key, wheel)
    (spool / "request.json").write_text(json.dumps({"id": request_id, "wheel": wheel.name,
                                                    "location": "http://csms.example/" + wheel.name}))
    return wheel


def outcome(spool: Path) -> dict:
    return json.loads((spool / "status.json").read_text())


def test_a_spooled_release_is_installed_and_its_outcome_left_for_the_uplink(site, tmp_path):
    updater, key, service, said = site
    spool = tmp_path / "state/update"
    spooled(spool, key)
    result = updater.run_spool(spool)
    assert result is not None and result.result == "Installed"
    assert (updater.opt / "current").resolve() == updater.opt / "releases/0.3.0"
    assert service.started == [str(updater.opt / "releases/0.3.0")]
    assert {k: v for k, v in outcome(spool).items() if k != "at"} == {
        "id": "r1", "version": "0.3.0", "result": "Installed", "reason": ""}
    assert sorted(p.name for p in spool.iterdir()) == ["status.json"]  # the request and its files are gone
    assert stat.S_IMODE((spool / "status.json").stat().st_mode) == 0o644  # the uplink's user reads it


def test_a_spooled_release_with_a_bad_signature_is_not_installed(site, tmp_path):
    updater, key, service, said = site
    spool = tmp_path / "state/update"
    spooled(spool, ed25519.Ed25519PrivateKey.generate())  # signed, but not by the release key
    result = updater.run_spool(spool)
    assert result is not None and result.result == "InstallationFailed"
    assert outcome(spool)["result"] == "InstallationFailed"
    assert "evsed-0.3.0-py3-none-any.whl.sig is not a valid signature" in outcome(spool)["reason"]
    assert not (updater.opt / "releases/0.3.0").exists() and service.started == []
    assert (updater.opt / "current").resolve().name == "0.1.0"
    assert not (spool / "request.json").exists()  # handled: the path unit does not start it again


def test_the_updater_follows_no_link_the_uplink_could_plant_in_the_spool(site, tmp_path):
    """The spool belongs to the unprivileged uplink: root reads no file and writes no status
    through a link there."""
    updater, key, service, said = site
    spool = tmp_path / "state/update"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    wheel = spooled(elsewhere, key)  # a good, signed release, but only linked into the spool
    spool.mkdir(parents=True)
    (spool / wheel.name).symlink_to(wheel)
    (spool / (wheel.name + ".sig")).symlink_to(elsewhere / (wheel.name + ".sig"))
    (spool / "request.json").write_text((elsewhere / "request.json").read_text())
    precious = tmp_path / "precious"
    precious.write_text("root's file\n")
    (spool / "status.json").symlink_to(precious)
    result = updater.run_spool(spool)
    assert result is not None and result.result == "InstallationFailed" and "link is not followed" in result.reason
    assert precious.read_text() == "root's file\n"
    assert not (spool / "status.json").is_symlink() and outcome(spool)["result"] == "InstallationFailed"
    assert service.started == []


def test_a_spool_that_is_a_link_is_refused(site, tmp_path):
    updater, key, service, said = site
    spooled(tmp_path / "real", key)
    (tmp_path / "state").mkdir()
    (tmp_path / "state/update").symlink_to(tmp_path / "real")
    with pytest.raises(update.UpdateError, match="not a link"):
        updater.run_spool(tmp_path / "state/update")
    assert not (tmp_path / "real/status.json").exists()


@pytest.mark.parametrize("squat", ["owned by another service's user", "group-writable"])
def test_a_spool_another_service_could_write_is_refused(site, tmp_path, squat):
    # services/ is every service's to write: the web page's user makes update/ first and leaves a
    # request for a release signed long ago, with a hole the CSMS's newer one closed
    updater, key, service, said = site
    spool = tmp_path / "state/update"
    spooled(spool, key)
    if squat == "group-writable":
        spool.chmod(0o770)
    elif os.geteuid() == 0:
        os.chown(spool, 65534, 65534)
    else:
        pytest.skip("only root can give a directory to another user")
    with pytest.raises(update.UpdateError, match="owned by uid 65534, not by the OCPP uplink|writable by others "
                       "than its owner .mode 0770"):
        updater.run_spool(spool)
    assert service.started == [] and not (updater.opt / "releases/0.3.0").exists()
    assert not (spool / "status.json").exists() and (spool / "request.json").exists()  # nothing written there


def test_a_request_the_uplink_leaves_during_an_update_stays_for_the_next_run(site, tmp_path):
    updater, key, service, said = site
    spool = tmp_path / "state/update"
    spooled(spool, key)

    def status():  # while the updater checks for sessions, the CSMS sends another UpdateFirmware
        if not (spool / "evsed-0.4.0-py3-none-any.whl").exists():
            spooled(spool, key, "0.4.0", request_id="r2")
        return None
    updater.status = status
    assert updater.run_spool(spool).result == "Installed"
    assert outcome(spool)["id"] == "r1"
    assert json.loads((spool / "request.json").read_text())["id"] == "r2"
    assert sorted(p.name for p in spool.iterdir()) == [
        "evsed-0.4.0-py3-none-any.whl", "evsed-0.4.0-py3-none-any.whl.sig", "request.json", "status.json"]


def test_a_malformed_request_is_answered_and_removed(site, tmp_path):
    updater, key, service, said = site
    spool = tmp_path / "state/update"
    spool.mkdir(parents=True)
    (spool / "request.json").write_text(json.dumps({"id": "r9", "wheel": "../../etc/evsed.whl"}))
    result = updater.run_spool(spool)
    assert result is not None and result.result == "InstallationFailed" and "wheel: expected" in result.reason
    assert not (spool / "request.json").exists() and service.started == []


def test_update_spool_without_a_request_does_nothing(site, tmp_path, capsys):
    updater, key, service, said = site
    spool = tmp_path / "state/update"
    spool.mkdir(parents=True)
    assert main(["update", "--spool", str(spool), "-c", str(updater.cfg.path)]) == 0
    assert f"no request in {spool}" in capsys.readouterr().out
    assert main(["update", "-c", str(updater.cfg.path)]) == 2  # neither a wheel nor --spool


def test_probation_is_read_from_the_config_within_its_bounds(tmp_path):
    text = (ROOT / "config/simulator.toml").read_text()
    (tmp_path / "evsed.toml").write_text(text + "\n[update]\nprobation_s = 300\n")
    assert update.settings(config.load(tmp_path / "evsed.toml")).probation_s == 300
    assert update.UpdateSettings().probation_s == 120
    (tmp_path / "evsed.toml").write_text(text + "\n[update]\nprobation_s = 7200\n")
    with pytest.raises(config.ConfigError, match="probation_s"):
        update.settings(config.load(tmp_path / "evsed.toml"))
