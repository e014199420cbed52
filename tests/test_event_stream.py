"""The control socket as the services see it: the durable event stream, authorizers on the
socket, and a socket that no client can use to stop the daemon."""

import asyncio
import json
import os
import queue
import select
import signal
import subprocess
import sys
import threading

from evsed import protocol as p
from evsed import config
from evsed.control import client as control
from evsed.control import connection, roles
from evsed.services.link import Link
from test_daemon import ask, charging, running, start_process, until, write_config


async def take(events, predicate, limit=500):
    """Events from the stream until predicate(event) holds; returns them all (the last matched)."""
    seen = []
    async with asyncio.timeout(10):
        async for event in events:
            seen.append(event)
            if predicate(event) or len(seen) >= limit:
                return seen
    raise AssertionError("the stream ended")


def test_a_service_sees_a_session_as_durable_numbered_events_and_live_samples(tmp_path):
    cfg = config.load(write_config(tmp_path))

    async def scenario():
        async with running(cfg):
            link = await Link.connect(cfg.store.runtime_dir, "test")
            stream = link.events(after=0)
            await ask(cfg, p.Plug())
            await ask(cfg, p.Tap(card="04A1B2C3"))
            seen = await take(stream, lambda e: e.TYPE == "session.sample" and e.power_w > 0)
            await ask(cfg, p.Unplug())
            seen += await take(stream, lambda e: e.TYPE == "session.stopped")
            await link.close()
            return seen

    seen = asyncio.run(scenario())
    durable = [e for e in seen if e.seq is not None]
    seqs = [e.seq for e in durable]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # contiguous, in order, none twice
    types = [e.TYPE for e in durable]
    assert types.index("session.started") < types.index("contactor.closed") < types.index("session.stopped")
    started = next(e for e in durable if e.TYPE == "session.started")
    assert started.id_tag == "04A1B2C3" and started.card_name == "Alice" and started.group == "family"
    stopped = durable[-1]
    assert stopped.reason == "ev_disconnected" and stopped.session == started.session
    samples = [e for e in seen if e.TYPE == "session.sample"]
    assert samples and all(e.seq is None for e in samples)  # live only: never written to the SD card
    assert all(e.at.endswith("Z") and len(e.at) == 24 for e in seen)  # UTC, milliseconds


def test_a_service_resumes_after_its_last_ack_and_sees_nothing_twice(tmp_path):
    cfg = config.load(write_config(tmp_path))

    async def scenario():
        async with charging(cfg):
            link = await Link.connect(cfg.store.runtime_dir, "ocpp")
            first = [e async for e in _durable(link.events(after=0), count=4)]
            await link.ack(first[1].seq)
            await link.close()
            await until(lambda: True)
            again = await Link.connect(cfg.store.runtime_dir, "ocpp")
            for _ in range(200):  # the ack goes through the store thread
                if again.hello.acked == first[1].seq:
                    break
                await again.close()
                again = await Link.connect(cfg.store.runtime_dir, "ocpp")
            resumed = [e async for e in _durable(again.events(), count=2)]
            await again.close()
            return first, resumed

    first, resumed = asyncio.run(scenario())
    assert [e.seq for e in resumed] == [first[2].seq, first[3].seq]
    assert resumed[0] == first[2]


def test_a_service_new_to_the_charger_starts_from_now_not_with_its_history(tmp_path):
    cfg = config.load(write_config(tmp_path))

    async def scenario():
        async with charging(cfg):  # a session's events are in the outbox before the service exists
            # the store commits them on its own thread: wait until the last of the start (the
            # contactor's close) is streamed, as another service sees it, before the newcomer's hello
            observer = await Link.connect(cfg.store.runtime_dir, "observer")
            async with asyncio.timeout(10):
                async for event in observer.events(after=0):
                    if isinstance(event, p.ContactorClosed):
                        break
            await observer.close()
            link = await Link.connect(cfg.store.runtime_dir, "newcomer")
            assert link.hello.acked == 0 and link.hello.last_seq > 0
            history = link.hello.last_seq
            stream = link.events()
            await ask(cfg, p.Unplug())
            seen = [e async for e in _durable(stream, count=1)]
            await link.close()
            return history, seen

    history, seen = asyncio.run(scenario())
    assert seen[0].seq == history + 1  # the first event after its hello, none before


async def _durable(events, count):
    got = 0
    async with asyncio.timeout(10):
        async for event in events:
            if event.seq is not None:
                yield event
                got += 1
                if got == count:
                    return


