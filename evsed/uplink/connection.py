"""The websocket to the CSMS, whatever the OCPP version: connect (basic auth, TLS, a client
certificate), reconnect with back-off and jitter, close with 1001 (going away) on the way out;
and the BootNotification and Heartbeat schedules around the version's own messages."""

from __future__ import annotations

import asyncio
import base64
import random
import ssl
from typing import Awaitable, Callable

import structlog
import websockets
from ocpp.exceptions import OCPPError
from websockets.asyncio.client import ClientConnection
from websockets.frames import CloseCode
from websockets.typing import Subprotocol

from evsed.uplink.aio import wait_event
from evsed.uplink.settings import Settings

log = structlog.get_logger("evsed.uplink")
CLOSE_TIMEOUT_S = 2.0  # for the CSMS's close frame once ours is sent

Online = Callable[[ClientConnection], Awaitable[None]]


class Reconnect(Exception):
    """Raised by the online callback: close this connection and open a new one at once (a soft reset)."""


class HardReset(Exception):
    """Raised out of an adapter's run() after a hard reset: the service exits with EXIT_HARD_RESET
    for its service manager (systemd Restart=, or `evsed run`) to start it again."""


EXIT_HARD_RESET = 75


class Connection:
    """One websocket at a time; run() keeps one open for ever, handing each to online()."""

    def __init__(self, settings: Settings, subprotocol: str, *, password: Callable[[], str],
                 ping_interval_s: Callable[[], int], rng: Callable[[], float] = random.random,
                 tls: Callable[[], ssl.SSLContext] | None = None,
                 refused: Callable[[BaseException], None] = lambda exc: None):
        self.settings, self.subprotocol, self.rng = settings, subprotocol, rng
        self.password, self.ping_interval_s = password, ping_interval_s
        self.tls = tls            # a wss connection's context (installed certificates), else the configured files
        self.refused = refused    # hears why a connection could not be made (a security event)
        self.attempts = 0      # connections tried
        self.connections = 0   # websockets opened

    async def run(self, online: Online) -> None:
        failures = 0
        while True:
            self.attempts += 1
            ws: ClientConnection | None = None
            try:
                ws = await self._connect()
                if ws.subprotocol != self.subprotocol:
                    raise ConnectionError(f"the CSMS chose subprotocol {ws.subprotocol!r}, not {self.subprotocol}")
                failures = 0
                self.connections += 1
                log.info("ocpp.connected", url=self.settings.endpoint)
                await online(ws)
            except Reconnect:
                log.info("ocpp.soft_reset")
                continue
            except (OSError, ConnectionError, asyncio.TimeoutError, websockets.exceptions.WebSocketException,
                    OCPPError) as exc:
                log.info("ocpp.disconnected", error=f"{type(exc).__name__}: {exc}"[:200])
                if ws is None:
                    self.refused(exc)
            finally:
                if ws is not None:  # also when cancelled: a service that stops is going away, not failing
                    await ws.close(CloseCode.GOING_AWAY, "going away")
            delay = min(self.settings.reconnect_max_s, self.settings.reconnect_min_s * 2 ** min(failures, 20))
            failures += 1
            await asyncio.sleep(delay * (0.5 + self.rng()))  # jitter: chargers of a site do not return at once

    def _connect(self) -> Awaitable[ClientConnection]:
        s = self.settings
        headers = {}
        if s.security_profile in (1, 2):
            token = base64.b64encode(f"{s.identity}:{self.password()}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        context = None
        if s.url.startswith("wss") and self.tls is not None:
            context = self.tls()
        elif s.url.startswith("wss"):
            context = ssl.create_default_context(cafile=str(s.ca_file) if s.ca_file else None)
            if s.security_profile == 3:
                context.load_cert_chain(str(s.cert_file), str(s.key_file))
        ping = self.ping_interval_s()
        return websockets.connect(
            s.endpoint, subprotocols=[Subprotocol(self.subprotocol)], additional_headers=headers, ssl=context,
            proxy=None, ping_interval=ping if ping > 0 else None, ping_timeout=max(ping, 10) if ping > 0 else None,
            open_timeout=max(s.call_timeout_s, 5), close_timeout=CLOSE_TIMEOUT_S, max_size=2**20)


async def boot(send: Callable[[], Awaitable[tuple[str, int]]], retry_s: int, again: asyncio.Event) -> int:
    """BootNotification until Accepted: send() returns the CSMS's (status, interval), ("Unanswered", 0)
    without an answer. Returns the interval (0: none given). Nothing else is sent before (1.6 4.2,
    2.0.1 B01). `again` set (a TriggerMessage) sends at once instead of waiting."""
    while True:
        again.clear()
        status, interval = await send()
        if status == "Accepted":
            return interval
        wait = interval if interval > 0 else retry_s
        log.info("ocpp.boot_not_accepted", status=status, retry_s=wait)
        await wait_event(again, wait)


async def heartbeat(interval_s: Callable[[], int], changed: asyncio.Event, beat: Callable[[], Awaitable[None]]) -> None:
    """beat() every interval_s(); `changed` set starts the wait over with the new interval."""
    while True:
        changed.clear()
        if await wait_event(changed, interval_s()):
            continue
        await beat()
