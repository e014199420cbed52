"""The one device builder: every configured device, from the config, for the daemon, the
scenario runner and `evsed check` alike.

Devices are built through the backend registry (imported lazily by name); the simulated world
is made when any configured backend is the simulator, on the clock the caller gives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from evsed.config import Config, Device
from evsed.config import backends
from hal import CardReader, Closable, Contactor, DeviceUnavailable, FaultInput, HalError, Meter, Pilot

CONNECTOR_KINDS = ("contactor", "pilot", "rcd", "meter")  # contactor first: `check` opens it before all else
REGISTRY_KIND = {"site_meter": "meter", "site_input": "input"}  # configured() kinds -> backends' kinds


@dataclass
class ConnectorDevices:
    """One connector's hardware."""

    pilot: Pilot
    contactor: Contactor
    rcd: FaultInput | None = None
    meter: Meter | None = None

    def all(self) -> list[Any]:
        return [d for d in (self.pilot, self.contactor, self.rcd, self.meter) if d is not None]


@dataclass
class Devices:
    """Everything the charger drives: per connector, and the charger-level devices."""

    connectors: dict[int, ConnectorDevices] = field(default_factory=dict)
    reader: CardReader | None = None
    site_meter: Meter | None = None  # at the grid connection: the whole site's current per phase
    site_input: Any = None  # hal.ContactInput: a grid operator's control contact ([site.input])
    world: Any = None  # simulator.hardware.SimWorld when any backend is simulated

    def shared(self) -> dict[str, Any]:
        """What backends share: the simulated world, when there is one."""
        return {"sim": self.world} if self.world is not None else {}

    def all(self) -> Iterator[Any]:
        for conn in self.connectors.values():
            yield from conn.all()
        yield from (d for d in (self.reader, self.site_meter, self.site_input) if d is not None)

    def release(self, on_error: Callable[[Any, BaseException], None] = lambda d, e: None) -> None:
        """Release every device holding a resource (bus, file, thread); errors are reported, not raised."""
        for device in self.all():
            if isinstance(device, Closable):
                try:
                    device.release()
                except (HalError, OSError) as exc:
                    on_error(device, exc)


def configured(config: Config) -> Iterator[tuple[int, str, Device]]:
    """(connector id or 0 for the charger, kind, device config) of every configured device."""
    for conn in config.connectors:
        for kind in CONNECTOR_KINDS:
            device = getattr(conn, kind)
            if device is not None:
                yield conn.id, kind, device
    if config.rfid is not None:
        yield 0, "rfid", config.rfid
    if config.site.meter is not None:
        yield 0, "site_meter", config.site.meter
    if config.site.load.input is not None:
        yield 0, "site_input", config.site.load.input


def build_world(config: Config, clock: Callable[[], float], meter_file: Path | None = None) -> Any:
    """The simulated world, when any configured backend is the simulator (else None); its meters
    keep their counters in meter_file across restarts (the daemon's; None: they start afresh)."""
    if not any(d.backend == "sim" for _, _, d in configured(config)):
        return None
    from simulator.hardware import SimWorld
    s = config.simulator
    return SimWorld(clock, voltage_v=s.voltage_v, ev_max_current_a=s.ev_max_current_a,
                    ev_phases=s.ev_phases, meter_start_wh=s.meter_start_wh, meter_file=meter_file)


def create(kind: str, device: Device, connector_id: int, shared: dict[str, Any]) -> Any:
    """One device; a failure is DeviceUnavailable naming the connector, kind and backend."""
    registry_kind = REGISTRY_KIND.get(kind, kind)
    where = f"connector {connector_id} {kind}" if connector_id else kind.replace("_", " ")
    try:
        return backends.create(registry_kind, device.backend, dict(device.options),
                               backends.BackendContext(connector_id, shared))
    except (DeviceUnavailable, OSError) as exc:
        raise DeviceUnavailable(f"{where} ({device.backend}): {exc}") from exc


def build(config: Config, clock: Callable[[], float], sim_meter_file: Path | None = None) -> Devices:
    """Every configured device; raises DeviceUnavailable naming the first that cannot be made,
    after releasing those already made. sim_meter_file: see build_world."""
    out = Devices(world=build_world(config, clock, sim_meter_file))
    shared = out.shared()
    try:
        for conn in config.connectors:
            made = {kind: create(kind, getattr(conn, kind), conn.id, shared)
                    for kind in CONNECTOR_KINDS if getattr(conn, kind) is not None}
            out.connectors[conn.id] = ConnectorDevices(**made)
        if config.rfid is not None:
            out.reader = create("rfid", config.rfid, 0, shared)
        if config.site.meter is not None:
            out.site_meter = create("site_meter", config.site.meter, 0, shared)
        if config.site.load.input is not None:
            out.site_input = create("site_input", config.site.load.input, 0, shared)
    except BaseException:
        out.release()
        raise
    return out
