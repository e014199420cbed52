"""Issue 8 item 2 on an OpenEVSE board: the board closes its relay by itself once enabled with an
EV in C, so evsed must never enable it (no PWM) while the meter it needs gives no reading."""

import asyncio

from evsed import config
from evsed.shell.daemon import Daemon
from simulator.openevse_rapi import OpenEvseEmulator
from test_daemon import until
from test_openevse_daemon import board_config


def test_a_session_with_a_silent_meter_never_enables_the_board(tmp_path):
    with OpenEvseEmulator(current_a=32, total_wh=5000) as board:
        board.nak_always.add("GG")  # the board's ammeter answers nothing usable
        cfg = config.load(board_config(tmp_path, board.port))

        async def scenario():
            daemon = Daemon(cfg)
            run = asyncio.create_task(daemon.run())
            await daemon.ready.wait()
            ctrl = daemon.connectors[1]
            await until(lambda: board.mode == "sleeping")
            board.set_ev("B")
            await until(lambda: ctrl.state.pilot is not None and ctrl.state.pilot.value == "B")
            daemon.world.reader.tap("04A1B2C3")
            await until(lambda: ctrl.session is not None)
            assert ctrl.state.status.value == "SuspendedEVSE" and "meter" in ctrl.state.reason
            board.set_ev("C")  # the EV asks for power anyway
            polled = len(board.commands)
            await until(lambda: len(board.commands) >= polled + 20)  # the board polled for a while
            assert ctrl.state.output == "off" and ctrl.state.status.value == "SuspendedEVSE"
            daemon.stopping.set()
            assert await run == 0

        asyncio.run(scenario())
        assert "FE" not in board.commands and not board.relay_closed
