"""Modbus meters against the project's meter emulator (simulator.modbus_meter, a real pymodbus
server): TCP on loopback and RTU over a pty pair.

Each model's table is served as registers encoded from known values; the backend must read
them back in V, A, W, integer Wh and Hz, and report faults as TryAgain / DeviceUnavailable.
"""

from __future__ import annotations

import asyncio
import math
import re
from pathlib import Path

import pytest
from pymodbus.constants import ExcCodes

from evsed import config
from evsed.config import backends
from evsed.config.backends import BackendContext
from hal import DeviceUnavailable, Meter, MeterIdentity, TryAgain
from hal.meter_models import MODELS, MeterModel, blocks
from hal.modbus import modbus_meter
from simulator.modbus_meter import KNOWN, SimulatedMeter, null_modem, rtu_server, tcp_server

TIMEOUT_S = 0.2


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def expected(model: MeterModel) -> dict:
    has = model.quantities()
    phases = model.phases
    total = KNOWN["power_total_w"]
    shared = {f.address for f in model.fields if f.quantity == "power_w"}
    if any(f.quantity == "power_total_w" and f.address in shared for f in model.fields):
        total = KNOWN["power_w"][0]  # a single-phase meter's only power register
    return {
        "energy_import_wh": KNOWN["energy_import_wh"],
        "power_total_w": pytest.approx(total, rel=1e-6),
        "voltage_v": pytest.approx(KNOWN["voltage_v"][:phases], rel=1e-6) if "voltage_v" in has else (),
        "current_a": pytest.approx(KNOWN["current_a"][:phases], rel=1e-6) if "current_a" in has else (),
        "power_w": pytest.approx(KNOWN["power_w"][:phases], rel=1e-6) if "power_w" in has else (),
        "frequency_hz": pytest.approx(KNOWN["frequency_hz"], rel=1e-6) if "frequency_hz" in has else None,
    }


def as_dict(reading) -> dict:
    return {k: getattr(reading, k) for k in
            ("energy_import_wh", "power_total_w", "voltage_v", "current_a", "power_w", "frequency_hz")}


def options(model: str, **kw) -> dict:
    spec = backends.backend("meter", "modbus")
    opts = {k: o.default for k, o in spec.options.items()}
    opts.update(model=model, timeout_s=TIMEOUT_S, **kw)
    return opts


def tcp(model: str, port: int) -> dict:
    return options(model, transport="tcp", host="127.0.0.1", tcp_port=port)


def ctx() -> BackendContext:
    return BackendContext(connector_id=1, shared={})


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


# --- every model reads back what it serves -------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_reads_known_values_over_tcp(name):
    async def scenario():
        async with tcp_server(SimulatedMeter(MODELS[name])) as port:
            meter = modbus_meter(tcp(name, port), ctx())
            assert isinstance(meter, Meter)
            reading = await meter.read()
            meter.release()
            return reading

    reading = run(scenario())
    assert isinstance(reading.energy_import_wh, int)
    assert as_dict(reading) == expected(MODELS[name])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_reads_known_values_over_rtu(name):
    async def scenario():
        async with rtu_server(SimulatedMeter(MODELS[name], unit=7)) as port:
            # a pty takes no parity (EINVAL): the line runs 8N1 whatever the model's default
            meter = modbus_meter(options(name, port=port, unit=7, parity="N"), ctx())
            reading = await meter.read()
            meter.release()
            return reading

    assert as_dict(run(scenario())) == expected(MODELS[name])


def test_every_model_names_its_source_document():
    for model in MODELS.values():
        assert len(model.source) > 20, model.name
        assert model.function_code in (3, 4) and model.word_order in ("big", "little")
        assert {"energy_import_wh", "power_total_w"} <= model.quantities()


def test_reads_cover_only_mapped_registers_in_few_requests():
    for model in MODELS.values():
        reads = blocks(model)
        covered = {a for start, count, _ in reads for a in range(start, start + count)}
        mapped = {a for f in model.fields for a in range(f.address, f.address + f.count)}
        assert covered == mapped, model.name
        assert len(reads) <= 5, model.name


# --- what a meter tells of itself (OCMF MV, MM, MS) ------------------------------------------------


