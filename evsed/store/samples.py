"""Meter samples of a running session: one kept per sample interval, handed over in batches so
the SD card sees one commit (one fsync) per checkpoint while charging, not one per reading.

Pure bookkeeping: the caller passes the monotonic time and the wall-clock time of each reading.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class MeterSample:
    """One stored sample; currents and voltages per phase (L1..L3) where the meter gives them."""

    t_ms: int  # Unix time, ms
    energy_wh: int
    power_w: int | None = None
    current_a: tuple[float, ...] = ()
    voltage_v: tuple[float, ...] = ()

    @property
    def at(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.t_ms / 1000, dt.timezone.utc)

    def row(self, session_id: int) -> tuple:
        i, u = (tuple(self.current_a) + (None,) * 3)[:3], (tuple(self.voltage_v) + (None,) * 3)[:3]
        return (session_id, self.t_ms, self.energy_wh, self.power_w, *i, *u)


class SampleBatcher:
    """Keeps the first reading of every `interval_s`, and hands the kept ones over with take()."""

    def __init__(self, interval_s: float = 10.0):
        self.interval_s = interval_s
        self._pending: list[MeterSample] = []
        self._kept_at = -float("inf")

    def offer(self, now: float, wall: dt.datetime, energy_wh: int, power_w: float | None = None,
              current_a: tuple[float, ...] = (), voltage_v: tuple[float, ...] = ()) -> bool:
        """A meter reading at monotonic `now` (s) and wall-clock `wall`; True when kept."""
        if now - self._kept_at < self.interval_s:
            return False
        self._kept_at = now
        self._pending.append(MeterSample(int(wall.timestamp() * 1000), int(energy_wh),
                                         None if power_w is None else round(power_w),
                                         tuple(current_a), tuple(voltage_v)))
        return True

    def take(self) -> list[MeterSample]:
        """The kept samples not yet handed over (for a checkpoint or the stop), oldest first."""
        out, self._pending = self._pending, []
        return out

    def shift(self, by_s: float) -> None:
        """The wall clock stepped: the kept samples' times move with it."""
        self._pending = [replace(s, t_ms=s.t_ms + round(by_s * 1000)) for s in self._pending]

    def reset(self) -> None:
        """A new session: forget the previous one's samples and interval."""
        self._pending = []
        self._kept_at = -float("inf")

    def __len__(self) -> int:
        return len(self._pending)
