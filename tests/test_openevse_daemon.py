"""The daemon on an OpenEVSE board (RAPI emulator on a pty): evsed decides, the board switches."""

import asyncio
from pathlib import Path

import pytest

from evsed import protocol as p
from evsed import config
from evsed.shell.daemon import Daemon
from hal import openevse_board
from simulator.openevse_rapi import OpenEvseEmulator
from test_daemon import ask, running, until
from test_openevse_replug import Adapter


def board_config(tmp_path: Path, port: str, options: str = "") -> Path:
    link = f'backend = "openevse"\nport = "{port}"\npoll_interval_s = 0.05\n{options}'
    text = f"""
[charger]
phases = 1
max_current_a = 32
[[connector]]
cable_a = 32
[connector.pilot]
{link}[connector.contactor]
{link}[connector.rcd]
{link}[connector.meter]
{link}[rfid]
backend = "sim"
[[card]]
uid = "04A1B2C3"
name = "Alice"
[store]
state_dir = "{tmp_path / 'state'}"
runtime_dir = "{tmp_path / 'run'}"
"""
    path = tmp_path / "evsed.toml"
    path.write_text(text)
    return path


def test_card_and_plug_charge_through_the_board_and_unplug_ends_the_session(tmp_path):
    with OpenEvseEmulator(current_a=32, total_wh=5000) as board:
        cfg = config.load(board_config(tmp_path, board.port))

        async def scenario():
            daemon = Daemon(cfg)
            run = asyncio.create_task(daemon.run())
            await daemon.ready.wait()
            ctrl = daemon.connectors[1]
            await until(lambda: board.mode == "sleeping")  # no session: the board may not charge
            # The board closes its relay itself once enabled and the EV asks; evsed must consent
            # within relay_grace_s, which needs a fresh meter reading: wait for the first one.
            await until(lambda: ctrl.last_reading is not None)
            board.set_ev("B")
            await until(lambda: ctrl.state.pilot is not None and ctrl.state.pilot.value == "B")
            daemon.world.reader.tap("04A1B2C3")
            await until(lambda: board.mode == "enabled" and board.current_a == 32)
            board.set_ev("C")
            await until(lambda: ctrl.state.contactor_closed and board.relay_closed)
            assert ctrl.session is not None and ctrl.session.card_name == "Alice"
            board.set_ev("A")
            await until(lambda: ctrl.session is None and not ctrl.state.contactor_closed)
            await until(lambda: board.mode == "sleeping")
            daemon.stopping.set()
            assert await run == 0

        asyncio.run(scenario())
    from evsed.store.sessions import Store
    (row,) = Store(cfg.store.state_dir / "sessions.db").sessions()
    assert row["stop_reason"] == "ev_disconnected" and row["meter_start_wh"] >= 5000


def test_a_board_unplugged_and_plugged_back_is_unavailable_meanwhile_and_charges_again_without_a_restart(tmp_path):
    """The board's USB serial adapter pulled out: status says the pilot is unavailable and why;
    plugged back (the same stable name, a new tty), the same daemon charges through it again."""
    adapter = Adapter(tmp_path / "ttyEVSE")
    first = adapter.plug(OpenEvseEmulator(current_a=32, total_wh=5000))
    cfg = config.load(board_config(tmp_path, str(adapter.path), "reopen_s = 0.05\n"))

    async def scenario():
        async with running(cfg) as daemon:
            ctrl = daemon.connectors[1]
            first.set_ev("B")
            await until(lambda: ctrl.state.pilot is not None and ctrl.state.pilot.value == "B")
            adapter.unplug()
            await until(lambda: ctrl.pilot_error != "")
            (away,) = (await ask(cfg, p.Status())).connectors
            second = OpenEvseEmulator(current_a=32, total_wh=5000)
            second.set_ev("B")  # the board rebooted meanwhile; the EV is still there
            adapter.plug(second)
            await until(lambda: ctrl.pilot_error == "" and ctrl.state.pilot is not None, timeout_s=10)
            (back,) = (await ask(cfg, p.Status())).connectors
            await until(lambda: ctrl.last_reading is not None and not ctrl.status()["measured"].stale)
            daemon.world.reader.tap("04A1B2C3")
            await until(lambda: second.mode == "enabled" and second.current_a == 32)
            second.set_ev("C")
            await until(lambda: ctrl.state.contactor_closed and second.relay_closed)
            return away, back, daemon.fatal

    try:
        away, back, fatal = asyncio.run(scenario())
    finally:
        for board in adapter.boards:
            board.stop()
    assert away.state is None and away.contactor == "open" and "serial link lost" in away.pilot_error
    assert back.state == "B" and back.pilot_error == "" and fatal is None


async def charge_on_the_board(board: OpenEvseEmulator, daemon: Daemon) -> None:
    """Alice's card and an EV in C: the board's relay closed with the core's consent."""
    ctrl = daemon.connectors[1]
    await until(lambda: ctrl.last_reading is not None)
    board.set_ev("B")
    await until(lambda: ctrl.state.pilot is not None and ctrl.state.pilot.value == "B")
    daemon.world.reader.tap("04A1B2C3")
    board.set_ev("C")
    await until(lambda: ctrl.state.contactor_closed and board.relay_closed)


