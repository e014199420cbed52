"""`evsed check`: open every configured device once and report what it read.

For installers: run it before starting the service. It never closes the contactor.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
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


def main(config: Config, as_json: bool) -> int:
    lock: StateLock | None = StateLock(config.store.state_dir)
    assert lock is not None
    try:
        lock.acquire()  # the daemon holds the devices while it runs
    except StartError as exc:
        print(f"evsed check: {exc}; stop it first (systemctl stop evsed)")
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
