"""Card readers: RDM6300 and PN532 over a pty pair, the HID key decoder, RC522 with a fake chip,
the debounce (a held card is one tap) with a fake clock, and the start-up errors."""

import asyncio
import errno
import os
import select
import sys
import threading
import types

import pytest
from structlog.testing import capture_logs

from evsed.config import backends
from evsed.config.backends import BackendContext
from hal import DeviceUnavailable, TryAgain
from hal.rfid import (FAILURES_BEFORE_RAISE, PollingReader, Rdm6300Parser, rdm6300_checksum,
                      rdm6300_frame)
from hal.serialport import unavailable as serial_unavailable
from hal.rfid_hid import HidDecoder, uid_from_typed
from hal.rfid_pn532 import ACK, frame, parse_target

GUARD_S = 5.0  # a timeout that only a broken reader reaches; no test waits for it to pass


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def build(name: str, options: dict, clock=None):
    """Build a reader through the registry, as the daemon does (defaults from the schema)."""
    spec = backends.backend("rfid", name)
    full = {k: o.default for k, o in spec.options.items() if o.default is not backends.REQUIRED}
    full.update(options)
    shared = {"clock": clock} if clock else {}
    return backends.create("rfid", name, full, BackendContext(connector_id=0, shared=shared))


def taps(reader, count: int) -> list[str]:
    async def collect():
        return [await asyncio.wait_for(reader.next_tap(), GUARD_S) for _ in range(count)]
    return asyncio.run(collect())


@pytest.fixture
def pty_pair():
    master, slave = os.openpty()
    yield master, os.ttyname(slave)
    for fd in (master, slave):
        try:
            os.close(fd)
        except OSError:
            pass


# --- the polling worker shared by PN532 and RC522 ----------------------------------------


def test_polling_reader_raises_try_again_once_per_streak_then_reads_on():
    results = iter([TryAgain("no answer")] * (FAILURES_BEFORE_RAISE + 2) + ["DEADBEEF"])

    def poll():
        result = next(results, None)
        if isinstance(result, Exception):
            raise result
        return result

    reader = PollingReader("test", poll, interval_s=0.0, hold_off_s=1.0, clock=FakeClock())

    async def scenario():
        with pytest.raises(TryAgain):
            await asyncio.wait_for(reader.next_tap(), GUARD_S)
        return await asyncio.wait_for(reader.next_tap(), GUARD_S)
    try:
        with capture_logs() as logs:
            assert asyncio.run(scenario()) == "DEADBEEF"
    finally:
        reader.release()
    events = [e["event"] for e in logs]
    assert events.count("rfid.read_failed") == 1
    assert events.count("rfid.read_recovered") == 1


def test_polling_reader_reports_a_crashed_poll_as_unavailable():
    def poll():
        raise KeyError("driver bug")
    reader = PollingReader("test", poll, interval_s=0.0, hold_off_s=1.0)
    try:
        with capture_logs(), pytest.raises(DeviceUnavailable, match="reader stopped"):
            asyncio.run(asyncio.wait_for(reader.next_tap(), GUARD_S))
    finally:
        reader.release()


# --- RDM6300 ---------------------------------------------------------------------------


def test_rdm6300_checksum_is_the_xor_of_the_five_data_bytes():
    # 0x13 ^ 0x00 ^ 0x5D ^ 0x1D ^ 0xA5 = 0xF6, worked by hand
    assert rdm6300_checksum("13005D1DA5") == 0xF6
    assert rdm6300_frame("13005d1da5") == b"\x0213005D1DA5F6\x03"


def test_rdm6300_good_frame_gives_the_ten_hex_chars_as_uid(pty_pair):
    master, path = pty_pair
    reader = build("rdm6300", {"port": path})
    try:
        os.write(master, b"\x0213005d1da5F6\x03")
        assert taps(reader, 1) == ["13005D1DA5"]
    finally:
        reader.release()


