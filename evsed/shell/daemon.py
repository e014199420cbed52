"""The asyncio daemon: builds devices from the config, polls inputs, runs the control socket.

It turns hardware input into core events through ConnectorControl and never decides
policy; every exit path (signal, error, crash) opens the contactors.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import fcntl
import math
import os
import signal
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from evsed.config import backends
from evsed.control import server as control
from evsed.shell import safety_loop
from evsed.shell.auth import LocalAuthorizer
from evsed.config import Config
from evsed.errors import StartError
from evsed.shell.connector import ConnectorControl, route_card
from evsed.core.pilot import PilotState
from evsed.store.sessions import Store, StoreWriter
from hal import Closable, DeviceUnavailable, HalError, Notifying

log = structlog.get_logger("evsed")


class StateLock:
    """An exclusive flock on the state directory: one daemon per state directory."""

    def __init__(self, state_dir: Path):
        self.path = state_dir / "evsed.lock"
        self.fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
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


def build_world(config: Config, clock) -> Any | None:
    """The simulated world, when any configured backend is the simulator."""
    devices = [d for c in config.connectors for d in (c.pilot, c.contactor, c.rcd, c.meter) if d]
    if config.rfid:
        devices.append(config.rfid)
    if not any(d.backend == "sim" for d in devices):
        return None
    from simulator.hardware import SimWorld
    s = config.simulator
    return SimWorld(clock, voltage_v=s.voltage_v, ev_max_current_a=s.ev_max_current_a,
                    ev_phases=s.ev_phases, meter_start_wh=s.meter_start_wh)


def create_devices(config: Config, shared: dict) -> tuple[dict[int, dict[str, Any]], Any | None]:
    """Every configured device, by connector; raises DeviceUnavailable naming the device."""
    out: dict[int, dict[str, Any]] = {}
    for conn in config.connectors:
        ctx = backends.BackendContext(conn.id, shared)
        out[conn.id] = {}
        for kind, key in (("pilot", "pilot"), ("contactor", "contactor"), ("rcd", "rcd"), ("meter", "meter")):
            device = getattr(conn, key)
            if device is None:
                continue
            try:
                out[conn.id][key] = backends.create(kind, device.backend, dict(device.options), ctx)
            except (DeviceUnavailable, OSError) as exc:
                raise DeviceUnavailable(f"connector {conn.id} {kind} ({device.backend}): {exc}") from exc
    reader = None
    if config.rfid is not None:
        ctx = backends.BackendContext(0, shared)
        reader = backends.create("rfid", config.rfid.backend, dict(config.rfid.options), ctx)
    return out, reader


class Daemon:
    def __init__(self, config: Config):
        self.config = config
        self.tz = ZoneInfo(config.charger.timezone)
        self.lock = StateLock(config.store.state_dir)
        self.stopping = asyncio.Event()
        self.connectors: dict[int, ConnectorControl] = {}
        self.world = None
        self.reader = None
        self.reader_error = ""
        self.writer: StoreWriter | None = None
        self.server: asyncio.AbstractServer | None = None
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task] = []
        self.fatal: BaseException | None = None
        self.ready = asyncio.Event()

    # --- start ------------------------------------------------------------------------------
    async def start(self) -> None:
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        self.lock.acquire()
        store = Store(self.config.store.state_dir / "sessions.db")
        recovered = store.recover()
        if recovered:
            log.warning("session.recovered", ids=recovered, stop_reason="power_loss")
        self.writer = StoreWriter(store)
        shared: dict[str, Any] = {}
        self.world = build_world(self.config, time.monotonic)
        if self.world is not None:
            shared["sim"] = self.world
        devices, self.reader = create_devices(self.config, shared)
        authorizer = LocalAuthorizer(self.config.cards)
        for conn in self.config.connectors:
            ctrl = ConnectorControl(
                conn.id, self.config.core_config(conn), devices[conn.id], clock=time.monotonic,
                wallclock=lambda: dt.datetime.now(dt.timezone.utc), authorizer=authorizer,
                writer=self.writer, timezone=self.tz, checkpoint_s=self.config.store.checkpoint_s,
                schedule=lambda when, cid=conn.id: self._schedule(cid, when), offload=self._offload)
            self.connectors[conn.id] = ctrl
            ctrl.start()
            for device in devices[conn.id].values():
                if isinstance(device, Notifying):
                    device.on_change(lambda c=ctrl: loop.call_soon_threadsafe(self._input_changed, c))
            self._spawn(self._poll_pilot(ctrl), f"pilot-{conn.id}")
            if ctrl.meter is not None:
                self._spawn(self._poll_meter(ctrl), f"meter-{conn.id}")
        if self.reader is not None:
            self._spawn(self._read_cards(), "cards")
        self.server = await control.serve(self.config.store.runtime_dir, self)
        loop.set_exception_handler(self._loop_exception)
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: log.warning("daemon.reload_unsupported"))
        self._spawn(safety_loop.for_daemon(self).run(), "safety")  # heartbeat + systemd watchdog
        self.ready.set()
        log.info("daemon.ready", connectors=list(self.connectors), state_dir=str(self.config.store.state_dir),
                 socket=str(control.socket_path(self.config.store.runtime_dir)),
                 start_s=round(time.perf_counter() - started, 3))

    def _input_changed(self, ctrl: ConnectorControl) -> None:
        if not self.stopping.is_set():  # once stopping, the outputs are released and stay so
            ctrl.poll_inputs()

    def _spawn(self, coro, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task) -> None:
        if task.cancelled() or self.stopping.is_set():
            return
        self.fatal = task.exception() or RuntimeError(f"task {task.get_name()} ended")
        self.release_all()  # at once, before the orderly shutdown runs
        log.critical("daemon.task_failed", task=task.get_name(), error=repr(self.fatal))
        self.stopping.set()

    def _offload(self, work, done) -> None:
        """Run slow device work (an RCD self-test) in a worker; hand its result back on the loop."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, work)

        def finished(f: asyncio.Future) -> None:
            if f.cancelled() or self.stopping.is_set():
                return
            exc = f.exception()
            if exc is not None:  # a test that cannot run is a failed test: the core locks out
                log.error("device.offloaded_work_failed", error=repr(exc))
            done(False if exc is not None else f.result())
        future.add_done_callback(finished)

    def _loop_exception(self, loop, context: dict) -> None:
        """An exception escaped a callback (device callback, timer, offloaded result): the state
        of the outputs is unknown, so release everything and stop, as for a crashed task."""
        exc = context.get("exception")
        if exc is None:  # a message only (a slow callback, an unclosed transport)
            log.warning("daemon.loop_warning", message=context.get("message"))
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
    async def _poll_pilot(self, ctrl: ConnectorControl) -> None:
        timing = self.config.timing
        idle_interval = max(timing.pilot_poll_s, timing.pilot_lost_s / 2)
        while not self.stopping.is_set():
            if ctrl.pilot_reads_instantly:
                ctrl.poll_inputs()
            else:  # an ADC burst: read in a worker so the loop stays free for safety events
                ctrl.poll_inputs(await asyncio.to_thread(ctrl.read_pilot))
            st = ctrl.state  # full rate while an EV is there; an empty connector idles
            busy = st.contactor_closed or st.session or st.pilot is not PilotState.A
            await asyncio.sleep(timing.pilot_poll_s if busy else idle_interval)

    async def _poll_meter(self, ctrl: ConnectorControl) -> None:
        interval = self.config.timing.meter_interval_s
        failures = 0
        while not self.stopping.is_set():
            try:
                # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow the cancel of a stop
                async with asyncio.timeout(max(2.0, 2 * interval)):
                    reading = await ctrl.meter.read()
            except (HalError, TimeoutError) as exc:
                if self.stopping.is_set():
                    return
                failures += 1
                if failures == 1 or failures % 60 == 0:
                    log.warning("meter.read_failed", connector=ctrl.id, error=str(exc) or type(exc).__name__,
                                failures=failures)
                ctrl.meter_failed(str(exc) or type(exc).__name__)
            else:
                if self.stopping.is_set():
                    return
                if failures:
                    log.info("meter.recovered", connector=ctrl.id, after_failures=failures)
                failures = 0
                ctrl.meter_sampled(reading)
            await asyncio.sleep(interval)

    async def _read_cards(self) -> None:
        while True:
            try:
                uid = await self.reader.next_tap()
            except DeviceUnavailable as exc:  # charging stays safe; only cards are lost
                self.reader_error = str(exc)
                log.error("rfid.unavailable", error=str(exc))
                await self.stopping.wait()
                return
            except HalError as exc:
                log.warning("rfid.read_failed", error=str(exc))
                continue
            route_card(list(self.connectors.values()), uid)

    # --- stop -------------------------------------------------------------------------------
    def release_all(self) -> None:
        for ctrl in self.connectors.values():
            try:
                ctrl.release()
            except Exception as exc:  # keep releasing the others
                log.critical("contactor.release_failed", connector=ctrl.id, error=repr(exc))

    async def stop(self) -> None:
        for ctrl in self.connectors.values():
            try:
                ctrl.shutdown()
            except Exception as exc:
                log.critical("connector.shutdown_failed", connector=ctrl.id, error=repr(exc))
        self.release_all()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=2.0)
            if stuck:  # never hang a stop: the contactors are open already
                log.error("daemon.tasks_did_not_stop", tasks=[t.get_name() for t in stuck])
        for handle in self._timers.values():
            handle.cancel()
        if self.server is not None:
            self.server.close()
            control.socket_path(self.config.store.runtime_dir).unlink(missing_ok=True)
        devices = [d for c in self.connectors.values() for d in (c.pilot, c.contactor, c.rcd, c.meter)]
        for device in [*devices, self.reader]:
            if isinstance(device, Closable):
                try:
                    device.release()
                except (HalError, OSError) as exc:
                    log.warning("device.release_failed", device=type(device).__name__, error=str(exc))
        if self.writer is not None:
            self.writer.close()
        self.lock.release()
        log.info("daemon.stopped")

    async def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT or a fatal error, stop. Returns an exit status."""
        try:
            await self.start()
            await self.stopping.wait()
        finally:
            self.release_all()
            await self.stop()
        return 1 if self.fatal is not None else 0
