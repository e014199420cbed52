"""The OCPP 1.6J uplink service: one websocket to the CSMS (reconnecting with back-off and jitter),
BootNotification, Heartbeat, the durable queue's sender, and the daemon's events, authorization
requests and limits through the Link. serve() runs it until cancelled."""

from __future__ import annotations

import asyncio
import base64
import os
import random
import ssl
import time
from pathlib import Path
from typing import Callable

import structlog
import websockets
from ocpp.exceptions import OCPPError
from ocpp.v16 import call
from websockets.typing import Subprotocol

from evsed.services.link import resume_after
from evsed.uplink import settings as settings_mod
from evsed.uplink.auth import Authorizer
from evsed.uplink.diagnostics import Diagnostics
from evsed.uplink.firmware import Firmware
from evsed.uplink.handlers import CentralCommands
from evsed.uplink.keys import KEYS, Values, check
from evsed.uplink.outbox import Outbox
from evsed.uplink.settings import Settings
from evsed.uplink.smart_service import SmartCharging
from evsed.uplink.state import State, wait_event

log = structlog.get_logger("evsed.uplink")


class HardReset(Exception):
    """Reset type Hard: serve() exits the process with EXIT_HARD_RESET so that its service
    manager (systemd Restart=) starts it again."""


EXIT_HARD_RESET = 75
REPORT_S = 5.0  # how often an unchanged status is looked at again


class _SoftReset(Exception):
    pass


async def first_of(*coros) -> None:
    """Run coros until the first ends; cancel the others; its exception propagates as it is."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        pending = set(tasks)
        while pending:  # cancelled again until gone: a library's wait_for may swallow one cancel
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=1)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()


async def serve(config, link) -> None:
    """Run the uplink for config's [ocpp] section over link until cancelled."""
    uplink = Uplink(settings_mod.parse(config), link, auth_timeout_s=config.timing.auth_timeout_s)
    try:
        await uplink.run()
    except HardReset:
        raise SystemExit(EXIT_HARD_RESET) from None
    finally:
        uplink.close()


