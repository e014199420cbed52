"""Simulated charger hardware behind the hal interfaces: pilot, contactor, RCD, meter, reader.

One SimWorld holds a SimEV per connector and a clock; the meter integrates power over it and,
like a real meter, keeps its counter across restarts of the daemon (in the world's meter file). A
contactor may sit behind a heartbeat drop-out circuit, modelled here or by a separate board process.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Callable

from hal import Meter, MeterIdentity, MeterReading, PilotReading, TryAgain, canonical_uid
from simulator import FAULT_KINDS
from simulator.board import Monostable, PinFile, rose_between
from simulator.ev import SimEV
from simulator.site import SimSite


class SimConnector:
    """The simulated bench of one connector: EV, pilot generator, contactor, RCD, meter."""

    def __init__(self, world: SimWorld, connector_id: int):
        self.world, self.id = world, connector_id
        self.ev = SimEV(max_current_a=world.ev_max_current_a, phases=world.ev_phases)
        self.pilot_mode = "off"  # "off" | "pwm" | "f"
        self.pilot_levels: tuple[float, float] | None = None  # injected (high, low) V that the ADC reads
        self.duty_pct: float | None = None
        self._coil = False  # what the contactor output commands
        self.dropout: Monostable | None = None  # a drop-out circuit in series with the coil driver
        self.heartbeat_toggles = 0
        self.board: PinFile | None = None  # the relay modelled by a board process instead
        self.faults: set[str] = set()
        self.cable_ohm: float | None = None  # a socket's plugged cable (SimPilotWithPP)
        self.energy_wh_exact = float(world.kept_wh.get(str(connector_id), world.meter_start_wh))
        self._integrated_at = world.clock()
        self._listeners: list[Callable[[], None]] = []

    # -- what the hardware sees --
    @property
    def contactor_closed(self) -> bool:
        """The contacts: closed while the coil is commanded and any drop-out circuit holds."""
        if self.board is not None:
            return self.board.relay()
        return self._coil and (self.dropout is None or self.dropout.high())

    @contactor_closed.setter
    def contactor_closed(self, energized: bool) -> None:
        self._coil = energized
        if self.board is not None:
            self.board.set_coil(energized)

    def toggle_heartbeat(self) -> None:
        """One toggle of the heartbeat output; a rising edge retriggers the drop-out circuit."""
        self.heartbeat_toggles += 1
        if self.board is not None:
            self.board.toggle()
        elif self.dropout is not None and rose_between(self.heartbeat_toggles - 1, self.heartbeat_toggles):
            if self._coil and not self.dropout.high():  # the edge closes a dropped relay again
                self.change(self.dropout.trigger)
            else:
                self.dropout.trigger()

    def pwm_duty(self) -> float | None:
        return self.duty_pct if self.pilot_mode == "pwm" else None

    def current_a(self) -> tuple[float, ...]:
        return self.ev.draw_a(self.pwm_duty(), self.contactor_closed)

    def power_w(self) -> float:
        return sum(self.current_a()) * self.world.voltage_v

    def integrate(self) -> None:
        """Account energy up to now at the power that held since the last change."""
        now = self.world.clock()
        end, power_w = now, self.power_w()
        if self.dropout is not None and self.board is None and self._coil:
            # the circuit may have dropped the relay since the last account: power until it fell
            end = min(now, max(self._integrated_at, self.dropout.falls_at()))
            power_w = sum(self.ev.draw_a(self.pwm_duty(), True)) * self.world.voltage_v
        self.energy_wh_exact += power_w * max(0.0, end - self._integrated_at) / 3600.0
        self._integrated_at = now

    def change(self, apply: Callable[[], None]) -> None:
        """Apply a change to the bench and tell listeners (the daemon reads at once)."""
        self.integrate()
        apply()
        self.ev.see_pilot(self.pwm_duty())
        for listener in list(self._listeners):
            listener()

    # -- driver and test actions --
    def plug(self) -> None:
        self.change(lambda: setattr(self.ev, "plugged", True))

    def unplug(self) -> None:
        self.change(self.ev.unplug)

    def set_ev(self, **attrs) -> None:
        def apply():
            for key, value in attrs.items():
                if not hasattr(self.ev, key) or key.startswith("_"):
                    raise ValueError(f"the simulated EV has no setting {key!r}")
                setattr(self.ev, key, value)
        self.change(apply)

    def inject_pilot(self, levels: tuple[float, float] | None) -> None:
        """The pilot's ADC reads exactly these (high, low) volts until None lets the EV speak again:
        a -2 V low level for a missing diode, 7.5 V between bands, a slow drift."""
        self.change(lambda: setattr(self, "pilot_levels", levels))

    def inject(self, kind: str, active: bool = True) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; one of {', '.join(FAULT_KINDS)}")

        def apply():
            (self.faults.add if active else self.faults.discard)(kind)
            if kind == "diode":
                self.ev.diode_fault = active
            elif kind == "ev-error":
                self.ev.error = active
        self.change(apply)


class SimWorld:
    """All simulated connectors and the card reader, on one clock (real or virtual)."""

    def __init__(self, clock: Callable[[], float], *, voltage_v: float = 230.0,
                 ev_max_current_a: float = 16.0, ev_phases: int = 3, meter_start_wh: int = 0,
                 meter_file: Path | None = None):
        """meter_file: where the meters' counters are kept across restarts (None: they start at
        meter_start_wh each time, as in scenarios and `evsed check`)."""
        self.clock, self.voltage_v = clock, voltage_v
        self.ev_max_current_a, self.ev_phases, self.meter_start_wh = ev_max_current_a, ev_phases, meter_start_wh
        self.meter_file = meter_file
        self.kept_wh: dict[str, float] = _read_counters(meter_file)
        self.connectors: dict[int, SimConnector] = {}
        self.reader = SimCardReader()
        self.site = SimSite(self)

    def connector(self, connector_id: int) -> SimConnector:
        if connector_id not in self.connectors:
            self.connectors[connector_id] = SimConnector(self, connector_id)
        return self.connectors[connector_id]

    def keep_counters(self) -> None:
        """Write the meters' counters when a whole Wh changed (a real meter's register survives a
        restart of the controller); atomically, so a kill leaves the old file or the new."""
        if self.meter_file is None:
            return
        now = {str(cid): c.energy_wh_exact for cid, c in self.connectors.items()}
        if {k: int(v) for k, v in now.items()} == {k: int(v) for k, v in self.kept_wh.items()}:
            return
        tmp = self.meter_file.with_name(self.meter_file.name + ".tmp")
        tmp.write_text(json.dumps(now))
        os.replace(tmp, self.meter_file)
        self.kept_wh = now


def _read_counters(path: Path | None) -> dict[str, float]:
    """The counters a previous run kept ({} when none or unreadable: the meters start afresh)."""
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): float(v) for k, v in data.items() if isinstance(v, (int, float)) and v >= 0}


# --- the hal devices ----------------------------------------------------------------------


class SimPilot:
    def __init__(self, bench: SimConnector):
        self.bench = bench

    def pwm_on(self, duty_pct: float) -> None:
        self.bench.change(lambda: self._set("pwm", duty_pct))

    def pwm_off(self) -> None:
        self.bench.change(lambda: self._set("off", None))

    def pwm_f(self) -> None:
        self.bench.change(lambda: self._set("f", None))

    def _set(self, mode: str, duty: float | None) -> None:
        self.bench.pilot_mode, self.bench.duty_pct = mode, duty

    def read(self) -> PilotReading:
        b = self.bench
        if "pilot-lost" in b.faults:
            raise TryAgain("simulated ADC not answering")
        if b.pilot_levels is not None:
            return PilotReading(*b.pilot_levels)
        if "pilot-short" in b.faults or b.pilot_mode == "f":
            level = 0.0 if "pilot-short" in b.faults else -12.0
            return PilotReading(level, level if b.pilot_mode != "pwm" else -12.0)
        high = b.ev.pilot_high_v(b.pwm_duty())
        if b.pilot_mode != "pwm":
            return PilotReading(high, high)
        low = -high if (b.ev.plugged and b.ev.diode_fault) else -12.0
        return PilotReading(high, low)

    def on_change(self, callback: Callable[[], None]) -> None:
        self.bench._listeners.append(callback)


class SimPilotWithPP(SimPilot):
    """A socket: the pilot board also reads the plugged cable's PP resistor (bench.cable_ohm)."""

    def proximity_ohm(self) -> float | None:
        b = self.bench
        return b.cable_ohm if b.ev.plugged else float("inf")


