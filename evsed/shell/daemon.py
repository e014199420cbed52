"""The asyncio safety daemon: builds the charger from the config, polls its inputs, runs the
control socket and the service processes.

It turns hardware input into core events through the Charger and never decides policy;
every exit path (signal, error, crash) opens the contactors. It listens on no network socket:
the services that face the network are child processes on the control socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import math
import os
import signal
import time
from pathlib import Path
from typing import Any, Callable, Coroutine

import structlog

import evsed
from evsed import dirs
from evsed import protocol as p
from evsed.config import Config
from evsed.control.client import socket_path
from evsed.control.server import ControlServer
from evsed.core.pilot import PilotState
from evsed.errors import StartError
from evsed.shell import availability, commands, last_stop, safety_loop
from evsed.shell.bus import utc_iso_ms
from evsed.shell.charger import Charger
from evsed.shell.connector import ConnectorControl
from evsed.shell.devices import Devices, build
from evsed.shell.devices import create as devices_create
from evsed.shell.host import EXIT_RESTART, ControlHost
from evsed.shell.planfile import DiskFile
from evsed.shell.policy import kernel_clock_synced
from evsed.shell.services import Services
from evsed.shell.timers import WallTimers
from evsed.store import ocmf, outbox
from evsed.store.sessions import Store, StoreWriter, utc_iso
from hal import Closable, DeviceUnavailable, HalError, IdentifiedMeter, Meter, MeterIdentity, Notifying

log = structlog.get_logger("evsed")
OUTBOX_RETENTION = dt.timedelta(days=7)
SIM_METERS = "simulator-meters.json"  # the simulated meters' counters, kept across restarts as a meter keeps them
READER_RETRY_S = (1.0, 10.0)  # first and longest wait before opening a vanished card reader again


class StateLock:
    """An exclusive flock on the state directory: one daemon per state directory."""

    def __init__(self, state_dir: Path):
        self.path = state_dir / "evsed.lock"
        self.fd: int | None = None

    def acquire(self) -> None:
        try:  # 0750 whatever the umask; refused when another user could tamper with it
            dirs.ensure_dir(self.path.parent, dirs.STATE_DIR_MODE)
            dirs.ensure_services_dir(self.path.parent)
        except dirs.DirectoryError as exc:
            raise StartError(f"state directory: {exc}") from None
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StartError(f"another evsed (pid {holder}) is running on {self.path.parent}") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _wallclock() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Daemon:
    def __init__(self, config: Config, *, start_services: bool = True):
        self.config = config
        self.lock = StateLock(config.store.state_dir)
        self.stopping = asyncio.Event()
        self.charger: Charger | None = None
        self.devices: Devices | None = None
        self.writer: StoreWriter | None = None
        self.host = ControlHost(config, _wallclock, self._restart)
        self.services = Services(config) if start_services else None
        if self.services is not None:
            self.services.hand_out = self.host.server.hand_out
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._meter_wanted: dict[int, asyncio.Event] = {}  # connector -> read its meter now, not at the interval
        self._tasks: list[asyncio.Task[Any]] = []
        self.fatal: BaseException | None = None
        self.restart = False  # asked to restart: exit EXIT_RESTART so that systemd starts us again
        self.ready = asyncio.Event()
        self._marked = False  # this run's marker written: stop() says how it ended

    @property
    def server(self) -> ControlServer:
        return self.host.server

    def _restart(self) -> None:
        """Asked to restart (an OCPP hard reset): stop, and exit EXIT_RESTART for the service manager."""
        self.restart = True
        asyncio.get_running_loop().call_soon(self.stopping.set)

    @property
    def connectors(self) -> dict[int, ConnectorControl]:
        return self.charger.connectors if self.charger else {}

    @property
    def world(self) -> Any:
        return self.devices.world if self.devices else None

    # --- start ------------------------------------------------------------------------------
    async def start(self) -> None:
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        self.lock.acquire()
        self.host.started_at = utc_iso_ms(_wallclock())
        self.host.last_stop = last_stop.begin(self.config.store.state_dir, self.host.started_at)
        self._marked = True
        if self.host.last_stop != "clean":
            log.warning("daemon.last_stop_unclean", last_stop=self.host.last_stop)
        db_path = self.config.store.state_dir / "sessions.db"
        store = Store(db_path, signer=ocmf.LazySigner(self.config.store.state_dir), charger_id=self.config.charger.id,
                      timezone=self.config.charger.timezone, version=evsed.__version__,
                      clock_synced=kernel_clock_synced)
        now = utc_iso_ms(_wallclock())
        recovered = store.recover(lambda row: self._recovered_event(store, row, now))
        if recovered:
            log.warning("session.recovered", ids=recovered, stop_reason="power_loss")
        first_id = store.next_session_id()
        self.host.read_positions(store.db)
        self.writer = StoreWriter(store)
        self.devices = build(self.config, time.monotonic, self.config.store.state_dir / SIM_METERS)
        self.wall_timers = WallTimers(_wallclock, loop.time, loop.call_at)
        self.charger = charger = Charger(
            self.config, self.devices, clock=time.monotonic, wallclock=_wallclock, writer=self.writer,
            first_session_id=first_id, schedule=self._schedule, offload=self._offload,
            stored=lambda event: self.host.stored(loop, event), call_at=loop.call_at,
            read_meter_now=self._read_meter_now, on_loop=loop.call_soon_threadsafe,
            plan_file=DiskFile(self.config.store.state_dir / "plans.json"),
            inoperative=availability.load(self.config.store.state_dir), keep_availability=self._keep_availability)
        self.host.attach(db_path, self.writer, charger)
        charger.start()
        for ctrl in charger.connectors.values():
            for device in ctrl.devices.all():
                if isinstance(device, Notifying):
                    device.on_change(lambda c=ctrl: loop.call_soon_threadsafe(self._input_changed, c))
            self._spawn(self._poll_pilot(ctrl), f"pilot-{ctrl.id}")
            if ctrl.meter is not None:
                self._spawn(self._poll_meter(ctrl.meter, ctrl.meter_sampled, ctrl.meter_failed, ctrl.id,
                                             ctrl.meter_identified), f"meter-{ctrl.id}")
        if self.devices.site_meter is not None:
            self._spawn(self._poll_meter(self.devices.site_meter, lambda reading, begun: charger.site_sampled(reading),
                                         lambda detail: None, 0), "site-meter")
        if isinstance(self.devices.site_input, Notifying):
            self.devices.site_input.on_change(lambda: loop.call_soon_threadsafe(charger.policy.poll))
        if self.devices.reader is not None:
            charger.reading_cards = True
            self._spawn(self._read_cards(), "cards")
        try:
            dirs.ensure_dir(self.config.store.runtime_dir, dirs.RUNTIME_DIR_MODE)
        except dirs.DirectoryError as exc:
            raise StartError(f"runtime directory: {exc}") from None
        await self.host.start()
        loop.set_exception_handler(self._loop_exception)
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        self._spawn(safety_loop.for_daemon(self).run(), "safety")  # heartbeat + systemd watchdog
        self._spawn(self._prune(), "prune")
        self._spawn(self._watch_clock(), "clock")
        if self.services is not None:
            self.services.start(self.stopping)
        self.ready.set()
        log.info("daemon.ready", connectors=list(charger.connectors), state_dir=str(self.config.store.state_dir),
                 socket=str(socket_path(self.config.store.runtime_dir)),
                 start_s=round(time.perf_counter() - started, 3))

    def _keep_availability(self, inoperative: frozenset[int]) -> None:
        """Written by the store's thread, after what is queued before it (never on the loop)."""
        assert self.writer is not None
        state_dir = self.config.store.state_dir
        self.writer.submit(lambda st: availability.save(state_dir, inoperative))

    @staticmethod
    def _recovered_event(store: Store, row: dict[str, Any], now: str) -> None:
        """A session a crash or power cut left open, closed as power_loss: the services hear of it."""
        event = p.SessionStopped(
            at=now, connector=row["connector_id"], session=row["id"], id_tag=row["id_tag"], card_name=row["card_name"],
            group=row["card_group"], auth_source=row["auth_source"], started_at=row["started_at"],
            meter_start_wh=row["meter_start_wh"], meter_stop_wh=row["meter_stop_wh"], energy_wh=row["energy_wh"],
            peak_power_w=row["peak_power_w"], reason="power_loss", stopped_at=row["stopped_at"])
        data = {k: v for k, v in event.to_wire().items() if k not in ("seq", "at", "type", "connector")}
        outbox.append(store.db, now, event.TYPE, event.connector, data)

    def _input_changed(self, ctrl: ConnectorControl) -> None:
        if not self.stopping.is_set():  # once stopping, the outputs are released and stay so
            ctrl.poll_inputs()

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or self.stopping.is_set():
            return
        self.fatal = task.exception() or RuntimeError(f"task {task.get_name()} ended")
        self.release_all()  # at once, before the orderly shutdown runs
        log.critical("daemon.task_failed", task=task.get_name(), error=repr(self.fatal))
        self.stopping.set()

    def _offload(self, work: Callable[[], Any], done: Callable[[Any], None]) -> None:
        """Run slow device work (an RCD self-test) in a worker; hand its result back on the loop."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, work)

        def finished(f: asyncio.Future[Any]) -> None:
            if f.cancelled() or self.stopping.is_set():
                return
            exc = f.exception()
            if exc is not None:  # a test that cannot run is a failed test: the core locks out
                log.error("device.offloaded_work_failed", error=repr(exc))
            done(False if exc is not None else f.result())
        future.add_done_callback(finished)

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """An exception escaped a callback (device callback, timer, offloaded result): the state
        of the outputs is unknown, so release everything and stop, as for a crashed task."""
        exc = context.get("exception")
        if exc is None:  # a message only (a slow callback, an unclosed transport)
            log.warning("daemon.loop_warning", message=context.get("message"))
            return
        if "socket" in context or "transport" in context or "protocol" in context:
            # the control socket's own trouble (out of file descriptors on accept, a client that
            # vanished): asyncio retries the accept; charging is not concerned
            log.warning("control.socket_error", message=context.get("message"), error=repr(exc))
            return
        if self.stopping.is_set():  # already released and stopping: do not release in a loop
            log.error("daemon.callback_failed_while_stopping", error=repr(exc))
            return
        self.fatal = exc
        self.release_all()
        log.critical("daemon.callback_failed", message=context.get("message"), error=repr(exc))
        self.stopping.set()

    def _schedule(self, connector_id: int, when: float | None) -> None:
        handle = self._timers.get(connector_id)
        if handle is not None:
            if when is not None and math.isclose(handle.when(), when):
                return
            handle.cancel()
            del self._timers[connector_id]
        if when is not None:
            loop = asyncio.get_running_loop()
            self._timers[connector_id] = loop.call_at(max(when, loop.time()), self._timer_due, connector_id)

    def _timer_due(self, connector_id: int) -> None:
        self._timers.pop(connector_id, None)
        if not self.stopping.is_set():
            self.connectors[connector_id].tick()

    # --- input loops ------------------------------------------------------------------------
    @property
    def live_config(self) -> Config:
        """The config in force: the reloaded one (evsed reload); the loops read their timing from
        it each round. self.config stays the one started with (directories, services)."""
        return self.charger.config if self.charger is not None else self.config

    @property
    def timing(self) -> Any:
        return self.live_config.timing

    def pilot_interval_s(self, ctrl: ConnectorControl) -> float:
        """Full rate while an EV is there; an empty connector idles (still under pilot_lost_s)."""
        timing, st = self.timing, ctrl.state
        busy = st.contactor_closed or st.session or st.pilot is not PilotState.A
        return timing.pilot_poll_s if busy else max(timing.pilot_poll_s, timing.pilot_lost_s / 2)

    async def _poll_pilot(self, ctrl: ConnectorControl) -> None:
        while not self.stopping.is_set():
            if ctrl.pilot_reads_instantly:
                ctrl.poll_inputs()
            else:  # an ADC burst: read in a worker so the loop stays free for safety events
                ctrl.poll_inputs(await asyncio.to_thread(ctrl.read_pilot))
            await asyncio.sleep(self.pilot_interval_s(ctrl))

    def _read_meter_now(self, connector: int) -> None:
        """A connector wants a reading at once (a stopped session's final one): its loop stops waiting."""
        self._meter_wanted.setdefault(connector, asyncio.Event()).set()

    async def _poll_meter(self, meter: Meter, sampled: Callable[[Any, float], None], failed: Callable[[str], None],
                          connector: int, identified: Callable[[MeterIdentity], None] | None = None) -> None:
        """Read every meter_interval_s, or at once when asked; sampled(reading, when its read began).
        identified(identity): the meter's, asked once after its first good reading (a meter that
        tells none, or is silent when asked, gives an empty one)."""
        failures = 0
        wanted = self._meter_wanted.setdefault(connector, asyncio.Event())
        while not self.stopping.is_set():
            interval = self.timing.meter_interval_s
            wanted.clear()  # a wish from here on is served by this read, or by the next one at once
            begun = time.monotonic()
            try:
                # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow the cancel of a stop
                async with asyncio.timeout(max(2.0, 2 * interval)):
                    reading = await meter.read()
            except (HalError, TimeoutError) as exc:
                if self.stopping.is_set():
                    return
                failures += 1
                if failures == 1 or failures % 60 == 0:
                    log.warning("meter.read_failed", connector=connector, error=str(exc) or type(exc).__name__,
                                failures=failures)
                failed(str(exc) or type(exc).__name__)
            else:
                if self.stopping.is_set():
                    return
                if failures:
                    log.info("meter.recovered", connector=connector, after_failures=failures)
                failures = 0
                sampled(reading, begun)
                if identified is not None:
                    identified(await self._identity(meter, max(2.0, 2 * interval)))
                    identified = None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await wanted.wait()

    @staticmethod
    async def _identity(meter: Meter, timeout_s: float) -> MeterIdentity:
        """What the meter tells of itself; its failure to tell is the identity's problem."""
        if not isinstance(meter, IdentifiedMeter):
            return MeterIdentity()
        try:
            async with asyncio.timeout(timeout_s):
                return await meter.identity()
        except (HalError, TimeoutError) as exc:
            return MeterIdentity(problem=str(exc) or type(exc).__name__)

    async def _read_cards(self) -> None:
        """Card taps to the charger. A reader that goes away (a USB adapter unplugged) is opened
        again until it is back; meanwhile charging goes on and status says the reader is missing."""
        assert self.devices is not None and self.devices.reader is not None and self.charger is not None
        while True:
            try:
                uid = await self.devices.reader.next_tap()
            except DeviceUnavailable as exc:
                self.charger.reader_error = str(exc)
                log.error("rfid.unavailable", error=str(exc))
                await self._reopen_reader()
                continue
            except HalError as exc:
                log.warning("rfid.read_failed", error=str(exc))
                continue
            self.charger.present_card(uid)

    async def _reopen_reader(self) -> None:
        assert self.devices is not None and self.charger is not None and self.config.rfid is not None
        old = self.devices.reader
        if isinstance(old, Closable):
            with contextlib.suppress(HalError, OSError):
                old.release()
        delay = READER_RETRY_S[0]
        while True:
            await asyncio.sleep(delay)
            try:
                self.devices.reader = devices_create("rfid", self.config.rfid, 0, self.devices.shared())
            except (DeviceUnavailable, OSError) as exc:
                self.charger.reader_error = str(exc)
                delay = min(delay * 2, READER_RETRY_S[1])
                continue
            self.charger.reader_error = ""
            log.info("rfid.reopened")
            return

    async def _watch_clock(self) -> None:
        """Wall-clock deadlines (windows, tariffs) are re-armed when NTP steps the clock."""
        while True:
            await asyncio.sleep(1.0)
            self.wall_timers.check_clock()
            if self.charger is not None:  # window timers re-armed on a step; the clock's sync and the contact
                self.charger.policy.check_clock()
                self.charger.policy.poll()

    def _reload(self) -> None:
        """SIGHUP (systemctl reload): the `reload` command; a bad config is logged and the old one stays."""
        assert self.charger is not None
        try:
            log.info("daemon.reload", **commands.run(self.charger, p.Reload()).fields_wire())
        except commands.CommandError as exc:
            log.error("daemon.reload_refused", error=str(exc))

    async def _prune(self) -> None:
        """Old events and old sessions' samples go (sessions are kept), at start and hourly."""
        assert self.writer is not None
        while True:
            now = _wallclock()
            events_before = utc_iso_ms(now - OUTBOX_RETENTION)
            samples_before = utc_iso(now - dt.timedelta(days=self.live_config.store.sample_retention_days))
            self.writer.submit(lambda st: self._prune_store(st, events_before, samples_before))
            await asyncio.sleep(3600)

    @staticmethod
    def _prune_store(store: Store, events_before: str, samples_before: str) -> None:
        events, samples = outbox.prune(store.db, events_before), store.prune_samples(samples_before)
        if events or samples:
            log.info("store.pruned", events=events, samples=samples)

    # --- stop -------------------------------------------------------------------------------
    def release_all(self, at_once: bool = True) -> None:
        if self.charger is not None:
            self.charger.release_all(lambda ctrl, exc: log.critical(
                "contactor.release_failed", connector=ctrl.id, error=repr(exc)), at_once)

    def _orderly(self) -> bool:
        """A stop asked for (SIGTERM, SIGINT, a restart), no failure: a charging EV may stop first."""
        return self.stopping.is_set() and self.fatal is None

    async def stop(self) -> None:
        if self.charger is not None:
            self.charger.shutdown(lambda ctrl, exc: log.critical(
                "connector.shutdown_failed", connector=ctrl.id, error=repr(exc)))
            self.charger.auth.cancel()
        self.release_all(at_once=not self._orderly())
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=2.0)
            if stuck:  # never hang a stop: the contactors are open already
                log.error("daemon.tasks_did_not_stop", tasks=[t.get_name() for t in stuck])
        for handle in self._timers.values():
            handle.cancel()
        if self.services is not None:
            await self.services.stop()
        await self.host.stop()
        if self.devices is not None:
            self.devices.release(lambda device, exc: log.warning(
                "device.release_failed", device=type(device).__name__, error=str(exc)))
        if self.writer is not None:
            self.writer.close()
        if self._marked:
            last_stop.end(self.config.store.state_dir, error=self.fatal is not None)
        self.lock.release()
        log.info("daemon.stopped")

    async def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT or a fatal error, stop. Returns an exit status."""
        try:
            await self.start()
            await self.stopping.wait()
        finally:
            self.release_all(at_once=not self._orderly())
            await self.stop()
        return 1 if self.fatal is not None else EXIT_RESTART if self.restart else 0
