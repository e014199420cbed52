"""Power-cut campaign: `evsed run` on the simulator with the contactor's relay modelled by a board
process (simulator/board.py, no drop-out circuit: the relay holds whatever the coil pin says, through
the kill), and in a share of the rounds the OCPP uplink as the daemon's child, talking to the demo
CSMS (simulator/csms.py) that the campaign runs across kills, sometimes offline. A power cut is
SIGKILL to the daemon's whole process group (daemon and uplink at once), at random points of
simulated sessions: during start-up, while charging, while a session finishes, while the uplink
holds messages for an offline CSMS, and while it sends them after the CSMS comes back. Checked:

- no finished session lost: every session.stopped a subscriber received is in the database
  with its reason and at least its energy (a final reading may add), through every later kill;
- the interrupted session closed as power_loss at the next start;
- no outbox event lost or duplicated: every event a subscriber received keeps its sequence
  number and content, sequence numbers stay unique, one start and one stop per session;
- the contactor open at start: the board's relay reads open when the daemon is READY, after
  kills that left it closed (every kill while charging: checked closed at the kill);
- PRAGMA integrity_check ok after every kill (sessions.db and the uplink's ocpp.sqlite);
- OCPP, after every kill: the uplink's queue never holds a message twice (one unique id per
  session's StartTransaction/StopTransaction, ever), no transaction message leaves the queue
  without reaching the CSMS, every session event the uplink acknowledged has its message queued
  or delivered, nothing dropped; at the end (CSMS online, queue drained): every session in the
  store reached the CSMS as exactly one StartTransaction and one StopTransaction, by unique id,
  with its idTag, meterStart/meterStop, timestamps and reason, and each StopTransaction names a
  transaction id the CSMS gave that session's start.

Repeats: delivery is at least once. A message the CSMS received but the uplink had not yet
marked sent when the power went is sent again, with the same unique id (a CSMS may dedupe on it;
the demo CSMS does not). The campaign counts those repeats apart (ocpp_repeats_at_csms) and
fails on any repeat of a message that was not in flight (received, still queued) at a kill.
StatusNotifications are not tracked for loss: the uplink collapses them to the newest per
connector by design.

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
import re
import tempfile
import threading
import time
from typing import TypeVar
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from campaign_ocpp import OCPP_SECTION, Csms, Failure, OcppAudit  # noqa: E402 - bench/ is on the path: the script's own directory
from evsed import protocol as p  # noqa: E402
from evsed.control import client as control  # noqa: E402
from simulator.board import BoardProcess  # noqa: E402

CARD = "04A1B2C3"
R = TypeVar("R", bound=p.Reply)


def group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs (zombies, awaiting their parent, do not)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError):
            continue
        if int(group) == pgid and state != "Z":
            return True
    return False


class Subscriber(threading.Thread):
    """A service's view: the durable event stream, from the start of the outbox."""

    def __init__(self, runtime_dir: Path):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(str(control.socket_path(runtime_dir)))
        # acking nothing past 0 holds every event in the outbox: the daemon prunes at start what
        # every known service acknowledged, and the uplink acknowledges as it queues
        self.sock.sendall(b"".join(p.encode_line(c.to_wire()) for c in (
            p.Hello(service="campaign"), p.Subscribe(after=0), p.Ack(seq=0))))
        self.events: list[p.Event] = []
        self.start()

    def run(self) -> None:
        buf = b""
        try:
            while chunk := self.sock.recv(65536):
                buf += chunk
                *done, buf = buf.split(b"\n")
                for line in done:
                    msg = p.parse_pushed(p.decode_line(line))
                    if isinstance(msg, p.Event) and msg.seq is not None:
                        self.events.append(msg)
        except OSError:
            pass

    def close(self) -> list[p.Event]:
        self.sock.close()
        self.join(2)
        return list(self.events)


