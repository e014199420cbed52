"""The daemon's state and runtime directories: where they are by default, checked when the config
loads, made safe at start. Standard library only, outside evsed.config: `evsed status` finds the
daemon's socket through it without loading the config (a quick look at [store] runtime_dir alone).

Plain os calls, no policy: path_problem() is what the config can tell without creating anything;
ensure_dir() creates a directory with an exact mode or refuses one another user could tamper with.
The system config (/etc/evsed/evsed.toml) is the installed service's: its default directories are
the service's (/var/lib/evsed, /run/evsed) for whoever reads it, so the CLI run by any user finds
the daemon systemd runs.
"""

from __future__ import annotations

import os
import pwd
import stat

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from pathlib import Path

STATE_DIR_MODE = 0o750  # the daemon's alone to write; group evsed (the services) reads sessions.db
SERVICES_DIR = "services"  # the one directory under it the services write: the OCPP queue, the update spool
# The daemon's; group evsed (every service, each its own user) may write. Setgid: their files stay
# group evsed. Sticky: none may rename or remove another's files (the web page the OCPP queue or spool).
SERVICES_DIR_MODE = 0o3770
RUNTIME_DIR_MODE = 0o750  # the control socket (0660): the service group may reach it
DAEMON_USER = "evsed"  # the system user `evsed install` creates; the daemon runs as it under systemd


def service_user(name: str) -> str:
    """The user `evsed install` creates for a network service (evsed-ocpp, evsed-web, evsed-mqtt)."""
    return f"{DAEMON_USER}-{name}"
SOCKET_NAME = "control.sock"  # evsed.control.client.socket_path() puts the socket here
SOCKET_PATH_MAX = 107  # bytes: sockaddr_un.sun_path is 108 bytes with the terminating NUL
PATH_MAX = 4095
VIRTUAL_ROOTS = ("/proc", "/sys", "/dev")  # kernel file systems: no place for a database or a socket


# The system's paths; as Path objects (DEFAULT_PATH, SYSTEM_STATE_DIR, SYSTEM_RUNTIME_DIR) when
# first asked: the socket commands (`evsed status`) find the daemon with strings and os.path alone,
# without the 3 ms of importing pathlib.
DEFAULT_CONFIG = "/etc/evsed/evsed.toml"
_SYSTEM_PATHS = {"DEFAULT_PATH": DEFAULT_CONFIG, "SYSTEM_STATE_DIR": "/var/lib/evsed",
                 "SYSTEM_RUNTIME_DIR": "/run/evsed"}
if TYPE_CHECKING:
    DEFAULT_PATH: Path
    SYSTEM_STATE_DIR: Path
    SYSTEM_RUNTIME_DIR: Path


def __getattr__(name: str) -> Path:
    if name not in _SYSTEM_PATHS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from pathlib import Path
    path = Path(_SYSTEM_PATHS[name])
    globals()[name] = path
    return path


def is_system(config_path: os.PathLike[str] | str) -> bool:
    """Whether the config is the installed service's."""
    return os.path.abspath(config_path) == DEFAULT_CONFIG


def default_state_dir(system: bool = False) -> Path:
    from pathlib import Path
    if os.environ.get("STATE_DIRECTORY"):  # systemd StateDirectory=, as the service user
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    if system or os.geteuid() == 0:
        return Path(_SYSTEM_PATHS["SYSTEM_STATE_DIR"])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "evsed"


def default_runtime_dir(system: bool = False) -> Path:
    from pathlib import Path
    return Path(runtime_dir_text(system))


def runtime_dir_text(system: bool = False) -> str:
    """default_runtime_dir() as a string (the socket commands work without pathlib)."""
    if os.environ.get("RUNTIME_DIRECTORY"):  # systemd RuntimeDirectory=
        return os.environ["RUNTIME_DIRECTORY"].split(":")[0]
    if system or os.geteuid() == 0:
        return _SYSTEM_PATHS["SYSTEM_RUNTIME_DIR"]
    base = os.environ.get("XDG_RUNTIME_DIR")
    return os.path.join(base, "evsed") if base else f"/tmp/evsed-{os.geteuid()}"


def configured_dir(config_path: os.PathLike[str] | str, text: str) -> Path:
    """A [store] directory as the config writes it: ~ expanded, relative to the config's folder."""
    from pathlib import Path
    return Path(configured_dir_text(config_path, text))


