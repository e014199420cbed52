"""PN532 NFC reader over its UART (HSU), written from NXP's PN532 user manual (UM0701-02):
frames with LEN/LCS/DCS checksums, ACK frames, SAMConfiguration and InListPassiveTarget.

A worker thread (hal.rfid.PollingReader) asks for an ISO14443A target every poll_interval_s;
the PN532 is told to give up after a few activation retries so "no card" is an answer too.
"""

from __future__ import annotations

import time
from typing import Any

import structlog

from hal import DeviceUnavailable, TryAgain, canonical_uid
from hal.rfid import PollingReader, _clock
from hal.serialport import open_serial, unavailable

log = structlog.get_logger()

ACK = bytes([0x00, 0x00, 0xFF, 0x00, 0xFF, 0x00])
NACK = bytes([0x00, 0x00, 0xFF, 0xFF, 0x00, 0x00])
HOST_TO_PN532, PN532_TO_HOST = 0xD4, 0xD5
ERROR_FRAME_BODY = bytes([0x7F])  # 00 00 FF 01 FF 7F 81 00: application-level syntax error

GET_FIRMWARE_VERSION = 0x02
SAM_CONFIGURATION = 0x14
RF_CONFIGURATION = 0x32
IN_LIST_PASSIVE_TARGET = 0x4A

# HSU wake-up (manual 7.2.11 / HSU wake-up condition): 0x55 then a long preamble of zeros,
# sent before the first command after power-on or power-down.
WAKE_UP = bytes([0x55, 0x55]) + bytes(14)

# RFConfiguration item 0x05 MaxRetries: MxRtyATR, MxRtyPSL, MxRtyPassiveActivation. 0xFF
# would make InListPassiveTarget wait for a card forever; a few retries make it answer
# NbTg = 0 within milliseconds when the field is empty.
MAX_RETRIES = bytes([0x05, 0xFF, 0x01, 0x02])


# --- frames (manual 6.2.1) ------------------------------------------------------------


def frame(data: bytes, tfi: int = HOST_TO_PN532) -> bytes:
    """A normal information frame: 00 00 FF LEN LCS TFI PD0..PDn DCS 00.

    LEN counts TFI and data; LEN + LCS = 0 and TFI + PD0 + ... + PDn + DCS = 0 (mod 256)."""
    body = bytes([tfi]) + bytes(data)
    if len(body) > 255:
        raise ValueError("PN532 normal frames carry at most 254 data bytes")
    length = len(body)
    return (bytes([0x00, 0x00, 0xFF, length, -length & 0xFF]) + body
            + bytes([-sum(body) & 0xFF, 0x00]))


class FrameReader:
    """Reads one frame from a pyserial-like port opened with a short timeout (read(n) may
    return fewer bytes; the deadline bounds the whole frame).

    Returns ACK, NACK, or the body (TFI + data). A bad checksum is TryAgain; nothing before
    the deadline is TryAgain; bytes before the 00 FF start code are skipped."""

    def __init__(self, port):
        self._port = port

    def read(self, timeout_s: float) -> bytes:
        deadline = time.monotonic() + timeout_s
        previous = None
        while True:  # synchronise on the start code 00 FF
            byte = self._take(1, deadline)[0]
            if previous == 0x00 and byte == 0xFF:
                break
            previous = byte
        length, lcs = self._take(2, deadline)
        if (length, lcs) == (0x00, 0xFF):
            return ACK
        if (length, lcs) == (0xFF, 0x00):
            return NACK
        if (length, lcs) == (0xFF, 0xFF):  # extended frame: LENM LENL LCS
            high, low, lcs = self._take(3, deadline)
            if (high + low + lcs) & 0xFF:
                raise TryAgain("PN532 extended frame: bad length checksum")
            length = high << 8 | low
        elif (length + lcs) & 0xFF:
            raise TryAgain(f"PN532 frame: bad length checksum (LEN {length:#04x}, LCS {lcs:#04x})")
        body = self._take(length, deadline)
        dcs = self._take(1, deadline)[0]
        if (sum(body) + dcs) & 0xFF:
            raise TryAgain("PN532 frame: bad data checksum")
        # The postamble is not read: the next read resynchronises on 00 FF anyway, and a
        # missing postamble must not cost a timeout.
        return body

    def _take(self, count: int, deadline: float) -> bytes:
        out = b""
        while len(out) < count:
            if time.monotonic() > deadline:
                raise TryAgain("PN532 did not answer in time")
            out += self._port.read(count - len(out))
        return out