def test_kill_9_of_the_daemon_loses_no_event_and_repeats_none(tmp_path):
    path = write_config(tmp_path)
    cfg = config.load(path)
    proc = start_process(path)

    async def before_kill():
        link = await Link.connect(cfg.store.runtime_dir, "mqtt")
        await ask(cfg, p.Plug())
        await ask(cfg, p.Tap(card="04A1B2C3"))
        seen = []
        async with asyncio.timeout(10):
            async for event in link.events(after=0):
                if event.seq is not None:
                    seen.append(event)
                if event.TYPE == "contactor.closed":
                    break
        await link.ack(seen[-1].seq)
        status = await ask(cfg, p.Ping())  # a round trip after the ack: it has reached the daemon
        await link.close()
        return seen, status

    seen, _ = asyncio.run(before_kill())
    for _ in range(1000):  # the ack is made durable by the store thread
        with control_db(cfg) as db:
            if db.execute("SELECT seq FROM service_acks WHERE service='mqtt'").fetchone() == (seen[-1].seq,):
                break
    proc.kill()
    proc.wait(timeout=10)
    proc.stderr.close()
    proc = start_process(path)

    async def after_restart():
        link = await Link.connect(cfg.store.runtime_dir, "mqtt")
        acked = link.hello.acked
        events = [e async for e in _durable(link.events(), count=1)]
        await link.close()
        return acked, events

    acked, (next_event,) = asyncio.run(after_restart())
    proc.send_signal(signal.SIGTERM)
    proc.stderr.read()
    proc.wait(timeout=10)
    assert acked == seen[-1].seq
    assert next_event.seq > acked  # nothing it acknowledged comes again
    with control_db(cfg) as db:  # and nothing after the ack was lost: the outbox is gap-free from there
        seqs = [r[0] for r in db.execute("SELECT seq FROM events WHERE seq > ? ORDER BY seq", (acked,))]
        types = [r[0] for r in db.execute("SELECT type FROM events WHERE seq > ? ORDER BY seq", (acked,))]
    assert seqs == list(range(acked + 1, acked + 1 + len(seqs))) and next_event.seq == acked + 1
    assert "session.stopped" in types  # the killed session, closed as power_loss at the restart


class control_db:
    def __init__(self, cfg):
        import sqlite3
        self.db = sqlite3.connect(f"file:{cfg.store.state_dir / 'sessions.db'}?mode=ro", uri=True)

    def __enter__(self):
        return self.db

    def __exit__(self, *exc):
        self.db.close()


def test_an_authorizer_on_the_socket_accepts_a_card_with_a_session_limit(tmp_path):
    cfg = config.load(write_config(tmp_path))

    async def scenario():
        async with running(cfg) as daemon:
            link = await Link.connect(cfg.store.runtime_dir, "ocpp")
            asked = []

            async def csms(request):
                asked.append(request)
                if request.id_tag == "CAFE0001":
                    return p.Authorized(authorize=request.authorize, result="accept", group="fleet", max_current_a=10)
                return p.Authorized(authorize=request.authorize, result="unknown")
            server = asyncio.create_task(link.authorize_with("ocpp", 2.0, csms))
            await until(lambda: daemon.charger.auth.links)
            await ask(cfg, p.Plug())
            await ask(cfg, p.Tap(card="CAFE0001"))
            ctrl = daemon.connectors[1]
            await until(lambda: ctrl.state.contactor_closed)
            status = (await ask(cfg, p.Status())).connectors[0]
            await ask(cfg, p.Unplug())
            await until(lambda: ctrl.session is None)
            await ask(cfg, p.Plug())
            await ask(cfg, p.Tap(card="DEADBEEF"))
            await until(lambda: ctrl.last_refusal is not None)
            server.cancel()
            await link.close()
            return asked, status, ctrl.last_refusal

    asked, status, refusal = asyncio.run(scenario())
    assert [a.id_tag for a in asked] == ["CAFE0001", "DEADBEEF"]  # Alice's card never leaves the charger
    assert status.allowed_a == 10 and status.limits["authorization"] == 10 and status.binding == "authorization"
    assert 9.9 <= status.offered_a <= 10  # duty rounds down: never more than allowed
    assert status.session.group == "fleet"
    assert refusal.reason == "unknown card"  # every link said unknown: the default rule refuses


