"""The OCPP 1.6J charge point: the core's connection, queue, authorization, charging limits and
transfers, put together with the 1.6 messages, keys and handlers. run() until cancelled."""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path
from typing import Any, Callable, Coroutine

import structlog
from ocpp.exceptions import OCPPError
from ocpp.v16 import call
from websockets.asyncio.client import ClientConnection

from evsed import protocol as p
from evsed.uplink.aio import first_of, wait_event
from evsed.uplink.auth import Authorizer, AuthStore, Info
from evsed.uplink.certificates import Certificates
from evsed.uplink.charger import Charger, DaemonLink, Reading
from evsed.uplink.connection import Connection, HardReset, Reconnect, boot, heartbeat
from evsed.uplink.diagnostics import Diagnostics
from evsed.uplink.firmware import Firmware
from evsed.uplink.limits import ChargingLimits
from evsed.uplink.metering import meter_clock
from evsed.uplink.queue import Sender
from evsed.uplink.settings import Settings
from evsed.uplink.state import Queued, State
from evsed.uplink.v16.handlers import CentralCommands, Ports
from evsed.uplink.v16.keys import KEYS, AuthKeys, Values, check
from evsed.uplink.v16.messages import Messages, id_tag_info
from evsed.uplink.v16.profiles import Profiles

log = structlog.get_logger("evsed.uplink")
SUBPROTOCOL = "ocpp1.6"
ID_TOKEN_LEN = 20
RESET_WAIT_S = 30.0  # a reset waits at most this long for sessions to end and their Stops to be answered


