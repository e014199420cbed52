"""The OpenEVSE backend against the RAPI board emulator on a pty: framing, outputs, state mapping,
meter, errors and async notifications. Real pyserial on a real pty; no mocks of the library."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

from evsed.config import backends
from evsed.core.pilot import PilotState, classify, current_for_duty, diode_present, duty_for_current
from hal import (Contactor, ContactorFeedback, DeviceUnavailable, FaultInput, Meter, Notifying, OfferedCurrent,
                 Pilot, TryAgain)
from hal import openevse, openevse_board, rapi
from hal.rapi import BoardState, FrameError, additive_checksum, decode, encode, pilot_reading, xor_checksum
from simulator import openevse_rapi as emu_mod
from simulator.openevse_rapi import OpenEvseEmulator


class Ctx:
    def __init__(self):
        self.connector_id, self.shared = 1, {}


@pytest.fixture
def emu():
    with OpenEvseEmulator(current_a=32, total_wh=1000) as board:
        yield board


@pytest.fixture
def devices(emu):
    ctx, made = Ctx(), []

    def make(kind, **options):
        device = getattr(openevse, kind)({"port": emu.port, **options}, ctx)
        made.append(device)
        return device

    yield make
    for device in made:
        device.release()


def until(predicate, timeout_s=3.0, what="condition"):
    """Wait for a condition the board reaches on its own; the timeout is a guard, not a pace."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        threading.Event().wait(0.01)


def offer(emu, pilot, amps):
    """pwm_on for amps, and wait until the board took it (it boots enabled, so wait for $FE)."""
    pilot.pwm_on(duty_for_current(amps))
    until(lambda: "FE" in emu.commands and emu.mode == "enabled" and emu.current_a == amps, what=f"{amps} A")


def safe_read(pilot):
    try:
        return pilot.read()
    except TryAgain:
        return None


# --- framing -------------------------------------------------------------------------------------


def test_checksums_match_the_examples_in_rapi_proc_h():
    assert additive_checksum("$FD") == 0xAE and additive_checksum("$FE") == 0xAF
    assert xor_checksum("$GS") == 0x30 and xor_checksum("$G0") == 0x53 and xor_checksum("$F0 1") == 0x43
    assert encode("GS") == b"$GS^30\r"
    assert encode("SC 16 V", seq=0x1A) == f"$SC 16 V :1A^{xor_checksum('$SC 16 V :1A'):02X}\r".encode()


def test_decode_takes_args_and_sequence_id_and_drops_leading_noise():
    body = "$OK 03 12 03 0140 :1A"
    frame = decode(f"\x00junk{body}^{xor_checksum(body):02X}")
    assert (frame.name, frame.args, frame.seq) == ("OK", ("03", "12", "03", "0140"), 0x1A)
    assert decode(f"$NK*{additive_checksum('$NK'):02X}").name == "NK"
    assert decode("$OK 1").args == ("1",)  # firmware before RAPI 2.0: no checksum


@pytest.mark.parametrize("line", ["$OK 1^00", "$OK 1^G1", "no frame at all", "$", b"$OK \xff^00"])
def test_decode_rejects_bad_frames(line):
    with pytest.raises(FrameError):
        decode(line)


def test_emulator_refuses_a_bad_checksum_and_takes_both_forms(emu):
    import serial

    with serial.Serial(emu.port, 115200, timeout=2.0) as port:
        port.write(b"$GS^31\r")  # the XOR is 30
        assert decode(port.read_until(b"\r")[:-1]).name == "NK"
        port.write(f"$GS*{additive_checksum('$GS'):02X}\r".encode())
        assert decode(port.read_until(b"\r")[:-1]).name == "OK"
        port.write(encode("GS"))  # boot-locked, as the release builds boot: state 00, vflag 4000
        assert decode(port.read_until(b"\r")[:-1]).args[::3] == ("00", "4000")


def test_answers_echo_the_sequence_id(emu):
    link = rapi.RapiLink(emu.port)
    try:
        first, second = link.request("GV"), link.request("GV")
        assert first.seq is not None and second.seq == first.seq + 1
    finally:
        link.close()


# --- outputs -------------------------------------------------------------------------------------


