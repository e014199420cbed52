"""Modbus energy meters over RS-485 (RTU) or TCP: one pymodbus client and lock per bus,
register decoding per hal.meter_models, validation, and back-off after failures.

Faults reach the caller as hal errors with context: TryAgain for a timeout, an exception
response, a "not available" marker or NaN; DeviceUnavailable for a missing device or host.
What a meter says is reported as said: whether a reading is plausible (a counter that ran
back, a jump) is judged in one place, in evsed.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import math
import os
import struct
import termios
import time
from typing import Any, Callable

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from hal import DeviceUnavailable, HalError, MeterIdentity, MeterReading, TryAgain
from hal.meter_models import MODELS, PER_PHASE, TYPES, Field, MeterModel, blocks

# First and longest waits before reconnecting a bus / asking a failing meter again. The longest
# is short: charging pauses 4 s after the last good reading, and a meter back after an outage
# must be heard from within a couple of seconds (a retry costs one frame on an idle bus).
CONNECT_BACKOFF_S = (0.5, 2.0)
READ_BACKOFF_S = (0.5, 2.0)

EXCEPTION_NAMES = {1: "illegal function", 2: "illegal data address", 3: "illegal data value",
                   4: "server device failure", 5: "acknowledge", 6: "server device busy",
                   8: "memory parity error", 10: "gateway path unavailable",
                   11: "gateway target failed to respond"}


class LineRefused(DeviceUnavailable):
    """The serial port refuses the line setting (a baud rate or parity it cannot take)."""


class Backoff:
    """Doubling wait after consecutive failures; remembers the last error to repeat it."""

    def __init__(self, first_s: float, longest_s: float, clock: Callable[[], float]):
        self.first_s, self.longest_s, self.clock = first_s, longest_s, clock
        self.failures = 0
        self.retry_at = 0.0
        self.error: HalError | None = None

    def check(self) -> None:
        """Raise the last error again while the wait is not over."""
        wait_s = self.retry_at - self.clock()
        if self.error is not None and wait_s > 0:
            raise type(self.error)(f"{self.error} (next attempt in {wait_s:.1f} s)")

    def failed(self, error: HalError) -> HalError:
        self.failures += 1
        self.error = error
        self.retry_at = self.clock() + min(self.first_s * 2 ** (self.failures - 1), self.longest_s)
        return error

    def succeeded(self) -> None:
        self.failures, self.error, self.retry_at = 0, None, 0.0


class Bus:
    """One RS-485 port or TCP connection shared by every meter on it.

    The lock spans a meter's whole read, so frames of two meters never interleave and each
    reading is one consistent snapshot.
    """

    def __init__(self, transport: str, settings: dict[str, Any], timeout_s: float,
                 clock: Callable[[], float] = time.monotonic):
        self.transport, self.settings, self.timeout_s = transport, settings, timeout_s
        self.name = (settings["port"] if transport == "rtu"
                     else f"{settings['host']}:{settings['tcp_port']}")
        self.lock = asyncio.Lock()
        self.client: AsyncModbusSerialClient | AsyncModbusTcpClient | None = None
        self.backoff = Backoff(*CONNECT_BACKOFF_S, clock)
        self.users = 0

    def _make_client(self):
        s = self.settings
        # retries=0 and no automatic reconnect: failures come back to us at once and
        # the back-off here, not pymodbus, decides when to try again.
        if self.transport == "rtu":
            return AsyncModbusSerialClient(
                s["port"], framer=FramerType.RTU, baudrate=s["baudrate"], parity=s["parity"],
                stopbits=s["stopbits"], bytesize=8, timeout=self.timeout_s, retries=0,
                reconnect_delay=0)
        return AsyncModbusTcpClient(s["host"], port=s["tcp_port"], timeout=self.timeout_s,
                                    retries=0, reconnect_delay=0)

    async def _connect(self) -> None:
        self.backoff.check()
        if self.transport == "rtu":
            self._check_device_file()
        client = self._make_client()
        refused = ""
        try:
            connected = await client.connect()
        except (OSError, ValueError, termios.error) as exc:  # pyserial lets the port's own refusal through
            refused = str(exc) or type(exc).__name__
        if refused:
            # pymodbus opened the port, then lost it in a reference cycle when the line setting was
            # refused (a pty takes no parity): until collected it held the port's exclusive lock,
            # and every later open of it failed as busy.
            client.close()
            gc.collect()
            raise self.backoff.failed(LineRefused(
                f"Modbus RTU port {self.name}: cannot be set to {self.settings['baudrate']} baud, parity "
                f"{self.settings['parity']}: {refused}"))
        if connected:
            self.client = client
            self.backoff.succeeded()
            return
        client.close()
        raise self.backoff.failed(await self._why_not_connected())

    def _check_device_file(self) -> None:
        port = self.settings["port"]
        if port.startswith(("socket://", "rfc2217://", "loop://")):
            return
        if not os.path.exists(port):
            raise self.backoff.failed(DeviceUnavailable(f"Modbus RTU port {port}: no such device file"))
        if not os.access(port, os.R_OK | os.W_OK):
            raise self.backoff.failed(DeviceUnavailable(
                f"Modbus RTU port {port}: permission denied (is the user in the dialout group?)"))

    async def _why_not_connected(self) -> HalError:
        """pymodbus only says "not connected"; open once more ourselves to learn why."""
        if self.transport == "rtu":
            return DeviceUnavailable(f"Modbus RTU port {self.name}: cannot open (busy or not a serial port?)")
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(self.settings["host"], self.settings["tcp_port"]), self.timeout_s)
        except (TimeoutError, asyncio.TimeoutError):
            return TryAgain(f"Modbus TCP {self.name}: no answer to connect within {self.timeout_s} s")
        except OSError as exc:
            # asyncio words a refusal "Connect call failed"; name the errno instead
            reason = (os.strerror(exc.errno) if exc.errno and exc.errno > 0
                      else exc.strerror or str(exc))
            if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
                return TryAgain(f"Modbus TCP {self.name}: {reason}")
            return DeviceUnavailable(f"Modbus TCP {self.name}: {reason}")
        writer.close()
        return TryAgain(f"Modbus TCP {self.name}: connection failed, then succeeded on a second try")

    def drop(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    async def read(self, function_code: int, address: int, count: int, unit: int) -> list[int]:
        """Registers [address, address + count) of one unit; call with the lock held."""
        if self.client is None or not self.client.connected:
            self.drop()
            await self._connect()
        assert self.client is not None
        what = f"Modbus {self.name} unit {unit}: FC{function_code} read of {count} at {address}"
        call = (self.client.read_input_registers if function_code == 4
                else self.client.read_holding_registers)
        try:
            response = await call(address, count=count, device_id=unit)
        except ModbusIOException as exc:
            raise TryAgain(f"{what}: no answer within {self.timeout_s} s ({exc})") from exc
        except ConnectionException as exc:
            self.drop()
            raise TryAgain(f"{what}: connection lost ({exc})") from exc
        except ModbusException as exc:
            raise TryAgain(f"{what}: {exc}") from exc
        if response.isError():
            code = getattr(response, "exception_code", None)
            name = EXCEPTION_NAMES.get(code, "unknown") if isinstance(code, int) else "unknown"
            raise TryAgain(f"{what}: exception {code} ({name})")
        registers = list(response.registers)
        if len(registers) != count:  # e.g. a late answer to an earlier request on RS-485
            raise TryAgain(f"{what}: answer has {len(registers)} registers")
        return registers

    async def answers(self, unit: int) -> bool:
        """Whether a device answers as `unit` at all: with data or a Modbus exception, except a
        gateway's 10 and 11 (nothing behind it at that unit). Silence or a garbled answer (a wrong
        baud rate or parity) is no. For `evsed probe`; call with the lock held."""
        if self.client is None or not self.client.connected:
            self.drop()
            await self._connect()
        assert self.client is not None
        try:
            response = await self.client.read_input_registers(0, count=2, device_id=unit)
        except ConnectionException as exc:
            self.drop()
            raise TryAgain(f"Modbus {self.name}: connection lost ({exc})") from exc
        except ModbusException:  # no answer within the timeout, or not a frame
            return False
        return not response.isError() or getattr(response, "exception_code", None) not in (10, 11)

    def release(self) -> None:
        self.users -= 1
        if self.users <= 0:
            self.drop()


def decode(field: Field, registers: list[int], word_order: str, sentinels: bool) -> float:
    """The field's value in its quantity's unit; NaN for a "not available" sentinel."""
    code, _ = TYPES[field.type]
    words = registers if word_order == "big" else registers[::-1]
    raw = b"".join(w.to_bytes(2, "big") for w in words)
    if sentinels and code != "f":
        bits = 8 * len(raw)
        sentinel = (1 << bits) - 1 if code.isupper() else (1 << (bits - 1)) - 1  # upper: unsigned
        if int.from_bytes(raw, "big") == sentinel:
            return math.nan
    value = struct.unpack(f">{code}", raw)[0]
    return value * field.scale


class ModbusMeter:
    """hal.Meter for one unit on a bus. read() gives V, A, W, integer Wh and Hz."""

    def __init__(self, model: MeterModel, bus: Bus, unit: int,
                 clock: Callable[[], float] = time.monotonic):
        self.model, self.bus, self.unit = model, bus, unit
        self.blocks = blocks(model)
        self.backoff = Backoff(*READ_BACKOFF_S, clock)
        bus.users += 1

    def __repr__(self) -> str:
        return f"<ModbusMeter {self.model.name} {self.bus.name} unit {self.unit}>"

    async def read(self) -> MeterReading:
        """One consistent reading; raises TryAgain or DeviceUnavailable with context."""
        self.backoff.check()
        try:
            async with self.bus.lock:
                values = {}
                for address, count, fields in self.blocks:
                    registers = await self.bus.read(self.model.function_code, address, count, self.unit)
                    for f in fields:
                        at = f.address - address
                        values[(f.quantity, f.phase)] = decode(
                            f, registers[at:at + f.count], self.model.word_order,
                            self.model.not_available_sentinels)
            reading = self._reading(values)
        except HalError as exc:
            self.backoff.failed(exc)
            raise
        self.backoff.succeeded()
        return reading

    def _reading(self, values: dict[tuple[str, int], float]) -> MeterReading:
        where = f"{self.model.name} on {self.bus.name} unit {self.unit}"
        # The frequency is for people only: a unit that does not measure it (0, a "not available"
        # marker, NaN) reads as absent, never as 0 Hz, and never fails the reading.
        frequency_hz = values.pop(("frequency_hz", 0), None)
        if frequency_hz is not None and not (math.isfinite(frequency_hz) and frequency_hz > 0):
            frequency_hz = None
        bad = sorted(f"{q}{f' L{p}' if p else ''}" for (q, p), v in values.items() if not math.isfinite(v))
        if bad:
            raise TryAgain(f"{where}: no valid value for {', '.join(bad)} (NaN or infinite)")
        energy_wh = round(values[("energy_import_wh", 0)])
        if energy_wh < 0:  # an import counter has no sign: a garbled register, not a reading
            raise TryAgain(f"{where}: negative import energy {energy_wh} Wh")
        phases = {q: tuple(values[(q, n)] for n in range(1, self.model.phases + 1))
                  if (q, 1) in values else () for q in PER_PHASE}
        return MeterReading(
            energy_import_wh=energy_wh, power_total_w=values[("power_total_w", 0)],
            current_a=phases["current_a"], voltage_v=phases["voltage_v"], power_w=phases["power_w"],
            frequency_hz=frequency_hz)

    async def identity(self) -> MeterIdentity:
        """The model's vendor and product, and the serial number where the model has a register
        for it (an unsigned integer, told in decimal). A serial that cannot be read, or reads as
        0 or all ones (no serial set), is left out and said in problem."""
        m, reg = self.model, self.model.serial
        named = MeterIdentity(m.vendor, m.product)
        if reg is None:
            return named
        where = f"{m.name} on {self.bus.name} unit {self.unit}: serial number register {reg.address:#06x}"
        try:
            async with self.bus.lock:
                registers = await self.bus.read(reg.function_code, reg.address, reg.count, self.unit)
        except HalError as exc:
            return MeterIdentity(m.vendor, m.product, problem=f"{where}: {exc}")
        words = registers if m.word_order == "big" else registers[::-1]
        value = int.from_bytes(b"".join(w.to_bytes(2, "big") for w in words), "big")
        if value in (0, (1 << 16 * reg.count) - 1):
            return MeterIdentity(m.vendor, m.product, problem=f"{where}: reads {value:#x}, no serial")
        return MeterIdentity(m.vendor, m.product, str(value))

    def release(self) -> None:
        """Give up this meter's share of the bus; the last one closes the port or socket."""
        self.bus.release()


