"""A simulated session through the real daemon (which starts `evsed service ocpp`) shows up in a
loopback CSMS message by message."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from evsed.config import load
from evsed.control.client import request
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
            reply = await asyncio.to_thread(request, load(path).store.runtime_dir, {"cmd": "status"})
            services = reply.get("services", {})
            if services.get("ocpp", {}).get("connected"):
                break
            await asyncio.sleep(0.05)
        await evsed("sim", "unplug", "-c", str(path))
        await csms.wait_for(lambda: csms.actions("StatusNotification")[-1][1]["status"] == "Available"
                            and csms.actions("StopTransaction"), timeout=20)
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(10)
        await csms.stop()
    flow = [(a, p.get("status")) for a, p in csms.actions() if a not in ("Heartbeat", "BootNotification")]
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
    assert all(p["transactionId"] == 1001 for _, p in csms.actions("MeterValues"))
    assert services["ocpp"]["connected"] and services["ocpp"]["booted"] and services["ocpp"]["dropped"] == 0