def configured_dir_text(config_path: os.PathLike[str] | str, text: str) -> str:
    path = os.path.expanduser(text)
    if os.path.isabs(path):
        return path
    return os.path.realpath(os.path.join(os.path.dirname(config_path), path))


def peek_runtime_dir(config_path: str) -> tuple[str, str | None]:
    """The control socket's directory the config names, without checking the rest of the file,
    and a problem to tell (None: the file was read). A file with a TOML syntax error is still
    searched for `runtime_dir` under [store]; one that cannot be read gives the default."""
    system = is_system(config_path)
    try:
        with open(config_path, encoding="utf-8") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError) as exc:
        return runtime_dir_text(system), f"{config_path}: cannot read: {getattr(exc, 'strerror', None) or exc}"
    if "runtime_dir" not in text:  # the common case, told without parsing the file
        return runtime_dir_text(system), None
    import tomllib
    problem = None
    try:
        store = tomllib.loads(text).get("store")
        value = store.get("runtime_dir") if isinstance(store, dict) else None
    except tomllib.TOMLDecodeError as exc:
        problem = f"{config_path}: TOML syntax: {exc}"
        value = _scan_store_key(text, "runtime_dir")
    if isinstance(value, str) and value:
        return configured_dir_text(config_path, value), problem
    return runtime_dir_text(system), problem


def _scan_store_key(text: str, key: str) -> str | None:
    """A plain string `key = "..."` in the [store] table, line by line (for a file tomllib refuses)."""
    import re
    header = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\-\" ]+?)\s*\]\]?\s*(?:#.*)?$")
    pattern = re.compile(rf"""^\s*{re.escape(key)}\s*=\s*(?:"([^"\\]*)"|'([^']*)')\s*(?:#.*)?$""")
    table = ""
    for line in text.splitlines():
        found = header.match(line)
        if found:
            table = found.group(1).replace(" ", "")
            continue
        if table == "store":
            match = pattern.match(line)
            if match:
                return match.group(1) if match.group(1) is not None else match.group(2)
    return None


class DirectoryError(Exception):
    """A directory evsed must not or cannot use; str() says which and why, for one log line."""


def path_problem(path: Path, *, socket: bool = False) -> str | None:
    """Why `path` cannot be the directory (None: it may be). Creates nothing.

    socket: the directory will hold the control socket, whose path has a length limit.
    """
    text = os.fsencode(str(path))
    if not path.is_absolute():
        return f"{_short(path)} is not an absolute path"
    if len(text) > PATH_MAX:
        return f"the path is {len(text)} bytes long, at most {PATH_MAX}"
    if socket and len(os.fsencode(str(path / SOCKET_NAME))) > SOCKET_PATH_MAX:
        return (f"{_short(path)} is too long for the control socket: {SOCKET_NAME} in it takes "
                f"{len(os.fsencode(str(path / SOCKET_NAME)))} bytes, a Unix socket path at most {SOCKET_PATH_MAX}")
    real = os.path.realpath(path)
    for root in VIRTUAL_ROOTS:
        if real == root or real.startswith(root + "/"):
            return f"{_short(path)} is under {root}, a kernel file system"
    probe = path
    while True:  # the nearest part that exists must be a directory
        try:
            st = os.stat(probe)
        except (FileNotFoundError, NotADirectoryError):  # ENOTDIR: a file further up; find it
            if probe.parent == probe:
                return None
            probe = probe.parent
            continue
        except OSError as exc:
            return f"cannot check {_short(probe)}: {exc.strerror or exc}"
        if not stat.S_ISDIR(st.st_mode):
            return f"{_short(probe)} exists and is not a directory"
        return None


def ensure_dir(path: Path, mode: int) -> Path:
    """Create `path` (and missing parents) with exactly `mode`, whatever the umask, or check it.

    Refuses, with DirectoryError, a directory (new or old) that is not owned by this process's
    user, is writable by group or others, or sits in a parent others may write without the
    sticky bit (anyone could swap it); and a symlink owned by someone else (a /tmp fallback
    planted by another user). Returns the path.
    """
    problem = path_problem(path)
    if problem is not None:
        raise DirectoryError(problem)
    missing = []
    probe = path
    while not os.path.lexists(probe):
        missing.append(probe)
        probe = probe.parent
    for part in reversed(missing):
        try:
            os.mkdir(part, mode)
        except FileExistsError:  # created meanwhile (by another process): checked below like any
            continue
        except OSError as exc:
            raise DirectoryError(f"cannot create {_short(part)}: {exc.strerror or exc}") from None
        os.chmod(part, mode)  # mkdir's mode passes through the umask
    for part in reversed(missing) if missing else [path]:  # top down, `path` last
        _check_owned(part)
    _check_parent(path)
    return path