def test_rdm6300_bad_checksum_and_garbage_are_logged_and_survived(pty_pair):
    master, path = pty_pair
    reader = build("rdm6300", {"port": path})
    try:
        with capture_logs() as logs:
            os.write(master, b"\x0213005D1DA5F7\x03")  # checksum off by one
            os.write(master, b"\xff\x00noise\r\n")  # line noise outside any frame
            os.write(master, b"\x02XYZ\x03")  # not hex, too short
            os.write(master, b"\x0213005D")  # truncated by the next STX
            os.write(master, rdm6300_frame("0F00B4A3E1"))
            assert taps(reader, 1) == ["0F00B4A3E1"]
        reasons = [e["reason"] for e in logs if e["event"] == "rfid.frame_rejected"]
        assert reasons == ["bad_checksum", "noise", "malformed", "truncated"]
    finally:
        reader.release()


def test_rdm6300_frame_split_across_writes_is_reassembled(pty_pair):
    master, path = pty_pair
    reader = build("rdm6300", {"port": path})
    try:
        whole = rdm6300_frame("13005D1DA5")
        for i in range(0, len(whole), 3):
            os.write(master, whole[i:i + 3])
        assert taps(reader, 1) == ["13005D1DA5"]
    finally:
        reader.release()


def test_rdm6300_parser_fed_byte_by_byte_finds_every_frame():
    parser = Rdm6300Parser()
    stream = rdm6300_frame("13005D1DA5") + b"\x03\x03" + rdm6300_frame("0F00B4A3E1")
    found = [uid for byte in stream for uid in parser.feed(bytes([byte]))]
    assert found == ["13005D1DA5", "0F00B4A3E1"]


def test_rdm6300_parser_rejects_an_overlong_frame_and_resynchronises():
    parser = Rdm6300Parser()
    assert parser.feed(b"\x02" + b"A" * 20 + rdm6300_frame("13005D1DA5")) == ["13005D1DA5"]
    assert parser.rejected == 2  # the overlong frame, then its tail as noise


def test_a_held_card_streaming_frames_is_one_tap_until_away_for_the_hold_off(pty_pair):
    master, path = pty_pair
    clock = FakeClock()
    reader = build("rdm6300", {"port": path, "hold_off_s": 1.0}, clock)
    card, other = rdm6300_frame("13005D1DA5"), rdm6300_frame("0F00B4A3E1")
    try:
        async def scenario():
            async def tap():
                return await asyncio.wait_for(reader.next_tap(), GUARD_S)
            os.write(master, card)
            got = [await tap()]
            # Still held 0.5 s later: its frames are swallowed; the other card shows they were read.
            clock.now += 0.5
            os.write(master, card + card + other)
            got.append(await tap())
            # 0.9 s after its last read: still the same tap, although 1.4 s after the first.
            clock.now += 0.9
            os.write(master, card + rdm6300_frame("00000000FF"))
            got.append(await tap())
            # Away for longer than the hold-off: a new tap.
            clock.now += 1.5
            os.write(master, card)
            got.append(await tap())
            return got
        assert asyncio.run(scenario()) == ["13005D1DA5", "0F00B4A3E1", "00000000FF", "13005D1DA5"]
    finally:
        reader.release()


def test_rdm6300_reader_unplugged_raises_device_unavailable(pty_pair):
    master, path = pty_pair
    reader = build("rdm6300", {"port": path})
    try:
        os.close(master)  # the slave side now reads EIO, as a USB serial adapter pulled out
        with pytest.raises(DeviceUnavailable, match="disconnected"):
            taps(reader, 1)
    finally:
        reader.release()


def test_missing_serial_port_is_device_unavailable_naming_the_file(tmp_path):
    missing = str(tmp_path / "ttyUSB9")
    with pytest.raises(DeviceUnavailable, match="ttyUSB9.*no such device file"):
        build("rdm6300", {"port": missing})


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_serial_port_without_permission_mentions_the_dialout_group(pty_pair):
    _, path = pty_pair
    os.chmod(path, 0)
    with pytest.raises(DeviceUnavailable, match="dialout"):
        build("rdm6300", {"port": path})


