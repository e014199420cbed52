"""The charger-level limit sources: time-of-use windows, group caps, the cable's PP, the
external cap input, dynamic load management and solar surplus, fed to the connectors.

Decisions come from the pure modules (evsed.core.windows, limits, loadmgmt) and each source's
Limit from its module (evsed.shell.sources); this module gathers their inputs, sends each
Limit to the core on a change (the core keeps the chain), and arms timers for the next one.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import structlog

from evsed.core import events as ev
from evsed.core import limits as lm
from evsed.core import loadmgmt, windows
from evsed.shell.clocksteps import ClockSteps
from evsed.shell.sources import Connected
from evsed.shell.sources import cable as cable_source
from evsed.shell.sources import external as external_source
from evsed.shell.sources import group as group_source
from evsed.shell.sources import loadmgmt as loadmgmt_source
from evsed.shell.sources import solar as solar_source
from evsed.shell.sources import window as window_source
from evsed.shell.timers import WallTimers
from hal import ContactInput

if TYPE_CHECKING:
    from evsed.shell.charger import Charger
    from evsed.shell.connector import ConnectorControl

log = structlog.get_logger("evsed")
CallAt = Callable[[float, Callable[[], None]], Any]
TIME_ERROR = 5  # adjtimex(2): the clock is not synchronized


TIMESYNC_DIR = Path("/run/systemd/timesync")  # systemd-timesyncd's: `synchronized` appears once it is


@functools.cache
def _adjtimex() -> Callable[[Any], int] | None:
    """libc's adjtimex, looked up once: the symbols of the running process include libc's, so no
    ldconfig run (ctypes.util.find_library forks one per call)."""
    import ctypes
    try:
        return ctypes.CDLL(None, use_errno=True).adjtimex
    except (OSError, AttributeError):
        return None


def kernel_clock_synced() -> bool:
    """The kernel's own word (adjtimex, read-only): False while NTP has not synchronized it.

    Asked about once a second on the daemon's loop, so it never starts a process or waits. Under
    the unit, ProtectClock= denies adjtimex even to read (seccomp filters the whole @clock set);
    then systemd-timesyncd's flag file answers where it runs, else the clock counts as synchronized."""
    adjtimex = _adjtimex()
    if adjtimex is not None:
        import ctypes
        buf = ctypes.create_string_buffer(512)  # struct timex, modes = 0: read only
        state = adjtimex(buf)
        if state >= 0:
            return bool(state != TIME_ERROR)
    if TIMESYNC_DIR.is_dir():
        return (TIMESYNC_DIR / "synchronized").exists()
    return True


@dataclass
class _Conn:
    """What the policy knows of one connector."""

    window: windows.Decision = windows.Decision(True, None, None, "no window applies")
    solar: loadmgmt.SolarOffer = loadmgmt.SolarOffer(None, "fast mode")
    solar_state: loadmgmt.SolarState = loadmgmt.SolarState()
    phases: tuple[int, ...] | None = None  # measured in this session (0 = L1): kept while paused


