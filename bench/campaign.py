"""Power-cut campaign: `evsed run` on the simulator killed with SIGKILL at random points of simulated
sessions (during start-up, while charging, while a session finishes, with events queued for
services), restarted each time, and checked:

- no finished session lost: every session.stopped a subscriber received is in the database
  with its reason and at least its energy (a final reading may add), through every later kill;
- the interrupted session closed as power_loss at the next start;
- no outbox event lost or duplicated: every event a subscriber received keeps its sequence
  number and content, sequence numbers stay unique, one start and one stop per session;
- the contactor open at start (the first status after READY);
- PRAGMA integrity_check ok after every kill.

    python bench/campaign.py [--kills 1000] [--seed N]      (make campaign; make test runs a few)
    python bench/campaign.py --load 3000                    (control-socket clients while charging)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evsed.control import client as control  # noqa: E402

CARD = "04A1B2C3"


class Failure(AssertionError):
    pass


class Subscriber(threading.Thread):
    """A service's view: the durable event stream, from the start of the outbox."""

    def __init__(self, runtime_dir: Path):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(str(control.socket_path(runtime_dir)))
        self.sock.sendall(b'{"cmd": "hello", "version": 1, "service": "campaign"}\n'
                          b'{"cmd": "subscribe", "after": 0}\n')
        self.events: list[dict] = []
        self.start()

    def run(self) -> None:
        buf = b""
        try:
            while chunk := self.sock.recv(65536):
                buf += chunk
                *done, buf = buf.split(b"\n")
                for line in done:
                    msg = json.loads(line)
                    if isinstance(msg.get("seq"), int) and "type" in msg:
                        self.events.append(msg)
        except OSError:
            pass

    def close(self) -> list[dict]:
        self.sock.close()
        self.join(2)
        return list(self.events)


