"""An OpenEVSE board emulator speaking RAPI on the master side of a pty, for tests and demos.

Written from the published protocol (firmware rapi_proc.h); standard library only, no evsed.
"""

from __future__ import annotations

import os
import select
import threading
import tty

# EVSE states as the firmware numbers them (J1772EvseController.h)
STATE_A, STATE_B, STATE_C, STATE_D = 0x01, 0x02, 0x03, 0x04
DIODE_CHECK_FAILED, GFCI_FAULT, NO_GROUND, STUCK_RELAY = 0x05, 0x06, 0x07, 0x08
GFI_TEST_FAILED, OVER_TEMPERATURE, OVER_CURRENT, RELAY_CLOSURE_FAULT = 0x09, 0x0A, 0x0B, 0x0E
SLEEPING, DISABLED = 0xFE, 0xFF
FAULT_STATES = (DIODE_CHECK_FAILED, GFCI_FAULT, NO_GROUND, STUCK_RELAY, GFI_TEST_FAILED,
                OVER_TEMPERATURE, OVER_CURRENT, RELAY_CLOSURE_FAULT)
# volatile flags (m_wVFlags) the emulator keeps
VF_CHARGING_ON, VF_GFI_TRIPPED, VF_EV_CONNECTED = 0x0040, 0x0080, 0x0100

_EV_CODES = {"A": STATE_A, "B": STATE_B, "C": STATE_C, "D": STATE_D}


def _xor(text: str) -> int:
    value = 0
    for byte in text.encode("ascii"):
        value ^= byte
    return value