def test_board_is_put_to_sleep_when_opened(emu, devices):
    devices("pilot")
    until(lambda: emu.mode == "sleeping", what="$FS")
    outputs = [c for c in emu.commands if c[:2] in ("FE", "FS", "FD", "SC", "S4")]
    assert outputs[0] == "FS" and "FE" not in outputs


def test_pwm_on_sets_the_current_volatile_then_enables(emu, devices):
    pilot = devices("pilot")
    offer(emu, pilot, 16)
    sent = [c for c in emu.commands if c != "GS"]
    assert sent[-2:] == ["SC 16 V", "FE"]
    assert emu.eeprom_writes == 0


def test_pwm_off_sleeps_and_pwm_f_disables(emu, devices):
    pilot = devices("pilot")
    offer(emu, pilot, 10)
    pilot.pwm_f()
    until(lambda: emu.mode == "disabled", what="$FD")
    pilot.pwm_off()
    until(lambda: emu.mode == "sleeping", what="$FS")


def test_current_change_while_enabled_sends_only_sc(emu, devices):
    pilot = devices("pilot")
    offer(emu, pilot, 32)
    count = len(emu.commands)
    pilot.pwm_on(duty_for_current(20))
    until(lambda: emu.current_a == 20)
    assert "FE" not in emu.commands[count:]


def test_firmware_without_volatile_current_gets_plain_sc(devices):
    with OpenEvseEmulator(volatile_supported=False) as old:
        pilot = openevse.pilot({"port": old.port}, Ctx())
        try:
            pilot.pwm_on(duty_for_current(13))
            until(lambda: old.current_a == 13 and old.mode == "enabled")
            # three bare refusals in a row before it gives up on the V flag (one may be a bit error)
            assert ["SC 13 V"] * 3 + ["SC 13"] == [c for c in old.commands if c.startswith("SC")]
            assert old.eeprom_writes == 1
        finally:
            pilot.release()


@pytest.mark.parametrize("amps", [a for a in range(6, 81) if a != 52])
def test_whole_amperes_survive_the_duty_round_trip(amps):
    assert openevse.amps_for_duty(duty_for_current(amps)) == amps


def test_52_a_has_no_duty_of_its_own_and_is_offered_as_51_a():
    assert duty_for_current(52) == 85.0 and openevse.amps_for_duty(85.0) == 51


def test_amps_for_duty_never_offers_the_ev_more_than_the_duty_does():
    for tenth in range(80, 971):
        duty = tenth / 10
        amps = openevse.amps_for_duty(duty)
        assert current_for_duty(duty_for_current(amps)) <= current_for_duty(duty) + 1e-9, duty
        # rounded down, not further (2 A: IEC leaves no whole ampere between 51 A at 85 % and 53 A at 85.2 %)
        assert current_for_duty(duty_for_current(amps)) > current_for_duty(duty) - 2.0, duty


@pytest.mark.parametrize("duty", [0.0, 5.0, 7.9, 97.1, 100.0, float("nan")])
def test_duty_that_allows_no_charging_is_no_current(duty):
    assert openevse.amps_for_duty(duty) == 0


def test_released_board_is_left_asleep(emu):
    pilot = openevse.pilot({"port": emu.port}, Ctx())
    offer(emu, pilot, 16)
    pilot.release()
    assert emu.mode == "sleeping"


# --- state mapping -------------------------------------------------------------------------------

A, B, C, D, E, F = (PilotState.A, PilotState.B, PilotState.C, PilotState.D, PilotState.E, PilotState.F)
S = emu_mod


