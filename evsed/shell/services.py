"""The service processes `evsed run` starts for a simple install: one child process per
configured network-facing service ([ocpp], [mqtt], [web], [prices]), restarted when it exits.

Each child is handed a channel to the control socket that gives its connections its role (no uid
guessing). The daemon never waits on a service. Under systemd each
service can instead run as its own unit (systemd/README.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from typing import Any, Callable

import structlog

from evsed.config import SERVICE_SECTIONS, Config

log = structlog.get_logger("evsed")
RESTART_MIN_S, RESTART_MAX_S = 1.0, 60.0


class Services:
    def __init__(self, config: Config):
        self.config = config
        self.names = [name for name in config.sections
                      if name in SERVICE_SECTIONS and config.sections[name].data.get("enabled", True)]
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self._tasks: list[asyncio.Task[None]] = []
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
                log.info("service.started", service=name, pid=proc.pid)
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
