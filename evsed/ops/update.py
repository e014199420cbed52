"""`evsed update WHEEL --signature SIG`: a signed release into a fresh virtual environment beside
the running one, switched to between sessions, and switched back when it does not reach READY or
fails (stops, restarts) within its probation after READY.

Releases live in /opt/evsed/releases/VERSION; /opt/evsed/current links the one in use (the
units run /opt/evsed/current/bin/evsed). The old release is kept. After READY the
new release is on probation for [update] probation_s: a stop or a restart (systemd's
Restart=on-failure) within it rolls back too. The session database migrates forward when the
new release opens it. After a rollback the old release keeps writing it when every step it
missed was additive (evsed.store.migrations), so sessions the new release stored in its
probation stay; otherwise the copy taken just before the switch comes back and the migrated
database is kept beside it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

from evsed import protocol as p
from evsed.config import Config
from evsed.ops import spool as spoolmod
# callers (the uplink, tests) name these update.verify, update.UpdateError: they stay here too
from evsed.ops.release import (UpdateError, carried_extras, check_not_older, running_release,  # noqa: F401
                               verify, wheel_version)

OPT = Path("/opt/evsed")
SPOOL_WAIT_S = 7 * 86400.0  # a spooled request waits this long for a session to end
BACKUPS_KEPT = 2  # sessions.db.before-VERSION copies kept: the last two updates'


@dataclass(frozen=True)
class UpdateSettings:
    """[update]: the key releases are signed with, how long a new release has to start, and how
    long it must then run without failing before it is kept."""

    public_key_file: Path | None = None
    ready_timeout_s: float = 60.0  # from the service's start to READY=1
    probation_s: float = 120.0  # from READY=1: a stop or restart within it rolls back
    keep_releases: int = 2  # releases kept in /opt/evsed/releases besides the one in use


def settings(cfg: Config) -> UpdateSettings:
    section = cfg.sections.get("update")
    if section is None:
        return UpdateSettings()
    t = section.table()
    d = UpdateSettings()
    key = t.get("public_key_file", str, "")
    out = UpdateSettings(
        public_key_file=(cfg.path.parent / key).resolve() if key else None,
        ready_timeout_s=t.get("ready_timeout_s", float, d.ready_timeout_s, min=5, max=600),
        probation_s=t.get("probation_s", float, d.probation_s, min=0, max=3600),
        keep_releases=t.get("keep_releases", int, d.keep_releases, min=1, max=10))
    t.done()
    return out


# --- the service ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Health:
    """The service as the probation watches it: another main process or another restart since
    READY means the release failed, even when it runs again."""

    state: str  # systemd's ActiveState: active, activating, deactivating, failed, inactive
    main_pid: int
    restarts: int

    @property
    def active(self) -> bool:
        return self.state == "active"


class Service(Protocol):
    def stop(self) -> None: ...

    def start(self, timeout_s: float) -> bool:
        """Start the daemon; True once it reported READY within timeout_s."""

    def health(self) -> Health: ...


class SystemdService:
    """evsed.service: `systemctl start` of a Type=notify unit returns once READY=1 came, or fails."""

    def __init__(self, say: Callable[[str], None]):
        self.say = say

    def stop(self) -> None:
        subprocess.run(["systemctl", "stop", "evsed.service"], capture_output=True, timeout=60)

    def start(self, timeout_s: float) -> bool:
        try:
            proc = subprocess.run(["systemctl", "start", "evsed.service"], capture_output=True, text=True,
                                  timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.say(f"evsed.service did not report READY within {timeout_s:g} s")
            return False
        if proc.returncode != 0:
            self.say(f"evsed.service failed to start: {proc.stderr.strip()}")
            return False
        active = subprocess.run(["systemctl", "is-active", "evsed.service"], capture_output=True, text=True)
        return active.stdout.strip() == "active"

    def health(self) -> Health:
        proc = subprocess.run(["systemctl", "show", "-p", "ActiveState,MainPID,NRestarts", "evsed.service"],
                              capture_output=True, text=True, timeout=30)
        values = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
        if proc.returncode != 0:
            self.say(f"systemctl show evsed.service: exit {proc.returncode}: {proc.stderr.strip()}")
        return Health(values.get("ActiveState") or "unknown", _int(values.get("MainPID")),
                      _int(values.get("NRestarts")))


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return -1  # unreadable: unlike any value seen before, so the probation fails safe


# --- the update -----------------------------------------------------------------------------

@dataclass
class Updater:
    cfg: Config
    settings: UpdateSettings
    service: Service
    status: Callable[[], p.StatusReply | None]  # the daemon's status, None when it does not run
    say: Callable[[str], None] = print
    opt: Path = OPT
    python: str = sys.executable
    poll_s: float = 5.0  # between looks at the daemon's sessions and, in probation, at the service
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    allow_downgrade: bool = False  # install a release older than the running one (by hand only)
    # One request to the daemon, its reply (None when it does not run): the charger is made
    # unavailable between the last look at its sessions and the stop, so none starts meanwhile.
    hold: Callable[[bool], p.AvailabilityReply | p.Failure | None] | None = None  # inoperative (True) or not

    @property
    def current(self) -> Path:
        return self.opt / "current"

    @property
    def releases(self) -> Path:
        return self.opt / "releases"

    @property
    def db(self) -> Path:
        return self.cfg.store.state_dir / "sessions.db"

    def update(self, wheel: Path, signature: Path, wait_s: float = 0.0) -> str:
        """Install, switch, and switch back on failure; returns the version running after it.

        The wheel and its signature are first copied into a directory only this process may
        write: the bytes whose signature is checked are the bytes pip installs."""
        wheel_version(wheel)
        with self._locked(block=False), tempfile.TemporaryDirectory(prefix="evsed-update-") as private:
            try:
                with spoolmod.Spool(wheel.parent.resolve()) as folder:
                    copy = folder.copy_out(wheel.name, Path(private) / wheel.name, spoolmod.MAX_WHEEL_BYTES)
                with spoolmod.Spool(signature.parent.resolve()) as folder:
                    sig = folder.copy_out(signature.name, Path(private) / "signature", spoolmod.MAX_SIGNATURE_BYTES)
            except spoolmod.SpoolError as exc:
                raise UpdateError(str(exc)) from None
            return self._update(copy, sig, wait_s, shown=str(signature))

    def run_spool(self, path: Path, wait_s: float = SPOOL_WAIT_S) -> spoolmod.Outcome | None:
        """The release the OCPP uplink spooled in `path`, as update() installs one; its outcome
        goes to status.json, then the request and its files are removed. None: no request."""
        try:
            folder = spoolmod.Spool(path, owners=spoolmod.updater_owners())
        except spoolmod.SpoolError as exc:
            raise UpdateError(str(exc)) from None
        with folder, self._locked(block=True):  # a hand-run update finishes first
            if not folder.exists(spoolmod.REQUEST):
                self.say(f"no request in {path}")
                return None
            request: spoolmod.Request | None = None
            try:
                raw = folder.read(spoolmod.REQUEST)
                request = spoolmod.parse_request(raw)
                self.say(f"request {request.id}: {request.wheel} from {request.location or 'the uplink'}")
                with tempfile.TemporaryDirectory(prefix="evsed-update-") as private:
                    copy = folder.copy_out(request.wheel, Path(private) / request.wheel, spoolmod.MAX_WHEEL_BYTES)
                    sig = folder.copy_out(request.signature, Path(private) / "signature",
                                          spoolmod.MAX_SIGNATURE_BYTES)
                    version = self._update(copy, sig, wait_s, shown=request.signature)
                outcome = spoolmod.Outcome(request.id, version, "Installed", "", _now())
            except (UpdateError, spoolmod.SpoolError) as exc:
                outcome = self._failed(request, str(exc))
            except Exception as exc:  # noqa: BLE001 - whatever went wrong, the CSMS hears of it
                outcome = self._failed(request, f"{type(exc).__name__}: {exc}")
            folder.write(spoolmod.STATUS, spoolmod.encode(outcome), 0o644)
            self._clear(folder, request)
            self.say(f"request {outcome.id}: {outcome.result}" + (f": {outcome.reason}" if outcome.reason else ""))
            return outcome

    def _failed(self, request: spoolmod.Request | None, reason: str) -> spoolmod.Outcome:
        return spoolmod.Outcome(request.id if request else "unknown", request.version if request else "",
                                "InstallationFailed", reason[-500:], _now())

    def _clear(self, folder: spoolmod.Spool, done: spoolmod.Request | None) -> None:
        """Remove the request that was handled and its files; a newer request the uplink left
        meanwhile stays (the path unit starts this again for it)."""
        try:
            now = spoolmod.parse_request(folder.read(spoolmod.REQUEST))
        except spoolmod.SpoolError:
            now = None
        if done is None or now is None or now.id == done.id:
            folder.remove(spoolmod.REQUEST)
        if done is not None and (now is None or now.id == done.id or now.wheel != done.wheel):
            folder.remove(done.wheel)
            folder.remove(done.signature)

    @contextlib.contextmanager
    def _locked(self, block: bool) -> Iterator[None]:
        """One update at a time: the path unit's and one run by hand."""
        self.opt.mkdir(parents=True, exist_ok=True)
        with open(self.opt / ".update.lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
            except BlockingIOError:
                raise UpdateError("another update is running") from None
            yield

    def _update(self, wheel: Path, signature: Path, wait_s: float, shown: str) -> str:
        if self.settings.public_key_file is None:
            raise UpdateError(f"{self.cfg.path}: [update] public_key_file is not set: releases cannot be checked")
        verify(wheel, signature, self.settings.public_key_file, shown)
        version = wheel_version(wheel)
        self.say(f"signature of {wheel.name} checked against {self.settings.public_key_file}")
        old = self.current.resolve()
        release = self.releases / version
        if release.resolve() == old:
            raise UpdateError(f"release {version} is the one running")
        running, extras = running_release(old)  # the new one gets the same extras
        check_not_older(version, running, self.allow_downgrade)
        self._install(wheel, release, extras)
        self._wait_between_sessions(wait_s)
        self.service.stop()
        backup = self._backup(version)
        self._switch(release)
        self.say(f"switched {self.current} -> {release}; starting it")
        why: str | None = f"did not reach READY within {self.settings.ready_timeout_s:g} s"
        if self.service.start(self.settings.ready_timeout_s):
            why = self._probation(version)
            if why is None:
                self._prune(keep={release, old})
                return version
        self.say(f"evsed {version} {why}: rolling back")
        self.service.stop()
        self._switch(old)
        self._restore_if_needed(old, backup, version)
        shutil.rmtree(release, ignore_errors=True)
        if not self.service.start(self.settings.ready_timeout_s):
            raise UpdateError(f"rolled back to {old}, but it did not reach READY either: see journalctl -u evsed")
        self.say(f"rolled back to {old.name}; it is ready")
        raise UpdateError(f"update to {version} failed: it {why}; rolled back to {old.name}")

    def _probation(self, version: str) -> str | None:
        """Watch the release that reached READY for probation_s; why it failed, or None."""
        probation_s = self.settings.probation_s
        if probation_s <= 0:
            self.say(f"evsed {version} is ready")
            return None
        first = self.service.health()
        self.say(f"evsed {version} is ready; watching it for {probation_s:g} s")
        ready_at = self.clock()
        while True:
            health, elapsed = self.service.health(), self.clock() - ready_at
            if not health.active:
                return f"stopped {elapsed:.0f} s after READY (it is {health.state})"
            if (health.main_pid, health.restarts) != (first.main_pid, first.restarts):
                return f"restarted {elapsed:.0f} s after READY"
            if elapsed >= probation_s:
                self.say(f"evsed {version} ran {probation_s:g} s without failing: it stays")
                return None
            self.sleep(min(self.poll_s, probation_s - elapsed))

    def _install(self, wheel: Path, release: Path, extras: list[str]) -> None:
        if release.exists():
            shutil.rmtree(release)
        release.parent.mkdir(parents=True, exist_ok=True)
        self.say(f"installing {wheel.name} into {release} with "
                 + (f"the extras the running release has: {', '.join(extras)}" if extras else "no extras"))
        requirement = f"{wheel}[{','.join(extras)}]" if extras else str(wheel)
        umask = os.umask(0o022)  # the release is root's and everyone's to run: a root shell's 077 would lock evsed out
        try:
            self._run_install(wheel, release, requirement)
        finally:
            os.umask(umask)

    def _run_install(self, wheel: Path, release: Path, requirement: str) -> None:
        for argv in ([self.python, "-P", "-m", "venv", "--without-pip", str(release)],
                     [self.python, "-P", "-m", "pip", "--python", str(release / "bin" / "python"), "install",
                      "--no-input", "--quiet", requirement],
                     [str(release / "bin" / "evsed"), "--help"]):
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=900)
            if proc.returncode != 0:
                shutil.rmtree(release, ignore_errors=True)
                raise UpdateError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()[-2000:]}")

    def _wait_between_sessions(self, wait_s: float) -> None:
        """Until no session runs, then with every connector made unavailable (the release starts
        available again: the hold is not kept over a restart, as the CSMS's ChangeAvailability is)."""
        deadline = self.clock() + wait_s
        while True:
            reply = self.status()
            running = [c.id for c in reply.connectors if c.session] if reply is not None else []
            if not running:
                if reply is None or self.hold is None:
                    return
                held = self.hold(True)
                if not isinstance(held, p.AvailabilityReply) or held.result != "Scheduled":
                    self.say("no session runs: the charger is unavailable until the switch")
                    return
                self.hold(False)  # one began meanwhile: it ends first
                continue
            if self.clock() >= deadline:
                raise UpdateError(f"a session runs on connector {', '.join(map(str, running))}: the release "
                                  "is installed; run the update again after it ends (or with --wait SECONDS)")
            self.say(f"waiting for the session on connector {', '.join(map(str, running))} to end")
            self.sleep(self.poll_s)

    def _backup(self, version: str) -> Path | None:
        """A consistent copy of the session database (the daemon is stopped) before the new
        release migrates it."""
        if not self.db.exists():
            return None
        backup = self.db.with_name(f"sessions.db.before-{version}")
        src, dst = sqlite3.connect(self.db), sqlite3.connect(backup)
        try:
            src.backup(dst)
        finally:
            src.close()
            dst.close()
        os.chmod(backup, 0o600)  # card UIDs and names, like the database
        self._prune_backups()
        return backup

    def _prune_backups(self, keep: int = BACKUPS_KEPT) -> None:
        """Only the newest `keep` copies taken before updates stay (an SD card is small); older go."""
        copies = sorted(self.db.parent.glob("sessions.db.before-*"), key=lambda f: (f.stat().st_mtime_ns, f.name))
        for old in copies[:-keep]:
            old.unlink(missing_ok=True)
            self.say(f"removed {old.name}: the last {keep} copies from before an update are kept")

    def _switch(self, target: Path) -> None:
        tmp = self.current.with_name(".current.new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target)
        tmp.replace(self.current)  # rename: the link is the old or the new, never missing

    def _restore_if_needed(self, old: Path, backup: Path | None, version: str) -> None:
        """The migrated database stays when the old release may write it (every step since its
        schema was additive): it keeps the sessions the new release stored in its probation.
        Otherwise the copy taken before the switch comes back and the migrated one is kept aside."""
        if backup is None or not self.db.exists():
            return
        check = subprocess.run([str(old / "bin" / "python"), "-P", "-c", _OLD_WRITES, str(self.db)],
                               capture_output=True, text=True, timeout=60)
        if check.returncode == 0:
            self.say(f"the session database stays as {version} migrated it: {old.name} writes it "
                     f"({backup.name} is the copy from before the update)")
            return
        why = (check.stderr.strip().splitlines() or [f"exit {check.returncode}"])[-1]
        aside = self.db.with_name(f"sessions.db.from-{version}")
        self.db.replace(aside)
        for suffix in ("-wal", "-shm"):
            Path(f"{self.db}{suffix}").unlink(missing_ok=True)
        shutil.copy2(backup, self.db)
        owner = aside.stat()  # the daemon's user must own the copy root put back, or it cannot write it
        os.chmod(self.db, stat.S_IMODE(owner.st_mode))
        if os.geteuid() == 0:
            os.chown(self.db, owner.st_uid, owner.st_gid)
        self.say(f"{old.name} cannot write the session database {version} migrated ({why}): it is back as it "
                 f"was before the update; the migrated one, with any session {version} stored, is {aside.name}")

    def _prune(self, keep: set[Path]) -> None:
        if not self.releases.is_dir():
            return
        others = sorted((p for p in self.releases.iterdir() if p.resolve() not in keep),
                        key=lambda p: p.stat().st_mtime, reverse=True)
        for stale in others[max(0, self.settings.keep_releases - 1):]:
            shutil.rmtree(stale, ignore_errors=True)
            self.say(f"removed the old release {stale.name}")



# Run by the old release's python: exit 0 when its store would open (and write) the database.
# Every python here runs with -P: as root, from whatever folder, no module there may stand in.
# A release from before schema_compat compares the schema versions only.
_OLD_WRITES = """
import pathlib, sqlite3, sys
from evsed.store import migrations as m
db = sqlite3.connect(pathlib.Path(sys.argv[1]).as_uri() + "?mode=ro", uri=True)
try:
    if hasattr(m, "check_writable"):
        m.check_writable(db)
    elif m.version(db) > m.VERSION:
        sys.exit(f"session database schema version {m.version(db)} is newer than its ({m.VERSION})")
except m.SchemaTooNew as exc:
    sys.exit(str(exc))
"""


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
