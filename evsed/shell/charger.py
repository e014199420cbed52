"""The charger: its connectors, the charger-level devices (card reader, site meter), the
authorizer chain and card routing, and the bus every event is published on.

Synchronous and clock-injected like the connectors; the daemon and the scenario runner each
make one and drive it (real time and threads, or a virtual clock and inline writes).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any, Callable, Literal, cast
from zoneinfo import ZoneInfo

import structlog

from evsed import protocol as p
from evsed.config import SERVICE_SECTIONS, Config
from evsed.config.policy import modes_served
from evsed.core import tariff as tariffs
from evsed.core import loadmgmt, windows
from evsed.core.events import CardPresented, SetAvailability, StopReason, StopRequested
from evsed.core.state import PLUGGED_STATES, card_repeated
from evsed.shell import availability
from evsed.shell.auth import Chain, LocalList
from evsed.shell.planfile import PlanFile
from evsed.shell.plans import Plans
from evsed.shell.policy import CallAt, Policy, kernel_clock_synced
from evsed.shell.bus import Bus, ChargerEvent, log_event
from evsed.shell.clocksteps import SessionClock
from evsed.shell.connector import ConnectorControl, Offload, _inline
from evsed.shell.devices import Devices, configured
from evsed.shell.records import Recorder
from evsed.store.sessions import InlineWriter, StoreWriter
from hal import MeterReading, canonical_uid

log = structlog.get_logger("evsed")


def restart_needed(old: Config, new: Config) -> list[str]:
    """The changed keys a running daemon cannot apply: where its files and socket are, its
    identity and logging, and the service processes' own tables (they read them at start)."""
    keys = [("[store] state_dir", old.store.state_dir, new.store.state_dir),
            ("[store] runtime_dir", old.store.runtime_dir, new.store.runtime_dir),
            ("[charger] id", old.charger.id, new.charger.id), ("[log]", old.log, new.log),
            ("[simulator]", old.simulator, new.simulator)]
    keys += [(f"[{name}]", _section(old, name), _section(new, name)) for name in SERVICE_SECTIONS]
    return [key for key, was, now in keys if was != now]


def _section(config: Config, name: str) -> Any:
    section = config.sections.get(name)
    return None if section is None else dict(section.data)


