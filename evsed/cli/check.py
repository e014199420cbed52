"""`evsed check`: open every configured device once and report what it read.

For installers: run it before starting the service. It never closes the contactor. While the
daemon runs it opens nothing (the daemon holds the devices): the config is checked, and the
report shows what the daemon reads now.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from evsed.config import Config
from evsed.config.tomlines import key_lines
from evsed.errors import StartError
from evsed.shell import devices
from evsed.shell.daemon import StateLock
from evsed.core.pilot import classify, diode_present
from hal import Closable, ContactorFeedback, HalError, MeterReading, TryAgain

METER_TIMEOUT_S = 5.0
PILOT_TIMEOUT_S = 3.0  # a board just opened may not report yet (an OpenEVSE waiting for its $SB)


def _phase_list(values: tuple[float, ...]) -> list[float] | None:
    return [round(v, 3) for v in values] if values else None


def meter_json(r: MeterReading) -> dict[str, Any]:
    return {"voltage_v": _phase_list(r.voltage_v), "current_a": _phase_list(r.current_a),
            "power_w": _phase_list(r.power_w), "power_total_w": round(r.power_total_w, 1),
            "energy_import_wh": r.energy_import_wh,
            "frequency_hz": None if r.frequency_hz is None else round(r.frequency_hz, 2)}


def _fail(exc: BaseException) -> dict[str, Any]:
    return {"ok": False, "error": str(exc) or type(exc).__name__}


async def _check_device(kind: str, device_cfg, connector_id: int, shared: dict) -> tuple[Any, dict[str, Any]]:
    try:
        device = devices.create(kind, device_cfg, connector_id, shared)
    except (HalError, OSError, ValueError, RuntimeError) as exc:
        return None, {"backend": device_cfg.backend, **_fail(exc)}
    try:
        report = await _read(kind, device)
    except (HalError, OSError, TimeoutError, ValueError) as exc:
        report = _fail(exc)
    return device, {"backend": device_cfg.backend, **report}


async def _read(kind: str, device) -> dict[str, Any]:
    if kind == "pilot":
        device.pwm_off()  # steady +12 V: with nothing plugged in this reads state A
        r = await _read_pilot(device)
        state = classify(r.high_v)
        return {"ok": not math.isnan(r.high_v), "high_v": round(r.high_v, 2), "low_v": round(r.low_v, 2),
                "state": state.value if state else None, "diode": diode_present(r.low_v)}
    if kind == "contactor":
        device.open()
        if isinstance(device, ContactorFeedback):
            closed = device.feedback_closed()
            ok = not closed
            return {"ok": ok, "feedback": "closed" if closed else "open",
                    **({} if ok else {"error": "feedback reads closed after an open command: welded?"})}
        return {"ok": True, "feedback": None}
    if kind == "rcd":
        tripped = device.tripped()
        return {"ok": not tripped, "tripped": tripped, **({"error": "RCD input is tripped"} if tripped else {})}
    if kind in ("meter", "site_meter"):
        reading = await asyncio.wait_for(device.read(), METER_TIMEOUT_S)
        return {"ok": True, **meter_json(reading)}
    return {"ok": True, "found": True}


async def _read_pilot(device) -> Any:
    """A reading, asked again while the device says "try again", for up to PILOT_TIMEOUT_S."""
    deadline = time.monotonic() + PILOT_TIMEOUT_S
    while True:
        try:
            return device.read()
        except TryAgain:
            if time.monotonic() >= deadline:
                raise
        await asyncio.sleep(0.05)


def _release(device) -> None:
    if isinstance(device, Closable):
        try:
            device.release()
        except (HalError, OSError):
            pass


async def run_check(config: Config) -> dict[str, Any]:
    world = devices.build_world(config, time.monotonic)
    shared: dict[str, Any] = {"sim": world} if world is not None else {}
    report: dict[str, Any] = {"config": str(config.path), "meter": None, "rfid": None, "site_meter": None,
                              "connectors": [{"id": c.id, **{k: None for k in devices.CONNECTOR_KINDS}}
                                             for c in config.connectors]}
    entries = {e["id"]: e for e in report["connectors"]}
    opened = []
    try:
        for connector_id, kind, device_cfg in devices.configured(config):  # contactors first of each
            device, result = await _check_device(kind, device_cfg, connector_id, shared)
            if connector_id:
                entries[connector_id][kind] = result
                if kind == "meter" and report["meter"] is None:
                    report["meter"] = result
            else:
                report[kind] = result
            if device is not None:
                opened.append(device)
    finally:
        for device in reversed(opened):
            _release(device)
    parts = [d for c in report["connectors"] for d in (c["pilot"], c["contactor"], c["rcd"], c["meter"]) if d]
    parts += [report[k] for k in ("rfid", "site_meter") if report[k]]
    report["ok"] = all(p["ok"] for p in parts)
    report["notes"] = notes(config)
    return report


def notes(config: Config) -> list[str]:
    """What the config sets that does not do what it may seem to: [timing] rcd_retry_s and
    rcd_max_retries beside an OpenEVSE board's RCD (its firmware owns the GFCI latch and retry)."""
    boards = [c.id for c in config.connectors if c.rcd is not None and c.rcd.backend == "openevse"]
    if not boards:
        return []
    try:
        lines = key_lines(config.path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return []
    out = []
    for key in ("rcd_retry_s", "rcd_max_retries"):
        line = lines.get(f"timing.{key}")
        if line is not None:
            out.append(f"{config.path}:{line}: [timing] {key} does not govern the OpenEVSE board's GFCI "
                       f"(connector {', '.join(map(str, boards))}): the board latches a trip and retries it "
                       "itself after 5 min, at most 6 times, then holds it until the EV is unplugged; evsed "
                       "leaves that alone and resumes once the board has cleared (see the README's fault table)")
    return out


def format_report(report: dict[str, Any]) -> str:
    lines = [f"config {report['config']}: valid"]

    def line(name: str, d: dict | None) -> None:
        if d is None:
            return
        mark = "ok  " if d["ok"] else "FAIL"
        detail = {k: v for k, v in d.items() if k not in ("ok", "backend", "error")}
        text = ", ".join(f"{k}={v}" for k, v in detail.items() if v is not None)
        err = f" -- {d['error']}" if d.get("error") else ""
        lines.append(f"  {mark} {name:20s} {d['backend']}: {text}{err}")

    for c in report["connectors"]:
        for kind in ("pilot", "contactor", "rcd", "meter"):
            line(f"connector {c['id']} {kind}", c[kind])
    line("card reader", report["rfid"])
    line("site meter", report["site_meter"])
    lines += [f"  note {text}" for text in report.get("notes", ())]
    lines.append("all devices answered" if report["ok"] else "some devices failed")
    return "\n".join(lines)


def daemon_pid(state_dir: Path) -> str | None:
    """The pid of the daemon holding the state directory's lock; None when none does (or the
    lock file cannot be read). A shared lock probe: it takes nothing from a daemon starting."""
    try:
        fd = os.open(state_dir / "evsed.lock", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.read(fd, 32).decode(errors="replace").strip() or "?"
    finally:
        os.close(fd)
    return None


def running_report(config: Config, pid: str) -> dict[str, Any]:
    """The report while the daemon runs: the config is valid, no device opened, and the daemon's
    status (a p.StatusReply; None, and why, when it does not answer)."""
    from evsed import protocol as p
    from evsed.control import client as control
    report: dict[str, Any] = {"config": str(config.path), "ok": True, "devices_opened": False, "daemon_pid": pid,
                              "daemon_status": None}
    try:
        report["daemon_status"] = control.ask(config.store.runtime_dir, p.Status())
    except (control.ControlError, p.DaemonError) as exc:
        report["daemon_error"] = str(exc)
    return report


def running_json(report: dict[str, Any]) -> str:
    status = report["daemon_status"]
    return json.dumps({**report, "daemon_status": status and status.to_wire()}, indent=2, ensure_ascii=False)


def format_running(report: dict[str, Any]) -> str:
    lines = [f"config {report['config']}: valid",
             f"devices not opened: the running daemon (pid {report['daemon_pid']}) holds them"]
    status = report["daemon_status"]
    if status is None:
        lines.append(f"  the daemon does not answer: {report.get('daemon_error')}")
    else:
        for c in status.connectors:
            m = c.measured
            reading = (f", meter {m.power_w:.0f} W, {m.energy_wh} Wh" if m
                       else f", meter: {c.meter_error}" if c.meter_error else "")
            pilot = f"pilot unavailable: {c.pilot_error}" if c.pilot_error else f"pilot state {c.state}"
            lines.append(f"  connector {c.id}: {c.status}, {pilot}, contactor {c.contactor}{reading}")
        if status.card_reader_error:
            lines.append(f"  card reader: unavailable: {status.card_reader_error}")
    lines.append("apply it with `evsed reload` (running sessions continue); a change of devices needs "
                 "`systemctl restart evsed`")
    return "\n".join(lines)


def main(config: Config, as_json: bool) -> int:
    pid = daemon_pid(config.store.state_dir)
    if pid is not None:
        report = running_report(config, pid)
        print(running_json(report) if as_json else format_running(report))
        return 0
    lock: StateLock | None = StateLock(config.store.state_dir)
    assert lock is not None
    try:
        lock.acquire()  # keeps a daemon from starting on the devices meanwhile
    except StartError as exc:
        print(f"evsed check: {exc}")
        return 1
    except OSError:
        lock = None  # no writable state directory yet: nothing to collide with
    try:
        report = asyncio.run(run_check(config))
    finally:
        if lock is not None:
            lock.release()
    print(json.dumps(report, indent=2) if as_json else format_report(report))
    return 0 if report["ok"] else 1
