"""A simulated session through the real daemon with [ocpp] version = "2.0.1" (the daemon starts
`evsed service ocpp`, the v201 adapter) shows up in a loopback 2.0.1 CSMS event by event."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from simulator.csms201 import CentralSystem201
from test_ocpp_end_to_end import evsed
from test_ocpp_fakes import aio

ROOT = Path(__file__).resolve().parent.parent


def config(tmp_path: Path, port: int) -> Path:
    text = (ROOT / "config" / "simulator-ocpp201.toml").read_text()
    text = text.replace('url = "ws://127.0.0.1:9000/"', f'url = "ws://127.0.0.1:{port}/"')
    text = text.replace("SampledDataCtrlr.TxUpdatedInterval = 10", "SampledDataCtrlr.TxUpdatedInterval = 1")
    text += f'\n[store]\nstate_dir = "{tmp_path / "state"}"\nruntime_dir = "{tmp_path / "run"}"\n'
    path = tmp_path / "evsed.toml"
    path.write_text(text)
    return path


def statuses(csms: CentralSystem201) -> list[str]:
    return [p["connectorStatus"] for _, p in csms.actions("StatusNotification")]


@aio
async def test_a_simulated_session_through_the_daemon_arrives_as_transaction_events(tmp_path):
    csms = CentralSystem201()
    port = await csms.start()
    path = config(tmp_path, port)
    daemon = subprocess.Popen([sys.executable, "-m", "evsed", "run", "-c", str(path)], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                              env={k: v for k, v in os.environ.items() if k not in ("STATE_DIRECTORY", "RUNTIME_DIRECTORY")})
    try:
        await csms.wait_for(lambda: "evsed-sim" in csms.stations and csms.actions("StatusNotification"), timeout=20)
        await evsed("sim", "plug", "-c", str(path))
        await csms.wait_for(lambda: statuses(csms)[-1] == "Occupied", timeout=20)
        await evsed("sim", "tap", "04A1B2C3", "-c", str(path))
        await csms.wait_for(lambda: any(p["triggerReason"] == "MeterValuePeriodic"
                                        for _, p in csms.actions("TransactionEvent")), timeout=20)
        await evsed("sim", "unplug", "-c", str(path))
        await csms.wait_for(lambda: statuses(csms)[-1] == "Available"
                            and csms.actions("TransactionEvent")[-1][1]["eventType"] == "Ended", timeout=20)
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(10)
        await csms.stop()
    (_, boot), = csms.actions("BootNotification")
    assert boot["reason"] == "PowerUp"
    events = [p for _, p in csms.actions("TransactionEvent")]
    assert events[0]["eventType"] == "Started" and events[0]["idToken"] == {"idToken": "04A1B2C3", "type": "ISO14443"}
    assert events[-1]["transactionInfo"]["stoppedReason"] == "EVDisconnected"
    begin = events[0]["meterValue"][0]["sampledValue"][0]["value"]
    end = events[-1]["meterValue"][0]["sampledValue"][0]["value"]
    assert end >= begin
    assert csms.problems == []