def test_every_model_names_its_vendor_and_product_and_a_serial_register_its_source():
    for model in MODELS.values():
        assert model.vendor and model.product, model.name
        assert model.serial is None or (len(model.serial.source) > 20 and model.serial.type.startswith("uint"))


@pytest.mark.parametrize("name", sorted(n for n, m in MODELS.items() if m.serial is not None))
def test_a_model_with_a_serial_register_tells_the_serial_it_reads_over_rtu(name):
    log: list = []

    async def scenario():
        async with rtu_server(SimulatedMeter(MODELS[name], unit=7, log=log, serial=21_045_678)) as port:
            meter = modbus_meter(options(name, port=port, unit=7, parity="N"), ctx())
            told = await meter.identity()
            meter.release()
            return told

    model = MODELS[name]
    assert run(scenario()) == MeterIdentity(model.vendor, model.product, "21045678")
    assert log == [(7, 3, 0xFC00, 2)]  # holding registers, though the readings are input registers


def test_a_model_without_a_serial_register_tells_its_name_without_asking_the_meter():
    log: list = []

    async def scenario():
        async with tcp_server(SimulatedMeter(MODELS["em340"], log=log)) as port:
            meter = modbus_meter(tcp("em340", port), ctx())
            told = await meter.identity()
            meter.release()
            return told

    assert run(scenario()) == MeterIdentity("Carlo Gavazzi", "EM340") and log == []


@pytest.mark.parametrize("serial, problem", [
    (None, r"sdm120 on 127\.0\.0\.1:\d+ unit 1: serial number register 0xfc00: .*exception 2 \(illegal data address\)"),
    (0, r"reads 0x0, no serial"),
    (0xFFFFFFFF, r"reads 0xffffffff, no serial")])
def test_a_serial_the_meter_lacks_or_never_set_is_left_out_saying_why(serial, problem):
    async def scenario():
        async with tcp_server(SimulatedMeter(MODELS["sdm120"], serial=serial)) as port:
            meter = modbus_meter(tcp("sdm120", port), ctx())
            told = await meter.identity()
            reading = await meter.read()  # the meter reads on all the same
            meter.release()
            return told, reading

    told, reading = run(scenario())
    assert (told.vendor, told.model, told.serial) == ("Eastron", "SDM120-Modbus", "")
    assert re.search(problem, told.problem), told.problem
    assert reading.energy_import_wh == KNOWN["energy_import_wh"]


# --- one RS-485 bus, two meters ------------------------------------------------------------------


def test_two_meters_on_one_rtu_bus_never_interleave_frames():
    log: list = []
    charger = SimulatedMeter(MODELS["sdm630"], unit=1, log=log)
    site = SimulatedMeter(MODELS["em340"], unit=2, log=log)

    async def scenario():
        async with rtu_server(charger, site) as port:
            shared = ctx()
            m1 = modbus_meter(options("sdm630", port=port, unit=1), shared)
            m2 = modbus_meter(options("em340", port=port, unit=2), shared)
            assert m1.bus is m2.bus
            results = await asyncio.gather(*(m.read() for _ in range(5) for m in (m1, m2)))
            m1.release()
            m2.release()
            return results

    results = run(scenario())
    assert all(as_dict(r) == expected(MODELS["sdm630"]) for r in results[0::2])
    assert all(as_dict(r) == expected(MODELS["em340"]) for r in results[1::2])
    runs: list[list] = []
    for entry in log:
        if runs and runs[-1][-1][0] == entry[0]:
            runs[-1].append(entry)
        else:
            runs.append([entry])
    per_read = {1: len(blocks(MODELS["sdm630"])), 2: len(blocks(MODELS["em340"]))}
    assert all(len(r) % per_read[r[0][0]] == 0 for r in runs), runs
    assert len(runs) > 2  # the two meters did take turns


def test_meters_on_one_port_must_agree_on_serial_settings():
    shared = ctx()
    modbus_meter(options("sdm630", port="/dev/ttyS9", unit=1), shared)
    with pytest.raises(DeviceUnavailable, match="same settings"):
        modbus_meter(options("sdm630", port="/dev/ttyS9", unit=2, baudrate=19200), shared)