def test_serial_permission_error_mentions_the_dialout_group():
    import serial
    denied = serial.SerialException(errno.EACCES, "could not open port /dev/ttyAMA0: [Errno 13]")
    assert "dialout" in str(serial_unavailable(denied, "/dev/ttyAMA0", "rfid pn532"))


# --- PN532 over HSU --------------------------------------------------------------------


def test_pn532_frames_carry_length_and_data_checksums():
    # GetFirmwareVersion and SAMConfiguration(normal) as printed in the PN532 user manual.
    assert frame(bytes([0x02])) == bytes.fromhex("0000ff02fed4022a00")
    assert frame(bytes([0x14, 0x01])) == bytes.fromhex("0000ff03fdd4140117" "00")
    assert ACK == bytes.fromhex("0000ff00ff00")


def test_pn532_target_data_gives_the_nfcid():
    seven = bytes.fromhex("04a2246ac21c80")
    assert parse_target(bytes([1, 1, 0x00, 0x44, 0x00, 7]) + seven) == seven
    assert parse_target(bytes([0])) is None


class Pn532Emulator(threading.Thread):
    """A PN532 in HSU mode on the master side of a pty: answers each command frame with an
    ACK, then the response. cards: one NFCID (bytes) or None per InListPassiveTarget."""

    def __init__(self, master: int, cards: list, corrupt_first_poll: bool = False):
        super().__init__(daemon=True)
        self.master, self.cards, self.corrupt = master, list(cards), corrupt_first_poll
        self.commands: list[bytes] = []
        self.saw_wakeup = False
        self.stopping = threading.Event()
        self._buffer = b""

    def run(self):
        while not self.stopping.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if ready:
                try:
                    self._buffer += os.read(self.master, 256)
                except OSError:
                    return
                self._answer_complete_frames()

    def _answer_complete_frames(self):
        while True:
            start = self._buffer.find(b"\x00\xff")
            if start < 0 or len(self._buffer) < start + 4:
                return
            self.saw_wakeup |= b"\x55\x55" in self._buffer[:start]
            length = self._buffer[start + 2]
            end = start + 4 + length + 1
            if len(self._buffer) < end:
                return
            body = self._buffer[start + 4:end - 1]
            assert (self._buffer[start + 2] + self._buffer[start + 3]) & 0xFF == 0, "LCS"
            assert (sum(body) + self._buffer[end - 1]) & 0xFF == 0, "DCS"
            self._buffer = self._buffer[end:]
            assert body[0] == 0xD4
            self.commands.append(body[1:])
            os.write(self.master, bytes.fromhex("0000ff00ff00"))
            os.write(self.master, self._response(body[1], body[2:]))

    def _response(self, code: int, params: bytes) -> bytes:
        data = {0x14: b"", 0x02: bytes([0x32, 0x01, 0x06, 0x07]), 0x32: b""}.get(code)
        if code == 0x4A:
            uid = self.cards.pop(0) if self.cards else None
            data = b"\x00" if uid is None else bytes([1, 1, 0x00, 0x44, 0x00, len(uid)]) + uid
        body = bytes([0xD5, code + 1]) + data
        dcs = -sum(body) & 0xFF
        if code == 0x4A and self.corrupt:
            self.corrupt, dcs = False, dcs ^ 0x5A
        return bytes([0, 0, 0xFF, len(body), -len(body) & 0xFF]) + body + bytes([dcs, 0])


