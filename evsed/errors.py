"""Errors that end a start of the daemon or a command, shared by the shell, the store and the CLI."""


class StartError(Exception):
    """The daemon cannot start (lock held, socket in use, device unavailable); the message says why."""