# --- faults --------------------------------------------------------------------------------------


def test_unit_not_answering_is_try_again_naming_the_unit():
    async def scenario():
        async with rtu_server(SimulatedMeter(MODELS["sdm630"], unit=1)) as port:
            meter = modbus_meter(options("sdm630", port=port, unit=9), ctx())
            with pytest.raises(TryAgain, match=r"unit 9.*no answer"):
                await meter.read()

    run(scenario())


def test_silent_rtu_line_is_try_again():
    async def scenario():
        async with null_modem() as (_nobody, port):
            meter = modbus_meter(options("abb-b23", port=port), ctx())
            with pytest.raises(TryAgain, match="no answer"):
                await meter.read()

    run(scenario())


def test_modbus_exception_response_is_try_again_with_context():
    sim = SimulatedMeter(MODELS["iem3155"])
    sim.exception = ExcCodes.DEVICE_BUSY

    async def scenario():
        async with tcp_server(sim) as port:
            meter = modbus_meter(tcp("iem3155", port), ctx())
            with pytest.raises(TryAgain, match=r"127\.0\.0\.1:\d+ unit 1: FC3 .* exception 6 \(server device busy\)"):
                await meter.read()

    run(scenario())


def test_nan_value_is_try_again_naming_the_quantity():
    sim = SimulatedMeter(MODELS["sdm630"])
    sim.set("voltage_v", 2, math.nan)

    async def scenario():
        async with tcp_server(sim) as port:
            meter = modbus_meter(tcp("sdm630", port), ctx())
            with pytest.raises(TryAgain, match="voltage_v L2"):
                await meter.read()

    run(scenario())


def test_abb_not_available_marker_is_try_again():
    sim = SimulatedMeter(MODELS["abb-b23"])
    sim.set_raw("current_a", 3, [0xFFFF, 0xFFFF])

    async def scenario():
        async with tcp_server(sim) as port:
            meter = modbus_meter(tcp("abb-b23", port), ctx())
            with pytest.raises(TryAgain, match="current_a L3"):
                await meter.read()

    run(scenario())


@pytest.mark.parametrize("name, words", [
    ("sdm630", None),  # an Eastron variant without the register answers 0.0 there
    ("abb-b23", [0xFFFF]),  # ABB's "not available"
    ("em340", [0x7FFF]),  # Carlo Gavazzi's int16 overflow marker
    ("sdm120", [0x7FC0, 0x0000]),  # NaN
])
def test_a_frequency_the_meter_does_not_measure_is_absent_not_0_hz(name, words):
    sim = SimulatedMeter(MODELS[name])
    if words is None:
        sim.set("frequency_hz", 0, 0.0)
    else:
        sim.set_raw("frequency_hz", 0, words)

    async def scenario():
        async with tcp_server(sim) as port:
            meter = modbus_meter(tcp(name, port), ctx())
            reading = await meter.read()
            meter.release()
            return reading

    reading = run(scenario())
    assert reading.frequency_hz is None
    assert reading.energy_import_wh == KNOWN["energy_import_wh"]  # the rest of the reading stands


def test_counter_that_comes_back_lower_is_reported_as_read():
    # Plausibility is judged once, in evsed (which re-baselines); the backend reports the meter.
    sim = SimulatedMeter(MODELS["sdm630"])

    async def scenario():
        async with tcp_server(sim) as port:
            meter = modbus_meter(tcp("sdm630", port), ctx())
            first = await meter.read()
            sim.set("energy_import_wh", 0, 1_234_000)
            lower = await meter.read()
            meter.release()
            return first, lower

    first, lower = run(scenario())
    assert (first.energy_import_wh, lower.energy_import_wh) == (1_234_500, 1_234_000)


def test_abb_b21_reads_its_power_from_the_total_not_the_unsupported_l1_register():
    # A B21 answers 0x7FFFFFFF ("not supported") at 5B16h, the three-phase models' L1 power.
    sim = SimulatedMeter(MODELS["abb-b21"])
    sim.registers.update({0x5B16: 0x7FFF, 0x5B17: 0xFFFF})
    sim.set("power_total_w", 0, 3201.5)

    async def scenario():
        async with tcp_server(sim) as port:
            meter = modbus_meter(tcp("abb-b21", port), ctx())
            reading = await meter.read()
            meter.release()
            return reading

    reading = run(scenario())
    assert reading.power_w == pytest.approx((3201.5,)) and reading.power_total_w == pytest.approx(3201.5)