def test_an_authorizer_that_never_answers_costs_the_timeout_then_the_rule_decides(tmp_path):
    cfg = config.load(write_config(tmp_path, '[authorization]\ntimeout_s = 0.5\nunanswered = "accept"\n'))

    async def scenario():
        async with running(cfg) as daemon:
            reader, writer = await asyncio.open_unix_connection(str(control.socket_path(cfg.store.runtime_dir)))
            command = p.Authorizer(name="hung", timeout_s=30)
            writer.write(p.encode_line(command.to_wire()))
            assert command.reply(p.decode_line(await reader.readline())) == p.AuthorizerReply(authorizer="hung")
            await ask(cfg, p.Plug())
            await ask(cfg, p.Tap(card="DEADBEEF"))
            asked = p.parse_pushed(p.decode_line(await reader.readline()))  # asked, and never answers
            ctrl = daemon.connectors[1]
            await until(lambda: ctrl.state.contactor_closed)
            writer.close()
            return asked, ctrl.session.auth_source

    asked, source = asyncio.run(scenario())
    assert isinstance(asked, p.AuthorizeRequest) and asked.id_tag == "DEADBEEF" and source == "unanswered"


def test_more_connections_than_the_cap_are_refused_and_charging_goes_on(tmp_path):
    cfg = config.load(write_config(tmp_path))

    async def scenario():
        async with charging(cfg) as daemon:
            path = str(control.socket_path(cfg.store.runtime_dir))
            conns = [await asyncio.open_unix_connection(path) for _ in range(roles.MAX_CONNECTIONS + 20)]
            refused = 0
            for reader, _ in conns[roles.MAX_CONNECTIONS:]:
                line = await reader.readline()
                refused += b"too many connections" in line
            closed = daemon.connectors[1].state.contactor_closed
            for _, writer in conns:
                writer.close()
            await until(lambda: not daemon.server.connections)
            reply = await ask(cfg, p.Status())
            return refused, closed, reply, daemon.fatal

    refused, closed, reply, fatal = asyncio.run(scenario())
    assert refused == 20 and closed and fatal is None
    assert reply.connectors[0].contactor == "closed"


def test_an_idle_command_connection_is_closed(tmp_path, monkeypatch):
    monkeypatch.setattr(connection, "IDLE_S", 0.05)
    cfg = config.load(write_config(tmp_path))

    async def scenario():
        async with running(cfg):
            reader, writer = await asyncio.open_unix_connection(str(control.socket_path(cfg.store.runtime_dir)))
            async with asyncio.timeout(5):
                goodbye = p.Ping().reply(p.decode_line(await reader.readline()))
                eof = await reader.readline()
            writer.close()
            return goodbye, eof

    goodbye, eof = asyncio.run(scenario())
    assert goodbye == p.Failure(error="idle for 0.05 s: closing", code="closing") and eof == b""


def test_requests_with_wrong_types_are_refused_and_change_nothing(tmp_path):
    cfg = config.load(write_config(tmp_path))
    bad = [  # malformed on purpose: bytes, as a hostile client writes them
        b'{"cmd": "sim", "action": "tap", "card": 1000000000000000000000000000000}',
        b'{"cmd": "sim", "action": "tap", "card": "' + b"x" * 100_000 + b'"}',
        b'{"cmd": "sim", "action": "plug", "connector": "1"}',
        b'{"cmd": "sim", "action": "plug", "connector": true}',
        b'{"cmd": "sim", "action": "plug", "connector": 1.5}',
        b'{"cmd": "sim", "action": "plug", "connector": 1, "extra": 1}',
        b'{"cmd": "remote-start", "connector": 1}',
        b'{"cmd": "limit", "source": "web", "current_a": NaN}',
        b'{"cmd": "hello", "version": 2, "service": "x"}',
        b'{"cmd": "hello", "version": 1, "service": "../../etc"}',
        b'{"cmd": "ack", "seq": 5}',
    ]

    async def send(line: bytes) -> p.Failure | p.Reply:
        reader, writer = await asyncio.open_unix_connection(str(control.socket_path(cfg.store.runtime_dir)),
                                                            limit=p.MAX_REPLY)
        writer.write(line + b"\n")
        reply = p.Ping().reply(p.decode_line(await reader.readline()))  # a failure, whatever was asked
        writer.close()
        return reply

    async def scenario():
        async with running(cfg) as daemon:
            replies = [await send(line) for line in bad]
            return replies, daemon.world.connector(1).ev.plugged

    replies, plugged = asyncio.run(scenario())
    assert all(isinstance(r, p.Failure) and r.error for r in replies), replies
    assert not plugged
    assert "expected an integer" in replies[2].error and "unknown field" in replies[5].error
    assert "longer than 64 KiB" in replies[1].error