def test_pn532_emulator_on_a_pty_reads_the_card_uid(pty_pair):
    master, path = pty_pair
    uid = bytes.fromhex("04a2246ac21c80")
    emulator = Pn532Emulator(master, [None, None, uid, uid, uid])
    emulator.start()
    reader = build("pn532", {"port": path, "poll_interval_s": 0.001})
    try:
        assert taps(reader, 1) == ["04A2246AC21C80"]
    finally:
        reader.release()
        emulator.stopping.set()
        emulator.join()
    assert emulator.saw_wakeup
    assert [c[0] for c in emulator.commands[:3]] == [0x14, 0x02, 0x32]
    assert emulator.commands[0] == bytes([0x14, 0x01, 0x14, 0x01])  # SAM normal mode
    assert emulator.commands[3] == bytes([0x4A, 0x01, 0x00])  # one target, 106 kbps type A


def test_pn532_corrupt_response_is_logged_and_the_next_poll_reads_the_card(pty_pair):
    master, path = pty_pair
    uid = bytes.fromhex("deadbeef")
    emulator = Pn532Emulator(master, [uid, uid], corrupt_first_poll=True)
    emulator.start()
    reader = build("pn532", {"port": path, "poll_interval_s": 0.001})
    try:
        with capture_logs() as logs:
            assert taps(reader, 1) == ["DEADBEEF"]
    finally:
        reader.release()
        emulator.stopping.set()
        emulator.join()
    assert any(e["event"] == "rfid.read_failed" and "checksum" in e["error"] for e in logs)


def test_pn532_that_never_answers_fails_at_start_with_wiring_hints(pty_pair):
    _, path = pty_pair
    with pytest.raises(DeviceUnavailable, match="no PN532 answered.*TX and RX"):
        build("pn532", {"port": path})


# --- HID (keyboard-emulating USB readers) ------------------------------------------------

KEYS = {"0": 11, "1": 2, "2": 3, "3": 4, "4": 5, "5": 6, "6": 7, "7": 8, "8": 9, "9": 10,
        "A": 30, "B": 48, "C": 46, "D": 32, "E": 18, "F": 33, "\n": 28, "x": 45}
EV_SYN, EV_KEY, EV_MSC, LEFTSHIFT = 0, 1, 4, 42


def typed(text: str, shift: bool = False):
    """evdev events as a keyboard reader sends them: MSC scan, key down, SYN, key up, SYN."""
    for char in text:
        if shift and char.isalpha():
            yield EV_KEY, LEFTSHIFT, 1
        yield EV_MSC, 4, 0x70000
        yield EV_KEY, KEYS[char], 1
        yield EV_SYN, 0, 0
        yield EV_KEY, KEYS[char], 0
        yield EV_SYN, 0, 0
        if shift and char.isalpha():
            yield EV_KEY, LEFTSHIFT, 0


def decode(decoder: HidDecoder, events) -> list[str]:
    return [uid for event in events if (uid := decoder.feed(*event)) is not None]


def test_hid_decimal_reader_gives_the_number_as_big_endian_hex():
    assert decode(HidDecoder("decimal"), typed("0012345678\n")) == ["00BC614E"]


def test_hid_decimal_lsb_first_reader_matches_the_uid_an_rc522_reads():
    assert decode(HidDecoder("decimal", "lsb"), typed("4022250974\n")) == ["DEADBEEF"]


def test_hid_hex_reader_with_shifted_letters():
    assert decode(HidDecoder("hex"), typed("04A2246AC21C80\n", shift=True)) == ["04A2246AC21C80"]


def test_hid_line_with_a_stray_key_is_rejected_and_the_next_line_read():
    decoder = HidDecoder("decimal")
    with capture_logs() as logs:
        assert decode(decoder, typed("12x34\n\n0012345678\n")) == ["00BC614E"]
    assert [e["event"] for e in logs] == ["rfid.frame_rejected", "rfid.frame_rejected"]
    assert decoder.rejected == 2  # the stray key, the empty line


