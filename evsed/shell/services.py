"""The service processes `evsed run` starts for a simple install: one child process per
configured network-facing service ([ocpp], [mqtt], [web], [prices]), restarted when it exits.

Each child is handed a channel to the control socket that gives its connections its role (no uid
guessing), and, when the daemon is root, runs as its own user ([control]; `evsed install` makes
them): never a network service as root. The daemon never waits on a service. Under systemd each
service can instead run as its own unit (systemd/README.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import socket
import sys
from dataclasses import dataclass
from typing import Any, Callable

import structlog

from evsed.config import SERVICE_SECTIONS, Config
from evsed.errors import StartError

log = structlog.get_logger("evsed")
RESTART_MIN_S, RESTART_MAX_S = 1.0, 60.0


AS_ROOT_ENV = "EVSED_UNSAFE_SERVICES_AS_ROOT"  # "1": a root daemon's services stay root (a test machine only)


@dataclass(frozen=True)
class Account:
    """Whom a service process runs as: None for the daemon's own user (the daemon is not root)."""

    uid: int
    gid: int
    groups: tuple[int, ...]


def accounts(config: Config, names: list[str]) -> dict[str, Account | None]:
    """The user each service runs as; as root, its own from [control], or StartError naming the
    users to create. Not root: the daemon's user (it cannot be another)."""
    if os.geteuid() != 0 or not names:
        return {name: None for name in names}
    if os.environ.get(AS_ROOT_ENV) == "1":
        log.error("service.runs_as_root", services=names, why=f"{AS_ROOT_ENV}=1: for a test machine only")
        return {name: None for name in names}
    found: dict[str, Account | None] = {}
    missing = []
    for name in names:
        user = config.control.user(name)
        try:
            pw = pwd.getpwnam(user) if not user.isdigit() else pwd.getpwuid(int(user))
        except KeyError:
            missing.append(user)
            continue
        if pw.pw_uid == 0:
            raise StartError(f"[control] {name}_user {user!r} is root: a network service never runs as root")
        found[name] = Account(pw.pw_uid, pw.pw_gid, tuple(os.getgrouplist(pw.pw_name, pw.pw_gid)))
    if missing:
        raise StartError(f"evsed run as root starts each network service as its own user, and these do not "
                         f"exist: {', '.join(missing)}. Create them (evsed install does), or name existing "
                         f"users in [control]; never is a network service run as root")
    return found


class Services:
    def __init__(self, config: Config):
        self.config = config
        self.names = [name for name in config.sections
                      if name in SERVICE_SECTIONS and config.sections[name].data.get("enabled", True)]
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.accounts = accounts(config, self.names)  # before anything starts: StartError names the users
        self.hand_out: Callable[[str], socket.socket] | None = None  # a channel with the service's role

    def start(self, stopping: asyncio.Event) -> None:
        for name in self.names:
            self._tasks.append(asyncio.get_running_loop().create_task(self._keep(name, stopping),
                                                                      name=f"service-{name}"))

    async def _keep(self, name: str, stopping: asyncio.Event) -> None:
        """Run the service; when it exits, start it again after a back-off that grows to a minute."""
        from evsed.services.link import CHANNEL_ENV  # only where services are configured
        from evsed.services.run import PARENT_ENV
        delay = RESTART_MIN_S
        while not stopping.is_set():
            proc: asyncio.subprocess.Process | None = None
            channel = self.hand_out(name) if self.hand_out is not None else None
            env = {**os.environ, PARENT_ENV: str(os.getpid())}
            options: dict[str, Any] = {}
            if channel is not None:
                env[CHANNEL_ENV] = str(channel.fileno())
                options["pass_fds"] = (channel.fileno(),)
            account = self.accounts.get(name)
            if account is not None:
                options.update(user=account.uid, group=account.gid, extra_groups=list(account.groups))
            try:
                # -P: the working directory is not on the import path (python -m puts it first),
                # so a folder holding a checkout's evsed/ is not imported instead of the installed one
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-P", "-m", "evsed", "service", name, "-c", str(self.config.path),
                    stdin=asyncio.subprocess.DEVNULL, env=env, **options)
            except OSError as exc:
                log.error("service.start_failed", service=name, error=str(exc))
            finally:
                if channel is not None:
                    channel.close()  # the child has its own copy; the daemon keeps the other end
            if proc is not None:
                self.procs[name] = proc
                log.info("service.started", service=name, pid=proc.pid, uid=account.uid if account else os.getuid())
                started = asyncio.get_running_loop().time()
                status = await proc.wait()
                self.procs.pop(name, None)
                if stopping.is_set():
                    return
                log.warning("service.exited", service=name, status=status)
                if asyncio.get_running_loop().time() - started > 5 * RESTART_MAX_S:
                    delay = RESTART_MIN_S  # it ran a good while: a fresh failure, not a crash loop
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stopping.wait()
            delay = min(RESTART_MAX_S, delay * 2)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for proc in list(self.procs.values()):
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for proc in list(self.procs.values()):
            try:
                async with asyncio.timeout(2.0):
                    await proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
