"""How the daemon's previous run ended, told by a marker in the state directory: written at each
start, removed by an orderly stop, marked by a stop on a fatal error, left as it was by a kill.

A marker left from the same kernel boot means the process died while the machine stayed up (the
systemd watchdog's kill, a kill -9, the OOM killer): "killed". One left from an earlier boot means
the machine went down with it, a power cut or a hard reset, which no program can tell apart:
"power_loss".
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from evsed.protocol_types import LastStop

MARKER = "evsed.running"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")  # new at every kernel boot


def boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


def judge(previous: dict[str, Any] | None, boot: str) -> LastStop:
    """The previous run's end from its marker (None: no marker) and this kernel boot's id."""
    if previous is None:
        return "clean"
    if previous.get("stopped") == "error":
        return "error"
    if boot and previous.get("boot_id") == boot:
        return "killed"
    return "power_loss"


def begin(state_dir: Path, started_at: str) -> LastStop:
    """How the previous run ended; from now on, this run's marker is there until end()."""
    path = state_dir / MARKER
    try:
        previous: dict[str, Any] | None = json.loads(path.read_text())
    except FileNotFoundError:
        previous = None
    except (OSError, ValueError):
        previous = {}  # torn by a power cut while it was written
    boot = boot_id()
    _write(path, {"boot_id": boot, "started_at": started_at, "stopped": ""})
    return judge(previous if previous is None or isinstance(previous, dict) else {}, boot)


def end(state_dir: Path, error: bool) -> None:
    """An orderly stop removes the marker; a stop on a fatal error says so in it."""
    path = state_dir / MARKER
    if error:
        try:
            marker = json.loads(path.read_text())
        except (OSError, ValueError):
            marker = {}
        _write(path, {**marker, "stopped": "error"})
    else:
        path.unlink(missing_ok=True)


def _write(path: Path, marker: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(marker, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