@pytest.mark.parametrize("evse_state, pilot_state, vflags, iec, diode", [
    (S.STATE_A, S.STATE_A, 0, A, False),
    (S.STATE_B, S.STATE_B, S.VF_EV_CONNECTED, B, True),
    (S.STATE_C, S.STATE_C, S.VF_EV_CONNECTED | S.VF_CHARGING_ON, C, True),
    (S.STATE_D, S.STATE_D, S.VF_EV_CONNECTED, D, True),
    # asleep the pilot state field is stale (Update() returns first): the flags tell
    (S.SLEEPING, S.STATE_A, 0, A, False),
    (S.SLEEPING, S.STATE_A, S.VF_EV_CONNECTED, B, False),  # plugged in while asleep
    (S.SLEEPING, S.STATE_C, S.VF_EV_CONNECTED, B, False),  # the EV left C after the stop
    (S.SLEEPING, S.STATE_C, 0, A, False),  # and was unplugged
    (S.SLEEPING, S.STATE_C, S.VF_EV_CONNECTED | S.VF_CHARGING_ON, C, False),  # the board waits for it
    (S.SLEEPING, None, S.VF_EV_CONNECTED, B, False),  # firmware without the pilot state field
    (S.SLEEPING, None, None, A, False),
    # auth-locked (steady +12 V, no PWM), awake: the pilot state field is live
    (S.STATE_B, S.STATE_C, S.VF_EV_CONNECTED | S.VF_AUTH_LOCKED, C, False),
    (S.STATE_B, S.STATE_B, S.VF_EV_CONNECTED | S.VF_AUTH_LOCKED, B, False),
    (S.STATE_A, S.STATE_A, S.VF_AUTH_LOCKED, A, False),
    (S.DISABLED, S.DISABLED, 0, F, False),
    (S.DIODE_CHECK_FAILED, S.STATE_C, 0, C, False),  # no -12 V low: the core's diode check trips
    *[(fault, fault, 0, F, False) for fault in S.FAULT_STATES if fault != S.DIODE_CHECK_FAILED],
])
def test_every_board_state_reads_as_its_iec_state(evse_state, pilot_state, vflags, iec, diode):
    reading = pilot_reading(BoardState(evse_state, pilot_state, vflags, 0.0))
    assert classify(reading.high_v) is iec
    if iec is not F:  # at -12 V steady there is no diode to check
        assert diode_present(reading.low_v) is diode


def test_unknown_state_is_no_reading():
    assert pilot_reading(BoardState(0x00, None, None, 0.0)) is None


@pytest.mark.parametrize("ev, iec", [("A", A), ("B", B), ("C", C), ("D", D)])
def test_ev_states_reach_the_reading_over_the_wire(emu, devices, ev, iec):
    pilot = devices("pilot")
    offer(emu, pilot, 16)
    emu.set_ev(ev)
    until(lambda: (r := safe_read(pilot)) is not None and classify(r.high_v) is iec, what=f"state {iec}")
    assert diode_present(pilot.read().low_v) is (iec is not A)


@pytest.mark.parametrize("fault", S.FAULT_STATES)
def test_fault_states_reach_the_reading_over_the_wire(emu, devices, fault):
    pilot, rcd = devices("pilot"), devices("rcd")
    offer(emu, pilot, 16)  # asleep, the firmware checks nothing: faults show on an awake board
    emu.set_ev("B")
    emu.set_fault(fault)
    want = B if fault == S.DIODE_CHECK_FAILED else F
    until(lambda: (r := safe_read(pilot)) is not None and classify(r.high_v) is want, what=f"fault {fault:02x}")
    assert rcd.tripped() is (fault in (S.GFCI_FAULT, S.NO_GROUND, S.GFI_TEST_FAILED))


def test_disabled_board_reads_as_f(emu, devices):
    pilot = devices("pilot")
    pilot.pwm_f()
    until(lambda: (r := safe_read(pilot)) is not None and classify(r.high_v) is F)


# --- contactor -----------------------------------------------------------------------------------


def test_feedback_follows_the_boards_relay(emu, devices):
    pilot, relay = devices("pilot"), devices("contactor")
    offer(emu, pilot, 16)
    emu.set_ev("C")
    until(lambda: relay.feedback_closed(), what="relay closed")
    relay.close()
    emu.set_ev("B")
    until(lambda: not relay.feedback_closed(), what="relay open")
    assert emu.mode == "enabled"  # the EV stopped; nothing was forced


def test_open_while_the_relay_is_closed_opens_it_at_once(emu, devices):
    pilot, relay = devices("pilot"), devices("contactor")
    offer(emu, pilot, 16)
    emu.set_ev("C")
    until(lambda: relay.feedback_closed())
    relay.close()
    count = len(emu.commands)
    relay.open()
    until(lambda: not relay.feedback_closed() and emu.mode == "sleeping", what="forced open, then asleep")
    sent = [c for c in emu.commands[count:] if c != "GS"]
    assert sent[:2] == ["FD", "FS"]


