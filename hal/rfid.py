"""Card readers: the shared tap plumbing (debounce, thread-to-loop feed, serial open) and RDM6300.

PN532, RC522 and keyboard (HID) readers live in hal/rfid_pn532.py, rfid_rc522.py, rfid_hid.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Callable

import structlog

from hal import DeviceUnavailable, HalError, TryAgain, canonical_uid
from hal.serialport import open_serial

log = structlog.get_logger()

Clock = Callable[[], float]

# Transient failures in a row before next_tap() raises TryAgain (once per streak): one glitch
# is only logged; a reader that keeps failing is reported so `evsed status` can say so.
FAILURES_BEFORE_RAISE = 3


class Debouncer:
    """A card held on the reader is one tap: a UID counts again only after it was absent
    (not read) for hold_off_s seconds. Readers that stream (RDM6300) and readers that are
    polled (PN532, RC522) both just report every read; absence is the silence between."""

    def __init__(self, hold_off_s: float, clock: Clock = time.monotonic):
        self.hold_off_s = hold_off_s
        self._clock = clock
        self._last_seen: dict[str, float] = {}

    def is_new_tap(self, uid: str) -> bool:
        now = self._clock()
        # Forget cards gone for longer than the hold-off, so the dict stays tiny.
        self._last_seen = {u: t for u, t in self._last_seen.items() if now - t < self.hold_off_s}
        new = uid not in self._last_seen
        self._last_seen[uid] = now
        return new


class TapFeed:
    """next_tap() for every backend: taps (UIDs) and errors pushed from a reader thread or
    from a loop callback, awaited on the event loop. Subclasses start their input in _start()."""

    def __init__(self, name: str, hold_off_s: float, clock: Clock = time.monotonic):
        self.name = name
        self.debounce = Debouncer(hold_off_s, clock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue | None = None
        self._failures = 0

    async def next_tap(self) -> str:
        """Wait for the next card; returns its canonical UID (upper-case hex).

        Raises DeviceUnavailable when the reader is gone, TryAgain when it keeps failing
        (the reader keeps retrying; call next_tap() again)."""
        if self._queue is None:
            self._loop = asyncio.get_running_loop()
            self._queue = asyncio.Queue()
            self._start(self._loop)
        item = await self._queue.get()
        if isinstance(item, HalError):
            raise item
        return item

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        raise NotImplementedError

    # --- producers: decide in the producer's context (thread or loop), deliver on the loop ---

    def _on_read(self, uid: str) -> bool:
        """One read of a card (may be the same card again): True if it is a new tap."""
        self._on_ok()
        if not self.debounce.is_new_tap(uid):
            return False
        log.info("rfid.tap", reader=self.name, uid=uid)
        return True

    def _on_failure(self, exc: HalError) -> bool:
        """A read failed: True if next_tap() should raise it. DeviceUnavailable always is;
        TryAgain once per streak of FAILURES_BEFORE_RAISE."""
        if not isinstance(exc, TryAgain):
            log.error("rfid.reader_lost", reader=self.name, error=str(exc))
            return True
        self._failures += 1
        if self._failures == 1:
            log.warning("rfid.read_failed", reader=self.name, error=str(exc))
        return self._failures == FAILURES_BEFORE_RAISE

    def _on_ok(self) -> None:
        if self._failures:
            log.info("rfid.read_recovered", reader=self.name, failures=self._failures)
            self._failures = 0

    def _deliver(self, item: str | HalError) -> None:
        """Runs on the loop."""
        assert self._queue is not None, "set up by next_tap() before the worker starts"
        self._queue.put_nowait(item)

    def _deliver_threadsafe(self, item: str | HalError) -> None:
        assert self._loop is not None, "set up by next_tap() before the worker starts"
        try:
            self._loop.call_soon_threadsafe(self._deliver, item)
        except RuntimeError:  # the loop has closed: nobody is waiting for taps any more
            pass


class PollingReader(TapFeed):
    """A reader that must be asked (PN532, RC522): poll() runs in a worker thread every
    interval_s, returns a UID or None, and may block on the bus without stalling the loop."""

    def __init__(self, name: str, poll: Callable[[], str | None], interval_s: float,
                 hold_off_s: float, clock: Clock = time.monotonic,
                 close: Callable[[], None] | None = None):
        super().__init__(name, hold_off_s, clock)
        self._poll, self._interval_s, self._close = poll, interval_s, close
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._thread = threading.Thread(target=self._run, name=f"rfid-{self.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                uid = self._poll()
            except DeviceUnavailable as exc:
                self._on_failure(exc)
                self._deliver_threadsafe(exc)
                return
            except TryAgain as exc:
                if self._on_failure(exc):
                    self._deliver_threadsafe(exc)
            except Exception as exc:  # a bug or an unforeseen driver error: report, stop
                log.exception("rfid.poll_crashed", reader=self.name)
                self._deliver_threadsafe(DeviceUnavailable(f"rfid {self.name}: reader stopped: {exc!r}"))
                return
            else:
                if uid is None:
                    self._on_ok()
                elif self._on_read(uid):
                    self._deliver_threadsafe(uid)
            self._stop.wait(self._interval_s)

    def release(self) -> None:
        """Stop polling and free the bus. Safe to call twice."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if self._close is not None:
            close, self._close = self._close, None
            close()


