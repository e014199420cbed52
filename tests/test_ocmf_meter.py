"""Issue 22: a session's OCMF document names the meter (MV vendor, MM model, MS serial) where its
backend can tell them: the daemon on the simulator, and on the project's Modbus meter emulator (a
real pymodbus server on loopback) serving an Eastron SDM630's serial register. What a meter cannot
tell, or tells as garbage, is left out and logged once. Documents are read with pyocmf."""

from __future__ import annotations

import asyncio
import json

import structlog
from pyocmf import OCMF

from evsed import config
from evsed import protocol as p
from evsed.store.sessions import Store
from hal import MeterIdentity
from hal.meter_models import MODELS
from simulator.modbus_meter import SimulatedMeter, tcp_server
from test_check import sim_config
from test_daemon import ask, running, until

SERIAL = 21_045_678


async def one_session(cfg) -> None:
    """Plug, tap, charge until the contactor closed and the meter was read, unplug, until stored."""
    async with running(cfg) as daemon:
        ctrl = daemon.connectors[1]
        await until(lambda: ctrl.last_reading is not None, 10)
        await ask(cfg, p.Plug())
        await ask(cfg, p.Tap(card="04A1B2C3"))
        await until(lambda: ctrl.state.contactor_closed, 10)
        await ask(cfg, p.Unplug())
        await until(lambda: ctrl.session is None and not ctrl.unsaved, 10)


def documents(cfg) -> list[dict]:
    rows = list(Store(cfg.store.state_dir / "sessions.db").sessions())
    out = []
    for row in rows:
        doc = OCMF.from_string(row["ocmf"], strict=True)
        assert doc.verify_signature(row["ocmf_public_key"]) is True
        out.append(json.loads(row["ocmf"].split("|")[1]))
    return out


def modbus_meter_config(tmp_path, port: int):
    return config.load(sim_config(tmp_path, f'[connector.meter]\nbackend = "modbus"\nmodel = "sdm630"\n'
                                            f'transport = "tcp"\nhost = "127.0.0.1"\ntcp_port = {port}\n'))


def test_the_simulators_meter_is_named_evsed_simulator_with_the_same_serial_after_a_restart(tmp_path):
    cfg = config.load(sim_config(tmp_path))

    async def twice() -> None:
        await one_session(cfg)
        await one_session(cfg)  # a daemon started again: the meter tells the same serial

    asyncio.run(twice())
    first, second = documents(cfg)
    assert (first["MV"], first["MM"], first["MS"]) == ("evsed", "simulator", "SIM00001")
    assert (second["MV"], second["MM"], second["MS"]) == (first["MV"], first["MM"], first["MS"])


def test_an_sdm630_on_the_modbus_emulator_is_named_by_its_model_and_the_serial_it_reads(tmp_path):
    async def scenario():
        async with tcp_server(SimulatedMeter(MODELS["sdm630"], serial=SERIAL)) as port:
            cfg = modbus_meter_config(tmp_path, port)
            await one_session(cfg)
            return cfg

    cfg = asyncio.run(scenario())
    (doc,) = documents(cfg)
    assert (doc["MV"], doc["MM"], doc["MS"]) == ("Eastron", "SDM630-Modbus", str(SERIAL))
    (row,) = Store(cfg.store.state_dir / "sessions.db").sessions()
    assert (row["meter_vendor"], row["meter_model"], row["meter_id"]) == ("Eastron", "SDM630-Modbus", str(SERIAL))


def test_a_serial_register_reading_all_ones_is_left_out_of_the_document_and_logged_once(tmp_path):
    async def scenario():
        async with tcp_server(SimulatedMeter(MODELS["sdm630"], serial=0xFFFFFFFF)) as port:
            cfg = modbus_meter_config(tmp_path, port)
            with structlog.testing.capture_logs() as logs:
                await one_session(cfg)
            return cfg, logs

    cfg, logs = asyncio.run(scenario())
    (doc,) = documents(cfg)
    assert (doc["MV"], doc["MM"]) == ("Eastron", "SDM630-Modbus") and "MS" not in doc
    (said,) = [e for e in logs if e["event"].startswith("meter.identi")]
    assert said["event"] == "meter.identity_incomplete" and "0xffffffff" in said["problem"]


def test_garbage_in_a_meters_identity_is_left_out_and_the_rest_kept(tmp_path):
    cfg = config.load(sim_config(tmp_path))

    async def scenario():
        async with running(cfg) as daemon:
            ctrl = daemon.connectors[1]
            await until(lambda: ctrl.meter_identity.serial, 10)  # the simulator's, asked once
            with structlog.testing.capture_logs() as logs:
                ctrl.meter_identified(MeterIdentity("ACME\x00\x07", "X" * 65, " 123 "))
                gone = ctrl.meter_identity
                ctrl.meter_identified(MeterIdentity("ACME", "M1", "", problem="serial register: exception 2"))
                partial = ctrl.meter_identity
            return gone, partial, logs

    gone, partial, logs = asyncio.run(scenario())
    assert gone == MeterIdentity() and partial == MeterIdentity("ACME", "M1")
    assert [e["event"] for e in logs] == ["meter.identity_incomplete"] * 2
    assert set(logs[0]["garbage"]) == {"vendor", "model", "serial"}