class Policy:
    def __init__(self, charger: Charger, *, call_at: CallAt | None, mono: Callable[[], float],
                 clock_synced: Callable[[], bool] = kernel_clock_synced):
        self.charger = charger
        self.mono, self.call_at, self.clock_synced = mono, call_at, clock_synced
        self.timers = WallTimers(charger.wallclock, mono, call_at) if call_at is not None else None
        self.steps = self.timers.steps if self.timers is not None else ClockSteps(charger.wallclock, mono)
        self.conns: dict[int, _Conn] = {cid: _Conn() for cid in charger.connectors}
        self.dlm = loadmgmt.DlmState()
        self.synced = True
        self.mode_window: str | None = None  # the mode a window set, while it is open
        self._deadline: Any = None
        self._busy = self._again = False
        self.input_active = False
        self.site_since = mono()  # the site meter's silence counts from here until its first reading

    @property
    def config(self):
        return self.charger.config

    # --- inputs ---------------------------------------------------------------------------
    def start(self) -> None:
        self.synced = self.clock_synced()
        self.refresh()

    def event(self, event: Any) -> None:
        """A bus subscriber: a session starting or ending, a plug or unplug, changes the shares."""
        if event.type in ("session.started", "session.stopped", "pilot.state_changed", "mode.changed"):
            self.refresh()

    def poll(self) -> None:
        """Inputs without callbacks (the control contact, the clock's sync state): about once a second."""
        synced = self.clock_synced()
        inp = self.charger.devices.site_input
        active = bool(inp.active()) if isinstance(inp, ContactInput) else False
        cable_changed = any(cable_source.limit(ctrl, ctrl.pilot) != ctrl.state.limits.get("cable")
                            for cid, ctrl in self.charger.connectors.items() if self.connector_config(cid).socket)
        if synced != self.synced or active != self.input_active or cable_changed:
            if synced != self.synced:
                log.info("clock.sync_changed", synchronized=synced)
            self.synced, self.input_active = synced, active
            self.refresh()

    def site_sampled(self, reading: Any) -> None:
        """A site-meter reading: load management and solar decide at once (one meter period)."""
        self.refresh(site=reading)

    # --- deciding -------------------------------------------------------------------------
    def refresh(self, site: Any = None) -> None:
        """Every source for every connector, now; re-entrant calls (a feed that publishes) fold in."""
        if self._busy:
            self._again = True
            return
        self._busy = True
        try:
            self._decide(site)
            while self._again:
                self._again = False
                self._decide(None)
        finally:
            self._busy = False

    def _decide(self, site: Any) -> None:
        now_wall, now = self.charger.wallclock(), self.mono()
        self._modes(now_wall)
        next_wall: list[dt.datetime] = []
        for cid, ctrl in self.charger.connectors.items():
            c = self.conns[cid]
            c.window = windows.evaluate(self.config.policy.schedule, self.group_of(ctrl) or None, now_wall,
                                        self.synced)
            if c.window.until_utc is not None:
                next_wall.append(c.window.until_utc)
            self.send(ctrl, window_source.limit(c.window, self.charger.tz))
            self.send(ctrl, group_source.limit(self, ctrl))
            self.send(ctrl, lm.breaker(self.connector_config(cid).breaker_a))
            if self.connector_config(cid).socket:  # a tethered cable is in the core's own chain
                self.send(ctrl, cable_source.limit(ctrl, ctrl.pilot))
            self.send(ctrl, external_source.limit(self, ctrl))
        if site is not None:
            self._solar(site, now)
        elif self._site_silent(now):
            self._solar_silent()
        silent_at = self._site_silent_at()
        self._arm_mono(self._load(site, now) + [silent_at if silent_at is not None and silent_at > now else None])
        self._arm_wall(next_wall)

    def group_of(self, ctrl: Connected) -> str:
        """The group whose rules the connector's session (or authorization) follows: the card's,
        or in free vend the free-vend group unless the card's group is exempt."""
        st = ctrl.state
        if st.session and st.auth_source == "free_vend":
            card = self.charger.auth.local.card(st.id_tag or "")
            if card is not None and self.config.policy.group(card.group).free_vend_exempt:
                return card.group
            return self.config.charger.free_vend_group
        if st.id_tag is not None or st.session:
            return st.group
        return self.config.charger.free_vend_group if self.config.charger.free_vend else ""

    # --- what the sources read (the Protocols of evsed.shell.sources) -------------------------
    @property
    def free_vend(self) -> bool:
        return bool(self.config.charger.free_vend)

    def group_cap_a(self, name: str) -> float | None:
        return self.config.policy.group(name).max_current_a

    @property
    def cap_w(self) -> float:
        return float(self.config.site.load.cap_kw * 1000)

    @property
    def voltage_v(self) -> float:
        return float(self.config.charger.voltage_v)

    def phases_of(self, ctrl: Connected) -> tuple[int, ...]:
        return self._phases(self.charger.connectors[ctrl.id])

    def connector_config(self, cid: int):
        return next(c for c in self.config.connectors if c.id == cid)

    def _phases(self, ctrl: ConnectorControl) -> tuple[int, ...]:
        """The phases (0 = L1) the connector's EV draws on. Measured once, they belong to the
        session, also while it is paused; until then those its group or the connector declares;
        else all three, the safe assumption."""
        if self.config.charger.phases == 1:
            return (0,)
        c, r = self.conns[ctrl.id], ctrl.last_reading
        if not ctrl.state.session:
            c.phases = None
        elif r is not None and ctrl.state.contactor_closed and len(r.current_a) >= 3 \
                and max(r.current_a[:3]) > loadmgmt.PHASE_DRAWN_A:
            c.phases = loadmgmt.phases_in_use(r.current_a[:3])
        if c.phases is not None:
            return c.phases
        declared = self.config.policy.group(self.group_of(ctrl)).phases or self.connector_config(ctrl.id).phases
        return tuple(n - 1 for n in declared) if declared else (0, 1, 2)

    def mode_of(self, ctrl: ConnectorControl) -> loadmgmt.Mode:
        group_mode = self.config.policy.group(self.group_of(ctrl)).mode
        return loadmgmt.Mode(group_mode or self.charger.mode)

    def _modes(self, now_wall: dt.datetime) -> None:
        """A mode window sets the charger's mode when it opens, and the configured one when it closes."""
        open_mode, until = None, []
        for mw in self.config.policy.mode_windows:
            d = windows.evaluate(windows.Schedule(self.config.policy.schedule.tz, (mw.window,)), None, now_wall)
            if not d.allowed and open_mode is None:
                open_mode = mw.mode
            if d.until_utc is not None:
                until.append(d.until_utc)
        if open_mode != self.mode_window:
            self.mode_window = open_mode
            self.charger.mode = open_mode or self.config.charger.mode
            self.charger.publish("mode.changed", mode=self.charger.mode, by="window")
        if self.timers is not None:
            self.timers.set("mode", min(until) if until else None, self.refresh)

    def _solar(self, site: Any, now: float) -> None:
        for cid, ctrl in self.charger.connectors.items():
            c = self.conns[cid]
            mode = self.mode_of(ctrl)
            if not ctrl.state.session:
                c.solar_state, c.solar = loadmgmt.SolarState(), loadmgmt.SolarOffer(
                    None if mode is loadmgmt.Mode.FAST else 0.0, f"{mode.value} mode")
            else:
                own = ctrl.last_reading.power_total_w if ctrl.last_reading is not None else 0.0
                c.solar_state, c.solar = loadmgmt.solar_step(
                    self.config.site.load.solar, c.solar_state, now, mode, site.power_total_w, own,
                    len(self._phases(ctrl)))
            self.send(ctrl, solar_source.limit(c.solar, self.charger.plans.lifts_solar(ctrl)))

    def _site_silent_at(self) -> float | None:
        """When (monotonic s) the site meter's reading goes stale (None: no site meter)."""
        if self.config.site.meter is None:
            return None
        at = self.charger.site_read_at
        return (at if at is not None else self.site_since) + self.config.site.load.meter_timeout_s

    def _site_silent(self, now: float) -> bool:
        at = self._site_silent_at()
        return at is not None and now >= at

    def _solar_silent(self) -> None:
        """No surplus is known while the site meter is silent: solar assumes none (loadmgmt.solar_silent)."""
        for cid, ctrl in self.charger.connectors.items():
            c = self.conns[cid]
            c.solar_state, c.solar = loadmgmt.SolarState(), loadmgmt.solar_silent(self.mode_of(ctrl))
            self.send(ctrl, solar_source.limit(c.solar, self.charger.plans.lifts_solar(ctrl)))

    def _load(self, site: Any, now: float) -> list[float | None]:
        """Load management's offers now; the times (monotonic s) it wants to decide again."""
        cfg = self.config.site.load.dlm
        if cfg is None:
            return []
        demands = []
        for cid, ctrl in self.charger.connectors.items():
            if not ctrl.state.session:
                self.send(ctrl, loadmgmt_source.limit(None))  # a new session waits for its offer
                continue
            measured = ctrl.last_reading.current_a if ctrl.last_reading is not None else ()
            measured3 = tuple((list(measured) + [0.0, 0.0, 0.0])[:3]) if ctrl.state.contactor_closed else (0.0,) * 3
            demands.append(loadmgmt.Demand(str(cid), self._room_a(ctrl), self._phases(ctrl), measured3,  # type: ignore[arg-type]
                                           self.connector_config(cid).priority, bool(ctrl.state.faults)))
        current = None if site is None else tuple((list(site.current_a) + [0.0, 0.0, 0.0])[:3])
        self.dlm, offers = loadmgmt.step(cfg, self.dlm, now, demands, current)
        for offer in offers:  # an EV over its offer where the room is needed: the core opens it first
            if offer.overcurrent is not None:
                self.charger.connectors[int(offer.connector)].feed(ev.OvercurrentDetected(*offer.overcurrent))
        for offer in sorted(offers, key=lambda o: o.current_a):  # lowering first, then raising
            self.send(self.charger.connectors[int(offer.connector)], loadmgmt_source.limit(offer))
        return [loadmgmt.next_deadline(cfg, self.dlm, now), *(o.until for o in offers)]

    @staticmethod
    def _room_a(ctrl: ConnectorControl) -> float:
        """What every source but load management allows the connector, A per phase."""
        return lm.chain(lim for lim in ctrl.chain().limits if lim.source != "site").allowed_a

    def send(self, ctrl: ConnectorControl, limit: lm.Limit) -> None:
        """A source's limit to the core, when it differs from the one the core holds; a changed
        ceiling is published (limit.changed)."""
        before = ctrl.state.limits.get(limit.source, lm.Limit(limit.source, None))
        if before == limit:
            return
        ctrl.feed(ev.LimitChanged(limit.source, limit.current_a, limit.detail, limit.blocked))
        after = ctrl.state.limits.get(limit.source, lm.Limit(limit.source, None))
        if _ceiling(after) != _ceiling(before):
            ctrl.publish("limit.changed", source=limit.source, current_a=_ceiling(after),
                         allowed_a=round(ctrl.chain().allowed_a, 2))

    # --- timers ---------------------------------------------------------------------------
    def _arm_wall(self, times: list[dt.datetime]) -> None:
        if self.timers is not None:
            self.timers.set("windows", min(times) if times else None, self.refresh)

    def _arm_mono(self, times: list[float | None]) -> None:
        if self.call_at is None:
            return
        due = [t for t in times if t is not None]
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if due:
            self._deadline = self.call_at(min(due), self.refresh)

    def check_clock(self) -> None:
        """About once a second: a step of the wall clock re-arms the window timers and corrects
        the times of sessions taken on the unsynchronized clock (evsed.shell.clocksteps)."""
        by_s = self.timers.check_clock() if self.timers is not None else self.steps.check()
        if by_s is not None:
            self.charger.session_clock.stepped(by_s)
        self.charger.session_clock.settle()

    # --- status ---------------------------------------------------------------------------
    def status(self, ctrl: ConnectorControl) -> dict[str, Any]:
        """The policy's part of a connector's status (the limit chain is the core's)."""
        return {"mode": self.mode_of(ctrl).value, "group": self.group_of(ctrl)}


def _ceiling(lim: lm.Limit) -> float | None:
    """A limit as a ceiling in A: a blocking source's is 0 A; None: none."""
    return 0.0 if lim.blocked is not None else lim.current_a