@pytest.mark.parametrize("name, quantity, phase", [
    ("em340", "current_a", 1), ("em340", "energy_import_wh", 0),
    ("eem-350-d-mcb", "voltage_v", 2), ("eem-350-d-mcb", "energy_import_wh", 0),
])
def test_int32_overflow_marker_is_never_a_reading(name, quantity, phase):
    sim = SimulatedMeter(MODELS[name])
    sim.set_raw(quantity, phase, [0xFFFF, 0x7FFF])  # 7FFFFFFFh, low word first

    async def scenario():
        async with tcp_server(sim) as port:
            meter = modbus_meter(tcp(name, port), ctx())
            with pytest.raises(TryAgain, match=f"{quantity}{f' L{phase}' if phase else ''}"):
                await meter.read()
            meter.release()

    run(scenario())


@pytest.mark.parametrize("name, quantity, address, type_", [
    ("finder-7m38", "energy_import_wh", 2752, "float32"),  # Finder guide, mbmd finder7m38.go
    ("finder-7m38", "frequency_hz", 2498, "float32"),  # Finder's 7M tutorial
    ("iem3155", "energy_import_wh", 3203, "int64"),  # DOCA0005EN register 3204, Wh; mbmd iem3000.go
    ("abb-b21", "power_w", 0x5B14, "int32"),  # ABB B2x manual: total power; 5B16h is L1 of 3-phase
])
def test_register_maps_follow_their_sources(name, quantity, address, type_):
    (field,) = [f for f in MODELS[name].fields if f.quantity == quantity]
    assert (field.address, field.type, field.scale) == (address, type_, 1.0 if name != "abb-b21" else 0.01)


def test_iem3155_energy_comes_from_the_64_bit_wh_counter():
    sim = SimulatedMeter(MODELS["iem3155"])
    sim.registers.update(zip(range(3203, 3207), (0, 0, 0x0012, 0xD687)))  # 1_234_567 Wh

    async def scenario():
        async with tcp_server(sim) as port:
            meter = modbus_meter(tcp("iem3155", port), ctx())
            reading = await meter.read()
            meter.release()
            return reading

    assert run(scenario()).energy_import_wh == 1_234_567


@pytest.mark.parametrize("name, baudrate, parity", [
    ("or-we-516", 9600, "E"), ("or-we-517", 9600, "E"),  # a WE-516 seen answering only at 8E1 (mbmd #273)
    ("sdm72d", 9600, "N"),  # SDM72D-M User Manual V1.1 p.3 and p.15, V1.5 p.15: no parity, not even
    ("sdm630", 9600, "N"),  # SDM630Modbus Protocol V1.8 section 1.3.1: registers 40019 and 40029
    ("sdm120", 2400, "N"),  # SDM120Modbus Protocol V2.4 p.7: registers 40019 and 40029
    ("iem3155", 19200, "E"),  # Tasmota's iEM3000 driver: 19200 baud, and the parity must be set to none
])
def test_serial_line_defaults_to_the_models_factory_setting(name, baudrate, parity):
    meter = modbus_meter(options(name, port="/dev/ttyS9"), ctx())
    assert (meter.bus.settings["baudrate"], meter.bus.settings["parity"]) == (baudrate, parity)
    given = modbus_meter(options(name, port="/dev/ttyS8", parity="E", baudrate=19200), ctx()).bus.settings
    assert (given["baudrate"], given["parity"]) == (19200, "E")