def test_relay_closed_without_consent_is_forced_open_after_the_grace(emu, devices):
    pilot, relay = devices("pilot", relay_grace_s=0.05), devices("contactor", relay_grace_s=0.05)
    offer(emu, pilot, 16)
    emu.set_ev("C")  # the board closes by itself; the core never calls close()
    until(lambda: "FD" in emu.commands, what="$FD")
    until(lambda: emu.mode == "sleeping" and not relay.feedback_closed())


def test_stuck_relay_reads_as_closed(emu, devices):
    pilot, relay = devices("pilot"), devices("contactor")
    offer(emu, pilot, 16)
    emu.set_fault(S.STUCK_RELAY)
    until(lambda: relay.feedback_closed(), what="stuck relay")


def test_board_leaving_its_mode_gets_it_again(emu, devices):
    pilot = devices("pilot")
    offer(emu, pilot, 16)
    count = len(emu.commands)
    emu.press_button()  # someone pressed the board's button: it went to sleep
    until(lambda: emu.mode == "enabled" and "FE" in emu.commands[count:], what="$FE again")


# --- meter -------------------------------------------------------------------------------------------


def test_meter_reads_current_voltage_and_energy(emu, devices):
    pilot, meter = devices("pilot", heartbeat_s=0), devices("meter", heartbeat_s=0)  # an hour passes
    offer(emu, pilot, 16)
    emu.set_ev("C")
    until(lambda: (r := safe_read(pilot)) is not None and classify(r.high_v) is C)
    emu.advance(3600)  # one hour at 16 A, 240 V: 3840 Wh
    reading = asyncio.run(meter.read())
    assert reading.current_a == (16.0,) and reading.voltage_v == (240.0,)
    assert reading.power_total_w == pytest.approx(3840.0)
    assert reading.energy_import_wh == 1000 + 3840
    emu.set_ev("A")  # the firmware adds the session to its total now: no double count
    until(lambda: (r := safe_read(pilot)) is not None and classify(r.high_v) is A)
    assert asyncio.run(meter.read()).energy_import_wh == 1000 + 3840


def test_meter_without_an_ammeter_is_unavailable(devices):
    with OpenEvseEmulator(ammeter=False) as bare:
        meter = openevse.meter({"port": bare.port}, Ctx())
        try:
            with pytest.raises(DeviceUnavailable, match="no ammeter"):
                asyncio.run(meter.read())
        finally:
            meter.release()


# --- errors ------------------------------------------------------------------------------------------


def test_nk_is_try_again_naming_the_command(emu, devices):
    meter = devices("meter")
    emu.nak_next.add("GG")
    with pytest.raises(TryAgain, match=r"refused \$GG"):
        asyncio.run(meter.read())
    assert asyncio.run(meter.read()).voltage_v == (240.0,)


def test_corrupt_answer_is_try_again_and_the_link_survives(emu, devices):
    meter = devices("meter")
    emu.corrupt_next.add("GG")
    with pytest.raises(TryAgain, match="corrupt answer"):
        asyncio.run(meter.read())
    assert asyncio.run(meter.read()).voltage_v == (240.0,)


def test_garbage_lines_are_counted_and_survived(emu, devices):
    meter = devices("meter")
    emu.send_raw(b"\x00\xffline noise\r$AT zz^00\r\n\r")
    assert asyncio.run(meter.read()).voltage_v == (240.0,)
    until(lambda: meter.board.link.garbage_lines >= 2, what="garbage counted")


def test_silent_board_is_try_again_and_the_state_goes_stale(emu, devices):
    pilot, meter = devices("pilot", stale_s=0.3, timeout_s=0.1), devices("meter", stale_s=0.3, timeout_s=0.1)
    until(lambda: safe_read(pilot) is not None)
    emu.mute = True
    with pytest.raises(TryAgain, match="no answer"):
        asyncio.run(meter.read())
    until(lambda: safe_read(pilot) is None, what="stale state")
    with pytest.raises(TryAgain, match="no state from the board"):
        pilot.read()
    emu.mute = False
    until(lambda: safe_read(pilot) is not None, what="recovery")


