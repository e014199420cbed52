"""An OpenEVSE board as the 8.2.3 release builds ship it: the boot lock ($SB), heartbeat supervision
fed by the safety loop's round, a missed pulse acknowledged with the offer, and a stop that lets
the EV stop first ($FS) where no fault asks for $FD. The RAPI emulator on a pty boots locked by
default, as those builds do; real pyserial, the real SafetyLoop on an explicit clock."""

from __future__ import annotations

import pytest

from evsed.core.pilot import PilotState
from evsed.shell.safety_loop import SafetyLoop
from hal import Heartbeat, SoftOpen
from hal import openevse, openevse_board, rapi
from hal.rapi import BoardState, pilot_reading
from simulator.openevse_rapi import OpenEvseEmulator
from test_openevse import Ctx, charging, crash, devices, emu, iec, offer, until  # noqa: F401 (fixtures)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def pulses(board: OpenEvseEmulator) -> int:
    return sum(c.startswith("SY") for c in board.commands)


def rounds(board: OpenEvseEmulator, n: int) -> None:
    """Wait until the worker has polled the board n more times: it ran, whatever it sends."""
    seen = board.commands.count("GS")
    until(lambda: board.commands.count("GS") >= seen + n, what=f"{n} worker rounds")


def asked(pilot, command: str):
    """A request queued behind every wish made so far, answered: the worker has been through them."""
    return pilot.board.submit(command).result(timeout=5)


class Loop:
    """The daemon's safety loop beating the pilot, on a clock the test moves with the board's time."""

    def __init__(self, board: OpenEvseEmulator, pilot):
        self.board, self.clock = board, Clock()
        self.loop = SafetyLoop([pilot], healthy=lambda: "", clock=self.clock, notify=lambda m: True)

    def beat(self) -> None:
        """One round: its pulse reaches the board, then the board's time moves to the next round."""
        before = pulses(self.board)
        due = self.loop.tick(self.clock.now)
        until(lambda: pulses(self.board) > before, what="the pulse")
        self.board.advance(due - self.clock.now)
        self.clock.now = due


# --- the boot lock -----------------------------------------------------------------------------------


def test_a_board_booting_locked_gets_sb_once_it_is_asleep_and_then_sees_the_ev(emu, devices):
    assert emu.boot_locked  # as every 8.2.3 release build boots: the EV is not even looked at
    pilot = devices("pilot")
    until(lambda: not emu.boot_locked, what="$SB")
    assert emu.commands.index("FS") < emu.commands.index("SB")  # it starts asleep, not enabled
    emu.set_ev("B")
    until(lambda: iec(pilot) is PilotState.B, what="the EV seen")
    assert pilot.board.firmware.boot_lock is True


def test_a_board_rebooted_unheard_is_unlocked_again_and_charges_on(emu, devices):
    pilot, relay = devices("pilot"), devices("contactor")
    charging(emu, pilot, relay, amps=16)
    emu.reboot(announce=False)  # a brown-out, its $AB lost: locked, state 00, the relay open
    assert emu.boot_locked and not emu.relay_closed
    until(lambda: emu.commands.count("SB") == 2, what="$SB again, from the lock flag")
    until(lambda: emu.relay_closed and emu.current_a == 16, what="charging again at 16 A")


@pytest.mark.parametrize("line", ["clean", "fs_garbled"])
def test_a_board_rebooted_unheard_is_put_back_to_sleep_before_it_is_unlocked(emu, devices, line):
    """It boots enabled at its stored current: unlocked as it is, it would offer to the EV waiting in
    C and close its relay without the core's consent (until evsed forced it open). Also when the
    $FS is lost on the line: the $SB waits for a round whose $FS went through."""
    pilot, relay = devices("pilot"), devices("contactor")
    until(lambda: not emu.boot_locked, what="$SB")
    emu.set_ev("C")  # an EV waiting for a card: evsed holds the board asleep
    rounds(emu, 2)
    sent = len(emu.commands)
    if line == "fs_garbled":
        emu.garble_next.add("FS")  # a bit error: $NK, not carried out
    emu.reboot(announce=False)  # its $AB lost: only the lock flag tells
    until(lambda: "SB" in emu.commands[sent:] and not emu.boot_locked, what="$SB again")
    rounds(emu, 2)
    after = emu.commands[sent:]
    assert "FS" in after and after.index("FS") < after.index("SB")
    assert "FD" not in after and not emu.relay_closed  # the relay never closed, nothing to force