def check_runtime_dir(path: os.PathLike[str] | str) -> None:
    """Refuse (DirectoryError) a runtime directory a client must not trust: one whose socket
    another user may have planted. It must be owned by this user, root, or DAEMON_USER (a
    system daemon's), by the same checks the daemon makes on it; a missing one passes (no daemon).
    """
    if not os.path.lexists(path):
        return
    _check_owned(path, _trusted_uids())
    _check_parent(path)


def _trusted_uids() -> set[int]:
    uids = {os.geteuid(), 0}
    try:
        uids.add(pwd.getpwnam(DAEMON_USER).pw_uid)
    except KeyError:  # a per-user install: no system user
        pass
    return uids


def services_dir(state_dir: Path) -> Path:
    """Where the network services keep their own files, beside the daemon's (which they only read)."""
    from pathlib import Path
    return Path(state_dir) / SERVICES_DIR


def ensure_services_dir(state_dir: Path) -> Path:
    """Create (or fix) the services' directory, SERVICES_DIR_MODE exactly; a symlink or a directory
    owned by another user there is refused. The state directory itself must already be ensured."""
    path = services_dir(state_dir)
    try:
        os.mkdir(path, SERVICES_DIR_MODE)
    except FileExistsError:
        pass
    except OSError as exc:
        raise DirectoryError(f"cannot create {_short(path)}: {exc.strerror or exc}") from None
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise DirectoryError(f"cannot check {_short(path)}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(st.st_mode):  # a symlink too: lstat
        raise DirectoryError(f"{_short(path)} exists and is not a directory")
    if st.st_uid != os.geteuid():
        raise DirectoryError(f"{_short(path)} is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()})")
    os.chmod(path, SERVICES_DIR_MODE)  # mkdir's mode passes through the umask
    return path


def _check_owned(path: os.PathLike[str] | str, owners: set[int] | None = None) -> None:
    """Refuse `path` unless this user (or one of `owners`) owns it and no one else may write it."""
    uid = os.geteuid()
    allowed = owners or {uid}
    try:
        link = os.lstat(path)
        st = os.stat(path)
    except OSError as exc:
        raise DirectoryError(f"cannot check {_short(path)}: {exc.strerror or exc}") from None
    if stat.S_ISLNK(link.st_mode) and link.st_uid not in allowed | {0}:
        raise DirectoryError(f"{_short(path)} is a symlink owned by uid {link.st_uid}, not by this user "
                             f"(uid {uid}) or root: refused")
    if not stat.S_ISDIR(st.st_mode):
        raise DirectoryError(f"{_short(path)} exists and is not a directory")
    if st.st_uid not in allowed:
        whom = f"this user (uid {uid})" if owners is None else f"this user (uid {uid}), root or {DAEMON_USER}"
        raise DirectoryError(f"{_short(path)} is owned by uid {st.st_uid}, not by {whom}: "
                             "another user could replace what evsed keeps there; remove it or fix its owner")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise DirectoryError(f"{_short(path)} is writable by {'others' if st.st_mode & stat.S_IWOTH else 'its group'} "
                             f"(mode {stat.S_IMODE(st.st_mode):04o}): chmod go-w it")


def _check_parent(path: os.PathLike[str] | str) -> None:
    parent = os.path.dirname(os.path.normpath(path)) or "."
    try:
        st = os.stat(parent)
    except OSError as exc:
        raise DirectoryError(f"cannot check {_short(parent)}: {exc.strerror or exc}") from None
    if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
        raise DirectoryError(f"{_short(parent)} is writable by others without the sticky bit: "
                             f"anyone could swap {os.path.basename(os.path.normpath(path))} in it")


def _short(path: os.PathLike[str] | str, limit: int = 120) -> str:
    text = str(path)
    return text if len(text) <= limit else text[:limit - 3] + "..."