def test_rcd_and_feedback_keep_the_last_report_while_only_the_pilot_goes_stale(emu, devices):
    pilot = devices("pilot", stale_s=0.3, timeout_s=0.1)
    relay, rcd = devices("contactor", stale_s=0.3, timeout_s=0.1), devices("rcd", stale_s=0.3, timeout_s=0.1)
    offer(emu, pilot, 16)
    emu.set_ev("B")  # with no EV the board cancels a GFCI fault on its next round
    emu.set_fault(S.GFCI_FAULT)
    until(lambda: rcd.tripped(), what="GFCI trip")
    emu.mute = True
    until(lambda: safe_read(pilot) is None, what="stale state")
    assert rcd.tripped() and not relay.feedback_closed()  # no exception into the daemon's input poll


def test_missing_port_is_unavailable_naming_the_file():
    with pytest.raises(DeviceUnavailable, match=r"/dev/ttyEVSED-missing.*no such device file"):
        openevse.pilot({"port": "/dev/ttyEVSED-missing"}, Ctx())


@pytest.mark.skipif(os.geteuid() == 0, reason="root opens any file")
def test_port_without_permission_names_the_dialout_group(tmp_path):
    path = tmp_path / "ttyS9"
    path.touch(mode=0o000)
    with pytest.raises(DeviceUnavailable, match=r"ttyS9.*dialout"):
        openevse.pilot({"port": str(path)}, Ctx())


# --- notifications and sharing ----------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True], ids=["AT", "ST"])
def test_async_state_notification_calls_on_change(legacy):
    with OpenEvseEmulator(legacy_async=legacy, legacy_state=legacy) as board:
        # polls far apart: only the board's own notification can bring the change in time
        pilot = openevse.pilot({"port": board.port, "poll_interval_s": 2.0, "stale_s": 10.0}, Ctx())

        async def main():
            loop, changed = asyncio.get_running_loop(), asyncio.Event()
            pilot.on_change(lambda: loop.call_soon_threadsafe(changed.set))
            board.set_ev("B")
            await asyncio.wait_for(changed.wait(), timeout=1.5)

        try:
            offer(board, pilot, 16)  # enabled, so the EV's arrival changes the EVSE state itself
            asyncio.run(main())
            assert classify(pilot.read().high_v) is B
        finally:
            pilot.release()


def test_devices_share_one_link_per_port(emu):
    ctx = Ctx()
    made = [openevse.pilot({"port": emu.port}, ctx), openevse.contactor({"port": emu.port}, ctx),
            openevse.rcd({"port": emu.port}, ctx), openevse.meter({"port": emu.port}, ctx)]
    try:
        assert len({id(d.board) for d in made}) == 1
        with pytest.raises(DeviceUnavailable, match="timeout_s"):
            openevse.rcd({"port": emu.port, "timeout_s": 2.0}, ctx)
    finally:
        for device in made:
            device.release()
    assert made[0].board.closed


def test_devices_satisfy_the_hal_interfaces(emu, devices):
    pilot, relay, rcd, meter = devices("pilot"), devices("contactor"), devices("rcd"), devices("meter")
    assert isinstance(pilot, Pilot) and isinstance(pilot, Notifying)
    assert isinstance(relay, Contactor) and isinstance(relay, ContactorFeedback)
    assert isinstance(rcd, FaultInput) and isinstance(meter, Meter)


def test_registered_in_the_backend_registry(emu):
    ctx = backends.BackendContext(connector_id=1, shared={})
    for kind in ("pilot", "contactor", "rcd", "meter"):
        spec = backends.backend(kind, "openevse")
        assert spec.options["port"].default is backends.REQUIRED
        options = {k: (emu.port if k == "port" else o.default) for k, o in spec.options.items()}
        device = backends.create(kind, "openevse", options, ctx)
        device.release()


# --- as the firmware behaves (issue 14) -------------------------------------------------------------
# The emulator follows J1772EvseController.cpp, Gfi.cpp and EnergyMeter.cpp; time there is virtual.


def iec(pilot):
    reading = safe_read(pilot)
    return None if reading is None else classify(reading.high_v)


