"""Wall-clock deadlines survive clock steps: fake wall and monotonic clocks, no sleeps."""

import datetime as dt

from evsed.shell.timers import WallTimers

UTC = dt.timezone.utc


class Clocks:
    """A monotonic clock, a wall clock that can step, and a call_at queue like asyncio's."""

    def __init__(self, wall: dt.datetime):
        self.mono, self.wall_at_zero = 100.0, wall
        self.queue: list[list] = []

    def wall(self) -> dt.datetime:
        return self.wall_at_zero + dt.timedelta(seconds=self.mono - 100.0)

    def call_at(self, when: float, callback):
        entry = [when, callback, False]

        class Handle:
            def cancel(self_inner):
                entry[2] = True
        self.queue.append(entry)
        return Handle()

    def run_until(self, mono: float) -> None:
        while True:
            due = sorted((e for e in self.queue if not e[2] and e[0] <= mono), key=lambda e: e[0])
            if not due:
                break
            entry = due[0]
            entry[2] = True
            self.mono = max(self.mono, entry[0])
            entry[1]()
        self.mono = mono


def test_a_deadline_fires_at_its_wall_clock_time():
    c = Clocks(dt.datetime(2026, 3, 1, 22, 0, tzinfo=UTC))
    timers, fired = WallTimers(c.wall, lambda: c.mono, c.call_at), []
    timers.set("window", dt.datetime(2026, 3, 1, 23, 0, tzinfo=UTC), lambda: fired.append(c.wall()))
    c.run_until(100 + 3599)
    assert fired == []
    c.run_until(100 + 3600)
    assert fired == [dt.datetime(2026, 3, 1, 23, 0, tzinfo=UTC)]


def test_a_clock_stepped_forward_by_ntp_fires_the_deadline_at_the_new_time():
    c = Clocks(dt.datetime(1970, 1, 1, 0, 0, 10, tzinfo=UTC))  # a Pi without RTC boots in 1970
    timers, fired = WallTimers(c.wall, lambda: c.mono, c.call_at), []
    timers.set("window", dt.datetime(2026, 3, 1, 23, 0, tzinfo=UTC), lambda: fired.append(c.wall()))
    c.run_until(101)
    c.wall_at_zero = dt.datetime(2026, 3, 1, 22, 59, 0, tzinfo=UTC) - dt.timedelta(seconds=1)  # NTP syncs
    assert timers.check_clock()
    c.run_until(101 + 59)
    assert fired == []
    c.run_until(101 + 60)
    assert fired == [dt.datetime(2026, 3, 1, 23, 0, tzinfo=UTC)]


def test_a_clock_stepped_back_does_not_fire_early():
    c = Clocks(dt.datetime(2026, 3, 1, 22, 0, tzinfo=UTC))
    timers, fired = WallTimers(c.wall, lambda: c.mono, c.call_at), []
    timers.set("window", dt.datetime(2026, 3, 1, 23, 0, tzinfo=UTC), lambda: fired.append(c.wall()))
    c.run_until(100 + 1800)
    c.wall_at_zero -= dt.timedelta(hours=1)  # stepped back an hour, and nobody called check_clock yet
    c.run_until(100 + 3600)  # the old arming comes due: the wall clock says 22:00, not 23:00
    assert fired == []
    c.run_until(100 + 7200)
    assert fired == [dt.datetime(2026, 3, 1, 23, 0, tzinfo=UTC)]


def test_replacing_or_cancelling_a_deadline_drops_the_old_one():
    c = Clocks(dt.datetime(2026, 3, 1, 22, 0, tzinfo=UTC))
    timers, fired = WallTimers(c.wall, lambda: c.mono, c.call_at), []
    timers.set("w", dt.datetime(2026, 3, 1, 22, 10, tzinfo=UTC), lambda: fired.append("old"))
    timers.set("w", dt.datetime(2026, 3, 1, 22, 20, tzinfo=UTC), lambda: fired.append("new"))
    timers.set("x", dt.datetime(2026, 3, 1, 22, 5, tzinfo=UTC), lambda: fired.append("x"))
    timers.set("x", None, lambda: None)
    c.run_until(100 + 3600)
    assert fired == ["new"]


def test_drift_below_a_second_is_not_a_step():
    c = Clocks(dt.datetime(2026, 3, 1, 22, 0, tzinfo=UTC))
    timers = WallTimers(c.wall, lambda: c.mono, c.call_at)
    c.wall_at_zero += dt.timedelta(milliseconds=300)
    assert not timers.check_clock()
