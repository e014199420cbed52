"""`evsed install` and `evsed uninstall`: the system users, the units and their drop-in, the
config from an example (never over the host's), the `current` release link, and systemctl.

Under a root other than / nothing outside it changes: user and systemctl commands are
recorded and printed as what would run, and owners come from that root's passwd and group.
"""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from evsed import config as configmod
from evsed import dirs
from evsed.ops import dropin, update

USER = dirs.DAEMON_USER
OLD_NET_USER = "evsed-net"  # the one user every service ran as before each had its own; no longer used
DEVICE_GROUPS = ("gpio", "spi", "dialout", "input")
CONFIG = "/etc/evsed/evsed.toml"
UNIT_DIR = "/etc/systemd/system"
UNITS = ("evsed.service", "evsed-service@.service", "evsed-update.service", "evsed-update.path")
UPDATE_PATH = "evsed-update.path"  # enabled with the OCPP uplink: it installs what UpdateFirmware spooled
DROPIN = f"{UNIT_DIR}/evsed.service.d/evsed-install.conf"
# The files the host gives a service, by [section] key: each must be readable by that service's
# user alone (0600; the secret ones are checked), never by the group evsed every service is in.
SERVICE_FILES = (("ocpp", "password_file"), ("ocpp", "key_file"), ("ocpp", "cert_file"), ("ocpp", "ca_file"),
                 ("mqtt", "password_file"), ("mqtt", "ca_file"), ("web", "session_secret_file"))
OPT = "/opt/evsed"
CURRENT = f"{OPT}/current"
STATE_DIR = dropin.STATE_DIR


class InstallError(Exception):
    pass


@dataclass
class Host:
    """The machine being changed: a root directory, and whether commands really run there."""

    root: Path = Path("/")
    did: list[str] = field(default_factory=list)  # what changed, in words
    commands: list[list[str]] = field(default_factory=list)  # run, or recorded under another root

    @property
    def live(self) -> bool:
        return self.root == Path("/")

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    def run(self, argv: list[str], check: bool = True) -> None:
        self.commands.append(argv)
        if not self.live:
            self.did.append("would run: " + shlex.join(argv))  # pasteable into a shell as it is
            return
        self.did.append("ran: " + shlex.join(argv))
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode != 0:
            failure = f"{shlex.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}"
            if check:
                raise InstallError(failure)
            self.did.append(f"failed (carried on): {failure}")

    # --- users and groups, from this root's files ----------------------------------------
    def _entries(self, name: str) -> dict[str, list[str]]:
        try:
            text = self.path(f"/etc/{name}").read_text()
        except FileNotFoundError:
            return {}
        return {f[0]: f for f in (line.split(":") for line in text.splitlines()) if len(f) >= 4}

    def uid(self, user: str) -> int | None:
        if self.live:
            try:
                return pwd.getpwnam(user).pw_uid
            except KeyError:
                return None
        entry = self._entries("passwd").get(user)
        return int(entry[2]) if entry else None

    def gid(self, group: str) -> int | None:
        if self.live:
            try:
                return grp.getgrnam(group).gr_gid
            except KeyError:
                return None
        entry = self._entries("group").get(group)
        return int(entry[2]) if entry else None

    def members(self, group: str) -> list[str]:
        if self.live:
            try:
                return list(grp.getgrnam(group).gr_mem)
            except KeyError:
                return []
        entry = self._entries("group").get(group)
        return [m for m in entry[3].split(",") if m] if entry else []

    # --- files --------------------------------------------------------------------------
    def parents(self, path: Path) -> None:
        """Make the missing directories above path 0755 whatever the installer's umask: under a
        umask of 077 /opt/evsed would be 0700 and the evsed user could not reach its release."""
        missing = [d for d in [path.parent, *path.parent.parents] if not d.exists()]
        for directory in reversed(missing):
            directory.mkdir()
            os.chmod(directory, 0o755)

    def put(self, absolute: str, text: str, mode: int, group: str = "root", owner: str = "root") -> None:
        path = self.path(absolute)
        self.parents(path)
        old = path.read_text() if path.exists() else None
        tmp = path.with_name(path.name + ".evsed-new")
        tmp.write_text(text)
        self._own(tmp, mode, group, owner)
        tmp.replace(path)
        if old != text:
            self.did.append(f"{'wrote' if old is None else 'updated'} {absolute} ({mode:04o} {owner}:{group})")

    def mkdir(self, absolute: str, mode: int, group: str = "root", owner: str = "root") -> None:
        path = self.path(absolute)
        made = not path.exists()
        self.parents(path)
        path.mkdir(exist_ok=True)
        self._own(path, mode, group, owner)
        if made:
            self.did.append(f"made {absolute}/ ({mode:04o} {owner}:{group})")

    def own(self, absolute: str, owner: str, group: str) -> None:
        """An existing file given to owner:group, its mode kept (the host's file)."""
        path = self.path(absolute)
        before = path.stat()
        self._own(path, before.st_mode & 0o7777, group, owner)
        if (before.st_uid, before.st_gid) != (path.stat().st_uid, path.stat().st_gid):
            self.did.append(f"gave {absolute} to {owner}:{group} (its mode {before.st_mode & 0o7777:04o} kept)")

    def _own(self, path: Path, mode: int, group: str, owner: str = "root") -> None:
        os.chmod(path, mode)
        gid = 0 if group == "root" else self.gid(group)
        uid = 0 if owner == "root" else self.uid(owner)
        if gid is None or uid is None:  # only under another root, whose files lack it (useradd was recorded)
            note = f"no user {owner} or group {group} under {self.root}: its files keep the installer's"
            if note not in self.did:
                self.did.append(note)
            return
        if os.geteuid() == 0:
            os.chown(path, uid, gid, follow_symlinks=False)

    def remove(self, absolute: str) -> None:
        path = self.path(absolute)
        if path.is_symlink() or path.exists():
            path.unlink()
            self.did.append(f"removed {absolute}")


