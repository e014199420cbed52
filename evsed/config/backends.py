"""The one registry of device backends: name -> factory and option schema, imported lazily.

The config names a backend per device; its options are checked here against the
schema (so typos fail at load with file and line) and the module is imported only
when that backend is configured, so hardware-only packages never load otherwise.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from hal import DeviceUnavailable

REQUIRED = object()  # an Option default meaning "the config must give it"

KINDS = ("pilot", "contactor", "rcd", "meter", "rfid", "input")


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
_BCM_INPUT: dict[str, Any] = {"min": 0, "max": 53}

BACKENDS: dict[tuple[str, str], Backend] = {}


def register(backend: Backend) -> None:
    BACKENDS[(backend.kind, backend.name)] = backend


# --- simulator (simulator/) ----------------------------------------------------------------
register(Backend("pilot", "sim", f"{_SIM}:sim_pilot", "pilot of the simulated EV",
                 {"pp_ohm": Option(float, None, "simulate a socket: the plugged cable's PP resistor in ohm "
                                   "(680: a 20 A cable); none: no PP reading", min=0, max=1e6)}))
register(Backend("input", "sim", "simulator.site:sim_input", "a contact switched with `evsed sim site input on`"))
register(Backend("contactor", "sim", f"{_SIM}:sim_contactor", "simulated contactor",
                 {"feedback": Option(bool, True, "report the contact state (auxiliary contact)"),
                  "heartbeat": Option(bool, False, "model a drop-out circuit: the contactor opens by itself "
                                      "dropout_s after the last heartbeat"),
                  "heartbeat_hz": Option(float, 10.0, "rising edges per second", min=1.0, max=50.0),
                  "dropout_s": Option(float, 0.5, "drop-out after the last rising edge", min=0.05, max=2.0),
                  "board": Option(str, "", "pin file shared with `python -m simulator.board`, which models "
                                  "the relay in its own process (its state outlives evsed)")}))
register(Backend("rcd", "sim", f"{_SIM}:sim_rcd", "simulated residual-current module",
                 {"self_test": Option(bool, False, "test before every close")}))
register(Backend("meter", "sim", f"{_SIM}:sim_meter", "meter integrating the simulated EV's power"))
register(Backend("rfid", "sim", f"{_SIM}:sim_card_reader", "cards tapped with `evsed sim tap`"))

register(Backend("input", "gpio", "hal.inputs:gpio_input",
                 "a digital input: a ripple-control receiver's or grid operator's control contact", {
    "pin": Option(int, doc="BCM pin of the contact", **_BCM_INPUT),
    "active_high": Option(bool, False, "the input reads high while the cap is ordered"),
    "pull": Option(str, "up", "pull resistor on the input", choices=("up", "down", "none")),
    "pin_factory": Option(str, "lgpio", "gpiozero pin factory (\"mock\" for tests)",
                          choices=("lgpio", "rpigpio", "pigpio", "native", "mock")),
}, packages=("gpiozero",)))

# --- Raspberry Pi class GPIO: pilot, contactor, RCD (hal/gpio.py, hal/pwm.py, hal/adc.py) ---
_GPIO = "hal.gpio"
_BCM: dict[str, Any] = {"min": 0, "max": 53}  # BCM GPIO numbers (a Pi has 0..27 on its header)
_PIN_FACTORY = Option(str, "lgpio", "gpiozero pin factory, named so it never falls back to another; "
                      "\"mock\" is for tests", choices=("lgpio", "rpigpio", "pigpio", "native", "mock"))
_PULL = ("up", "down", "none")

register(Backend("pilot", "gpio", f"{_GPIO}:gpio_pilot",
                 "1 kHz CP PWM (kernel hardware PWM or gpiozero) read back through an MCP3008/MCP3208", {
    "pwm": Option(str, "sysfs", "PWM source: the kernel's hardware PWM (sysfs), or gpiozero (jitters)",
                  choices=("sysfs", "gpiozero")),
    "sysfs_root": Option(str, "/sys/class/pwm", "where the kernel's PWM chips appear"),
    "pwmchip": Option(int, 0, "N of /sys/class/pwm/pwmchipN (Pi 5 RP1: often 2)", min=0, max=31),
    "pwm_channel": Option(int, 0, "channel of the chip: 0 = PWM0 (GPIO18 with dtoverlay=pwm)", min=0, max=15),
    "pwm_pin": Option(int, None, "BCM pin of the PWM when pwm = \"gpiozero\"", **_BCM),
    "pin_factory": _PIN_FACTORY,
    "invert": Option(bool, False, "the output stage inverts (a high GPIO gives -12 V)"),
    "adc": Option(str, "mcp3008", "ADC chip: MCP3008 (10 bit) or MCP3208 (12 bit)",
                  choices=("mcp3008", "mcp3208")),
    "adc_driver": Option(str, "spidev", "talk to the ADC through the spidev package or gpiozero",
                         choices=("spidev", "gpiozero")),
    "spi_bus": Option(int, 0, "SPI bus (the B of /dev/spidevB.D)", min=0, max=6),
    "spi_device": Option(int, 0, "chip select (the D of /dev/spidevB.D)", min=0, max=2),
    "spi_speed_hz": Option(int, 1_000_000, "SPI clock in Hz (spidev; MCP3008 allows 1.35 MHz at 2.7 V)",
                           min=10_000, max=3_600_000),
    "adc_channel": Option(int, 0, "ADC input wired to the CP divider", min=0, max=7),
    "vref_v": Option(float, 3.3, "ADC reference in V", min=1.0, max=5.5),
    "offset_v": Option(float, doc="V at the ADC pin for 0 V on CP (the divider's bias)", min=-5.5, max=5.5),
    "gain": Option(float, doc="CP volts per volt at the ADC pin: cp_v = (adc_v - offset_v) * gain",
                   min=0.5, max=100.0),
    "samples": Option(int, 100, "ADC samples per read; the burst also spans at least one 1 ms period",
                      min=10, max=2000),
    "high_percentile": Option(float, 98.0, "percentile of the burst taken as the high level", min=50, max=100),
    "low_percentile": Option(float, 2.0, "percentile of the burst taken as the low level", min=0, max=50),
}, packages=("gpiozero", "spidev")))

register(Backend("contactor", "gpio", f"{_GPIO}:gpio_contactor",
                 "contactor coil on a GPIO output, optional auxiliary contact or mains-sense input", {
    "pin": Option(int, doc="BCM pin driving the contactor's relay", **_BCM),
    "active_high": Option(bool, True, "a high output closes the contactor"),
    "pin_factory": _PIN_FACTORY,
    "feedback_pin": Option(int, None, "BCM pin of the auxiliary contact or mains sense (none: no feedback)",
                           **_BCM),
    "feedback_active_high": Option(bool, False, "the feedback input reads high when the contactor is closed"),
    "feedback_pull": Option(str, "up", "pull resistor on the feedback input", choices=_PULL),
    "heartbeat_pin": Option(int, None, "BCM pin toggled by the safety loop into a retriggerable monostable "
                            "in series with the relay driver (none: no drop-out circuit fitted)", **_BCM),
    "heartbeat_hz": Option(float, 10.0, "rising edges per second on heartbeat_pin", min=1.0, max=50.0),
    "dropout_s": Option(float, 0.5, "the circuit's drop-out: the relay opens this long after the last "
                        "rising edge (at least 3 heartbeat periods)", min=0.05, max=2.0),
}, packages=("gpiozero",)))

register(Backend("rcd", "gpio", f"{_GPIO}:gpio_rcd",
                 "residual-current module: trip input, optional test output for a self-test before every close", {
    "pin": Option(int, doc="BCM pin of the module's trip output", **_BCM),
    "active_high": Option(bool, True, "the trip input reads high when tripped"),
    "pull": Option(str, "down", "pull resistor on the trip input", choices=_PULL),
    "pin_factory": _PIN_FACTORY,
    "test_pin": Option(int, None, "BCM pin of the test output (none: no self-test)", **_BCM),
    "test_active_high": Option(bool, True, "a high test output injects the test current"),
    "test_frequency_hz": Option(float, 0.0, "0: hold the test output as a level (a module's TEST input); "
                                "60: toggle it like OpenEVSE's wire through the CT", min=0, max=1000),
    "test_timeout_s": Option(float, 1.0, "the trip must assert within this", min=0.01, max=5),
    "release_timeout_s": Option(float, 2.0, "the trip must release within this after the test",
                                min=0.01, max=10),
}, packages=("gpiozero",)))

# --- Modbus energy meters (hal/modbus.py, hal/meter_models.py) ------------------------------
from hal.meter_models import MODELS as _METER_MODELS  # plain data; pymodbus loads with hal.modbus


def _factory(attr: str, usual: object) -> str:
    """The models' factory setting of a line option in words: the usual value and the exceptions."""
    odd: dict[object, list[str]] = {}
    for m in _METER_MODELS.values():
        if getattr(m, attr) != usual:
            odd.setdefault(getattr(m, attr), []).append(m.name)
    said = [str(usual)] + [f"{value} for " + ", ".join(names) for value, names in odd.items()]
    return f"unset: the model's factory setting ({'; '.join(said)})"