class Campaign:
    def __init__(self, workdir: Path, seed: int):
        self.rng = random.Random(seed)
        self.workdir = workdir
        text = (ROOT / "config/simulator.toml").read_text()
        text += (f'\n[store]\nstate_dir = "{workdir / "state"}"\nruntime_dir = "{workdir / "run"}"\n'
                 "checkpoint_s = 1\n")
        self.config = workdir / "evsed.toml"
        self.config.write_text(text)
        self.runtime = workdir / "run"
        self.db = workdir / "state/sessions.db"
        self.finished: dict[int, tuple] = {}  # session id -> (reason, energy_wh) from session.stopped
        self.seen: dict[int, tuple] = {}  # outbox seq -> (type, data) a subscriber received
        self.interrupted: list[int] = []  # sessions open in the database at the last kill
        self.counts = {"kills": 0, "during_start": 0, "while_charging": 0, "while_finishing": 0, "idle": 0,
                       "sessions_finished": 0, "closed_as_power_loss": 0, "closed_as_power_loss_checked": 0,
                       "events_checked": 0}

    def start(self) -> subprocess.Popen:
        self.log = open(self.workdir / "daemon.log", "wb")  # this start's log, for a failure's message
        return subprocess.Popen([sys.executable, "-m", "evsed", "run", "-c", str(self.config)],
                                stdout=subprocess.DEVNULL, stderr=self.log, cwd=ROOT)

    def last_log(self) -> str:
        self.log.close()
        return (self.workdir / "daemon.log").read_text(errors="replace")[-3000:]

    def ready(self, proc: subprocess.Popen, timeout_s: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise Failure(f"the daemon exited with {proc.returncode} at start: {self.last_log()}")
            try:
                return control.request(self.runtime, {"cmd": "status"}, timeout_s=1.0)
            except control.ControlError:
                time.sleep(0.01)
        raise Failure("the daemon did not start")

    def ask(self, req: dict) -> dict:
        return control.request(self.runtime, req, timeout_s=2.0)

    def one(self) -> None:
        proc = self.start()
        if self.rng.random() < 0.1:  # during start-up: before, during or just after recovery
            time.sleep(self.rng.uniform(0.0, 0.4))
            self.kill(proc, "during_start")
            return
        status = self.ready(proc)
        self.recovered()
        if any(c["contactor"] != "open" for c in status["connectors"]):
            raise Failure(f"contactor not open at start: {status}")
        sub = Subscriber(self.runtime)
        try:
            self.ask({"cmd": "sim", "action": "unplug", "connector": 1})
            self.ask({"cmd": "sim", "action": "plug", "connector": 1})
            self.ask({"cmd": "sim", "action": "tap", "card": CARD, "connector": 1})
            phase = self.rng.choice(["while_charging", "while_finishing", "idle"])
            time.sleep(self.rng.uniform(0.02, 0.3))
            if phase != "while_charging":
                self.ask({"cmd": "sim", "action": "unplug", "connector": 1})
                time.sleep(self.rng.uniform(0.0, 0.02) if phase == "while_finishing" else 0.15)
        finally:
            self.kill(proc, phase if "phase" in locals() else "idle")
            self.record(sub.close())

    def kill(self, proc: subprocess.Popen, phase: str) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.counts["kills"] += 1
        self.counts[phase] += 1
        self.check_db()

    def record(self, events: list[dict]) -> None:
        for e in events:
            data = {k: v for k, v in e.items() if k not in ("seq", "at", "type", "connector")}
            key = (e["type"], json.dumps(data, sort_keys=True))
            if self.seen.get(e["seq"], key) != key:
                raise Failure(f"event {e['seq']} changed: {self.seen[e['seq']]} -> {key}")
            self.seen[e["seq"]] = key
            if e["type"] == "session.stopped":
                self.finished[data["session"]] = (data["reason"], data["energy_wh"])

    def check_db(self) -> None:
        if not self.db.exists():
            return
        db = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            if db.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                raise Failure("integrity_check failed")
            rows = {r[0]: r[1:] for r in db.execute("SELECT id, stop_reason, energy_wh, stopped_at FROM sessions")}
            # open now, plus any still waiting to be checked: a kill during start-up may come after the
            # start's recovery closed them and before READY, when recovered() would have checked them
            self.interrupted = sorted(set(self.interrupted) | {sid for sid, row in rows.items() if row[2] is None})
            for sid, (reason, energy) in self.finished.items():
                # a final meter reading may still raise the energy after the stop, never lower it
                if sid not in rows or rows[sid][0] != reason or rows[sid][1] < energy:
                    raise Failure(f"finished session {sid} ({reason}, {energy} Wh) lost or changed: {rows.get(sid)}")
            events = {seq: (t, json.dumps(json.loads(d), sort_keys=True))
                      for seq, t, d in db.execute("SELECT seq, type, data FROM events")}
            for seq, key in self.seen.items():
                if events.get(seq) != key:
                    raise Failure(f"event {seq} {key[0]} lost or changed")
            per_session: dict[tuple, int] = {}
            for t, d in events.values():
                if t in ("session.started", "session.stopped"):
                    k = (t, json.loads(d)["session"])
                    per_session[k] = per_session.get(k, 0) + 1
            twice = [k for k, n in per_session.items() if n > 1]
            if twice:
                raise Failure(f"events duplicated: {twice}")
            self.counts["events_checked"] = len(self.seen)
        finally:
            db.close()

    def recovered(self) -> None:
        """The sessions open at the last kill are closed as power_loss once the daemon is READY."""
        if not self.interrupted:
            return
        db = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            for sid in self.interrupted:
                row = db.execute("SELECT stop_reason, stopped_at FROM sessions WHERE id = ?", (sid,)).fetchone()
                if row is None or row[0] != "power_loss" or row[1] is None:
                    raise Failure(f"interrupted session {sid} not closed as power_loss: {row}")
        finally:
            db.close()
        self.counts["closed_as_power_loss_checked"] += len(self.interrupted)
        self.interrupted = []

    def run(self, kills: int) -> dict:
        started = time.monotonic()
        while self.counts["kills"] < kills:
            self.one()
        proc = self.start()  # the last start: recovery after the last kill
        try:
            self.ready(proc)
            self.recovered()
        finally:
            proc.terminate()
            proc.wait(10)
        self.check_db()
        db = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            still_open = db.execute("SELECT id FROM sessions WHERE stopped_at IS NULL").fetchall()
            if still_open:
                raise Failure(f"sessions left open after recovery: {still_open}")
            reasons = dict(db.execute("SELECT stop_reason, COUNT(*) FROM sessions GROUP BY stop_reason").fetchall())
        finally:
            db.close()
        self.counts["sessions_finished"] = len(self.finished)
        self.counts["closed_as_power_loss"] = reasons.get("power_loss", 0)
        self.counts["sessions_total"] = sum(reasons.values())
        self.counts["stop_reasons"] = reasons
        self.counts["seconds"] = round(time.monotonic() - started, 1)
        return self.counts


def load(workdir: Path, clients: int) -> dict:
    """Thousands of control-socket clients at once while the EV charges: how many the daemon
    served or turned away (it caps at 64 connections), whether charging held, and how long the
    stop took (unplug to contactor open, as status shows it) under that load."""
    import asyncio
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # the clients' descriptors, not the daemon's
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, clients + 256)), hard))
    camp = Campaign(workdir, 0)
    proc = camp.start()
    try:
        camp.ready(proc)
        camp.ask({"cmd": "sim", "action": "plug", "connector": 1})
        camp.ask({"cmd": "sim", "action": "tap", "card": CARD, "connector": 1})
        deadline = time.monotonic() + 10
        while camp.ask({"cmd": "status"})["connectors"][0]["contactor"] != "closed":
            if time.monotonic() > deadline:
                raise Failure("the EV did not start charging")
            time.sleep(0.02)
        path = str(control.socket_path(camp.runtime))
        served = refused = 0
        latencies: list[float] = []

        async def client() -> None:
            nonlocal served, refused
            t0 = time.perf_counter()
            try:
                reader, writer = await asyncio.open_unix_connection(path)
                writer.write(b'{"cmd": "status"}\n')
                await writer.drain()
                line = await asyncio.wait_for(reader.readline(), 30)
                writer.close()
            except (OSError, asyncio.TimeoutError):
                refused += 1
                return
            if line.startswith(b"{") and b'"connectors"' in line:
                served += 1
                latencies.append(time.perf_counter() - t0)
            else:
                refused += 1

        async def flood(at_once: int) -> None:
            gate = asyncio.Semaphore(at_once)

            async def gated() -> None:
                async with gate:
                    await client()
            await asyncio.gather(*(gated() for _ in range(clients)))

        t0 = time.perf_counter()
        asyncio.run(flood(clients))  # a burst: all at once, far past the cap of 64
        flood_s = time.perf_counter() - t0
        burst = {"served": served, "turned_away": refused}
        served = refused = 0
        latencies.clear()
        t0 = time.perf_counter()
        asyncio.run(flood(48))  # steady: 48 at a time, under the cap
        steady_s = time.perf_counter() - t0
        charging_held = camp.ask({"cmd": "status"})["connectors"][0]["contactor"] == "closed"
        t0 = time.perf_counter()
        camp.ask({"cmd": "sim", "action": "unplug", "connector": 1})
        while camp.ask({"cmd": "status"})["connectors"][0]["contactor"] != "open":
            time.sleep(0.001)
        stop_ms = (time.perf_counter() - t0) * 1000
        alive = proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(10)
    latencies.sort()
    pct = (lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 1)
           if latencies else None)
    return {"clients": clients, "burst": {**burst, "s": round(flood_s, 2)},
            "steady_48_at_a_time": {"served": served, "turned_away": refused, "s": round(steady_s, 2),
                                    "status_ms_p50": pct(0.5), "status_ms_p99": pct(0.99)},
            "charging_held": charging_held,
            "unplug_to_open_seen_ms": round(stop_ms, 1), "daemon_alive": alive}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=1000)
    p.add_argument("--seed", type=int, default=int(time.time()))
    p.add_argument("--load", type=int, metavar="CLIENTS", help="instead: this many control-socket clients at "
                   "once while charging")
    args = p.parse_args(argv)
    if args.load:
        with tempfile.TemporaryDirectory(prefix="evsed-load-") as tmp:
            figures = load(Path(tmp), args.load)
        print(f"control-socket load: {json.dumps(figures)}")
        return 0 if figures["charging_held"] and figures["daemon_alive"] else 1
    with tempfile.TemporaryDirectory(prefix="evsed-campaign-") as tmp:
        try:
            counts = Campaign(Path(tmp), args.seed).run(args.kills)
        except Failure as exc:
            print(f"campaign FAILED (seed {args.seed}): {exc}", file=sys.stderr)
            return 1
    print(f"power-cut campaign (seed {args.seed}): {json.dumps(counts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
