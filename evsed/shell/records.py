"""The store subscriber: session rows and the event outbox, written off the event loop.

A session row is written at start, checkpointed about once a minute from its samples (SD
cards wear), and at once when the uplink delivered a reading above the last checkpoint to the
CSMS (a power cut never closes a session below what the CSMS has), and completed at stop;
every durable event goes to the outbox, and once it is committed its sequence number is
handed to `stored` (the control socket's stream).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any, Callable

import structlog

from evsed import protocol as p
from evsed.shell.bus import ChargerEvent, utc_iso_ms
from evsed.store import outbox
from evsed.store.samples import SampleBatcher
from evsed.store.sessions import InlineWriter, LiveSession, Op, Store, StoreWriter, utc_iso
from hal import MeterIdentity

log = structlog.get_logger("evsed")
ENVELOPE = ("seq", "at", "type", "connector")


class Split:
    """A session's energy from solar surplus and from the grid, integrated sample by sample."""

    def __init__(self, last_wh: int):
        self.solar_wh, self.grid_wh, self.last_wh = 0.0, 0.0, last_wh
        self.known = True  # False once a reading came with no site reading to split it by
        self.share: float | None = None  # the grid's share at the last reading

    def add(self, meter_last_wh: int, grid_share: float | None) -> None:
        """The energy since the last reading, split by the grid's share of the EV's power now."""
        drawn, self.last_wh = max(0, meter_last_wh - self.last_wh), max(self.last_wh, meter_last_wh)
        self.share = grid_share
        if grid_share is None:
            self.known = self.known and drawn == 0
            return
        self.grid_wh += drawn * grid_share
        self.solar_wh += drawn * (1.0 - grid_share)

    def wh(self) -> tuple[int, int] | None:
        if not self.known:
            return None
        solar = round(self.solar_wh)
        return solar, round(self.solar_wh + self.grid_wh) - solar  # they add up to the energy


