"""Issue 19's rows that need the daemon itself: the real daemon on the simulator starts its OCPP
uplink (`evsed service ocpp`) against the loopback CSMS, which checks behaviour, not only schemas
(simulator/csms_checks): RemoteStart and ChangeAvailability answers, availability across a hard
reset and a kill, the id tag a CSMS gave, meter values on an idle connector, and a kill -9 while
charging."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from ocpp.v16 import call

from evsed.config import load
from evsed import protocol as p
from evsed.control.client import ControlError, ask
from simulator.csms import CentralSystem
from test_ocpp_fakes import aio

ROOT = Path(__file__).resolve().parent.parent
ENV = {k: v for k, v in os.environ.items() if k not in ("STATE_DIRECTORY", "RUNTIME_DIRECTORY")}
IDENTITY = "evsed-sim"


class Charger:
    """The daemon (with its uplink) on the simulator, stopped, killed and started again as systemd would."""

    def __init__(self, tmp_path: Path, port: int, config: str = "simulator-ocpp.toml"):
        text = (ROOT / "config" / config).read_text()
        text = text.replace('url = "ws://127.0.0.1:9000/"', f'url = "ws://127.0.0.1:{port}/"')
        text = text.replace("MeterValueSampleInterval = 10", "MeterValueSampleInterval = 1")
        text = text.replace("reconnect_min_s = 1\nreconnect_max_s = 60", "reconnect_min_s = 0.1\nreconnect_max_s = 0.5")
        text += f'\n[store]\nstate_dir = "{tmp_path / "state"}"\nruntime_dir = "{tmp_path / "run"}"\n'
        self.path = tmp_path / "evsed.toml"
        self.path.write_text(text)
        self.runtime_dir = load(self.path).store.runtime_dir
        self.daemon: subprocess.Popen | None = None

    def start(self) -> None:
        self.daemon = subprocess.Popen([sys.executable, "-m", "evsed", "run", "-c", str(self.path)], cwd=ROOT, env=ENV,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    async def ended(self) -> int:
        """Until the daemon has exited by itself (a hard reset): its exit status."""
        assert self.daemon is not None
        return await asyncio.to_thread(self.daemon.wait, 20)

    async def stop(self, sig: int = signal.SIGTERM) -> None:
        """The whole process group (the daemon and its uplink), as a power cut or systemd stop would."""
        if self.daemon is not None and self.daemon.poll() is None:
            os.killpg(self.daemon.pid, sig)
            await asyncio.to_thread(self.daemon.wait, 20)

    async def sim(self, *args: str) -> None:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "evsed", "sim", *args, "-c", str(self.path),
                                                    cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out, _ = await proc.communicate()
        assert proc.returncode == 0, out

    async def connector(self) -> p.ConnectorStatus:
        reply = await asyncio.to_thread(ask, self.runtime_dir, p.Status())
        return reply.connectors[0]

    async def until(self, predicate, what: str, timeout_s: float = 20) -> p.ConnectorStatus:
        """Until predicate(connector 1's status) holds (the daemon's status is polled: it has no
        notification of its own); that status."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            try:
                conn = await self.connector()
                if predicate(conn):
                    return conn
            except (OSError, ControlError):  # starting, or restarting
                conn = None
            if loop.time() > deadline:
                raise AssertionError(f"never {what}: {conn}")
            await asyncio.sleep(0.05)


def statuses(csms: CentralSystem, connector: int) -> list[str]:
    return [msg["status"] for _, msg in csms.actions("StatusNotification") if msg["connectorId"] == connector]


def boots(csms: CentralSystem) -> int:
    return len(csms.actions("BootNotification"))


async def booted(csms: CentralSystem, count: int = 1) -> None:
    """Until the count-th boot's statuses arrived (connector 1's is the last of them)."""
    def done() -> bool:
        after = [a for a, _ in csms.actions() if a in ("BootNotification", "StatusNotification")]
        return boots(csms) >= count and IDENTITY in csms.stations and after[-1] == "StatusNotification"
    await csms.wait_for(done, timeout=30)


