"""What an OpenEVSE board's firmware may be built with, as the board's worker follows it: the auth
lock (probed with $G4), the boot lock ($SB owed after a boot) and heartbeat supervision ($SY).

Part of hal.openevse_board's worker: every method here runs in that worker thread but pulse().
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import structlog

from hal import TryAgain
from hal.rapi import Refused, boot_locked

if TYPE_CHECKING:
    from hal.openevse_board import Board

log = structlog.get_logger("hal.openevse")

HS_FALLBACK_A = 6  # the firmware's floor: SetCurrentCapacity() raises anything lower to 6 A
HS_ACK_COOKIE = 165
REFUSALS_TO_GIVE_UP = 3  # a bare $NK is also what a bit error gets: never conclude from one


class Firmware:
    """The features of one board's firmware, learnt as it answers, and the commands they need."""

    def __init__(self, board: Board):
        self.board = board
        self.has_auth_lock: bool | None = None  # None until $G4 has answered
        self.boot_lock: bool | None = None  # built with BOOTLOCK; None until an $SB answered
        self.heartbeat = "setup"  # $SY: "setup", "on", or "none" (firmware without it)
        self.unlock_owed = False  # $SB owed: an $AB was heard or the lock flag seen
        self._pulse_owed = False  # the safety loop asked for a pulse the board has not had yet
        self._pulsed_at = -1e9  # the last $SY: at most 8 an interval, however fast the loop beats
        self._refusals: dict[str, int] = {}  # command kind -> bare $NK in a row

    def pulse(self) -> None:
        """The safety loop's heartbeat (any thread): the worker passes it on as one $SY."""
        self._pulse_owed = True

    def refused_bare(self, kind: str, exc: Refused) -> bool:
        """A bare $NK (no value): a bit error or an unknown command. True once it came too often."""
        if exc.frame.args:
            return False
        self._refusals[kind] = self._refusals.get(kind, 0) + 1
        return self._refusals[kind] >= REFUSALS_TO_GIVE_UP

    def answered(self, kind: str) -> None:
        self._refusals.pop(kind, None)

    def probe_auth_lock(self) -> None:
        """$G4 answers on firmware built with AUTH_LOCK; a bare $NK may also be a bit error, so
        only refusals in a row decide."""
        for _ in range(REFUSALS_TO_GIVE_UP):
            try:
                self.board.link.request("G4")
                self.has_auth_lock = True
                break
            except Refused as exc:
                if self.refused_bare("G4", exc):
                    self.has_auth_lock = False
        else:
            if self.has_auth_lock is None:
                return
        log.info("openevse.gate", port=self.board.port, gate="auth_lock" if self.has_auth_lock else "sleep",
                 note=None if self.has_auth_lock else "firmware built without AUTH_LOCK: no offer is "
                 "sleep ($FS), and only the EV-connected and relay flags are read then")

    def unlock_boot(self) -> None:
        """$SB, owed after an $AB or while the lock flag shows: "0" unlocked, "1" refused in a fault
        (asked again next round). A bare $NK after an $AB alone: firmware without BOOTLOCK."""
        if not self.unlock_owed or self.board._acked_mode is None:
            return  # after the output is set: it boots enabled at its stored current
        state = self.board.last_state
        try:
            frame = self.board._command("SB")
        except Refused as exc:
            if not exc.frame.args and not (state is not None and boot_locked(state)):
                self.unlock_owed, self.boot_lock = False, False
                return
            raise
        if frame.args[:1] == ("1",):
            raise TryAgain(f"OpenEVSE {self.board.port}: board refused to leave its boot lock ($SB: in a fault)")
        self.unlock_owed, self.boot_lock = False, True
        log.info("openevse.boot_unlocked", port=self.board.port)

    def heartbeat_step(self) -> None:
        """$SY for the safety loop's pulse: supervision set up at the first, then one $SY a pulse; a
        missed pulse is acknowledged, and the offer restored with it (the board restored its EEPROM
        maximum, which may be above evsed's)."""
        interval_s, now = self.board.heartbeat_s, time.monotonic()
        if not self._pulse_owed or not interval_s or self.heartbeat == "none" or now < self._pulsed_at + interval_s / 8:
            return
        self._pulse_owed, self._pulsed_at = False, now
        port = self.board.port
        try:
            if self.heartbeat == "setup":
                self.board.link.request(f"SY {interval_s} {HS_FALLBACK_A}")
                self.heartbeat = "on"
                log.info("openevse.heartbeat_on", port=port, interval_s=interval_s, fallback_a=HS_FALLBACK_A)
            else:
                self.board.link.request("SY")
            self.answered("SY")
        except Refused as exc:
            if self.refused_bare("SY", exc):
                self.heartbeat = "none"
                log.warning("openevse.no_heartbeat", port=port,
                            note="firmware without HEARTBEAT_SUPERVISION: nothing limits the board if evsed stops")
                return
            if not exc.frame.args:
                raise
            log.warning("openevse.heartbeat_missed", port=port, answer=" ".join(exc.frame.args))
            self.board.link.request(f"SY {HS_ACK_COOKIE}")  # the board restores its stored capacity
            self.board._restore_offer()

    def fell_back(self, current_a: int, offered_a: int | None) -> bool:
        """A drop of the board's capacity to the supervision's fallback: it ends when the safety
        loop's next pulse is acknowledged, never by the worker alone (it runs on while the core hangs)."""
        return self.heartbeat == "on" and offered_a is not None and current_a == HS_FALLBACK_A < offered_a
