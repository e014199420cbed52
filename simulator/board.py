"""The contactor's relay board beside the simulated charger: a heartbeat drop-out (a retriggerable
monostable in series with the relay driver), in process or as a process of its own.

Run as `python -m simulator.board PINFILE --dropout-s 0.5`: the board keeps modelling the relay
after evsed is killed, so a test can watch the contactor open with no code of evsed running.
"""

from __future__ import annotations

import argparse
import json
import math
import mmap
import os
import queue
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable


class Monostable:
    """A retriggerable monostable (74HC123): Q is high from a rising edge until dropout_s after
    the last one. Times come from `clock` (virtual in scenarios, monotonic in the daemon)."""

    def __init__(self, clock: Callable[[], float], dropout_s: float):
        self.clock, self.dropout_s = clock, dropout_s
        self.last_edge_at = -math.inf

    def trigger(self, at: float | None = None) -> None:
        self.last_edge_at = self.clock() if at is None else at

    def falls_at(self) -> float:
        """When Q falls (or fell) unless retriggered first, in clock seconds."""
        return self.last_edge_at + self.dropout_s

    def high(self) -> bool:
        return self.clock() < self.falls_at()


class PinFile:
    """The output levels evsed drives, in a small shared file, plus the relay's real state.

    Like a GPIO line, what is written stays after the writer dies. Layout (little-endian):
    byte 0 the coil command (1 = energize), bytes 8-15 the number of heartbeat toggles (the
    pin's level is its parity; a count cannot miss an edge the way sampling a level could),
    byte 16 the relay contact as the board drives it (1 = closed).
    """

    SIZE = 24
    _COIL, _TOGGLES, _RELAY = 0, 8, 16

    def __init__(self, path: str | os.PathLike, *, create: bool = False):
        self.path = Path(path)
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        fd = os.open(self.path, flags, 0o600)
        try:
            if create:
                os.ftruncate(fd, self.SIZE)
            self._map = mmap.mmap(fd, self.SIZE)
        finally:
            os.close(fd)

    def coil(self) -> bool:
        return self._map[self._COIL] == 1

    def set_coil(self, energized: bool) -> None:
        self._map[self._COIL] = 1 if energized else 0

    def toggles(self) -> int:
        return struct.unpack_from("<Q", self._map, self._TOGGLES)[0]

    def toggle(self) -> int:
        count = self.toggles() + 1
        struct.pack_into("<Q", self._map, self._TOGGLES, count)
        return count

    def relay(self) -> bool:
        return self._map[self._RELAY] == 1

    def set_relay(self, closed: bool) -> None:
        self._map[self._RELAY] = 1 if closed else 0

    def close(self) -> None:
        self._map.close()


def rose_between(before: int, after: int) -> bool:
    """Whether the heartbeat had a rising edge (a toggle to an odd count) in (before, after]."""
    return after > before and (after % 2 == 1 or after - before >= 2)


def run(pins: PinFile, dropout_s: float, sample_s: float, emit: Callable[[dict], None],
        clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
        until: Callable[[], bool] = lambda: False) -> None:
    """Sample the pins every sample_s and drive the relay: closed while the coil is commanded and
    the monostable is high (dropout_s 0: no drop-out circuit). Emits each change of the relay."""
    q = Monostable(clock, dropout_s)
    seen = pins.toggles()
    closed = False
    pins.set_relay(False)
    emit({"event": "board.ready", "t": clock(), "pid": os.getpid(), "dropout_s": dropout_s})
    while not until():
        now = clock()
        toggles = pins.toggles()
        if rose_between(seen, toggles):
            q.trigger(now)
        seen = toggles
        coil = pins.coil()
        should = coil and (dropout_s <= 0 or q.high())
        if should != closed:
            closed = should
            pins.set_relay(closed)
            event = {"event": "relay.closed" if closed else "relay.opened", "t": now, "coil": coil,
                     "toggles": toggles, "last_edge_at": q.last_edge_at}
            if not closed and coil:  # dropped by the circuit, not by evsed: when Q fell
                event.update(reason="heartbeat stopped", fell_at=q.falls_at())
            elif not closed:
                event.update(reason="coil released")
            emit(event)
        sleep(sample_s)


class BoardProcess:
    """`python -m simulator.board` started beside a daemon (by a test or a bench), with its events."""

    def __init__(self, pins: str | os.PathLike, dropout_s: float, sample_s: float = 0.002):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "simulator.board", str(pins), "--dropout-s", str(dropout_s),
             "--sample-s", str(sample_s)], stdout=subprocess.PIPE, text=True)
        self.events: queue.Queue[dict] = queue.Queue()
        threading.Thread(target=self._read, daemon=True, name="board-events").start()
        self.ready = self.next("board.ready", timeout_s=30.0)
        self.pins = PinFile(pins)

    def _read(self) -> None:
        assert self.proc.stdout is not None  # started with stdout=PIPE
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def next(self, event: str, timeout_s: float) -> dict:
        """The next event; raises AssertionError if it is another one or none comes in time."""
        try:
            got = self.events.get(timeout=timeout_s)
        except queue.Empty:
            raise AssertionError(f"the board sent no {event} within {timeout_s} s") from None
        if got["event"] != event:
            raise AssertionError(f"the board sent {got} while {event} was expected")
        return got

    def pending(self) -> list[dict]:
        out = []
        while not self.events.empty():
            out.append(self.events.get_nowait())
        return out

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        assert self.proc.stdout is not None  # started with stdout=PIPE
        self.proc.stdout.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator.board", description=__doc__)
    parser.add_argument("pins", help="the pin file, named as the sim contactor's `board` option")
    parser.add_argument("--dropout-s", type=float, default=0.5, help="the monostable's drop-out (0: none)")
    parser.add_argument("--sample-s", type=float, default=0.002, help="how often the board samples the pins")
    args = parser.parse_args(argv)
    pins = PinFile(args.pins, create=True)

    def emit(event: dict) -> None:
        print(json.dumps(event), flush=True)
    try:
        run(pins, args.dropout_s, args.sample_s, emit)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
