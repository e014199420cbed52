"""Firmware transfer, whatever the OCPP version: the release and its signature downloaded into the
update spool, for the privileged `evsed update --spool` to install, and the outcome it leaves
reported once. Its progress is told in the 1.6 FirmwareStatusNotification names (the adapter maps).

The signature is fetched from the location's path with ".sig" appended (1.6 has no signature
field), and the location's file name must be the wheel's (evsed-VERSION-py3-none-any.whl).
This process installs nothing; it checks the signature too, only to answer a bad one at once.
"""

from __future__ import annotations

import asyncio
import os
import posixpath
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Awaitable, BinaryIO, Callable, Coroutine

import structlog

from evsed.ops import spool as spoolmod
from evsed.ops import update as updatemod
from evsed.uplink.state import State
from evsed.uplink.times import iso, parse_time

log = structlog.get_logger("evsed.uplink")
POLL_S = 5.0  # how often a spooled request's outcome is looked for while it is pending


class Firmware:
    """notify(status) tells the CSMS now (when online); outcome(result) queues the installer's
    outcome durably, inside the state transaction that marks it reported; queued() wakes the sender."""

    def __init__(self, state: State, clock: Callable[[], float], *, spool_dir: Path, key_file: Path | None,
                 notify: Callable[[str], Awaitable[None]], outcome: Callable[[str], None],
                 queued: Callable[[], None], spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]):
        self.state, self.clock, self.spool_dir, self.key_file = state, clock, spool_dir, key_file
        self.notify, self.outcome, self.queued, self.spawn = notify, outcome, queued, spawn
        self.spooled = asyncio.Event()  # a request was just written: look for its outcome
        self.status = "Installing" if self.pending() else "Idle"  # what TriggerMessage reports
        self._task: asyncio.Task[None] | None = None
        self._bad_status = ""
        self.failure = ""  # why the last InstallationFailed: "signature" (missing or not by the key), or ""

    def pending(self) -> bool:
        """A request was spooled whose outcome has not been reported."""
        requested = self.state.meta("firmware_requested")
        return bool(requested) and requested != self.state.meta("firmware_reported")

    async def _send(self, status: str) -> None:
        self.status = status
        await self.notify(status)

    def start(self, location: str, retrieve_date: str, retries: int, retry_interval_s: int,
              signature: bytes | None = None) -> None:
        """A new UpdateFirmware replaces one still downloading."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = self.spawn(self.update(location, retrieve_date, retries, retry_interval_s, signature))

    async def update(self, location: str, retrieve_date: str, retries: int, retry_interval_s: int,
                     signature: bytes | None = None) -> None:
        """signature: the release's detached signature as the request carried it (2.0.1); without
        one it is fetched from the location with ".sig" appended (1.6)."""
        self.failure = ""
        try:
            wait = parse_time(retrieve_date) - self.clock()
        except ValueError:
            wait = 0
        if wait > 0:
            await asyncio.sleep(wait)
        wheel = wheel_name(location)
        key = self.key_file
        if wheel is None or key is None:
            log.warning("ocpp.firmware_refused", location=location[:200], reason=(
                "the location's file name is not an evsed wheel (evsed-VERSION-py3-none-any.whl)" if wheel is None
                else "[update] public_key_file is not set: no release can be checked"))
            await self._send("InstallationFailed")
            self.status = "Idle"
            return
        try:
            folder = spoolmod.Spool(self.spool_dir, create=True)
        except (spoolmod.SpoolError, OSError) as exc:
            log.warning("ocpp.firmware_refused", location=location[:200], reason=f"the spool: {exc}"[:300])
            await self._send("InstallationFailed")
            self.status = "Idle"
            return
        try:
            await self._spool(folder, location, wheel, key, max(1, retries), retry_interval_s, signature)
        except OSError as exc:  # the state directory is full or gone: nothing was requested
            log.warning("ocpp.firmware_not_spooled", wheel=wheel, error=f"{type(exc).__name__}: {exc}"[:200])
            await self._send("InstallationFailed")
        finally:
            folder.close()
        if self.status in ("DownloadFailed", "InstallationFailed"):
            self.status = "Idle"

    async def _spool(self, folder: spoolmod.Spool, location: str, wheel: str, key, retries: int,
                     retry_interval_s: int, inline: bytes | None) -> None:
        await self._send("Downloading")
        if not await self._download(folder, location, wheel, spoolmod.MAX_WHEEL_BYTES, retries, retry_interval_s):
            await self._send("DownloadFailed")
            return
        await self._send("Downloaded")
        signature = signature_location(location)
        if inline is not None and len(inline) <= spoolmod.MAX_SIGNATURE_BYTES:
            await asyncio.to_thread(folder.write, wheel + ".sig", inline, 0o640)
        elif not await self._download(folder, signature, wheel + ".sig", spoolmod.MAX_SIGNATURE_BYTES, retries,
                                      retry_interval_s):
            log.warning("ocpp.firmware_signature_missing", wheel=wheel, signature=signature[:200])
            folder.remove(wheel)
            self.failure = "signature"
            await self._send("InstallationFailed")
            return
        try:
            await asyncio.to_thread(updatemod.verify, folder.path / wheel, folder.path / (wheel + ".sig"), key)
        except updatemod.UpdateError as exc:
            log.warning("ocpp.firmware_signature_invalid", wheel=wheel, error=str(exc)[:300])
            folder.remove(wheel)
            folder.remove(wheel + ".sig")
            self.failure = "signature"
            await self._send("InstallationFailed")
            return
        request = spoolmod.Request(spoolmod.new_id(), wheel, location[:512], iso(self.clock()))
        await asyncio.to_thread(folder.write, spoolmod.REQUEST, spoolmod.encode(request), 0o640)
        self.state.set_meta("firmware_requested", request.id)
        for name in folder.names():  # releases spooled before and never taken
            if spoolmod.WHEEL_NAME.match(name.removesuffix(".sig")) and name not in (wheel, wheel + ".sig"):
                folder.remove(name)
        log.info("ocpp.firmware_spooled", request=request.id, wheel=wheel, spool=str(folder.path))
        self.spooled.set()
        await self._send("Installing")

    async def _download(self, folder: spoolmod.Spool, location: str, name: str, limit: int, retries: int,
                        retry_interval_s: int) -> bool:
        for attempt in range(retries):
            try:
                size = await asyncio.to_thread(_fetch_into, folder, location, name, limit)
            except (OSError, ValueError) as exc:
                log.info("ocpp.firmware_download_failed", file=name, attempt=attempt + 1,
                         error=f"{type(exc).__name__}: {exc}"[:200])
                if attempt + 1 < retries:
                    await asyncio.sleep(retry_interval_s)
                continue
            log.info("ocpp.firmware_downloaded", file=name, bytes=size)
            return True
        return False

    def check_outcome(self) -> bool:
        """Queue FirmwareStatusNotification Installed or InstallationFailed for the outcome the
        updater left for the pending request, once (durably, with the mark that it was)."""
        if not self.pending():
            return False
        requested = self.state.meta("firmware_requested")
        try:
            with spoolmod.Spool(self.spool_dir, owners=(os.geteuid(),)) as folder:  # an outcome only from ours
                if not folder.exists(spoolmod.STATUS):
                    return False
                data = folder.read(spoolmod.STATUS)
            outcome = spoolmod.parse_outcome(data)
        except spoolmod.SpoolError as exc:
            if str(exc) != self._bad_status:  # once, not at every look
                self._bad_status = str(exc)
                log.warning("ocpp.firmware_status_unreadable", error=str(exc)[:200])
            return False
        if outcome.id != requested:
            return False  # an earlier request's outcome; ours is still being installed
        with self.state.transaction():
            self.outcome(outcome.result)
            self.state.set_meta("firmware_reported", outcome.id)
        log.info("ocpp.firmware_outcome", request=outcome.id, version=outcome.version, result=outcome.result,
                 reason=outcome.reason or None)
        self.status = "Idle"
        return True

    async def watch(self) -> None:
        """Report outcomes: at start (after the update restarted this service) and, while a
        request is pending, every POLL_S (the updater may fail without restarting anything)."""
        while True:
            if self.check_outcome():
                self.queued()
            self.spooled.clear()
            if self.pending():
                await asyncio.sleep(POLL_S)
            else:
                await self.spooled.wait()


def wheel_name(location: str) -> str | None:
    """The wheel's file name from the location's path, when it names an evsed wheel."""
    name = posixpath.basename(urllib.parse.unquote(urllib.parse.urlsplit(location).path))
    return name if spoolmod.WHEEL_NAME.match(name) else None


def signature_location(location: str) -> str:
    """Where the detached signature is: the location's path with ".sig" appended."""
    url = urllib.parse.urlsplit(location)
    return urllib.parse.urlunsplit(url._replace(path=url.path + ".sig"))


def _fetch_into(folder: spoolmod.Spool, location: str, name: str, limit: int) -> int:
    with folder.writing(name, 0o640) as out:
        return fetch(location, out, limit)


def fetch(location: str, out: BinaryIO, limit: int, timeout_s: float = 300) -> int:
    """Copy an http(s) or ftp location into out; at most limit bytes (more is an error)."""
    if urllib.parse.urlsplit(location).scheme not in ("http", "https", "ftp"):
        raise ValueError(f"unsupported location scheme {urllib.parse.urlsplit(location).scheme!r}")
    size = 0
    with urllib.request.urlopen(location, timeout=timeout_s) as response:
        while chunk := response.read(65536):
            size += len(chunk)
            if size > limit:
                raise ValueError(f"larger than {limit} bytes")
            out.write(chunk)
    return size