@aio
async def test_availability_is_kept_across_a_hard_reset_and_a_kill_and_connector_0_tells_it(tmp_path):
    csms = CentralSystem()
    charger = Charger(tmp_path, await csms.start())
    charger.start()
    try:
        await booted(csms)
        assert statuses(csms, 0) == ["Available"]  # connector 0's status at the first boot
        result = await csms.call(IDENTITY, call.ChangeAvailability(connector_id=0, type="Inoperative"))
        assert result.status == "Accepted"
        await csms.wait_for(lambda: statuses(csms, 0)[-1:] == ["Unavailable"] and statuses(csms, 1)[-1:] == ["Unavailable"])
        assert (await csms.call(IDENTITY, call.Reset(type="Hard"))).status == "Accepted"
        assert await charger.ended() == 75  # for systemd (Restart=) to start it again
        charger.start()
        await booted(csms, 2)
        assert statuses(csms, 0)[-1] == "Unavailable" and statuses(csms, 1)[-1] == "Unavailable"
        await charger.sim("plug")
        await charger.sim("tap", "04A1B2C3")
        refused = await charger.until(lambda c: c.last_refusal, "the card refused")
        assert refused.status == "Unavailable" and refused.contactor == "open"
        await charger.stop(signal.SIGKILL)  # a power cut
        charger.start()
        await booted(csms, 3)
        assert (await charger.connector()).status == "Unavailable"
        await charger.sim("plug")  # the simulated EV was cut off too
        assert (await csms.call(IDENTITY, call.ChangeAvailability(connector_id=0, type="Operative"))).status == "Accepted"
        await csms.wait_for(lambda: statuses(csms, 0)[-1:] == ["Available"])
        await charger.sim("tap", "04A1B2C3")
        await charger.until(lambda c: c.status == "Charging", "charging once operative")
        await csms.wait_for(lambda: csms.actions("StartTransaction"))  # the uplink sends it after the event
    finally:
        await charger.stop()
        await csms.stop()
    assert len(csms.actions("StartTransaction")) == 1  # only the session after Operative
    assert csms.violations(killed=True) == []


@aio
async def test_remote_start_keeps_the_csms_id_tag_and_is_rejected_when_the_daemon_refuses(tmp_path):
    csms = CentralSystem()
    charger = Charger(tmp_path, await csms.start())
    charger.start()
    try:
        await booted(csms)
        await charger.sim("plug")
        result = await csms.call(IDENTITY, call.RemoteStartTransaction(id_tag="ab-12-cd", connector_id=1))
        assert result.status == "Accepted"
        await csms.wait_for(lambda: csms.actions("StartTransaction"))
        again = await csms.call(IDENTITY, call.RemoteStartTransaction(id_tag="0BEEF", connector_id=1))
        assert again.status == "Rejected"  # the connector is in use
        result = await csms.call(IDENTITY, call.ChangeAvailability(connector_id=1, type="Inoperative"))
        assert result.status == "Scheduled"  # after the transaction
        await charger.sim("unplug")
        await csms.wait_for(lambda: csms.actions("StopTransaction") and statuses(csms, 1)[-1:] == ["Unavailable"])
        refused = await csms.call(IDENTITY, call.RemoteStartTransaction(id_tag="ab-12-cd", connector_id=1))
        assert refused.status == "Rejected"  # unavailable
    finally:
        await charger.stop()
        await csms.stop()
    (_, start), = csms.actions("StartTransaction")
    (_, stop), = csms.actions("StopTransaction")
    assert start["idTag"] == "ab-12-cd" and stop["idTag"] == "ab-12-cd"
    assert csms.violations() == []


def in_minutes(minutes: float) -> str:
    import datetime as dt
    return (dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=minutes)).isoformat()


@aio
async def test_remote_start_on_a_connector_reserved_for_another_tag_is_rejected(tmp_path):
    csms = CentralSystem()
    charger = Charger(tmp_path, await csms.start())
    charger.start()
    try:
        await booted(csms)
        reserve = call.ReserveNow(connector_id=1, expiry_date=in_minutes(10), id_tag="0RESERVED", reservation_id=7)
        assert (await csms.call(IDENTITY, reserve)).status == "Accepted"
        other = await csms.call(IDENTITY, call.RemoteStartTransaction(id_tag="ab-12-cd", connector_id=1))
        assert other.status == "Rejected"
        await charger.sim("plug")
        own = await csms.call(IDENTITY, call.RemoteStartTransaction(id_tag="0RESERVED", connector_id=1))
        assert own.status == "Accepted"
        await csms.wait_for(lambda: csms.actions("StartTransaction"))
    finally:
        await charger.stop()
        await csms.stop()
    (_, start), = csms.actions("StartTransaction")
    assert start["idTag"] == "0RESERVED" and start["reservationId"] == 7
    assert csms.violations() == []


