"""Issue 22's records through the OCPP 2.0.1 uplink: the real daemon on the simulator starts its
2.0.1 uplink against the loopback 2.0.1 CSMS. A meter reading the CSMS took in a TransactionEvent
is made durable at once (a kill -9 closes the session no lower), and the Ended event carries the
session's final reading, the figure the store and its OCMF record hold."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
from pathlib import Path

from evsed.config import load
from simulator.csms201 import CentralSystem201
from test_ocpp_daemon import ROOT, Charger
from test_ocpp_fakes import aio

ENERGY = "Energy.Active.Import.Register"


class Charger201(Charger):
    """The daemon with its 2.0.1 uplink: transaction meter values every second."""

    def __init__(self, tmp_path: Path, port: int):
        text = (ROOT / "config" / "simulator-ocpp201.toml").read_text()
        assert 'url = "ws://127.0.0.1:9000/"' in text and "TxUpdatedInterval = 10" in text
        text = text.replace('url = "ws://127.0.0.1:9000/"', f'url = "ws://127.0.0.1:{port}/"')
        text = text.replace("TxUpdatedInterval = 10", "TxUpdatedInterval = 1")
        text = text.replace("reconnect_min_s = 1\nreconnect_max_s = 60", "reconnect_min_s = 0.1\nreconnect_max_s = 0.5")
        text += f'\n[store]\nstate_dir = "{tmp_path / "state"}"\nruntime_dir = "{tmp_path / "run"}"\n'
        self.path = tmp_path / "evsed.toml"
        self.path.write_text(text)
        self.runtime_dir = load(self.path).store.runtime_dir
        self.daemon = None
        self.db_path = load(self.path).store.state_dir / "sessions.db"

    def row(self) -> dict | None:
        """The newest stored session, read as `evsed sessions` would (None: none yet)."""
        if not self.db_path.exists():
            return None
        with contextlib.closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)) as db:
            db.row_factory = sqlite3.Row
            row = db.execute("SELECT * FROM sessions ORDER BY id DESC LIMIT 1").fetchone()
        return dict(row) if row is not None else None


def energy(payload: dict) -> list[int]:
    return [int(v["value"]) for mv in payload.get("meterValue", ()) for v in mv["sampledValue"]
            if v.get("measurand", ENERGY) == ENERGY]


def events(csms: CentralSystem201, kind: str | None = None) -> list[dict]:
    return [msg for _, msg in csms.actions("TransactionEvent") if kind is None or msg["eventType"] == kind]


def once_each(csms: CentralSystem201) -> list[dict]:
    """The TransactionEvents as a CSMS keeps them: one sent again under its own message id (its
    answer was lost with the killed process) counted once."""
    seen: set[str] = set()
    out = []
    for _, action, payload, unique_id in csms.messages:
        if action == "TransactionEvent" and unique_id not in seen:
            seen.add(unique_id)
            out.append(payload)
    return out


async def booted(csms: CentralSystem201) -> None:
    await csms.wait_for(lambda: csms.actions("BootNotification") and csms.actions("StatusNotification"), timeout=30)


def updated_wh(csms: CentralSystem201) -> list[int]:
    """The energy register of every TransactionEvent Updated the CSMS took, in order."""
    return [wh for e in events(csms, "Updated") for wh in energy(e)]


async def charging_past_its_start(charger: Charger201, csms: CentralSystem201) -> int:
    """Plug and tap on a booted station; wait until an Updated event carries energy above the
    session's stored start reading, which it returns."""
    await booted(csms)
    await charger.sim("plug")
    await charger.sim("tap", "04A1B2C3")
    await csms.wait_for(lambda: events(csms, "Started"), timeout=20)
    start = charger.row()["meter_start_wh"]
    await csms.wait_for(lambda: any(wh > start for wh in updated_wh(csms)), timeout=20)
    return start


@aio
async def test_a_kill_while_charging_closes_the_session_at_no_less_than_the_csms_took_in_transaction_events(tmp_path):
    # The 1.6 uplink told the daemon each reading the CSMS had taken (meter-delivered); the 2.0.1 one
    # did not, so the store closed a killed session at its last checkpoint (once a minute), below
    # what the CSMS already had in its TransactionEvent Updated.
    csms = CentralSystem201()
    charger = Charger201(tmp_path, await csms.start())
    charger.start()
    try:
        start = await charging_past_its_start(charger, csms)
        had = max(updated_wh(csms))
        await csms.wait_for(lambda: charger.row()["meter_last_wh"] >= had, timeout=20)  # before its minute
        await charger.stop(signal.SIGKILL)  # the daemon and its uplink at once: a power cut
        charger.start()
        await csms.wait_for(lambda: events(csms, "Ended"), timeout=30)
    finally:
        await charger.stop()
        await csms.stop()
    row = charger.row()
    (ended,) = events(csms, "Ended")
    assert row["stop_reason"] == "power_loss" and row["meter_stop_wh"] >= had > start
    assert ended["transactionInfo"]["stoppedReason"] == "PowerLoss"
    assert energy(ended) == [row["meter_stop_wh"]]
    kept = once_each(csms)  # the message in flight at the kill comes again: the CSMS's seqNo check counts it twice
    assert [e["seqNo"] for e in kept] == list(range(len(kept))) and kept[-1] is ended
    assert [problem for problem in csms.problems if "seqNo" not in problem] == []


@aio
async def test_the_ended_event_carries_the_stored_and_signed_final_reading(tmp_path):
    csms = CentralSystem201()
    charger = Charger201(tmp_path, await csms.start())
    charger.start()
    try:
        await charging_past_its_start(charger, csms)
        await charger.sim("unplug")
        await csms.wait_for(lambda: events(csms, "Ended"), timeout=20)
        await csms.wait_for(lambda: (charger.row() or {}).get("ocmf"), timeout=20)
    finally:
        await charger.stop()
        await csms.stop()
    row = charger.row()
    (started,), (ended,) = events(csms, "Started"), events(csms, "Ended")
    begin, end = json.loads(row["ocmf"].split("|")[1])["RD"]
    assert energy(started) == [row["meter_start_wh"]] == [round(begin["RV"] * 1000)]
    assert energy(ended) == [row["meter_stop_wh"]] == [round(end["RV"] * 1000)]
    assert row["meter_stop_wh"] > row["meter_start_wh"] and row["stop_reason"] == "ev_disconnected"
    assert csms.problems == []
