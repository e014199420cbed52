"""`evsed service NAME`: one service process, connected to the running daemon.

Each service module has `async def serve(config, link) -> None`, imported only when its
section is configured, so a charger without OCPP never loads the ocpp package.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
from typing import Any

import structlog

from evsed.config import Config
from evsed.services.link import Link, LinkError

log = structlog.get_logger("evsed")
MODULES = {"ocpp": "evsed.uplink.service", "mqtt": "evsed.mqtt.service", "web": "evsed.web.service",
           "prices": "evsed.services.prices"}


SETTINGS = {"ocpp": "evsed.uplink.settings", "mqtt": "evsed.mqtt.settings", "web": "evsed.web.settings",
            "prices": "evsed.services.prices"}


def check_sections(config: Config) -> None:
    """Check each configured service's own table with that service's parser (ConfigError naming
    file, line and key), without importing the service itself (ocpp, aiomqtt, h11)."""
    for name in config.sections:
        if name in SETTINGS:  # a secret only its service's user may read is checked by its mode
            options = {"read_secrets": False} if name in ("ocpp", "mqtt") else {}
            importlib.import_module(SETTINGS[name]).parse(config, **options)


class ServiceError(Exception):
    pass


PARENT_ENV = "EVSED_PARENT_PID"  # set by `evsed run` for the services it starts as children
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """A child of `evsed run` ends with it: a daemon killed -9 would otherwise leave an orphan
    holding the OCPP queue's lock, and the next daemon's child would find it busy."""
    parent = os.environ.get(PARENT_ENV)
    if not parent:
        return  # a unit of its own under systemd, or started by hand
    import ctypes
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the parent check below still runs once
        pass
    if str(os.getppid()) != parent:  # the parent died before the request took effect
        raise ServiceError(f"the daemon (pid {parent}) that started this service is gone")


async def connect(config: Config, name: str, wait_s: float = 30.0) -> Link:
    """Connect to the daemon, waiting for it while it starts (a service may come up first)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    delay = 0.1
    while True:
        try:
            return await Link.connect(config.store.runtime_dir, name)
        except LinkError as exc:
            if loop.time() > deadline:
                raise ServiceError(f"service {name}: {exc}") from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def run(config: Config, name: str) -> int:
    if name not in MODULES:
        raise ServiceError(f"unknown service {name!r}; one of {', '.join(MODULES)}")
    if name not in config.sections:
        raise ServiceError(f"service {name}: no [{name}] section in {config.path}")
    die_with_parent()
    module: Any = importlib.import_module(MODULES[name])
    link = await connect(config, name)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    stopped_by: list[signal.Signals] = []

    def stop(sig: signal.Signals) -> None:
        stopped_by.append(sig)
        task.cancel()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, sig)
    log.info("service.running", service=name, charger=link.hello.charger)
    try:
        await module.serve(config, link)
    except asyncio.CancelledError:
        log.info("service.stopped", service=name, signal=stopped_by[0].name if stopped_by else None)
        return 0
    finally:
        await link.close()
    return 0
