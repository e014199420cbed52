"""The safety daemon's one periodic task: the devices' heartbeat and the systemd watchdog.

Both say the same thing to something outside the process (a drop-out circuit, an OpenEVSE board's
supervision, systemd): the event loop that opens the contactors still turns and is healthy. When
it is not, both stop.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any, Callable, Iterable

import structlog

from evsed.shell import sdnotify
from hal import Heartbeat

log = structlog.get_logger("evsed")


class SafetyLoop:
    """Beat every Heartbeat device (contactor drop-out circuits, OpenEVSE pilots) each
    heartbeat_interval_s and feed the watchdog at half its period, both only while healthy()
    returns "" (else the reason, logged once).

    tick(now) does one round and returns when the next is due: tests drive it with explicit
    times; run() drives it on the loop. A heartbeat that raises ends the task: the daemon
    treats that as any crashed task and opens every contactor.
    """

    def __init__(self, devices: Iterable[Any], *, healthy: Callable[[], str],
                 clock: Callable[[], float] = time.monotonic,
                 notify: Callable[[str], bool] = sdnotify.notify,
                 watchdog_interval_s: float | None = None):
        self.beating = [d for d in devices if isinstance(d, Heartbeat)]
        self.healthy, self.clock, self.notify = healthy, clock, notify
        self.beat_interval_s = min((c.heartbeat_interval_s for c in self.beating), default=None)
        # late by more than this, a drop-out circuit may already have opened its relay
        self.late_s = min((c.dropout_s - c.heartbeat_interval_s for c in self.beating), default=math.inf)
        self.watchdog_interval_s = watchdog_interval_s
        self.next_beat = self.next_feed = -math.inf
        self.problem = ""
        self.ready_sent = False
        self.beats = self.feeds = 0

    def tick(self, now: float) -> float:
        """One round at `now` (s, the loop's clock); returns when the next round is due (inf: never)."""
        if not self.ready_sent:
            self.ready_sent = True
            self.notify("READY=1")
        problem = self.healthy()
        if problem != self.problem:
            self.problem = problem
            if problem:  # the drop-out circuits open and systemd sends WatchdogSignal= unless it recovers
                log.critical("safety.unhealthy", reason=problem, heartbeat_stopped=len(self.beating),
                             watchdog_stopped=self.watchdog_interval_s is not None)
            else:
                log.info("safety.healthy")
        due = [t for t in (self.beat_interval_s, self.watchdog_interval_s) if t is not None]
        if problem:
            return now + min(due, default=math.inf)  # keep checking; neither beat nor feed
        if self.beat_interval_s is not None and now >= self.next_beat:
            if now - self.next_beat > self.late_s and self.beats:
                log.warning("safety.heartbeat_late", late_s=round(now - self.next_beat, 3))
            for device in self.beating:
                device.heartbeat()
            self.beats += 1
            self.next_beat = now + self.beat_interval_s
        if self.watchdog_interval_s is not None and now >= self.next_feed:
            self.notify("WATCHDOG=1")
            self.feeds += 1
            self.next_feed = now + self.watchdog_interval_s
        return min(self.next_beat if self.beat_interval_s else math.inf,
                   self.next_feed if self.watchdog_interval_s else math.inf)

    async def run(self) -> None:
        while True:
            due = self.tick(self.clock())
            if due == math.inf:  # nothing to beat or feed: idle until cancelled
                await asyncio.Event().wait()
            await asyncio.sleep(max(0.0, due - self.clock()))


def for_daemon(daemon) -> SafetyLoop:
    """The safety loop of a started Daemon: its contactors and pilots; healthy while it is not
    stopping and every task it spawned still runs."""

    def healthy() -> str:
        if daemon.stopping.is_set():
            return "daemon stopping"
        ended = [t.get_name() for t in daemon._tasks if t.done()]
        return f"task {ended[0]} ended" if ended else ""

    devices = [d for c in daemon.connectors.values() for d in (c.contactor, c.pilot)]
    return SafetyLoop(devices, healthy=healthy,
                      watchdog_interval_s=sdnotify.watchdog_interval_s())
