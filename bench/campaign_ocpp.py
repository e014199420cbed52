"""The OCPP side of the power-cut campaign (bench/campaign.py): the demo CSMS in a thread of the
campaign, so it outlives every kill and goes offline on demand, and the audit of the uplink's
durable queue (ocpp.sqlite) and of what the CSMS received against the daemon's sessions.

Messages are told apart by their OCPP unique id, which the uplink stores with each queued message
and sends again on a retry. A session's StartTransaction and StopTransaction are known by their
values (connector, idTag, meter, timestamp, reason), computed here from the daemon's events; a
PowerLoss stop by its idTag and reason only, since the uplink raises its meterStop and time to
what it had already sent of the session (what the strict CSMS's checks then hold it to).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sqlite3
import sys
import threading
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from simulator.csms import CentralSystem  # noqa: E402
from simulator.csms_checks import violations  # noqa: E402

TX = ("StartTransaction", "StopTransaction")
# the uplink beside the daemon, its reconnects kept short (a round lasts about a second)
OCPP_SECTION = """
[ocpp]
version = "1.6"
url = "ws://127.0.0.1:{port}/"
reconnect_min_s = 1
reconnect_max_s = 2
"""

# the daemon's stop reasons the campaign produces, as OCPP 1.6 names them (evsed/uplink/v16/messages.py)
REASONS = {"ev_disconnected": "EVDisconnected", "power_loss": "PowerLoss"}


class Failure(AssertionError):
    pass


class Csms:
    """simulator.csms.CentralSystem on its own event loop in a thread of the campaign."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="csms")
        self.thread.start()
        self.central: CentralSystem = self._call(self._create())
        self.port: int = self._call(self.central.start())
        self.online = True

    @staticmethod
    async def _create() -> CentralSystem:
        return CentralSystem()

    def _call(self, coro, timeout_s: float = 15.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def set_online(self, online: bool) -> None:
        """Offline: the server closes with its connections; online again on the same port."""
        if online != self.online:
            self._call(self.central.start(port=self.port) if online else self.central.stop())
            self.online = online

    def received(self) -> tuple[list[tuple[str, dict, str]], dict[int, dict]]:
        """(action, payload, unique id) of every CALL so far, in order; transaction id -> its Start."""
        async def snapshot():
            return ([(a, p, u) for _, a, p, u in self.central.messages], dict(self.central.transactions))
        return self._call(snapshot())

    def settled(self) -> None:
        """Until no charge point is connected: after a kill, every message the dead uplink's socket
        delivered has been recorded (a station ends only once its stream is read to the end)."""
        if self.online:
            self._call(self.central.wait_for(lambda: not self.central.stations, timeout=10))

    def boots(self) -> int:
        return sum(1 for _, action, _, _ in list(self.central.messages) if action == "BootNotification")

    def close(self) -> None:
        self.set_online(False)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def ms(text: str) -> str:
    """An ISO 8601 time as UTC with milliseconds (no float on the way: both sides compare exactly)."""
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    moment = moment.astimezone(dt.timezone.utc)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000).isoformat(timespec="milliseconds")


class Second(str):
    """A whole-second time told by an event from a later second: its milliseconds are lost, and the
    uplink's time may lie anywhere in that second (a stop told after its final reading is sent no
    earlier than a reading already sent: row 11's rule)."""

    def holds(self, stamp: str) -> bool:
        start = dt.datetime.fromisoformat(self)
        return start <= dt.datetime.fromisoformat(stamp) < start + dt.timedelta(seconds=1)


def precise(stamp: str, at: str) -> str:
    """A session's start or stop time as the uplink sends it: the session record's whole second
    with the milliseconds of the event that told it, when the event is from that second; a Second
    when it is from a later one."""
    whole, told = dt.datetime.fromisoformat(ms(stamp)), dt.datetime.fromisoformat(ms(at))
    if whole.microsecond != 0:
        return ms(stamp)
    return ms(at) if dt.timedelta(0) <= told - whole < dt.timedelta(seconds=1) else Second(ms(stamp))


def reconcile(expected: Counter, have: Counter) -> tuple[Counter, Counter, dict]:
    """What expected lacks and what have has beyond it, a message key whose time lies in the second
    of an expected Second counting as that key; and each such message key's expected key."""
    missing, extra, alias = expected - have, have - expected, {}
    for key in list(missing.elements()):
        when = key[-1]
        if not isinstance(when, Second):
            continue
        found = next((k for k in extra if k[:-1] == key[:-1] and when.holds(k[-1])), None)
        if found is not None:
            missing[key] -= 1
            extra[found] -= 1
            alias[found] = key
    return +missing, +extra, alias