def test_hid_autorepeat_is_ignored():
    events = [(EV_KEY, KEYS["7"], 1), (EV_KEY, KEYS["7"], 2), (EV_KEY, KEYS["7"], 0),
              (EV_KEY, KEYS["\n"], 1)]
    assert decode(HidDecoder("decimal"), events) == ["00000007"]


def test_typed_uid_conversion_rejects_non_digits():
    with pytest.raises(ValueError):
        uid_from_typed("12AB", "decimal")
    assert uid_from_typed("abc", "hex") == "0ABC"


def test_hid_without_evdev_is_device_unavailable_naming_evdev(monkeypatch):
    monkeypatch.setitem(sys.modules, "evdev", None)
    with pytest.raises(DeviceUnavailable, match="evdev"):
        build("hid", {"device": "/dev/input/event0"})


class FakeInputDevice:
    """Stands in for evdev.InputDevice (not installable here): a pipe gives it a real fd for
    loop.add_reader; read() hands out the queued events."""

    devices: dict = {}

    def __init__(self, path):
        if path not in self.devices:
            raise FileNotFoundError(errno.ENOENT, "No such file", path)
        self.path, self.name = path, self.devices[path]
        self._r, self._w = os.pipe()
        self.fd, self.grabbed, self._events = self._r, False, []

    def capabilities(self):
        return {EV_KEY: [2, 3, 28]}

    def grab(self):
        self.grabbed = True

    def type_(self, events):
        self._events += [types.SimpleNamespace(type=t, code=c, value=v) for t, c, v in events]
        os.write(self._w, b"x")

    def read(self):
        os.read(self._r, 64)
        events, self._events = self._events, []
        return iter(events)

    def close(self):
        for fd in (self._r, self._w):
            os.close(fd)


@pytest.fixture
def fake_evdev(monkeypatch):
    FakeInputDevice.devices = {"/dev/input/event3": "AT keyboard",
                               "/dev/input/event7": "Sycreader USB Reader"}
    module = types.SimpleNamespace(InputDevice=FakeInputDevice,
                                   list_devices=lambda: sorted(FakeInputDevice.devices))
    monkeypatch.setitem(sys.modules, "evdev", module)


def test_hid_reader_found_by_name_is_grabbed_and_reads_taps(fake_evdev):
    reader = build("hid", {"name": "usb reader", "format": "decimal"})
    try:
        device = reader._device
        assert (device.path, device.grabbed) == ("/dev/input/event7", True)

        async def scenario():
            asyncio.get_running_loop().call_soon(device.type_, list(typed("0012345678\n")))
            return await asyncio.wait_for(reader.next_tap(), GUARD_S)
        assert asyncio.run(scenario()) == "00BC614E"
    finally:
        reader.release()


def test_hid_device_not_found_lists_the_devices_seen(fake_evdev):
    with pytest.raises(DeviceUnavailable, match="AT keyboard"):
        build("hid", {"name": "nfc"})
    with pytest.raises(DeviceUnavailable, match="event9: no such device file"):
        build("hid", {"device": "/dev/input/event9"})


# --- RC522 ----------------------------------------------------------------------------


def test_rc522_without_mfrc522_is_device_unavailable_naming_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "mfrc522", None)
    with pytest.raises(DeviceUnavailable, match="pip install mfrc522"):
        build("rc522", {})