class Charger:
    def __init__(self, config: Config, devices: Devices, *, clock: Callable[[], float],
                 wallclock: Callable[[], dt.datetime], writer: StoreWriter | InlineWriter, first_session_id: int,
                 schedule: Callable[[int, float | None], None] = lambda cid, when: None,
                 offload: Offload = _inline, stored: Callable[[p.Event], None] = lambda event: None,
                 call_at: CallAt | None = None, clock_synced: Callable[[], bool] = kernel_clock_synced,
                 plan_file: PlanFile | None = None, inoperative: frozenset[int] = frozenset(),
                 keep_availability: Callable[[frozenset[int]], None] = lambda inoperative: None,
                 read_meter_now: Callable[[int], None] = lambda cid: None,
                 on_loop: Callable[[Callable[[], None]], object] = lambda work: work()):
        """stored(event): a durable event is committed (called in the store's thread); on_loop(work)
        runs work on the charger's loop from that thread; read_meter_now(connector) asks for a
        meter reading at once (a stopped session's final one)."""
        self.config, self.devices, self.world = config, devices, devices.world
        self.clock, self.wallclock = clock, wallclock
        self.tz = ZoneInfo(config.charger.timezone)
        self.bus = Bus()
        self.bus.subscribe(log_event)
        self._stored, self._on_loop = stored, on_loop
        self.recorder = Recorder(writer, clock=clock, checkpoint_s=config.store.checkpoint_s,
                                 sample_interval_s=config.store.sample_interval_s, pricing=self._pricing,
                                 stored=self._event_stored, grid_share=self.grid_share,
                                 meter_identity=lambda cid: self.connectors[cid].meter_identity)
        self.bus.subscribe(self.recorder)
        self.auth = Chain(self._local_list(config), config.authorization)
        self.mode = config.charger.mode
        self.learning: float | None = None  # `evsed cards learn`: the next tap is read, not used, until then
        self.learned: p.LearnedCard | None = None
        self.learned_at: float | None = None  # when (monotonic) that card was tapped
        self.reservations: dict[int, int] = {}  # connector -> OCPP reservation id
        self.offload = offload
        self.writing_config = False  # a changed config file is being written (off the loop)
        self.inoperative, self.keep_availability = inoperative, keep_availability  # 0: the charger
        self.reader_error = ""
        self.reading_cards = False  # a reader loop takes taps from devices.reader (the daemon)
        self.site_reading: MeterReading | None = None
        self.site_read_at: float | None = None  # when (monotonic) site_reading was taken
        self._next_session_id = first_session_id
        self.connectors: dict[int, ConnectorControl] = {}
        for conn in config.connectors:
            self.connectors[conn.id] = ConnectorControl(
                conn.id, config.core_config(conn), devices.connectors[conn.id], clock=clock, wallclock=wallclock,
                bus=self.bus, authorize=self.auth.request, card_name=self.auth.card_name,
                next_session_id=self._session_id, schedule=self._scheduler(schedule, conn.id), offload=offload,
                read_meter_now=self._meter_reader(read_meter_now, conn.id))
        self.policy = Policy(self, call_at=call_at, mono=clock, clock_synced=clock_synced)
        self.bus.subscribe(self.policy.event)
        self.session_clock = SessionClock(lambda: self.policy.synced, clock, lambda cid: self.connectors[cid].session,
                                          lambda cid, type_, data: self.bus.publish(
                                              ChargerEvent(type_, cid, self.wallclock(), data)))
        self.bus.subscribe(self.session_clock)
        self.plans = Plans(self, plan_file)  # plan_file None: in memory (tests, scenarios)
        self.bus.subscribe(self.plans.event)

    def _local_list(self, config: Config) -> LocalList:
        return LocalList(config.cards, lambda: self.wallclock().astimezone(self.tz).date(),
                         group_cap=lambda group: config.policy.group(group).max_current_a,
                         outside_window=lambda group: self._outside_window(config, group))

    def _outside_window(self, config: Config, group: str) -> str | None:
        """A card of a group with windows of its own may start only inside them."""
        schedule = config.policy.schedule
        if not any(group in w.groups for w in schedule.windows):
            return None
        d = windows.evaluate(schedule, group, self.wallclock(), self.policy.synced)
        if d.allowed:
            return None
        until = d.until_utc.astimezone(self.tz).strftime("%H:%M") if d.until_utc else "further notice"
        # the rule that refused: the group's own allow windows, or a forbid window over them
        rule = "outside the group's window" if d.reason == windows.OUTSIDE_ALLOWED else d.reason
        return f"{rule} until {until}"

    @staticmethod
    def _meter_reader(read_meter_now: Callable[[int], None], cid: int) -> Callable[[], None]:
        return lambda: read_meter_now(cid)

    @staticmethod
    def _scheduler(schedule: Callable[[int, float | None], None], cid: int) -> Callable[[float | None], None]:
        return lambda when: schedule(cid, when)

    def _pricing(self, group: str) -> str:
        tariff = self.config.tariff
        return tariff.pricing(group, self.config.charger.timezone).to_json() if tariff is not None else ""

    def _event_stored(self, event: p.Event) -> None:
        """A durable event is committed (the store's thread): a stopped session is now finished."""
        self._stored(event)
        if isinstance(event, p.SessionStopped) and event.connector in self.connectors:
            ctrl, session = self.connectors[event.connector], event.session
            self._on_loop(lambda: ctrl.session_saved(session))

    def meter_delivered(self, connector: int, session: int, energy_wh: int) -> None:
        """The uplink delivered this reading of a running session to the CSMS: made durable at once
        when above the last checkpoint (never above the daemon's own reading)."""
        s = self.connectors[connector].session
        if s is not None and s.row_id == session:
            self.recorder.delivered(s, min(energy_wh, s.meter_last_wh), self.wallclock())

    def grid_share(self, connector: int) -> float | None:
        """The share (0-1) of a connector's EV power that the grid supplies now, the rest being solar
        surplus: what the site imports, up to what the EVs draw, shared by their power. None
        without a site meter; all grid until it has read, and while its reading is stale."""
        if self.config.site.meter is None:
            return None
        site = self.site_reading
        drawing = sum(max(0.0, c.session.power_w) for c in self.connectors.values() if c.session is not None)
        if site is None or self.site_stale() or drawing <= 0:
            return 1.0
        return min(max(site.power_total_w, 0.0), drawing) / drawing

    def _session_id(self) -> int:
        sid, self._next_session_id = self._next_session_id, self._next_session_id + 1
        return sid

    def publish(self, type_: str, **data: Any) -> None:
        """A charger-level event (connector 0)."""
        self.bus.publish(ChargerEvent(type_, 0, self.wallclock(), data))

    # --- life cycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Every connector starts open; then every status is told once (connector 0 is the charger),
        so a service that comes up sees where things stand."""
        for ctrl in self.connectors.values():
            ctrl.start()
            if ctrl.id in self.inoperative:  # kept across the restart
                ctrl.feed(SetAvailability(False))
        self.publish("connector.status", **self._charger_status())
        for ctrl in self.connectors.values():
            ctrl.publish("connector.status", status=ctrl.state.status.value, reason=ctrl.state.reason,
                         ev_connected=ctrl.state.pilot in PLUGGED_STATES)
        self.policy.start()
        self.plans.refresh()

    def shutdown(self, on_error: Callable[[ConnectorControl, BaseException], None]) -> None:
        """End every session and open every contactor; one connector's failure spares the others."""
        for ctrl in self.connectors.values():
            try:
                ctrl.shutdown()
            except Exception as exc:  # noqa: BLE001 - keep shutting the others down
                on_error(ctrl, exc)

    def release_all(self, on_error: Callable[[ConnectorControl, BaseException], None], at_once: bool = True) -> None:
        """Open every contactor without asking the core: the last line of defence (at_once False:
        an orderly stop, where a charging EV may stop first)."""
        for ctrl in self.connectors.values():
            try:
                ctrl.release(at_once)
            except Exception as exc:  # noqa: BLE001 - keep releasing the others
                on_error(ctrl, exc)

    def reload(self, new: Config) -> p.ReloadReply:
        """Apply a changed config without touching a running session: cards, groups, windows,
        tariff, limits, timing (the daemon's pilot and meter loops read it each round), the
        store's checkpoint and sample intervals. Devices are opened once: a change to them is
        refused. Other keys only a restart applies are accepted, named in `restart_needed`."""
        old_devices = [(cid, kind, d) for cid, kind, d in configured(self.config)]
        if [(cid, kind, d) for cid, kind, d in configured(new)] != old_devices:
            return p.ReloadReply(result="Rejected", reason="devices or connectors changed: restart evsed to apply")
        restart = restart_needed(self.config, new)
        if restart:
            log.warning("config.reload_needs_restart", keys=restart)
        self.config, self.tz = new, ZoneInfo(new.charger.timezone)
        self.recorder.checkpoint_s = new.store.checkpoint_s
        self.recorder.sample_interval_s = new.store.sample_interval_s
        self.auth.local = self._local_list(new)
        if self.mode not in (new.charger.mode,) and self.policy.mode_window is None:
            self.mode = new.charger.mode
        for conn in new.connectors:
            ctrl = self.connectors[conn.id]
            ctrl.cfg = replace(new.core_config(conn), has_feedback=ctrl.cfg.has_feedback,
                               has_meter=ctrl.cfg.has_meter, has_self_test=ctrl.cfg.has_self_test)
        self.publish("config.reloaded", path=str(new.path))
        self.policy.refresh()
        for ctrl in self.connectors.values():
            ctrl.tick()  # a new maximum or timing takes effect now
        return p.ReloadReply(result="Accepted", restart_needed=tuple(restart))

    def save_config(self, text: str, new: Config) -> None:
        """Write a changed config file off the loop (an SD card's fsync must not delay the safety
        loop), then apply it as a reload does; one write at a time (the caller checks
        writing_config). A write that fails leaves the file and the running config as they were."""
        from evsed.config import edit
        self.writing_config = True

        def write() -> bool:
            edit.write_atomically(new.path, text)
            return True

        def written(ok: bool) -> None:
            self.writing_config = False
            if not ok:
                log.error("config.write_failed", path=str(new.path))
                return
            log.info("config.written", path=str(new.path))
            self.reload(new)
        self.offload(write, written)

    # --- connectors and cards ---------------------------------------------------------------
    def connector(self, cid: int | None) -> ConnectorControl:
        if cid is None:
            return next(iter(self.connectors.values()))
        if cid not in self.connectors:
            raise ValueError(f"no connector {cid}")
        return self.connectors[cid]

    def set_availability(self, cid: int, operative: bool, keep: bool = True) -> Literal["Accepted", "Scheduled"]:
        """Operative or inoperative (0: the charger and every connector): Accepted, or Scheduled
        when a session runs on one made inoperative. keep: kept across a restart (not the
        updater's hold). The charger's own status (connector 0) is told when it changes."""
        ctrls = self.connectors_for(cid)
        for ctrl in ctrls:
            ctrl.feed(SetAvailability(operative))
        before, self.inoperative = self.inoperative, availability.change(self.inoperative, cid, operative,
                                                                          list(self.connectors))
        if keep and self.inoperative != before:
            self.keep_availability(self.inoperative)
        if (0 in before) != (0 in self.inoperative):
            self.publish("connector.status", **self._charger_status())
        scheduled = any(c.state.session for c in ctrls) and not operative
        return "Scheduled" if scheduled else "Accepted"

    def _charger_status(self) -> dict[str, str]:
        return {"status": "Unavailable", "reason": "charger unavailable"} if 0 in self.inoperative \
            else {"status": "Available", "reason": ""}

    def connectors_for(self, cid: int) -> list[ConnectorControl]:
        """Connector 0 means all of them, as in OCPP."""
        return list(self.connectors.values()) if cid == 0 else [self.connector(cid)]

    def present_card(self, uid: str) -> int:
        """Give a tap to the connector it is meant for: the one whose session it started, else
        one with an EV waiting for a card, else the first free one. Returns that connector's id.
        The same card read again within card_repeat_s goes where it went, which ignores it.
        A card that may stop another card's session (its group's stop_by, a master card, any known
        card in free vend) stops it when no EV waits for a card."""
        if self.learning is not None:
            return self._learn(uid)
        ctrls = list(self.connectors.values())
        repeated = next((c for c in ctrls if card_repeated(c.cfg, c.state, uid, c.clock())), None)
        waiting = next((c for c in ctrls if not c.state.session and not c.state.finishing
                        and c.state.pilot in PLUGGED_STATES), None)
        stoppable = next((c for c in ctrls if c.state.session and c.state.id_tag != uid
                          and self.may_stop(uid, c)), None)
        if repeated is None and waiting is None and stoppable is not None:
            stoppable.publish("card.presented", id_tag=uid)
            stoppable.publish("session.stop_by_card", id_tag=uid, started_by=stoppable.state.id_tag)
            stoppable.feed(StopRequested(StopReason.LOCAL))
            return stoppable.id
        chosen = (repeated
                  or next((c for c in ctrls if c.state.session and c.state.id_tag == uid), None)
                  or waiting
                  or next((c for c in ctrls if not c.state.session and c.state.pilot in PLUGGED_STATES), None)
                  or next((c for c in ctrls if not c.state.session), ctrls[0]))
        chosen.publish("card.presented", id_tag=uid)
        chosen.feed(CardPresented(uid))
        return chosen.id

    def may_stop(self, uid: str, ctrl: ConnectorControl) -> bool:
        """Whether this card may stop ctrl's running session, started by another card."""
        verdict = self.auth.local.verdict(uid)
        card = self.auth.local.card(uid)
        if card is None or verdict.result == "reject" and not verdict.reason.startswith("outside"):
            return False
        if ctrl.state.auth_source == "free_vend":
            return True  # free vend: any known card ends the anonymous session
        policy = self.config.policy
        rule = policy.group(ctrl.state.group).stop_by
        if rule == "group":
            return bool(card.group) and card.group == ctrl.state.group
        if rule == "master":
            return policy.group(card.group).master
        return False

    def _learn(self, uid: str) -> int:
        """`evsed cards learn`: tell the UID and a [[card]] block; the tap does nothing else."""
        card = self.auth.local.card(uid)
        self.learning = None
        self.learned_at = self.clock()
        self.learned = p.LearnedCard(uid=uid, known=card is not None, name=card.name if card else "",
                                     group=card.group if card else "",
                                     toml=f'[[card]]\nuid = "{uid}"\nname = ""\n# group = ""\n')
        self.publish("card.learned", id_tag=uid, known=card is not None)
        return 0

    def simulated_tap(self, uid: str) -> str:
        """A card on the simulated reader: through the reader loop where one runs, else at once."""
        uid = canonical_uid(uid)
        if self.reading_cards:
            self.world.reader.tap(uid)
        else:
            self.present_card(uid)
        return uid

    def site_sampled(self, reading: MeterReading) -> None:
        self.site_reading, self.site_read_at = reading, self.clock()
        self.publish("site.sample", current_a=list(reading.current_a), power_w=reading.power_total_w)
        self.policy.site_sampled(reading)

    # --- status -----------------------------------------------------------------------------
    def modes(self) -> tuple[p.Mode, ...]:
        """The charging modes this charger can follow (the solar ones need a site meter)."""
        return cast(tuple[p.Mode, ...], modes_served(self.config.site.meter is not None))

    def site_stale(self) -> bool:
        """The site meter's last reading is too old to be shown or used as now's (none: stale)."""
        return loadmgmt.meter_silent(self.site_read_at, self.clock(), self.config.site.load.meter_timeout_s)

    def status(self) -> p.StatusReply:
        site = self.site_reading
        return p.StatusReply(charger=self.config.charger.id, mode=cast(p.Mode, self.mode), modes=self.modes(),
                             card_reader_error=self.reader_error,
                             site=None if site is None else p.SiteNow(current_a=tuple(site.current_a),
                                                                      power_w=site.power_total_w,
                                                                      stale=self.site_stale()),
                             connectors=tuple(self._connector_status(c) for c in self.connectors.values()),
                             card_plans=self.plans.waiting())

    def _connector_status(self, ctrl: ConnectorControl) -> p.ConnectorStatus:
        """The connector's own status (with the core's limit chain), its mode, group and plan."""
        st = ctrl.status()
        st.update(self.policy.status(ctrl))
        st["plan"] = self.plans.now(ctrl)
        session = st["session"]
        if session is not None and self.config.tariff is not None:
            st["session"] = self._price_so_far(session)
        return p.ConnectorStatus(**st)

    def _price_so_far(self, session: p.SessionNow) -> p.SessionNow:
        """What the driver pays so far (major units) under the session's tariff, from its start
        reading to the last one; the exact figure, split by the samples, comes at the stop."""
        pricing = tariffs.Pricing.from_json(self._pricing(session.group))
        start = dt.datetime.fromisoformat(session.started_at)
        now = max(start, self.wallclock())
        charge = tariffs.charge(pricing, start, now, 0, session.energy_wh)
        return replace(session, price=charge.revenue / 10 ** pricing.decimals, currency=pricing.currency)