# --- RDM6300: 125 kHz EM4100 readers sending ASCII frames ---------------------------------
#
# Frame: STX 0x02, 10 ASCII hex chars (version/customer byte + 4 ID bytes), 2 ASCII hex
# checksum chars (XOR of the 5 data bytes), ETX 0x03; 9600 8N1; repeated while the card is
# held. Canonical UID: the 10 data hex chars as sent, upper-case ("13005D1DA5"). The number
# printed on many such cards is the decimal of the last 4 bytes (0x005D1DA5 = 6102437).

STX, ETX = 0x02, 0x03
_RDM_DATA = 10
_RDM_BODY = _RDM_DATA + 2
_HEX = frozenset(b"0123456789abcdefABCDEF")


def rdm6300_checksum(data_hex: str) -> int:
    """XOR of the 5 bytes that the 10 data hex chars encode."""
    out = 0
    for byte in bytes.fromhex(data_hex):
        out ^= byte
    return out


def rdm6300_frame(uid: str) -> bytes:
    """The frame a reader sends for the 10-hex-char UID (used by tests and the simulator)."""
    return bytes([STX]) + f"{uid.upper()}{rdm6300_checksum(uid):02X}".encode() + bytes([ETX])


class Rdm6300Parser:
    """Bytes in, good UIDs out. Bad checksums, truncated frames and line noise are logged
    (rfid.frame_rejected) and skipped; the parser resynchronises on the next STX."""

    def __init__(self, reader: str = "rdm6300"):
        self.reader = reader
        self.rejected = 0
        self._frame: bytearray | None = None  # bytes after STX while inside a frame
        self._noise = 0  # bytes seen outside any frame since the last report

    def feed(self, data: bytes) -> list[str]:
        uids = []
        for byte in data:
            if byte == STX:
                if self._frame is not None:
                    self._reject("truncated", bytes(self._frame))
                self._flush_noise()
                self._frame = bytearray()
            elif self._frame is None:
                self._noise += 1
            elif byte == ETX:
                uid = self._check(bytes(self._frame))
                self._frame = None
                if uid is not None:
                    uids.append(uid)
            else:
                self._frame.append(byte)
                if len(self._frame) > _RDM_BODY:
                    self._reject("overlong", bytes(self._frame))
                    self._frame = None
        return uids

    def _check(self, body: bytes) -> str | None:
        if len(body) != _RDM_BODY or not _HEX.issuperset(body):
            self._reject("malformed", body)
            return None
        text = body.decode("ascii")
        data, check = text[:_RDM_DATA], int(text[_RDM_DATA:], 16)
        if rdm6300_checksum(data) != check:
            self._reject("bad_checksum", body)
            return None
        return canonical_uid(data)

    def _reject(self, reason: str, body: bytes) -> None:
        self.rejected += 1
        log.warning("rfid.frame_rejected", reader=self.reader, reason=reason, frame=body.hex())

    def _flush_noise(self) -> None:
        if self._noise:
            self.rejected += 1
            log.warning("rfid.frame_rejected", reader=self.reader, reason="noise", bytes=self._noise)
            self._noise = 0


class FdReader(TapFeed):
    """A reader whose device file is watched by the event loop (loop.add_reader): the device
    only ever talks, so nothing waits and no thread is needed."""

    def __init__(self, name: str, hold_off_s: float, clock: Clock):
        super().__init__(name, hold_off_s, clock)
        self._fd: int | None = None

    def _watch(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        self._fd = fd
        loop.add_reader(fd, self._on_readable)

    def _on_readable(self) -> None:
        raise NotImplementedError

    def _offer(self, uid: str | None) -> None:
        """A decoded UID: delivered when it is a new tap."""
        if uid is not None and self._on_read(uid):
            self._deliver(uid)

    def _lost(self, message: str) -> None:
        """The device went away (unplugged): stop watching and tell next_tap() once."""
        self._stop_reading()
        lost = DeviceUnavailable(message)
        self._on_failure(lost)
        self._deliver(lost)

    def _stop_reading(self) -> None:
        if self._fd is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
        self._fd = None


class Rdm6300Reader(FdReader):
    """RDM6300 on a serial port. Reads run on the event loop through loop.add_reader on the
    port's file descriptor: the reader only ever talks, so there is no request/response to
    wait for and no thread is needed; a read never blocks (the port has timeout=0)."""

    def __init__(self, port, hold_off_s: float = 1.0, clock: Clock = time.monotonic,
                 name: str = "rdm6300"):
        super().__init__(name, hold_off_s, clock)
        self._port = port
        self._parser = Rdm6300Parser(name)

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._watch(loop, self._port.fileno())

    def _on_readable(self) -> None:
        import serial

        try:
            data = self._port.read(max(1, self._port.in_waiting))
        except (serial.SerialException, OSError) as exc:
            self._lost(f"rfid {self.name}: {self._port.port} disconnected: {exc}")
            return
        for uid in self._parser.feed(data):
            self._offer(uid)

    def release(self) -> None:
        self._stop_reading()
        self._port.close()


def rdm6300_reader(options: dict[str, Any], ctx) -> Rdm6300Reader:
    """Factory for the "rdm6300" backend: options port, baudrate, hold_off_s."""
    port = open_serial(options["port"], options["baudrate"], device="rfid rdm6300", timeout=0)
    return Rdm6300Reader(port, options["hold_off_s"], _clock(ctx), name="rdm6300")


def _clock(ctx) -> Clock:
    # The simulator (and tests) may share a fake monotonic clock with every backend.
    shared = getattr(ctx, "shared", None) or {}
    return shared.get("clock", time.monotonic)
