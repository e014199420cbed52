"""Diagnostics upload, whatever the OCPP version (1.6 GetDiagnostics, 2.0.1 GetLog): a gzip'd JSON
bundle of what an operator needs, uploaded by HTTP PUT or FTP STOR, its progress told through
the version's status notification. (UpdateFirmware is firmware.py.)"""

from __future__ import annotations

import asyncio
import ftplib
import gzip
import json
import subprocess
import urllib.parse
import urllib.request
from typing import Any, Awaitable, Callable

import structlog

from evsed.uplink.times import iso

log = structlog.get_logger("evsed.uplink")


class Diagnostics:
    """collect() gives the bundle's body (no secrets); notify(status) tells the CSMS one of
    Uploading, Uploaded, UploadFailed (the 1.6 names; the adapter maps them)."""

    def __init__(self, identity: str, clock: Callable[[], float], collect: Callable[[], Awaitable[dict[str, Any]]],
                 notify: Callable[[str], Awaitable[None]]):
        self.identity, self.clock, self.collect, self.notify = identity, clock, collect, notify
        self.status = "Idle"   # what a TriggerMessage reports
        self._name = ""

    def file_name(self) -> str:
        stamp = iso(self.clock()).replace(":", "").replace("-", "")[:15]
        self._name = f"diagnostics-{self.identity}-{stamp}.json.gz"[:255]
        return self._name

    async def _tell(self, status: str) -> None:
        self.status = status
        await self.notify(status)

    async def bundle(self) -> bytes:
        body = {"identity": self.identity, "at": iso(self.clock()), **await self.collect(),
                "journal": await asyncio.to_thread(_journal)}
        return gzip.compress(json.dumps(body, indent=1, default=str).encode())

    async def upload(self, location: str, retries: int, retry_interval_s: int) -> None:
        name = self._name or self.file_name()
        data = await self.bundle()
        await self._tell("Uploading")
        for attempt in range(max(1, retries)):
            try:
                await asyncio.to_thread(put, location, name, data)
            except (OSError, ValueError, ftplib.Error) as exc:
                log.info("ocpp.diagnostics_upload_failed", attempt=attempt + 1, error=f"{type(exc).__name__}: {exc}"[:200])
                if attempt + 1 < retries:
                    await asyncio.sleep(retry_interval_s)
                continue
            log.info("ocpp.diagnostics_uploaded", file=name, bytes=len(data))
            await self._tell("Uploaded")
            self.status = "Idle"
            return
        await self._tell("UploadFailed")
        self.status = "Idle"


def _journal() -> list[str]:
    try:
        out = subprocess.run(["journalctl", "-u", "evsed*", "-n", "2000", "-o", "cat", "--no-pager"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return out.stdout.splitlines()[-2000:]


def _target(location: str, name: str) -> urllib.parse.SplitResult:
    url = urllib.parse.urlsplit(location)
    path = url.path + name if url.path.endswith("/") or not url.path else url.path
    return url._replace(path=path if path.startswith("/") else "/" + path)


def put(location: str, name: str, data: bytes, timeout_s: float = 60) -> None:
    """Upload data to an http(s) (PUT) or ftp (STOR) location; a location ending in / gets name."""
    url = _target(location, name)
    if url.scheme in ("http", "https"):
        request = urllib.request.Request(urllib.parse.urlunsplit(url), data=data, method="PUT",
                                         headers={"Content-Type": "application/gzip"})
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            if response.status >= 300:
                raise OSError(f"HTTP {response.status}")
    elif url.scheme == "ftp":
        with ftplib.FTP(timeout=timeout_s) as ftp:
            ftp.connect(url.hostname or "", url.port or 21)
            ftp.login(urllib.parse.unquote(url.username or "anonymous"), urllib.parse.unquote(url.password or ""))
            from io import BytesIO
            ftp.storbinary(f"STOR {urllib.parse.unquote(url.path)}", BytesIO(data))
    else:
        raise ValueError(f"unsupported location scheme {url.scheme!r}")
