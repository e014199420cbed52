"""Where evsed's config, state and control socket are by default, and a quick look at a config
file for its socket alone: standard library only, so `evsed status` starts fast.

The system config (/etc/evsed/evsed.toml) is the installed service's: its default directories
are the service's (/var/lib/evsed, /run/evsed) for whoever reads it, so the CLI run by any user
finds the daemon systemd runs.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_PATH = Path("/etc/evsed/evsed.toml")
SYSTEM_STATE_DIR = Path("/var/lib/evsed")
SYSTEM_RUNTIME_DIR = Path("/run/evsed")


def is_system(config_path: Path | str) -> bool:
    """Whether the config is the installed service's."""
    return Path(config_path).absolute() == DEFAULT_PATH


def default_state_dir(system: bool = False) -> Path:
    if os.environ.get("STATE_DIRECTORY"):  # systemd StateDirectory=, as the service user
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    if system or os.geteuid() == 0:
        return SYSTEM_STATE_DIR
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "evsed"


def default_runtime_dir(system: bool = False) -> Path:
    if os.environ.get("RUNTIME_DIRECTORY"):  # systemd RuntimeDirectory=
        return Path(os.environ["RUNTIME_DIRECTORY"].split(":")[0])
    if system or os.geteuid() == 0:
        return SYSTEM_RUNTIME_DIR
    base = os.environ.get("XDG_RUNTIME_DIR")
    return Path(base) / "evsed" if base else Path(f"/tmp/evsed-{os.geteuid()}")


def configured_dir(config_path: Path, text: str) -> Path:
    """A [store] directory as the config writes it: ~ expanded, relative to the config's folder."""
    path = Path(os.path.expanduser(text))
    return path if path.is_absolute() else (config_path.parent / path).resolve()


def peek_runtime_dir(config_path: Path) -> tuple[Path, str | None]:
    """The control socket's directory the config names, without checking the rest of the file,
    and a problem to tell (None: the file was read). A file with a TOML syntax error is still
    searched for `runtime_dir` under [store]; one that cannot be read gives the default."""
    system = is_system(config_path)
    try:
        text = config_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return default_runtime_dir(system), f"{config_path}: cannot read: {getattr(exc, 'strerror', None) or exc}"
    if "runtime_dir" not in text:  # the common case, told without parsing the file
        return default_runtime_dir(system), None
    import tomllib
    problem = None
    try:
        store = tomllib.loads(text).get("store")
        value = store.get("runtime_dir") if isinstance(store, dict) else None
    except tomllib.TOMLDecodeError as exc:
        problem = f"{config_path}: TOML syntax: {exc}"
        value = _scan_store_key(text, "runtime_dir")
    if isinstance(value, str) and value:
        return configured_dir(config_path, value), problem
    return default_runtime_dir(system), problem


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
