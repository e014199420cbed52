"""The service processes `evsed run` starts for a simple install: one child process per
configured network-facing service ([ocpp], [mqtt], [web], [prices]), restarted when it exits.

The daemon never waits on a service: they talk to it over the control socket like any
client. Under systemd each service can instead run as its own unit (systemd/README.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys

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

    def start(self, stopping: asyncio.Event) -> None:
        for name in self.names:
            self._tasks.append(asyncio.get_running_loop().create_task(self._keep(name, stopping),
                                                                      name=f"service-{name}"))

    async def _keep(self, name: str, stopping: asyncio.Event) -> None:
        """Run the service; when it exits, start it again after a back-off that grows to a minute."""
        from evsed.services.run import PARENT_ENV  # only where services are configured
        delay = RESTART_MIN_S
        while not stopping.is_set():
            try:
                # -P: the working directory is not on the import path (python -m puts it first),
                # so a folder holding a checkout's evsed/ is not imported instead of the installed one
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-P", "-m", "evsed", "service", name, "-c", str(self.config.path),
                    stdin=asyncio.subprocess.DEVNULL, env={**os.environ, PARENT_ENV: str(os.getpid())})
            except OSError as exc:
                log.error("service.start_failed", service=name, error=str(exc))
            else:
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
