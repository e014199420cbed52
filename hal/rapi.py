"""RAPI, the OpenEVSE board's serial protocol: frames, checksums, the board's state codes, one link.

A link owns the port, a reader thread that sorts answers from async notifications, and one lock.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable

import structlog

from hal import DeviceUnavailable, HalError, PilotReading, TryAgain
from hal.serialport import open_serial

log = structlog.get_logger("hal.rapi")

SOC = "$"  # start of every frame
EOC = b"\r"  # end of every frame
MAX_FRAME_CHARS = 80  # the firmware's buffers are 32-40 characters; anything longer is noise


# --- framing (facts from the firmware's rapi_proc.h; the code is ours) ------------------


def xor_checksum(text: str) -> int:
    """The 8-bit XOR of every character, '$' included: the form after '^'."""
    value = 0
    for char in text.encode("ascii"):
        value ^= char
    return value


def additive_checksum(text: str) -> int:
    """The 8-bit sum of every character, '$' included: the legacy form after '*'."""
    return sum(text.encode("ascii")) & 0xFF


def encode(command: str, seq: int | None = None) -> bytes:
    """A command such as 'SC 16 V' framed as '$SC 16 V :1A^xx\\r'; seq is 1-255 or None."""
    body = SOC + command + (f" :{seq:02X}" if seq is not None else "")
    return f"{body}^{xor_checksum(body):02X}\r".encode("ascii")


class FrameError(ValueError):
    """A line that is not a valid RAPI frame (no '$', bad checksum, not ASCII)."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One parsed frame: '$OK 03 12 03 0100 :1A^xx' -> name 'OK', args ('03', '12', '03', '0100'), seq 26."""

    name: str
    args: tuple[str, ...]
    seq: int | None = None

    @property
    def is_answer(self) -> bool:
        return self.name in ("OK", "NK")


def decode(line: bytes | str) -> Frame:
    """Parse one line (without its CR); noise before the last '$' is dropped.

    Frames from firmware before RAPI 2.0 carry no checksum and are accepted as such.
    """
    if isinstance(line, (bytes, bytearray)):
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            raise FrameError(f"not ASCII: {bytes(line)!r}") from None
    else:
        text = line
    start = text.rfind(SOC)
    if start < 0:
        raise FrameError(f"no '$' in {text!r}")
    body = text[start:].strip("\n")
    for mark, checksum in (("^", xor_checksum), ("*", additive_checksum)):
        if mark in body:
            body, _, given = body.partition(mark)
            if len(given) != 2 or any(c not in "0123456789abcdefABCDEF" for c in given):
                raise FrameError(f"malformed checksum in {text!r}")
            if int(given, 16) != checksum(body):
                raise FrameError(f"bad checksum in {text!r}: expected {checksum(body):02X}")
            break
    tokens = body[1:].split()
    if not tokens or len(tokens[0]) != 2:
        raise FrameError(f"no command in {text!r}")
    seq = None
    if len(tokens) > 1 and tokens[-1].startswith(":"):
        try:
            seq = int(tokens.pop()[1:], 16)
        except ValueError:
            raise FrameError(f"bad sequence id in {text!r}") from None
    return Frame(tokens[0], tuple(tokens[1:]), seq)


def looks_like_answer(line: bytes) -> bool:
    """True when a line that failed to parse was meant as $OK/$NK (so a pending request fails)."""
    start = line.rfind(b"$")
    return start >= 0 and line[start + 1:start + 3] in (b"OK", b"NK")


class Refused(TryAgain):
    """The board answered $NK; .frame holds its answer (some carry a value, e.g. $SC's clamp)."""

    def __init__(self, message: str, frame: Frame):
        super().__init__(message)
        self.frame = frame


@dataclass(frozen=True, slots=True)
class _Garbled:
    line: bytes
    reason: str


# --- the board's state (J1772EvseController.h and rapi_proc.h: $GS, $AT, $ST) ---------------