class Campaign:
    """ocpp_share: the share of rounds that run the OCPP uplink (the CI form keeps it small: each
    such round starts a second Python process). board: the relay in a board process of its own."""

    SITUATIONS = ("during_start", "while_charging", "while_finishing", "idle", "csms_offline_queued",
                  "while_ocpp_draining")

    def __init__(self, workdir: Path, seed: int, ocpp_share: float = 0.3, board: bool = True):
        self.rng = random.Random(seed)
        self.workdir, self.ocpp_share = workdir, ocpp_share
        self.runtime = workdir / "run"
        self.db = workdir / "state/sessions.db"
        self.pins = workdir / "pins" if board else None
        self.plain = self.write_config("evsed.toml", board=False)  # the relay in process (--load)
        self.config = self.write_config("evsed-board.toml") if board else self.plain
        self.board: BoardProcess | None = None
        self.csms: Csms | None = None
        self.ocpp: OcppAudit | None = None
        self.finished: dict[int, tuple] = {}  # session id -> (reason, energy_wh) from session.stopped
        self.seen: dict[int, tuple] = {}  # outbox seq -> (type, data) a subscriber received
        self.interrupted: list[int] = []  # sessions open in the database at the last kill
        self.relay_closed = False  # the board's relay as the last kill left it
        self.counts: dict = {"kills": 0, **{s: 0 for s in self.SITUATIONS}, "ocpp_rounds": 0,
                             "csms_offline_rounds": 0, "sessions_finished": 0, "closed_as_power_loss": 0,
                             "closed_as_power_loss_checked": 0, "events_checked": 0,
                             "relay_closed_at_kill": 0, "relay_open_at_ready_after_closed": 0,
                             "relay_open_at_ready_checked": 0}

    def write_config(self, name: str, extra: str = "", board: bool = True) -> Path:
        text = (ROOT / "config/simulator.toml").read_text()
        if board and self.pins is not None:
            # no drop-out circuit: after a kill only evsed's next start can release the relay
            text, n = re.subn(r"^\[connector\.contactor\]\n", lambda m: m.group(0) + f'board = "{self.pins}"\n',
                              text, flags=re.M)
            assert n == 1
        text += (f'\n[store]\nstate_dir = "{self.workdir / "state"}"\nruntime_dir = "{self.runtime}"\n'
                 "checkpoint_s = 1\n") + extra
        path = self.workdir / name
        path.write_text(text)
        return path

    def with_ocpp(self, port: int) -> Path:
        return self.write_config("evsed-ocpp.toml", OCPP_SECTION.format(port=port))

    def start(self, config: Path | None = None) -> subprocess.Popen:
        self.log = open(self.workdir / "daemon.log", "wb")  # this start's log, for a failure's message
        # a session of its own: the power cut takes the daemon's process group, its services too
        return subprocess.Popen([sys.executable, "-m", "evsed", "run", "-c", str(config or self.config)],
                                stdout=subprocess.DEVNULL, stderr=self.log, cwd=ROOT, start_new_session=True)

    def last_log(self) -> str:
        self.log.close()
        return (self.workdir / "daemon.log").read_text(errors="replace")[-3000:]

    def ready(self, proc: subprocess.Popen, timeout_s: float = 20.0) -> p.StatusReply:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise Failure(f"the daemon exited with {proc.returncode} at start: {self.last_log()}")
            try:
                status = control.ask(self.runtime, p.Status(), timeout_s=1.0)
            except control.ControlError:
                time.sleep(0.01)
                continue
            self.relay_at_ready(status)
            return status
        raise Failure("the daemon did not start")

    def relay_at_ready(self, status: p.StatusReply) -> None:
        """The first status answered comes once the daemon is READY: the relay must be open."""
        if any(c.contactor != "open" for c in status.connectors):
            raise Failure(f"contactor not open at start: {status}")
        if self.board is None:
            return
        if self.board.pins.relay():
            raise Failure(f"the board's relay is closed at READY (coil {self.board.pins.coil()})")
        self.counts["relay_open_at_ready_checked"] += 1
        self.counts["relay_open_at_ready_after_closed"] += self.relay_closed
        self.relay_closed = False

    def ask(self, command: p.Command[R]) -> R:
        return control.ask(self.runtime, command, timeout_s=2.0)

    def wait(self, predicate, what: str, timeout_s: float = 15.0) -> None:
        """Poll a condition another process brings about; the timeout only guards against a hang."""
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise Failure(f"{what} not within {timeout_s} s: {self.last_log()}")
            time.sleep(0.01)

    def contactor(self) -> str:
        return self.ask(p.Status()).connectors[0].contactor

    def one(self) -> None:
        # every round draws the same numbers, so a seed fixes the rounds' plan whatever the timing
        draw = [self.rng.random() for _ in range(4)]
        plan = self.rng.choice(["while_charging", "while_finishing", "idle"])
        waits = [self.rng.uniform(0.0, 0.4), self.rng.uniform(0.0, 0.05), self.rng.uniform(0.02, 0.3),
                 self.rng.uniform(0.0, 0.02)]
        first = self.counts["kills"] == 0  # holds the outbox (Subscriber) before any uplink acks
        ocpp = self.csms is not None and not first and draw[0] < self.ocpp_share
        config = self.config
        if ocpp:
            assert self.csms is not None
            config = self.with_ocpp(self.csms.port)
            self.counts["ocpp_rounds"] += 1
            self.csms.set_online(draw[1] >= 0.35)
            self.counts["csms_offline_rounds"] += not self.csms.online
        boots = self.csms.boots() if self.csms else 0
        pending = ocpp and self.ocpp is not None and self.ocpp.pending()
        proc = self.start(config)
        if not first and draw[2] < 0.1:  # during start-up: before, during or just after recovery
            time.sleep(waits[0])
            self.kill(proc, "during_start")
            return
        self.ready(proc)
        self.recovered()
        sub = Subscriber(self.runtime)
        phase = "idle"
        try:
            if ocpp and self.csms is not None and self.csms.online:
                self.wait(lambda: self.csms.boots() > boots, "the uplink's BootNotification")
                if draw[3] < 0.5 and pending:
                    phase = "while_ocpp_draining"  # the queue of earlier rounds goes out now
                    time.sleep(waits[1])
                    return
            if ocpp and self.csms is not None and not self.csms.online:
                plan = "csms_offline_queued"
                # a session begun before the uplink first followed the charger is never the CSMS's:
                # none would be queued for it
                assert self.ocpp is not None
                self.wait(lambda: self.ocpp.first_contact() is not None, "the uplink's first contact")
            phase = self.session(plan, waits[2], waits[3])
        finally:
            self.kill(proc, phase)
            self.record(sub.close())

    def session(self, phase: str, charge_s: float, finish_s: float) -> str:
        """Plug, tap, and one of: kill while charging, just after the unplug, a while after it, or
        (CSMS offline) once the uplink has queued the session's StopTransaction."""
        self.ask(p.Unplug(connector=1))
        self.ask(p.Plug(connector=1))
        self.ask(p.Tap(card=CARD, connector=1))
        if phase in ("while_charging", "csms_offline_queued"):
            self.wait(lambda: self.contactor() == "closed", "the contactor closed")
        time.sleep(charge_s)
        if phase == "while_charging":
            return phase
        self.ask(p.Unplug(connector=1))
        if phase == "csms_offline_queued":
            assert self.ocpp is not None
            session = self.newest_session()
            self.wait(lambda: self.ocpp.queued_now("StopTransaction", session), "the StopTransaction queued")
        else:
            time.sleep(finish_s if phase == "while_finishing" else 0.15)
        return phase

    def newest_session(self) -> int:
        db = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            return int(db.execute("SELECT MAX(id) FROM sessions").fetchone()[0])
        finally:
            db.close()

    def kill(self, proc: subprocess.Popen, phase: str) -> None:
        """The power cut: every process of the daemon's group at once (the uplink is its child)."""
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        self.wait(lambda: not group_alive(proc.pid), "the daemon's process group gone")
        self.counts["kills"] += 1
        self.counts[phase] += 1
        if self.board is not None:
            self.relay_closed = self.board.pins.relay()
            if phase == "while_charging" and not self.relay_closed:
                raise Failure("killed while charging, yet the board's relay is open")
            self.counts["relay_closed_at_kill"] += self.relay_closed
        self.check_db()
        if self.ocpp is not None and self.csms is not None:
            self.ocpp.after_kill(self.csms)

    def record(self, events: list[p.Event]) -> None:
        for e in events:
            assert e.seq is not None
            data = {k: v for k, v in e.to_wire().items() if k not in ("seq", "at", "type", "connector")}
            key = (e.TYPE, json.dumps(data, sort_keys=True))
            if self.seen.get(e.seq, key) != key:
                raise Failure(f"event {e.seq} changed: {self.seen[e.seq]} -> {key}")
            self.seen[e.seq] = key
            if isinstance(e, p.SessionStopped):
                self.finished[e.session] = (e.reason, e.energy_wh)

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
        if self.pins is not None:
            self.board = BoardProcess(self.pins, dropout_s=0)
        if self.ocpp_share > 0:
            self.csms = Csms()
            self.ocpp = OcppAudit(self.workdir / "state/services/ocpp.sqlite", self.db)
        try:
            while self.counts["kills"] < kills:
                self.one()
            self.last_start()
        finally:
            if self.csms is not None:
                self.csms.close()
            if self.board is not None:
                self.board.stop()
        self.counts["seconds"] = round(time.monotonic() - started, 1)
        return self.counts

    def last_start(self) -> None:
        """Recovery after the last kill; with OCPP, the CSMS online until the uplink has sent all."""
        config = self.config
        if self.csms is not None:
            self.csms.set_online(True)
            config = self.with_ocpp(self.csms.port)
        proc = self.start(config)
        try:
            self.ready(proc)
            self.recovered()
            if self.ocpp is not None:
                self.wait(self.ocpp.drained, "the uplink's queue sent", timeout_s=60)
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
        if self.ocpp is not None and self.csms is not None:
            self.counts.update(self.ocpp.final(self.csms))
            owed = self.counts["sessions_total"] - self.counts.get("sessions_before_first_contact", 0)
            if self.counts["ocpp_transaction_messages_checked"] != 2 * owed:  # a stop never told, or told twice
                raise Failure(f"{owed} sessions owed to the CSMS, {self.counts['ocpp_transaction_messages_checked']} "
                              "Start/StopTransaction for them (each needs one of each)")
            if self.counts["ocpp_sessions_checked"] != owed:
                raise Failure(f"{self.counts['sessions_total']} sessions in the store, "
                              f"{self.counts.get('sessions_before_first_contact', 0)} begun before the uplink's "
                              f"first contact, {self.counts['ocpp_sessions_checked']} with OCPP messages")



