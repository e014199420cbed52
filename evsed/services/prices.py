"""The prices service: a dynamic price curve read from a JSON file or fetched from a URL on a
schedule, handed to the daemon over the control socket (`prices`), which checks every entry.

The daemon opens no network connection: this process does, as its own user. What it reads is
bounded (bytes, time); what the daemon refuses is logged with the daemon's reason, and the
curve in force stays. The format is evsed.core.prices' (README, Charging plans).
"""

from __future__ import annotations

import asyncio
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar
from urllib.parse import urlsplit

import structlog

from evsed import __version__
from evsed import protocol as p
from evsed.config import Config, ConfigError, Section

log = structlog.get_logger("evsed")
MAX_BYTES = p.PRICES_MAX_BYTES
R = TypeVar("R", bound=p.Reply)


@dataclass(frozen=True)
class PricesSettings:
    url: str = ""  # http or https, GET, answering the JSON itself
    file: Path | None = None  # or a file another program writes
    interval_s: float = 3600.0  # read again this often
    retry_s: float = 300.0  # after a failure, sooner
    timeout_s: float = 20.0


def parse(config: Config) -> PricesSettings | None:
    """The [prices] settings, or None when there is no [prices] section."""
    section: Section | None = config.sections.get("prices")
    if section is None:
        return None
    t = section.table()
    d = PricesSettings()
    t.get("enabled", bool, True)  # `evsed run` starts the service unless false
    url, file = t.get("url", str, "", max_len=2000), t.get("file", str, "", max_len=4096)
    if bool(url) == bool(file):
        raise t.error("url", "give url (fetched on a schedule) or file (read on a schedule), one of them")
    if url and (urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc):
        raise t.error("url", f"expected an http:// or https:// address, got {url[:60]!r}")
    path = None
    if file:
        path = Path(os.path.expanduser(file))
        path = path if path.is_absolute() else (section.path.parent / path).resolve()
    settings = PricesSettings(url, path, t.get("interval_s", float, d.interval_s, min=60, max=86_400),
                              t.get("retry_s", float, d.retry_s, min=10, max=86_400),
                              t.get("timeout_s", float, d.timeout_s, min=1, max=120))
    t.done()
    return settings


class Link(Protocol):
    async def command(self, command: p.Command[R]) -> R | p.Failure: ...


class FetchError(Exception):
    """The curve could not be read; the message says why (for the log)."""


def read(settings: PricesSettings) -> bytes:
    """The file's or the URL's body, at most MAX_BYTES (blocking: run it in a thread)."""
    try:
        if settings.file is not None:
            with open(settings.file, "rb") as f:
                body = f.read(MAX_BYTES + 1)
        else:
            request = urllib.request.Request(settings.url, headers={"User-Agent": f"evsed/{__version__}",
                                                                    "Accept": "application/json"})
            with urllib.request.urlopen(request, timeout=settings.timeout_s) as response:  # noqa: S310 - http(s) only
                body = response.read(MAX_BYTES + 1)
    except (OSError, urllib.error.URLError, ValueError) as exc:
        raise FetchError(str(getattr(exc, "reason", None) or exc)[:200]) from None
    if len(body) > MAX_BYTES:
        raise FetchError(f"more than {MAX_BYTES // 1024} KiB")
    return body


async def hand_over(settings: PricesSettings, link: Link) -> bool:
    """Read the curve once and give it to the daemon; False when that failed (logged)."""
    source: p.PriceSource = "file" if settings.file is not None else "url"
    where = str(settings.file) if settings.file is not None else settings.url
    try:
        body = await asyncio.to_thread(read, settings)
    except FetchError as exc:
        log.warning("prices.unreadable", source=where, error=str(exc)[:200])
        return False
    try:
        command = p.prices_from_json(body, source)
    except p.WireError as exc:  # not JSON, or not entries of start, end and price: the daemon needs not see it
        log.warning("prices.unreadable" if str(exc).startswith("not JSON") else "prices.refused", source=where,
                    error=str(exc)[:200])
        return False
    reply = await link.command(command)
    if isinstance(reply, p.Failure):
        log.warning("prices.refused", source=where, error=reply.error)
        return False
    log.info("prices.handed_over", source=where, entries=reply.entries, start=reply.start, end=reply.end)
    return True


async def serve(config: Config, link: Link) -> None:
    """Hand the curve over now and every interval_s (retry_s after a failure) until cancelled."""
    settings = parse(config)
    if settings is None:
        raise ConfigError(config.path, None, "[prices]", "missing")
    while True:
        ok = await hand_over(settings, link)
        await asyncio.sleep(settings.interval_s if ok else settings.retry_s)