def modbus_meter(options: dict[str, Any], ctx, *, clock: Callable[[], float] = time.monotonic) -> ModbusMeter:
    """Backend factory: the bus is shared through ctx.shared by port or host:port."""
    model = MODELS[options["model"]]
    transport = options["transport"]
    if transport == "rtu":
        if not options["port"]:
            raise DeviceUnavailable("meter backend modbus: transport \"rtu\" needs port (e.g. /dev/ttyUSB0)")
        settings = {k: options[k] for k in ("port", "baudrate", "parity", "stopbits")}
        settings["baudrate"] = settings["baudrate"] or model.baudrate  # unset: as the model leaves the factory
        settings["parity"] = settings["parity"] or model.parity
        key = f"modbus:rtu:{options['port']}"
    else:
        if not options["host"]:
            raise DeviceUnavailable("meter backend modbus: transport \"tcp\" needs host")
        settings = {"host": options["host"], "tcp_port": options["tcp_port"]}
        key = f"modbus:tcp:{options['host']}:{options['tcp_port']}"
    bus = ctx.shared.get(key)
    if bus is None:
        bus = ctx.shared[key] = Bus(transport, settings, options["timeout_s"], clock)
    elif bus.settings != settings:
        raise DeviceUnavailable(f"Modbus {bus.name}: meters on one bus need the same settings, "
                                f"got {settings} and {bus.settings}")
    return ModbusMeter(model, bus, options["unit"], clock)
