"""The control socket's server: JSON lines over a Unix socket (mode 0660) in the runtime directory.

It answers status, sim and clear-faults requests inside the running daemon.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import structlog

from evsed.control.client import ControlError, request, socket_path
from evsed.core import events as ev
from evsed.errors import StartError

log = structlog.get_logger("evsed")
MAX_REQUEST = 64 * 1024


async def serve(runtime_dir: Path, daemon) -> asyncio.AbstractServer:
    path = socket_path(runtime_dir)
    runtime_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    if path.exists():
        try:
            request(runtime_dir, {"cmd": "ping"}, timeout_s=0.5)
        except ControlError:
            path.unlink()  # stale socket of a daemon that died
        else:
            raise StartError(f"another evsed answers on {path}")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    req = json.loads(line)
                    if not isinstance(req, dict):
                        raise ValueError("expected a JSON object")
                    reply = dispatch(daemon, req)
                except (ValueError, KeyError, TypeError) as exc:
                    reply = {"ok": False, "error": str(exc)}
                except Exception as exc:  # noqa: BLE001 - a client's request must never stop charging
                    log.error("control.request_failed", error=repr(exc))
                    reply = {"ok": False, "error": f"internal error: {exc!r}"}
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_unix_server(handle, path=str(path), limit=MAX_REQUEST)
    os.chmod(path, 0o660)
    return server


def _connector(daemon, req: dict):
    cid = int(req.get("connector", next(iter(daemon.connectors))))
    if cid not in daemon.connectors:
        raise ValueError(f"no connector {cid}")
    return daemon.connectors[cid]


def dispatch(daemon, req: dict) -> dict[str, Any]:
    cmd = req.get("cmd")
    if cmd == "ping":
        return {"ok": True}
    if cmd == "status":
        return {"ok": True, "charger": daemon.config.charger.id, "card_reader_error": daemon.reader_error,
                "connectors": [c.status() for c in daemon.connectors.values()]}
    if cmd == "clear-faults":
        ctrl = _connector(daemon, req)
        log.warning("fault.cleared_by_person", connector=ctrl.id)
        ctrl.feed(ev.ClearFaults())
        return {"ok": True, "connector": ctrl.id}
    if cmd == "sim":
        return _sim(daemon, req)
    raise ValueError(f"unknown command {cmd!r}")


def _sim(daemon, req: dict) -> dict[str, Any]:
    world = daemon.world
    if world is None:
        raise ValueError("this daemon runs no simulated hardware")
    action = req.get("action")
    if action == "tap":
        uid = world.reader.tap(str(req["card"]))
        return {"ok": True, "card": uid}
    ctrl = _connector(daemon, req)
    bench = world.connector(ctrl.id)
    if action == "plug":
        bench.plug()
    elif action == "unplug":
        bench.unplug()
    elif action == "ev":
        bench.set_ev(**_ev_settings(req))
    elif action == "fault":
        bench.inject(str(req["kind"]), active=not req.get("clear", False))
    else:
        raise ValueError(f"unknown sim action {action!r}")
    return {"ok": True, "connector": ctrl.id}


_EV_FLAGS = ("wants_energy", "ventilation", "asleep", "obey_pwm", "ignore_stop")


def _ev_settings(req: dict) -> dict[str, Any]:
    """The simulated EV's settings from a request, type-checked: a bad client changes nothing."""
    out: dict[str, Any] = {}
    if "max_current_a" in req:
        value = req["max_current_a"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 80:
            raise ValueError(f"max_current_a: expected a number 0..80, got {value!r}")
        out["max_current_a"] = float(value)
    if "phases" in req:
        if req["phases"] not in (1, 2, 3) or isinstance(req["phases"], bool):
            raise ValueError(f"phases: expected 1, 2 or 3, got {req['phases']!r}")
        out["phases"] = req["phases"]
    for flag in _EV_FLAGS:
        if flag in req:
            if not isinstance(req[flag], bool):
                raise ValueError(f"{flag}: expected true or false, got {req[flag]!r}")
            out[flag] = req[flag]
    return out
