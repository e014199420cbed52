"""OpenEVSE controller boards over RAPI: pilot, contactor, RCD and meter devices on one serial link.

The board drives the pilot and its own relay; evsed's core still decides when and how much.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
import time
from typing import Any, Callable

import structlog

from hal import DeviceUnavailable, HalError, MeterReading, PilotReading, TryAgain
from hal.rapi import (TRIP_STATES, BoardState, Frame, RapiLink, Refused, amps_for_duty, ev_connected,
                      left_mode, parse_state, pilot_reading, relay_closed)

# How it fits evsed's interfaces (the design choice):
# - One Board per serial port, shared by the four devices through ctx.shared. A worker thread
#   owns the wire: it polls $GS every poll_interval_s, runs the meter's requests, and converges
#   the board to the *desired* output (enable + $SC amps, sleep, disable) the pilot and contactor
#   record. The reader thread turns async $AT/$ST into cache updates and on_change callbacks.
#   So pwm_on()/read()/tripped() never wait on the serial line: they set a wish or read a cache
#   (stale: read() raises TryAgain), and a failed command is simply retried on the next round.
# - The board closes its relay by itself when the EV asks (state C) and the board is enabled.
#   close()/open() record what the core allows; feedback_closed() reports the board's relay. If
#   the relay is closed while the core does not allow it (open() called, or longer than
#   relay_grace_s), the board is disabled ($FD, opens at once) and then held asleep: the pilot
#   then reads as a steady level, which the core sees as it would on real hardware.

log = structlog.get_logger("hal.openevse")

_MODE_COMMANDS = {"enable": "FE", "sleep": "FS", "disable": "FD"}
_WAKE = object()

LINK_DEFAULTS: dict[str, Any] = {
    "baudrate": 115200, "timeout_s": 0.5, "poll_interval_s": 0.2, "stale_s": 1.5,
    "relay_grace_s": 0.25, "sequence_ids": True, "volatile_current": True,
}


class Board:
    """One OpenEVSE board on one port: the cache, the wishes, and the worker that converges them."""

    def __init__(self, port: str, **options: Any):
        self.port = port
        self.options = {**LINK_DEFAULTS, **options}
        o = self.options
        self.poll_interval_s, self.stale_s = o["poll_interval_s"], o["stale_s"]
        self.relay_grace_s, self.volatile_current = o["relay_grace_s"], o["volatile_current"]
        self.users = 0
        self.closed = False
        self.relay_gated = False  # set once a contactor device speaks for the core
        self.board_current_a: int | None = None  # what the board last accepted for $SC
        self._mu = threading.Lock()
        self._state: BoardState | None = None
        self._callbacks: list[Callable[[], None]] = []
        self._desired, self._amps = "sleep", None  # safe until the core says otherwise
        self._allowed = self._hold_open = False
        self._unallowed_since: float | None = None
        self._acked_mode: str | None = None
        self._acked_amps: int | None = None
        self._acked_at = self._polled_at = 0.0
        self._errors: dict[str, str] = {}  # step -> the last error it logged
        self._jobs: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self.link = RapiLink(port, o["baudrate"], o["timeout_s"], o["sequence_ids"], on_notify=self._on_notify)
        self._safely(self._poll)  # a first state for `evsed check`; the worker retries on failure
        self._worker = threading.Thread(target=self._run, name=f"openevse {port}", daemon=True)
        self._worker.start()

    # --- what the devices call (never block on the wire) ----------------------------------------

    def set_output(self, mode: str, amps: int | None = None) -> None:
        with self._mu:
            if mode == "enable" and self._desired != "enable":
                self._hold_open = False  # a fresh offer; a hold lasts only through the same offer
            self._desired = mode
            if amps is not None:
                self._amps = amps
        self._jobs.put(_WAKE)

    def allow_relay(self, allowed: bool) -> None:
        with self._mu:
            self._allowed = allowed
            if allowed:
                self._hold_open = False
            elif self._state is not None and relay_closed(self._state):
                self._hold_open = True  # the core opens: do not wait for the EV
        self._jobs.put(_WAKE)

    def state(self) -> BoardState:
        """The fresh cached state; TryAgain when stale or missing, DeviceUnavailable when the link is gone."""
        if self.link.lost is not None:
            raise DeviceUnavailable(f"OpenEVSE {self.port}: serial link lost: {self.link.lost}")
        state = self._state
        if state is None:
            raise TryAgain(f"OpenEVSE {self.port}: no state from the board yet ({self._errors.get('_poll', 'waiting')})")
        age_s = time.monotonic() - state.seen_at
        if age_s > self.stale_s:
            raise TryAgain(f"OpenEVSE {self.port}: no state from the board for {age_s:.1f} s"
                           + (f" ({self._errors['_poll']})" if "_poll" in self._errors else ""))
        return state

    @property
    def last_state(self) -> BoardState | None:
        """The cached state however old, for what tolerates age (the meter's session flag)."""
        return self._state

    def submit(self, command: str) -> concurrent.futures.Future:
        """Queue a request for the worker; the future holds the $OK frame or the error."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        if self.closed:
            future.set_exception(DeviceUnavailable(f"OpenEVSE {self.port}: released"))
        else:
            self._jobs.put((command, future))
        return future

    def on_change(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    def release(self) -> None:
        self.users -= 1
        if self.users > 0 or self.closed:
            return
        self.closed = True
        self._stop.set()
        self._jobs.put(_WAKE)
        self._worker.join(timeout=4 * self.options["timeout_s"] + 1.0)
        try:
            self.link.request("FS")  # leave the board safe: steady +12 V, relay open
        except HalError as exc:
            log.warning("openevse.release_sleep_failed", port=self.port, error=str(exc))
        self.link.close()

    # --- the worker -------------------------------------------------------------------------------

    def _run(self) -> None:
        next_poll = time.monotonic() + self.poll_interval_s
        while not self._stop.is_set():
            wake_at = next_poll
            if self._unallowed_since is not None:
                wake_at = min(wake_at, self._unallowed_since + self.relay_grace_s)
            try:
                job = self._jobs.get(timeout=max(0.0, wake_at - time.monotonic()))
            except queue.Empty:
                job = None
            if self._stop.is_set():
                break
            if job is not None and job is not _WAKE:
                self._run_job(*job)
            self._safely(self._reconcile)
            if time.monotonic() >= next_poll:
                self._safely(self._poll)
                next_poll = time.monotonic() + self.poll_interval_s
        while not self._jobs.empty():
            job = self._jobs.get_nowait()
            if job is not _WAKE:
                job[1].set_exception(DeviceUnavailable(f"OpenEVSE {self.port}: released"))

    def _run_job(self, command: str, future: concurrent.futures.Future) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(self.link.request(command))
        except Exception as exc:  # handed to the awaiting caller, not swallowed
            future.set_exception(exc)

    def _safely(self, step: Callable[[], None]) -> None:
        name = step.__name__
        try:
            step()
        except HalError as exc:
            if str(exc) != self._errors.get(name):  # one line per new problem, not one per poll
                log.warning("openevse.link_error", port=self.port, step=name.strip("_"), error=str(exc))
            self._errors[name] = str(exc)
            return
        if self._errors.pop(name, None) is not None:
            log.info("openevse.link_recovered", port=self.port, step=name.strip("_"))

    def _poll(self) -> None:
        sent_at = time.monotonic()
        self._update(parse_state(self.link.request("GS"), time.monotonic()))
        self._polled_at = sent_at  # an async $AT may be older than a command; a poll sent after it is not

    def _effective_mode(self, now: float) -> str:
        """The output to drive: the pilot's wish, unless the relay must be forced open."""
        closed = self._state is not None and relay_closed(self._state)
        if closed and self.relay_gated and not self._allowed and not self._hold_open and self._desired != "disable":
            if self._unallowed_since is None:
                self._unallowed_since = now
            elif now - self._unallowed_since >= self.relay_grace_s:
                log.warning("openevse.relay_forced_open", port=self.port, grace_s=self.relay_grace_s)
                self._hold_open = True
        else:
            self._unallowed_since = None
        if self._desired == "disable" or (self._hold_open and closed):
            return "disable"  # $FD opens the relay at once; $FS would wait for the EV
        return "sleep" if self._hold_open else self._desired

    def _reconcile(self) -> None:
        with self._mu:
            mode, amps, state = self._effective_mode(time.monotonic()), self._amps, self._state
        if mode == "enable" and amps is not None and amps != self._acked_amps:
            self._set_current(amps)
            self._acked_amps = amps
        if (mode == self._acked_mode and state is not None and self._polled_at > self._acked_at
                and left_mode(mode, state.evse_state)):
            log.warning("openevse.mode_drift", port=self.port, mode=mode, evse_state=f"{state.evse_state:02x}")
            self._acked_mode = None  # the board left the mode (button, reboot, timer): send it again
        if mode != self._acked_mode:
            sent_at = time.monotonic()
            self.link.request(_MODE_COMMANDS[mode])
            self._acked_mode, self._acked_at = mode, sent_at
            log.info("openevse.output", port=self.port, mode=mode, current_a=amps if mode == "enable" else None)

    def _set_current(self, amps: int) -> None:
        try:
            frame = self.link.request(f"SC {amps} V" if self.volatile_current else f"SC {amps}")
        except Refused as exc:
            value = exc.frame.args[0] if exc.frame.args else ""
            if not value and self.volatile_current:  # firmware without the V flag refuses the token
                log.warning("openevse.no_volatile_current", port=self.port,
                            note="each current change now writes the board's EEPROM")
                self.volatile_current = False
                return self._set_current(amps)
            if not value.isdigit() or int(value) > amps:
                raise
            log.warning("openevse.current_clamped", port=self.port, wanted_a=amps, set_a=int(value))
            frame = exc.frame
        self.board_current_a = int(frame.args[0]) if frame.args and frame.args[0].isdigit() else amps

    # --- the reader thread's notifications --------------------------------------------------------

    def _on_notify(self, frame: Frame) -> None:
        if frame.name in ("AT", "ST"):
            try:
                self._update(parse_state(frame, time.monotonic()))
            except TryAgain as exc:
                log.warning("openevse.bad_notification", port=self.port, error=str(exc))
        elif frame.name == "AB":  # boot notification: the board forgot our volatile current and mode
            log.warning("openevse.board_rebooted", port=self.port, args=" ".join(frame.args))
            self._acked_mode = self._acked_amps = None
            self._jobs.put(_WAKE)
        else:
            log.debug("openevse.notification", port=self.port, name=frame.name, args=" ".join(frame.args))

    def _update(self, new: BoardState) -> None:
        with self._mu:
            old, self._state = self._state, new
        if old is not None and old.key() == new.key():
            return
        log.info("openevse.state", port=self.port, evse_state=f"{new.evse_state:02x}",
                 pilot_state=None if new.pilot_state is None else f"{new.pilot_state:02x}",
                 vflags=None if new.vflags is None else f"{new.vflags:04x}")
        self._jobs.put(_WAKE)
        for callback in list(self._callbacks):
            try:
                callback()
            except Exception:  # a consumer's bug must not stop the board's updates
                log.exception("openevse.callback_failed", port=self.port)


# --- the devices ------------------------------------------------------------------------------------


class _Device:
    def __init__(self, board: Board):
        self.board = board

    def on_change(self, callback: Callable[[], None]) -> None:
        self.board.on_change(callback)

    def release(self) -> None:
        self.board.release()


class OpenEvsePilot(_Device):
    """pwm_on -> $SC amps (volatile) + $FE; pwm_off -> $FS (sleep, +12 V); pwm_f -> $FD (disable, -12 V)."""

    def pwm_on(self, duty_pct: float) -> None:
        amps = amps_for_duty(duty_pct)
        if amps == 0:
            log.warning("openevse.no_offer_for_duty", port=self.board.port, duty_pct=duty_pct)
            self.board.set_output("sleep")
        else:
            self.board.set_output("enable", amps)

    def pwm_off(self) -> None:
        self.board.set_output("sleep")

    def pwm_f(self) -> None:
        self.board.set_output("disable")

    def read(self) -> PilotReading:
        state = self.board.state()
        reading = pilot_reading(state)
        if reading is None:
            raise TryAgain(f"OpenEVSE {self.board.port}: board in state {state.evse_state:02x} (starting)")
        return reading


class OpenEvseContactor(_Device):
    """The board's relay: close()/open() say what the core allows, feedback_closed() what the board did."""

    def close(self) -> None:
        self.board.allow_relay(True)

    def open(self) -> None:
        self.board.allow_relay(False)

    def feedback_closed(self) -> bool:
        # The last report however old: a silent board is the pilot's TryAgain (pilot lost), once.
        state = self.board.last_state
        return state is not None and relay_closed(state)


class OpenEvseRcd(_Device):
    """The board's GFCI (and ground check): tripped while the board is in one of those fault states."""

    def tripped(self) -> bool:
        state = self.board.last_state  # as feedback_closed(): staleness is the pilot's to report
        return state is not None and state.evse_state in TRIP_STATES


class OpenEvseMeter(_Device):
    """The board's ammeter: $GG (mA, mV) and $GU (session W*s, total Wh), one phase."""

    _energy_wh = 0  # the highest import register reported, per instance once set

    async def _ask(self, command: str) -> Frame:
        # The worker answers within timeout_s; the guard only covers a worker that is gone.
        # (asyncio.wait_for would not do: TryAgain is a TimeoutError and would look like its own.)
        guard_s = 3 * self.board.options["timeout_s"] + self.board.poll_interval_s
        future = asyncio.wrap_future(self.board.submit(command))
        done, _ = await asyncio.wait({future}, timeout=guard_s)
        if not done:
            future.cancel()
            raise TryAgain(f"OpenEVSE {self.board.port}: ${command} not served within {guard_s:g} s")
        return future.result()

    async def read(self) -> MeterReading:
        gg, gu = await self._ask("GG"), await self._ask("GU")
        try:
            current_ma, voltage_mv = int(gg.args[0]), int(gg.args[1])
            session_ws, total_wh = int(gu.args[0]), int(gu.args[1])
        except (IndexError, ValueError):
            raise TryAgain(f"OpenEVSE {self.board.port}: unreadable meter answer "
                           f"$GG {' '.join(gg.args)} / $GU {' '.join(gu.args)}") from None
        if current_ma < 0:
            raise DeviceUnavailable(f"OpenEVSE {self.board.port}: the board has no ammeter ($GG gives "
                                    f"{current_ma} mA); configure another meter")
        # The firmware adds a session to the total only when the EV leaves; count it meanwhile.
        state = self.board.last_state
        in_session = state is not None and ev_connected(state)
        energy_wh = total_wh + (session_ws // 3600 if in_session else 0)
        self._energy_wh = max(self._energy_wh, energy_wh)  # an import register never runs back
        current_a, voltage_v = current_ma / 1000.0, voltage_mv / 1000.0
        power_w = current_a * voltage_v
        return MeterReading(energy_import_wh=self._energy_wh, power_total_w=power_w,
                            current_a=(current_a,), voltage_v=(voltage_v,), power_w=(power_w,))


# --- factories (evsed.backends) -----------------------------------------------------------------------


def _board(options: dict, ctx: Any) -> Board:
    port = options["port"]
    wanted = {**LINK_DEFAULTS, **{k: v for k, v in options.items() if k in LINK_DEFAULTS}}
    key = f"openevse:{port}"
    board = ctx.shared.get(key)
    if board is None or board.closed:
        board = ctx.shared[key] = Board(port, **wanted)
    elif board.options != wanted:
        differ = sorted(k for k in wanted if wanted[k] != board.options[k])
        raise DeviceUnavailable(f"OpenEVSE {port}: devices on one port must agree on {', '.join(differ)}")
    board.users += 1
    return board


def pilot(options: dict, ctx: Any) -> OpenEvsePilot:
    return OpenEvsePilot(_board(options, ctx))


def contactor(options: dict, ctx: Any) -> OpenEvseContactor:
    board = _board(options, ctx)
    board.relay_gated = True  # without a contactor device the board's relay follows the EV alone
    return OpenEvseContactor(board)


def rcd(options: dict, ctx: Any) -> OpenEvseRcd:
    return OpenEvseRcd(_board(options, ctx))


def meter(options: dict, ctx: Any) -> OpenEvseMeter:
    return OpenEvseMeter(_board(options, ctx))
