"""Wall-clock deadlines (time-of-use windows, tariffs) on the event loop's monotonic clock.

Safety timers are monotonic and live in the core's next_deadline(). A window boundary is a
wall-clock instant (an aware datetime, DST already resolved by zoneinfo), so it is mapped
onto the monotonic clock when armed, and re-armed when the wall clock steps: a board with no
RTC boots in 1970 or at its last shutdown and jumps when NTP syncs.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Callable

import structlog

from evsed.shell.clocksteps import ClockSteps

log = structlog.get_logger("evsed")


@dataclass
class _Timer:
    when: dt.datetime
    fire: Callable[[], None]
    handle: Any = None


class WallTimers:
    """Named wall-clock deadlines. call_at(mono, callback) -> handle with cancel() arms one
    on the monotonic clock (asyncio's loop.call_at; a list in tests)."""

    def __init__(self, wall: Callable[[], dt.datetime], mono: Callable[[], float],
                 call_at: Callable[[float, Callable[[], None]], Any]):
        self.wall, self.mono, self.call_at = wall, mono, call_at
        self.timers: dict[str, _Timer] = {}
        self.steps = ClockSteps(wall, mono)

    def set(self, name: str, when: dt.datetime | None, fire: Callable[[], None]) -> None:
        """Call fire() once at `when` (aware); None cancels the timer of that name."""
        old = self.timers.pop(name, None)
        if old is not None and old.handle is not None:
            old.handle.cancel()
        if when is not None:
            timer = _Timer(when, fire)
            self.timers[name] = timer
            self._arm(name, timer)

    def _arm(self, name: str, timer: _Timer) -> None:
        due_mono = timer.when.timestamp() - self.steps.offset_s
        timer.handle = self.call_at(max(due_mono, self.mono()), lambda: self._fire(name, timer))

    def _fire(self, name: str, timer: _Timer) -> None:
        if self.timers.get(name) is not timer:
            return  # replaced or cancelled meanwhile
        if self.check_clock() is not None:  # stepped since arming: every timer (this one too) is armed anew
            return
        early_s = (timer.when - self.wall()).total_seconds()
        if early_s > 0:  # drift, under a second: wait the rest
            timer.handle = self.call_at(self.mono() + early_s, lambda: self._fire(name, timer))
            return
        del self.timers[name]
        timer.fire()

    def check_clock(self) -> float | None:
        """Re-arm every timer when the wall clock stepped; the step in seconds when it did, else
        None. Call it often (1 s)."""
        by_s = self.steps.check()
        if by_s is None:
            return None
        log.warning("clock.stepped", by_s=round(by_s, 3), timers=len(self.timers))
        for name, timer in list(self.timers.items()):
            if timer.handle is not None:
                timer.handle.cancel()
            self._arm(name, timer)
        return by_s
