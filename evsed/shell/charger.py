"""The charger: its connectors, the charger-level devices (card reader, site meter), the
authorizer chain and card routing, and the bus every event is published on.

Synchronous and clock-injected like the connectors; the daemon and the scenario runner each
make one and drive it (real time and threads, or a virtual clock and inline writes).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Callable
from zoneinfo import ZoneInfo

from evsed.config import Config
from evsed.core.events import CardPresented
from evsed.core.state import PLUGGED_STATES, card_repeated
from evsed.shell.auth import Chain, LocalList
from evsed.shell.bus import Bus, ChargerEvent, log_event
from evsed.shell.connector import ConnectorControl, Offload, _inline
from evsed.shell.devices import Devices
from evsed.shell.records import Recorder
from evsed.store.sessions import InlineWriter, StoreWriter
from hal import MeterReading, canonical_uid


class Charger:
    def __init__(self, config: Config, devices: Devices, *, clock: Callable[[], float],
                 wallclock: Callable[[], dt.datetime], writer: StoreWriter | InlineWriter, first_session_id: int,
                 schedule: Callable[[int, float | None], None] = lambda cid, when: None,
                 offload: Offload = _inline, stored: Callable[[dict[str, Any]], None] = lambda event: None):
        self.config, self.devices, self.world = config, devices, devices.world
        self.clock, self.wallclock = clock, wallclock
        self.tz = ZoneInfo(config.charger.timezone)
        self.bus = Bus()
        self.bus.subscribe(log_event)
        self.recorder = Recorder(writer, clock=clock, checkpoint_s=config.store.checkpoint_s,
                                 sample_interval_s=config.store.sample_interval_s, pricing=self._pricing, stored=stored)
        self.bus.subscribe(self.recorder)
        self.auth = Chain(LocalList(config.cards, lambda: self.wallclock().astimezone(self.tz).date()),
                          config.authorization)
        self.mode = "fast"
        self.reservations: dict[int, int] = {}  # connector -> OCPP reservation id
        self.reader_error = ""
        self.reading_cards = False  # a reader loop takes taps from devices.reader (the daemon)
        self.site_reading: MeterReading | None = None
        self._next_session_id = first_session_id
        self.connectors: dict[int, ConnectorControl] = {}
        for conn in config.connectors:
            self.connectors[conn.id] = ConnectorControl(
                conn.id, config.core_config(conn), devices.connectors[conn.id], clock=clock, wallclock=wallclock,
                bus=self.bus, authorize=self.auth.request, card_name=self.auth.card_name,
                next_session_id=self._session_id, schedule=self._scheduler(schedule, conn.id), offload=offload)

    @staticmethod
    def _scheduler(schedule: Callable[[int, float | None], None], cid: int) -> Callable[[float | None], None]:
        return lambda when: schedule(cid, when)

    def _pricing(self, group: str) -> str:
        tariff = self.config.tariff
        return tariff.pricing(group, self.config.charger.timezone).to_json() if tariff is not None else ""

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
        self.publish("connector.status", status="Available", reason="")
        for ctrl in self.connectors.values():
            ctrl.publish("connector.status", status=ctrl.state.status.value, reason=ctrl.state.reason)

    def shutdown(self, on_error: Callable[[ConnectorControl, BaseException], None]) -> None:
        """End every session and open every contactor; one connector's failure spares the others."""
        for ctrl in self.connectors.values():
            try:
                ctrl.shutdown()
            except Exception as exc:  # noqa: BLE001 - keep shutting the others down
                on_error(ctrl, exc)

    def release_all(self, on_error: Callable[[ConnectorControl, BaseException], None]) -> None:
        """Open every contactor without asking the core: the last line of defence."""
        for ctrl in self.connectors.values():
            try:
                ctrl.release()
            except Exception as exc:  # noqa: BLE001 - keep releasing the others
                on_error(ctrl, exc)

    # --- connectors and cards ---------------------------------------------------------------
    def connector(self, cid: int | None) -> ConnectorControl:
        if cid is None:
            return next(iter(self.connectors.values()))
        if cid not in self.connectors:
            raise ValueError(f"no connector {cid}")
        return self.connectors[cid]

    def connectors_for(self, cid: int) -> list[ConnectorControl]:
        """Connector 0 means all of them, as in OCPP."""
        return list(self.connectors.values()) if cid == 0 else [self.connector(cid)]

    def present_card(self, uid: str) -> int:
        """Give a tap to the connector it is meant for: the one whose session it started, else
        one with an EV waiting for a card, else the first free one. Returns that connector's id.
        The same card read again within card_repeat_s goes where it went, which ignores it."""
        ctrls = list(self.connectors.values())
        chosen = (next((c for c in ctrls if card_repeated(c.cfg, c.state, uid, c.clock())), None)
                  or next((c for c in ctrls if c.state.session and c.state.id_tag == uid), None)
                  or next((c for c in ctrls if not c.state.session and c.state.pilot in PLUGGED_STATES), None)
                  or next((c for c in ctrls if not c.state.session), ctrls[0]))
        chosen.publish("card.presented", id_tag=uid)
        chosen.feed(CardPresented(uid))
        return chosen.id

    def simulated_tap(self, uid: str) -> str:
        """A card on the simulated reader: through the reader loop where one runs, else at once."""
        uid = canonical_uid(uid)
        if self.reading_cards:
            self.world.reader.tap(uid)
        else:
            self.present_card(uid)
        return uid

    def site_sampled(self, reading: MeterReading) -> None:
        self.site_reading = reading
        self.publish("site.sample", current_a=list(reading.current_a), power_w=reading.power_total_w)

    # --- status -----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        site = self.site_reading
        return {"ok": True, "charger": self.config.charger.id, "mode": self.mode,
                "card_reader_error": self.reader_error,
                "site": None if site is None else {"current_a": list(site.current_a), "power_w": site.power_total_w},
                "connectors": [c.status() for c in self.connectors.values()]}