def test_evsed_run_starts_a_configured_service_and_restarts_it_when_it_dies(tmp_path):
    from test_check import free_port
    path = write_config(tmp_path, f'[web]\nport = {free_port()}\n')  # a valid section: `run` refuses a bad one
    cfg = config.load(path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "evsed", "run", "-c", str(path)], stderr=subprocess.PIPE,
                            text=True, env=env)
    started = []
    for line in proc.stderr:
        event = json.loads(line)
        if event["event"] == "service.started":
            started.append(event["pid"])
            if len(started) == 1:
                os.kill(event["pid"], signal.SIGKILL)  # a dead service: the daemon starts it again
            else:
                break
    charging_ok = control.request(cfg.store.runtime_dir, p.Ping()) == p.Ok()
    proc.send_signal(signal.SIGTERM)
    proc.stderr.read()
    assert proc.wait(timeout=10) == 0
    assert len(started) == 2 and started[0] != started[1] and charging_ok


def test_the_daemon_tells_every_status_at_start_so_a_new_service_knows_where_things_stand(tmp_path):
    cfg = config.load(write_config(tmp_path))

    async def scenario():
        async with running(cfg):
            link = await Link.connect(cfg.store.runtime_dir, "ocpp")
            seen = [e async for e in _durable(link.events(after=0), count=3)]
            await link.close()
            return seen

    statuses = [(e.connector, e.status) for e in asyncio.run(scenario()) if isinstance(e, p.StatusChanged)]
    assert (0, "Available") in statuses and (1, "Available") in statuses


def test_the_state_directory_is_the_daemons_to_write_and_its_groups_to_read_whatever_the_umask(tmp_path):
    cfg = config.load(write_config(tmp_path))
    old = os.umask(0o000)
    try:
        async def scenario():
            async with running(cfg):
                pass
        asyncio.run(scenario())
    finally:
        os.umask(old)
    # Group evsed is the network services': they read the records (the web page) and write only
    # services/ (the OCPP queue, the update spool), whose files keep the group (setgid) and
    # which none of them may remove for another (sticky).
    assert cfg.store.state_dir.stat().st_mode & 0o7777 == 0o750
    assert (cfg.store.state_dir / "sessions.db").stat().st_mode & 0o777 == 0o640
    assert (cfg.store.state_dir / "services").stat().st_mode & 0o7777 == 0o3770
    assert cfg.store.runtime_dir.stat().st_mode & 0o777 == 0o750


def test_a_restart_request_ends_the_session_as_reboot_and_exits_for_the_service_manager(tmp_path):
    cfg = config.load(write_config(tmp_path))

    async def scenario():
        async with charging(cfg) as daemon:
            reply = await ask(cfg, p.Restart())
            await daemon.stopping.wait()
        return reply, daemon.exit_status, daemon.world.connector(1).contactor_closed

    reply, status, closed = asyncio.run(scenario())
    from evsed.store.sessions import Store
    (row,) = Store(cfg.store.state_dir / "sessions.db").sessions()
    assert reply == p.RestartReply(exit_status=75) and status == 75 and not closed and row["stop_reason"] == "reboot"


def test_status_shows_what_the_driver_pays_so_far_under_the_sessions_tariff(tmp_path):
    cfg = config.load(write_config(tmp_path, '[tariff]\ncurrency = "EUR"\n[tariff.price]\nper_session = 0.50\n'
                                             'per_kwh = 0.40\n'))

    async def scenario():
        async with charging(cfg):
            return (await ask(cfg, p.Status())).connectors[0].session

    session = asyncio.run(scenario())
    assert session.currency == "EUR" and session.price >= 0.50  # the session fee, and energy so far


def test_evsed_reserve_holds_a_connector_for_a_card_and_cancel_frees_it(tmp_path):
    path = write_config(tmp_path)
    cfg = config.load(path)

    async def scenario():
        from evsed import cli
        async with running(cfg) as daemon:
            ok = await asyncio.to_thread(cli.main, ["reserve", "04D4E5F6", "--for", "30m", "-c", str(path)])
            reserved = daemon.connectors[1].state.reservation
            status = (await ask(cfg, p.Status())).connectors[0].status
            cancelled = await asyncio.to_thread(cli.main, ["reserve", "--cancel", "-c", str(path)])
            return ok, reserved, status, cancelled, daemon.connectors[1].state.reservation

    ok, reserved, status, cancelled, after = asyncio.run(scenario())
    assert ok == 0 and reserved[0] == "04D4E5F6" and status == "Reserved"
    assert cancelled == 0 and after is None