# EVSE states as the firmware numbers them (J1772EvseController.h), and volatile flags (m_wVFlags)
STATE_UNKNOWN, STATE_A, STATE_B, STATE_C, STATE_D = 0x00, 0x01, 0x02, 0x03, 0x04
DIODE_CHECK_FAILED, GFCI_FAULT, NO_GROUND, STUCK_RELAY = 0x05, 0x06, 0x07, 0x08
GFI_TEST_FAILED, OVER_TEMPERATURE, OVER_CURRENT, RELAY_CLOSURE_FAULT = 0x09, 0x0A, 0x0B, 0x0E
SLEEPING, DISABLED = 0xFE, 0xFF
VF_AUTH_LOCKED, VF_CHARGING_ON, VF_EV_CONNECTED = 0x0008, 0x0040, 0x0100
VF_BOOT_LOCK = 0x4000  # BOOTLOCK builds: after a boot the board waits for $SB and runs nothing else
TRIP_STATES = frozenset({GFCI_FAULT, NO_GROUND, GFI_TEST_FAILED})  # what evsed's RCD input reports
_LEVEL_V = {STATE_A: 12.0, STATE_B: 9.0, STATE_C: 6.0, STATE_D: 3.0}  # IEC 61851 nominal high levels


@dataclass(frozen=True, slots=True)
class BoardState:
    """The board's last report. pilot_state and vflags are None from firmware that lacks them;
    current_a (the pilot's current capacity) comes only with an $AT."""

    evse_state: int
    pilot_state: int | None
    vflags: int | None
    seen_at: float  # time.monotonic() of the report
    current_a: int | None = None

    def key(self) -> tuple:
        return (self.evse_state, self.pilot_state, self.vflags)


def ev_connected(state: BoardState) -> bool:
    """The EV-connected flag: ReadPilot() keeps it right even asleep (not while disabled, at -12 V)."""
    if state.vflags is not None:
        return bool(state.vflags & VF_EV_CONNECTED)
    return state.evse_state in (STATE_B, STATE_C, STATE_D)


def relay_closed(state: BoardState) -> bool:
    """The board's relay as it reports it; a stuck relay counts as closed."""
    if state.evse_state == STUCK_RELAY:
        return True
    if state.vflags is not None:
        return bool(state.vflags & VF_CHARGING_ON)
    return state.evse_state == STATE_C


def auth_locked(state: BoardState) -> bool:
    """The auth lock ($S4 1): the board holds the EV out of C and keeps the pilot at steady +12 V."""
    return state.vflags is not None and bool(state.vflags & VF_AUTH_LOCKED)


def boot_locked(state: BoardState) -> bool:
    """The boot lock (firmware built with BOOTLOCK): the board sits in setup() until $SB, its
    state 00, the EV unseen. Every 8.2.3 release build from 2023-02-06 to 2025-01-07 has it."""
    return state.vflags is not None and bool(state.vflags & VF_BOOT_LOCK)


def in_fault(state: BoardState) -> bool:
    """A fault state: the board runs its own recovery (GFCI retry, unplug), mode commands disturb it."""
    return DIODE_CHECK_FAILED <= state.evse_state < SLEEPING


def parse_state(frame: Frame, now: float) -> BoardState:
    """A $GS answer (evsestate elapsed [pilotstate vflags]) or an async $AT/$ST as a BoardState."""
    a = frame.args
    try:
        if frame.name == "AT":  # evsestate pilotstate currentcapacity vflags
            return BoardState(int(a[0], 16), int(a[1], 16), int(a[3], 16), now, int(a[2]))
        if frame.name == "ST":  # legacy: evsestate only
            return BoardState(int(a[0], 16), None, None, now)
        return BoardState(int(a[0], 16), int(a[2], 16) if len(a) > 2 else None,
                          int(a[3], 16) if len(a) > 3 else None, now)
    except (IndexError, ValueError):
        raise TryAgain(f"unreadable OpenEVSE state ${frame.name} {' '.join(a)}") from None


