"""Contactor drop-out after `kill -9` of a charging daemon, with the heartbeat drop-out circuit.

Each cycle starts a board process (python -m simulator.board: the relay and its retriggerable
monostable, sampling the pins every 2 ms) and `evsed run` on the simulator with its contactor on
that board, charges, kills the daemon with SIGKILL and times the relay opening, on
CLOCK_MONOTONIC, which the processes share. References in the same run: SIGTERM (evsed releases
the coil itself) and kill -9 with no circuit fitted (the contactor stays closed).

Usage: python bench/failsafe_dropout.py [--cycles N] [--dropout-s S] [--heartbeat-hz HZ]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evsed import protocol as p  # noqa: E402
from evsed.control import client as control  # noqa: E402
from simulator.board import BoardProcess  # noqa: E402


def start(tmp: Path, board_dropout_s: float, dropout_s: float, hz: float):
    pins = tmp / "pins"
    board = BoardProcess(pins, board_dropout_s)
    options = f'heartbeat = true\nheartbeat_hz = {hz}\ndropout_s = {dropout_s}\nboard = "{pins}"\n'
    text = re.sub(r"^\[connector\.contactor\]\n", lambda m: m.group(0) + options,
                  (ROOT / "config" / "simulator.toml").read_text(), flags=re.M)
    text += f'\n[store]\nstate_dir = "{tmp / "state"}"\nruntime_dir = "{tmp / "run"}"\n'
    (tmp / "evsed.toml").write_text(text)
    proc = subprocess.Popen([sys.executable, "-m", "evsed", "run", "-c", str(tmp / "evsed.toml")],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    for line in proc.stderr:
        if json.loads(line)["event"] == "daemon.ready":
            break
    threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep draining its log
    control.request(tmp / "run", p.Plug())
    control.request(tmp / "run", p.Tap(card="04A1B2C3"))
    board.next("relay.closed", timeout_s=10)
    held_from = board.pins.toggles()
    while board.pins.toggles() < held_from + 2 * dropout_s * hz * 2:  # two drop-outs of steady charging
        time.sleep(0.01)
    time.sleep(random.uniform(0.0, 1.0 / hz))  # kill at any phase of the heartbeat, not right after an edge
    return proc, board


def cycle(how: str, dropout_s: float, hz: float) -> dict:
    with tempfile.TemporaryDirectory() as d:
        proc, board = start(Path(d), 0.0 if how == "no circuit" else dropout_s, dropout_s, hz)
        try:
            sent_at = time.monotonic()
            os.kill(proc.pid, signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
            proc.wait(timeout=10)
            if how == "no circuit":
                try:
                    board.next("relay.opened", timeout_s=5 * dropout_s)
                    return {"open_s": None, "note": "opened?!"}
                except AssertionError:
                    return {"open_s": None, "still_closed_s": time.monotonic() - sent_at}
            opened = board.next("relay.opened", timeout_s=10)
            return {"open_s": opened.get("fell_at", opened["t"]) - sent_at, "seen_s": opened["t"] - sent_at,
                    "since_last_edge_s": sent_at - opened["last_edge_at"], "reason": opened["reason"]}
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            board.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--dropout-s", type=float, default=0.5)
    parser.add_argument("--heartbeat-hz", type=float, default=10.0)
    a = parser.parse_args()
    print(f"evsed fail-safe drop-out bench: {a.cycles} cycles, dropout_s {a.dropout_s}, heartbeat "
          f"{a.heartbeat_hz} Hz (a toggle every {500 / a.heartbeat_hz:.0f} ms), board samples every 2 ms")
    kills = [cycle("kill", a.dropout_s, a.heartbeat_hz) for _ in range(a.cycles)]
    terms = [cycle("sigterm", a.dropout_s, a.heartbeat_hz) for _ in range(a.cycles)]
    bare = cycle("no circuit", a.dropout_s, a.heartbeat_hz)

    def row(label, values):
        print(f"  {label:44s} min {min(values) * 1000:7.1f} ms  median {statistics.median(values) * 1000:7.1f} ms"
              f"  max {max(values) * 1000:7.1f} ms")
    row("kill -9 -> relay open (circuit's fall time)", [k["open_s"] for k in kills])
    row("kill -9 -> board saw it open", [k["seen_s"] for k in kills])
    row("last heartbeat edge -> kill -9", [k["since_last_edge_s"] for k in kills])
    row("reference: SIGTERM -> coil released by evsed", [t["open_s"] for t in terms])
    print(f"  reference: kill -9 with no circuit fitted: still closed {bare.get('still_closed_s', 0):.1f} s later")
    print(f"  reasons: {sorted({k['reason'] for k in kills})} / {sorted({t['reason'] for t in terms})}")
    print(f"  bound: dropout_s - one heartbeat period <= kill -> open <= dropout_s "
          f"({(a.dropout_s - 1 / a.heartbeat_hz) * 1000:.0f}..{a.dropout_s * 1000:.0f} ms)")


if __name__ == "__main__":
    main()