def parse_target(data: bytes) -> bytes | None:
    """The NFCID1 (UID) from InListPassiveTarget's answer for 106 kbps type A:
    NbTg, then Tg SENS_RES(2) SEL_RES NFCIDLength NFCID1 [ATSLength ATS]. None if NbTg is 0."""
    if not data:
        raise TryAgain("PN532 InListPassiveTarget: empty answer")
    if data[0] == 0:
        return None
    if len(data) < 6:
        raise TryAgain(f"PN532 InListPassiveTarget: short answer {data.hex()}")
    uid_length = data[5]
    uid = data[6:6 + uid_length]
    if uid_length not in (4, 7, 10) or len(uid) != uid_length:
        raise TryAgain(f"PN532 InListPassiveTarget: bad NFCID length in {data.hex()}")
    return uid


class Pn532:
    """The HSU command/response exchange. Every method blocks; call it from a worker thread."""

    def __init__(self, port, response_timeout_s: float = 1.0):
        self.port = port
        self._frames = FrameReader(port)
        self._timeout_s = response_timeout_s

    def command(self, code: int, params: bytes = b"", *, wake: bool = False) -> bytes:
        """Send one command, wait for the ACK and the response; returns the response data
        after the response code (code + 1). Raises TryAgain on any protocol failure."""
        import serial

        try:
            self.port.reset_input_buffer()
            self.port.write((WAKE_UP if wake else b"") + frame(bytes([code]) + params))
            if self._frames.read(self._timeout_s) != ACK:
                raise TryAgain(f"PN532 did not acknowledge command {code:#04x}")
            body = self._frames.read(self._timeout_s)
        except TryAgain:
            raise  # a TimeoutError, hence an OSError: not a lost port
        except serial.SerialException as exc:
            raise unavailable(exc, self.port.port, "rfid pn532") from exc
        except OSError as exc:
            raise DeviceUnavailable(f"rfid pn532: {self.port.port}: {exc}") from exc
        if body == ERROR_FRAME_BODY:
            raise TryAgain(f"PN532 reports a syntax error for command {code:#04x}")
        if len(body) < 2 or body[0] != PN532_TO_HOST or body[1] != code + 1:
            raise TryAgain(f"PN532 answered {body.hex()} to command {code:#04x}")
        return body[2:]

    def begin(self) -> tuple[int, int, int]:
        """Wake the chip, leave the SAM out, bound the activation retries; returns the
        firmware (IC, version, revision)."""
        self.command(SAM_CONFIGURATION, bytes([0x01, 0x14, 0x01]), wake=True)  # normal mode
        version = self.command(GET_FIRMWARE_VERSION)
        self.command(RF_CONFIGURATION, MAX_RETRIES)
        if len(version) < 3:
            raise TryAgain(f"PN532 firmware version answer too short: {version.hex()}")
        return version[0], version[1], version[2]

    def read_uid(self) -> str | None:
        """One InListPassiveTarget for one ISO14443A target at 106 kbps; canonical UID or None."""
        uid = parse_target(self.command(IN_LIST_PASSIVE_TARGET, bytes([0x01, 0x00])))
        return None if uid is None else canonical_uid(uid)


def pn532_reader(options: dict[str, Any], ctx) -> PollingReader:
    """Factory for the "pn532" backend: options port, baudrate, poll_interval_s, hold_off_s."""
    port_name, baudrate = options["port"], options["baudrate"]
    port = open_serial(port_name, baudrate, device="rfid pn532", timeout=0.05)
    chip = Pn532(port)
    try:
        ic, version, revision = chip.begin()
    except TryAgain as exc:
        port.close()
        raise DeviceUnavailable(
            f"rfid pn532: no PN532 answered on {port_name} at {baudrate} baud ({exc}): check "
            "that TX and RX are crossed, the module's mode switches select HSU (UART), and no "
            "serial console uses the port") from exc
    log.info("rfid.reader_found", reader="pn532", port=port_name,
             firmware=f"PN5{ic:02X} v{version}.{revision}")
    return PollingReader("pn532", chip.read_uid, options["poll_interval_s"],
                         options["hold_off_s"], _clock(ctx), close=port.close)