class OpenEvseEmulator:
    """One board: EVSE mode (enabled, sleeping, disabled), current capacity, energy counters,
    and the simulated EV's pilot state (set_ev). Start it, open .port with pyserial, stop it.

    Test hooks: nak_next (command names to refuse once), corrupt_next (command names whose next
    answer gets a bad checksum), mute (answer nothing), send_raw(bytes), commands (what it received).
    """

    def __init__(self, *, current_a: int = 16, min_current_a: int = 6, max_current_a: int = 40,
                 voltage_mv: int = 240_000, total_wh: int = 0, ammeter: bool = True,
                 volatile_supported: bool = True, legacy_async: bool = False, legacy_state: bool = False):
        self.current_a, self.min_current_a, self.max_current_a = current_a, min_current_a, max_current_a
        self.voltage_mv, self.total_wh, self.session_ws = voltage_mv, total_wh, 0
        self.ammeter, self.volatile_supported = ammeter, volatile_supported
        self.legacy_async, self.legacy_state = legacy_async, legacy_state  # $ST / two-field $GS
        self.mode = "enabled"  # as a board boots: enabled, steady +12 V until an EV arrives
        self.ev = "A"
        self.ev_max_current_a = 32.0
        self.fault: int | None = None
        self.gfi_tripped = False
        self.eeprom_writes = 0  # non-volatile $SC writes: EEPROM wear
        self.commands: list[str] = []  # every command received, checksum and sequence id removed
        self.nak_next: set[str] = set()
        self.corrupt_next: set[str] = set()
        self.mute = False
        self._lock = threading.RLock()
        self._last_sent = self._snapshot()
        self._master = self._slave = -1
        self._stop_r = self._stop_w = -1
        self._thread: threading.Thread | None = None
        self.port = ""

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> "OpenEvseEmulator":
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no CR/NL translation: a serial line, not a terminal
        self.port = os.ttyname(self._slave)
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._serve, name="openevse-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        os.write(self._stop_w, b"x")
        self._thread.join(timeout=2.0)
        for fd in (self._master, self._slave, self._stop_r, self._stop_w):
            os.close(fd)
        self._thread = None

    def __enter__(self) -> "OpenEvseEmulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- what the test drives ---------------------------------------------------------------------

    def set_ev(self, state: str) -> None:
        """The simulated EV's state: 'A' unplugged, 'B' plugged, 'C' requests power, 'D' with ventilation."""
        with self._lock:
            was_connected = self.ev != "A"
            self.ev = state
            if not was_connected and state != "A":
                self.session_ws = 0  # the firmware's session starts when the EV connects
            elif was_connected and state == "A":
                self.total_wh += self.session_ws // 3600  # and is added to the total when it leaves
            self._notify_if_changed()

    def set_fault(self, state: int | None) -> None:
        """Put the board into a fault state (GFCI_FAULT...) or clear it with None."""
        with self._lock:
            self.fault = state
            if state in (GFCI_FAULT, GFI_TEST_FAILED):
                self.gfi_tripped = True
            self._notify_if_changed()

    def advance(self, seconds: float) -> None:
        """Let time pass for the energy counter: the EV draws while the relay is closed."""
        with self._lock:
            if self.relay_closed:
                self.session_ws += round(self.voltage_mv / 1000 * self.charging_current_a * seconds)

    def send_raw(self, data: bytes) -> None:
        with self._lock:
            os.write(self._master, data)

    def send_frame(self, text: str) -> None:
        """Send '$xx ...' with its XOR checksum, as the firmware frames every message."""
        self.send_raw(f"{text}^{_xor(text):02X}\r".encode("ascii"))

    # --- the board's state as the firmware reports it ---------------------------------------------

    @property
    def evse_state(self) -> int:
        if self.fault is not None:
            return self.fault
        if self.mode == "disabled":
            return DISABLED
        if self.mode == "sleeping":
            return SLEEPING
        return _EV_CODES[self.ev]

    @property
    def pilot_state(self) -> int:
        if self.mode == "disabled" or self.fault is not None:
            return self.evse_state  # pilot at -12 V: the EV cannot be seen
        return _EV_CODES[self.ev]

    @property
    def relay_closed(self) -> bool:
        return self.fault is None and self.mode == "enabled" and self.ev == "C"

    @property
    def charging_current_a(self) -> float:
        return min(self.current_a, self.ev_max_current_a) if self.relay_closed else 0.0

    @property
    def vflags(self) -> int:
        flags = VF_CHARGING_ON if self.relay_closed else 0
        if self.ev != "A" and self.mode != "disabled" and self.fault is None:
            flags |= VF_EV_CONNECTED
        return flags | (VF_GFI_TRIPPED if self.gfi_tripped else 0)

    def _snapshot(self) -> tuple:
        return (self.evse_state, self.pilot_state, self.current_a, self.vflags)

    def _notify_if_changed(self) -> None:
        now = self._snapshot()
        if now == self._last_sent or self._master < 0:
            return
        self._last_sent = now
        if self.legacy_async:
            self.send_frame(f"$ST {self.evse_state:02x}")
        else:
            self.send_frame(f"$AT {self.evse_state:02x} {self.pilot_state:02x} {self.current_a} {self.vflags:04x}")

    # --- serving ------------------------------------------------------------------------------------

    def _serve(self) -> None:
        buffer = b""
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
        for mark, check in (("^", _xor), ("*", lambda t: sum(t.encode("ascii")) & 0xFF)):
            if mark in body:
                body, _, given = body.partition(mark)
                try:
                    good = int(given[:2], 16) == check(body)
                except ValueError:
                    good = False
                if not good:
                    self._answer(False, "", None)
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
        if name in self.nak_next:
            self.nak_next.discard(name)
            self._answer(False, "", seq)
            return
        ok, value = self._execute(name, tokens[1:])
        self._answer(ok, value, seq, corrupt=name in self.corrupt_next)
        self.corrupt_next.discard(name)
        self._notify_if_changed()  # the firmware sends its state after each command

    def _execute(self, name: str, args: list[str]) -> tuple[bool, str]:
        if name in ("FE", "FS", "FD"):
            self.mode = {"FE": "enabled", "FS": "sleeping", "FD": "disabled"}[name]
            return True, ""
        if name == "SC" and len(args) in (1, 2):
            return self._set_current(args)
        if name == "GS":
            elapsed_s = 0
            if self.legacy_state:
                return True, f"{self.evse_state:02x} {elapsed_s}"
            return True, f"{self.evse_state:02x} {elapsed_s} {self.pilot_state:02x} {self.vflags:04x}"
        if name == "GG":
            current_ma = round(self.charging_current_a * 1000) if self.ammeter else -1
            return True, f"{current_ma} {self.voltage_mv}"
        if name == "GU":
            return True, f"{self.session_ws} {self.total_wh}"
        if name == "GC":
            return True, f"{self.min_current_a} {self.max_current_a} {self.current_a} {self.max_current_a}"
        if name == "GV":
            return True, "8.2.2 5.2.0"
        if name == "G0":
            return True, "2" if self.mode == "disabled" else ("0" if self.ev == "A" else "1")
        return False, ""

    def _set_current(self, args: list[str]) -> tuple[bool, str]:
        if len(args) == 2 and not self.volatile_supported:
            return False, ""  # firmware before the V flag refuses the extra token
        try:
            wanted = int(args[0])
        except ValueError:
            return False, ""
        self.current_a = max(self.min_current_a, min(wanted, self.max_current_a))
        if len(args) == 1:
            self.eeprom_writes += 1
        return self.current_a == wanted, str(self.current_a)

    def _answer(self, ok: bool, value: str, seq: str | None, corrupt: bool = False) -> None:
        text = "$OK" if ok else "$NK"
        if value:
            text += " " + value
        if seq is not None:
            text += " :" + seq
        checksum = _xor(text) ^ (0x5A if corrupt else 0)
        os.write(self._master, f"{text}^{checksum:02X}\r".encode("ascii"))
