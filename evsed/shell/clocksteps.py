"""What a step of the wall clock does to wall-clock state: its detection, and the session times
taken on a clock that was wrong (a board without an RTC runs on a guess until NTP syncs).

The rule: a session that started while the kernel said the clock was not synchronized has its
start moved by every step the daemon sees while it runs (and its stop too, when that was also
taken unsynchronized), until the clock has been synchronized for SETTLE_S. A session started on
a synchronized clock keeps its start: a step then (a person's `date -s`) is not NTP correcting
a guess. Each correction is published as `session.clock_corrected` for the store; the store
also keeps every stop at or after its start, whatever the clock did.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Callable

from evsed.shell.bus import ChargerEvent
from evsed.store.sessions import LiveSession, shifted_iso

STEP_S = 1.0  # the wall clock moved this much against the monotonic one: a step, not drift
SETTLE_S = 60.0  # synchronized this long: a later step is not NTP correcting the boot guess


class ClockSteps:
    """The offset of the wall clock to the monotonic one; a change over STEP_S is a step."""

    def __init__(self, wall: Callable[[], dt.datetime], mono: Callable[[], float]):
        self.wall, self.mono = wall, mono
        self.offset_s = self._offset()

    def _offset(self) -> float:
        return self.wall().timestamp() - self.mono()

    def check(self) -> float | None:
        """The step in seconds (positive: the clock jumped forward) since the last check, or None."""
        offset = self._offset()
        if math.isclose(offset, self.offset_s, abs_tol=STEP_S):
            return None
        by_s, self.offset_s = offset - self.offset_s, offset
        return by_s


@dataclass
class _Tracked:
    connector: int
    session: LiveSession
    stop_unsynced: bool = False


class SessionClock:
    """A bus subscriber that remembers the sessions timed on an unsynchronized clock.
    synced() is the policy's view of the kernel's clock state; session_of(connector) the
    connector's running session; publish(connector, type, data) puts a correction on the bus."""

    def __init__(self, synced: Callable[[], bool], mono: Callable[[], float],
                 session_of: Callable[[int], LiveSession | None],
                 publish: Callable[[int, str, dict[str, object]], None]):
        self.synced, self.mono, self.session_of, self.publish = synced, mono, session_of, publish
        self.tracked: dict[int, _Tracked] = {}  # session id -> its times to correct on a step
        self._synced_since: float | None = None

    def __call__(self, e: ChargerEvent) -> None:
        if e.type == "session.started" and not self.synced():
            s = self.session_of(e.connector)
            if s is not None and s.row_id == e.data["session"]:
                self.tracked[e.data["session"]] = _Tracked(e.connector, s)
        elif e.type == "session.stopped" and e.data["session"] in self.tracked:
            self.tracked[e.data["session"]].stop_unsynced = not self.synced()

    def stepped(self, by_s: float) -> None:
        """The wall clock stepped by by_s: move the times that were taken on the old one."""
        for sid, t in self.tracked.items():
            s, before = t.session, t.session.started_at
            s.started_at = shifted_iso(s.started_at, by_s)
            if s.stopped is not None and t.stop_unsynced:
                s.stopped = (s.stopped[0], shifted_iso(s.stopped[1], by_s))
            self.publish(t.connector, "session.clock_corrected", {
                "session": sid, "by_s": round(by_s, 3), "started_at": s.started_at, "previous_started_at": before,
                "stopped_at": s.stopped[1] if s.stopped is not None and t.stop_unsynced else None})

    def settle(self) -> None:
        """About once a second: once the clock has been synchronized for SETTLE_S, the times taken
        before are corrected (or were right), and nothing is tracked any more."""
        now = self.mono()
        if not self.synced():
            self._synced_since = None
            return
        if self._synced_since is None:
            self._synced_since = now
        if now - self._synced_since >= SETTLE_S:
            self.tracked.clear()

