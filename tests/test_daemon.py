"""The daemon end to end on the simulator: control socket, sessions, exit paths, the state lock."""

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from evsed import protocol as p
from evsed import config
from evsed.control import client as control
from evsed.errors import StartError
from evsed.shell.daemon import Daemon

ROOT = Path(__file__).parent.parent


def write_config(tmp_path: Path, extra: str = "") -> Path:
    text = (ROOT / "config" / "simulator.toml").read_text()
    text += f'\n[store]\nstate_dir = "{tmp_path / "state"}"\nruntime_dir = "{tmp_path / "run"}"\n' + extra
    path = tmp_path / "evsed.toml"
    path.write_text(text)
    return path


async def until(predicate, timeout_s: float = 5.0):
    """Yield to the loop until predicate() holds; the timeout only guards against a hang."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0)


async def ask(cfg, command):
    """The daemon's reply to command (a Failure when it refused)."""
    return await asyncio.to_thread(control.request, cfg.store.runtime_dir, command)


@contextlib.asynccontextmanager
async def running(cfg):
    """A daemon started in this loop; stopped (SIGTERM's path) when the block ends."""
    daemon = Daemon(cfg)
    run = asyncio.create_task(daemon.run())
    await daemon.ready.wait()
    try:
        yield daemon
    finally:
        daemon.stopping.set()
        daemon.exit_status = await run


@contextlib.asynccontextmanager
async def charging(cfg):
    """A running daemon whose simulated EV charges on Alice's card."""
    async with running(cfg) as daemon:
        await ask(cfg, p.Plug())
        await ask(cfg, p.Tap(card="04A1B2C3"))
        await until(lambda: daemon.connectors[1].state.contactor_closed)
        assert daemon.world.connector(1).contactor_closed
        yield daemon


def test_plug_tap_charge_unplug_over_the_control_socket(tmp_path):
    cfg = config.load(write_config(tmp_path))

    async def scenario():
        daemon = Daemon(cfg)
        run = asyncio.create_task(daemon.run())
        await daemon.ready.wait()
        sock = control.socket_path(cfg.store.runtime_dir)
        assert oct(sock.stat().st_mode & 0o777) == "0o660"
        assert await ask(cfg, p.Plug()) == p.Ok()
        assert await ask(cfg, p.Tap(card="04a1b2c3")) == p.TapReply(card="04A1B2C3")
        ctrl = daemon.connectors[1]
        await until(lambda: ctrl.state.contactor_closed)
        status = (await ask(cfg, p.Status())).connectors[0]
        assert status.state == "C" and status.contactor == "closed" and status.status == "Charging"
        assert status.session and status.session.card_name == "Alice"
        await until(lambda: ctrl.last_reading is not None and ctrl.last_reading.power_total_w > 0)
        assert await ask(cfg, p.Unplug()) == p.Ok()
        await until(lambda: not ctrl.state.contactor_closed and ctrl.session is None)
        assert not daemon.world.connector(1).contactor_closed
        daemon.stopping.set()
        assert await run == 0
        assert not sock.exists()

    asyncio.run(scenario())
    from evsed.store.sessions import Store
    (row,) = Store(cfg.store.state_dir / "sessions.db").sessions()
    assert row["card_name"] == "Alice" and row["stop_reason"] == "ev_disconnected"


def test_unknown_card_is_refused_and_status_says_why(tmp_path):
    cfg = config.load(write_config(tmp_path))

    async def scenario():
        async with running(cfg) as daemon:
            await ask(cfg, p.Plug())
            await ask(cfg, p.Tap(card="DEADBEEF"))
            ctrl = daemon.connectors[1]
            await until(lambda: ctrl.last_refusal is not None)
            status = (await ask(cfg, p.Status())).connectors[0]
            assert status.state == "B" and status.contactor == "open"
            assert status.last_refusal and status.last_refusal.reason == "unknown card"
            assert "card refused: unknown card" in status.reason

    asyncio.run(scenario())


def test_garbage_on_the_control_socket_gets_an_error_and_the_daemon_lives(tmp_path):
    cfg = config.load(write_config(tmp_path))

    async def scenario():
        async with running(cfg):
            reader, writer = await asyncio.open_unix_connection(str(control.socket_path(cfg.store.runtime_dir)))
            for junk in (b"not json\n", b"[1,2]\n", b'{"cmd": "launch"}\n',
                         b'{"cmd": "sim", "action": "ev", "max_current_a": "abc"}\n',
                         b'{"cmd": "clear-faults", "connector": 1e999}\n',
                         b'{"cmd": "sim", "action": "fault", "kind": "x"}\n'):
                writer.write(junk)
                reply = p.Ping().reply(p.decode_line(await reader.readline()))
                assert isinstance(reply, p.Failure) and reply.error
            writer.close()
            assert await ask(cfg, p.Ping()) == p.Ok()

    asyncio.run(scenario())