class Recorder:
    """pricing(group) is the tariff a new session of that card group runs under, as stored JSON;
    grid_share(connector) the share (0-1) of its EV's power that comes from the grid now (the
    rest from solar surplus), None without a site meter; meter_identity(connector) its meter's
    vendor, model and serial as told when the meter opened (a session keeps those at its start)."""

    def __init__(self, writer: StoreWriter | InlineWriter, *, clock: Callable[[], float], checkpoint_s: float,
                 sample_interval_s: float = 10.0, pricing: Callable[[str], str] = lambda group: "",
                 stored: Callable[[p.Event], None] = lambda event: None,
                 grid_share: Callable[[int], float | None] = lambda connector: None,
                 meter_identity: Callable[[int], MeterIdentity] = lambda connector: MeterIdentity()):
        self.writer, self.clock, self.checkpoint_s, self.stored = writer, clock, checkpoint_s, stored
        self.sample_interval_s, self.pricing, self.grid_share = sample_interval_s, pricing, grid_share
        self.meter_identity = meter_identity
        self._split: dict[int, Split] = {}  # session id -> its energy by source so far
        self._checkpointed_at: dict[int, float] = {}  # session id -> when its last checkpoint was queued
        self._samples: dict[int, SampleBatcher] = {}  # session id -> its samples since the last write
        self._durable_wh: dict[int, int] = {}  # session id -> the reading its last queued write holds

    def __call__(self, e: ChargerEvent) -> None:
        handler = getattr(self, "_" + e.type.replace(".", "_"), None)
        op: Op | None = handler(e) if handler is not None else None
        if e.durable:
            self._append(e, op)
        elif op is not None:
            self.writer.submit(op)

    def _append(self, e: ChargerEvent, op: Op | None) -> None:
        """The event's row write and its outbox entry in one transaction: a power cut keeps both
        or neither (a session stopped in its row but never told to the services would stay open
        at the CSMS for ever). A row write that fails loses only itself, not the event."""
        at, seq = utc_iso_ms(e.at), [0]
        try:  # stored as the protocol's record says it: the stream and the outbox carry the same fields
            record = e.wire()
            event: p.Event | None = record
            data = {k: v for k, v in record.to_wire().items() if k not in ENVELOPE}
        except (ValueError, KeyError) as exc:  # a defect: the row write and the event are kept all the same
            log.error("event.not_the_protocol", event=e.type, error=str(exc))
            event, data = None, e.data

        def write(st: Store) -> None:
            if op is not None:
                st.db.execute("SAVEPOINT row")
                try:
                    op(st)
                except Exception as exc:  # noqa: BLE001 - as the writer does for any op: logged, survived
                    st.db.execute("ROLLBACK TO row")
                    log.error("store.write_failed", error=repr(exc), event=e.type)
                finally:
                    st.db.execute("RELEASE row")
            seq[0] = outbox.append(st.db, at, e.type, e.connector, data)

        def committed() -> None:
            if event is not None:
                self.stored(replace(event, seq=seq[0]))
        self.writer.submit(write, committed)

    def _session_started(self, e: ChargerEvent) -> Op | None:
        connector, d = e.connector, e.data
        s = LiveSession(connector, d["id_tag"], d["card_name"], d["group"], d["auth_source"], d["started_at"],
                        d["meter_start_wh"], d["meter_start_wh"], row_id=d["session"], pricing=self.pricing(d["group"]))
        self._identify(s)
        self._checkpointed_at[d["session"]] = self.clock()
        self._samples[d["session"]] = SampleBatcher(self.sample_interval_s)
        self._durable_wh[d["session"]] = d["meter_start_wh"]
        self._split[d["session"]] = Split(d["meter_start_wh"])
        return lambda st: st.start(s)

    def _session_meter_start(self, e: ChargerEvent) -> Op | None:
        d = e.data
        start, last = d["meter_start_wh"], d.get("meter_last_wh", d["meter_start_wh"])
        split = self._split.get(d["session"])
        if split is not None:  # a first reading, or a replaced meter: the next energy counts from here
            split.last_wh = last if last is not None else start
        return lambda st: st.set_meter(d["session"], start, last, d.get("rebaselined", False))

    def _session_sample(self, e: ChargerEvent) -> Op | None:
        connector, d = e.connector, e.data
        now = self.clock()
        batch = self._samples.setdefault(d["session"], SampleBatcher(self.sample_interval_s))
        batch.offer(now, e.at, d["energy_wh"], d["power_w"], tuple(d["current_a"]), tuple(d["voltage_v"]))
        split = self._split.setdefault(d["session"], Split(d["meter_last_wh"]))
        split.add(d["meter_last_wh"], self.grid_share(e.connector))
        if now - self._checkpointed_at.get(d["session"], -float("inf")) < self.checkpoint_s:
            return None
        self._checkpointed_at[d["session"]] = now
        self._durable_wh[d["session"]] = d["meter_last_wh"]
        row, samples = (d["session"], d["meter_last_wh"], d["peak_power_w"], utc_iso(e.at)), batch.take()
        wh = split.wh()
        return lambda st: st.checkpoint(*row, samples=samples, split=wh)

    def delivered(self, s: LiveSession, energy_wh: int, at: dt.datetime) -> None:
        """A reading the uplink delivered to the CSMS: above the last checkpoint, the session is
        checkpointed now with its reading (at least that one); the minute starts again from here."""
        if s.row_id is None or energy_wh <= self._durable_wh.get(s.row_id, s.meter_start_wh):
            return
        self._checkpointed_at[s.row_id] = self.clock()
        self._durable_wh[s.row_id] = reading = max(energy_wh, s.meter_last_wh)
        batch = self._samples.get(s.row_id)
        row, samples = (s.row_id, reading, s.peak_power_w, utc_iso(at)), batch.take() if batch is not None else []
        self.writer.submit(lambda st: st.checkpoint(*row, samples=samples))

    def _session_stopped(self, e: ChargerEvent) -> Op | None:
        connector, d = e.connector, e.data
        self._checkpointed_at.pop(d["session"], None)
        self._durable_wh.pop(d["session"], None)
        batch = self._samples.pop(d["session"], None)
        samples = batch.take() if batch is not None else []
        split = self._split.pop(d["session"], None)
        if split is not None:  # the energy up to the open, split as at the last reading while charging
            split.add(d["meter_stop_wh"], split.share)
        wh = split.wh() if split is not None else None
        s = LiveSession(connector, d["id_tag"], d["card_name"], d["group"], d["auth_source"], d["started_at"],
                        d["meter_start_wh"], d["meter_stop_wh"], peak_power_w=d["peak_power_w"],
                        row_id=d["session"], stopped=(d["reason"], d["stopped_at"]), pricing=self.pricing(d["group"]),
                        solar_wh=wh[0] if wh else None, grid_wh=wh[1] if wh else None)
        self._identify(s)
        return lambda st: st.finish(s, samples)

    def _identify(self, s: LiveSession) -> None:
        m = self.meter_identity(s.connector_id)
        s.meter_vendor, s.meter_model, s.meter_id = m.vendor, m.model, m.serial

    def _session_clock_corrected(self, e: ChargerEvent) -> Op | None:
        """The wall clock stepped under a session timed on an unsynchronized clock: its start (and
        stop, when also taken then) and its samples so far move by the step."""
        d = e.data
        batch = self._samples.get(d["session"])
        if batch is not None:
            batch.shift(d["by_s"])
        return lambda st: st.correct_times(d["session"], d["started_at"], d["stopped_at"], d["by_s"])
