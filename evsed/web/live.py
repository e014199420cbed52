"""The web service's picture of the charger: the last status, the running sessions' samples and
this month's records, kept up to date from the daemon's event stream and fanned out to browsers.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from pathlib import Path
from typing import Any, Callable

import structlog

from evsed import protocol as p
from evsed.web import memory, records
from evsed.web.view import parse_time

log = structlog.get_logger("evsed.web")

MAX_POINTS = 1800  # per connector; at the limit every other point goes (the plot keeps its span)
MAX_SUBSCRIBERS = 32
QUEUE_SIZE = 256  # a browser this far behind is dropped; it reconnects and gets everything anew
REFRESH_S = 30.0
STORE_RETRIES, STORE_RETRY_S = 20, 0.5  # status is fetched on every event; this is only the safety net


class Live:
    def __init__(self, link, db_path: Path, tz: dt.tzinfo, *, clock: Callable[[], float] = time.time):
        self.link, self.db_path, self.tz, self.clock = link, db_path, tz, clock
        self.status: p.StatusReply | None = None
        self.online = False
        self.samples: dict[int, list[dict]] = {}
        self.sample_start: dict[int, dt.datetime] = {}
        self.month_rows: list[dict] = []  # finished sessions of this month: id, started_at, energy_wh
        self._month = ""
        self._records_stale = True
        self.records_version = 0  # goes up with every new read of the records: browsers reload theirs
        self._unstored: dict[int, int] = {}  # stopped session id -> reads left before giving up on it
        self._changed = asyncio.Event()
        self._subscribers: set[asyncio.Queue] = set()
        self.last_seq = 0

    # --- subscribers (the browsers' event streams) ------------------------------------
    def subscribe(self) -> asyncio.Queue | None:
        if len(self._subscribers) >= MAX_SUBSCRIBERS:
            return None
        queue: asyncio.Queue = asyncio.Queue(QUEUE_SIZE)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        self._subscribers.discard(queue)

    def publish(self, kind: str, data: Any = None) -> None:
        for queue in list(self._subscribers):
            try:
                queue.put_nowait((kind, data))
            except asyncio.QueueFull:
                self._subscribers.discard(queue)  # make room to tell that stream to close
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                queue.put_nowait(("close", None))

    def changed(self) -> None:
        """Something happened: fetch the status and push a fresh view soon (bursts coalesce)."""
        self._changed.set()

    # --- events from the daemon -------------------------------------------------------
    def apply(self, event: p.Event) -> None:
        cid = event.connector
        if isinstance(event, p.SessionStarted):
            self.samples[cid] = []
            self.sample_start[cid] = (parse_time(event.started_at) or parse_time(event.at)
                                      or dt.datetime.now(dt.timezone.utc))
            self.publish("reset", {"connector": cid})
        elif isinstance(event, p.SessionSample):
            point = self._point(cid, event)
            if point is not None:
                self.publish("sample", {"connector": cid, **point})
        elif isinstance(event, p.SessionStopped):
            self._records_stale = True
            self._unstored[event.session] = STORE_RETRIES
        self.changed()

    def _point(self, cid: int, event: p.SessionSample) -> dict | None:
        at = parse_time(event.at)
        start = self.sample_start.setdefault(cid, self._running_since(cid) or at or dt.datetime.now(dt.timezone.utc))
        if at is None:
            log.warning("web.sample_malformed", connector=cid, at=event.at)
            return None
        point = {"t": round((at - start).total_seconds(), 1), "p": round(event.power_w),
                 "i": [round(a, 2) for a in event.current_a]}
        points = self.samples.setdefault(cid, [])
        points.append(point)
        if len(points) > MAX_POINTS:
            self.samples[cid] = points[::2]
        return point

    def _running_since(self, cid: int) -> dt.datetime | None:
        """The running session's start from the status: a service started mid-session plots from there."""
        conn = self.status.connector(cid) if self.status else None
        return parse_time(conn.session.started_at) if conn and conn.session else None

    async def consume(self) -> None:
        """Follow the daemon's event stream for ever, resuming after the last event seen."""
        backoff = 0.5
        while True:
            try:
                # None at first: resume after what this service acknowledged before a restart
                async for event in self.link.events(self.last_seq or None):
                    backoff = 0.5
                    self.apply(event)
                    seq = event.seq
                    if seq is not None and seq > self.last_seq:
                        self.last_seq = seq
                        await self.link.ack(seq)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the daemon restarting must not end the page
                log.warning("web.events_lost", error=repr(exc), retry_in_s=backoff)
            self.online = False
            self.changed()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    # --- status and records ---------------------------------------------------------
    async def refresh(self) -> None:
        try:
            reply = await self.link.command(p.Status())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - shown on the page as "daemon not answering"
            if self.online:
                log.warning("web.status_failed", error=repr(exc))
            self.online = False
            return
        if isinstance(reply, p.StatusReply):
            self.status, self.online = reply, True
        else:
            log.warning("web.status_refused", error=reply.error)
            self.online = False
        now = dt.datetime.fromtimestamp(self.clock(), self.tz)
        if self._records_stale or now.strftime("%Y-%m") != self._month:
            self._month, self._records_stale = now.strftime("%Y-%m"), False
            since = records.iso_utc(records.month_bounds(self._month, self.tz)[0])
            self.month_rows = await asyncio.to_thread(_finished, self.db_path, since)
            memory.trim()
            self.records_version += 1
            self._wait_for_the_store({r["id"] for r in self.month_rows})

    def _wait_for_the_store(self, stored: set[int]) -> None:
        """The daemon writes a stop through its store thread, so the row may lag the event: read
        again shortly until every stopped session is there (or STORE_RETRIES reads went by)."""
        for sid in list(self._unstored):
            self._unstored[sid] -= 1
            if sid in stored or self._unstored[sid] <= 0:
                del self._unstored[sid]
        if self._unstored:
            self._records_stale = True
            asyncio.get_running_loop().call_later(STORE_RETRY_S, self.changed)

    async def updater(self) -> None:
        """Turn changes into fresh views for every browser."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), REFRESH_S)
            self._changed.clear()
            await self.refresh()
            self.publish("view")

    def totals(self) -> dict:
        """Today's and this month's totals; running sessions count with their live energy."""
        running = [{"started_at": c.session.started_at, "energy_wh": c.session.energy_wh}
                   for c in (self.status.connectors if self.status else ()) if c.session]
        now = dt.datetime.fromtimestamp(self.clock(), self.tz)
        return records.totals(self.month_rows + running, now, self.tz)

    async def run(self) -> None:
        await self.refresh()
        await asyncio.gather(self.consume(), self.updater())


def _finished(db_path: Path, since: str) -> list[dict]:
    """The finished sessions since then, with only what the totals need (a month of whole rows
    would stay in memory for nothing)."""
    return [{"id": r["id"], "started_at": r["started_at"], "energy_wh": r["energy_wh"]}
            for r in records.each_session(db_path, since=since) if r.get("stopped_at")]
