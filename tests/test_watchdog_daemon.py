"""The systemd watchdog end to end: `evsed run` on the simulator with NOTIFY_SOCKET on a datagram
socket this test owns and WATCHDOG_USEC set, its contactor behind the board process's drop-out.

The daemon's loop is stalled with SIGSTOP: nothing in evsed can stall its own loop on purpose
(a reload refuses a FIFO config, device reads are off the loop), and a stopped process is the
limit of a hung one: it sends nothing. The pings must stop within the watchdog period and the
relay drop within dropout_s of the last heartbeat edge, with no code of evsed running.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evsed import protocol as p
from evsed import config
from evsed.control import client as control
from simulator.board import BoardProcess
from test_failsafe_kill import DROPOUT_S, wait_for, write_config

WATCHDOG_S = 1.0  # WatchdogSec=1: evsed pings every 0.5 s
GUARD_S = 20.0  # only a broken daemon reaches this


def receive(sock: socket.socket, timeout_s: float) -> list[tuple[float, bytes]]:
    """Every notification that arrives within timeout_s, with when it arrived."""
    got = []
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            got.append((time.monotonic(), sock.recv(256)))
        except TimeoutError:
            break
    return got


def next_message(sock: socket.socket, message: bytes) -> float:
    """Wait for the message (skipping others); returns when it arrived."""
    deadline = time.monotonic() + GUARD_S
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(256)
        except TimeoutError:
            raise AssertionError(f"no {message!r} within {GUARD_S} s") from None
        if data == message:
            return time.monotonic()


def stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


@pytest.fixture
def notify_socket(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    yield sock
    sock.close()


def test_a_stalled_loop_stops_the_watchdog_pings_and_the_heartbeat_drops_the_relay(tmp_path, notify_socket):
    pins = tmp_path / "pins"
    board = BoardProcess(pins, DROPOUT_S)
    path = write_config(tmp_path, pins)
    cfg = config.load(path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "NOTIFY_SOCKET": str(tmp_path / "notify"),
           "WATCHDOG_USEC": str(int(WATCHDOG_S * 1e6))}
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen([sys.executable, "-m", "evsed", "run", "-c", str(path)], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, env=env)
    drain = None
    try:
        next_message(notify_socket, b"READY=1")
        first = next_message(notify_socket, b"WATCHDOG=1")
        pings = [t for t, m in receive(notify_socket, 3 * WATCHDOG_S) if m == b"WATCHDOG=1"]
        assert len(pings) >= 4 and all(b - a < WATCHDOG_S for a, b in zip([first, *pings], pings))
        drain = subprocess.Popen(["cat"], stdin=proc.stderr, stdout=subprocess.DEVNULL)  # keep its log flowing
        control.request(cfg.store.runtime_dir, p.Plug())
        control.request(cfg.store.runtime_dir, p.Tap(card="04A1B2C3"))
        board.next("relay.closed", timeout_s=GUARD_S)
        next_message(notify_socket, b"WATCHDOG=1")  # still pinging while it charges

        os.kill(proc.pid, signal.SIGSTOP)
        stalled_at = time.monotonic()
        wait_for(lambda: stopped(proc.pid), GUARD_S, "the daemon stopped")
        receive(notify_socket, 0.0)  # what it sent before it stopped
        assert receive(notify_socket, WATCHDOG_S) == [], "pinged while stalled"
        opened = board.next("relay.opened", timeout_s=GUARD_S)
        assert opened["reason"] == "heartbeat stopped" and opened["coil"] is True
        assert opened["last_edge_at"] <= stalled_at + 0.1  # nothing retriggered it after the stall
        assert opened["fell_at"] - stalled_at <= DROPOUT_S + 2.0  # generous: bench/failsafe_dropout.py times it

        os.kill(proc.pid, signal.SIGCONT)  # the loop turns again: so do the pings
        next_message(notify_socket, b"WATCHDOG=1")
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait(timeout=10)
        if drain is not None:
            drain.wait(5)
        proc.stderr.close()
        board.stop()
