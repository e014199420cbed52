"""Which config a command uses and where the running daemon is: -c, else $EVSED_CONFIG, else the
system config /etc/evsed/evsed.toml, else the running daemon's own; said on stderr when it falls back.

The socket commands (status, sim, reserve, ...) read only [store] runtime_dir, so they reach the
daemon while the file has an error, even a TOML syntax error, and without loading the package.
"""

from __future__ import annotations

import os
import sys

from evsed import dirs

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (2 ms of `evsed status`)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, TypeVar

    from evsed import protocol as p
    from evsed.config import Config

    R = TypeVar("R", bound=p.Reply)


def note(text: str) -> None:
    print(f"evsed: {text}", file=sys.stderr)


def named(args: Any) -> Path | None:
    """The config the user named: -c, else $EVSED_CONFIG."""
    from pathlib import Path
    text = named_text(args)
    return Path(text) if text else None


def named_text(args: Any) -> str | None:
    """named() as a string: the socket commands find the daemon without pathlib (3 ms)."""
    return getattr(args, "config", None) or os.environ.get("EVSED_CONFIG") or None


def config_file(args: Any) -> Path:
    """The file of the commands that need one (run, check, service, install, update): the named
    one, else the system config, as the daemon's unit reads it."""
    return named(args) or dirs.DEFAULT_PATH


def load(args: Any) -> Config:
    from evsed import config as configmod
    return configmod.load(config_file(args))


def load_if_any(args: Any) -> Config | None:
    """The named config, else the system config if there is one, else None (`evsed probe` works
    without a config: it then looks at every port)."""
    path = named(args) or (dirs.DEFAULT_PATH if dirs.DEFAULT_PATH.exists() else None)
    if path is None:
        return None
    from evsed import config as configmod
    return configmod.load(path)


def runtime_dir(args: Any) -> str:
    """The control socket's directory: the named or system config's [store] runtime_dir alone,
    else the default one (where `make run` and an installed daemon listen)."""
    path = named_text(args) or (dirs.DEFAULT_CONFIG if os.path.exists(dirs.DEFAULT_CONFIG) else None)
    if path is None:
        return dirs.runtime_dir_text()
    found, problem = dirs.peek_runtime_dir(path)
    if problem is not None:
        note(f"{problem}; looking for the daemon in {found}")
    return found


def request(args: Any, command: p.Command[R]) -> R | p.Failure:
    """One command to the running daemon, on the socket the config names: its reply, or the Failure."""
    from evsed.control import client as control
    return control.request(runtime_dir(args), command)


def ask(args: Any, command: p.Command[R]) -> R:
    """request(), for a command that cannot go on without the reply: a Failure raises DaemonError."""
    from evsed.control import client as control
    return control.ask(runtime_dir(args), command)


def load_for_records(args: Any) -> Config | None:
    """The config of the commands that read the sessions database (sessions, report, export): the
    named or system config; else the running daemon's, asked on the default socket; else None,
    the built-in defaults. Each fallback is said on stderr."""
    from evsed import config as configmod
    path = named(args)
    if path is None and dirs.DEFAULT_PATH.exists():
        path = dirs.DEFAULT_PATH
    if path is None:
        path = daemons_config()
        if path is None:
            note(f"no config (-c, $EVSED_CONFIG, {dirs.DEFAULT_PATH}) and no daemon running: built-in defaults, "
                 f"sessions in {dirs.default_state_dir()}")
            return None
        note(f"using {path}, the running daemon's config")
    return configmod.load(path)


def daemons_config() -> Path | None:
    """The config file of the daemon on the default socket, if one runs and says."""
    from evsed import protocol as p
    from evsed.control import client as control
    try:
        reply = control.request(dirs.default_runtime_dir(), p.Status())
    except control.ControlError:
        return None
    from pathlib import Path
    return Path(reply.config) if isinstance(reply, p.StatusReply) and reply.config else None
