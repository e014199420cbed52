"""Opening serial ports (pyserial) for every serial backend: RFID readers, OpenEVSE boards.

One place maps a failed open to DeviceUnavailable naming the port and the fix.
"""

from __future__ import annotations

import errno

from hal import DeviceUnavailable


def open_serial(port: str, baudrate: int, *, device: str, timeout: float | None,
                write_timeout: float | None = None):
    """Open `port` 8N1 for `device` (e.g. "rfid pn532"); failures are DeviceUnavailable."""
    try:
        import serial  # pyserial is a base dependency; imported here to keep hal imports light
    except ImportError as exc:
        raise DeviceUnavailable(f"{device} needs pyserial: pip install pyserial ({exc})") from exc
    try:
        return serial.Serial(port=port, baudrate=baudrate, bytesize=8, parity="N", stopbits=1,
                             timeout=timeout, write_timeout=write_timeout, exclusive=True)
    except serial.SerialException as exc:
        raise unavailable(exc, port, device) from exc
    except ValueError as exc:
        raise DeviceUnavailable(f"{device}: cannot open {port} at {baudrate} baud: {exc}") from exc


def unavailable(exc: BaseException, port: str, device: str) -> DeviceUnavailable:
    """The DeviceUnavailable for an OSError/SerialException on `port`, with what to do about it."""
    code = getattr(exc, "errno", None)
    if code == errno.ENOENT:
        why = "no such device file (is the adapter plugged in? see ls /dev/serial/by-id)"
    elif code in (errno.EACCES, errno.EPERM):
        why = "permission denied: add the evsed user to the dialout group"
    elif code in (errno.EBUSY, errno.EAGAIN):
        why = "port in use by another process (a serial console or getty?)"
    else:
        why = str(exc)
    return DeviceUnavailable(f"{device}: cannot open {port}: {why}")