def pilot_reading(state: BoardState) -> PilotReading | None:
    """Representative CP voltages for the board's state as the firmware means it, so the core
    classifies it unchanged.

    A: +12/+12. B, C, D with PWM: level/-12. Auth-locked (steady +12 V, Update() still runs): the
    EV's level from pilotstate on both plateaus. Sleeping: Update() returns before it sets either
    state field, so only the EV-connected flag and the relay are current: a relay still closed
    means the board is waiting for the EV to leave C; else B when connected, A when not. Diode
    check failed: a plateau without the -12 V low level (the core's own diode check trips).
    Disabled and other faults: -12/-12 (F). Unknown, or boot-locked (Update() has not run: even
    the EV-connected flag is not read yet): None.
    """
    if boot_locked(state):
        return None
    s = state.evse_state
    if s in (STATE_A, STATE_B) and auth_locked(state) and state.pilot_state in _LEVEL_V:
        level = _LEVEL_V[state.pilot_state]
        return PilotReading(level, level)
    if s == STATE_A:
        return PilotReading(12.0, 12.0)
    if s in (STATE_B, STATE_C, STATE_D):
        return PilotReading(_LEVEL_V[s], -12.0)
    if s == SLEEPING:
        if state.vflags is None:  # firmware without vflags: its stale pilot state is all there is
            seen = state.pilot_state if state.pilot_state in _LEVEL_V else STATE_A
        else:
            seen = STATE_C if relay_closed(state) else STATE_B if ev_connected(state) else STATE_A
        return PilotReading(_LEVEL_V[seen], _LEVEL_V[seen])
    if s == DIODE_CHECK_FAILED:
        level = _LEVEL_V[state.pilot_state] if state.pilot_state in (STATE_B, STATE_C, STATE_D) else 9.0
        return PilotReading(level, level)
    if s == DISABLED or DIODE_CHECK_FAILED < s < SLEEPING:
        return PilotReading(-12.0, -12.0)
    return None


def left_mode(mode: str, evse_state: int) -> bool:
    """True when the board's state says it is not in mode (enable, sleep, disable); faults never count."""
    if DIODE_CHECK_FAILED <= evse_state < SLEEPING or evse_state == STATE_UNKNOWN:
        return False  # a fault: the board decides, resending would not help
    if mode == "enable":
        return evse_state in (SLEEPING, DISABLED)
    return evse_state != (SLEEPING if mode == "sleep" else DISABLED)


# --- the link ----------------------------------------------------------------------------------