class SimContactor:
    def __init__(self, bench: SimConnector):
        self.bench = bench

    def close(self) -> None:
        if "stuck-open" not in self.bench.faults:
            self.bench.change(lambda: setattr(self.bench, "contactor_closed", True))

    def open(self) -> None:
        if "welded" not in self.bench.faults:
            self.bench.change(lambda: setattr(self.bench, "contactor_closed", False))


class SimContactorWithFeedback(SimContactor):
    """The contactor with an auxiliary contact reporting its real state."""

    def feedback_closed(self) -> bool:
        return self.bench.contactor_closed


class _SimHeartbeat:
    """The Heartbeat capability of a simulated contactor behind a drop-out circuit."""

    bench: SimConnector
    heartbeat_interval_s: float
    dropout_s: float

    def heartbeat(self) -> None:
        self.bench.toggle_heartbeat()


class SimContactorWithHeartbeat(_SimHeartbeat, SimContactor):
    pass


class SimContactorWithFeedbackAndHeartbeat(_SimHeartbeat, SimContactorWithFeedback):
    pass


class SimRcd:
    def __init__(self, bench: SimConnector):
        self.bench = bench

    def tripped(self) -> bool:
        return "rcd" in self.bench.faults

    def on_change(self, callback: Callable[[], None]) -> None:
        self.bench._listeners.append(callback)