class FakeMfrc522:
    """Stands in for mfrc522.MFRC522 (which needs SPI hardware): plays a script of cards,
    one entry per poll, each poll taking 0.1 s of the fake clock."""

    MI_OK, MI_NOTAGERR, MI_ERR = 0, 1, 2
    PICC_REQIDL, PICC_REQALL, PCD_TRANSCEIVE = 0x26, 0x52, 0x0C
    BitFramingReg, VersionReg = 0x0D, 0x37
    script: list = []
    clock: FakeClock = FakeClock()
    version = 0x92
    built: list = []

    def __init__(self, bus=0, device=0, spd=1000000, pin_mode=10, pin_rst=-1, debugLevel="WARNING"):
        self.args = dict(bus=bus, device=device, pin_mode=pin_mode, pin_rst=pin_rst)
        self.card = None
        self.spi = types.SimpleNamespace(close=lambda: None)
        FakeMfrc522.built.append(self)

    def Read_MFRC522(self, register):
        assert register == self.VersionReg
        return self.version

    def Write_MFRC522(self, register, value):
        pass

    def MFRC522_Request(self, mode):
        assert mode == self.PICC_REQALL
        self.clock.now += 0.1
        self.card = self.script.pop(0) if self.script else None
        return (self.MI_OK, 0x10) if self.card else (self.MI_ERR, 0)

    def MFRC522_Anticoll(self):
        level1 = list(self.card[:4]) if len(self.card) == 4 else [0x88] + list(self.card[:3])
        return self.MI_OK, level1 + [level1[0] ^ level1[1] ^ level1[2] ^ level1[3]]

    def MFRC522_SelectTag(self, uid):
        return 0x04  # SAK: UID not complete

    def MFRC522_ToCard(self, command, data):
        assert data == [0x95, 0x20]
        level2 = list(self.card[3:7])
        return self.MI_OK, level2 + [level2[0] ^ level2[1] ^ level2[2] ^ level2[3]], 40


@pytest.fixture
def fake_mfrc522(monkeypatch):
    FakeMfrc522.script, FakeMfrc522.clock, FakeMfrc522.version = [], FakeClock(), 0x92
    FakeMfrc522.built = []
    monkeypatch.setitem(sys.modules, "mfrc522", types.SimpleNamespace(MFRC522=FakeMfrc522))
    return FakeMfrc522


def test_rc522_polls_and_a_held_card_is_one_tap(fake_mfrc522):
    a, b = bytes.fromhex("deadbeef"), bytes.fromhex("04a2246ac21c80")
    # A held 1 s, lifted 0.5 s (shorter than the hold-off: same tap), held again, away
    # 1.2 s (a new tap when back), then a 7-byte card read through cascade level 2.
    fake_mfrc522.script = [a] * 10 + [None] * 5 + [a] * 5 + [None] * 12 + [a] * 3 + [b] * 3
    reader = build("rc522", {"poll_interval_s": 0.0, "hold_off_s": 1.0}, fake_mfrc522.clock)
    try:
        assert taps(reader, 3) == ["DEADBEEF", "DEADBEEF", "04A2246AC21C80"]
    finally:
        reader.release()
    assert fake_mfrc522.built[0].args == dict(bus=0, device=0, pin_mode=11, pin_rst=25)


def test_rc522_that_does_not_answer_on_spi_fails_at_start(fake_mfrc522):
    fake_mfrc522.version = 0x00
    with pytest.raises(DeviceUnavailable, match="no MFRC522 answers on /dev/spidev0.1"):
        build("rc522", {"spi_device": 1})


# --- config ---------------------------------------------------------------------------

CONFIG = """
[[connector]]
[connector.pilot]
backend = "sim"
[connector.contactor]
backend = "sim"

[rfid]
backend = "rdm6300"
port = "/dev/ttyUSB0"
{extra}
"""


def test_rfid_options_are_checked_at_config_load_with_defaults_filled():
    from evsed.config import parse
    rfid = parse(CONFIG.format(extra=""), "evsed.toml").rfid
    assert (rfid.backend, dict(rfid.options)) == (
        "rdm6300", {"port": "/dev/ttyUSB0", "baudrate": 9600, "hold_off_s": 1.0})


def test_a_misspelt_rfid_option_is_a_config_error_naming_the_line():
    from evsed.config import ConfigError, parse
    expected = r"evsed.toml:11: \[rfid\] hold_of_s: unknown key \(did you mean 'hold_off_s'\?\)"
    with pytest.raises(ConfigError, match=expected):
        parse(CONFIG.format(extra="hold_of_s = 2"), "evsed.toml")
