"""RAPI's wire for the board emulators: a pty, frames with their checksums and sequence ids, the
answers, and the faults a test injects on the line. The board model answers through _execute().
"""

from __future__ import annotations

import os
import select
import threading
import tty
from typing import Self


def xor(text: str) -> int:
    """RAPI's XOR checksum of every character, '$' included."""
    value = 0
    for byte in text.encode("ascii"):
        value ^= byte
    return value


class RapiPty:
    """The master side of a pty that answers RAPI frames, one at a time under self._lock.

    Test hooks: nak_next (command names to refuse once), nak_always (until removed), corrupt_next
    (answers with a bad checksum), garble_next (requests hit by a bit error on the line),
    before_answer (a command, "SY 165", or its name, "SY" -> callable run once just before it is
    carried out), mute (answer nothing), send_raw(), send_frame(), commands (what it received).
    """

    def __init__(self) -> None:
        self.commands: list[str] = []  # every command received, checksum and sequence id removed
        self.nak_next: set[str] = set()
        self.nak_always: set[str] = set()  # command names refused until removed (a failing ammeter: GG)
        self.corrupt_next: set[str] = set()
        self.garble_next: set[str] = set()
        self.before_answer: dict = {}
        self.mute = False
        self._lock = threading.RLock()
        self._master = self._slave = -1
        self._stop_r = self._stop_w = -1
        self._thread: threading.Thread | None = None
        self.port = ""

    @property
    def listening(self) -> bool:
        return self._master >= 0

    # the board model's part
    def _ready(self) -> None:
        """Before the first frame is read (under the lock)."""

    def _execute(self, name: str, args: list[str]) -> tuple[bool, str]:
        raise NotImplementedError

    def _update(self) -> None:
        """After a command: the board's own logic runs."""

    def _notify(self) -> None:
        """After the answer: the asynchronous notifications the board sends."""

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no CR/NL translation: a serial line, not a terminal
        self.port = os.ttyname(self._slave)
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._serve, name="rapi-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        os.write(self._stop_w, b"x")
        self._thread.join(timeout=2.0)
        for fd in (self._master, self._slave, self._stop_r, self._stop_w):
            os.close(fd)
        self._thread, self._master = None, -1

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def send_raw(self, data: bytes) -> None:
        with self._lock:
            os.write(self._master, data)

    def send_frame(self, text: str) -> None:
        """Send '$xx ...' with its XOR checksum, as the firmware frames every message."""
        self.send_raw(f"{text}^{xor(text):02X}\r".encode("ascii"))

    # --- serving ------------------------------------------------------------------------------------

    def _serve(self) -> None:
        buffer = b""
        with self._lock:
            self._ready()
        while True:
            ready, _, _ = select.select([self._master, self._stop_r], [], [])
            if self._stop_r in ready:
                return
            try:
                buffer += os.read(self._master, 1024)
            except OSError:  # the slave side went away for good
                return
            *lines, buffer = buffer.split(b"\r")
            for line in lines:
                with self._lock:
                    self._handle(line.decode("ascii", "replace"))

    def _handle(self, line: str) -> None:
        start = line.rfind("$")
        if start < 0:
            return  # the firmware ignores everything before a '$'
        body = line[start:]
        name = body[1:3]
        if name in self.garble_next:  # one bit flipped on the way in: the checksum no longer fits
            self.garble_next.discard(name)
            body = body[:1] + chr(ord(body[1]) ^ 0x20) + body[2:]
        for mark, check in (("^", xor), ("*", lambda t: sum(t.encode("ascii")) & 0xFF)):
            if mark in body:
                body, _, given = body.partition(mark)
                try:
                    good = int(given[:2], 16) == check(body)
                except ValueError:
                    good = False
                if not good:
                    self._answer(False, "", None)  # tokenize() failed: $NK, no value, no sequence id
                    return
                break
        tokens = body[1:].split()
        seq = tokens.pop()[1:] if len(tokens) > 1 and tokens[-1].startswith(":") else None
        if not tokens:
            return
        self.commands.append(" ".join(tokens))
        if self.mute:
            return
        name = tokens[0]
        if name in self.nak_next or name in self.nak_always:
            self.nak_next.discard(name)
            self._answer(False, "", seq)
            return
        hook = self.before_answer.pop(" ".join(tokens), None) or self.before_answer.pop(name, None)
        if hook is not None:
            hook()
        ok, value = self._execute(name, tokens[1:])
        self._update()
        self._answer(ok, value, seq, corrupt=name in self.corrupt_next)
        self.corrupt_next.discard(name)
        self._notify()  # the firmware sends its state after each command

    def _answer(self, ok: bool, value: str, seq: str | None, corrupt: bool = False) -> None:
        text = "$OK" if ok else "$NK"
        if value:
            text += " " + value
        if seq is not None:
            text += " :" + seq
        checksum = xor(text) ^ (0x5A if corrupt else 0)
        os.write(self._master, f"{text}^{checksum:02X}\r".encode("ascii"))
