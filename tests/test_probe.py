"""`evsed probe` against the project's emulators: the RAPI board (boot-locked as the release builds,
and unlocked with other builds), the meter emulator on an RS-485 pty and on TCP, an RDM6300 on a
pty, each behind a stable name as udev gives them; the GPIO pilot on gpiozero's mock pins."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from evsed import config
from evsed.cli import probe_report
from evsed.cli.probe import Options, probe
from evsed.core.pilot import PilotState, classify
from hal.meter_models import MODELS
from simulator.bringup import BOARD_NAME, METERS_NAME, READER_NAME, bench
from simulator.modbus_meter import KNOWN, SimulatedMeter, tcp_server
from simulator.openevse_rapi import ECF_GFI_TEST_DISABLED, OpenEvseEmulator

CARD = "13005D1DA5"
README_BENCH = "/tmp/evsed-bench"  # the directory the README's example names
QUICK = dict(units=[1, 2, 3], bauds=[9600], parities=["N"], timeout_s=0.1)  # a pty takes no parity


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


class Tapping:
    """The probe's say(): when it asks for a card, one is laid on the reader (until stop())."""

    def __init__(self, reader):
        self.reader, self.task = reader, None

    def __call__(self, text: str) -> None:
        if "tap a card now" in text:
            self.task = asyncio.get_running_loop().create_task(self.reader.hold(CARD, every_s=0.2))

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


async def probe_tapping(made, opts):
    say = Tapping(made.reader)
    try:
        return await probe(opts, say=say)
    finally:
        await say.stop()  # before the bench closes the reader's pty


def test_the_board_the_meters_and_a_card_are_found_by_their_stable_names(tmp_path):
    progress: list[str] = []

    async def scenario():
        async with bench(tmp_path / "by-id", meters=(("sdm630", 1), ("em340", 3)), current_a=16) as made:
            say = Tapping(made.reader)
            try:
                found = await probe(Options(str(made.directory), card_timeout_s=5, **QUICK), say=say,
                                    progress=progress.append)
            finally:
                await say.stop()
            return made, found

    made, found = run(scenario())
    names = {Path(name).name for name, _ in found.ports}
    assert names == {BOARD_NAME, METERS_NAME, READER_NAME}
    ((port, info),) = found.boards
    assert Path(port).name == BOARD_NAME  # the stable name, not /dev/pts/N
    assert (info.firmware, info.rapi, info.boot_locked, info.auth_lock) == ("8.2.3", "5.2.1", True, None)
    assert info.heartbeat == (0, 0, 0) and info.ammeter and info.stored_max_a == 16 and info.checks_off == []
    assert not any(c[0] in "SF" for c in made.board.commands)  # read only: no $SB, no setting
    sdm630, em340 = found.meters
    assert (Path(sdm630.line.where).name, sdm630.unit, str(sdm630.line)) == (METERS_NAME, 1, "9600 8N1")
    assert [m.model.name for m in sdm630.matches] == ["sdm630", "sdm72d-m-v2"]  # the same registers
    assert sdm630.matches[0].reading.voltage_v == pytest.approx(KNOWN["voltage_v"])
    assert (em340.unit, [m.model.name for m in em340.matches]) == (3, ["em340"])
    assert found.card == (str(made.names[READER_NAME]), "rdm6300", CARD)
    assert any("unit 2 (2 of 3)" in line for line in progress)  # every unit tried, with a progress line


def test_the_toml_block_is_a_config_evsed_loads_and_is_written_only_to_a_new_file(tmp_path, capsys):
    async def scenario():
        async with bench(tmp_path / "by-id", meters=(("sdm630", 1),)) as made:
            return made, await probe_tapping(made, Options(str(made.directory), card_timeout_s=5, **QUICK))

    made, found = run(scenario())
    block = probe_report.toml_block(found)
    cfg = config.parse(block, "probe.toml")
    (conn,) = cfg.connectors
    board = str(made.names[BOARD_NAME])
    assert {conn.pilot.backend, conn.contactor.backend, conn.rcd.backend} == {"openevse"}
    assert conn.pilot.options["port"] == board
    assert dict(conn.meter.options) | {"timeout_s": 0} == {
        "model": "sdm630", "transport": "rtu", "port": str(made.names[METERS_NAME]), "baudrate": 9600,
        "parity": "N", "stopbits": 1, "host": "", "tcp_port": 502, "unit": 1, "timeout_s": 0}
    assert cfg.rfid.backend == "rdm6300" and cfg.rfid.options["port"] == str(made.names[READER_NAME])
    assert [c.uid for c in cfg.cards] == [CARD]
    target = tmp_path / "evsed.toml"
    assert probe_report.write(block, target, found) == 0 and target.read_text() == block
    assert probe_report.write(block, target, found) == 1  # never over an existing file
    assert "exists" in capsys.readouterr().err