class Uplink:
    def __init__(self, settings: Settings, link: DaemonLink, *, clock: Callable[[], float] = time.time,
                 rng: Callable[[], float] = random.random, auth_timeout_s: float = 60.0):
        self.settings, self.clock = settings, clock
        self.password = settings.password
        self.state = State(settings.state_file)
        if self.state.claim("1.6"):
            log.warning("ocpp.queue_of_another_version_dropped")
        self.charger = Charger(link, self.state, phases=settings.phases, voltage_v=settings.voltage_v)
        fixed = {"NumberOfConnectors": str(len(self.charger.connectors)),
                 "ConnectionTimeOut": str(int(auth_timeout_s)), "SecurityProfile": str(settings.security_profile)}
        self.keys = keys = Values(fixed, {**settings.keys, **self.state.keys()}, self.state.set_key)
        self.sender = Sender(self.state, clock, lambda: keys.int("TransactionMessageAttempts"),
                             lambda: keys.int("TransactionMessageRetryInterval"))
        self.messages = Messages(self.state, keys, clock, self.sender.drop)
        self.messages.on_started, self.messages.on_stopped = self._session_started, self._session_stopped
        policy = AuthKeys(keys)
        self.auth = AuthStore(self.state, policy)
        self.authorizer = Authorizer(self.auth, policy, clock, lambda: self.cp is not None and self.booted,
                                     self._authorize, ID_TOKEN_LEN)
        self.limits = ChargingLimits(self.state, clock, self.charger.connectors, phases=self.charger.phases,
                                     voltage_v=self.charger.voltage_v, max_current_a=settings.max_current_a,
                                     send_limit=self.charger.limit)
        self.profiles = Profiles(self.limits, keys, self.state.transaction_id)
        self.messages.on_available = self.profiles.remote_start_over  # a remote start's authorization expired
        self.diagnostics = Diagnostics(settings.identity, clock, self._diagnostics_body, self._diagnostics_status)
        self.firmware = Firmware(self.state, clock, spool_dir=settings.spool, key_file=settings.update_key_file,
                                 notify=self._firmware_status, outcome=self._firmware_outcome,
                                 queued=self.sender.wake.set, spawn=self.spawn)
        self.certificates = Certificates(settings.state_file.parent / "ocpp-certs", settings.identity)
        self.connection = Connection(settings, SUBPROTOCOL, password=lambda: self.password,
                                     ping_interval_s=lambda: keys.int("WebSocketPingInterval"), rng=rng,
                                     tls=lambda: self.certificates.tls(settings.ca_file, settings.cert_file,
                                                                       settings.key_file, settings.security_profile == 3))
        self.ports = Ports(self.charger, self, keys, self.auth, self.profiles, self.diagnostics, self.firmware)
        self.cp: CentralCommands | None = None
        self.booted = False                          # BootNotification Accepted on this connection
        self.retime = asyncio.Event()                # meter value intervals or sessions changed
        self.rebeat = asyncio.Event()                # HeartbeatInterval changed
        self.boot_now = asyncio.Event()
        self.session_ended = asyncio.Event()         # a StopTransaction was queued
        self._reconnect = asyncio.Event()            # a soft reset: a new connection, a new boot
        self._tasks: set[asyncio.Task[Any]] = set()
        self._hard = asyncio.Event()

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self.state.close()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def run(self) -> None:
        """Until cancelled; raises HardReset after a Reset of type Hard."""
        keys = self.keys
        await first_of(
            self.charger.follow(self.messages, self.sender.wake.set),
            self.charger.serve_authorizer("ocpp", self.settings.authorize_timeout_s + 1, self.authorizer),
            meter_clock(self.clock, lambda: self.state.sessions(), self.charger.connectors,
                        sampled_s=lambda: keys.int("MeterValueSampleInterval"),
                        aligned_s=lambda: keys.int("ClockAlignedDataInterval"), emit=self.messages.meter_values,
                        changed=self.retime, queued=self.sender.wake.set),
            self.limits.run(), self.charger.report(self.status), self.charger.report_delivered(), self.firmware.watch(),
            self.connection.run(self._online), self._hard.wait())
        if self._hard.is_set():
            raise HardReset()

    # -- one connection -----------------------------------------------------------------------
    async def _online(self, ws: ClientConnection) -> None:
        cp = CentralCommands(self.settings.identity, ws, self.ports, response_timeout=self.settings.call_timeout_s)
        self.cp = cp
        self._reconnect.clear()
        try:
            await first_of(cp.start(), self._booted(cp), self._until_reconnect())
        finally:
            self.cp, self.booted = None, False

    async def _until_reconnect(self) -> None:
        await self._reconnect.wait()
        raise Reconnect()

    async def _booted(self, cp: CentralCommands) -> None:
        interval = await boot(lambda: self._boot_once(cp), self.settings.heartbeat_s, self.boot_now)
        self._boot_accepted(interval)
        self.booted = True
        statuses = {0: ("Available", "NoError", None), **self.state.statuses()}  # connector 0 too
        with self.state.transaction():  # every connector's status after the boot
            for connector, (status, error, info) in sorted(statuses.items()):
                self.state.enqueue("StatusNotification", self.messages.status_payload(
                    connector, status, error, info), connector=connector, tx=False)
            self.state.collapse_status()
        self.sender.wake.set()
        await first_of(heartbeat(lambda: self.keys.int("HeartbeatInterval"), self.rebeat,
                                 lambda: self._heartbeat_once(cp)),
                       self.sender.run(lambda item: self._deliver(cp, item)))

    async def _boot_once(self, cp: CentralCommands) -> tuple[str, int]:
        s = self.settings
        request = call.BootNotification(
            charge_point_model=s.model, charge_point_vendor=s.vendor,
            charge_point_serial_number=s.serial_number[:25] or None,
            firmware_version=s.firmware_version[:50] or None)
        try:
            result = await cp.call(request, suppress=False)
        except (asyncio.TimeoutError, OCPPError) as exc:
            log.info("ocpp.boot_unanswered", error=type(exc).__name__)
            return "Unanswered", 0
        return str(result.status), int(result.interval)

    def _boot_accepted(self, interval: int) -> None:
        if interval > 0:
            self.keys.change("HeartbeatInterval", str(interval))
        log.info("ocpp.boot_accepted", heartbeat_s=self.keys.int("HeartbeatInterval"))

    async def _heartbeat_once(self, cp: CentralCommands) -> None:
        try:
            await cp.call(call.Heartbeat(), suppress=False)
        except (asyncio.TimeoutError, OCPPError) as exc:
            log.info("ocpp.heartbeat_unanswered", error=type(exc).__name__)

    async def _deliver(self, cp: CentralCommands, item: Queued) -> None:
        result = await self.messages.deliver(cp, item)
        if result is not None:
            self.charger.delivered(item)
        if result is not None and item.action in ("StartTransaction", "StopTransaction"):
            await self._transaction_answered(item, result)

    async def _transaction_answered(self, item: Queued, result: Any) -> None:
        if result.id_tag_info is None:
            return
        info = id_tag_info(result.id_tag_info)
        tag = item.payload.get("idTag")
        if tag:
            self.auth.remember(tag, info)
        running = self.state.sessions().get(item.connector or 0)
        if (item.action == "StartTransaction" and info["status"] != "Accepted" and running
                and running["session"] == item.session and self.keys.bool("StopTransactionOnInvalidId")):
            log.info("ocpp.transaction_deauthorized", connector=item.connector, status=info["status"])
            self.messages.stop_reasons[item.connector or 0] = "DeAuthorized"
            await self.charger.remote_stop(item.connector or 0, "deauthorized")

    async def _authorize(self, tag: str) -> Info | None:
        """Authorize at the CSMS: its idTagInfo, None when unanswered."""
        cp = self.cp
        if cp is None:
            return None
        try:
            async with asyncio.timeout(self.settings.authorize_timeout_s):
                result = await cp.call(call.Authorize(id_tag=tag), suppress=False)
        except Exception as exc:  # noqa: BLE001 - unanswered, refused, a closed socket: offline
            log.info("ocpp.authorize_unanswered", error=type(exc).__name__)
            return None
        return id_tag_info(result.id_tag_info)

    # -- what the charger's events start -------------------------------------------------------
    def _session_started(self, connector: int, session: str) -> None:
        self.profiles.session_started(connector, self.state.sessions().get(connector, {}).get("id_tag"))
        self.retime.set()

    def _session_stopped(self, connector: int, session: str) -> None:
        self.profiles.session_stopped(session)
        self.retime.set()
        self.session_ended.set()

    # -- the Station the handlers see ----------------------------------------------------------
    def free_connector(self) -> int | None:
        statuses = self.state.statuses()
        for connector in self.charger.connectors:
            if statuses.get(connector, ("Available",))[0] in ("Available", "Preparing"):
                return connector
        return None

    def connector_of(self, transaction_id: int) -> int | None:
        session = self.state.session_of(transaction_id)
        for connector, running in self.state.sessions().items():
            if running["session"] == session:
                return connector
        return None

    def running(self, connector: int) -> bool:
        return connector in self.state.sessions()

    def stop_reason(self, connector: int, reason: str) -> None:
        self.messages.stop_reasons[connector] = reason

    def reserved(self, reservation_id: int, connector: int | None, id_tag: str) -> None:
        if connector is None:
            self.messages.reservations.pop(reservation_id, None)
        else:
            self.messages.reservations[reservation_id] = {"connector": connector, "id_tag": id_tag}

    def start_authorized(self, connector: int, id_tag: str) -> None:
        waiting = self.profiles.pending.get(connector)  # this remote start's TxProfile, if it brought one

        async def start() -> None:
            if not await self.charger.start_authorized(self.authorizer, connector, id_tag) and waiting is not None:
                self.profiles.remote_start_over(connector, waiting)
        self.spawn(start())

    async def reset(self, kind: str) -> None:
        """Soft: end the sessions and reconnect (a new boot). Hard: end them, then exit."""
        reason = "HardReset" if kind == "Hard" else "SoftReset"
        for connector in list(self.state.sessions()):
            self.messages.stop_reasons[connector] = reason
            await self.charger.remote_stop(connector, "other")
        deadline = asyncio.get_running_loop().time() + RESET_WAIT_S
        while self.state.sessions():  # until their StopTransactions are queued
            self.session_ended.clear()
            if not await wait_event(self.session_ended, deadline - asyncio.get_running_loop().time()):
                break
        if self.booted:  # finish the exchange: a Stop sent but unanswered would be sent again after the boot
            await self.sender.drained(tx_only=True, timeout_s=max(0.0, deadline - asyncio.get_running_loop().time()))
        log.warning("ocpp.reset", type=kind)
        if kind == "Hard":  # the whole charger restarts: the daemon, through its service manager
            await self.charger.restart()
            self._hard.set()
            return
        self._reconnect.set()

    async def trigger(self, message: str, connector: int | None) -> None:
        cp = self.cp
        if message == "BootNotification":
            self.boot_now.set()
            if self.booted and cp is not None:
                status, interval = await self._boot_once(cp)
                if status == "Accepted":
                    self._boot_accepted(interval)
        elif message == "Heartbeat" and self.booted and cp is not None:
            await self._heartbeat_once(cp)
        elif message == "DiagnosticsStatusNotification":
            await self._diagnostics_status(self.diagnostics.status)
        elif message == "FirmwareStatusNotification":
            await self._firmware_status(self.firmware.status)
        elif message == "MeterValues":  # the newest sample of a transaction, else what the meter reads now
            readings = await self.charger.readings()
            for c in ([connector] if connector else self.charger.connectors):
                sample = self.messages.samples.get(c) if self.running(c) else None
                self.messages.meter_values(c, "Trigger", sample or readings.get(c) or Reading(None))
        elif message == "StatusNotification":
            statuses = self.state.statuses()
            for c in ([connector] if connector is not None else [0, *self.charger.connectors]):
                status, error, info = statuses.get(c, ("Available", "NoError", None))
                self.state.enqueue("StatusNotification", self.messages.status_payload(c, status, error, info),
                                   connector=c, tx=False)
        self.sender.wake.set()

    async def sign_certificate(self) -> None:
        """ExtendedTriggerMessage SignChargePointCertificate: a new key and its signing request; the
        CSMS answers with CertificateSigned (the security whitepaper, as 2.0.1's A02)."""
        if self.cp is None or not self.booted:
            return
        await self._notify(call.SignCertificate(csr=self.certificates.request(self.settings.vendor)))

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

    def keys_changed(self, key: str) -> None:
        self.retime.set()
        self.rebeat.set()

    # -- transfers ----------------------------------------------------------------------------
    async def _notify(self, request: Any) -> None:
        cp = self.cp
        if cp is None or not self.booted:
            return
        try:
            await cp.call(request, suppress=False)
        except (asyncio.TimeoutError, OCPPError) as exc:
            log.info("ocpp.notification_unanswered", action=type(request).__name__, error=type(exc).__name__)

    async def _diagnostics_status(self, status: str) -> None:
        await self._notify(call.DiagnosticsStatusNotification(status=status))

    async def _firmware_status(self, status: str) -> None:
        await self._notify(call.FirmwareStatusNotification(status=status))

    def _firmware_outcome(self, result: str) -> None:
        self.state.enqueue("FirmwareStatusNotification", {"status": result}, tx=False)

    async def _diagnostics_body(self) -> dict[str, Any]:
        """What an operator needs to look into a problem; no secrets (the password is not in it)."""
        known, _ = self.keys.get(None)
        daemon = await self.charger.status()
        return {"uplink": self.status().to_wire(), "daemon": daemon.to_wire() if daemon else None,
                "configuration": known,
                "queued": [{"action": q.action, "attempts": q.attempts} for q in self.state.queued()]}

    def status(self) -> p.ServiceState:
        """What `evsed status` may show of the uplink (no secrets)."""
        return p.ServiceState(connected=self.cp is not None, booted=self.booted, queued=self.state.count("queue"),
                              dropped=self.sender.dropped, malformed=self.cp.malformed if self.cp else 0,
                              limits_a={str(c): a for c, a in self.limits.sent.items()})