def charging(emu, pilot, relay, amps=16):
    offer(emu, pilot, amps)
    emu.set_ev("C")
    until(lambda: relay.feedback_closed(), what="relay closed")
    relay.close()


def settle(meter):
    """Every wish made so far has been through the worker: a request queued behind them returned."""
    asyncio.run(meter.read())


def crash(board):
    """evsed dies (kill -9): no $FS on the way out, no more heartbeat; the board is on its own."""
    board._stop.set()
    board._jobs.put(openevse_board._WAKE)
    board._worker.join()
    board.link.close()


def test_ev_plugged_in_while_the_board_sleeps_is_seen(emu, devices):
    pilot = devices("pilot")
    until(lambda: emu.mode == "sleeping" and iec(pilot) is A, what="asleep, no EV")
    emu.set_ev("B")  # the board's pilot state field stays A: Update() returns before it sets it
    until(lambda: iec(pilot) is B, what="the EV seen through the EV-connected flag")


def test_stop_under_load_reads_the_ev_leaving_c_and_then_the_unplug(emu, devices):
    pilot, relay = devices("pilot"), devices("contactor")
    charging(emu, pilot, relay)
    pilot.pwm_off()  # evsed's own stop: the board sleeps and waits for the EV to let go
    until(lambda: emu.mode == "sleeping", what="$FS")
    assert emu.relay_closed and iec(pilot) is C
    emu.set_ev("B")
    until(lambda: iec(pilot) is B and not relay.feedback_closed(), what="B, relay open")
    relay.open()
    emu.set_ev("A")
    until(lambda: iec(pilot) is A, what="the unplug")


def test_auth_lock_holds_the_board_out_of_c_awake():
    with OpenEvseEmulator(current_a=32, auth_lock=True) as board:
        ctx = Ctx()
        pilot, relay = openevse.pilot({"port": board.port}, ctx), openevse.contactor({"port": board.port}, ctx)
        try:
            until(lambda: pilot.board.firmware.has_auth_lock is not None)
            board.set_ev("C")  # no offer: locked, awake, steady +12 V, the EV's state read live
            until(lambda: iec(pilot) is C, what="C while locked")
            assert not diode_present(pilot.read().low_v) and not board.relay_closed
            assert board.mode == "enabled" and "FS" not in board.commands
            pilot.pwm_on(duty_for_current(16))
            until(lambda: relay.feedback_closed(), what="unlocked: the board closes")
            assert board.current_a == 16 and board.commands[-3:].count("S4 0") == 1
            relay.close()
            pilot.pwm_off()  # under load: sleep first, so the board waits for the EV
            until(lambda: board.mode == "sleeping")
            board.set_ev("B")
            until(lambda: board.mode == "enabled" and board.locked and iec(pilot) is B, what="locked again, awake")
            relay.open()
            board.set_ev("A")
            until(lambda: iec(pilot) is A)
        finally:
            pilot.release()
            relay.release()


def test_board_rebooted_unheard_gets_the_offer_back(emu, devices):
    pilot, relay = devices("pilot"), devices("contactor")
    charging(emu, pilot, relay, amps=16)
    emu.reboot(announce=False)  # the $AB was lost: it is back at its stored 32 A
    until(lambda: emu.current_a == 16, what="16 A restored")
    assert emu.eeprom_writes == 0


def test_bit_error_on_a_volatile_sc_never_drops_the_volatile_flag(emu, devices):
    pilot = devices("pilot")
    emu.garble_next.add("SC")  # the board sees a bad checksum and answers a bare $NK
    offer(emu, pilot, 13)
    assert not emu.garble_next and "SC 13" not in emu.commands  # asked again with V, not without
    pilot.pwm_on(duty_for_current(20))
    until(lambda: emu.current_a == 20)
    assert emu.eeprom_writes == 0 and emu.eeprom_current_a == 32


def test_plain_sc_never_raises_the_stored_maximum():
    with OpenEvseEmulator(current_a=24, volatile_supported=False) as old:
        pilot = openevse.pilot({"port": old.port}, Ctx())
        try:
            pilot.pwm_on(duty_for_current(32))
            until(lambda: old.mode == "enabled" and old.eeprom_writes == 1)
            assert old.eeprom_current_a == 24 and "SC 32" not in old.commands
        finally:
            pilot.release()


