"""The OCPP 2.0.1 charging station: the core's connection, queue, authorization, charging limits,
transfers and certificates, put together with the 2.0.1 device model, messages and handlers."""

from __future__ import annotations

import asyncio
import os
import random
import ssl
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Coroutine

import structlog
from ocpp.charge_point import snake_to_camel_case
from ocpp.exceptions import OCPPError
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from evsed import protocol as p
from evsed.uplink.aio import first_of
from evsed.uplink.auth import Authorizer, AuthStore, Info
from evsed.uplink.certificates import Certificates
from evsed.uplink.charger import Charger, DaemonLink
from evsed.uplink.connection import Connection, HardReset, Reconnect, boot, heartbeat
from evsed.uplink.limits import ChargingLimits
from evsed.uplink.metering import meter_clock
from evsed.uplink.queue import Sender
from evsed.uplink.settings import Settings
from evsed.uplink.state import Queued, State
from evsed.uplink.times import iso
from evsed.uplink.v201 import notify, transactions
from evsed.uplink.v201.device_model import DeviceModel, pages
from evsed.uplink.v201.handlers import CentralCommands, Payload, Ports, info_of
from evsed.uplink.v201.messages import Messages, request
from evsed.uplink.v201.profiles import Profiles
from evsed.uplink.v201.transfers import Transfers
from evsed.uplink.v201.views import AuthVariables, LiveValues
from evsed.uplink.v201.variables import Station, Variable, variables

log = structlog.get_logger("evsed.uplink")
SUBPROTOCOL = "ocpp2.0.1"
ID_TOKEN_LEN = 36
# BootReasonEnumType for how the previous run ended: "rebooted due to an application error" for a
# stop on a fatal error, "an elapsed watchdog timer" for a process killed while the machine stayed
# up (the systemd watchdog, or a kill -9 that looks the same), a power cut or a hard reset PowerUp.
BOOT_REASONS: dict[str, str] = {"clean": "PowerUp", "error": "ApplicationReset", "killed": "Watchdog", "power_loss": "PowerUp"}
OWN_STOPS: dict[str, p.LastStop] = {"": "clean", "error": "error"}  # v201.running as close() left it


