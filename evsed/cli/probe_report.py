"""What `evsed probe` found, for people: a report, the scan's progress line, and a TOML block for the
devices found, checked by the config loader and written only to a new file (--write FILE).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from evsed import config as configmod
from evsed.core.pilot import PilotState, classify
from hal import PilotReading

if TYPE_CHECKING:
    from evsed.cli.probe import Findings, Options
    from hal.modbus_scan import Found


class Progress:
    """The scan's progress on one terminal line; off a terminal, one line per line setting."""

    def __init__(self, stream: TextIO):
        self.stream, self.tty, self.last = stream, stream.isatty(), ""

    def __call__(self, text: str) -> None:
        if self.tty:
            width = shutil.get_terminal_size().columns - 1
            self.stream.write("\r" + text[:width] + "\x1b[K")
            self.stream.flush()
            return
        setting = text.split(", unit")[0]
        if text and setting != self.last:
            self.stream.write(f"scanning {setting}\n")
            self.stream.flush()
        self.last = setting


def _meter_line(m: Found) -> str:
    unit = f"unit {m.unit} at {m.line}" if m.line.transport == "rtu" else f"unit {m.unit}"
    head = f"Modbus meter on {m.line.where}, {unit}: "
    if not m.matches:
        return head + "answers, but no model's registers read plausibly (a model evsed lacks, or another device)"
    best, same = m.matches[0], [x.model.name for x in m.matches[1:]]
    r = best.reading
    volts = " / ".join(f"{v:.1f}" for v in r.voltage_v)
    values = [f"{volts} V" if volts else "", f"{r.frequency_hz:.2f} Hz" if r.frequency_hz is not None else "",
              f"{r.power_total_w:.0f} W", f"{r.energy_import_wh} Wh"]
    text = head + f"{best.model.name} ({best.model.title})"
    if same:
        text += f"; the same registers as {', '.join(same)}"
    text += "\n  reads " + ", ".join(v for v in values if v)
    factory = f"{best.model.baudrate} 8{best.model.parity}1"
    if m.line.transport == "rtu" and factory != str(m.line):
        text += f"\n  its factory setting is {factory}: it has been set to {m.line}"
    return text


def _pilot_line(connector: int, result: PilotReading | str) -> str:
    head = f"pilot of connector {connector} (gpio): "
    if isinstance(result, str):
        return head + f"no reading: {result}"
    state = classify(result.high_v)
    text = head + f"high {result.high_v:+.1f} V, low {result.low_v:+.1f} V: state {state.value if state else '?'}"
    if state is PilotState.A:
        return text + ", as expected with nothing plugged in"
    if state is PilotState.F:
        return text + "; +12 V expected: an output stage that inverts (set invert = true)?"
    if state is None or state is PilotState.E:
        return text + "; +12 V expected: check the ADC's offset_v and gain, and the CP wiring"
    return text + "; +12 V expected with nothing plugged in: unplug the EV and probe again"


def report(found: Findings, opts: Options) -> str:
    out = [f"serial ports ({opts.ports_dir}):"]
    out += [f"  {name} -> {device}" for name, device in found.ports] or [
        "  none (no USB serial adapter plugged in, or udev has not named it; --port adds one)"]
    for port, info in found.boards:
        waiting = " (waiting in its boot lock)" if info.boot_locked else ""
        out.append(f"OpenEVSE board on {port}: firmware {info.firmware}, RAPI {info.rapi}, state {info.evse_state:02x}"
                   + waiting)
        out += [f"  {topic:15s} {text}" for topic, text in info.notes()]
    out += [_meter_line(m) for m in found.meters]
    if not found.meters:
        out.append("no Modbus meter answered (units " + (f"{opts.units[0]}-{opts.units[-1]}" if opts.units else "none")
                   + f" at {', '.join(map(str, opts.bauds))} baud, parity {''.join(opts.parities)})")
    if found.card:
        where, backend, uid = found.card
        out.append(f"card {uid} on {where} ({backend}): uid = \"{uid}\" in a [[card]]")
    elif opts.card_timeout_s > 0:
        out.append("no card was read")
    out += [_pilot_line(c, r) for c, r in found.pilots]
    out += [f"could not try: {p}" for p in found.problems]
    block = toml_block(found)
    if block:
        out += ["", "# ready to paste into the config (evsed probe --write FILE writes it to a new file):", block]
    return "\n".join(out)


def _meter_table(m: Found) -> list[str]:
    lines = ["[connector.meter]", 'backend = "modbus"', f'model = "{m.matches[0].model.name}"']
    if m.line.transport == "rtu":
        lines += [f'port = "{m.line.where}"', f"baudrate = {m.line.baudrate}", f'parity = "{m.line.parity}"']
    else:
        host, _, port = m.line.where.rpartition(":")
        lines += ['transport = "tcp"', f'host = "{host}"', f"tcp_port = {port}"]
    return lines + [f"unit = {m.unit}"]


def toml_block(found: Findings) -> str:
    """A [[connector]] for the board found (its meter, or a Modbus meter found), a [rfid] and a
    [[card]] for the card read; a meter without a board is a table for an existing [[connector]]."""
    meters = [m for m in found.meters if m.matches]
    lines: list[str] = []
    if found.boards:
        port, info = found.boards[0]
        link = ['backend = "openevse"', f'port = "{port}"']
        lines += ["[[connector]]"]
        for kind in ("pilot", "contactor", "rcd"):
            lines += [f"[connector.{kind}]", *link]
        if meters:
            lines += _meter_table(meters.pop(0))
        elif info.ammeter:
            lines += ["[connector.meter]", *link]
    elif meters:
        lines += ["# under your [[connector]]:", *_meter_table(meters.pop(0))]
    for m in meters:  # more than one connector's worth: said, not guessed
        lines.append(f"# also found: {m.matches[0].model.name}, unit {m.unit} on {m.line.where} at {m.line}")
    if found.card:
        where, backend, uid = found.card
        if where != "[rfid]":
            lines += ["[rfid]", f'backend = "{backend}"', f'port = "{where}"']
        lines += ["[[card]]", f'uid = "{uid}"', 'name = ""']
    return "\n".join(lines) + "\n" if lines else ""


def write(block: str, path: Path, found: Findings) -> int:
    """Write the block as a new config file, after the config loader has taken it."""
    if not found.boards:
        print(f"evsed probe: nothing written to {path}: without a board the block is no whole config "
              "(paste it into yours)", file=sys.stderr)
        return 1
    if path.exists():
        print(f"evsed probe: nothing written: {path} exists (name a new file)", file=sys.stderr)
        return 1
    try:
        configmod.parse(block, path)
        path.write_text(block, encoding="utf-8")
    except (configmod.ConfigError, OSError) as exc:
        print(f"evsed probe: nothing written: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0
