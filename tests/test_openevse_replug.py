"""An OpenEVSE board whose USB serial adapter is unplugged and plugged back: the link reads as
unavailable meanwhile and is opened again without a restart. Real pyserial on real ptys behind
a stable name, as udev's /dev/serial/by-id links are; each plug-in is a new tty."""

from __future__ import annotations

from pathlib import Path

import pytest

from evsed.core.pilot import duty_for_current
from hal import DeviceUnavailable, TryAgain
from hal import openevse, rapi
from simulator.openevse_rapi import OpenEvseEmulator
from test_fuzz_devices import captured_logs
from test_openevse import Ctx, offer, safe_read, until

REOPEN_S = 0.05  # the tests' retry interval; the default is 2 s


class Adapter:
    """A USB serial adapter behind a stable name: plug() points the name at a board's new tty."""

    def __init__(self, path: Path):
        self.path = path
        self.boards: list[OpenEvseEmulator] = []

    def plug(self, board: OpenEvseEmulator) -> OpenEvseEmulator:
        board.start()
        self.boards.append(board)
        self.path.symlink_to(board.port)
        return board

    def unplug(self) -> None:
        self.boards[-1].stop()  # both ends of the pty close: reads on our side fail
        self.path.unlink()  # udev removes the name with the device (a freed pty number may be reused)


@pytest.fixture
def adapter(tmp_path):
    made = Adapter(tmp_path / "ttyEVSE")
    yield made
    for board in made.boards:
        board.stop()


@pytest.fixture
def devices(adapter):
    ctx, made = Ctx(), []

    def make(kind, **options):
        device = getattr(openevse, kind)({"port": str(adapter.path), "reopen_s": REOPEN_S, **options}, ctx)
        made.append(device)
        return device

    yield make
    for device in made:
        device.release()


def beat(pilot) -> bool:
    """The safety loop's round: one heartbeat."""
    pilot.heartbeat()
    return True


def unavailable(pilot) -> bool:
    try:
        pilot.read()
    except DeviceUnavailable:
        return True
    except TryAgain:
        pass
    return False


# --- the link ---------------------------------------------------------------------------------------


def test_a_link_whose_port_vanishes_is_unavailable_until_the_port_is_back(adapter):
    adapter.plug(OpenEvseEmulator())
    link = rapi.RapiLink(str(adapter.path), reopen_s=REOPEN_S)
    try:
        assert link.request("GV").name == "OK"
        adapter.unplug()
        until(lambda: link.lost is not None, what="the link lost")
        with pytest.raises(DeviceUnavailable, match="serial link lost"):
            link.request("GV")
        with captured_logs() as logs:
            second = adapter.plug(OpenEvseEmulator())
            until(lambda: link.lost is None, what="the link opened again")
        assert link.request("GV").name == "OK" and "GV" in second.commands
        assert link.reopened == 1
        assert [e["event"] for e in logs if e["event"] == "rapi.link_reopened"] == ["rapi.link_reopened"]
    finally:
        link.close()


def test_a_lost_link_keeps_trying_while_the_port_stays_away(adapter):
    adapter.plug(OpenEvseEmulator())
    link = rapi.RapiLink(str(adapter.path), reopen_s=REOPEN_S)
    try:
        with captured_logs() as logs:
            adapter.unplug()
            until(lambda: sum(e["event"] == "rapi.reopen_failed" for e in logs) >= 1, what="an attempt")
            attempts = [e["attempts"] for e in logs if e["event"] == "rapi.reopen_failed"]
        assert link.lost is not None and link.reopened == 0 and attempts[0] == 1
        second = adapter.plug(OpenEvseEmulator())
        until(lambda: link.lost is None, what="the link opened again")
        assert link.request("GV").name == "OK" and "GV" in second.commands
    finally:
        link.close()


def test_a_lost_link_closes_at_once_while_it_waits_to_reopen(adapter):
    adapter.plug(OpenEvseEmulator())
    link = rapi.RapiLink(str(adapter.path), reopen_s=60.0)  # the next attempt is a minute away
    adapter.unplug()
    until(lambda: link.lost is not None, what="the link lost")
    link.close()
    assert not link._reader.is_alive()  # woken from its wait, not left behind
    with pytest.raises(DeviceUnavailable):
        link.request("GV")


