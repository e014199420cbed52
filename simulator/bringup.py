"""A bench for `evsed probe`: an OpenEVSE board (the RAPI emulator), Modbus meters on one RS-485 line
(the meter emulator) and an RDM6300 card reader, each on a pty behind a stable name in a directory,
as udev names USB serial adapters. `python -m simulator.bringup DIR`, then `evsed probe --ports-dir DIR`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tty
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator

from hal.meter_models import MODELS
from hal.rfid import rdm6300_frame
from simulator.modbus_meter import SimulatedMeter, rtu_server
from simulator.openevse_rapi import OpenEvseEmulator

BOARD_NAME = "usb-FTDI_FT232R_USB_UART_OEVSE0001-if00-port0"
METERS_NAME = "usb-1a86_USB_Serial_RS485-if00-port0"
READER_NAME = "usb-Silicon_Labs_CP2102_RDM6300-if00-port0"


class CardReader:
    """An RDM6300 on a pty: it sends a frame for a card on it, and again while the card stays."""

    def __init__(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)

    def tap(self, uid: str) -> None:
        os.write(self._master, rdm6300_frame(uid))

    async def hold(self, uid: str, every_s: float = 0.5) -> None:
        """A card held on the reader until cancelled."""
        while True:
            self.tap(uid)
            await asyncio.sleep(every_s)

    def close(self) -> None:
        os.close(self._master)
        os.close(self._slave)


@dataclass
class Bench:
    directory: Path
    board: OpenEvseEmulator | None
    meters: list[SimulatedMeter]
    reader: CardReader | None
    names: dict[str, Path] = field(default_factory=dict)  # what -> its stable name


@contextlib.asynccontextmanager
async def bench(directory: Path, meters: tuple[tuple[str, int], ...] = (("sdm630", 1),), board: bool = True,
                reader: bool = True, **board_options) -> AsyncIterator[Bench]:
    """The devices on ptys, linked by stable names in `directory` (made if missing), for the
    duration of the block."""
    directory.mkdir(parents=True, exist_ok=True)
    emulated = [SimulatedMeter(MODELS[model], unit) for model, unit in meters]
    made = Bench(directory, OpenEvseEmulator(**board_options).start() if board else None, emulated,
                 CardReader() if reader else None)
    try:
        async with contextlib.AsyncExitStack() as stack:
            ports = {}
            if made.board is not None:
                ports[BOARD_NAME] = made.board.port
            if emulated:
                ports[METERS_NAME] = await stack.enter_async_context(rtu_server(*emulated))
            if made.reader is not None:
                ports[READER_NAME] = made.reader.port
            for name, port in ports.items():
                link = directory / name
                link.unlink(missing_ok=True)
                link.symlink_to(port)
                made.names[name] = link
            try:
                yield made
            finally:
                for link in made.names.values():
                    link.unlink(missing_ok=True)
    finally:
        if made.board is not None:
            made.board.stop()
        if made.reader is not None:
            made.reader.close()


async def _serve(directory: Path, meters: tuple[tuple[str, int], ...], card: str) -> None:
    async with bench(directory, meters, current_a=16, max_current_a=32) as made:
        for name, link in made.names.items():
            print(f"{link} -> {os.readlink(link)}")
        print(f"evsed probe --ports-dir {directory}" + (f"   (a card {card} lies on the reader)" if card else ""))
        if card and made.reader is not None:
            await made.reader.hold(card)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m simulator.bringup", description=__doc__)
    p.add_argument("directory", type=Path, help="where the stable names go (as /dev/serial/by-id)")
    p.add_argument("--meter", action="append", metavar="MODEL:UNIT", help="a meter on the RS-485 line "
                   "(repeatable; default sdm630:1)")
    p.add_argument("--card", default="13005D1DA5", help="the UID of a card held on the reader ('' for none)")
    args = p.parse_args(argv)
    meters = tuple((m.split(":")[0], int(m.split(":")[1])) for m in args.meter or ["sdm630:1"])
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.directory, meters, args.card))


if __name__ == "__main__":
    main()
