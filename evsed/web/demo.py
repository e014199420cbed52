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
from evsed.core import limits as lm  # the daemon's own chain: the demo offers what the daemon would

R = TypeVar("R", bound=p.Reply)


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _links(chain: lm.ChainResult) -> tuple[p.ChainLink, ...]:
    return tuple(p.ChainLink(source=lim.source, current_a=lim.current_a, detail=lim.detail, blocked=lim.blocked,
                             binding=lim.source == chain.binding) for lim in chain.limits)


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
        self.site_now: p.SiteNow | None = None  # the site meter's last reading (site(): a house and the sun)
        self.limits: dict[int, dict[str, lm.Limit]] = {c: {} for c in connectors}  # the sources set by commands
        self.status = {c: self._idle(c) for c in connectors}
        self.commands: list[p.Command[Any]] = []
        self.log: list[p.Event] = []
        self.acked = 0
        self._wake = asyncio.Event()

    def _chain(self, cid: int) -> lm.ChainResult:
        return lm.chain(lm.ordered([lm.hardware(self.max_current_a), *self.limits[cid].values()]))

    def _idle(self, cid: int) -> p.ConnectorStatus:
        chain = self._chain(cid)
        return p.ConnectorStatus(
            id=cid, status="Available", state="A", pilot_output="off", duty_pct=None, allowed_a=chain.allowed_a,
            offered_a=0.0, contactor="open", operative=True, measured=None, error_code="NoError", session=None, faults=(),
            reason="no EV", pilot_error="", meter_error="", last_refusal=None, limit_chain=_links(chain),
            offer_a=chain.current_a, not_charging=chain.not_charging, mode="fast", group="")

    # --- the Link interface -----------------------------------------------------------
    async def command(self, command: p.Command[R]) -> R | p.Failure:
        self.commands.append(command)
        return cast(Any, self._run(command))

    def _run(self, c: p.Command[Any]) -> p.Reply | p.Failure:
        cid = getattr(c, "connector", None) or 0
        if isinstance(c, p.Status):
            return p.StatusReply(charger=self.hello.charger, mode=self.mode, card_reader_error="", site=self.site_now,
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
                  offered_a=self.status[cid].offer_a,
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
        self.status[cid] = self._idle(cid)
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

    def site(self, house_w: float, pv_w: float) -> None:
        """A site meter at the grid connection that sees the house, the sun and the EVs' draw now
        (import positive), spread evenly over the phases."""
        power_w = house_w - pv_w + sum(max(0.0, c.session.power_w) for c in self.status.values() if c.session)
        current = round(power_w / self.hello.phases / self.hello.voltage_v, 2)
        self.site_now = p.SiteNow(current_a=(current,) * self.hello.phases, power_w=power_w, stale=False)
        self.emit(p.SiteSample, 0, current_a=self.site_now.current_a, power_w=power_w)

    def limit(self, cid: int, source: str, current_a: float | None) -> None:
        if current_a is None:
            self.limits[cid].pop(source, None)
        else:
            self.limits[cid][source] = lm.Limit(source, current_a, "set by command")
        chain = self._chain(cid)
        offered = chain.current_a if self.status[cid].session else 0.0
        self._set(cid, limit_chain=_links(chain), allowed_a=chain.allowed_a, offer_a=chain.current_a,
                  not_charging=chain.not_charging, offered_a=offered)
        self.emit(p.LimitChanged, cid, source=source, current_a=current_a, allowed_a=chain.allowed_a)


def demo_config(state_dir, web: str = "", timezone: str = "Europe/Amsterdam", extra: str = "") -> Config:
    """A config with one simulated connector and a [web] section (web: its extra TOML lines; extra:
    more tables after it, such as cards, groups, windows and a site meter)."""
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
{extra}
""", f"{state_dir}/evsed.toml")
