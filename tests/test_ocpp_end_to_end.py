"""A simulated session through the real daemon (which starts `evsed service ocpp`) shows up in a
loopback CSMS message by message."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from evsed import protocol as p
from evsed.config import load
from evsed.control.client import ControlError, request
from simulator.csms import CentralSystem
from test_ocpp_fakes import aio

ROOT = Path(__file__).resolve().parent.parent


def config(tmp_path: Path, port: int) -> Path:
    text = (ROOT / "config" / "simulator-ocpp.toml").read_text()
    text = text.replace('url = "ws://127.0.0.1:9000/"', f'url = "ws://127.0.0.1:{port}/"')
    text = text.replace("MeterValueSampleInterval = 10", "MeterValueSampleInterval = 1")
    text += f'\n[store]\nstate_dir = "{tmp_path / "state"}"\nruntime_dir = "{tmp_path / "run"}"\n'
    path = tmp_path / "evsed.toml"
    path.write_text(text)
    return path


async def evsed(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "evsed", *args, cwd=ROOT,
                                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out
    return out.decode()


@aio
async def test_a_simulated_session_through_the_daemon_arrives_message_by_message(tmp_path):
    csms = CentralSystem()
    port = await csms.start()
    path = config(tmp_path, port)
    daemon = subprocess.Popen([sys.executable, "-m", "evsed", "run", "-c", str(path)], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                              env={k: v for k, v in os.environ.items() if k not in ("STATE_DIRECTORY", "RUNTIME_DIRECTORY")})
    try:
        await csms.wait_for(lambda: "evsed-sim" in csms.stations and csms.actions("BootNotification"), timeout=20)
        await evsed("sim", "plug", "-c", str(path))
        await evsed("sim", "tap", "04A1B2C3", "-c", str(path))
        await csms.wait_for(lambda: csms.actions("MeterValues"), timeout=20)
        services = {}
        for _ in range(200):  # the uplink tells the daemon how it is doing; evsed status shows it
            reply = await asyncio.to_thread(request, load(path).store.runtime_dir, p.Status())
            services = reply.services if isinstance(reply, p.StatusReply) else {}
            if "ocpp" in services and services["ocpp"].connected:
                break
            await asyncio.sleep(0.05)
        await evsed("sim", "unplug", "-c", str(path))
        await csms.wait_for(lambda: csms.actions("StatusNotification")[-1][1]["status"] == "Available"
                            and csms.actions("StopTransaction"), timeout=20)
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(10)
        await csms.stop()
    flow = [(a, msg.get("status")) for a, msg in csms.actions() if a not in ("Heartbeat", "BootNotification")]
    starts = [i for i, (a, _) in enumerate(flow) if a == "StartTransaction"]
    stops = [i for i, (a, _) in enumerate(flow) if a == "StopTransaction"]
    assert len(starts) == 1 and len(stops) == 1 and starts[0] < stops[0]
    assert ("StatusNotification", "Preparing") in flow[:starts[0]]
    assert ("StatusNotification", "Charging") in flow[starts[0]:stops[0]]
    assert ("MeterValues", None) in flow[starts[0]:stops[0]]
    assert flow[-1] == ("StatusNotification", "Available")
    (_, start), = csms.actions("StartTransaction")
    (_, stop), = csms.actions("StopTransaction")
    assert start["idTag"] == "04A1B2C3" and stop["transactionId"] == 1001 and stop["reason"] == "EVDisconnected"
    assert stop["meterStop"] >= start["meterStart"]
    assert all(msg["transactionId"] == 1001 for _, msg in csms.actions("MeterValues"))
    assert services["ocpp"].connected and services["ocpp"].booted and services["ocpp"].dropped == 0


@aio
async def test_an_uplink_new_to_a_charger_starts_from_now_with_the_connectors_status(tmp_path):
    # The host ran the charger stand-alone, then added [ocpp]: the sessions before (one ended,
    # one still charging) were never the CSMS's, so no transaction messages for them; the CSMS
    # learns where the connector stands, and the next session is a transaction.
    csms = CentralSystem()
    port = await csms.start()
    path = config(tmp_path, port)
    path.write_text(path.read_text() + "\n[timing]\ncard_repeat_s = 0\n")  # one card, tapped in quick succession
    env = {k: v for k, v in os.environ.items() if k not in ("STATE_DIRECTORY", "RUNTIME_DIRECTORY")}
    env["EVSED_SERVICES"] = "units"  # the daemon starts no service: this test starts the uplink later
    daemon = subprocess.Popen([sys.executable, "-m", "evsed", "run", "-c", str(path)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uplink = None

    async def status() -> p.ConnectorStatus:
        for _ in range(400):
            try:
                reply = await asyncio.to_thread(request, load(path).store.runtime_dir, p.Status())
                assert isinstance(reply, p.StatusReply), reply
                return reply.connectors[0]
            except (OSError, ControlError):  # the daemon is still starting
                await asyncio.sleep(0.05)
        raise AssertionError("no status")

    async def until_status(wanted: str) -> None:
        for _ in range(400):
            if (await status()).status == wanted:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"never {wanted}: {await status()}")

    try:
        await status()
        for _ in range(2):
            await evsed("sim", "plug", "-c", str(path))
            await evsed("sim", "tap", "04A1B2C3", "-c", str(path))
            await until_status("Charging")
            if _ == 0:
                await evsed("sim", "unplug", "-c", str(path))
                await until_status("Available")
        uplink = subprocess.Popen([sys.executable, "-m", "evsed", "service", "ocpp", "-c", str(path)], cwd=ROOT,
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await csms.wait_for(lambda: csms.actions("StatusNotification"), timeout=20)
        await evsed("sim", "unplug", "-c", str(path))  # the session that ran before the uplink ends
        await until_status("Available")
        await evsed("sim", "plug", "-c", str(path))
        await evsed("sim", "tap", "04A1B2C3", "-c", str(path))
        await csms.wait_for(lambda: csms.actions("StartTransaction"), timeout=20)
        await evsed("sim", "unplug", "-c", str(path))
        await csms.wait_for(lambda: csms.actions("StopTransaction"), timeout=20)
    finally:
        if uplink is not None:
            uplink.terminate()
            uplink.wait(10)
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(10)
        await csms.stop()
    statuses = [msg["status"] for _, msg in csms.actions("StatusNotification") if msg["connectorId"] == 1]
    assert statuses[0] == "Charging"  # where it stood at first contact, from the daemon's status
    flow = [a for a, _ in csms.actions() if a in ("StartTransaction", "StopTransaction")]
    assert flow == ["StartTransaction", "StopTransaction"]  # only the session after first contact
    (_, start), = csms.actions("StartTransaction")
    assert start["idTag"] == "04A1B2C3"
