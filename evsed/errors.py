"""Errors that end a start of the daemon or a command, shared by the shell, the store and the CLI.

Standard library only: the CLI catches them without importing what raises them.
"""

from __future__ import annotations

import os


class StartError(Exception):
    """The daemon cannot start (lock held, socket in use, device unavailable); the message says why."""


class ConfigError(Exception):
    """A config problem; str() is 'file:line: [table] key: message'."""

    def __init__(self, path: os.PathLike[str] | str, line: int | None, where: str, message: str):
        self.path, self.line, self.where, self.message = str(path), line, where, message
        loc = f"{self.path}:{line}" if line else self.path
        super().__init__(f"{loc}: {where}: {message}" if where else f"{loc}: {message}")