@pytest.mark.parametrize("build, says", [
    (dict(boot_lock=False, auth_lock=True, heartbeat=False, ammeter=False, flags=ECF_GFI_TEST_DISABLED),
     {"boot lock": "off now", "auth lock": "built (locked now)", "heartbeat": "not built (HEARTBEAT_SUPERVISION)",
      "ammeter": "none", "GFCI self-test": "off in its settings", "safety checks": "off: GFCI self-test"}),
    (dict(), {"boot lock": "on (vflag 4000)", "auth lock": "not built (AUTH_LOCK)", "heartbeat": "supervision",
              "ammeter": "yes", "GFCI self-test": "on", "safety checks": "all on"}),
])
def test_the_report_says_what_evsed_can_and_cannot_do_with_the_board(tmp_path, build, says):
    async def scenario():
        async with bench(tmp_path / "by-id", meters=(), reader=False, **build) as made:
            return await probe(Options(str(made.directory), card_timeout_s=0, **QUICK))

    found = run(scenario())
    ((_, info),) = found.boards
    notes = dict(info.notes())
    for topic, text in says.items():
        assert text in notes[topic], (topic, notes[topic])
    assert "OpenEVSE board on" in probe_report.report(found, Options())
    if not info.ammeter:  # no meter at all: the block leaves the meter out rather than guess
        assert "[connector.meter]" not in probe_report.toml_block(found)


def test_meters_behind_a_modbus_tcp_gateway_are_found_and_an_empty_unit_is_not(tmp_path):
    async def scenario():
        async with tcp_server(SimulatedMeter(MODELS["abb-b23"], 2), SimulatedMeter(MODELS["iem3155"], 4)) as port:
            opts = Options(str(tmp_path / "none"), tcp=[("127.0.0.1", port)], units=[1, 2, 3, 4], card_timeout_s=0)
            return port, await probe(opts)

    port, found = run(scenario())
    assert [(m.unit, m.matches[0].model.name, str(m.line)) for m in found.meters] == [
        (2, "abb-b23", "Modbus TCP"), (4, "iem3155", "Modbus TCP")]
    assert found.ports == [] and found.boards == []
    block = probe_report.toml_block(found)
    assert block.startswith("# under your [[connector]]:\n[connector.meter]") and f"tcp_port = {port}" in block
    assert "# also found: iem3155, unit 4" in block
    assert probe_report.write(block, tmp_path / "x.toml", found) == 1  # no board: no whole config to write


def test_a_unit_that_answers_with_no_known_registers_is_said_so(tmp_path):
    unknown = SimulatedMeter(MODELS["sdm630"], 1)  # a device whose registers are no mains meter's:
    unknown.set("frequency_hz", 0, 400.0)  # the SDM maps read 400 Hz,
    unknown.set("energy_import_wh", 0, -5.0)  # the totals-only one a negative import

    async def scenario():
        async with tcp_server(unknown) as port:
            return await probe(Options(str(tmp_path), tcp=[("127.0.0.1", port)], units=[1], card_timeout_s=0))

    found = run(scenario())
    ((m,),) = [found.meters]
    assert m.matches == ()
    assert "answers, but no model's registers read plausibly" in probe_report.report(found, Options())


def test_the_gpio_pilot_reads_plus_12_v_at_rest_and_an_inverted_stage_is_named(tmp_path):
    from hal.gpio import SPI_CLASS_KEY, pin_factory
    from test_gpio_backends import GAIN, OFFSET_V, FakeMCP3x08, exported

    def pilot_config(invert: bool) -> config.Config:
        root = tmp_path / f"pwm-{invert}"
        (root / "pwmchip0").mkdir(parents=True)
        for name, text in (("export", ""), ("unexport", ""), ("npwm", "2\n")):
            (root / "pwmchip0" / name).write_text(text)
        exported(root)
        return config.parse(f'[[connector]]\n[connector.pilot]\nbackend = "gpio"\noffset_v = {OFFSET_V}\n'
                            f'gain = {GAIN}\nsysfs_root = "{root}"\ninvert = {str(invert).lower()}\n'
                            '[connector.contactor]\nbackend = "sim"\n')

    results = []
    for invert, level_v in ((False, 12.0), (True, -12.0)):  # the stage inverts, nothing set: -12 V
        adc = FakeMCP3x08()
        adc.cp_v = lambda t, v=level_v: v
        shared = {SPI_CLASS_KEY: adc}
        pin_factory("mock", shared)
        found = run(probe(Options(str(tmp_path / "none"), card_timeout_s=0), pilot_config(invert), shared))
        ((connector, reading),) = found.pilots
        results.append((connector, classify(reading.high_v), probe_report.report(found, Options())))
    (c1, state1, text1), (_, state2, text2) = results
    assert (c1, state1, state2) == (1, PilotState.A, PilotState.F)
    assert "as expected with nothing plugged in" in text1 and "invert = true" in text2