def unit_text(name: str) -> str:
    return resources.files("evsed.ops").joinpath("units", name).read_text()


def example_names() -> list[str]:
    return sorted(p.name.removesuffix(".toml") for p in resources.files("evsed.ops").joinpath("examples").iterdir()
                  if p.name.endswith(".toml"))


def example_text(name: str) -> str:
    if name not in example_names():
        raise InstallError(f"no example config {name!r}; one of {', '.join(example_names())}")
    return resources.files("evsed.ops").joinpath("examples", f"{name}.toml").read_text()


def _venv() -> Path:
    if sys.prefix == sys.base_prefix:
        raise InstallError("evsed runs outside a virtual environment; install it into one first, from the "
                           "checkout: python3 -m venv /opt/evsed/venv && /opt/evsed/venv/bin/pip install '.[web]' "
                           "(README.md, Quick start)")
    return Path(sys.prefix)


def _fresh_config(host: Host, example: str | None) -> str | None:
    """The example's text when the host has no config yet (None: it has one, kept as it is). With
    neither, say which examples there are: nothing is installed by default, not the simulator."""
    if host.path(CONFIG).exists():
        return None
    if example is None:
        raise InstallError(f"there is no {CONFIG} yet: name the example to start from with --config-example "
                           f"NAME, one of {', '.join(example_names())} (README.md, Quick start)")
    return example_text(example)


def planned_config(host: Host, example: str | None) -> configmod.Config:
    """The config install would put the units in place for: the host's, or the example's."""
    config_path = host.path(CONFIG)
    fresh_config = _fresh_config(host, example)
    return configmod.parse(fresh_config, config_path) if fresh_config is not None else configmod.load(config_path)


def install(host: Host, example: str | None = None) -> configmod.Config:
    """Install on host; returns the config the units were made for. Re-running it updates the
    units and the drop-in (after a change of devices) and keeps everything else."""
    fresh_config = _fresh_config(host, example)
    # Check the config before changing anything: the drop-in comes from its devices.
    cfg = planned_config(host, example)
    venv = _venv()

    groups = [g for g in DEVICE_GROUPS if host.gid(g) is not None]
    if host.uid(USER) is None:
        host.run(["useradd", "--system", "--user-group", "--home-dir", STATE_DIR, "--no-create-home",
                  "--shell", "/usr/sbin/nologin", "--comment", "evsed EV charger daemon",
                  *(["--groups", ",".join(groups)] if groups else []), USER])
    else:
        missing = [g for g in groups if USER not in host.members(g)]
        if missing:
            host.run(["usermod", "--append", "--groups", ",".join(missing), USER])
    for name in cfg.services():
        _service_user(host, name)
    _retire_old_net_user(host, cfg)

    # The daemon's own (the services' group reads): it writes a card learned on the web page into
    # the file (a new file beside it, renamed over it), so the directory is its too.
    host.mkdir("/etc/evsed", 0o750, USER, owner=USER)
    if fresh_config is not None:
        host.put(CONFIG, fresh_config, 0o640, USER, owner=USER)
    else:
        host.did.append(f"kept {CONFIG} (the host's; never overwritten)")
        host.own(CONFIG, USER, USER)

    current = host.path(CURRENT)
    if not current.is_symlink() and not current.exists():
        host.parents(current)
        current.symlink_to(venv)
        host.did.append(f"linked {CURRENT} -> {venv}")
    else:
        host.did.append(f"kept {CURRENT} -> {os.readlink(current) if current.is_symlink() else 'a directory'}")

    for unit in UNITS:
        host.put(f"{UNIT_DIR}/{unit}", unit_text(unit), 0o644)
    host.put(DROPIN, dropin.render(cfg, CONFIG), 0o644)

    host.run(["systemctl", "daemon-reload"])
    host.run(["systemctl", "enable", "evsed.service", *_enabled(cfg)])
    if "ocpp" in cfg.services() and update.settings(cfg).public_key_file is None:
        host.did.append(f"note: {CONFIG} has no [update] public_key_file: the OCPP uplink refuses every "
                        "UpdateFirmware until it names the key releases are signed with")
    return cfg


