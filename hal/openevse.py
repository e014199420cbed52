"""OpenEVSE controller boards over RAPI: pilot, contactor, RCD and meter devices on one serial link.

The board drives the pilot and its own relay; evsed's core still decides when and how much.
hal.openevse_board owns the link and the worker; here are the devices and their factories.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, Callable

import structlog

from hal import DeviceUnavailable, MeterReading, PilotReading, TryAgain
from hal.openevse_board import LINK_DEFAULTS, Board
from hal.rapi import TRIP_STATES, Frame, boot_locked, ev_connected, pilot_reading, relay_closed

__all__ = ["Board", "amps_for_duty", "pilot", "contactor", "rcd", "meter"]

log = structlog.get_logger("hal.openevse")


# --- the duty as whole amperes ($SC) ------------------------------------------------------------------


def _duty_for_amps(amps: int) -> float:
    """IEC 61851-1 duty in percent for whole amperes, as evsed's core sets it."""
    return amps / 0.6 if amps <= 51 else max(amps / 2.5 + 64.0, 85.0)  # 52 A reads as 51 A


def _ev_current_a(duty_pct: float) -> float:
    """The current an EV reads from a duty (IEC 61851-1 Table A.8), 0 where none is allowed."""
    if math.isnan(duty_pct) or duty_pct < 8.0 or duty_pct > 97.0:
        return 0.0
    if duty_pct < 10.0:
        return 6.0
    return duty_pct * 0.6 if duty_pct <= 85.0 else min((duty_pct - 64.0) * 2.5, 80.0)


def amps_for_duty(duty_pct: float) -> int:
    """The whole amperes for $SC (6-80) whose duty gives the EV the most current without
    exceeding what duty_pct gives it; 0 when duty_pct allows no charging. Rounded down: a core
    offer of 15.5 A is 15 A on the board. hal may not import evsed.pilot; the tests check this
    against it.
    """
    offered_a = _ev_current_a(duty_pct)
    fits = [(_ev_current_a(_duty_for_amps(a)), -a) for a in range(6, 81)]
    best = max((f for f in fits if f[0] <= offered_a + 1e-9), default=None)
    return -best[1] if best is not None and offered_a >= 6.0 else 0


# --- the devices ------------------------------------------------------------------------------------


class _Device:
    def __init__(self, board: Board):
        self.board = board

    def on_change(self, callback: Callable[[], None]) -> None:
        self.board.on_change(callback)

    def release(self) -> None:
        self.board.release()


class OpenEvsePilot(_Device):
    """pwm_on -> $SC amps (volatile), $FE and unlock; pwm_off -> the auth lock $S4 1 (or $FS sleep
    without it), steady +12 V; pwm_f -> $FD (disable, -12 V). Also hal.OfferedCurrent."""

    def pwm_on(self, duty_pct: float) -> None:
        amps = amps_for_duty(duty_pct)
        if amps == 0:
            log.warning("openevse.no_offer_for_duty", port=self.board.port, duty_pct=duty_pct)
            self.board.set_output("sleep")
        else:
            self.board.set_output("enable", amps)

    def pwm_off(self) -> None:
        self.board.set_output("sleep")

    def pwm_f(self) -> None:
        self.board.set_output("disable")

    def offered_current_a(self) -> float | None:
        """The current the board's PWM really offers, in A: it may be below what evsed asked, since a
        volatile $SC cannot exceed the board's stored maximum. None while it offers nothing."""
        amps = self.board.offered_current_a()
        return None if amps is None else float(amps)

    def read(self) -> PilotReading:
        state = self.board.state()
        reading = pilot_reading(state)
        if reading is None:
            why = "waiting in its boot lock for $SB" if boot_locked(state) else "starting"
            raise TryAgain(f"OpenEVSE {self.board.port}: board in state {state.evse_state:02x} ({why})")
        return reading


class OpenEvsePilotWithHeartbeat(OpenEvsePilot):
    """With heartbeat supervision (heartbeat_s > 0): heartbeat() from the safety loop's round is
    one $SY, so a stalled loop, not only a dead process, lets the board fall back to 6 A."""

    def __init__(self, board: Board):
        super().__init__(board)
        self.dropout_s = float(board.heartbeat_s)
        self.heartbeat_interval_s = self.dropout_s / 4

    def heartbeat(self) -> None:
        self.board.pulse()


class OpenEvseContactor(_Device):
    """The board's relay: close()/open() say what the core allows, feedback_closed() what the board
    did. open() forces the relay open ($FD); open_when_ev_stops() lets the EV stop first ($FS)."""

    def close(self) -> None:
        self.board.allow_relay(True)

    def open(self) -> None:
        self.board.allow_relay(False)

    def open_when_ev_stops(self) -> None:
        self.board.allow_relay(False, at_once=False)

    def feedback_closed(self) -> bool:
        # The last report however old: a silent board is the pilot's TryAgain (pilot lost), once.
        state = self.board.last_state
        return state is not None and relay_closed(state)


