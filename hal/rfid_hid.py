"""USB card readers that act as a keyboard: they type the UID (decimal or hex) then Enter.
Read through evdev (imported only when configured), with the device grabbed from the console.

Canonical UID: format "hex" keeps the typed hex digits (upper-case, a leading 0 added to an
odd count). Format "decimal" turns the number into big-endian bytes (at least 4) written as
hex: "0012345678" -> 00BC614E. byte_order "lsb" reverses those bytes, for the many readers
that type a 4-byte UID least significant byte first, so the UID matches what an RC522 or
PN532 reads (DE AD BE EF typed as 4022250974 -> DEADBEEF). A 125 kHz reader typing 10
digits gives the last 4 of the 5 EM4100 bytes, not the 10 hex chars an RDM6300 reports.
"""

from __future__ import annotations

import asyncio
import errno
import time
from typing import Any

import structlog

from hal import DeviceUnavailable
from hal.rfid import Clock, FdReader, _clock

log = structlog.get_logger()

# Linux input event codes (include/uapi/linux/input-event-codes.h), a stable kernel ABI,
# so the decoder needs no evdev import and can be tested without it.
EV_KEY = 0x01
KEY_DOWN = 1
_DIGITS = {11: "0", 2: "1", 3: "2", 4: "3", 5: "4", 6: "5", 7: "6", 8: "7", 9: "8", 10: "9",
           82: "0", 79: "1", 80: "2", 81: "3", 75: "4", 76: "5", 77: "6", 71: "7", 72: "8",
           73: "9"}  # top row and keypad
_HEX_LETTERS = {30: "A", 48: "B", 46: "C", 32: "D", 18: "E", 33: "F"}
_ENTER = {28, 96}  # KEY_ENTER, KEY_KPENTER
_SHIFT = {42, 54}  # readers typing upper-case hex press shift: ignore it
MAX_CHARS = 32


def uid_from_typed(text: str, fmt: str = "decimal", byte_order: str = "msb") -> str:
    """The canonical UID for what a reader typed; raises ValueError for anything else."""
    if fmt == "decimal":
        if not text.isdigit():
            raise ValueError(f"not a decimal UID: {text!r}")
        value = int(text)
        raw = value.to_bytes(max(4, (value.bit_length() + 7) // 8), "big")
    elif fmt == "hex":
        if not text or any(c not in "0123456789abcdefABCDEF" for c in text):
            raise ValueError(f"not a hex UID: {text!r}")
        raw = bytes.fromhex(text.rjust(len(text) + len(text) % 2, "0"))
    else:
        raise ValueError(f"unknown format {fmt!r}")
    if byte_order == "lsb":
        raw = raw[::-1]
    return raw.hex().upper()


class HidDecoder:
    """Key events in, a UID out at each Enter. Only key-down events count (auto-repeat and
    releases are ignored); a line with any other key is logged and dropped."""

    def __init__(self, fmt: str = "decimal", byte_order: str = "msb", reader: str = "hid"):
        self.fmt, self.byte_order, self.reader = fmt, byte_order, reader
        self.rejected = 0
        self._chars: list[str] = []
        self._bad_keys = 0

    def feed(self, ev_type: int, code: int, value: int) -> str | None:
        if ev_type != EV_KEY or value != KEY_DOWN or code in _SHIFT:
            return None
        if code in _ENTER:
            return self._end_line()
        char = _DIGITS.get(code) or (_HEX_LETTERS.get(code) if self.fmt == "hex" else None)
        if char is None or len(self._chars) >= MAX_CHARS:
            self._bad_keys += 1
        else:
            self._chars.append(char)
        return None

    def _end_line(self) -> str | None:
        text, bad = "".join(self._chars), self._bad_keys
        self._chars, self._bad_keys = [], 0
        try:
            if bad:
                raise ValueError(f"{bad} unexpected key(s)")
            return uid_from_typed(text, self.fmt, self.byte_order)
        except ValueError as exc:
            self.rejected += 1
            log.warning("rfid.frame_rejected", reader=self.reader, reason=str(exc), typed=text)
            return None


class HidReader(FdReader):
    """An evdev InputDevice read on the event loop through loop.add_reader on its fd."""

    def __init__(self, device, decoder: HidDecoder, hold_off_s: float = 1.0,
                 clock: Clock = time.monotonic, name: str = "hid"):
        super().__init__(name, hold_off_s, clock)
        self._device, self._decoder = device, decoder

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._watch(loop, self._device.fd)

    def _on_readable(self) -> None:
        try:
            events = list(self._device.read())
        except BlockingIOError:
            return
        except OSError as exc:  # ENODEV: unplugged
            self._lost(f"rfid hid: {self._device.path} disconnected: {exc}")
            return
        for event in events:
            self._offer(self._decoder.feed(event.type, event.code, event.value))

    def release(self) -> None:
        self._stop_reading()
        try:
            self._device.close()  # closing also ends the grab
        except OSError:
            pass  # already gone with the USB device


def _import_evdev():
    try:
        import evdev
    except ImportError as exc:
        raise DeviceUnavailable(
            f"rfid hid: needs the Python package evdev: pip install evdev ({exc})") from exc
    return evdev


def _open(evdev, path: str):
    try:
        return evdev.InputDevice(path)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            why = "no such device file (see ls -l /dev/input/by-id)"
        elif exc.errno == errno.EACCES:
            why = "permission denied: add the evsed user to the input group"
        else:
            why = str(exc)
        raise DeviceUnavailable(f"rfid hid: cannot open {path}: {why}") from exc


def _find_by_name(evdev, name: str):
    seen = []
    for path in evdev.list_devices():
        try:
            device = evdev.InputDevice(path)
        except OSError:
            continue
        keys = device.capabilities().get(EV_KEY, [])
        if name.lower() in device.name.lower() and any(k in _ENTER for k in keys):
            return device
        seen.append(device.name)
        device.close()
    hint = (f"input devices found: {', '.join(seen)}" if seen else
            "no readable input devices: is the evsed user in the input group?")
    raise DeviceUnavailable(f"rfid hid: no keyboard device named like {name!r}; {hint}")


def hid_reader(options: dict[str, Any], ctx) -> HidReader:
    """Factory for the "hid" backend: options device or name, format, byte_order, grab,
    hold_off_s."""
    evdev = _import_evdev()
    if bool(options["device"]) == bool(options["name"]):
        raise DeviceUnavailable("rfid hid: set exactly one of device (an /dev/input path) or name")
    if options["device"]:
        device = _open(evdev, options["device"])
    else:
        device = _find_by_name(evdev, options["name"])
    if options["grab"]:
        try:
            device.grab()  # keystrokes reach only evsed, not a console or a desktop
        except OSError as exc:
            device.close()
            raise DeviceUnavailable(f"rfid hid: cannot grab {device.path}: another process "
                                    f"holds it ({exc})") from exc
    log.info("rfid.reader_found", reader="hid", device=device.path, name=device.name)
    decoder = HidDecoder(options["format"], options["byte_order"])
    return HidReader(device, decoder, options["hold_off_s"], _clock(ctx))