def test_every_model_says_where_its_factory_serial_setting_comes_from():
    # the text says the setting the model holds, and where it is stated: a confirmed one names the
    # document, its version and the page; one not confirmed from a manual names the other sources
    page, version = re.compile(r"\bp\.\d+\b"), re.compile(r"\bV\d+\.\d+\b|DOCA\d+EN-\d+")
    for model in MODELS.values():
        text = model.factory
        assert model.baudrate in (1200, 2400, 4800, 9600, 19200, 38400) and model.parity in "NEO"
        assert f"{model.baudrate} baud" in text, model.name
        assert {"N": "no parity", "E": "even parity", "O": "odd parity"}[model.parity] in text, model.name
        if "not confirmed" in text:
            assert "secondary: " in text, model.name
        else:
            assert page.search(text) and version.search(text), model.name
        if page.search(text):  # a page is cited with its document's version
            assert version.search(text), model.name


def test_the_readme_meter_table_holds_every_model_at_its_factory_line():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    row = re.compile(r"^\| ((?:`[a-z0-9-]+`(?:, )?)+) \| [^|]+ \| (\d+) 8([NEO])1 \| [^|]+ \|$", re.M)
    table = {name.strip("`"): (int(baud), parity)
             for names, baud, parity in row.findall(readme) for name in names.split(", ")}
    assert table == {m.name: (m.baudrate, m.parity) for m in MODELS.values()}


def test_the_readme_names_a_manual_page_only_where_the_model_does():
    # a row may not present as stated by the manufacturer what the model's text has not confirmed
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    row = re.compile(r"^\| ((?:`[a-z0-9-]+`(?:, )?)+) \| [^|]+ \| \d+ 8[NEO]1 \| ([^|]+) \|$", re.M)
    unconfirmed = {name.strip("`"): "not confirmed" in where
                   for names, where in row.findall(readme) for name in names.split(", ")}
    assert unconfirmed == {m.name: "not confirmed" in m.factory for m in MODELS.values()}
    # both the baud rate and the parity stated on a manufacturer's page
    assert {name for name, no in unconfirmed.items() if not no} == {"sdm120", "sdm630"}


def test_a_port_that_refuses_the_line_setting_is_unavailable_naming_it():
    # a pty takes no parity: pyserial's termios.error used to escape as neither HalError nor OSError
    async def scenario():
        async with rtu_server(SimulatedMeter(MODELS["sdm630"], unit=1)) as port:
            for parity in "EO":  # neither leaves the port locked: the next open works
                meter = modbus_meter(options("sdm630", port=port, parity=parity), ctx())
                with pytest.raises(DeviceUnavailable, match=f"cannot be set to 9600 baud, parity {parity}"):
                    await meter.read()
            meter = modbus_meter(options("sdm630", port=port, parity="N"), ctx())
            return await meter.read()

    assert as_dict(run(scenario())) == expected(MODELS["sdm630"])


def test_missing_serial_device_is_unavailable_naming_the_path():
    async def scenario():
        meter = modbus_meter(options("sdm630", port="/dev/ttyUSB-evsed-missing"), ctx())
        with pytest.raises(DeviceUnavailable, match="/dev/ttyUSB-evsed-missing: no such device file"):
            await meter.read()

    run(scenario())


def test_refused_tcp_connection_is_unavailable_naming_the_host():
    async def scenario():
        async with tcp_server(SimulatedMeter(MODELS["sdm630"])) as port:
            pass  # the port is free again: nothing listens
        meter = modbus_meter(tcp("sdm630", port), ctx())
        with pytest.raises(DeviceUnavailable, match=f"127.0.0.1:{port}: .*refused"):
            await meter.read()

    run(scenario())


def test_tcp_meter_recovers_after_the_server_restarts_and_the_back_off_passes():
    sim = SimulatedMeter(MODELS["or-we-517"])
    clock = FakeClock()

    async def scenario():
        async with tcp_server(sim) as port:
            meter = modbus_meter(tcp("or-we-517", port),
                                 ctx(), clock=clock)
            await meter.read()
        with pytest.raises((TryAgain, DeviceUnavailable)):
            await meter.read()
        async with tcp_server(sim, port=port):
            with pytest.raises((TryAgain, DeviceUnavailable), match="next attempt in"):
                await meter.read()
            clock.now += 60
            return await meter.read()

    assert as_dict(run(scenario())) == expected(MODELS["or-we-517"])