def test_a_card_reader_unplugged_and_plugged_back_is_opened_again_without_a_restart(tmp_path):
    """A USB serial reader (RDM6300) behind a stable device name (as udev's by-id links are):
    pulled out, the daemon says so and charging is untouched; plugged back, taps work again."""
    from hal.rfid import rdm6300_frame
    link = tmp_path / "ttyRFID"
    first_master, first_slave = os.openpty()
    link.symlink_to(os.ttyname(first_slave))
    text = write_config(tmp_path).read_text().replace('backend = "sim"       # card reader: "sim" here',
                                                        f'backend = "rdm6300"\nport = "{link}"')
    path = tmp_path / "rdm.toml"
    path.write_text(text)
    cfg = config.load(path)
    second = []

    async def scenario():
        async with running(cfg) as daemon:
            ctrl = daemon.connectors[1]
            await ask(cfg, p.Plug())
            os.write(first_master, rdm6300_frame("13005D1DA5"))
            await until(lambda: ctrl.last_refusal is not None)  # the reader works: an unknown card
            first_tag = ctrl.last_refusal.id_tag
            os.close(first_master)  # unplugged
            os.close(first_slave)
            await until(lambda: daemon.charger.reader_error != "")
            missing = (await ask(cfg, p.Status())).card_reader_error
            master, slave = os.openpty()  # plugged back: the same name, another tty
            second.extend((master, slave))
            link.unlink()
            link.symlink_to(os.ttyname(slave))
            await until(lambda: daemon.charger.reader_error == "", timeout_s=15)
            os.write(master, rdm6300_frame("0102030405"))
            await until(lambda: ctrl.last_refusal.id_tag == "0102030405")
            return first_tag, missing, daemon.fatal

    try:
        first_tag, missing, fatal = asyncio.run(scenario())
    finally:
        for fd in second:
            os.close(fd)
    assert first_tag == "13005D1DA5" and "disconnected" in missing and fatal is None


def test_a_journal_that_stops_taking_lines_never_delays_opening_the_contactor(tmp_path):
    import threading
    from evsed.shell import logs

    class HungJournal:  # a stderr whose reader has stopped: every write blocks
        def __init__(self):
            self.release = threading.Event()

        def write(self, text):
            self.release.wait()

        def flush(self):
            pass

        def isatty(self):
            return False

    journal = HungJournal()
    cfg = config.load(write_config(tmp_path))

    async def scenario():
        logs.configure("debug", "json", stream=journal, cache=False)
        try:
            async with charging(cfg) as daemon:
                await ask(cfg, p.Unplug())
                await until(lambda: not daemon.world.connector(1).contactor_closed)
                return daemon.fatal
        finally:
            journal.release.set()
            logs.flush()
            import logging
            import structlog
            structlog.reset_defaults()
            logging.getLogger().handlers[:] = []
            logging.getLogger().setLevel(logging.WARNING)

    assert asyncio.run(scenario()) is None


def test_a_service_started_by_the_daemon_ends_when_the_daemon_is_killed(tmp_path):
    # kill -9 of `evsed run` alone (not its process group): no orphan keeps running (it would hold
    # the OCPP queue's lock, and the next daemon's child would find it busy)
    path = write_config(tmp_path, '[ocpp]\nurl = "ws://127.0.0.1:9/"\n')  # no CSMS: it keeps retrying
    proc = subprocess.Popen([sys.executable, "-m", "evsed", "run", "-c", str(path)], stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    # The log pipe stays open and read to the end (the daemon's and its child's): the orphan must
    # not die of a closed pipe instead.
    events: queue.Queue = queue.Queue()

    def read() -> None:
        for line in proc.stderr:
            try:
                events.put(json.loads(line))
            except ValueError:  # not ours
                continue
        events.put(None)
    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def next_event(name: str) -> dict:
        while (event := events.get(timeout=10)) is not None:
            if event.get("event") == name:
                return event
        raise AssertionError(f"the log ended before {name}")

    child = pidfd = None
    try:
        child = next_event("service.started")["pid"]
        pidfd = os.pidfd_open(child)
        next_event("service.running")  # set up and connected before the kill
        proc.kill()
        proc.wait(10)
        ended, _, _ = select.select([pidfd], [], [], 10)  # readable once the process has exited
        assert ended, "the service outlived its daemon"
        # told by the kernel when its parent died (PR_SET_PDEATHSIG), not left to notice a lost link
        assert next_event("service.stopped")["signal"] == "SIGTERM"
    finally:
        proc.kill()
        if pidfd is not None:
            if not select.select([pidfd], [], [], 0)[0]:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            os.close(pidfd)
        reader.join(10)
