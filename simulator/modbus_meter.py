"""Modbus energy meters for tests and bring-up: each model's registers (hal.meter_models) served from
known values by a real pymodbus server, on TCP as an RTU gateway answers, or on a pty as RS-485.

Only mapped registers exist (a read across a gap is "illegal data address"), a wrong function code
is "illegal function", an absent unit is silent on RS-485 and a gateway's exception 11 on TCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import struct
import tty
from typing import Any, AsyncIterator

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from hal.meter_models import TYPES, Field, MeterModel

# What the simulated meters measure; chosen to be exact at every model's resolution.
KNOWN: dict[str, Any] = {
    "voltage_v": (230.1, 231.2, 229.3),
    "current_a": (15.25, 14.5, 16.25),
    "power_w": (3201.5, 3100.0, 3350.7),
    "power_total_w": 9652.2,
    "energy_import_wh": 1_234_500,
    "frequency_hz": 49.9,
}


def encode(field: Field, value: float, word_order: str) -> list[int]:
    """A value in its quantity's unit as the field's registers."""
    code, count = TYPES[field.type]
    raw = value / field.scale
    data = struct.pack(f">{code}", raw if code == "f" else round(raw))
    words = [int.from_bytes(data[i:i + 2], "big") for i in range(0, 2 * count, 2)]
    return words if word_order == "big" else words[::-1]


def known_value(field: Field) -> float:
    value = KNOWN[field.quantity]
    return float(value[field.phase - 1] if isinstance(value, tuple) else value)


class SimulatedMeter:
    """One unit: its model's registers, a log of the requests it answered, injectable faults."""

    def __init__(self, model: MeterModel, unit: int = 1, log: list | None = None, serial: int | None = None):
        """serial: the number in the model's serial register (None: the register does not exist)."""
        self.model, self.unit = model, unit
        self.log = log if log is not None else []
        self.exception: ExcCodes | None = None
        self.registers: dict[int, int] = {}
        self.serial_registers: dict[int, int] = {}  # under the serial register's own function code
        for field in sorted(model.fields, key=lambda f: f.phase > 0):  # per phase wins a shared register
            self.set(field.quantity, field.phase, known_value(field))
        if serial is not None and model.serial is not None:
            reg = model.serial
            words = [(serial >> 16 * n) & 0xFFFF for n in reversed(range(reg.count))]
            words = words if model.word_order == "big" else words[::-1]
            self.serial_registers = dict(zip(range(reg.address, reg.address + reg.count), words))

    def set(self, quantity: str, phase: int, value: float) -> None:
        for f in self.model.fields:
            if f.quantity == quantity and f.phase == phase:
                words = encode(f, value, self.model.word_order)
                self.registers.update(zip(range(f.address, f.address + f.count), words))

    def set_raw(self, quantity: str, phase: int, words: list[int]) -> None:
        (f,) = [f for f in self.model.fields if (f.quantity, f.phase) == (quantity, phase)]
        self.registers.update(zip(range(f.address, f.address + f.count), words))

    def device(self) -> SimDevice:
        every = {**self.registers, **self.serial_registers}
        simdata = [SimData(a, values=[w], datatype=DataType.REGISTERS) for a, w in sorted(every.items())]
        return SimDevice(self.unit, simdata=simdata, action=self._action)

    async def _action(self, function_code, start_address, address, count, registers, _values):
        self.log.append((self.unit, function_code, address, count))
        serial = self.model.serial
        table = self.registers
        if serial is not None and self.serial_registers and address in self.serial_registers:
            if function_code != serial.function_code:
                return ExcCodes.ILLEGAL_FUNCTION
            table = self.serial_registers
        elif function_code != self.model.function_code:
            return ExcCodes.ILLEGAL_FUNCTION
        if self.exception is not None:
            return self.exception
        if any(a not in table for a in range(address, address + count)):
            return ExcCodes.ILLEGAL_ADDRESS
        for a in range(address, address + count):
            registers[a - start_address] = table[a]
        return None


async def _nobody(*_args) -> ExcCodes:
    return ExcCodes.GATEWAY_NO_RESPONSE


def _devices(meters: tuple[SimulatedMeter, ...]) -> list[SimDevice]:
    """The meters, and device 0 (pymodbus: every other unit) for the units nobody is."""
    absent = SimDevice(0, simdata=[SimData(0, count=65535, values=0, datatype=DataType.REGISTERS)], action=_nobody)
    return [m.device() for m in meters] + [absent]


@contextlib.asynccontextmanager
async def tcp_server(*meters: SimulatedMeter, port: int = 0) -> AsyncIterator[int]:
    """Modbus TCP on 127.0.0.1 (port 0: a free one, yielded), as an RS-485 gateway to the meters."""
    server = ModbusTcpServer(_devices(meters), address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    try:
        yield server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]  # a server's
    finally:
        await server.shutdown()


@contextlib.asynccontextmanager
async def null_modem() -> AsyncIterator[tuple[str, str]]:
    """Two pty pairs joined like a crossed cable: yields (server_path, client_path). A pty ignores
    the baud rate and takes no parity (EINVAL): the line runs 8N1 whatever is asked."""
    loop = asyncio.get_running_loop()
    ends = [pty.openpty() for _ in range(2)]
    for master, slave in ends:
        tty.setraw(slave)
        os.set_blocking(master, False)
    (m1, s1), (m2, s2) = ends

    def pump(src: int, dst: int) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(dst, os.read(src, 4096))

    loop.add_reader(m1, pump, m1, m2)
    loop.add_reader(m2, pump, m2, m1)
    try:
        yield os.ttyname(s1), os.ttyname(s2)
    finally:
        loop.remove_reader(m1)
        loop.remove_reader(m2)
        for fd in (m1, s1, m2, s2):
            os.close(fd)


@contextlib.asynccontextmanager
async def rtu_server(*meters: SimulatedMeter) -> AsyncIterator[str]:
    """An RS-485 line with these units on it (yields the client's tty); any other unit is silent."""
    units = {m.unit for m in meters}

    def only_present_units_answer(sending: bool, frame: bytes) -> bytes:
        return b"" if sending and frame and frame[0] not in units else frame

    async with null_modem() as (server_path, client_path):
        server = ModbusSerialServer(_devices(meters), framer=FramerType.RTU, port=server_path, baudrate=9600,
                                    trace_packet=only_present_units_answer)
        await server.serve_forever(background=True)
        try:
            yield client_path
        finally:
            await server.shutdown()