def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=1000)
    p.add_argument("--seed", type=int, default=int(time.time()))
    p.add_argument("--load", type=int, metavar="CLIENTS", help="instead: this many control-socket clients at "
                   "once while charging")
    args = p.parse_args(argv)
    if args.load:
        from control_load import load
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
    print(summary(args.seed, counts))
    return 0


def summary(seed: int, c: dict) -> str:
    situations = ", ".join(f"{s} {c[s]}" for s in Campaign.SITUATIONS)
    lines = [f"power-cut campaign (seed {seed}): {c['kills']} kills in {c['seconds']} s",
             f"  kills by situation: {situations}",
             f"  sessions: {c['sessions_total']} in the store, all checked ({c['sessions_finished']} seen finished by "
             f"a subscriber, {c['closed_as_power_loss']} closed as power_loss, {c['closed_as_power_loss_checked']} "
             f"of them checked at the next start); {c['events_checked']} outbox events checked",
             f"  relay: closed at {c['relay_closed_at_kill']} kills, open at READY at {c['relay_open_at_ready_checked']} "
             f"starts ({c['relay_open_at_ready_after_closed']} after a kill that left it closed)"]
    if "ocpp_sessions_checked" in c:
        lines.append(
            f"  OCPP: {c['ocpp_rounds']} rounds with the uplink ({c['csms_offline_rounds']} with the CSMS offline); "
            f"{c['ocpp_transaction_messages_checked']} Start/StopTransaction checked for {c['ocpp_sessions_checked']} "
            f"sessions ({c.get('sessions_before_first_contact', 0)} earlier ones began before the uplink's first "
            f"contact: not the CSMS's); {c['ocpp_tx_messages_queued_at_kills']} transaction messages seen queued at kills, "
            f"{c['ocpp_messages_in_flight_at_kills']} in flight at a kill (received by the CSMS, not yet marked sent); "
            f"repeats at the CSMS: {c['ocpp_repeats_at_csms'] or 'none'}")
    return "\n".join(lines + [f"  {json.dumps(c)}"])


if __name__ == "__main__":
    sys.exit(main())
