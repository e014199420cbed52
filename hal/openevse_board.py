"""One OpenEVSE board on one serial port: the cached state, the wishes of evsed's devices, and
the worker thread that converges the board to them (hal.openevse builds the devices on it).
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
import time
from typing import Any, Callable

import structlog

from hal import DeviceUnavailable, HalError, TryAgain
from hal.openevse_firmware import REFUSALS_TO_GIVE_UP, Firmware
from hal.rapi import (STATE_A, STATE_B, STATE_C, STATE_D, BoardState, Frame, RapiLink, Refused, auth_locked,
                      boot_locked, in_fault, left_mode, parse_state, relay_closed)

# How it fits evsed's interfaces (the design choice):
# - One Board per serial port, shared by the four devices through ctx.shared. A worker thread
#   owns the wire: it polls $GS every poll_interval_s, passes the safety loop's heartbeat on,
#   runs the meter's requests, and converges the board to the *desired* output the pilot and
#   contactor record.
#   The reader thread turns async $AT/$ST into cache updates and on_change callbacks. So
#   pwm_on()/read()/tripped() never wait on the serial line: they set a wish or read a cache
#   (stale: read() raises TryAgain), and a failed command is simply retried on the next round.
# - What gates the relay (J1772EvseController.cpp): enabled and unlocked, the board offers PWM and
#   closes its relay by itself when the EV asks (C). No offer is the auth lock ($S4 1) where the
#   firmware has it (AUTH_LOCK builds): the board stays enabled, holds the EV out of C with a
#   steady +12 V, and keeps reading the pilot. Sleep ($FS) is used where there is no lock, and to
#   end a charge under load: asleep the board waits for the EV to leave C (at most 3 s) before it
#   opens, but Update() returns before it sets the state fields, so only the EV-connected flag
#   and the relay flag are read then (hal.rapi.pilot_reading).
# - close()/open() record what the core allows; feedback_closed() reports the board's relay. If
#   the relay is closed while the core does not allow it (open() called, or longer than
#   relay_grace_s), the board is disabled ($FD, opens at once) and then held without an offer.
# - open() is a forced open ($FD, at once); open(at_once=False) lets the EV stop first: asleep
#   ($FS) the board opens when the EV leaves C, or after its own 3 s, and is forced only after that
#   (a release waits for that: the board is not left to itself with the relay closed).
# - The board runs its own recovery from a fault (GFCI: retry after 5 min, reset on unplug); a
#   $FS/$FE then would hide the latch and re-trip it at once (Gfi.cpp), so none is sent.
# - Boot lock (BOOTLOCK builds): after every boot the board waits for $SB; it gets one after the
#   output is set, on the $AB and whenever its state shows the lock (a reboot unheard).
# - Heartbeat supervision ($SY): the safety loop's round asks for each pulse (pulse()); when the
#   loop or evsed stops, the pulses stop and the board lowers its offer to 6 A.
# - A lost port (USB adapter unplugged) reads as DeviceUnavailable, so the core opens and pauses;
#   the link opens it again every reopen_s, and the worker then re-sends the devices' wishes.

log = structlog.get_logger("hal.openevse")

_MODE_COMMANDS = {"enable": "FE", "sleep": "FS", "disable": "FD"}
_WAKE = object()
SLEEP_OPENS_S = 3.0  # asleep with the relay closed, the board opens by itself after this (Update())

LINK_DEFAULTS: dict[str, Any] = {
    "baudrate": 115200, "timeout_s": 0.5, "poll_interval_s": 0.2, "stale_s": 1.5,
    "relay_grace_s": 0.25, "sequence_ids": True, "volatile_current": True, "heartbeat_s": 10, "reopen_s": 2.0,
}


class Board:
    """One OpenEVSE board on one port: the cache, the wishes, and the worker that converges them."""

    def __init__(self, port: str, **options: Any):
        self.port = port
        self.options = {**LINK_DEFAULTS, **options}
        o = self.options
        self.poll_interval_s, self.stale_s = o["poll_interval_s"], o["stale_s"]
        self.relay_grace_s, self.volatile_current = o["relay_grace_s"], o["volatile_current"]
        self.heartbeat_s = o["heartbeat_s"]
        self.users = 0
        self.closed = False
        self.relay_gated = False  # set once a contactor device speaks for the core
        self.board_current_a: int | None = None  # the board's pilot current capacity, last reported
        self.board_max_a: int | None = None  # its stored maximum ($GC): a plain $SC never goes above
        self._mu = threading.Lock()
        self._state: BoardState | None = None
        self._callbacks: list[Callable[[], None]] = []
        self._desired = "sleep"  # safe until the core says otherwise
        self._amps: int | None = None
        self._allowed = self._hold_open = False
        self._unallowed_since: float | None = None
        self._acked_mode: str | None = None
        self._acked_lock: bool | None = None
        self._acked_amps: int | None = None
        self._acked_at = 0.0  # when the last output command was answered
        self._reopened_at = 0.0  # when the port came back: a state from before is not the board's now
        self.firmware = Firmware(self)  # its auth lock, boot lock and heartbeat supervision
        self._ev_stop_by: float | None = None  # a soft open waits for the board's own open until then
        self._let_go = threading.Event()  # clear while a soft open waits (set by the worker's round)
        self._let_go.set()
        self._errors: dict[str, str] = {}  # step -> the last error it logged
        self._jobs: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self.link = RapiLink(port, o["baudrate"], o["timeout_s"], o["sequence_ids"], on_notify=self._on_notify,
                             reopen_s=o["reopen_s"], on_reopen=self._on_reopen)
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

    def allow_relay(self, allowed: bool, at_once: bool = True) -> None:
        """The core's consent; withdrawn at_once from a closed relay: $FD. Else asleep ($FS) the
        board opens when the EV leaves C or after SLEEP_OPENS_S; forced only if it has not by then."""
        with self._mu:
            self._allowed = allowed
            if allowed:
                self._hold_open, self._ev_stop_by = False, None
            elif self._state is not None and relay_closed(self._state):
                if at_once:
                    self._hold_open = True  # do not wait for the EV
                elif self._ev_stop_by is None:
                    self._ev_stop_by = time.monotonic() + SLEEP_OPENS_S + self.relay_grace_s
                    self._let_go.clear()
        self._jobs.put(_WAKE)

    def pulse(self) -> None:
        """The safety loop's heartbeat: the worker passes it on as one $SY."""
        self.firmware.pulse()
        self._jobs.put(_WAKE)

    def state(self) -> BoardState:
        """The fresh cached state; TryAgain when stale or missing, DeviceUnavailable when the link is gone."""
        if self.link.lost is not None:
            raise DeviceUnavailable(f"OpenEVSE {self.port}: serial link lost: {self.link.lost}")
        state = self._state
        if state is None or state.seen_at < self._reopened_at:
            raise TryAgain(f"OpenEVSE {self.port}: no state from the board yet ({self._errors.get('_poll', 'waiting')})")
        age_s = time.monotonic() - state.seen_at
        if age_s > self.stale_s:
            raise TryAgain(f"OpenEVSE {self.port}: no state from the board for {age_s:.1f} s"
                           + (f" ({self._errors['_poll']})" if "_poll" in self._errors else ""))
        return state

    @property
    def last_state(self) -> BoardState | None:
        """The cached state however old, for what tolerates age (the RCD, the feedback)."""
        return self._state

    def offered_current_a(self) -> int | None:
        """What the board's pilot offers (or will offer the arriving EV), in A; None without an offer."""
        state = self._state
        if (state is None or self.board_current_a is None or auth_locked(state)
                or state.evse_state not in (STATE_A, STATE_B, STATE_C, STATE_D)):
            return None
        return self.board_current_a

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
        self._see_soft_open_through()
        self.closed = True
        self._stop.set()
        self._jobs.put(_WAKE)
        self._worker.join(timeout=4 * self.options["timeout_s"] + 1.0)
        state = self._state
        # a forced open no worker round is left for goes out first (also a soft open past its limit, a
        # relay closed without consent); then the board is left asleep, steady +12 V
        overdue = self._ev_stop_by is not None and time.monotonic() >= self._ev_stop_by
        unallowed = self.relay_gated and not self._allowed and self._ev_stop_by is None
        forced = (self._hold_open or overdue or unallowed) and state is not None and relay_closed(state)
        for command in ("FD", "FS") if forced else ("FS",):
            try:
                self.link.request(command)
            except HalError as exc:
                log.warning("openevse.release_failed", port=self.port, command=command, error=str(exc))
        self.link.close()

    def _see_soft_open_through(self) -> None:
        """A soft open under way ends before the worker: the relay opened, or the worker forced it
        (else a board that ignored the $FS would stay closed under load after evsed is gone)."""
        by = self._ev_stop_by
        if by is not None and self.link.lost is None:  # the forcing round: a poll, its $GS and $FD
            self._let_go.wait(max(0.0, by - time.monotonic() + self.poll_interval_s + 2 * self.options["timeout_s"]))

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
            self._safely(self.firmware.unlock_boot)  # after the output is set: the board starts in it
            self._safely(self.firmware.heartbeat_step)
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
        if self.firmware.has_auth_lock is None:
            self.firmware.probe_auth_lock()
        if self.board_max_a is None or self._desired == "enable":
            # The capacity, too: a board that rebooted unheard comes back at its stored current.
            gc = self.link.request("GC")
            self._capacity(int(gc.args[2]), int(gc.args[3]))
        self._update(parse_state(self.link.request("GS"), time.monotonic()))

    def _capacity(self, current_a: int | None, stored_max_a: int | None = None) -> None:
        if stored_max_a is not None:
            self.board_max_a = stored_max_a
        if current_a is not None and current_a != self.board_current_a:
            if self.board_current_a is not None and self._acked_amps is not None:
                if self.firmware.fell_back(current_a, self.board_current_a):
                    log.warning("openevse.heartbeat_fallback", port=self.port, board_a=current_a)
                else:
                    log.warning("openevse.current_drift", port=self.port, board_a=current_a,
                                set_a=self.board_current_a)
                    self._acked_amps = None  # restore the offer on the next round
            self.board_current_a = current_a

    def _restore_offer(self) -> None:
        """The offer again at once: the board restored its stored capacity (a heartbeat acknowledged)."""
        self._acked_amps = None
        with self._mu:
            offering, amps = self._desired == "enable" and not self._hold_open, self._amps
        if offering and amps is not None:
            self._set_current(amps)
            self._acked_amps = amps

    def _target(self, now: float) -> tuple[str, bool]:
        """The output to drive (enable, sleep, disable) and whether locked: the pilot's wish, unless
        the relay must be forced open."""
        closed = self._state is not None and relay_closed(self._state)
        if not closed:
            self._ev_stop_by = None
        elif (self._ev_stop_by is not None and not self._allowed and not self._hold_open
              and self._desired != "disable"):
            if now < self._ev_stop_by:
                return "sleep", True  # the EV stops first; asleep the board opens by itself
            log.warning("openevse.relay_forced_open", port=self.port, waited_s=SLEEP_OPENS_S)
            self._hold_open = True
        if self._ev_stop_by is None or self._hold_open or self._desired == "disable":
            self._let_go.set()
        if closed and self.relay_gated and not self._allowed and not self._hold_open and self._desired != "disable":
            if self._unallowed_since is None:
                self._unallowed_since = now
            elif now - self._unallowed_since >= self.relay_grace_s:
                log.warning("openevse.relay_forced_open", port=self.port, grace_s=self.relay_grace_s)
                self._hold_open = True
        else:
            self._unallowed_since = None
        if self._desired == "disable" or (self._hold_open and closed):
            return "disable", True  # $FD opens the relay at once; $FS would wait for the EV
        if self._desired == "enable" and not self._hold_open:
            return "enable", False
        if self.firmware.has_auth_lock and not closed:
            return "enable", True  # held out of C, awake: the state stays readable
        return "sleep", True  # no lock, or a charge to end: the board lets the EV stop first

    def _reconcile(self) -> None:
        with self._mu:
            (mode, locked), amps, state = self._target(time.monotonic()), self._amps, self._state
        fresh = state if state is not None and state.seen_at > self._acked_at else None  # read since the last command
        lock = self.firmware.has_auth_lock
        if lock and fresh and self._acked_lock is not None and auth_locked(fresh) != self._acked_lock:
            log.warning("openevse.lock_drift", port=self.port, locked=auth_locked(fresh))
            self._acked_lock = None  # rebooted (AUTH_LOCK 1 boots locked) or locked by an unplug
        lock_first = mode == "enable" and locked  # before $FE: an enabled, unlocked board offers at once
        if lock_first:
            self._lock_to(True)
        if mode == "enable" and not locked and amps is not None and amps != self._acked_amps:
            self._set_current(amps)
            self._acked_amps = amps
        if mode == self._acked_mode and fresh and left_mode(mode, fresh.evse_state):
            log.warning("openevse.mode_drift", port=self.port, mode=mode, evse_state=f"{fresh.evse_state:02x}")
            self._acked_mode = None  # the board left the mode (button, reboot, timer): send it again
        if mode != self._acked_mode and not (mode != "disable" and state is not None and in_fault(state)):
            self._command(_MODE_COMMANDS[mode])
            self._acked_mode = mode
            log.info("openevse.output", port=self.port, mode=mode, locked=locked if lock else None,
                     current_a=amps if mode == "enable" and not locked else None)
        if not lock_first:  # after $FS: locking a board in C would open its relay under load at once
            self._lock_to(locked)

    def _lock_to(self, locked: bool) -> None:
        if self.firmware.has_auth_lock and self._acked_lock is not locked:
            self._command("S4 1" if locked else "S4 0")
            self._acked_lock = locked

    def _command(self, command: str) -> Frame:
        frame = self.link.request(command)
        self._acked_at = time.monotonic()
        return frame

    def _set_current(self, amps: int) -> None:
        if not self.volatile_current:
            if self.board_max_a is None:
                raise TryAgain(f"OpenEVSE {self.port}: stored maximum not known yet ($GC)")
            amps = min(amps, self.board_max_a)  # a plain $SC writes the EEPROM: never raise the stored max
        try:
            frame = self._command(f"SC {amps} V" if self.volatile_current else f"SC {amps}")
            self.firmware.answered("SC")
        except Refused as exc:
            value = exc.frame.args[0] if exc.frame.args else ""
            if not value and self.volatile_current and self.firmware.refused_bare("SC", exc):
                log.warning("openevse.no_volatile_current", port=self.port, refusals=REFUSALS_TO_GIVE_UP,
                            note="each current change now writes the board's EEPROM")
                self.volatile_current = False
            if not value.isdigit():
                raise  # a bare $NK: nothing was set; the next round asks again
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
            self._acked_mode = self._acked_amps = self._acked_lock = None
            self.firmware.unlock_owed = True
            self._jobs.put(_WAKE)
        else:
            log.debug("openevse.notification", port=self.port, name=frame.name, args=" ".join(frame.args))

    def _on_reopen(self) -> None:
        """The port is back (an adapter plugged in again): the board may have rebooted meanwhile or
        dropped to its heartbeat fallback, so, as after an $AB, the worker sends the output the
        devices wish for again (nothing more: the relay still needs the core's consent) and sets
        the heartbeat up again; its state reads as missing until it reports afresh. Runs in the
        reader thread before any request can go out."""
        self._reopened_at = time.monotonic()
        self._acked_mode = self._acked_amps = self._acked_lock = None
        if self.firmware.heartbeat == "on":
            self.firmware.heartbeat = "setup"
        self._jobs.put(_WAKE)

    def _update(self, new: BoardState) -> None:
        with self._mu:
            old, self._state = self._state, new
            if new.current_a is not None and new.seen_at > self._acked_at:
                self._capacity(new.current_a)
            if boot_locked(new) and not (old is not None and boot_locked(old)):  # its $AB lost: as
                self._acked_mode = self._acked_amps = self._acked_lock = None  # after one, output before $SB
                self.firmware.unlock_owed = True
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
