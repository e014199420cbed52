"""A charging plan as the shell keeps it, and plans.json: every plan and the dynamic price curve,
written whole (a temporary file, fsync, rename) so that a power cut leaves the old or the new.

The daemon keeps the file in the state directory; scenarios keep it in memory across a
simulated power cut. Writes run on the store's writer thread, never on the event loop.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import structlog

from evsed import protocol as p
from evsed.core import prices

log = structlog.get_logger("evsed")
VERSION = 1
MAX_BYTES = 1 << 20  # the plans are a few hundred bytes and a week's quarter-hourly prices ~100 kB
MAX_CARD_PLANS = p.CARD_PLANS  # plans waiting for a card's next session: as many as status shows
ORIGINS: tuple[str, ...] = p.choices(p.Origin)


@dataclass(frozen=True, slots=True)
class Plan:
    """energy_wh by departure_s (POSIX). For a connector (its running or next session) or, with
    connector None, for the next session of card id_tag. Once bound to a session it counts that
    session's energy beyond baseline_wh, plus delivered_wh from sessions a restart or a power cut
    ended (the plan then waits for the connector's next session)."""

    energy_wh: int
    departure_s: int
    origin: str
    connector: int | None = None
    id_tag: str | None = None
    session: int | None = None
    baseline_wh: int = 0
    delivered_wh: int = 0

    def bound(self, connector: int, session: int, baseline_wh: int) -> Plan:
        return replace(self, connector=connector, session=session, baseline_wh=baseline_wh)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Plan:
        if not isinstance(data, dict) or set(data) != set(cls.__slots__):
            raise ValueError(f"a plan has the keys {', '.join(cls.__slots__)}")
        ints = ("energy_wh", "departure_s", "baseline_wh", "delivered_wh")
        if any(isinstance(data[k], bool) or not isinstance(data[k], int) for k in ints):
            raise ValueError(f"{', '.join(ints)}: expected integers")
        for key in ("connector", "session"):
            if data[key] is not None and (isinstance(data[key], bool) or not isinstance(data[key], int)):
                raise ValueError(f"{key}: expected an integer or null")
        if data["origin"] not in ORIGINS or not (data["id_tag"] is None or isinstance(data["id_tag"], str)):
            raise ValueError("origin or id_tag: not one a plan has")
        if data["connector"] is None and data["id_tag"] is None:
            raise ValueError("a plan is for a connector or for a card")
        return cls(**data)


@dataclass(frozen=True, slots=True)
class Saved:
    """Everything plans.json holds."""

    plans: tuple[Plan, ...] = ()  # one per connector at most
    cards: tuple[Plan, ...] = ()  # one per card at most
    curve: prices.Curve | None = None

    def encode(self) -> bytes:
        return json.dumps({"version": VERSION, "plans": [p.to_json() for p in self.plans],
                           "cards": [p.to_json() for p in self.cards],
                           "prices": self.curve.to_json() if self.curve else None},
                          separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Saved:
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise ValueError(f"not a plans file of version {VERSION}")
        plans, cards = data.get("plans"), data.get("cards")
        if not isinstance(plans, list) or not isinstance(cards, list) or len(plans) > 99 \
                or len(cards) > MAX_CARD_PLANS:
            raise ValueError("plans and cards: expected short lists")
        curve = data.get("prices")
        return cls(tuple(Plan.from_json(p) for p in plans), tuple(Plan.from_json(p) for p in cards),
                   None if curve is None else prices.Curve.from_json(curve))


class PlanFile(Protocol):
    def read(self) -> bytes | None: ...

    def write(self, data: bytes) -> None: ...


class MemoryFile:
    """plans.json in memory: scenarios and tests (kept across a simulated power cut)."""

    def __init__(self) -> None:
        self.data: bytes | None = None

    def read(self) -> bytes | None:
        return self.data

    def write(self, data: bytes) -> None:
        self.data = data


class DiskFile:
    """plans.json in the state directory, replaced whole and made durable on each write."""

    def __init__(self, path: Path):
        self.path = path

    def read(self) -> bytes | None:
        try:
            with open(self.path, "rb") as f:
                return f.read(MAX_BYTES + 1)
        except FileNotFoundError:
            return None

    def write(self, data: bytes) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dirfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)

    def set_aside(self, now: dt.datetime) -> Path | None:
        """Keep an unreadable file beside, so that nothing is lost and the next write succeeds."""
        aside = self.path.with_name(f"{self.path.name}.bad-{now:%Y%m%dT%H%M%S}")
        try:
            os.replace(self.path, aside)
        except OSError:
            return None
        return aside


def load(file: PlanFile, now: dt.datetime) -> Saved:
    """What the file holds; an unreadable one is logged, set aside (on disk) and read as empty."""
    raw = file.read()
    if raw is None:
        return Saved()
    try:
        if len(raw) > MAX_BYTES:
            raise ValueError(f"larger than {MAX_BYTES} bytes")
        return Saved.decode(raw)
    except (ValueError, prices.PriceError, TypeError, RecursionError) as exc:
        aside = file.set_aside(now) if isinstance(file, DiskFile) else None
        log.error("plans.unreadable", error=str(exc)[:200], set_aside=str(aside) if aside else None)
        return Saved()
