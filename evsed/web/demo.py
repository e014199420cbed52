"""A charger in memory behind the Link interface: the page's test double, shipped like gpiozero's
MockFactory so tests and `python -m evsed.web demo` can show the page without a daemon.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import replace
from typing import Any, AsyncIterator, Callable, TypeVar, cast

from evsed import protocol as p

from evsed.config import Config, parse

R = TypeVar("R", bound=p.Reply)


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_CHAIN = {"hardware": p.ChainLink(current_a=32.0, detail="charger rating")}


class DemoLink:
    """Speaks the Link interface (hello, command, events, ack) for a made-up charger with the
    protocol's records; the scenario methods (plug, start, sample, stop, fault, limit) change it
    and emit the daemon's events."""

    def __init__(self, connectors: tuple[int, ...] = (1,), *, charger: str = "demo", phases: int = 3,
                 max_current_a: float = 32.0, clock: Callable[[], dt.datetime] | None = None):
        self.hello = p.HelloReply(version=p.VERSION, charger=charger, connectors=connectors, phases=phases,
                                  voltage_v=230, acked=0, last_seq=0)
        self.clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))
        self.max_current_a = max_current_a
        self.mode: p.Mode = "fast"
        self.status = {c: self._idle(c) for c in connectors}
        self.commands: list[p.Command[Any]] = []
        self.log: list[p.Event] = []
        self.acked = 0
        self._wake = asyncio.Event()

    def _idle(self, cid: int) -> p.ConnectorStatus:
        return p.ConnectorStatus(
            id=cid, status="Available", state="A", pilot_output="off", duty_pct=None, allowed_a=self.max_current_a,
            offered_a=0.0, contactor="open", operative=True, measured=None, error_code="NoError", session=None, faults=(),
            reason="no EV", pilot_error="", meter_error="", last_refusal=None, limits={}, limit_chain=_CHAIN,
            binding="hardware", offer_a=self.max_current_a, not_charging=None, mode="fast", group="")

    # --- the Link interface -----------------------------------------------------------
    async def command(self, command: p.Command[R]) -> R | p.Failure:
        self.commands.append(command)
        return cast(Any, self._run(command))

    def _run(self, c: p.Command[Any]) -> p.Reply | p.Failure:
        cid = getattr(c, "connector", None) or 0
        if isinstance(c, p.Status):
            return p.StatusReply(charger=self.hello.charger, mode=self.mode, card_reader_error="", site=None,
                                 connectors=tuple(self.status.values()))
        if isinstance(c, p.RemoteStop) and cid in self.status and self.status[cid].session:
            self.stop(cid, c.reason)
            return p.StopReply(connector=cid, result="Accepted")
        if isinstance(c, p.RemoteStart) and cid in self.status:
            self.plug(cid)
            self.start(cid, c.id_tag)
            return p.StartReply(connector=cid, result="Accepted")
        if isinstance(c, p.ClearFaults) and cid in self.status:
            self.clear_faults(cid)
            return p.ConnectorReply(connector=cid)
        if isinstance(c, p.SetMode):
            self.mode = c.mode
            return p.ModeReply(mode=c.mode)
        if isinstance(c, p.Availability):
            for n in (list(self.status) if cid == 0 else [cid]):
                self._set(n, status="Available" if c.operative else "Unavailable", operative=c.operative,
                          reason="no EV" if c.operative else "connector unavailable")
            return p.AvailabilityReply(result="Accepted")
        if isinstance(c, p.Reserve):
            return p.ReserveReply(connector=cid or 1, result="Accepted")
        return p.Failure(error=f"the demo charger does not do {c.LABEL!r} now")

    async def events(self, after: int | None = None) -> AsyncIterator[p.Event]:
        after = self.acked if after is None else after  # as the daemon: resume after the last ack
        while True:
            wake = self._wake
            pending = [e for e in self.log if (e.seq or 0) > after]
            if not pending:
                await wake.wait()
                continue
            for event in pending:
                yield event
                after = event.seq or after

    async def ack(self, seq: int) -> None:
        self.acked = max(self.acked, seq)

    # --- the scenario -----------------------------------------------------------------
    def emit(self, kind: type[p.Event], connector: int, at: dt.datetime | None = None, **fields: Any) -> p.Event:
        event = kind(seq=len(self.log) + 1, at=_iso(at or self.clock()), connector=connector, **fields)
        self.log.append(event)
        self._wake.set()
        self._wake = asyncio.Event()
        return event

    def _set(self, cid: int, **fields: Any) -> None:
        old = self.status[cid]
        self.status[cid] = replace(old, **fields)
        if self.status[cid].status != old.status:
            self.emit(p.StatusChanged, cid, status=self.status[cid].status, reason=self.status[cid].reason)

    def plug(self, cid: int) -> None:
        if self.status[cid].state == "A":
            self._set(cid, state="B", status="Preparing", reason="waiting for a card")

    def start(self, cid: int, id_tag: str, card_name: str = "", at: dt.datetime | None = None) -> None:
        at = at or self.clock()
        session = len(self.log) + 1
        self._set(cid, state="C", status="Charging", reason="", pilot_output="pwm", contactor="closed",
                  offered_a=self.status[cid].allowed_a,
                  session=p.SessionNow(id=session, id_tag=id_tag, card_name=card_name, group="", started_at=_iso(at),
                                       energy_wh=0, power_w=0.0, peak_power_w=0.0))
        self.emit(p.SessionStarted, cid, at=at, session=session, id_tag=id_tag, card_name=card_name, group="",
                  auth_source="local", meter_start_wh=0, meter_start_unknown=False, started_at=_iso(at))

    def sample(self, cid: int, power_w: float, current_a: list[float], energy_wh: int,
               at: dt.datetime | None = None, **session_fields: Any) -> None:
        session = self.status[cid].session
        assert session is not None, "sample: no session runs"
        session = replace(session, energy_wh=energy_wh, power_w=power_w,
                          peak_power_w=max(power_w, session.peak_power_w), **session_fields)
        self._set(cid, session=session, measured=p.Measured(current_a=tuple(current_a), power_w=power_w,
                                                            energy_wh=energy_wh, stale=False))
        self.emit(p.SessionSample, cid, at=at, session=session.id, energy_wh=energy_wh, meter_last_wh=energy_wh,
                  session_energy_wh=energy_wh, power_w=power_w, peak_power_w=session.peak_power_w,
                  current_a=tuple(current_a), voltage_v=(230.0,) * len(current_a),
                  offered_a=self.status[cid].offered_a)

    def stop(self, cid: int, reason: str = "ev_disconnected") -> None:
        session = self.status[cid].session
        self._set(cid, state="B", status="Finishing", reason="session ended; unplug the EV", contactor="open",
                  pilot_output="off", offered_a=0.0, session=None, measured=None)
        if session is not None:
            self.emit(p.SessionStopped, cid, session=session.id, id_tag=session.id_tag, card_name=session.card_name,
                      group="", auth_source="local", started_at=session.started_at, meter_start_wh=0,
                      meter_stop_wh=session.energy_wh, energy_wh=session.energy_wh,
                      peak_power_w=session.peak_power_w, reason=reason, stopped_at=_iso(self.clock()))

    def unplug(self, cid: int) -> None:
        self.status[cid] = replace(self._idle(cid), limits=self.status[cid].limits)
        self.emit(p.StatusChanged, cid, status="Available", reason="no EV")

    def fault(self, cid: int, fault: str = "rcd", retry_in_s: float | None = 300.0) -> None:
        self._set(cid, status="Faulted", reason=f"fault: {fault}", contactor="open", offered_a=0.0,
                  faults=(p.FaultNow(fault=fault, detail="", clears_by="retry" if retry_in_s else "person",
                                     lockout=retry_in_s is None, retry_in_s=retry_in_s),))
        self.emit(p.FaultRaised, cid, fault=fault, lockout=retry_in_s is None, detail="")

    def clear_faults(self, cid: int) -> None:
        faults = tuple(f.fault for f in self.status[cid].faults)
        self._set(cid, faults=(), status="Available" if self.status[cid].state == "A" else "Preparing",
                  reason="no EV")
        self.emit(p.FaultCleared, cid, faults=faults)

    def limit(self, cid: int, source: str, current_a: float | None) -> None:
        limits = dict(self.status[cid].limits)
        if current_a is None:
            limits.pop(source, None)
        else:
            limits[source] = current_a
        allowed = min([self.max_current_a, *limits.values()])
        offered = allowed if self.status[cid].session else 0.0
        self._set(cid, limits=limits, allowed_a=allowed, offered_a=offered)
        self.emit(p.LimitChanged, cid, source=source, current_a=current_a, allowed_a=allowed)


def demo_config(state_dir, web: str = "", timezone: str = "Europe/Amsterdam") -> Config:
    """A config with one simulated connector and a [web] section (web: its extra TOML lines)."""
    return parse(f"""
[charger]
id = "demo"
timezone = "{timezone}"
[[connector]]
[connector.pilot]
backend = "sim"
[connector.contactor]
backend = "sim"
[store]
state_dir = "{state_dir}"
runtime_dir = "{state_dir}/run"
[web]
{web}
""", f"{state_dir}/evsed.toml")
