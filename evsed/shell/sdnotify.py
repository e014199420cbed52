"""systemd notification: READY=1 once started, WATCHDOG=1 while the safety loop is healthy.

Speaks the sd_notify datagram protocol directly; does nothing outside systemd. Only
evsed.shell.safety_loop sends WATCHDOG=1, so a ping means the loop that opens the contactors turns.
"""

from __future__ import annotations

import os
import socket


def notify(message: str) -> bool:
    """Send one notification; never blocks (a full queue drops it: the next one follows soon)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(message.encode(), socket.MSG_DONTWAIT, address)
        except BlockingIOError:
            return False
    return True


def watchdog_interval_s() -> float | None:
    """How often systemd wants WATCHDOG=1 (half its WatchdogSec=), or None when it does not ask us."""
    usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
    pid = os.environ.get("WATCHDOG_PID", "")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 2e6
