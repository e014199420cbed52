"""When meter values are due, whatever the OCPP version: every sample interval of a running
transaction (Sample.Periodic), and on the clock every aligned interval from midnight UTC
(Sample.Clock); the version's adapter builds and queues the message. And the energy reading
a sent message carries, in either version's sampled values."""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Iterable

from evsed.uplink.aio import wait_event


async def meter_clock(clock: Callable[[], float], sessions: Callable[[], Iterable[int]], connectors: list[int], *,
                      sampled_s: Callable[[], int], aligned_s: Callable[[], int],
                      emit: Callable[[int, str], bool], changed: asyncio.Event, queued: Callable[[], None]) -> None:
    """emit(connector, context) queues one MeterValues (False: nothing to send); `changed` set
    (intervals or sessions changed) looks again at once. For ever."""
    next_sample: dict[int, float] = {}
    next_aligned = 0.0
    while True:
        now = clock()
        sampled, aligned = sampled_s(), aligned_s()
        running = set(sessions())
        for connector in list(next_sample):
            if connector not in running:
                del next_sample[connector]
        for connector in running:
            if sampled > 0 and connector not in next_sample:
                next_sample[connector] = now + sampled
        due = False
        for connector, t in list(next_sample.items()):
            if t <= now and sampled > 0:
                due = emit(connector, "Sample.Periodic") or due
                next_sample[connector] = now + sampled
        if aligned > 0:
            if next_aligned and now >= next_aligned:
                for connector in connectors:
                    due = emit(connector, "Sample.Clock") or due
            next_aligned = (now // aligned + 1) * aligned
        else:
            next_aligned = 0.0
        if due:
            queued()
        times = list(next_sample.values()) + ([next_aligned] if next_aligned else [])
        changed.clear()
        timeout = min(times) - clock() if times else 3600
        await wait_event(changed, min(timeout, 3600))


ENERGY = "Energy.Active.Import.Register"  # either version's default measurand


def energy_wh(meter_values: Any) -> int | None:
    """The newest Energy.Active.Import.Register reading of a message's meterValue list as this
    uplink writes it in either version (1.6: the value a string; 2.0.1: a number), in Wh; None
    when it holds none."""
    found: int | None = None
    for mv in meter_values if isinstance(meter_values, list) else ():
        for v in mv.get("sampledValue", ()) if isinstance(mv, dict) else ():
            if isinstance(v, dict) and v.get("measurand", ENERGY) == ENERGY and not v.get("phase"):
                try:
                    found = int(v["value"])
                except (KeyError, TypeError, ValueError):
                    continue
    return found