class SimRcdWithSelfTest(SimRcd):
    def self_test(self) -> bool:
        return "self-test" not in self.bench.faults


class SimMeter:
    """A three-phase meter integrating the bench's power over the world's clock. It names itself
    "evsed" "simulator", its serial number the connector's, the same on every run."""

    def __init__(self, bench: SimConnector):
        self.bench = bench

    async def identity(self) -> MeterIdentity:
        if "meter" in self.bench.faults:
            raise TryAgain("simulated meter timeout")
        return MeterIdentity("evsed", "simulator", f"SIM{self.bench.id:05d}")

    async def read(self) -> MeterReading:
        b = self.bench
        if "meter" in b.faults:
            raise TryAgain("simulated meter timeout")
        b.integrate()
        b.world.keep_counters()
        current = b.current_a()
        voltage = b.world.voltage_v
        return MeterReading(
            energy_import_wh=int(b.energy_wh_exact), power_total_w=sum(current) * voltage,
            current_a=current, voltage_v=(voltage,) * 3, power_w=tuple(c * voltage for c in current),
            frequency_hz=50.0)


class SimCardReader:
    """Cards tapped through the control socket (`evsed sim tap`) or a scenario."""

    def __init__(self):
        self._taps: asyncio.Queue[str] | None = None
        self._pending: list[str] = []

    def tap(self, uid: str) -> str:
        uid = canonical_uid(uid)
        if self._taps is None:
            self._pending.append(uid)
        else:
            self._taps.put_nowait(uid)
        return uid

    async def next_tap(self) -> str:
        if self._taps is None:
            self._taps = asyncio.Queue()
            for uid in self._pending:
                self._taps.put_nowait(uid)
            self._pending.clear()
        return await self._taps.get()


# --- registry factories (evsed.backends names them) -----------------------------------------


def _world(ctx) -> SimWorld:
    world = ctx.shared.get("sim")
    if world is None:
        raise RuntimeError("the simulator backends need the daemon to create a SimWorld")
    return world


def sim_pilot(options, ctx) -> SimPilot:
    bench = _world(ctx).connector(ctx.connector_id)
    if options.get("pp_ohm") is None:
        return SimPilot(bench)
    bench.cable_ohm = options["pp_ohm"]
    return SimPilotWithPP(bench)


def sim_contactor(options, ctx) -> SimContactor:
    bench = _world(ctx).connector(ctx.connector_id)
    feedback, heartbeat = options.get("feedback", True), options.get("heartbeat", False)
    if options.get("board"):
        bench.board = PinFile(options["board"], create=True)
        bench.contactor_closed = False
    if not heartbeat:
        return (SimContactorWithFeedback if feedback else SimContactor)(bench)
    contactor = (SimContactorWithFeedbackAndHeartbeat if feedback else SimContactorWithHeartbeat)(bench)
    contactor.heartbeat_interval_s = 0.5 / options.get("heartbeat_hz", 10.0)
    contactor.dropout_s = options.get("dropout_s", 0.5)
    if bench.board is None:
        bench.dropout = Monostable(bench.world.clock, contactor.dropout_s)
    return contactor


def sim_rcd(options, ctx) -> SimRcd:
    kind = SimRcdWithSelfTest if options.get("self_test", False) else SimRcd
    return kind(_world(ctx).connector(ctx.connector_id))


def sim_meter(options, ctx) -> Meter:
    if ctx.connector_id == 0:  # the site (grid) meter: house, PV and every EV (simulator.site)
        from simulator.site import SimSiteMeter
        return SimSiteMeter(_world(ctx))
    return SimMeter(_world(ctx).connector(ctx.connector_id))


def sim_card_reader(options, ctx) -> SimCardReader:
    return _world(ctx).reader