def event_key(kind: str, data: dict) -> tuple:
    """The values of the message the uplink must send for a daemon session event (its outbox
    time in data["_at"])."""
    tag = str(data.get("id_tag") or "")[:20]
    if kind == "session.started":
        return ("StartTransaction", 1, tag, int(data.get("meter_start_wh") or 0),
                precise(data["started_at"], data["_at"]))
    reason = data.get("reason")
    if reason not in REASONS:
        raise Failure(f"session {data['session']} stopped as {reason!r}, which the campaign does not expect")
    if reason == "power_loss":
        return ("StopTransaction", tag or None, REASONS[reason])
    return ("StopTransaction", tag or None, int(data.get("meter_stop_wh") or 0), REASONS[reason],
            precise(data["stopped_at"], data["_at"]))


def message_key(action: str, payload: dict) -> tuple:
    if action == "StartTransaction":
        return (action, payload["connectorId"], payload["idTag"], payload["meterStart"], ms(payload["timestamp"]))
    if payload["reason"] == "PowerLoss":
        return (action, payload.get("idTag"), payload["reason"])
    return (action, payload.get("idTag"), payload["meterStop"], payload["reason"], ms(payload["timestamp"]))


class OcppAudit:
    """What the campaign knows of the uplink's queue, checked after every kill and at the end."""

    def __init__(self, state_file: Path, daemon_db: Path):
        self.path, self.daemon_db = state_file, daemon_db
        self.queued: dict[str, tuple] = {}       # unique id -> (action, session, payload) seen queued at a kill
        self.uid_of: dict[tuple, str] = {}       # (action, session) -> the one unique id it may have
        self.in_flight: Counter[str] = Counter()  # unique id -> kills it was received at yet still queued
        self.counts = {"ocpp_queue_snapshots": 0, "ocpp_tx_messages_queued_at_kills": 0,
                       "ocpp_messages_in_flight_at_kills": 0}

    def queue(self) -> tuple[list[tuple], int, int]:
        """The uplink's queue rows (unique id, action, session, payload, tx), its event seq and its
        dropped count, read-only; checks integrity first."""
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            if db.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                raise Failure(f"{self.path.name}: integrity_check failed")
            rows = db.execute("SELECT unique_id, action, session, payload, tx FROM queue ORDER BY id").fetchall()
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.OperationalError as exc:  # killed before its schema was committed
            if "no such table" in str(exc):
                return [], 0, 0
            raise
        finally:
            db.close()
        return rows, int(meta.get("seq", 0)), int(meta.get("dropped", 0))

    def queued_now(self, action: str, session: int) -> bool:
        """Whether the (running) uplink's queue holds this session's action."""
        if not self.path.exists():
            return False
        return any(a == action and s == str(session) for _, a, s, _, _ in self.queue()[0])

    def pending(self) -> bool:
        """Whether the uplink has transaction messages to send once it starts (both processes
        down): queued at the last kill, or session events it has not yet queued."""
        events = self.session_events() if self.daemon_db.exists() else []
        if not self.path.exists():
            return bool(events)
        rows, seq, _ = self.queue()
        return any(tx for *_, tx in rows) or bool(events and events[-1][0] > seq)

    def drained(self) -> bool:
        """The (running) uplink has queued every session event and sent every transaction message."""
        events = self.session_events()
        if not self.path.exists():
            return not events
        rows, seq, _ = self.queue()
        return (not events or seq >= events[-1][0]) and not any(tx for *_, tx in rows)

    def after_kill(self, csms: Csms) -> None:
        """Both processes are dead: nothing queued twice, nothing that left the queue lost, every
        session event the uplink acknowledged queued or delivered, nothing dropped."""
        if not self.path.exists():
            return
        csms.settled()
        rows, seq, dropped = self.queue()
        received, _ = csms.received()
        delivered = Counter(uid for _, _, uid in received)
        if dropped:
            raise Failure(f"the uplink dropped {dropped} transaction messages")
        uids = [r[0] for r in rows]
        if len(set(uids)) != len(uids):
            raise Failure(f"the uplink's queue holds a unique id twice: {uids}")
        for uid, action, session, payload, tx in rows:
            if action in TX and self.uid_of.setdefault((action, session), uid) != uid:
                raise Failure(f"{action} of session {session} queued twice: {self.uid_of[(action, session)]}, {uid}")
            if tx:
                seen = self.queued.setdefault(uid, (action, session, payload))
                if seen != (action, session, payload):
                    raise Failure(f"queued message {uid} changed: {seen} -> {(action, session, payload)}")
            if uid in delivered:  # the CSMS has it, the uplink had not yet marked it sent
                self.in_flight[uid] += 1
                self.counts["ocpp_messages_in_flight_at_kills"] = len(self.in_flight)
        lost = sorted(set(self.queued) - set(uids) - set(delivered))
        if lost:
            raise Failure(f"queued messages left the queue without reaching the CSMS: "
                          f"{[self.queued[u][:2] for u in lost]}")
        self.counts["ocpp_queue_snapshots"] += 1
        self.counts["ocpp_tx_messages_queued_at_kills"] = len(self.queued)
        self.acknowledged_are_kept(seq, rows, received)

    def first_contact(self) -> int | None:
        """The daemon's last event when the uplink first followed the charger (it starts from
        there: sessions begun before were never the CSMS's); None before it ever ran."""
        if not self.path.exists():
            return None
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'first_contact'").fetchone()
        except sqlite3.OperationalError:  # killed before its schema was committed
            return None
        finally:
            db.close()
        return int(row[0]) if row else None

    def session_events(self, up_to: int | None = None) -> list[tuple[int, str, dict]]:
        """The session events the uplink owes the CSMS: those of sessions begun after its first contact."""
        first = self.first_contact()
        if first is None:
            return []
        db = sqlite3.connect(f"file:{self.daemon_db}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT seq, at, type, data FROM events WHERE type IN ('session.started', "
                              "'session.stopped') AND seq <= ? ORDER BY seq", (up_to or 2**62,)).fetchall()
        finally:
            db.close()
        events = [(seq, kind, {**json.loads(data), "_at": at}) for seq, at, kind, data in rows]
        before = {data["session"] for seq, kind, data in events if kind == "session.started" and seq <= first}
        self.counts["sessions_before_first_contact"] = len(before)
        return [e for e in events if e[2]["session"] not in before]

    def acknowledged_are_kept(self, seq: int, rows: list[tuple], received: list[tuple]) -> None:
        """Each session event up to the uplink's seq has its message queued or delivered (counted by
        values: two sessions may share them)."""
        expected = Counter(event_key(kind, data) for _, kind, data in self.session_events(seq))
        messages = {uid: (a, json.loads(p)) for uid, a, _, p, _ in rows if a in TX}
        for action, payload, uid in received:
            if action in TX:
                messages.setdefault(uid, (action, payload))
        have = Counter(message_key(a, p) for a, p in messages.values())
        short, _, _ = reconcile(expected, have)
        if short:
            near = sorted(k for k in have if k[0] in {m[0] for m in short} and k not in expected)
            raise Failure(f"session events the uplink acknowledged have no message queued or sent: {dict(short)}; "
                          f"messages of that kind no event asked for: {near}")

    def final(self, csms: Csms) -> dict:
        """The CSMS online and the queue drained: every finished session reached the CSMS as exactly
        one StartTransaction and one StopTransaction with its values; repeats counted apart."""
        received, transactions = csms.received()
        times = Counter(uid for _, _, uid in received)
        first: dict[str, tuple[str, dict]] = {}
        for action, payload, uid in received:
            first.setdefault(uid, (action, payload))
        events = self.session_events()
        expected = Counter(event_key(kind, data) for _, kind, data in events)
        got = Counter(message_key(a, p) for a, p in first.values() if a in TX)
        missing, extra, alias = reconcile(expected, got)
        if missing or extra:
            raise Failure(f"transaction messages at the CSMS differ: missing {dict(missing)}, extra {dict(extra)}")
        sessions_of: dict[tuple, set] = {}
        for _, kind, data in events:
            sessions_of.setdefault(event_key(kind, data), set()).add(data["session"])
        for action, payload, uid in received:
            if action != "StopTransaction":
                continue
            start = transactions.get(payload["transactionId"])
            start_key = message_key("StartTransaction", start) if start else None
            stop_key = message_key(action, payload)
            if start is None or not (sessions_of[alias.get(start_key, start_key)]
                                     & sessions_of[alias.get(stop_key, stop_key)]):
                raise Failure(f"StopTransaction {payload} names transaction {payload['transactionId']}, "
                              f"given to another session's start: {start}")
        for uid, n in times.items():
            if n - 1 > self.in_flight[uid]:
                raise Failure(f"{first[uid][0]} {uid} reached the CSMS {n} times, in flight at only "
                              f"{self.in_flight[uid]} kills")
        once = [("CP", action, payload, uid) for uid, (action, payload) in first.items()]
        # meterStop never below what was sent, times never back (a kill may cut a boot's statuses short)
        breaches = [b for b in violations(once, transactions) if b.startswith("transaction")]
        if breaches:
            raise Failure(f"the CSMS's checks: {breaches[:5]}")
        repeats = Counter(first[uid][0] for uid, n in times.items() for _ in range(n - 1))
        return {**self.counts, "ocpp_sessions_checked": len({data["session"] for _, _, data in events}),
                "ocpp_transaction_messages_checked": sum(expected.values()),
                "ocpp_messages_received": dict(Counter(a for a, _, _ in received)),
                "ocpp_repeats_at_csms": dict(repeats)}