class OpenEvseRcd(_Device):
    """The board's GFCI (and ground check): tripped while the board is in one of those fault states."""

    def tripped(self) -> bool:
        state = self.board.last_state  # as feedback_closed(): staleness is the pilot's to report
        return state is not None and state.evse_state in TRIP_STATES


class EnergyRegister:
    """An import register in Wh built from the board's two counters ($GU: this session's W*s, and
    the Wh of ended sessions), right across board reboots and unplugs.

    EnergyMeter.cpp: a session starts at 0 when the EV connects; at the unplug its Wh are added to
    the total, and the session counter keeps its value until the next one starts. A reboot starts
    it at 0 again and forgets what it held. So only increases are counted: the session counter's,
    and when it restarted, what it counted since plus the tail of the session that ended.
    """

    def __init__(self) -> None:
        self._session_ws: int | None = None
        self._total_wh = 0
        self._base_wh = 0
        self._counted_ws = 0

    def feed(self, session_ws: int, total_wh: int, connected: bool) -> int:
        """One $GU answer (connected: the EV-connected flag, used for the first answer only) -> Wh."""
        if self._session_ws is None:
            self._base_wh = total_wh + (session_ws // 3600 if connected else 0)
        elif session_ws >= self._session_ws:
            self._counted_ws += session_ws - self._session_ws  # a total that grew meanwhile is this session
        else:  # restarted: a new session, or a reboot that lost the rest of the old one
            ended_ws = max(0, total_wh - self._total_wh) * 3600
            self._counted_ws += session_ws + max(0, ended_ws - self._session_ws)
        self._session_ws, self._total_wh = session_ws, total_wh
        return self._base_wh + self._counted_ws // 3600


class OpenEvseMeter(_Device):
    """The board's ammeter: $GG (mA, mV) and $GU (session W*s, total Wh), one phase."""

    def __init__(self, board: Board):
        super().__init__(board)
        self.register = EnergyRegister()

    async def _ask(self, command: str) -> Frame:
        # The worker answers within timeout_s; the guard only covers a worker that is gone.
        # (asyncio.wait_for would not do: TryAgain is a TimeoutError and would look like its own.)
        guard_s = 3 * self.board.options["timeout_s"] + self.board.poll_interval_s
        future = asyncio.wrap_future(self.board.submit(command))
        done, _ = await asyncio.wait({future}, timeout=guard_s)
        if not done:
            future.cancel()
            raise TryAgain(f"OpenEVSE {self.board.port}: ${command} not served within {guard_s:g} s")
        return future.result()

    async def read(self) -> MeterReading:
        gg, gu = await self._ask("GG"), await self._ask("GU")
        try:
            current_ma, voltage_mv = int(gg.args[0]), int(gg.args[1])
            session_ws, total_wh = int(gu.args[0]), int(gu.args[1])
        except (IndexError, ValueError):
            raise TryAgain(f"OpenEVSE {self.board.port}: unreadable meter answer "
                           f"$GG {' '.join(gg.args)} / $GU {' '.join(gu.args)}") from None
        if current_ma < 0:
            raise DeviceUnavailable(f"OpenEVSE {self.board.port}: the board has no ammeter ($GG gives "
                                    f"{current_ma} mA); configure another meter")
        state = self.board.last_state
        energy_wh = self.register.feed(session_ws, total_wh, state is not None and ev_connected(state))
        current_a, voltage_v = current_ma / 1000.0, voltage_mv / 1000.0
        power_w = current_a * voltage_v
        return MeterReading(energy_import_wh=energy_wh, power_total_w=power_w,
                            current_a=(current_a,), voltage_v=(voltage_v,), power_w=(power_w,))


# --- factories (evsed.backends) -----------------------------------------------------------------------


def _board(options: dict, ctx: Any) -> Board:
    port = options["port"]
    wanted = {**LINK_DEFAULTS, **{k: v for k, v in options.items() if k in LINK_DEFAULTS}}
    key = f"openevse:{port}"
    board = ctx.shared.get(key)
    if board is None or board.closed:
        board = ctx.shared[key] = Board(port, **wanted)
    elif board.options != wanted:
        differ = sorted(k for k in wanted if wanted[k] != board.options[k])
        raise DeviceUnavailable(f"OpenEVSE {port}: devices on one port must agree on {', '.join(differ)}")
    board.users += 1
    return board


def pilot(options: dict, ctx: Any) -> OpenEvsePilot:
    board = _board(options, ctx)
    return OpenEvsePilotWithHeartbeat(board) if board.heartbeat_s else OpenEvsePilot(board)


def contactor(options: dict, ctx: Any) -> OpenEvseContactor:
    board = _board(options, ctx)
    board.relay_gated = True  # without a contactor device the board's relay follows the EV alone
    return OpenEvseContactor(board)


def rcd(options: dict, ctx: Any) -> OpenEvseRcd:
    return OpenEvseRcd(_board(options, ctx))


def meter(options: dict, ctx: Any) -> OpenEvseMeter:
    return OpenEvseMeter(_board(options, ctx))