@aio
async def test_with_authorize_remote_tx_requests_remote_start_is_rejected_where_the_daemon_will_not_start(tmp_path):
    # Issue 19 row 1 with the key on: it was answered Accepted before the daemon was asked
    csms = CentralSystem()
    charger = Charger(tmp_path, await csms.start())
    charger.start()

    async def remote_start(tag: str) -> str:
        return (await csms.call(IDENTITY, call.RemoteStartTransaction(id_tag=tag, connector_id=1))).status
    try:
        await booted(csms)
        key = call.ChangeConfiguration(key="AuthorizeRemoteTxRequests", value="true")
        assert (await csms.call(IDENTITY, key)).status == "Accepted"
        reserve = call.ReserveNow(connector_id=1, expiry_date=in_minutes(10), id_tag="0RESERVED", reservation_id=7)
        assert (await csms.call(IDENTITY, reserve)).status == "Accepted"
        assert await remote_start("ab-12-cd") == "Rejected"  # reserved for another tag
        assert (await csms.call(IDENTITY, call.CancelReservation(reservation_id=7))).status == "Accepted"
        inoperative = call.ChangeAvailability(connector_id=1, type="Inoperative")
        assert (await csms.call(IDENTITY, inoperative)).status == "Accepted"
        assert await remote_start("ab-12-cd") == "Rejected"  # unavailable
        operative = call.ChangeAvailability(connector_id=1, type="Operative")
        assert (await csms.call(IDENTITY, operative)).status == "Accepted"
        await charger.sim("plug")
        assert await remote_start("ab-12-cd") == "Accepted"  # free: authorized, then started
        await csms.wait_for(lambda: csms.actions("StartTransaction"))
        await charger.until(lambda c: c.status == "Charging", "charging")
        assert await remote_start("0BEEF") == "Rejected"  # in use
        assert await remote_start("ab-12-cd") == "Rejected"  # in use, by this very tag
    finally:
        await charger.stop()
        await csms.stop()
    assert [msg["idTag"] for _, msg in csms.actions("Authorize")] == ["ab-12-cd"]  # only the one it started
    (_, start), = csms.actions("StartTransaction")
    assert start["idTag"] == "ab-12-cd"
    assert csms.violations() == []


@aio
async def test_trigger_meter_values_on_an_idle_connector_sends_what_its_meter_reads(tmp_path):
    csms = CentralSystem()
    charger = Charger(tmp_path, await csms.start())
    charger.start()
    try:
        await booted(csms)
        reading = (await charger.until(lambda c: c.measured, "a meter reading")).measured.energy_wh
        result = await csms.call(IDENTITY, call.TriggerMessage(requested_message="MeterValues", connector_id=1))
        assert result.status == "Accepted"
        await csms.wait_for(lambda: csms.actions("MeterValues"))
    finally:
        await charger.stop()
        await csms.stop()
    (_, meter), = csms.actions("MeterValues")
    assert meter["connectorId"] == 1 and "transactionId" not in meter
    values = {v["measurand"]: v for v in meter["meterValue"][0]["sampledValue"]}
    assert values["Energy.Active.Import.Register"]["context"] == "Trigger"
    assert int(values["Energy.Active.Import.Register"]["value"]) >= reading


def sent_wh(csms: CentralSystem) -> list[int]:
    """The energy register of every MeterValues the CSMS took, in order."""
    return [int(v["value"]) for _, msg in csms.actions("MeterValues") for mv in msg["meterValue"]
            for v in mv["sampledValue"] if v["measurand"] == "Energy.Active.Import.Register"]


async def charging_past_its_start(charger: Charger, csms: CentralSystem) -> int:
    """Plug and tap on a booted charge point; wait until a MeterValues carries energy above
    meterStart, which it returns."""
    await booted(csms)
    await charger.sim("plug")
    await charger.sim("tap", "04A1B2C3")
    await csms.wait_for(lambda: csms.actions("StartTransaction"))
    start = csms.actions("StartTransaction")[0][1]["meterStart"]
    await csms.wait_for(lambda: any(wh > start for wh in sent_wh(csms)), timeout=20)
    return int(start)


@aio
async def test_a_kill_while_charging_stops_the_transaction_at_no_less_than_it_sent(tmp_path):
    csms = CentralSystem()
    charger = Charger(tmp_path, await csms.start())
    charger.start()
    try:
        await charging_past_its_start(charger, csms)
        await charger.stop(signal.SIGKILL)  # the daemon and its uplink at once: a power cut
        charger.start()
        await csms.wait_for(lambda: csms.actions("StopTransaction"), timeout=30)
    finally:
        await charger.stop()
        await csms.stop()
    (_, stop), = csms.actions("StopTransaction")
    assert stop["reason"] == "PowerLoss" and stop["meterStop"] >= max(sent_wh(csms))
    assert csms.violations(killed=True) == []


