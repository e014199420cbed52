"""`evsed service ocpp`: the OCPP uplink beside the safety daemon, in the version its [ocpp] table
names (each version an adapter package on the shared core: v16/, v201/). serve() runs it until cancelled."""

from __future__ import annotations

import importlib
from typing import Any, Protocol

from evsed.config import Config
from evsed.uplink import settings as settings_mod
from evsed.uplink.charger import DaemonLink
from evsed.uplink.connection import EXIT_HARD_RESET, HardReset

ADAPTERS = {"1.6": "evsed.uplink.v16.uplink", "2.0.1": "evsed.uplink.v201.uplink"}  # version -> its Uplink


class Adapter(Protocol):
    async def run(self) -> None:
        """Until cancelled; raises HardReset after a hard reset."""
    def close(self) -> None: ...


async def serve(config: Config, link: DaemonLink) -> None:
    """Run the uplink for config's [ocpp] section over link until cancelled."""
    settings = settings_mod.parse(config)
    module: Any = importlib.import_module(ADAPTERS[settings.version])
    uplink: Adapter = module.Uplink(settings, link, auth_timeout_s=config.timing.auth_timeout_s)
    try:
        await uplink.run()
    except HardReset:
        raise SystemExit(EXIT_HARD_RESET) from None
    finally:
        uplink.close()