def test_a_link_closed_as_the_port_comes_back_leaves_no_thread_and_stays_closed(adapter):
    adapter.plug(OpenEvseEmulator())
    link = rapi.RapiLink(str(adapter.path), reopen_s=REOPEN_S)
    adapter.unplug()
    until(lambda: link.lost is not None, what="the link lost")
    adapter.plug(OpenEvseEmulator())  # an attempt may be under way while close() runs
    link.close()
    assert not link._reader.is_alive()
    with pytest.raises(DeviceUnavailable):
        link.request("GV")


# --- the board --------------------------------------------------------------------------------------


def test_a_board_unplugged_reads_as_unavailable_and_plugged_back_as_its_state(adapter, devices):
    adapter.plug(OpenEvseEmulator())
    pilot, meter = devices("pilot"), devices("meter")
    until(lambda: safe_read(pilot) is not None, what="a first state")
    adapter.unplug()
    until(lambda: unavailable(pilot), what="the pilot unavailable")
    with pytest.raises(DeviceUnavailable):
        meter.board.submit("GG").result(timeout=5.0)
    second = OpenEvseEmulator()
    second.set_ev("B")  # so any state from the new tty reads B, the old one's A
    adapter.plug(second)
    until(lambda: not unavailable(pilot) and safe_read(pilot) is not None, what="a state from the new tty")
    assert pilot.read().high_v == 9.0


def test_after_a_replug_the_board_gets_the_offer_and_the_heartbeat_again(adapter, devices):
    first = adapter.plug(OpenEvseEmulator(current_a=32))
    pilot = devices("pilot", heartbeat_s=2)
    offer(first, pilot, 16)
    until(lambda: beat(pilot) and "SY 2 6" in first.commands, what="the heartbeat set up")
    adapter.unplug()
    until(lambda: unavailable(pilot), what="the pilot unavailable")
    # the board rebooted while away: enabled, at its stored 32 A, no heartbeat yet
    second = adapter.plug(OpenEvseEmulator(current_a=32))
    until(lambda: beat(pilot) and "SC 16 V" in second.commands and "FE" in second.commands
          and "SY 2 6" in second.commands, what="the offer and the heartbeat sent again")
    until(lambda: second.current_a == 16 and pilot.offered_current_a() == 16.0, what="16 A offered")
    assert second.hs_interval_s == 2 and second.hs_current_a == 6


def test_a_replug_sends_only_what_the_core_wishes_and_no_offer(adapter, devices):
    adapter.plug(OpenEvseEmulator(current_a=32))
    pilot, relay = devices("pilot"), devices("contactor")
    offer(adapter.boards[-1], pilot, 16)
    adapter.unplug()
    until(lambda: unavailable(pilot), what="the pilot unavailable")
    pilot.pwm_off()  # what the core does meanwhile: no offer, relay open
    relay.open()
    second = OpenEvseEmulator(current_a=32)
    second.set_ev("B")  # an EV waits at the board that boots enabled: its pilot offers by itself
    adapter.plug(second)
    until(lambda: second.mode == "sleeping", what="the board put to sleep")
    assert not any(c == "FE" or c.startswith("SC") for c in second.commands)
    assert not second.relay_closed and not relay.feedback_closed()
    pilot.pwm_on(duty_for_current(10))  # the core offers again: the board follows
    until(lambda: second.mode == "enabled" and second.current_a == 10, what="10 A offered")


def test_a_board_released_while_unplugged_leaves_no_thread_behind(adapter):
    adapter.plug(OpenEvseEmulator())
    pilot = openevse.pilot({"port": str(adapter.path), "reopen_s": 60.0}, Ctx())
    adapter.unplug()
    until(lambda: unavailable(pilot), what="the pilot unavailable")
    pilot.release()  # its $FS cannot go out: said in the log, and nothing waits for the port
    assert not pilot.board._worker.is_alive() and not pilot.board.link._reader.is_alive()