class Uplink(SmartCharging):
    def __init__(self, settings: Settings, link, *, clock: Callable[[], float] = time.time,
                 rng: Callable[[], float] = random.random, auth_timeout_s: float = 60.0):
        self.settings, self.link, self.clock, self.rng = settings, link, clock, rng
        self.password = settings.password
        self.state = State(settings.state_file)
        fixed = {"NumberOfConnectors": str(len(link.hello.get("connectors") or [1])),
                 "ConnectionTimeOut": str(int(auth_timeout_s)),
                 "SecurityProfile": str(settings.security_profile)}
        self.keys = Values(fixed, {**settings.keys, **self.state.keys()}, self.state.set_key)
        self.connectors: list[int] = [int(c) for c in link.hello.get("connectors") or [1]]
        self.phases = int(link.hello.get("phases") or settings.phases)
        self.voltage_v = float(link.hello.get("voltage_v") or settings.voltage_v)
        self.outbox = Outbox(self.state, self.keys, clock)
        self.outbox.on_started, self.outbox.on_stopped = self._session_started, self._session_stopped
        self.authorizer = Authorizer(self.state, self.keys, clock, lambda: self.cp if self.booted else None,
                                     settings.authorize_timeout_s)
        self.diagnostics = Diagnostics(self)
        self.firmware = Firmware(self)
        self.cp: CentralCommands | None = None
        self.booted = False                          # BootNotification Accepted on this connection
        self.wake = asyncio.Event()                  # the queue may have work
        self.retime = asyncio.Event()                # meter value intervals or sessions changed
        self.rebeat = asyncio.Event()                # HeartbeatInterval changed
        self.reprofile = asyncio.Event()             # charging profiles or sessions changed
        self.boot_now = asyncio.Event()
        self.pending_profiles: dict[int, dict] = {}  # connector -> TxProfile of a RemoteStart
        self.limits_sent: dict[int, float | None] = {}
        self.connections = 0                         # websockets opened
        self.attempts = 0                            # connections tried
        self._tasks: set[asyncio.Task] = set()
        self._hard = asyncio.Event()

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self.state.close()

    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def run(self) -> None:
        """Until cancelled; raises HardReset after a Reset of type Hard."""
        await first_of(self._events(), self._authorizer(), self._meter_clock(), self._limits(), self._report(),
                       self.firmware.watch(), self._connection(), self._hard.wait())
        if self._hard.is_set():
            raise HardReset()

    # -- the connection -------------------------------------------------------------------
    async def _connection(self) -> None:
        failures = 0
        while True:
            self.attempts += 1
            try:
                async with self._connect() as ws:
                    if ws.subprotocol != "ocpp1.6":
                        raise ConnectionError(f"the CSMS chose subprotocol {ws.subprotocol!r}, not ocpp1.6")
                    failures = 0
                    self.connections += 1
                    log.info("ocpp.connected", url=self.settings.endpoint)
                    await self._online(ws)
            except _SoftReset:
                log.info("ocpp.soft_reset")
                continue
            except (OSError, ConnectionError, asyncio.TimeoutError, websockets.exceptions.WebSocketException,
                    OCPPError) as exc:
                log.info("ocpp.disconnected", error=f"{type(exc).__name__}: {exc}"[:200])
            finally:
                self.cp, self.booted = None, False
            delay = min(self.settings.reconnect_max_s, self.settings.reconnect_min_s * 2 ** min(failures, 20))
            failures += 1
            await asyncio.sleep(delay * (0.5 + self.rng()))  # jitter: chargers of a site do not return at once

    def _connect(self):
        s = self.settings
        headers = {}
        if s.security_profile in (1, 2):
            token = base64.b64encode(f"{s.identity}:{self.password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        context = None
        if s.url.startswith("wss"):
            context = ssl.create_default_context(cafile=str(s.ca_file) if s.ca_file else None)
            if s.security_profile == 3:
                context.load_cert_chain(str(s.cert_file), str(s.key_file))
        ping = self.keys.int("WebSocketPingInterval")
        return websockets.connect(
            s.endpoint, subprotocols=[Subprotocol("ocpp1.6")], additional_headers=headers, ssl=context, proxy=None,
            ping_interval=ping if ping > 0 else None, ping_timeout=max(ping, 10) if ping > 0 else None,
            open_timeout=max(s.call_timeout_s, 5), max_size=2**20)

    async def _online(self, ws) -> None:
        cp = CentralCommands(self.settings.identity, ws, self, response_timeout=self.settings.call_timeout_s)
        self.cp = cp
        await first_of(cp.start(), self._booted(cp))

    async def _booted(self, cp) -> None:
        await self._boot(cp)
        self.booted = True
        with self.state.transaction():  # every connector's status after the boot
            for connector, (status, error, info) in sorted(self.state.statuses().items()):
                self.state.enqueue("StatusNotification", self.outbox.status_payload(
                    connector, status, error, info), connector=connector, tx=False)
            self.state.collapse_status()
        self.wake.set()
        await first_of(self._heartbeat(cp), self._sender(cp))

    async def _boot(self, cp) -> None:
        """BootNotification until Accepted; nothing else is sent before (OCPP 1.6 4.2)."""
        s = self.settings
        request = call.BootNotification(
            charge_point_model=s.model, charge_point_vendor=s.vendor,
            charge_point_serial_number=s.serial_number[:25] or None,
            firmware_version=s.firmware_version[:50] or None)
        while True:
            self.boot_now.clear()
            try:
                result = await cp.call(request, suppress=False)
            except (asyncio.TimeoutError, OCPPError) as exc:
                log.info("ocpp.boot_unanswered", error=type(exc).__name__)
                status, interval = "Unanswered", 0
            else:
                status, interval = result.status, int(result.interval)
            if status == "Accepted":
                if interval > 0:
                    self.keys.change("HeartbeatInterval", str(interval))
                log.info("ocpp.boot_accepted", heartbeat_s=self.keys.int("HeartbeatInterval"))
                return
            wait = interval if interval > 0 else self.settings.heartbeat_s
            log.info("ocpp.boot_not_accepted", status=status, retry_s=wait)
            await wait_event(self.boot_now, wait)

    async def _heartbeat(self, cp) -> None:
        while True:
            self.rebeat.clear()
            if await wait_event(self.rebeat, self.keys.int("HeartbeatInterval")):
                continue  # the interval changed: start over with the new one
            await self._heartbeat_once(cp)

    async def _heartbeat_once(self, cp) -> None:
        try:
            await cp.call(call.Heartbeat(), suppress=False)
        except (asyncio.TimeoutError, OCPPError) as exc:
            log.info("ocpp.heartbeat_unanswered", error=type(exc).__name__)

    async def _sender(self, cp) -> None:
        while True:
            self.wake.clear()
            item = self.state.head()
            if item is None:
                await self.wake.wait()
                continue
            wait = item.next_at - self.clock()
            if wait > 0:
                await wait_event(self.wake, wait)
                continue
            result = await self.outbox.send_head(cp, item)
            if result is not None and item.action in ("StartTransaction", "StopTransaction"):
                await self._transaction_answered(item, result)

    async def _transaction_answered(self, item, result) -> None:
        info = result.id_tag_info
        if info is None:
            return
        info = {k: v for k, v in (info if isinstance(info, dict) else vars(info)).items() if v is not None}
        tag = item.payload.get("idTag")
        if tag:
            self.authorizer.remember(tag, {"status": info["status"], **(
                {"expiryDate": info["expiry_date"]} if info.get("expiry_date") else {}), **(
                {"parentIdTag": info["parent_id_tag"]} if info.get("parent_id_tag") else {})})
        running = self.state.sessions().get(item.connector)
        if (item.action == "StartTransaction" and info["status"] != "Accepted" and running
                and running["session"] == item.session and self.keys.bool("StopTransactionOnInvalidId")):
            log.info("ocpp.transaction_deauthorized", connector=item.connector, status=info["status"])
            self.outbox.stop_reasons[item.connector] = "DeAuthorized"
            await self.command({"cmd": "remote-stop", "connector": item.connector, "reason": "deauthorized"})

    # -- the daemon side --------------------------------------------------------------------
    async def command(self, request: dict, timeout_s: float = 10.0) -> dict:
        """One daemon command; a failure is a reply with ok false, never an exception."""
        try:
            async with asyncio.timeout(timeout_s):
                return await self.link.command(request)
        except (TimeoutError, OSError, ConnectionError, ValueError) as exc:
            log.warning("ocpp.daemon_command_failed", cmd=request.get("cmd"), error=type(exc).__name__)
            return {"ok": False, "error": f"daemon: {type(exc).__name__}"}

    async def _first_contact(self) -> None:
        """An uplink new to this charger starts its event stream from now: the sessions before it
        were never the CSMS's. Where each connector stands comes from one status request."""
        start = resume_after(self.link.hello)
        reply = await self.command({"cmd": "status"})
        with self.state.transaction():
            for conn in reply.get("connectors") or [] if reply.get("ok", True) else []:
                if isinstance(conn, dict) and isinstance(conn.get("id"), int):
                    self.outbox.seed(conn["id"], conn)
            self.state.set_meta("seq", start)
            self.state.set_meta("first_contact", start)  # kept: where this uplink's history begins
        log.info("ocpp.first_contact", after=start, statuses=len(self.state.statuses()))

    async def _events(self) -> None:
        failures = 0
        if not self.state.meta("seq"):
            await self._first_contact()
        while True:
            after = int(self.state.meta("seq", "0"))
            try:
                async for event in self.link.events(after):
                    seq = event.get("seq")
                    if seq is not None and int(seq) <= int(self.state.meta("seq", "0")):
                        continue  # already queued before a restart
                    if self.outbox.on_event(event):
                        await self.link.ack(int(seq))  # only once its messages are durable
                        self.wake.set()
                    failures = 0
            except (OSError, ConnectionError, ValueError, KeyError) as exc:
                log.warning("ocpp.event_stream_lost", error=f"{type(exc).__name__}: {exc}"[:200])
            failures += 1
            await asyncio.sleep(min(30.0, 0.1 * 2 ** min(failures, 10)))

    async def _authorizer(self) -> None:
        failures = 0
        while True:
            try:
                await self.link.authorize_with("ocpp", self.settings.authorize_timeout_s + 1, self.authorizer)
            except (OSError, ConnectionError, ValueError) as exc:
                log.warning("ocpp.authorizer_lost", error=type(exc).__name__)
            failures += 1
            await asyncio.sleep(min(30.0, 0.1 * 2 ** min(failures, 10)))

    def _session_started(self, connector: int, session: str) -> None:
        body = self.pending_profiles.pop(connector, None)
        if body is not None:
            self.install_profile(connector, body)
        self.retime.set()
        self.reprofile.set()

    def _session_stopped(self, connector: int, session: str) -> None:
        for profile_id, (where, body, owner) in self._profiles_by_id().items():
            if owner == session:
                self.state.delete_profile(profile_id)
        self.retime.set()
        self.reprofile.set()

    # -- meter values ---------------------------------------------------------------------------
    async def _meter_clock(self) -> None:
        """MeterValues every MeterValueSampleInterval of a transaction, and on the clock every
        ClockAlignedDataInterval (from midnight UTC)."""
        next_sample: dict[int, float] = {}
        next_aligned = 0.0
        while True:
            now = self.clock()
            sampled, aligned = self.keys.int("MeterValueSampleInterval"), self.keys.int("ClockAlignedDataInterval")
            sessions = self.state.sessions()
            for connector in list(next_sample):
                if connector not in sessions:
                    del next_sample[connector]
            for connector in sessions:
                if sampled > 0 and connector not in next_sample:
                    next_sample[connector] = now + sampled
            due = [t for c, t in next_sample.items() if t <= now]
            for connector, t in list(next_sample.items()):
                if t <= now and sampled > 0:
                    self.outbox.meter_values(connector, "Sample.Periodic")
                    next_sample[connector] = now + sampled
            if aligned > 0:
                if next_aligned and now >= next_aligned:
                    for connector in self.connectors:
                        self.outbox.meter_values(connector, "Sample.Clock")
                    due.append(now)
                next_aligned = (now // aligned + 1) * aligned
            else:
                next_aligned = 0.0
            if due:
                self.wake.set()
            times = list(next_sample.values()) + ([next_aligned] if next_aligned else [])
            self.retime.clear()
            timeout = min(times) - self.clock() if times else 3600
            await wait_event(self.retime, min(timeout, 3600))

    def keys_changed(self, key: str) -> None:
        self.retime.set()
        self.rebeat.set()

    def change_password(self, value: str) -> str:
        """ChangeConfiguration AuthorizationKey: the new password goes to password_file (0600)."""
        path = self.settings.password_file
        if check(KEYS["AuthorizationKey"], value) is not None or path is None:
            return "Rejected"
        tmp = Path(f"{path}.new")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(value + "\n")
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("ocpp.password_not_written", error=type(exc).__name__)
            return "Rejected"
        self.password = value
        log.info("ocpp.password_changed")  # never the value
        return "Accepted"

    # -- the rest of what handlers ask ---------------------------------------------------------------
    def free_connector(self) -> int | None:
        statuses = self.state.statuses()
        for connector in self.connectors:
            if statuses.get(connector, ("Available",))[0] in ("Available", "Preparing"):
                return connector
        return None

    def connector_of(self, transaction_id: int) -> int | None:
        session = self.state.session_of(transaction_id)
        for connector, running in self.state.sessions().items():
            if running["session"] == session:
                return connector
        return None

    async def remote_start_authorized(self, connector: int, id_tag: str) -> None:
        reply = await self.authorizer({"id_tag": id_tag, "connector": connector})
        if reply["result"] == "accept":
            await self.command({"cmd": "remote-start", "connector": connector, "id_tag": id_tag})
        else:
            log.info("ocpp.remote_start_refused", connector=connector, reason=reply.get("reason"))

    async def reset(self, kind: str) -> None:
        """Soft: end the sessions and reconnect (a new boot). Hard: end them, then exit."""
        reason = "HardReset" if kind == "Hard" else "SoftReset"
        for connector in list(self.state.sessions()):
            self.outbox.stop_reasons[connector] = reason
            await self.command({"cmd": "remote-stop", "connector": connector, "reason": "other"})
        deadline = self.clock() + 10
        while self.state.sessions() and self.clock() < deadline:  # their StopTransactions get queued
            await asyncio.sleep(0.05)
        log.warning("ocpp.reset", type=kind)
        if kind == "Hard":  # the whole charger restarts: the daemon, through its service manager
            await self.command({"cmd": "restart"})
            self._hard.set()
            return
        if self.cp is not None:
            await self.cp._connection.close()

    async def trigger(self, message: str, connector: int | None) -> None:
        cp = self.cp
        if message == "BootNotification":
            self.boot_now.set()
            if self.booted and cp is not None:
                await self._boot(cp)
        elif message == "Heartbeat" and self.booted and cp is not None:
            await self._heartbeat_once(cp)
        elif message == "DiagnosticsStatusNotification":
            await self.diagnostics.notify()
        elif message == "FirmwareStatusNotification":
            await self.firmware.notify()
        elif message == "MeterValues":
            for c in ([connector] if connector else self.connectors):
                self.outbox.meter_values(c, "Trigger")
        elif message == "StatusNotification":
            statuses = self.state.statuses()
            for c in ([connector] if connector is not None else [0, *self.connectors]):
                status, error, info = statuses.get(c, ("Available", "NoError", None))
                self.state.enqueue("StatusNotification", self.outbox.status_payload(c, status, error, info),
                                   connector=c, tx=False)
        self.wake.set()

    async def _report(self) -> None:
        """Tell the daemon how the uplink is doing, for `evsed status`, whenever it changes."""
        said: dict | None = None
        while True:
            now = self.status()
            if now != said:
                reply = await self.command({"cmd": "service-status", "status": now})
                said = now if reply.get("ok") else None
            await asyncio.sleep(REPORT_S if now == said else 1.0)

    def status(self) -> dict:
        """What `evsed status` may show of the uplink (no secrets)."""
        return {"connected": self.cp is not None, "booted": self.booted, "queued": self.state.count("queue"),
                "dropped": self.outbox.dropped, "malformed": self.cp.malformed if self.cp else 0,
                "limits_a": dict(self.limits_sent)}