def service_user(name: str) -> str:
    """The user evsed-service@NAME runs as (the unit's `User=evsed-%i`)."""
    return dirs.service_user(name)


def _service_user(host: Host, name: str) -> None:
    """A system user of its own per service, in group evsed (the config, the control socket,
    sessions.db, services/): no service can read another's password or files (0600)."""
    user = service_user(name)
    if host.uid(user) is None:
        host.run(["useradd", "--system", "--user-group", "--home-dir", "/nonexistent", "--no-create-home",
                  "--shell", "/usr/sbin/nologin", "--comment", f"evsed {name} service", "--groups", USER, user])
    elif user not in host.members(USER):
        host.run(["usermod", "--append", "--groups", USER, user])


def _retire_old_net_user(host: Host, cfg: configmod.Config) -> None:
    """The one user all services shared before. What it owns goes to the service that uses it:
    in services/ (only the OCPP uplink writes there: the queue, the update spool) to evsed-ocpp,
    the files the config names for a service (a password, a key) to that service's user. The
    user itself stays."""
    old = host.uid(OLD_NET_USER)
    if old is None:
        return
    running = cfg.services()
    services = host.path(str(dirs.services_dir(Path(STATE_DIR))))  # the template's ReadWritePaths=
    moves = [("ocpp", ["--recursive"], services)] if services.is_dir() and _owns_any(old, services) else []
    for name, key in SERVICE_FILES:
        text = cfg.sections[name].data.get(key) if name in cfg.sections else None
        if isinstance(text, str) and text:
            path = host.path(str(Path(CONFIG).parent / text))  # relative to the config; an absolute one as is
            if path.is_file() and os.lstat(path).st_uid == old:
                moves.append((name, [], path))
    for name, flags, path in moves:
        if name in running:
            host.run(["chown", *flags, "--no-dereference", f"--from={OLD_NET_USER}", service_user(name), str(path)])
        else:
            host.did.append(f"note: {path} still belongs to {OLD_NET_USER} ([{name}] does not run)")
    host.did.append(f"note: the user {OLD_NET_USER} is no longer used: each service runs as {USER}-NAME once "
                    f"restarted (systemctl restart evsed-service@NAME); then remove it with: userdel {OLD_NET_USER}")


def _owns_any(uid: int, top: Path) -> bool:
    """Whether uid owns top or anything below it (links not followed)."""
    return any(os.lstat(os.path.join(d, n)).st_uid == uid
               for d, subdirs, files in os.walk(top) for n in (".", *subdirs, *files))


def _enabled(cfg: configmod.Config) -> list[str]:
    services = cfg.services()
    return [*(f"evsed-service@{s}.service" for s in services), *([UPDATE_PATH] if "ocpp" in services else [])]


def uninstall(host: Host) -> None:
    """Stop and remove the units and the release link; keep the sessions database, the config
    and the users (their files remain in /var/lib/evsed)."""
    wants = host.path(f"{UNIT_DIR}/multi-user.target.wants")
    services = sorted(p.name for p in wants.glob("evsed-service@*.service")) if wants.is_dir() else []
    host.run(["systemctl", "disable", "--now", *services, UPDATE_PATH, "evsed.service"], check=False)
    host.remove(DROPIN)
    with_dir = host.path(DROPIN).parent
    if with_dir.is_dir() and not any(with_dir.iterdir()):
        with_dir.rmdir()
    for unit in UNITS:
        host.remove(f"{UNIT_DIR}/{unit}")
    host.run(["systemctl", "daemon-reload"])
    if host.path(CURRENT).is_symlink():
        host.remove(CURRENT)
    users = [u for u in (*(service_user(n) for n in configmod.SERVICE_SECTIONS), OLD_NET_USER)
             if host.uid(u) is not None] + [USER]
    host.did.append(f"kept {STATE_DIR} (the sessions database), {CONFIG}, and the users {', '.join(users)} "
                    f"(remove them with: {'; '.join(f'userdel {u}' for u in users)})")


def next_steps(cfg: configmod.Config) -> list[str]:
    return [f"sudo -u {USER} {CURRENT}/bin/evsed check -c {CONFIG}   # opens every configured device once",
            "sudo systemctl start evsed" + "".join(f" {u.removesuffix('.service')}" for u in _enabled(cfg)),
            "journalctl -u evsed -f"]

