"""GetDiagnostics: a gzip'd JSON log bundle uploaded by HTTP PUT or FTP STOR, with its status
notifications. (UpdateFirmware is firmware.py.)"""

from __future__ import annotations

import asyncio
import ftplib
import gzip
import json
import subprocess
import urllib.parse
import urllib.request

import structlog
from ocpp.exceptions import OCPPError
from ocpp.v16 import call

from evsed.uplink import smart

log = structlog.get_logger("evsed.uplink")


class Diagnostics:
    def __init__(self, uplink):
        self.up = uplink
        self.diagnostics_status = "Idle"
        self._name = ""

    def file_name(self) -> str:
        stamp = smart.iso(self.up.clock()).replace(":", "").replace("-", "")[:15]
        self._name = f"diagnostics-{self.up.settings.identity}-{stamp}.json.gz"[:255]
        return self._name

    async def _send(self, request) -> None:
        cp = self.up.cp
        if cp is None or not self.up.booted:
            return
        try:
            await cp.call(request, suppress=False)
        except (asyncio.TimeoutError, OCPPError) as exc:
            log.info("ocpp.notification_unanswered", action=type(request).__name__, error=type(exc).__name__)

    async def notify(self) -> None:
        await self._send(call.DiagnosticsStatusNotification(status=self.diagnostics_status))

    async def _diag(self, status: str) -> None:
        self.diagnostics_status = status
        await self._send(call.DiagnosticsStatusNotification(status=status))

    async def bundle(self) -> bytes:
        """What an operator needs to look into a problem; no secrets (the password is not in it)."""
        daemon = await self.up.command({"cmd": "status"})
        known, _ = self.up.keys.get(None)
        journal = await asyncio.to_thread(_journal)
        body = {"identity": self.up.settings.identity, "at": smart.iso(self.up.clock()),
                "uplink": self.up.status(), "daemon": daemon, "configuration": known,
                "queued": [{"action": q.action, "attempts": q.attempts} for q in self.up.state.queued()],
                "journal": journal}
        return gzip.compress(json.dumps(body, indent=1, default=str).encode())

    async def upload(self, location: str, retries: int, retry_interval_s: int) -> None:
        name = self._name or self.file_name()
        data = await self.bundle()
        await self._diag("Uploading")
        for attempt in range(max(1, retries)):
            try:
                await asyncio.to_thread(put, location, name, data)
            except (OSError, ValueError, ftplib.Error) as exc:
                log.info("ocpp.diagnostics_upload_failed", attempt=attempt + 1, error=f"{type(exc).__name__}: {exc}"[:200])
                if attempt + 1 < retries:
                    await asyncio.sleep(retry_interval_s)
                continue
            log.info("ocpp.diagnostics_uploaded", file=name, bytes=len(data))
            await self._diag("Uploaded")
            self.diagnostics_status = "Idle"
            return
        await self._diag("UploadFailed")
        self.diagnostics_status = "Idle"


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