def test_sigterm_during_a_charge_puts_the_board_to_sleep_so_the_ev_stops_first(tmp_path):
    """An orderly stop is no fault: $FS (the board opens once the EV leaves C, or after its own
    3 s), not $FD (the relay dropped under load, -12 V on the pilot)."""
    with OpenEvseEmulator(current_a=32, total_wh=5000) as board:
        cfg = config.load(board_config(tmp_path, board.port))

        async def scenario():
            daemon = Daemon(cfg)
            run = asyncio.create_task(daemon.run())
            await daemon.ready.wait()
            await charge_on_the_board(board, daemon)
            sent = len(board.commands)
            # the EV sees the steady +12 V and opens its contacts: the board's next $GS finds it in B
            board.before_answer["FS"] = lambda: board.before_answer.update(GS=lambda: board.set_ev("B"))
            daemon.stopping.set()  # what SIGTERM does
            assert await run == 0
            return sent

        sent = asyncio.run(scenario())
        assert "FD" not in board.commands[sent:] and "FS" in board.commands[sent:]
        assert board.mode == "sleeping" and not board.relay_closed  # opened by the board as the EV stopped


def test_a_task_that_fails_during_a_charge_disables_the_board_at_once(tmp_path):
    with OpenEvseEmulator(current_a=32, total_wh=5000) as board:
        cfg = config.load(board_config(tmp_path, board.port))

        async def fail():
            raise RuntimeError("a bug")

        async def scenario():
            daemon = Daemon(cfg)
            run = asyncio.create_task(daemon.run())
            await daemon.ready.wait()
            await charge_on_the_board(board, daemon)
            sent = len(board.commands)
            daemon._spawn(fail(), "bug")
            assert await run == 1
            return sent

        sent = asyncio.run(scenario())
        assert "FD" in board.commands[sent:] and not board.relay_closed


def test_sigterm_during_a_charge_forces_the_board_open_when_it_does_not_open_after_its_own_limit(tmp_path, monkeypatch):
    """The stop's $FS lets the EV stop first, but a board that stays closed past its own limit
    (it ignored the $FS, or its timer never ran) is disabled ($FD) before evsed exits: the worker
    must not end with the soft open still waiting for the board."""
    monkeypatch.setattr(openevse_board, "SLEEP_OPENS_S", 0.2)  # the emulator's time stands still
    with OpenEvseEmulator(current_a=32, total_wh=5000) as board:
        cfg = config.load(board_config(tmp_path, board.port))

        async def scenario():
            daemon = Daemon(cfg)
            run = asyncio.create_task(daemon.run())
            await daemon.ready.wait()
            await charge_on_the_board(board, daemon)
            sent = len(board.commands)
            daemon.stopping.set()  # what SIGTERM does
            assert await run == 0
            return sent

        sent = asyncio.run(scenario())
        after = board.commands[sent:]
        assert "FS" in after and "FD" in after and after.index("FS") < after.index("FD")
        assert not board.relay_closed


@pytest.mark.parametrize("reader", ["sim", None])
def test_sim_actions_for_the_ev_are_refused_on_a_board_and_change_nothing(tmp_path, reader):
    """`sim` only where the simulator is: with the board's pilot (and a simulated card reader, or
    none at all) `sim plug` is a typed refusal naming the role and the command, and nothing moves."""
    with OpenEvseEmulator(current_a=32, total_wh=5000) as board:
        path = board_config(tmp_path, board.port)
        if reader is None:
            path.write_text(path.read_text().replace('[rfid]\nbackend = "sim"\n', ""))
        cfg = config.load(path)

        async def scenario():
            async with running(cfg) as daemon:
                ctrl = daemon.connectors[1]
                await until(lambda: ctrl.last_reading is not None and board.mode == "sleeping")
                before = (await ask(cfg, p.Status())).connectors
                sent = len(board.commands)
                plug, ev = await ask(cfg, p.Plug()), await ask(cfg, p.SetEv(connector=1, max_current_a=16))
                after = (await ask(cfg, p.Status())).connectors
                phantom = daemon.world is not None and 1 in daemon.world.connectors
                alive = await ask(cfg, p.Ping())
                return plug, ev, before, after, phantom, alive, board.commands[sent:]

        plug, ev, before, after, phantom, alive, commands = asyncio.run(scenario())
    assert plug == p.Failure(error=plug.error, code="refused", role="admin", cmd="sim plug")
    assert ev == p.Failure(error=ev.error, code="refused", role="admin", cmd="sim ev")
    assert ("no simulated hardware" if reader is None else "pilot is real hardware (openevse)") in plug.error
    assert [(c.state, c.status, c.session) for c in after] == [(c.state, c.status, c.session) for c in before]
    assert not phantom and alive == p.Ok() and board.mode == "sleeping"
    assert not [c for c in commands if c.startswith(("FE", "SC"))]  # nobody enabled the board or offered current
