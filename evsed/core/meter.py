"""Meter readings judged in one place: plausible or garbage, and when a reset or replaced
meter becomes the new baseline.

Backends report what the meter said; judge() decides. Pure: times are arguments (seconds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

REBASELINE_AFTER = 5  # consistent readings in a row that make a reset or replaced meter the new baseline
MAX_PLAUSIBLE_POWER_W = 250_000.0  # 3 x 80 A x 480 V with margin: no charger meter sees more
COARSE_STEP_WH = 200  # meters counting in 0.1 kWh (EM340, EEM-350) move in 100 Wh steps
IDENTITY_MAX_CHARS = 64  # a meter's vendor, model or serial longer than this is no name but garbage


def identity_text(text: str) -> bool:
    """Whether a meter's vendor, model or serial as its backend told it is fit for a signed
    record: 1-64 printable characters, without space around them."""
    return 0 < len(text) <= IDENTITY_MAX_CHARS and text.isprintable() and text == text.strip()


@dataclass(frozen=True, slots=True)
class Sample:
    """What a meter said: its import register in Wh, total power in W, current per phase in A."""

    energy_wh: int
    power_w: float
    current_a: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class Track:
    """What the judge remembers: the last accepted sample and a streak of rejected ones."""

    last: Sample | None = None
    last_at: float = -math.inf
    rejected: tuple[tuple[float, Sample], ...] = ()


@dataclass(frozen=True, slots=True)
class Verdict:
    accepted: bool
    problem: str = ""  # why not accepted (for the log and the core's MeterFailed)
    first_of_streak: bool = False  # the first rejection since the last good sample: log it once
    rebaseline_wh: int | None = None  # accepted as a new baseline: add this to a running session's counts


def implausible(sample: Sample, previous: Sample | None, elapsed_s: float) -> str:
    """Why this sample cannot be true after `previous` taken elapsed_s earlier ("" when it can)."""
    if any(not math.isfinite(x) for x in (sample.power_w, *sample.current_a)):
        return "meter returned a non-finite value"
    if sample.energy_wh < 0:
        return f"meter energy {sample.energy_wh} Wh is negative"
    if previous is None:
        return ""
    step_wh = sample.energy_wh - previous.energy_wh
    if step_wh < 0:
        return f"meter energy went backwards: {previous.energy_wh} Wh -> {sample.energy_wh} Wh"
    if step_wh > COARSE_STEP_WH + MAX_PLAUSIBLE_POWER_W * max(elapsed_s, 0.0) / 3600.0:
        return f"meter energy jumped by {step_wh} Wh in {elapsed_s:.1f} s"
    return ""


def judge(track: Track, sample: Sample, now: float) -> tuple[Track, Verdict]:
    """Accept a plausible sample; reject garbage. A meter that was reset or replaced reads
    consistently, just not like before: after REBASELINE_AFTER such readings in a row (each
    plausible after the one before) it is the new baseline, never an absurd single jump."""
    problem = implausible(sample, track.last, now - track.last_at)
    if not problem:
        return Track(sample, now, ()), Verdict(True)
    first = not track.rejected
    rejected = (*track.rejected, (now, sample))
    if len(rejected) >= REBASELINE_AFTER and not implausible(sample, None, 0.0):
        steady = all(not implausible(b, a, tb - ta) for (ta, a), (tb, b) in zip(rejected, rejected[1:]))
        if steady:
            old = track.last.energy_wh if track.last is not None else 0
            return Track(sample, now, ()), Verdict(True, rebaseline_wh=rejected[0][1].energy_wh - old)
        rejected = rejected[1:]
    return Track(track.last, track.last_at, rejected[-REBASELINE_AFTER:]), Verdict(False, problem, first)