def test_evsed_probe_on_the_command_line_shows_progress_and_writes_with_write(tmp_path):
    target = tmp_path / "evsed.toml"

    async def scenario():
        async with bench(tmp_path / "by-id", meters=(("sdm630", 1),), reader=False) as made:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "evsed", "probe", "--ports-dir", str(made.directory), "--units", "1-2",
                "--bauds", "9600", "--parities", "N", "--card-timeout", "0", "--write", str(target),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env={k: v for k, v in os.environ.items() if k != "EVSED_CONFIG"})
            out, err = await proc.communicate()
            return proc.returncode, out.decode(), err.decode()

    code, out, err = run(scenario())
    assert code == 0, out + err
    assert f"scanning {tmp_path / 'by-id' / METERS_NAME}: 9600 8N1" in err  # the progress, off a terminal
    assert "OpenEVSE board on" in out and "unit 1 at 9600 8N1: sdm630" in out and f"wrote {target}" in out
    assert config.load(target).connectors[0].meter.options["model"] == "sdm630"


def test_the_scan_is_bounded_and_tries_a_parity_the_port_refuses_only_once():
    from hal.modbus_scan import scan_rtu
    from simulator.modbus_meter import null_modem
    seen: list[str] = []

    async def scenario():
        async with null_modem() as (_nobody, port):  # a line with nothing on it
            return port, await scan_rtu(port, [9600, 2400], ["N", "E"], [1, 2], 0.05, seen.append)

    port, scan = run(scenario())
    assert scan.found == []
    assert [line.split(": ", 1)[1] for line in seen] == [
        "9600 8N1, unit 1 (1 of 2)", "9600 8N1, unit 2 (2 of 2)", "9600 8E1, unit 1 (1 of 2)",
        "2400 8N1, unit 1 (1 of 2)", "2400 8N1, unit 2 (2 of 2)"]  # a pty takes no parity: E once
    (refused,) = scan.problems
    assert refused.startswith(f"Modbus RTU port {port}: cannot be set to 9600 baud, parity E")


def readme_probe_example() -> tuple[list[str], list[str], str]:
    """The README's bench command, its probe command and the output it shows for them."""
    text = (Path(__file__).parent.parent / "README.md").read_text()
    at = text.index("## First contact with the hardware")
    bench_args = re.search(r"`python -m simulator\.bringup ([^`]+)`", text[at:]).group(1)
    start = text.index("```\n$ evsed probe ", at) + len("```\n$ ")
    command, _, shown = text[start:text.index("\n```", start)].partition("\n")
    return shlex.split(bench_args), shlex.split(command), shown + "\n"


def test_the_readmes_probe_output_is_what_the_probe_prints_on_the_emulated_bench(tmp_path):
    """The README's bench and probe commands run as written (only the directory moved), and the
    probe's standard output is the README's block, /dev/pts numbers aside."""
    bench_args, command, shown = readme_probe_example()
    here = str(tmp_path / "evsed-bench")
    moved = [here if arg == README_BENCH else arg for arg in bench_args]
    env = {k: v for k, v in os.environ.items() if k != "EVSED_CONFIG"}
    served = subprocess.Popen([sys.executable, "-m", "simulator.bringup", *moved], stdout=subprocess.PIPE, text=True,
                              env=env)
    try:
        for line in served.stdout:  # the bench is up when it names the probe command
            if line.startswith("evsed probe"):
                break
        assert command[0] == "evsed"
        argv = [sys.executable, "-m", "evsed"] + [here if arg == README_BENCH else arg for arg in command[1:]]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)
    finally:
        served.terminate()
        served.wait(10)
        served.stdout.close()
    assert out.returncode == 0, out.stderr

    def normal(text: str) -> str:
        return re.sub(r"/dev/pts/\d+", "/dev/pts/N", text.replace(here, README_BENCH))
    assert normal(out.stdout).rstrip() == normal(shown).rstrip(), "the probe now prints:\n" + normal(out.stdout)