def test_a_crashing_input_task_opens_the_contactor_and_exits_1(tmp_path):
    cfg = config.load(write_config(tmp_path))

    async def scenario():
        async with charging(cfg) as daemon:
            def broken_read():
                raise RuntimeError("ADC driver bug")
            daemon.connectors[1].pilot.read = broken_read
            await daemon.stopping.wait()
        bench = daemon.world.connector(1)
        assert daemon.exit_status == 1
        assert not bench.contactor_closed and bench.pilot_mode == "off"
        assert isinstance(daemon.fatal, RuntimeError)

    asyncio.run(scenario())


def test_second_daemon_on_the_same_state_directory_refuses(tmp_path):
    cfg = config.load(write_config(tmp_path))

    async def scenario():
        async with running(cfg):
            with pytest.raises(StartError, match="another evsed"):
                await Daemon(cfg).run()
            assert await ask(cfg, p.Ping()) == p.Ok()  # the refused one did not take the socket

    asyncio.run(scenario())


def start_process(path: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "evsed", "run", "-c", str(path)],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in proc.stderr:  # JSON lines: not a terminal
        if json.loads(line)["event"] == "daemon.ready":
            return proc
    raise AssertionError(f"daemon did not start: {proc.wait()}")


def charge(cfg) -> None:
    control.request(cfg.store.runtime_dir, p.Plug())
    control.request(cfg.store.runtime_dir, p.Tap(card="04A1B2C3"))
    for _ in range(500):  # a bounded wait for the daemon's own loop, no sleeping here
        st = control.ask(cfg.store.runtime_dir, p.Status()).connectors[0]
        if st.contactor == "closed":
            return
    raise AssertionError("never closed")


def test_sigterm_opens_the_contactor_and_ends_the_session_as_reboot(tmp_path):
    path = write_config(tmp_path)
    cfg = config.load(path)
    proc = start_process(path)
    charge(cfg)
    proc.send_signal(signal.SIGTERM)
    rest = proc.stderr.read()
    assert proc.wait(timeout=10) == 0
    events = [json.loads(line) for line in rest.splitlines()]
    opened = [e for e in events if e["event"] == "contactor.opened"]
    assert opened and opened[0]["reason"] == "shutting down"
    assert all(e["timestamp"].endswith("Z") for e in events)
    from evsed.store.sessions import Store
    (row,) = Store(cfg.store.state_dir / "sessions.db").sessions()
    assert row["stop_reason"] == "reboot"


def test_kill_9_loses_no_session_and_the_next_start_closes_it_as_power_loss(tmp_path):
    path = write_config(tmp_path)
    cfg = config.load(path)
    proc = start_process(path)
    charge(cfg)
    from evsed.store.sessions import Store
    for _ in range(1000):  # the start row is written by the store thread: wait until it is durable
        if list(Store.open_readonly(cfg.store.state_dir / "sessions.db").sessions()):
            break
    else:
        raise AssertionError("the running session was never stored")
    proc.kill()
    proc.wait(timeout=10)
    proc.stderr.close()
    proc = start_process(path)  # also proves the stale socket and lock do not block a restart
    proc.send_signal(signal.SIGTERM)
    proc.stderr.read()
    proc.wait(timeout=10)
    from evsed.store.sessions import Store
    (row,) = Store(cfg.store.state_dir / "sessions.db").sessions()
    assert row["stop_reason"] == "power_loss" and row["stopped_at"] is not None


def test_daemon_tells_systemd_it_is_ready_and_pings_the_watchdog(tmp_path, monkeypatch):
    import socket as socketmod
    cfg = config.load(write_config(tmp_path))
    listener = socketmod.socket(socketmod.AF_UNIX, socketmod.SOCK_DGRAM)
    listener.bind(str(tmp_path / "notify"))
    listener.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.setenv("WATCHDOG_USEC", "20000")

    async def scenario():
        async with running(cfg):
            return [await asyncio.to_thread(listener.recv, 64) for _ in range(3)]

    messages = asyncio.run(scenario())
    assert messages[0] == b"READY=1" and messages[1:] == [b"WATCHDOG=1", b"WATCHDOG=1"]


