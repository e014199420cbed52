"""The fail-safe contactor end to end: `evsed run` on the simulator, its contactor behind a
drop-out circuit modelled by a board process of its own, and the daemon killed with -9.

After kill -9 no code of evsed runs and the coil output keeps its level (the pin file, like a
GPIO line, outlives the process); only the circuit can open the contactor. Timing is measured
by bench/failsafe_dropout.py; these tests assert the behaviour with generous bounds.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evsed import protocol as p
from evsed import config
from evsed.control import client as control
from simulator.board import BoardProcess

ROOT = Path(__file__).parent.parent
DROPOUT_S = 0.5
HEARTBEAT_HZ = 10


def write_config(tmp_path: Path, pins: Path) -> Path:
    text = (ROOT / "config" / "simulator.toml").read_text()
    options = f'heartbeat = true\nheartbeat_hz = {HEARTBEAT_HZ}\ndropout_s = {DROPOUT_S}\nboard = "{pins}"\n'
    text, n = re.subn(r"^\[connector\.contactor\]\n", lambda m: m.group(0) + options, text, flags=re.M)
    assert n == 1
    text += f'\n[store]\nstate_dir = "{tmp_path / "state"}"\nruntime_dir = "{tmp_path / "run"}"\n'
    path = tmp_path / "evsed.toml"
    path.write_text(text)
    return path


def start_daemon(path: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "evsed", "run", "-c", str(path)], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in proc.stderr:
        if json.loads(line)["event"] == "daemon.ready":
            return proc
    raise AssertionError(f"daemon did not start: {proc.wait()}")


def wait_for(predicate, timeout_s: float, what: str) -> None:
    """Poll something another process changes; the timeout only guards against a hang."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout_s} s")
        time.sleep(0.01)


@pytest.fixture
def charging(tmp_path):
    """A daemon charging Alice's simulated EV through the board's relay, held through several
    drop-out periods by the safety loop's heartbeat."""
    pins = tmp_path / "pins"
    board = BoardProcess(pins, DROPOUT_S)
    path = write_config(tmp_path, pins)
    cfg = config.load(path)
    proc = start_daemon(path)
    try:
        control.request(cfg.store.runtime_dir, p.Plug())
        control.request(cfg.store.runtime_dir, p.Tap(card="04A1B2C3"))
        board.next("relay.closed", timeout_s=10.0)
        held_from = board.pins.toggles()
        toggles_per_dropout = DROPOUT_S * HEARTBEAT_HZ * 2
        wait_for(lambda: board.pins.toggles() >= held_from + 3 * toggles_per_dropout, 30.0,
                 "three drop-out periods of heartbeat")
        assert board.pending() == []  # the relay never dropped while the daemon ran
        status = control.ask(cfg.store.runtime_dir, p.Status()).connectors[0]
        assert status.contactor == "closed" and status.status == "Charging"
        yield proc, board
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        proc.stderr.close()
        board.stop()


def test_kill_9_while_charging_the_circuit_opens_the_contactor_within_the_drop_out(charging):
    proc, board = charging
    killed_at = time.monotonic()
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    opened = board.next("relay.opened", timeout_s=10.0)
    assert opened["reason"] == "heartbeat stopped"
    assert opened["coil"] is True and board.pins.coil()  # evsed never released the coil
    assert opened["last_edge_at"] < killed_at + 0.1  # nothing retriggered it after the kill
    assert opened["fell_at"] - killed_at <= DROPOUT_S + 2.0  # generous: the figure is in bench/


def test_sigterm_while_charging_releases_the_coil_itself(charging):
    proc, board = charging
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    opened = board.next("relay.opened", timeout_s=10.0)
    assert opened["reason"] == "coil released" and not board.pins.coil()
