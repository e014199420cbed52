"""Garbage from devices is a value to handle: hypothesis feeds card-reader bytes, RAPI replies and
Modbus register answers to the parsers, which return a reading or raise the hal's own errors
(TryAgain, DeviceUnavailable, or the frame errors their callers count), never anything else."""

from __future__ import annotations

import asyncio
import contextlib
import math

import structlog
from hypothesis import given, strategies as st

from hal import HalError, MeterReading, TryAgain
from hal import rapi
from hal.meter_models import MODELS
from hal.modbus import ModbusMeter
from hal.rfid import Rdm6300Parser, rdm6300_frame
from hal.rfid_pn532 import parse_target

@contextlib.contextmanager
def captured_logs():
    """The parsers log what they reject; capture it without letting their module loggers cache
    this configuration (tests of the readers capture those loggers later)."""
    cache = structlog.get_config()["cache_logger_on_first_use"]
    structlog.configure(cache_logger_on_first_use=False)
    try:
        with structlog.testing.capture_logs() as entries:
            yield entries
    finally:
        structlog.configure(cache_logger_on_first_use=cache)


# --- card readers ---------------------------------------------------------------------------------------------

uids = st.binary(min_size=5, max_size=5).map(lambda b: b.hex().upper())


@given(st.lists(st.binary(max_size=64), max_size=20))
def test_rdm6300_any_bytes_give_only_well_formed_uids(chunks):
    parser = Rdm6300Parser()
    with captured_logs():
        for chunk in chunks:
            for uid in parser.feed(chunk):
                assert len(uid) == 10 and all(c in "0123456789ABCDEF" for c in uid)


@given(st.binary(max_size=64).filter(lambda b: 0x02 not in b), uids, st.binary(max_size=64),
       st.integers(min_value=0, max_value=80))
def test_rdm6300_a_good_frame_after_noise_is_read_however_the_bytes_are_split(noise, uid, after, cut):
    data = noise + rdm6300_frame(uid) + after
    parser = Rdm6300Parser()
    with captured_logs():
        got = parser.feed(data[:cut]) + parser.feed(data[cut:])
    assert got[:1] == [uid]


@given(st.binary(max_size=40))
def test_pn532_any_target_answer_is_a_uid_none_or_try_again(data):
    try:
        uid = parse_target(data)
    except TryAgain:
        return
    assert uid is None or len(uid) in (4, 7, 10)


# --- OpenEVSE RAPI ----------------------------------------------------------------------------------------------

rapi_like = st.one_of(
    st.binary(max_size=60),
    st.builds(lambda name, args: f"$OK {' '.join(args)}" if name == "OK" else f"${name} {' '.join(args)}",
              st.sampled_from(["OK", "NK", "AT", "ST", "GS", "GG", "GU", "WF"]),
              st.lists(st.text("0123456789abcdefxyz-+:^*", max_size=9), max_size=5)).map(str.encode),
    st.builds(lambda body: rapi.encode(body)[:-1], st.text("0123456789abcdef $ATSGK:", max_size=30)))


@given(rapi_like, st.sampled_from(["AT", "ST", "GS"]))
def test_rapi_any_reply_is_a_frame_or_a_frame_error_and_any_frame_a_state_or_try_again(line, name):
    try:
        frame = rapi.decode(line)
    except rapi.FrameError:
        return
    state_frame = rapi.Frame(name, frame.args, frame.seq)
    try:
        state = rapi.parse_state(state_frame, now=1.0)
    except TryAgain:
        return
    # whatever the numbers, the derived facts are plain booleans and the reading a reading or None
    assert {rapi.ev_connected(state), rapi.relay_closed(state), rapi.in_fault(state),
            rapi.auth_locked(state)} <= {True, False}
    reading = rapi.pilot_reading(state)
    assert reading is None or (math.isfinite(reading.high_v) and math.isfinite(reading.low_v))


# --- Modbus meters ----------------------------------------------------------------------------------------------

class RegisterBus:
    """A bus that answers every read with the registers hypothesis chose (what a garbled or
    confused meter sends); the transport itself is tested against pymodbus in test_modbus_meters."""

    name = "fuzz"

    def __init__(self, draw):
        self.lock = asyncio.Lock()
        self.draw = draw
        self.users = 0

    async def read(self, function_code, address, count, unit):
        return self.draw(count)


@given(st.sampled_from(sorted(MODELS)), st.data())
def test_modbus_any_register_answer_is_a_sane_reading_or_try_again(model, data):
    bus = RegisterBus(lambda n: data.draw(st.lists(st.integers(0, 0xFFFF), min_size=n, max_size=n)))
    meter = ModbusMeter(MODELS[model], bus, unit=1, clock=lambda: 0.0)  # type: ignore[arg-type]
    try:
        with captured_logs():
            reading = asyncio.run(meter.read())
    except HalError as exc:
        assert isinstance(exc, TryAgain), exc
        return
    assert isinstance(reading, MeterReading)
    assert isinstance(reading.energy_import_wh, int) and reading.energy_import_wh >= 0
    assert all(math.isfinite(v) for v in (reading.power_total_w, *reading.current_a, *reading.voltage_v))
