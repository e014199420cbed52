"""systemd notification: READY=1 once started, WATCHDOG=1 while the event loop turns.

Speaks the sd_notify datagram protocol directly; does nothing outside systemd.
"""

from __future__ import annotations

import asyncio
import os
import socket


def notify(message: str) -> bool:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(message.encode(), address)
    return True


async def watchdog() -> None:
    """Tell systemd we are ready, then ping at half the watchdog period until cancelled."""
    notify("READY=1")
    usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
    if usec <= 0:
        await asyncio.Event().wait()  # no watchdog asked for: idle until cancelled
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(usec / 2e6)