register(Backend("meter", "modbus", "hal.modbus:modbus_meter",
                 "energy meter over Modbus RTU (RS-485) or TCP; meters on one port share the bus", {
                     "model": Option(str, doc="meter model", choices=tuple(_METER_MODELS)),
                     "transport": Option(str, "rtu", "rtu (RS-485) or tcp", choices=("rtu", "tcp")),
                     "port": Option(str, "/dev/ttyUSB0", "serial device (rtu)"),
                     "baudrate": Option(int, None, "bit/s (rtu); " + _factory("baudrate", 9600),
                                        choices=(1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)),
                     "parity": Option(str, None, "N, E or O (rtu); " + _factory("parity", "N"),
                                      choices=("N", "E", "O")),
                     "stopbits": Option(int, 1, "1 or 2 (rtu)", choices=(1, 2)),
                     "host": Option(str, "", "meter or gateway address (tcp)"),
                     "tcp_port": Option(int, 502, "TCP port (tcp)", min=1, max=65535),
                     "unit": Option(int, 1, "Modbus unit (slave) id", min=1, max=247),
                     "timeout_s": Option(float, 0.5, "answer timeout per request", min=0.05, max=10),
                 }, packages=("pymodbus", "pyserial")))

# --- card readers (hal/rfid.py) -------------------------------------------------------------
_HOLD_OFF = Option(float, 1.0, "a card counts as a new tap only after this long away from the reader, in s",
                   min=0.1, max=60)
