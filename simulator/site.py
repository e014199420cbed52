"""The simulated site around the charger: house loads per phase and PV production over time,
the grid (site) meter that sees them with every simulated EV, and a grid operator's contact.

Profiles are step functions of seconds since they were loaded: a CSV (t_s,l1_a,l2_a,l3_a,pv_w)
or a TOML file with [[point]] tables of the same keys; `evsed sim site` sets them.
"""

from __future__ import annotations

import bisect
import csv
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from hal import MeterReading, TryAgain

if TYPE_CHECKING:
    from simulator.hardware import SimWorld

PROFILE_KEYS = ("t_s", "l1_a", "l2_a", "l3_a", "pv_w")


@dataclass(frozen=True)
class Point:
    t_s: float
    house_a: tuple[float, float, float]
    pv_w: float


def load_profile(path: Path) -> list[Point]:
    """A profile file, sorted by time; ValueError naming the file and row on a bad one."""
    rows: list[dict[str, Any]]
    if path.suffix == ".toml":
        rows = tomllib.loads(path.read_text(encoding="utf-8")).get("point", [])
    else:
        with path.open(newline="", encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(line for line in f if not line.startswith("#"))]
    points = []
    for n, row in enumerate(rows, 1):
        try:
            v = {k: float(row.get(k, 0) or 0) for k in PROFILE_KEYS}
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: row {n}: {exc}") from None
        points.append(Point(v["t_s"], (v["l1_a"], v["l2_a"], v["l3_a"]), v["pv_w"]))
    if not points:
        raise ValueError(f"{path}: no points")
    return sorted(points, key=lambda p: p.t_s)


class SimSite:
    """House loads (A per phase) and PV (W, spread over three phases) now; a profile, when
    loaded, sets them as time goes on. PV exports: the grid sees negative current."""

    def __init__(self, world: SimWorld):
        self.world = world
        self.house_a: tuple[float, float, float] = (0.0, 0.0, 0.0)
        self.pv_w = 0.0
        self.profile: list[Point] = []
        self.profile_t0 = 0.0
        self.contact = False  # the grid operator's control contact (input "sim")
        self.meter_silent = False
        self._listeners: list[Callable[[], None]] = []

    def set(self, *, house_a: tuple[float, float, float] | None = None, pv_w: float | None = None,
            profile: list[Point] | None = None, contact: bool | None = None,
            meter_silent: bool | None = None) -> None:
        if profile is not None:
            self.profile, self.profile_t0 = profile, self.world.clock()
        if house_a is not None or pv_w is not None:
            self.profile = []  # a fixed value replaces the profile
            self.house_a = house_a if house_a is not None else self.house_a
            self.pv_w = pv_w if pv_w is not None else self.pv_w
        if meter_silent is not None:
            self.meter_silent = meter_silent
        if contact is not None and contact != self.contact:
            self.contact = contact
            for listener in list(self._listeners):
                listener()

    def now(self) -> tuple[tuple[float, float, float], float]:
        """(house A per phase, PV W) at the world's time."""
        if not self.profile:
            return self.house_a, self.pv_w
        t = self.world.clock() - self.profile_t0
        i = max(0, bisect.bisect_right([p.t_s for p in self.profile], t) - 1)
        return self.profile[i].house_a, self.profile[i].pv_w

    def grid_a(self) -> tuple[float, float, float]:
        """Per phase at the grid connection, import positive: house + EVs - PV."""
        house, pv_w = self.now()
        evs = [c.current_a() for cid, c in self.world.connectors.items() if cid != 0]
        pv_a = pv_w / (3 * self.world.voltage_v)
        return tuple(round(house[p] + sum(e[p] for e in evs) - pv_a, 3) for p in range(3))  # type: ignore


class SimSiteMeter:
    """The grid meter: what SimSite.grid_a() says, as a three-phase meter reading."""

    def __init__(self, world: SimWorld):
        self.world = world
        self._energy_wh = 0.0
        self._at: float | None = None

    async def read(self) -> MeterReading:
        site = self.world.site
        if site.meter_silent:
            raise TryAgain("simulated site meter timeout")
        current = site.grid_a()
        v = self.world.voltage_v
        power = sum(current) * v
        now = self.world.clock()
        if self._at is not None:
            self._energy_wh += max(0.0, power) * (now - self._at) / 3600.0
        self._at = now
        return MeterReading(int(self._energy_wh), power, current, (v,) * 3, tuple(a * v for a in current), 50.0)


class SimInput:
    """The grid operator's contact of the simulated site."""

    def __init__(self, site: SimSite):
        self.site = site

    def active(self) -> bool:
        return self.site.contact

    def on_change(self, callback: Callable[[], None]) -> None:
        self.site._listeners.append(callback)


def sim_input(options: dict, ctx: Any) -> SimInput:
    world = ctx.shared.get("sim")
    if world is None:
        raise RuntimeError("the simulator backends need the daemon to create a SimWorld")
    return SimInput(world.site)
