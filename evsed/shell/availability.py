"""Which connectors were made inoperative (OCPP ChangeAvailability, the web page, MQTT; 0 is the
charger as a whole), kept in the state directory: a restart or a power cut does not make them
available again (OCPP 1.6 section 5.2). The updater's hold between sessions is not kept."""

from __future__ import annotations

import json
import os
from pathlib import Path

import structlog

log = structlog.get_logger("evsed")
FILE = "availability.json"


def change(inoperative: frozenset[int], connector: int, operative: bool, connectors: list[int]) -> frozenset[int]:
    """The inoperative set after an availability change: connector 0 takes the charger and every
    connector with it; a connector made operative makes the charger operative too."""
    if connector == 0:
        return frozenset() if operative else frozenset([0, *connectors])
    if operative:
        return inoperative - {0, connector}
    return inoperative | {connector}


def load(state_dir: Path) -> frozenset[int]:
    """The inoperative connectors kept; none when the file is missing or unreadable (said once)."""
    path = state_dir / FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return frozenset()
    except (OSError, ValueError) as exc:
        log.error("availability.unreadable", file=str(path), error=f"{type(exc).__name__}: {exc}"[:200],
                  result="every connector available")
        return frozenset()
    inoperative = data.get("inoperative") if isinstance(data, dict) else None
    if not isinstance(inoperative, list) or not all(type(c) is int and c >= 0 for c in inoperative):
        log.error("availability.unreadable", file=str(path), error="inoperative: expected a list of connector ids",
                  result="every connector available")
        return frozenset()
    return frozenset(inoperative)


def save(state_dir: Path, inoperative: frozenset[int]) -> None:
    """Replace the file, durably (written, synced, renamed, the directory synced)."""
    path, tmp = state_dir / FILE, state_dir / f"{FILE}.new"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        os.write(fd, json.dumps({"inoperative": sorted(inoperative)}).encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    folder = os.open(state_dir, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