def test_a_boot_locked_board_put_to_sleep_reads_as_nothing_not_as_unplugged():
    # $FS during the lock makes the state fe, but Update() has not read even the EV-connected flag:
    # read as "no EV" a charge in progress before a reboot would end as if the EV had left
    locked_asleep = BoardState(rapi.SLEEPING, rapi.STATE_UNKNOWN, rapi.VF_BOOT_LOCK, 0.0)
    assert pilot_reading(locked_asleep) is None
    assert pilot_reading(BoardState(rapi.SLEEPING, rapi.STATE_UNKNOWN, 0, 0.0)) is not None


def test_firmware_without_bootlock_refuses_sb_and_is_asked_only_after_a_boot_notification():
    with OpenEvseEmulator(boot_lock=False) as board:
        pilot = openevse.pilot({"port": board.port}, Ctx())
        try:
            asked(pilot, "GV")
            assert "SB" not in board.commands  # no $AB, no lock flag: nothing owed
            board.reboot()  # announced: $AB, and a lock that may be there
            until(lambda: "SB" in board.commands, what="$SB after the $AB")
            asked(pilot, "GV")
            assert pilot.board.firmware.boot_lock is False and board.commands.count("SB") == 1
        finally:
            pilot.release()


# --- heartbeat supervision -----------------------------------------------------------------------------


def test_only_a_pilot_with_supervision_is_beaten_by_the_safety_loop(emu, devices):
    pilot = devices("pilot", heartbeat_s=4)
    assert isinstance(pilot, Heartbeat) and (pilot.heartbeat_interval_s, pilot.dropout_s) == (1.0, 4.0)
    with OpenEvseEmulator() as other:
        plain = openevse.pilot({"port": other.port, "heartbeat_s": 0}, Ctx())
        try:
            assert not isinstance(plain, Heartbeat)
        finally:
            plain.release()


def test_the_board_hears_only_the_safety_loops_pulses_so_a_stalled_loop_lets_it_fall_back(emu, devices):
    pilot = devices("pilot", heartbeat_s=1, poll_interval_s=0.02)
    offer(emu, pilot, 16)
    rounds(emu, 5)
    assert pulses(emu) == 0  # the hal's worker runs, but it proves nothing about the core
    loop = Loop(emu, pilot)
    assert loop.loop.beating == [pilot] and loop.loop.beat_interval_s == 0.25
    for _ in range(12):  # 3 s of board time with the loop turning
        loop.beat()
    assert emu.commands[emu.commands.index("SY 1 6") + 1:].count("SY") >= 11
    assert emu.current_a == 16 and emu.hs_trigger == 0 and emu.hs_writes == 1
    for _ in range(3):  # the core hangs: its loop stops; the hal's worker goes on polling
        rounds(emu, 3)
        emu.advance(0.5)
    assert emu.current_a == 6 and emu.hs_trigger == 2


def test_a_dead_evsed_leaves_the_board_charging_at_6_a(emu, devices):
    pilot, relay = devices("pilot", heartbeat_s=2), devices("contactor", heartbeat_s=2)
    charging(emu, pilot, relay, amps=16)
    loop = Loop(emu, pilot)
    loop.beat()
    loop.beat()
    crash(pilot.board)
    emu.advance(3.0)
    assert emu.current_a == 6 and emu.charging_current_a == 6.0
    assert emu.relay_closed  # what stays unprotected: the board keeps charging, at 6 A


def test_a_missed_pulse_is_acknowledged_together_with_the_offer(emu, devices):
    pilot = devices("pilot", heartbeat_s=2, timeout_s=0.1)
    offer(emu, pilot, 16)
    loop = Loop(emu, pilot)
    loop.beat()
    emu.mute = True  # the line is down for a while: the pulses are lost
    emu.advance(3.0)
    assert emu.current_a == 6
    emu.mute = False
    # the acknowledgement restores the board's EEPROM maximum (32 A): a request queued meanwhile
    # must not be served at that offer
    emu.before_answer["SY 165"] = lambda: pilot.board.submit("GG")
    until(lambda: (loop.loop.tick(loop.clock.now), "SY 165" in emu.commands)[1], what="acknowledged")
    until(lambda: "GG" in emu.commands, what="the queued request")
    after = emu.commands[emu.commands.index("SY 165") + 1:]
    assert after[0] == "SC 16 V" and emu.current_a == 16


