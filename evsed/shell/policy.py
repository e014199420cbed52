"""The charger-level limit sources: time-of-use windows, group caps, the cable's PP, the
external cap input, dynamic load management and solar surplus, fed to the connectors.

Decisions come from the pure modules (evsed.core.windows, limits, loadmgmt); this module
only gathers their inputs, sends LimitChanged on a change, and arms timers for the next one.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import structlog

from evsed import protocol as p
from evsed.core import events as ev
from evsed.core import limits as lm
from evsed.core import loadmgmt, windows
from evsed.core.state import AUTH_LIMIT, PLUGGED_STATES
from evsed.shell.clocksteps import ClockSteps
from evsed.shell.timers import WallTimers
from hal import ContactInput, ProximityPilot

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
    cable: lm.Limit | None = None
    site: loadmgmt.Offer | None = None
    solar: loadmgmt.SolarOffer = loadmgmt.SolarOffer(None, "fast mode")
    solar_state: loadmgmt.SolarState = loadmgmt.SolarState()
    sent: dict[str, float | None] = field(default_factory=dict)
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
        cable_changed = any(self._cable(ctrl) != self.conns[cid].cable for cid, ctrl in self.charger.connectors.items()
                            if self.connector_config(cid).socket)
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
            self._send(ctrl, "window", None if c.window.allowed and c.window.cap_a is None
                       else (c.window.cap_a if c.window.allowed else 0.0))
            self._send(ctrl, "group", self._group_cap(ctrl))
            self._send(ctrl, "breaker", self.connector_config(cid).breaker_a)
            c.cable = self._cable(ctrl)
            pp = c.cable if self.connector_config(cid).socket else None  # a fixed cable is in the core's max
            self._send(ctrl, "cable", None if pp is None else (0.0 if pp.blocked else pp.current_a))
            ext = self._external(ctrl)
            self._send(ctrl, "external_cap", ext.current_a)
        if site is not None:
            self._solar(site, now)
        self._load(site, now)
        self._arm_wall(next_wall)

    def group_of(self, ctrl: ConnectorControl) -> str:
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

    def _group_cap(self, ctrl: ConnectorControl) -> float | None:
        """Free vend: the free-vend group's cap (a card's comes with its authorization)."""
        if ctrl.state.auth_source == "free_vend" or (not ctrl.state.session and self.config.charger.free_vend):
            return self.config.policy.group(self.group_of(ctrl)).max_current_a
        return None

    def connector_config(self, cid: int):
        return next(c for c in self.config.connectors if c.id == cid)

    def _cable(self, ctrl: ConnectorControl) -> lm.Limit | None:
        conn = self.connector_config(ctrl.id)
        if not conn.socket:
            return lm.cable_fixed(conn.cable_a)
        if not isinstance(ctrl.pilot, ProximityPilot) or ctrl.state.pilot not in PLUGGED_STATES:
            return None  # no PP on this board, or nothing plugged: the charger's maximum
        try:
            ohm = ctrl.pilot.proximity_ohm()
        except Exception as exc:  # noqa: BLE001 - a failed PP read blocks charging, with the reason
            log.warning("pp.read_failed", connector=ctrl.id, error=repr(exc))
            ohm = None
        return lm.cable_from_pp(ohm)

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

    def _external(self, ctrl: ConnectorControl) -> lm.Limit:
        load = self.config.site.load
        return lm.external_cap(self.input_active, load.cap_kw * 1000, len(self._phases(ctrl)),
                               self.config.charger.voltage_v)

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
            self._send(ctrl, "solar", None if self.charger.plans.lifts_solar(ctrl) else c.solar.current_a)

    def _load(self, site: Any, now: float) -> None:
        cfg = self.config.site.load.dlm
        if cfg is None:
            return
        demands = []
        for cid, ctrl in self.charger.connectors.items():
            if not ctrl.state.session:
                self.conns[cid].site = None
                self._send(ctrl, "site", 0.0)  # a new session waits for its offer
                continue
            others = [a for k, a in ctrl.state.limits.items() if k != "site"]
            measured = ctrl.last_reading.current_a if ctrl.last_reading is not None else ()
            measured3 = tuple((list(measured) + [0.0, 0.0, 0.0])[:3]) if ctrl.state.contactor_closed else (0.0,) * 3
            demands.append(loadmgmt.Demand(str(cid), min([ctrl.cfg.max_current_a, *others]), self._phases(ctrl),
                                           measured3, self.connector_config(cid).priority))  # type: ignore[arg-type]
        current = None if site is None else tuple((list(site.current_a) + [0.0, 0.0, 0.0])[:3])
        self.dlm, offers = loadmgmt.step(cfg, self.dlm, now, demands, current)
        for offer in sorted(offers, key=lambda o: o.current_a):  # lowering first, then raising
            cid = int(offer.connector)
            self.conns[cid].site = offer
            self._send(self.charger.connectors[cid], "site", offer.current_a)
        self._arm_mono(loadmgmt.next_deadline(cfg, self.dlm, now),
                       [o.until for o in offers if o.until is not None])

    def send(self, ctrl: ConnectorControl, source: str, current_a: float | None) -> None:
        """A limit from a source kept in a module of its own (evsed.shell.plans)."""
        self._send(ctrl, source, current_a)

    def _send(self, ctrl: ConnectorControl, source: str, current_a: float | None) -> None:
        c = self.conns[ctrl.id]
        if c.sent.get(source) == current_a:  # never sent counts as None: no limit
            return
        c.sent[source] = current_a
        ctrl.feed(ev.LimitChanged(source, current_a))
        ctrl.publish("limit.changed", source=source, current_a=current_a,
                     allowed_a=round(min([ctrl.cfg.max_current_a, *ctrl.state.limits.values()]), 2))

    # --- timers ---------------------------------------------------------------------------
    def _arm_wall(self, times: list[dt.datetime]) -> None:
        if self.timers is not None:
            self.timers.set("windows", min(times) if times else None, self.refresh)

    def _arm_mono(self, deadline: float | None, more: list[float]) -> None:
        if self.call_at is None:
            return
        due = [t for t in [deadline, *more] if t is not None]
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
    def chain(self, ctrl: ConnectorControl) -> lm.ChainResult:
        """Every source's limit for status, in CHAIN order, and which binds."""
        c, st, conn = self.conns[ctrl.id], ctrl.state, self.connector_config(ctrl.id)
        group_caps = [a for a in (st.limits.get(AUTH_LIMIT), st.limits.get("group")) if a is not None]
        group_name = self.group_of(ctrl) or None
        site = (lm.site(None) if c.site is None and self.config.site.load.dlm is None
                else lm.site(c.site.current_a if c.site else 0.0,
                             c.site.reason if c.site else "no session: waiting for an offer"))
        items = [lm.hardware(self.config.charger.max_current_a),
                 c.cable if c.cable is not None else lm.Limit("cable", None, "socket: charger maximum"),
                 lm.breaker(conn.breaker_a),
                 lm.window(c.window.allowed, c.window.cap_a, self._window_text(c.window)),
                 lm.group(group_name, min(group_caps) if group_caps else None), site,
                 self._external(ctrl), self._solar_limit(ctrl, c),
                 lm.ocpp(st.limits.get("ocpp")), self.charger.plans.limit(ctrl)]
        known = {"window", "group", "breaker", "cable", "site", "external_cap", "solar", "ocpp", "plan", AUTH_LIMIT}
        items += [lm.Limit(k, v, "set by command") for k, v in st.limits.items() if k not in known]
        return lm.chain(items)

    def _solar_limit(self, ctrl: ConnectorControl, c: _Conn) -> lm.Limit:
        if self.charger.plans.lifts_solar(ctrl):
            return lm.solar(None, "steps aside in the charging plan's slot")
        return lm.solar(c.solar.current_a, c.solar.reason)

    def _window_text(self, d: windows.Decision) -> str:
        if d.until_utc is None:
            return d.reason
        local = d.until_utc.astimezone(self.charger.tz).strftime("%H:%M")
        return f"paused by window until {local} ({d.reason})" if not d.allowed else f"{d.reason} until {local}"

    def status(self, ctrl: ConnectorControl) -> dict[str, Any]:
        r = self.chain(ctrl)
        return {"limit_chain": {lim.source: p.ChainLink(current_a=lim.current_a, detail=lim.detail,
                                                       blocked=lim.blocked or None) for lim in r.limits},
                "binding": r.binding, "offer_a": r.current_a, "not_charging": r.not_charging,
                "mode": self.mode_of(ctrl).value, "group": self.group_of(ctrl)}