def test_an_exception_in_a_device_callback_opens_the_contactor_and_exits_1(tmp_path):
    cfg = config.load(write_config(tmp_path))

    async def scenario():
        async with charging(cfg) as daemon:
            def broken_pwm_off():
                raise RuntimeError("sysfs write failed")
            daemon.connectors[1].pilot.pwm_off = broken_pwm_off
            daemon.world.connector(1).unplug()  # the callback polls -> the core stops PWM -> raises
            await daemon.stopping.wait()
        assert daemon.exit_status == 1
        assert not daemon.world.connector(1).contactor_closed
        assert isinstance(daemon.fatal, RuntimeError)

    asyncio.run(scenario())


def test_a_reload_changes_the_pilot_poll_and_meter_interval_of_the_running_loops(tmp_path):
    path = write_config(tmp_path, "\n[timing]\npilot_poll_s = 0.05\nmeter_interval_s = 1.0\n")
    cfg = config.load(path)

    async def scenario():
        async with charging(cfg) as daemon:
            ctrl = daemon.connectors[1]
            assert daemon.pilot_interval_s(ctrl) == 0.05 and daemon.timing.meter_interval_s == 1.0
            path.write_text(path.read_text().replace("pilot_poll_s = 0.05", "pilot_poll_s = 0.02")
                            .replace("meter_interval_s = 1.0", "meter_interval_s = 2.0"))
            reply = await ask(cfg, p.Reload())
            assert reply == p.ReloadReply(result="Accepted"), reply
            assert daemon.pilot_interval_s(ctrl) == 0.02 and daemon.timing.meter_interval_s == 2.0
            assert ctrl.state.contactor_closed  # the session runs on

    asyncio.run(scenario())


def test_a_reload_of_keys_only_a_restart_applies_names_them(tmp_path):
    path = write_config(tmp_path)
    cfg = config.load(path)

    async def scenario():
        async with running(cfg):
            path.write_text(path.read_text().replace(f'runtime_dir = "{tmp_path / "run"}"',
                                                     f'runtime_dir = "{tmp_path / "run2"}"') + '\n[log]\nlevel = "debug"\n')
            reply = await ask(cfg, p.Reload())
            assert reply == p.ReloadReply(result="Accepted", restart_needed=("[store] runtime_dir", "[log]"))
            assert await ask(cfg, p.Ping()) == p.Ok()  # still on the socket it started with

    asyncio.run(scenario())


def test_status_says_why_the_meter_gives_no_reading_until_it_reads_again(tmp_path):
    cfg = config.load(write_config(tmp_path))

    async def scenario():
        async with running(cfg):
            async def meter_error():
                return (await ask(cfg, p.Status())).connectors[0].meter_error
            before = await meter_error()
            await ask(cfg, p.InjectFault(kind="meter"))
            errors = []
            async def failing():
                errors.append(await meter_error())
                return errors[-1] != ""
            await until_async(failing)
            await ask(cfg, p.InjectFault(kind="meter", clear=True))
            async def back():
                return await meter_error() == ""
            await until_async(back)
            return before, errors[-1]

    before, during = asyncio.run(scenario())
    assert before == "" and during == "simulated meter timeout"


async def until_async(predicate, timeout_s: float = 5.0):
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.02)


def test_a_remote_start_check_says_whether_it_would_start_and_starts_nothing(tmp_path):
    cfg = config.load(write_config(tmp_path))

    async def scenario():
        async with running(cfg) as daemon:
            ctrl = daemon.connectors[1]
            would = await ask(cfg, p.RemoteStart(connector=1, id_tag="ab-12-cd", check=True))
            assert would == p.StartReply(connector=1, result="Accepted")
            assert ctrl.state.id_tag is None
            await ask(cfg, p.Availability(connector=1, operative=False))
            refused = await ask(cfg, p.RemoteStart(connector=1, id_tag="ab-12-cd", check=True))
            assert refused == p.StartReply(connector=1, result="Rejected", reason="connector unavailable")
            assert ctrl.state.refusal == ""  # only asked: no refusal shown
            await ask(cfg, p.Availability(connector=1, operative=True))
            started = await ask(cfg, p.RemoteStart(connector=1, id_tag="ab-12-cd"))
            assert started.result == "Accepted" and ctrl.state.id_tag == "ab-12-cd"
            again = await ask(cfg, p.RemoteStart(connector=1, id_tag="ab-12-cd", check=True))
            assert again.result == "Accepted"  # an authorization not yet used is replaced, as the step does
    asyncio.run(scenario())