def test_energy_is_right_across_a_board_reboot(emu, devices):
    pilot, relay, meter = devices("pilot"), devices("contactor"), devices("meter")
    charging(emu, pilot, relay, amps=16)  # 16 A at 240 V: 3840 W
    start = asyncio.run(meter.read()).energy_import_wh
    emu.advance(20 * 3600 / 3840)  # 20 Wh
    assert asyncio.run(meter.read()).energy_import_wh == start + 20
    emu.reboot()  # the session counter restarts at 0; the total never had those 20 Wh
    until(lambda: emu.current_a == 16 and emu.relay_closed)
    emu.advance(15.6 * 3600 / 3840)  # 15.6 Wh more
    assert asyncio.run(meter.read()).energy_import_wh == start + 35


def test_unplug_during_a_meter_poll_counts_the_session_once(emu, devices):
    pilot, relay, meter = devices("pilot"), devices("contactor"), devices("meter")
    charging(emu, pilot, relay, amps=16)
    start = asyncio.run(meter.read()).energy_import_wh
    emu.advance(32 * 3600 / 3840)  # 32 Wh
    assert asyncio.run(meter.read()).energy_import_wh == start + 32
    emu.quiet = True  # the unplug lands between the board's answers and its $AT
    emu.before_answer["GU"] = lambda: emu.set_ev("A")
    assert asyncio.run(meter.read()).energy_import_wh == start + 32


def test_gfci_trip_is_counted_once_and_the_board_retries_it_itself(emu, devices):
    pilot, relay, rcd, meter = devices("pilot"), devices("contactor"), devices("rcd"), devices("meter")
    charging(emu, pilot, relay)
    emu.gfi_trip()  # a leakage pulse: the relay opens, the fault latches (Gfi.cpp)
    until(lambda: rcd.tripped(), what="GFCI fault")
    relay.open()  # what the core does: open, no offer
    pilot.pwm_off()
    sent = len(emu.commands)
    settle(meter)
    assert rcd.tripped() and not {"FS", "FE"} & set(emu.commands[sent:])
    emu.advance(300)  # GFI_TIMEOUT: the board resets the latch and comes out of the fault
    until(lambda: not rcd.tripped() and emu.mode == "sleeping", what="retried by the board, then asleep")
    assert emu.gfi_trip_count == 1


@pytest.mark.parametrize("auth_lock", [None, True], ids=["stock", "auth-lock"])
def test_nothing_enables_the_board_while_evsed_offers_nothing(auth_lock):
    offers = "S4 0" if auth_lock else "FE"  # what would let the board charge
    with OpenEvseEmulator(current_a=32, auth_lock=auth_lock) as board:
        ctx = Ctx()
        pilot, relay = openevse.pilot({"port": board.port}, ctx), openevse.contactor({"port": board.port}, ctx)
        meter = openevse.meter({"port": board.port}, ctx)
        try:
            pilot.pwm_off()
            settle(meter)  # asleep or locked before the EV comes
            board.set_ev("C")
            relay.close()  # a consent without an offer enables nothing
            settle(meter)
            assert not board.relay_closed and offers not in board.commands
            relay.open()
            board.reboot(announce=False)  # a stock board boots enabled and closes: taken back at once
            until(lambda: not board.relay_closed and board.evse_state in (S.SLEEPING, S.DISABLED, S.STATE_B))
            settle(meter)
            assert offers not in board.commands
        finally:
            for device in (pilot, relay, meter):
                device.release()


def test_board_capped_by_its_stored_maximum_reports_its_real_offer():
    with OpenEvseEmulator(current_a=24, max_current_a=40) as board:
        pilot = openevse.pilot({"port": board.port}, Ctx())
        try:
            assert isinstance(pilot, OfferedCurrent)
            pilot.pwm_on(duty_for_current(32))
            until(lambda: board.mode == "enabled" and pilot.offered_current_a() is not None)
            assert pilot.offered_current_a() == 24.0 and board.eeprom_current_a == 24
            pilot.pwm_off()
            until(lambda: pilot.offered_current_a() is None)
        finally:
            pilot.release()