class Uplink:
    def __init__(self, settings: Settings, link: DaemonLink, *, clock: Callable[[], float] = time.time,
                 rng: Callable[[], float] = random.random, auth_timeout_s: float = 60.0,
                 new_id: Callable[[], str] = lambda: str(uuid.uuid4())):
        self.settings, self.clock = settings, clock
        self.password = settings.password
        self.state = state = State(settings.state_file)
        if state.claim("2.0.1"):
            log.warning("ocpp.queue_of_another_version_dropped")
        self.charger = charger = Charger(link, state, phases=settings.phases, voltage_v=settings.voltage_v)
        station = Station(settings.identity, settings.vendor, settings.model, tuple(charger.connectors), charger.phases,
                          settings.max_current_a, charger.voltage_v, settings.security_profile, settings.heartbeat_s,
                          settings.call_timeout_s, auth_timeout_s, settings.reconnect_min_s)
        self.certificates = Certificates(settings.state_file.parent / "ocpp-certs", settings.identity)
        live = LiveValues(state, clock, charger.connectors, self.certificates)
        self.model = model = DeviceModel(variables(station), {**settings.keys, **state.keys()}, state.set_key,
                                         live, self._secret)
        self.sender = Sender(state, clock, lambda: model.int("OCPPCommCtrlr", "MessageAttempts", "TransactionEvent"),
                             lambda: model.int("OCPPCommCtrlr", "MessageAttemptInterval", "TransactionEvent"))
        self.messages = Messages(state, model, clock, charger.connectors, lambda: self.booted, new_id)
        self.messages.on_started, self.messages.on_stopped = self._session_started, self._session_stopped
        self.messages.on_remote_over = self._remote_over
        live.messages = self.messages
        policy = AuthVariables(model)
        self.auth = AuthStore(state, policy)
        self.authorizer = Authorizer(self.auth, policy, clock, self._may_authorize, self._authorize, ID_TOKEN_LEN)
        self.limits = ChargingLimits(state, clock, charger.connectors, phases=charger.phases,
                                     voltage_v=charger.voltage_v, max_current_a=settings.max_current_a,
                                     send_limit=charger.limit)
        self.profiles = Profiles(self.limits, model, lambda evse: self.messages.open_transactions().get(evse))
        self.transfers = Transfers(settings, state, clock, notify=self._notify, security_event=self.security_event,
                                   collect=self._diagnostics_body, queued=self.sender.wake.set, spawn=self.spawn)
        self.firmware = self.transfers.firmware
        self.connection = Connection(settings, SUBPROTOCOL, password=lambda: self.password,
                                     ping_interval_s=lambda: model.int("OCPPCommCtrlr", "WebSocketPingInterval"),
                                     rng=rng, tls=lambda: self.certificates.tls(
                                         settings.ca_file, settings.cert_file, settings.key_file,
                                         settings.security_profile == 3), refused=self._refused)
        self.ports = Ports(charger, self, model, self.auth, self.profiles, self.certificates)
        self.cp: CentralCommands | None = None
        self.booted = False                          # BootNotification Accepted on this connection
        self._registration = ""                      # the last BootNotification status on this connection
        self.retime = asyncio.Event()                # meter value intervals or transactions changed
        self.rebeat = asyncio.Event()                # HeartbeatInterval changed
        self.boot_now = asyncio.Event()
        self.idle = asyncio.Event()                  # a transaction ended (a Reset OnIdle waits for it)
        self._reconnect = asyncio.Event()            # a new connection, a new boot
        self._tasks: set[asyncio.Task[Any]] = set()
        self._hard = asyncio.Event()
        self._new_password = False                   # BasicAuthPassword set: reconnect after the answer
        self._triggered = False                      # a TriggerMessage asked for the next boot
        self.costs: dict[int, float] = {}            # evse -> the CSMS's last CostUpdated of its transaction
        # how this service's own last run ended: a marker close() never cleared is a kill
        self._own_last_stop: p.LastStop = OWN_STOPS.get(state.meta("v201.running"), "killed")
        self._failed = False                         # run() ended on an error: close() says so
        with state.transaction():
            state.set_meta("v201.running", "running")
        if not state.meta("v201.started"):
            with state.transaction():
                state.set_meta("v201.started", iso(clock()))
                state.enqueue("SecurityEventNotification", notify.security_event(
                    "StartupOfTheDevice", iso(clock())), tx=False)

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        with self.state.transaction():
            self.state.set_meta("v201.running", "error" if self._failed else "")
        self.state.close()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def run(self) -> None:
        """Until cancelled; raises HardReset after a Reset the whole charger takes."""
        model = self.model
        try:
            await first_of(
                self.charger.follow(self.messages, self._queued),
                self.charger.serve_authorizer("ocpp", self.settings.authorize_timeout_s + 1, self.authorizer),
                meter_clock(self.clock, lambda: self.messages.open_transactions(), self.charger.connectors,
                            sampled_s=lambda: model.int("SampledDataCtrlr", "TxUpdatedInterval")
                            if model.bool("SampledDataCtrlr", "Enabled") else 0,
                            aligned_s=lambda: model.int("AlignedDataCtrlr", "Interval")
                            if model.bool("AlignedDataCtrlr", "Enabled") else 0, emit=self.messages.meter_values,
                            changed=self.retime, queued=self.sender.wake.set),
                self.limits.run(), self.charger.report(self.status), self.charger.report_delivered(),
                self.firmware.watch(),
                self.connection.run(self._online), self._hard.wait())
        except Exception:  # the service dies on it and the daemon starts it again
            self._failed = True
            raise
        if self._hard.is_set():
            raise HardReset()

    def _refused(self, exc: BaseException) -> None:
        """A connection that failed its TLS check or its basic auth is a security event (A00)."""
        if isinstance(exc, ssl.SSLCertVerificationError):
            self.security_event("InvalidCsmsCertificate", str(exc)[:255])
        elif isinstance(exc, InvalidStatus) and exc.response.status_code == 401:
            self.security_event("FailedToAuthenticateAtCsms", "HTTP 401")

    def _queued(self) -> None:
        self.sender.wake.set()
        self.retime.set()

    # -- one connection -------------------------------------------------------------------------
    async def _online(self, ws: ClientConnection) -> None:
        cp = CentralCommands(self.settings.identity, ws, self.ports, response_timeout=self.settings.call_timeout_s,
                             on_garbage=lambda why: self.security_event("InvalidMessages", why))
        self.cp = cp
        self._reconnect.clear()
        try:
            await first_of(cp.start(), self._booted(cp), self._until_reconnect())
        finally:
            self.cp, self.booted, self._registration = None, False, ""

    async def _until_reconnect(self) -> None:
        await self._reconnect.wait()
        raise Reconnect()

    async def _booted(self, cp: CentralCommands) -> None:
        interval = await boot(lambda: self._boot_once(cp), self.settings.heartbeat_s, self.boot_now)
        self._boot_accepted(interval)
        self.booted = True
        with self.state.transaction():  # every connector's status after the boot (B01.FR.05)
            for evse, payload in zip(self.charger.connectors, self.messages.statuses()):
                self.state.enqueue("StatusNotification", payload, connector=evse, tx=False)
            self.state.collapse_status()
        self.sender.wake.set()
        await first_of(heartbeat(lambda: self.model.int("OCPPCommCtrlr", "HeartbeatInterval"), self.rebeat,
                                 lambda: self._heartbeat_once(cp)),
                       self.sender.run(lambda item: self._deliver(cp, item)))

    async def _heartbeat_once(self, cp: CentralCommands) -> None:
        await self._call_once(cp, "Heartbeat", {})

    def _boot_reason(self) -> str:
        """FirmwareUpdate on the first boot after an update was requested, the reason a Reset left;
        then, once per run of the daemon, how its previous run ended; once per run of this service,
        how its own previous run ended (the daemon restarts a service that died); else PowerUp."""
        requested = self.state.meta("firmware_requested")
        if requested and requested != self.state.meta("v201.booted_after"):
            return "FirmwareUpdate"
        if reset := self.state.meta("v201.boot_reason"):
            return reset
        hello = self.charger.link.hello
        if hello.started_at and hello.started_at != self.state.meta("v201.booted_run"):
            return BOOT_REASONS[hello.last_stop]
        return BOOT_REASONS[self._own_last_stop]

    async def _boot_once(self, cp: CentralCommands) -> tuple[str, int]:
        s = self.settings
        station: Payload = {"model": s.model, "vendorName": s.vendor}
        if s.serial_number:
            station["serialNumber"] = s.serial_number[:25]
        if s.firmware_version:
            station["firmwareVersion"] = s.firmware_version[:50]
        reason = "Triggered" if self._triggered else self._boot_reason()
        self._triggered = False
        answer = await self._call_once(cp, "BootNotification", {"chargingStation": station, "reason": reason})
        if answer is None:
            return "Unanswered", 0
        self._registration = str(answer.get("status"))
        return self._registration, int(answer.get("interval") or 0)

    def _boot_accepted(self, interval: int) -> None:
        if interval > 0:
            self.model.set([{"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"},
                             "attributeValue": str(interval)}])
        with self.state.transaction():
            self.state.set_meta("v201.boot_reason", "")
            self.state.set_meta("v201.booted_after", self.state.meta("firmware_requested"))
            self.state.set_meta("v201.booted_run", self.charger.link.hello.started_at)
        self._own_last_stop = "clean"
        log.info("ocpp.boot_accepted", heartbeat_s=self.model.int("OCPPCommCtrlr", "HeartbeatInterval"))

    async def _call_once(self, cp: CentralCommands, action: str, payload: Payload) -> Payload | None:
        """One message outside the queue: its answer (camelCase), None when unanswered or refused."""
        try:
            result = await cp.call(request(action, payload), suppress=False)
        except (asyncio.TimeoutError, OCPPError) as exc:
            log.info("ocpp.call_unanswered", action=action, error=type(exc).__name__)
            return None
        answer: Payload = snake_to_camel_case({k: v for k, v in vars(result).items() if v is not None})
        return answer

    async def _deliver(self, cp: CentralCommands, item: Queued) -> None:
        answer = await self.messages.deliver(cp, item)
        self.charger.delivered(item)
        if item.action == "TransactionEvent" and answer.get("idTokenInfo"):
            await self._transaction_answered(item, answer["idTokenInfo"])

    async def _transaction_answered(self, item: Queued, token_info: Payload) -> None:
        info = info_of(token_info)
        token = (item.payload.get("idToken") or {}).get("idToken")
        if token:
            self.auth.remember(token, info)
        evse = item.connector or 0
        tx = self.messages.evse(evse).tx
        if (info.get("status") != "Accepted" and tx is not None
                and tx.transaction_id == item.payload["transactionInfo"]["transactionId"]
                and self.model.bool("TxCtrlr", "StopTxOnInvalidId") and self.authorized(evse)):
            log.info("ocpp.transaction_deauthorized", evse=evse, status=info.get("status"))
            await self.charger.remote_stop(evse, "deauthorized")

    def _may_authorize(self) -> bool:
        return self.cp is not None and self.booted and not self.model.bool("AuthCtrlr", "DisableRemoteAuthorization")

    async def _authorize(self, tag: str) -> Info | None:
        """Authorize at the CSMS: the token's info, None when unanswered."""
        cp = self.cp
        if cp is None:
            return None
        kind = self.messages.id_types.get(tag) or transactions.token_type(tag, "")
        try:
            async with asyncio.timeout(self.settings.authorize_timeout_s):
                answer = await self._call_once(cp, "Authorize", {"idToken": {"idToken": tag, "type": kind}})
        except TimeoutError:
            return None
        return info_of(answer.get("idTokenInfo")) if answer else None

    # -- what the charger's events start ------------------------------------------------------------
    def _session_started(self, evse: int, session: str) -> None:
        self.profiles.session_started(evse)
        self.retime.set()

    def _remote_over(self, evse: int) -> None:
        """A RequestStartTransaction's authorization ended unused: its TxProfile goes with it."""
        self.profiles.pending.pop(evse, None)

    def _session_stopped(self, evse: int, session: str) -> None:
        self.profiles.session_stopped(session)
        self.costs.pop(evse, None)
        self.retime.set()
        self.idle.set()

    # -- the Station the handlers see -----------------------------------------------------------------
    def registration(self) -> str:
        """The CSMS's answer to the last BootNotification on this connection ("" before one)."""
        return self._registration

    def free_evse(self) -> int | None:
        for evse in self.charger.connectors:
            if self.messages.evse(evse).status in ("Available", "Preparing") and not self.authorized(evse):
                return evse
        return None

    def transactions(self) -> dict[int, str]:
        return self.messages.open_transactions()

    def authorized(self, evse: int) -> bool:
        return self.messages.evse(evse).authorized

    def remote_start(self, evse: int, remote_start_id: int, id_token: Payload, profile: Payload | None) -> None:
        """A RequestStartTransaction going to the daemon: its id and TxProfile wait for its transaction."""
        self.messages.remote_start(evse, remote_start_id, id_token)
        if profile is not None:
            self.profiles.pending[evse] = profile

    def remote_start_over(self, evse: int, remote_start_id: int) -> None:
        """That RequestStartTransaction will not start (the daemon refused it, its token is not
        authorized): neither its id nor its TxProfile waits for the EVSE's next transaction."""
        if self.messages.remote_start_over(evse, remote_start_id):
            self._remote_over(evse)

    def start_authorized(self, evse: int, remote_start_id: int, id_token: Payload) -> None:
        async def start() -> None:
            if not await self.charger.start_authorized(self.authorizer, evse, id_token["idToken"]):
                self.remote_start_over(evse, remote_start_id)
        self.spawn(start())

    def stop_reason(self, evse: int, reason: str) -> None:
        self.messages.stop_reasons[evse] = reason

    def reserved(self, reservation_id: int, evse: int | None, id_token: str | None) -> None:
        if id_token is None:
            self.messages.reservations.pop(reservation_id, None)
        else:
            self.messages.reservations[reservation_id] = {"evse": evse, "id_token": id_token}

    def cost_updated(self, transaction_id: str, total_cost: float) -> None:
        """CostUpdated: the running cost the CSMS computes, in the uplink's status for the
        daemon (`evsed status`, the web page) while its transaction runs."""
        for evse, tid in self.transactions().items():
            if tid == transaction_id:
                self.costs[evse] = total_cost

    def queued_for(self, transaction_id: str | None) -> bool:
        return any(q.action == "TransactionEvent" and (
            transaction_id is None or q.payload["transactionInfo"]["transactionId"] == transaction_id)
            for q in self.state.queued())

    async def reset(self, on_idle: bool) -> None:
        """The whole charger restarts (the daemon, through its service manager, and this service):
        Immediate ends the transactions first (stoppedReason ImmediateReset); OnIdle waits for them."""
        while on_idle and self.transactions():
            self.idle.clear()
            await self.idle.wait()
        for evse in list(self.transactions()):
            self.messages.stop_reasons[evse] = "reset"
            await self.charger.remote_stop(evse, "other")
        deadline = self.clock() + 10
        while self.transactions() and self.clock() < deadline:  # their Ended get queued
            await asyncio.sleep(0.05)
        await self.sender.drained(tx_only=True, timeout_s=10)  # finish the exchange, then reset
        with self.state.transaction():
            self.state.set_meta("v201.boot_reason", "ScheduledReset" if on_idle else "RemoteReset")
            self.state.enqueue("SecurityEventNotification", notify.security_event(
                "ResetOrReboot", iso(self.clock()), "Reset OnIdle" if on_idle else "Reset Immediate"), tx=False)
        self.sender.wake.set()
        await self.sender.drained(tx_only=False, timeout_s=5)
        log.warning("ocpp.reset", on_idle=on_idle)
        await self.charger.restart()
        self._hard.set()

    async def trigger(self, message: str, evse: int | None) -> None:
        cp = self.cp
        if message == "BootNotification":  # only before the boot is accepted (F06.FR.17)
            self._triggered = True  # the boot it starts says Triggered
            self.boot_now.set()
        elif message == "Heartbeat" and cp is not None:  # also while Pending (B02.FR.02)
            await self._call_once(cp, "Heartbeat", {})
        elif message == "LogStatusNotification":
            await self.transfers.log_status(self.transfers.diagnostics.status)
        elif message == "FirmwareStatusNotification":
            await self.transfers.firmware_status(self.firmware.status)
        elif message == "MeterValues":
            readings = await self._readings()
            for e in ([evse] if evse else self.charger.connectors):
                self.messages.meter_values(e, "Trigger", readings.get(e))
        elif message == "TransactionEvent":
            for e in ([evse] if evse else self.charger.connectors):
                if self.messages.evse(e).tx is not None:
                    self.messages.meter_values(e, "Trigger", always=True)
        elif message == "StatusNotification":
            with self.state.transaction():
                for e, payload in zip(self.charger.connectors, self.messages.statuses()):
                    if evse in (None, e):
                        self.state.enqueue("StatusNotification", payload, connector=e, tx=False)
        elif message == "SignChargingStationCertificate":
            await self.sign_certificate()
        self.sender.wake.set()

    async def _readings(self) -> dict[int, dict[str, Any]]:
        """Each connector's last meter reading from the daemon's status, in a sample's form."""
        status = await self.charger.status()
        return {conn.id: {"energy_wh": conn.measured.energy_wh, "power_w": conn.measured.power_w,
                          "current_a": list(conn.measured.current_a), "offered_a": conn.offered_a}
                for conn in (status.connectors if status is not None else ()) if conn.measured is not None}

    async def sign_certificate(self) -> None:
        """A new key and its signing request (A02): the CSMS answers with CertificateSigned."""
        cp = self.cp
        if cp is None or not self.booted:
            return
        csr = self.certificates.request(self.model.text("SecurityCtrlr", "OrganizationName"))
        await self._call_once(cp, "SignCertificate", {"csr": csr, "certificateType": "ChargingStationCertificate"})

    async def report(self, request_id: int, data: list[Payload]) -> None:
        """NotifyReport pages (B07, B08): ItemsPerMessage each, seqNo from 0, tbc on all but the last."""
        cp = self.cp
        if cp is None:
            return
        at = iso(self.clock())
        per_page = self.model.int("DeviceDataCtrlr", "ItemsPerMessage", "GetReport")
        for seq_no, (chunk, tbc) in enumerate(pages(data, per_page)):
            payload: Payload = {"requestId": request_id, "generatedAt": at, "seqNo": seq_no, "tbc": tbc}
            if chunk:
                payload["reportData"] = chunk
            await self._call_once(cp, "NotifyReport", payload)

    async def report_profiles(self, request_id: int, found: list[tuple[int, Payload]]) -> None:
        cp = self.cp
        if cp is None:
            return
        by_evse: dict[int, list[Payload]] = {}
        for evse, profile in found:
            by_evse.setdefault(evse, []).append(profile)
        for n, (evse, profiles) in enumerate(sorted(by_evse.items())):
            await self._call_once(cp, "ReportChargingProfiles", {
                "requestId": request_id, "chargingLimitSource": "CSO", "evseId": evse,
                "chargingProfile": profiles, "tbc": n < len(by_evse) - 1})

    def variables_changed(self, names: list[str]) -> None:
        self.retime.set()
        self.rebeat.set()

    def security_event(self, kind: str, info: str = "") -> None:
        """Queue a SecurityEventNotification; one of a kind still waiting is enough (a CSMS that
        refuses every reconnect does not fill the queue)."""
        if any(q.action == "SecurityEventNotification" and q.payload.get("type") == kind
               for q in self.state.queued()):
            return
        self.state.enqueue("SecurityEventNotification", notify.security_event(kind, iso(self.clock()), info),
                           tx=False)
        self.sender.wake.set()

    # -- the password ------------------------------------------------------------------------------------
    def _secret(self, v: Variable, value: str) -> bool:
        return v.name == "BasicAuthPassword" and self.set_password(value)

    def set_password(self, value: str) -> bool:
        """SetVariables BasicAuthPassword: the new password goes to password_file (0600); the
        next connection uses it (A01)."""
        path = self.settings.password_file
        if path is None:
            return False
        tmp = Path(f"{path}.new")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(value + "\n")
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("ocpp.password_not_written", error=type(exc).__name__)
            return False
        self.password = value
        log.info("ocpp.password_changed")  # never the value
        self.security_event("ReconfigurationOfSecurityParameters", "BasicAuthPassword")
        self._new_password = True
        return True

    def variables_answered(self) -> None:
        """After a SetVariables answer is sent: a new password takes effect on a new connection (A01)."""
        if self._new_password:
            self._new_password = False
            self._reconnect.set()

    # -- transfers ---------------------------------------------------------------------------------------
    def get_log(self, request_id: int, location: str, retries: int, interval_s: int) -> str:
        return self.transfers.get_log(request_id, location, retries, interval_s)

    def update_firmware(self, request_id: int, firmware: Payload, retries: int, interval_s: int) -> str:
        return self.transfers.update_firmware(request_id, firmware, retries, interval_s)

    async def _notify(self, action: str, payload: Payload) -> None:
        cp = self.cp
        if cp is not None and self.booted:
            await self._call_once(cp, action, payload)

    async def _diagnostics_body(self) -> dict[str, Any]:
        """What an operator needs to look into a problem; no secrets (the password is not in it)."""
        daemon = await self.charger.status()
        return {"uplink": self.status().to_wire(), "daemon": daemon.to_wire() if daemon else None,
                "variables": self.model.base_report("FullInventory"),
                "queued": [{"action": q.action, "attempts": q.attempts} for q in self.state.queued()]}

    def status(self) -> p.ServiceState:
        """What `evsed status` may show of the uplink (no secrets)."""
        return p.ServiceState(connected=self.cp is not None, booted=self.booted, queued=self.state.count("queue"),
                              dropped=self.sender.dropped, malformed=self.cp.malformed if self.cp else 0,
                              limits_a={str(c): a for c, a in self.limits.sent.items()}, detail="OCPP 2.0.1",
                              costs={str(evse): cost for evse, cost in self.costs.items()})
