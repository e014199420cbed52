"""`evsed probe`: an installer's first hour on the hardware. Serial ports by their stable names, an
OpenEVSE board identified, Modbus meters scanned for, a card tapped, the GPIO pilot read at rest.

Read only: it sends the board and the meters questions, never settings; evsed.cli.probe_report
turns what it found into text and a ready-to-paste TOML block (written only with --write FILE).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from typing import TYPE_CHECKING

from evsed.config import Config
from evsed.config.backends import BackendContext, create as create_backend
from hal import DeviceUnavailable, HalError, TryAgain
from hal.meter_models import MODELS

if TYPE_CHECKING:  # the rest loads when the probe runs: pymodbus and pyserial are not for every command
    from hal import PilotReading
    from hal.modbus_scan import Found
    from hal.openevse_info import BoardInfo

BY_ID_DIR = "/dev/serial/by-id"  # udev's names for USB serial adapters: the same across a replug
RAPI_BAUD = 115200  # the OpenEVSE firmware's SERIAL_BAUD
PARITIES = ("N", "E", "O")
RDM6300_BAUD = 9600
PILOT_TIMEOUT_S = 3.0


def factory_bauds() -> list[int]:
    """The baud rates meters leave the factory at, the most common first, then 19200 and 38400."""
    counts: dict[int, int] = {}
    for model in MODELS.values():
        counts[model.baudrate] = counts.get(model.baudrate, 0) + 1
    ordered = sorted(counts, key=lambda b: -counts[b])
    return ordered + [b for b in (19200, 38400) if b not in ordered]


@dataclass
class Options:
    ports_dir: str = BY_ID_DIR
    ports: list[str] = field(default_factory=list)  # more serial ports to look at (a Pi's /dev/serial0)
    tcp: list[tuple[str, int]] = field(default_factory=list)  # Modbus TCP meters or gateways
    units: list[int] = field(default_factory=lambda: list(range(1, 11)))
    bauds: list[int] = field(default_factory=factory_bauds)
    parities: list[str] = field(default_factory=lambda: list(PARITIES))
    timeout_s: float = 0.2  # per Modbus request; a RAPI request gets 0.5 s
    card_timeout_s: float = 15.0  # 0: do not wait for a card


@dataclass
class Findings:
    ports: list[tuple[str, str]] = field(default_factory=list)  # (the name to configure, the device)
    boards: list[tuple[str, BoardInfo]] = field(default_factory=list)
    meters: list[Found] = field(default_factory=list)
    card: tuple[str, str, str] | None = None  # (port or "[rfid]", backend, UID)
    pilots: list[tuple[int, PilotReading | str]] = field(default_factory=list)  # connector, reading or why not
    problems: list[str] = field(default_factory=list)


def serial_ports(by_id_dir: str) -> list[tuple[str, str]]:
    """Every entry of udev's by-id directory, with the device it names now."""
    try:
        names = sorted(os.listdir(by_id_dir))
    except OSError:
        return []
    return [(str(Path(by_id_dir) / name), os.path.realpath(Path(by_id_dir) / name)) for name in names]


def board_at(port: str) -> BoardInfo | str | None:
    """An OpenEVSE board on the port (read only: no $SB, no setting), why the port could not be
    opened, or None when nothing answers RAPI there."""
    from hal.openevse_info import identify
    from hal.rapi import RapiLink
    try:
        link = RapiLink(port, RAPI_BAUD, timeout_s=0.5)
    except DeviceUnavailable as exc:
        return str(exc)
    try:
        return identify(link)
    except TryAgain:
        return None
    finally:
        link.close()