_POLL = Option(float, 0.1, "how often the reader is asked for a card, in s", min=0.02, max=5)
register(Backend("rfid", "rc522", "hal.rfid_rc522:rc522_reader",
                 "MFRC522 13.56 MHz reader on SPI (mfrc522 package); ISO14443A UIDs", {
                     "spi_bus": Option(int, 0, "SPI bus: /dev/spidev<bus>.<device>", min=0, max=6),
                     "spi_device": Option(int, 0, "SPI chip select (0 = CE0, 1 = CE1)", min=0, max=2),
                     "reset_pin": Option(int, 25, "RST pin as a BCM GPIO number (25 = physical pin 22)",
                                         min=0, max=27),
                     "spi_speed_hz": Option(int, 1_000_000, "SPI clock in Hz", min=10_000, max=10_000_000),
                     "poll_interval_s": _POLL, "hold_off_s": _HOLD_OFF},
                 packages=("mfrc522",)))
register(Backend("rfid", "pn532", "hal.rfid_pn532:pn532_reader",
                 "PN532 13.56 MHz reader on a UART (HSU mode); ISO14443A UIDs", {
                     "port": Option(str, "/dev/serial0", "serial device file"),
                     "baudrate": Option(int, 115200, "HSU speed (the PN532 starts at 115200)",
                                        choices=(9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)),
                     "poll_interval_s": _POLL, "hold_off_s": _HOLD_OFF}))
register(Backend("rfid", "rdm6300", "hal.rfid:rdm6300_reader",
                 "125 kHz EM4100 reader sending STX/hex/checksum/ETX frames (RDM6300, RDM630); "
                 "UID = the 10 hex chars as sent", {
                     "port": Option(str, "/dev/serial0", "serial device file"),
                     "baudrate": Option(int, 9600, "line speed, 8N1", min=1200, max=115200),
                     "hold_off_s": _HOLD_OFF}))
register(Backend("rfid", "hid", "hal.rfid_hid:hid_reader",
                 "USB reader acting as a keyboard (types the UID, then Enter), read with evdev", {
                     "device": Option(str, "", "input device file, e.g. /dev/input/by-id/usb-...-event-kbd"),
                     "name": Option(str, "", "or: part of the device's name, when no device path is given"),
                     "format": Option(str, "decimal", "what the reader types", choices=("decimal", "hex")),
                     "byte_order": Option(str, "msb", "lsb: the typed number has the UID's first byte "
                                          "last (common for 10-digit readers)", choices=("msb", "lsb")),
                     "grab": Option(bool, True, "take the keyboard exclusively so keystrokes reach no console"),
                     "hold_off_s": _HOLD_OFF},
                 packages=("evdev",)))