def test_rtu_meter_on_a_usb_adapter_unplugged_and_plugged_back_reads_again_without_a_restart(tmp_path):
    # udev's stable name (/dev/serial/by-id/...) is a link that goes with the adapter and comes back
    sim = SimulatedMeter(MODELS["sdm630"], unit=1)
    clock = FakeClock()
    link = tmp_path / "usb-FTDI_RS485-if00-port0"

    async def scenario():
        async with rtu_server(sim) as port:
            link.symlink_to(port)
            meter = modbus_meter(options("sdm630", port=str(link), unit=1, parity="N"), ctx(), clock=clock)
            first = await meter.read()
        link.unlink()  # unplugged: the device node and its link are gone
        with pytest.raises((TryAgain, DeviceUnavailable)):
            await meter.read()
        async with rtu_server(sim) as port:  # plugged back in: a new node behind the same link
            link.symlink_to(port)
            clock.now += 60  # past any back-off
            again = await meter.read()
            meter.release()
        link.unlink()
        return first, again

    first, again = run(scenario())
    assert as_dict(first) == as_dict(again) == expected(MODELS["sdm630"])


CONFIG = """
[[connector]]
[connector.pilot]
backend = "sim"
[connector.contactor]
backend = "sim"
[connector.meter]
backend = "modbus"
model = "{model}"
transport = "tcp"
host = "192.0.2.7"
unit = 3
"""


def test_config_takes_a_modbus_meter_with_documented_defaults():
    meter = config.parse(CONFIG.format(model="sdm630"), "evsed.toml").connectors[0].meter
    assert meter.backend == "modbus"
    assert dict(meter.options) == {
        "model": "sdm630", "transport": "tcp", "port": "/dev/ttyUSB0", "baudrate": None, "parity": None,
        "stopbits": 1, "host": "192.0.2.7", "tcp_port": 502, "unit": 3, "timeout_s": 0.5}


def test_config_names_file_line_and_key_for_an_unknown_model():
    with pytest.raises(config.ConfigError, match=r"evsed.toml:9: \[connector.meter\] model: expected one of"):
        config.parse(CONFIG.format(model="sdm360"), "evsed.toml")


def test_after_a_long_outage_the_meter_is_asked_again_within_two_seconds():
    from hal.modbus import CONNECT_BACKOFF_S, READ_BACKOFF_S, Backoff
    from hal import TryAgain
    for first_s, longest_s in (CONNECT_BACKOFF_S, READ_BACKOFF_S):
        now = [0.0]
        backoff = Backoff(first_s, longest_s, lambda: now[0])
        for _ in range(100):  # a meter silent for minutes
            backoff.failed(TryAgain("timeout"))
            now[0] = backoff.retry_at
        backoff.failed(TryAgain("timeout"))
        assert backoff.retry_at - now[0] <= 2.0  # back the moment it answers, not up to 30 s later


def test_a_reset_sdm630_is_taken_as_the_new_baseline_after_five_consistent_readings():
    # The backend reports what the real pymodbus server says; the one meter judge (evsed.core.meter)
    # refuses the first readings of a counter that came back lower, then takes it as the new baseline,
    # so charging is not blocked until a restart (it was, when hal/modbus rejected it for good).
    from evsed.core import meter as judge
    sim = SimulatedMeter(MODELS["sdm630"])

    async def scenario():
        async with tcp_server(sim) as port:
            meter = modbus_meter(tcp("sdm630", port), ctx())
            track, verdicts, now = judge.Track(), [], 0.0
            for energy_wh in (1_234_500, 1_234_510, 20, 25, 30, 35, 40, 45):  # reset after the second
                sim.set("energy_import_wh", 0, energy_wh)
                r = await meter.read()
                now += 1.0
                track, verdict = judge.judge(track, judge.Sample(r.energy_import_wh, r.power_total_w,
                                                                 tuple(r.current_a)), now)
                verdicts.append(verdict)
            meter.release()
            return verdicts

    verdicts = run(scenario())
    assert [v.accepted for v in verdicts] == [True, True, False, False, False, False, True, True]
    assert verdicts[2].first_of_streak and "backwards" in verdicts[2].problem
    assert verdicts[6].rebaseline_wh == 20 - 1_234_510  # a running session keeps its energy
