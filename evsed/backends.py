"""The one registry of device backends: name -> factory and option schema, imported lazily.

The config names a backend per device; its options are checked here against the
schema (so typos fail at load with file and line) and the module is imported only
when that backend is configured, so hardware-only packages never load otherwise.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from hal import DeviceUnavailable

REQUIRED = object()  # an Option default meaning "the config must give it"

KINDS = ("pilot", "contactor", "rcd", "meter", "rfid")


@dataclass(frozen=True)
class Option:
    """One backend option: its type, default and bounds, and a line for the docs."""

    type: type | tuple[type, ...]
    default: Any = REQUIRED
    doc: str = ""
    min: float | None = None
    max: float | None = None
    choices: tuple | None = None


@dataclass(frozen=True)
class Backend:
    kind: str
    name: str
    target: str  # "module:callable"; callable(options: dict, ctx: BackendContext) -> device
    doc: str
    options: dict[str, Option] = field(default_factory=dict)
    packages: tuple[str, ...] = ()  # PyPI packages the backend needs beyond the base install


@dataclass
class BackendContext:
    """What a factory gets besides its options."""

    connector_id: int
    shared: dict[str, Any]  # resources backends share: the simulated world, a serial bus


_SIM = "simulator.hardware"

BACKENDS: dict[tuple[str, str], Backend] = {}


def register(backend: Backend) -> None:
    BACKENDS[(backend.kind, backend.name)] = backend


# --- simulator (simulator/) ----------------------------------------------------------------
register(Backend("pilot", "sim", f"{_SIM}:sim_pilot", "pilot of the simulated EV"))
register(Backend("contactor", "sim", f"{_SIM}:sim_contactor", "simulated contactor",
                 {"feedback": Option(bool, True, "report the contact state (auxiliary contact)")}))
register(Backend("rcd", "sim", f"{_SIM}:sim_rcd", "simulated residual-current module",
                 {"self_test": Option(bool, False, "test before every close")}))
register(Backend("meter", "sim", f"{_SIM}:sim_meter", "meter integrating the simulated EV's power"))
register(Backend("rfid", "sim", f"{_SIM}:sim_card_reader", "cards tapped with `evsed sim tap`"))

# --- Raspberry Pi class GPIO: pilot, contactor, RCD (hal/gpio.py, hal/pwm.py, hal/adc.py) ---

# --- Modbus energy meters (hal/modbus.py, hal/meter_models.py) ------------------------------

# --- card readers (hal/rfid.py) -------------------------------------------------------------

# --- OpenEVSE boards over RAPI (hal/openevse.py) --------------------------------------------


def backend(kind: str, name: str) -> Backend | None:
    return BACKENDS.get((kind, name))


def names(kind: str) -> list[str]:
    return sorted(name for k, name in BACKENDS if k == kind)


def create(kind: str, name: str, options: dict[str, Any], ctx: BackendContext) -> Any:
    """Build a device; a missing package or module is DeviceUnavailable naming it."""
    spec = BACKENDS[(kind, name)]
    module_name, _, attr = spec.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        need = ", ".join(spec.packages) or exc.name or module_name
        raise DeviceUnavailable(
            f"{kind} backend {name!r} needs the Python package(s) {need}: "
            f"pip install {' '.join(spec.packages) or need} ({exc})") from exc
    factory: Callable[..., Any] = getattr(module, attr)
    return factory(options, ctx)