# --- OpenEVSE boards over RAPI (hal/openevse.py) --------------------------------------------
# The four devices share one link per port; they must agree on the link options below.
_OPENEVSE = "hal.openevse"
_OPENEVSE_LINK = {
    "port": Option(str, doc="the board's serial device, e.g. /dev/ttyUSB0 (user in group dialout)"),
    "baudrate": Option(int, 115200, "RAPI serial speed", choices=(9600, 19200, 38400, 57600, 115200)),
    "timeout_s": Option(float, 0.5, "answer timeout per RAPI command", min=0.05, max=5.0),
    "poll_interval_s": Option(float, 0.2, "how often $GS refreshes the cached state (async $AT comes at once)",
                              min=0.02, max=2.0),
    "stale_s": Option(float, 1.5, "a cached state older than this reads as 'try again' (pilot lost)",
                      min=0.1, max=10.0),
    "relay_grace_s": Option(float, 0.25, "the board's relay closed without the core's consent this long: "
                            "force it open; keep below [timing] contactor_settle_s", min=0.0, max=5.0),
    "sequence_ids": Option(bool, True, "tag commands with RAPI sequence ids (firmware with RAPI >= 3.0)"),
    "volatile_current": Option(bool, True, "$SC ... V: current changes do not wear the EEPROM (falls back "
                               "by itself after 3 bare refusals in a row; a plain $SC never exceeds the "
                               "board's stored maximum)"),
    "heartbeat_s": Option(int, 10, "heartbeat supervision ($SY): if evsed stops pulsing for this long the "
                          "board lowers its offer to 6 A (it does not stop charging); 0 turns it off. At "
                          "most 65: the firmware computes the interval in 16-bit milliseconds",
                          min=0, max=65),
    "reopen_s": Option(float, 2.0, "a lost port (USB adapter unplugged) is opened again this often until it "
                       "is back; meanwhile the board's devices read as unavailable (charging pauses)",
                       min=0.05, max=60.0),
}
register(Backend("pilot", "openevse", f"{_OPENEVSE}:pilot",
                 "OpenEVSE board's pilot: $SC current (volatile) + $FE enable; no offer is the auth lock "
                 "$S4 (firmware built with AUTH_LOCK) or else $FS sleep; $FD disable; state from $GS/$AT; "
                 "reports the board's real offer (hal.OfferedCurrent)",
                 _OPENEVSE_LINK, packages=("pyserial",)))
register(Backend("contactor", "openevse", f"{_OPENEVSE}:contactor",
                 "OpenEVSE board's relay (the board closes it when the EV asks); feedback from its state",
                 _OPENEVSE_LINK, packages=("pyserial",)))
register(Backend("rcd", "openevse", f"{_OPENEVSE}:rcd",
                 "OpenEVSE board's GFCI and ground check: tripped in those fault states; the board's own "
                 "retry (5 min, reset on unplug) is left to run",
                 _OPENEVSE_LINK, packages=("pyserial",)))
register(Backend("meter", "openevse", f"{_OPENEVSE}:meter",
                 "OpenEVSE board's ammeter: $GG current and voltage; an import register built from $GU's "
                 "session and total counters, right across board reboots and unplugs (one phase)",
                 _OPENEVSE_LINK, packages=("pyserial",)))


# The gpiozero pin factories of the `pin_factory` option (hal/gpio.py) and the package each imports.
PIN_FACTORY_PACKAGES = {"lgpio": "lgpio", "rpigpio": "RPi.GPIO", "pigpio": "pigpio"}


def packages(kind: str, name: str, options: Mapping[str, Any]) -> tuple[str, ...]:
    """The PyPI packages a configured backend imports: those it names (less spidev where the
    pilot's ADC is read through gpiozero), and its gpiozero pin factory's."""
    spec = BACKENDS[(kind, name)]
    need = [p for p in spec.packages if not (p == "spidev" and options.get("adc_driver") == "gpiozero")]
    factory = PIN_FACTORY_PACKAGES.get(str(options.get("pin_factory", "")))
    return (*need, factory) if factory else tuple(need)


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