async def wait_for_tap(ports: list[str], config: Config | None, timeout_s: float, shared: dict[str, Any],
                       say: Callable[[str], None], problems: list[str]) -> tuple[str, str, str] | None:
    """The first card read by the configured reader or by an RDM6300 on one of the ports."""
    from evsed.shell import devices
    readers: list[tuple[str, str, Any]] = []
    if config is not None and config.rfid is not None and config.rfid.backend != "sim":
        try:
            readers.append(("[rfid]", config.rfid.backend, devices.create("rfid", config.rfid, 0, shared)))
        except DeviceUnavailable as exc:
            problems.append(str(exc))
    for port in ports:
        try:
            reader = create_backend("rfid", "rdm6300", {"port": port, "baudrate": RDM6300_BAUD, "hold_off_s": 1.0},
                                    BackendContext(0, shared))
        except DeviceUnavailable:
            continue  # in use, gone: said when the port was looked at for a board
        readers.append((port, "rdm6300", reader))
    if not readers:
        return None
    configured = [backend for where, backend, _ in readers if where == "[rfid]"]
    say(f"card reader: tap a card now (waiting {timeout_s:g} s; RDM6300 on {len(ports)} port(s)"
        + (f", and the configured {configured[0]} reader)" if configured else ")"))
    tasks = {asyncio.ensure_future(reader.next_tap()): (where, backend) for where, backend, reader in readers}
    deadline = asyncio.get_running_loop().time() + timeout_s
    found = None
    try:
        while tasks and found is None:
            left_s = deadline - asyncio.get_running_loop().time()
            if left_s <= 0:
                break
            done, _ = await asyncio.wait(tasks, timeout=left_s, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                where, backend = tasks.pop(task)
                if task.exception() is None:
                    found = found or (where, backend, task.result())
                elif isinstance(task.exception(), DeviceUnavailable):
                    problems.append(f"{where}: {task.exception()}")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for _, _, reader in readers:
            reader.release()
    return found


async def read_pilots(config: Config, shared: dict[str, Any]) -> list[tuple[int, PilotReading | str]]:
    """Each GPIO pilot at steady +12 V, as the ADC reads it: with nothing plugged in, state A."""
    from evsed.shell import devices
    out: list[tuple[int, PilotReading | str]] = []
    for conn in config.connectors:
        if conn.pilot.backend != "gpio":
            continue
        try:
            pilot = devices.create("pilot", conn.pilot, conn.id, shared)
        except (HalError, OSError) as exc:
            out.append((conn.id, str(exc)))
            continue
        try:
            pilot.pwm_off()
            deadline = asyncio.get_running_loop().time() + PILOT_TIMEOUT_S
            while True:
                try:
                    out.append((conn.id, pilot.read()))
                    break
                except TryAgain as exc:
                    if asyncio.get_running_loop().time() >= deadline:
                        out.append((conn.id, str(exc)))
                        break
                await asyncio.sleep(0.05)
        finally:
            pilot.release()
    return out


async def probe(opts: Options, config: Config | None = None, shared: dict[str, Any] | None = None,
                say: Callable[[str], None] = print, progress: Callable[[str], None] = lambda text: None) -> Findings:
    """Look at everything once, in this order: ports, boards, meters, a card, the GPIO pilot."""
    from hal.modbus_scan import scan_rtu, scan_tcp
    from hal.openevse_info import BoardInfo
    shared = {} if shared is None else shared
    found = Findings()
    found.ports = serial_ports(opts.ports_dir) + [(p, os.path.realpath(p)) for p in opts.ports]
    rest = []
    for name, _ in found.ports:
        board = await asyncio.to_thread(board_at, name)
        if isinstance(board, BoardInfo):
            found.boards.append((name, board))
        elif isinstance(board, str):
            found.problems.append(board)
        else:
            rest.append(name)
    for name in rest:
        scan = await scan_rtu(name, opts.bauds, opts.parities, opts.units, opts.timeout_s, progress)
        found.meters += scan.found
        found.problems += scan.problems
    for host, tcp_port in opts.tcp:
        scan = await scan_tcp(host, tcp_port, opts.units, opts.timeout_s, progress)
        found.meters += scan.found
        found.problems += scan.problems
    progress("")
    quiet = [name for name in rest if name not in {m.line.where for m in found.meters}]
    if opts.card_timeout_s > 0:
        found.card = await wait_for_tap(quiet, config, opts.card_timeout_s, shared, say, found.problems)
    if config is not None:
        found.pilots = await read_pilots(config, shared)
    return found


# --- the command --------------------------------------------------------------------------------------


def _units(text: str) -> list[int]:
    """'1-10', '1,2,5' or '7' -> unit ids 1..247."""
    out: list[int] = []
    try:
        for part in text.split(","):
            low, _, high = part.partition("-")
            out += range(int(low), int(high or low) + 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected units such as 1-10 or 1,2,5, got {text!r}") from None
    if not out or min(out) < 1 or max(out) > 247:
        raise argparse.ArgumentTypeError(f"Modbus units are 1-247, got {text!r}")
    return out


def _list(kind: Callable[[str], Any], choices: tuple | None = None) -> Callable[[str], list]:
    def parse(text: str) -> list:
        try:
            values = [kind(v.strip()) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}") from None
        if not values or (choices and any(v not in choices for v in values)):
            raise argparse.ArgumentTypeError(f"expected some of {', '.join(map(str, choices or ()))}, got {text!r}")
        return values
    return parse


def _host(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":") if ":" in text else (text, "", "502")
    try:
        return host, int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HOST or HOST:PORT, got {text!r}") from None


def add_options(sp: argparse.ArgumentParser) -> None:
    """`evsed probe`'s options (evsed.cli registers the command)."""
    d = Options()
    sp.add_argument("--ports-dir", default=d.ports_dir, help=f"stable port names (default {BY_ID_DIR})")
    sp.add_argument("--port", action="append", default=[], help="another serial port to look at (repeatable)")
    sp.add_argument("--tcp", action="append", type=_host, default=[], metavar="HOST[:PORT]",
                    help="a Modbus TCP meter or RS-485 gateway to scan (repeatable)")
    sp.add_argument("--units", type=_units, default=d.units, help="Modbus units to try (default 1-10; 1-247 is slow)")
    sp.add_argument("--bauds", type=_list(int, (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)),
                    default=d.bauds, help=f"baud rates to try (default {','.join(map(str, d.bauds))})")
    sp.add_argument("--parities", type=_list(str.upper, PARITIES), default=d.parities, help="default N,E,O")
    sp.add_argument("--timeout", type=float, default=d.timeout_s, help="answer timeout per Modbus request, s")
    sp.add_argument("--card-timeout", type=float, default=d.card_timeout_s,
                    help="wait for a card this long (0: do not)")
    sp.add_argument("--write", metavar="FILE", help="write the TOML block to FILE (a new file)")


def cmd_probe(args: argparse.Namespace) -> int:
    from evsed.cli import probe_report, where
    from evsed.shell import logs
    logs.configure("critical", "text")  # the report is the output; libraries' lines would drown it
    config = where.load_if_any(args)
    opts = Options(args.ports_dir, args.port, args.tcp, args.units, args.bauds, args.parities, args.timeout,
                   args.card_timeout)
    try:
        found = asyncio.run(probe(opts, config, progress=probe_report.Progress(sys.stderr)))
    finally:
        logs.flush()
    print(probe_report.report(found, opts))
    block = probe_report.toml_block(found)
    if args.write:
        return probe_report.write(block, Path(args.write), found)
    return 0