class RapiLink:
    """One serial port to one board. request() is thread-safe and blocks up to timeout_s.

    Answers ($OK/$NK) go to the one pending request; every other frame (async $AT, $ST,
    $AB...) goes to on_notify(frame) in the reader thread. A port that fails (a USB adapter
    unplugged) is lost: requests raise DeviceUnavailable while the reader thread tries to open
    it again every reopen_s; once it is back, on_reopen() runs there, then requests work again.
    """

    def __init__(self, port: str, baudrate: int = 115200, timeout_s: float = 0.5,
                 sequence_ids: bool = True, on_notify: Callable[[Frame], None] | None = None,
                 reopen_s: float = 2.0, on_reopen: Callable[[], None] | None = None):
        self.port, self.baudrate, self.timeout_s, self.sequence_ids = port, baudrate, timeout_s, sequence_ids
        self.on_notify, self.on_reopen, self.reopen_s = on_notify, on_reopen, reopen_s
        self.garbage_lines = 0  # noise and corrupt frames seen, for `evsed check` and the log
        self.reopened = 0  # how often the port came back, for `evsed check` and the tests
        self._serial = self._open()
        self._lock = threading.Lock()  # one request on the wire at a time
        self._answers: queue.Queue = queue.Queue()
        self._seq = itertools.cycle(range(1, 256))  # 00 is reserved by the protocol
        self._stop = threading.Event()
        self._lost: str | None = None
        self._reader = threading.Thread(target=self._read_loop, name=f"rapi-read {port}", daemon=True)
        self._reader.start()

    def request(self, command: str, timeout_s: float | None = None) -> Frame:
        """Send '$<command>' and return the $OK answer; $NK raises Refused, silence or a corrupt
        answer TryAgain, a lost port DeviceUnavailable."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        with self._lock:
            self._check_open()
            while not self._answers.empty():  # late answers to requests that timed out
                self._answers.get_nowait()
            seq = next(self._seq) if self.sequence_ids else None
            try:
                self._serial.write(encode(command, seq))
            except Exception as exc:  # pyserial raises SerialException or OSError subclasses
                raise TryAgain(f"OpenEVSE {self.port}: writing ${command} failed: {exc}") from exc
            deadline = time.monotonic() + timeout_s
            while True:
                remaining = deadline - time.monotonic()
                try:
                    item = self._answers.get(timeout=max(remaining, 0.0)) if remaining > 0 else None
                except queue.Empty:
                    item = None
                if item is None:
                    self._check_open()
                    raise TryAgain(f"OpenEVSE {self.port}: no answer to ${command} within {timeout_s:g} s")
                if isinstance(item, _Garbled):
                    raise TryAgain(f"OpenEVSE {self.port}: corrupt answer to ${command}: {item.reason}")
                if seq is not None and item.seq is not None and item.seq != seq:
                    log.debug("rapi.stale_answer", port=self.port, command=command, seq=item.seq)
                    continue
                if item.name == "NK":
                    raise Refused(f"OpenEVSE {self.port}: board refused ${command} "
                                  f"($NK{' ' + ' '.join(item.args) if item.args else ''})", item)
                return item

    @property
    def lost(self) -> str | None:
        """Why the port stopped working (unplugged adapter...), or None while it works."""
        return self._lost

    def close(self) -> None:
        """Stop the reader (also while it waits to reopen) and close the port; never blocks long."""
        self._stop.set()
        self._reader.join(timeout=1.0 + self.timeout_s)
        self._close_port(self._serial)

    def _open(self):  # -> serial.Serial; pyserial has no type hints
        return open_serial(self.port, self.baudrate, device="OpenEVSE", timeout=0.05, write_timeout=1.0)

    def _close_port(self, port) -> None:
        try:
            port.close()
        except Exception as exc:  # closing a vanished port: nothing left to do but say so
            log.debug("rapi.close_failed", port=self.port, error=str(exc))

    def _check_open(self) -> None:
        if self._lost is not None:
            raise DeviceUnavailable(f"OpenEVSE {self.port}: serial link lost: {self._lost} "
                                    f"(opening it again every {self.reopen_s:g} s)")
        if self._stop.is_set():
            raise DeviceUnavailable(f"OpenEVSE {self.port}: link closed")

    def _read_loop(self) -> None:
        buffer = b""
        while not self._stop.is_set():
            try:
                chunk = self._serial.read(self._serial.in_waiting or 1)
            except Exception as exc:  # the adapter was unplugged or the port closed under us
                if self._stop.is_set():
                    return
                self._lost = str(exc)
                log.error("rapi.link_lost", port=self.port, error=str(exc), reopen_s=self.reopen_s)
                if not self._reopen():
                    return
                buffer = b""  # a line cut by the unplug is noise
                continue
            buffer += chunk
            *lines, buffer = buffer.split(EOC)
            if len(buffer) > MAX_FRAME_CHARS:
                self._garbage(buffer, "line too long")
                buffer = b""
            for line in lines:
                line = line.strip(b"\n\x00")
                if line:
                    self._dispatch(line)

    def _reopen(self) -> bool:
        """Close the lost port, then open it again every reopen_s until it works (True) or the
        link is closed (False). Runs in the reader thread: requests fail at once meanwhile."""
        lost_at = time.monotonic()
        with self._lock:  # a request still on the wire times out first; none starts while lost
            self._close_port(self._serial)
        attempts, last_error = 0, ""
        while not self._stop.wait(self.reopen_s):
            attempts += 1
            try:
                serial_port = self._open()
            except (HalError, OSError) as exc:
                if str(exc) != last_error:  # one line per new reason, not one per attempt
                    log.info("rapi.reopen_failed", port=self.port, error=str(exc), attempts=attempts)
                    last_error = str(exc)
                continue
            with self._lock:
                if self._stop.is_set():  # closed while opening: close() knows only the old port
                    self._close_port(serial_port)
                    return False
                self._serial = serial_port
                if self.on_reopen is not None:  # before requests work (it may not send any: the lock is held)
                    try:
                        self.on_reopen()
                    except Exception:  # a consumer's bug must not keep the link down
                        log.exception("rapi.reopen_callback_failed", port=self.port)
                self.reopened += 1
                self._lost = None
            log.info("rapi.link_reopened", port=self.port, attempts=attempts,
                     lost_s=round(time.monotonic() - lost_at, 2))
            return True
        return False

    def _dispatch(self, line: bytes) -> None:
        try:
            frame = decode(line)
        except FrameError as exc:
            self._garbage(line, str(exc))
            if looks_like_answer(line):
                self._answers.put(_Garbled(line, str(exc)))
            return
        if frame.is_answer:
            self._answers.put(frame)
        elif self.on_notify is not None:
            try:
                self.on_notify(frame)
            except Exception:  # a consumer's bug must not kill the reader
                log.exception("rapi.notify_failed", port=self.port, frame=frame.name)

    def _garbage(self, line: bytes, reason: str) -> None:
        self.garbage_lines += 1
        if self.garbage_lines & (self.garbage_lines - 1):  # log the 1st, 2nd, 4th, 8th...: a noisy line stays quiet
            return
        log.warning("rapi.garbage", port=self.port, line=line[:MAX_FRAME_CHARS].decode("ascii", "replace"),
                    reason=reason, count=self.garbage_lines)