# --- a stop that is no fault ---------------------------------------------------------------------------


def test_an_open_that_lets_the_ev_stop_first_sleeps_the_board_and_never_disables_it(emu, devices):
    pilot, relay = devices("pilot"), devices("contactor")
    assert isinstance(relay, SoftOpen)
    charging(emu, pilot, relay)
    sent = len(emu.commands)
    relay.open_when_ev_stops()
    pilot.pwm_off()
    until(lambda: emu.mode == "sleeping", what="$FS")
    asked(pilot, "GV")
    assert emu.relay_closed  # the board waits for the EV (3 s at most), the pilot at +12 V
    emu.set_ev("B")
    until(lambda: not relay.feedback_closed(), what="the EV stopped, the relay open")
    assert "FD" not in emu.commands[sent:]


def test_an_ev_that_ignores_the_stop_is_cut_off_by_the_board_itself(emu, devices):
    pilot, relay = devices("pilot"), devices("contactor")
    charging(emu, pilot, relay)
    sent = len(emu.commands)
    relay.open_when_ev_stops()  # as the shell releases at a shutdown: the offer ends too
    pilot.pwm_off()
    until(lambda: emu.mode == "sleeping", what="$FS")
    emu.advance(3.0)  # the firmware's own limit asleep
    until(lambda: not relay.feedback_closed(), what="opened by the board")
    assert "FD" not in emu.commands[sent:]


def test_a_board_that_does_not_open_by_itself_is_disabled_after_its_own_limit(emu, devices, monkeypatch):
    monkeypatch.setattr(openevse_board, "SLEEP_OPENS_S", 0.2)
    pilot, relay = devices("pilot"), devices("contactor")
    charging(emu, pilot, relay)
    relay.open_when_ev_stops()  # the board's time stands still: it never opens on its own
    pilot.pwm_off()
    until(lambda: "FD" in emu.commands and not emu.relay_closed, what="forced open")


def test_a_release_during_a_soft_open_waits_for_it_and_forces_a_board_that_stays_closed(emu, devices, monkeypatch):
    """The last device released (a stop) while the board is let go asleep: the worker does not end
    before the relay opened, or was forced open at the board's own limit."""
    monkeypatch.setattr(openevse_board, "SLEEP_OPENS_S", 0.2)
    pilot, relay = devices("pilot"), devices("contactor")
    charging(emu, pilot, relay)
    relay.open_when_ev_stops()
    pilot.pwm_off()
    relay.release()
    pilot.release()  # the board's time stands still: it never opens on its own
    assert "FD" in emu.commands and not emu.relay_closed


def test_a_release_with_the_relay_closed_without_consent_forces_it_open(emu, devices):
    """The board closed its relay for the EV by itself and evsed stops before relay_grace_s is up:
    the worker that would have forced it open is gone, so the release does (not a $FS and the
    board's 3 s, nor nothing from a board that ignores the $FS)."""
    pilot = devices("pilot", relay_grace_s=30.0)
    relay = devices("contactor", relay_grace_s=30.0)
    offer(emu, pilot, 16)
    emu.set_ev("C")
    until(lambda: relay.feedback_closed(), what="closed by the board")  # the core never consented
    pilot.pwm_off()
    relay.release()
    pilot.release()
    assert "FD" in emu.commands and not emu.relay_closed


@pytest.mark.parametrize("kind", ["open", "open_when_ev_stops"])
def test_a_forced_open_after_a_soft_one_disables_the_board_at_once(emu, devices, kind):
    pilot, relay = devices("pilot"), devices("contactor")
    charging(emu, pilot, relay)
    relay.open_when_ev_stops()
    pilot.pwm_off()
    until(lambda: emu.mode == "sleeping", what="$FS")
    getattr(relay, kind)()
    if kind == "open":  # a fault while the EV is being let go: no more waiting
        until(lambda: "FD" in emu.commands and not emu.relay_closed, what="$FD")
    else:
        asked(pilot, "GV")
        assert "FD" not in emu.commands and emu.relay_closed
        emu.set_ev("B")  # the EV stops: the board opens (else the release would wait for its limit)
        until(lambda: not relay.feedback_closed(), what="the relay open")