@aio
async def test_a_kill_while_charging_closes_the_stored_session_at_no_less_than_the_csms_has(tmp_path):
    # Issue 22: the uplink had delivered 29 Wh, the store closed the power_loss session at 0 (its
    # checkpoint is once a minute). The uplink tells the daemon what the CSMS has taken, and the
    # daemon makes it durable at once: here before its first minute's checkpoint.
    import sqlite3
    csms = CentralSystem()
    charger = Charger(tmp_path, await csms.start())
    db_path = load(charger.path).store.state_dir / "sessions.db"

    def stored_wh() -> int:
        with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
            row = db.execute("SELECT meter_last_wh FROM sessions ORDER BY id DESC LIMIT 1").fetchone()
        return row[0] if row else -1
    charger.start()
    try:
        start = await charging_past_its_start(charger, csms)
        had = max(sent_wh(csms))
        await csms.wait_for(lambda: stored_wh() >= had, timeout=20)  # durable in the daemon's store
        await charger.stop(signal.SIGKILL)  # the daemon and its uplink at once: a power cut
        charger.start()
        await csms.wait_for(lambda: csms.actions("StopTransaction"), timeout=30)
    finally:
        await charger.stop()
        await csms.stop()
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        (reason, stop_wh), = db.execute("SELECT stop_reason, meter_stop_wh FROM sessions").fetchall()
    (_, stop), = csms.actions("StopTransaction")
    assert reason == "power_loss" and stop_wh >= had > start
    assert stop["meterStop"] >= stop_wh


def test_meter_stop_is_the_stored_and_signed_final_reading_and_the_next_meter_start_follows_it(tmp_path):
    # Issue 19 row 8: meterStop was 1-3 Wh below the stored session (the reading after the open came
    # later), and the next meterStart above the previous meterStop. Readings every 2 s; each EV is
    # unplugged once it has drawn 2 Wh more than the last reading shows, so the final reading (begun
    # after the open) is above the last sample while charging.
    import json

    from evsed.store.sessions import Store
    from test_daemon import ask as ask_daemon
    from test_daemon import running, until

    charger = Charger(tmp_path, 0)

    async def scenario(csms: CentralSystem) -> None:
        port = await csms.start()
        charger.path.write_text(charger.path.read_text().replace("ws://127.0.0.1:0/", f"ws://127.0.0.1:{port}/")
                                + "\n[timing]\nmeter_interval_s = 2\n")
        cfg = load(charger.path)
        try:
            await charge_twice(cfg)
        finally:
            await csms.stop()

    async def charge_twice(cfg) -> None:
        async with running(cfg) as daemon:
            await booted(csms)
            ctrl, bench = daemon.connectors[1], daemon.world.connector(1)
            for n in (1, 2):
                await ask_daemon(cfg, p.Plug())
                await ask_daemon(cfg, p.Tap(card="04A1B2C3"))
                await csms.wait_for(lambda: len(csms.actions("StartTransaction")) == n, timeout=20)
                await until(lambda: ctrl.last_reading is not None and ctrl.last_reading.power_total_w > 0, 10)
                sample = ctrl.last_reading
                await until(lambda: ctrl.last_reading is not sample, 10)  # a fresh reading: 2 s until the next

                def drawn_since_the_last_reading() -> float:
                    bench.integrate()
                    return bench.energy_wh_exact - ctrl.last_reading.energy_import_wh
                await until(lambda: drawn_since_the_last_reading() >= 2, 10)
                await ask_daemon(cfg, p.Unplug())
                await csms.wait_for(lambda: len(csms.actions("StopTransaction")) == n, timeout=20)
                opened = ctrl.last_reading
                await until(lambda: ctrl.last_reading is not opened, 10)  # a reading after the open, then the next EV

    csms = CentralSystem()
    asyncio.run(scenario(csms))
    starts = [msg for _, msg in csms.actions("StartTransaction")]
    stops = [msg for _, msg in csms.actions("StopTransaction")]
    rows = list(Store(load(charger.path).store.state_dir / "sessions.db").sessions())
    assert len(rows) == len(stops) == 2
    for start, stop, row in zip(starts, stops, rows):
        signed = json.loads(row["ocmf"].split("|")[1])
        begin, end = signed["RD"]
        assert start["meterStart"] == row["meter_start_wh"] == round(begin["RV"] * 1000)
        assert stop["meterStop"] == row["meter_stop_wh"] == round(end["RV"] * 1000)
        assert row["energy_wh"] == stop["meterStop"] - start["meterStart"] > 0
    assert starts[1]["meterStart"] == stops[0]["meterStop"]
    assert csms.violations() == []
