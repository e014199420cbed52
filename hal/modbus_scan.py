"""Finding Modbus meters, read only: which unit answers at which line setting, and which model's
register map reads plausibly there (the tables hal.modbus reads with). For `evsed probe`; bounded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable

from hal import DeviceUnavailable, HalError, MeterReading
from hal.meter_models import MODELS, MeterModel
from hal.modbus import Bus, LineRefused, ModbusMeter

Progress = Callable[[str], None]

# What a meter on a live supply shows; anything else means the map does not fit the meter.
VOLTS = (80.0, 280.0)
HERTZ = (45.0, 65.0)
MAX_AMPS, MAX_WATTS, MAX_WH = 1_000.0, 1e6, 1e12


@dataclass(frozen=True)
class Line:
    """Where a meter answered: an RS-485 port at a baud rate and parity (8 data bits, 1 stop bit),
    or a Modbus TCP host:port (baudrate and parity None)."""

    transport: str
    where: str
    baudrate: int | None = None
    parity: str | None = None

    def __str__(self) -> str:
        return f"{self.baudrate} 8{self.parity}1" if self.transport == "rtu" else "Modbus TCP"


@dataclass(frozen=True)
class Match:
    model: MeterModel
    reading: MeterReading
    values: int  # how many of its values were read plausibly


@dataclass(frozen=True)
class Found:
    """A unit that answered; matches best first (the same best count: the same registers), empty
    when no model's map reads plausibly there."""

    line: Line
    unit: int
    matches: tuple[Match, ...]


@dataclass
class Scan:
    found: list[Found]
    problems: list[str]  # settings that could not be tried, once each (a pty takes no parity)


def plausible_values(reading: MeterReading) -> int | None:
    """How many of the reading's values look like a meter on a live supply; None if one does not.
    A phase after the first may read about 0 V (not connected)."""
    count = 0
    for phase, volts in enumerate(reading.voltage_v):
        if VOLTS[0] <= volts <= VOLTS[1]:
            count += 1
        elif not (phase and abs(volts) < 5.0):
            return None
    if reading.frequency_hz is not None:
        if not HERTZ[0] <= reading.frequency_hz <= HERTZ[1]:
            return None
        count += 1
    for value, limit in [(a, MAX_AMPS) for a in reading.current_a] + [
            (w, MAX_WATTS) for w in (*reading.power_w, reading.power_total_w)]:
        if not abs(value) < limit:
            return None
        count += 1
    return count + 1 if 0 <= reading.energy_import_wh < MAX_WH else None


def _map_key(model: MeterModel) -> tuple:
    return (model.function_code, model.word_order, model.not_available_sentinels, model.phases,
            tuple(sorted((f.quantity, f.phase, f.address, f.type, f.scale) for f in model.fields)))


def _factory_fits(model: MeterModel, line: Line) -> bool:
    return line.transport == "tcp" or (model.baudrate, model.parity) == (line.baudrate, line.parity)


async def identify(bus: Bus, unit: int, line: Line, models: Iterable[MeterModel] = MODELS.values(),
                   clock: Callable[[], float] = time.monotonic) -> tuple[Match, ...]:
    """Read the unit with every distinct register map; the models whose map reads plausibly, best
    first: more values, then the model whose factory line setting is this one, then by name."""
    groups: dict[tuple, list[MeterModel]] = {}
    for model in models:
        groups.setdefault(_map_key(model), []).append(model)
    matches = []
    for same in groups.values():
        meter = ModbusMeter(same[0], bus, unit, clock)
        try:
            reading = await meter.read()
        except HalError:
            continue
        finally:
            meter.release()
        values = plausible_values(reading)
        if values is not None:
            matches += [Match(model, reading, values) for model in same]
    matches.sort(key=lambda m: (-m.values, not _factory_fits(m.model, line), m.model.name))
    best = matches[0].values if matches else 0
    return tuple(m for m in matches if m.values == best)


async def scan_bus(bus: Bus, line: Line, units: list[int], progress: Progress) -> list[Found]:
    found = []
    bus.users += 1  # the scan's share: a meter read for identification does not close the bus
    for unit in units:
        progress(f"{line.where}: {line}, unit {unit} ({units.index(unit) + 1} of {len(units)})")
        async with bus.lock:  # the first request at a setting may meet what the line held before
            present = await bus.answers(unit) or (unit == units[0] and await bus.answers(unit))
        if present:
            found.append(Found(line, unit, await identify(bus, unit, line)))
    return found


async def scan_rtu(port: str, bauds: list[int], parities: list[str], units: list[int], timeout_s: float,
                   progress: Progress) -> Scan:
    """Every baud rate and parity in turn, the units at each; meters on one bus share a line
    setting, so the scan ends at the first setting where any unit answers."""
    scan, refused = Scan([], []), set()
    for baudrate in bauds:
        for parity in parities:
            if parity in refused:
                continue
            line = Line("rtu", port, baudrate, parity)
            bus = Bus("rtu", {"port": port, "baudrate": baudrate, "parity": parity, "stopbits": 1}, timeout_s)
            try:
                scan.found = await scan_bus(bus, line, units, progress)
            except LineRefused as exc:  # a port that takes no parity (a pty) takes it at no baud rate
                refused.add(parity)
                scan.problems.append(f"{exc} (parity {parity} not tried at other baud rates)")
                continue
            except DeviceUnavailable as exc:  # the port itself: no setting will do
                scan.problems.append(str(exc))
                return scan
            finally:
                bus.drop()
            if scan.found:
                return scan
    return scan


async def scan_tcp(host: str, tcp_port: int, units: list[int], timeout_s: float, progress: Progress) -> Scan:
    """The units behind one Modbus TCP address (a meter or an RS-485 gateway)."""
    line = Line("tcp", f"{host}:{tcp_port}")
    bus = Bus("tcp", {"host": host, "tcp_port": tcp_port}, timeout_s)
    try:
        return Scan(await scan_bus(bus, line, units, progress), [])
    except HalError as exc:
        return Scan([], [f"{line.where}: {exc}"])
    finally:
        bus.drop()
