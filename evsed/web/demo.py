"""A charger in memory behind the Link interface: the page's test double, shipped like gpiozero's
MockFactory so tests and `python -m evsed.web demo` can show the page without a daemon.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import AsyncIterator, Callable

from evsed.config import Config, parse


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class DemoLink:
    """Speaks the Link interface (hello, command, events, ack) for a made-up charger; the scenario
    methods (plug, start, sample, stop, fault, limit) change it and emit the daemon's events."""

    def __init__(self, connectors: tuple[int, ...] = (1,), *, charger: str = "demo", phases: int = 3,
                 max_current_a: float = 32.0, clock: Callable[[], dt.datetime] | None = None):
        self.hello = {"ok": True, "version": 1, "charger": charger, "connectors": list(connectors),
                      "phases": phases, "voltage_v": 230}
        self.clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))
        self.max_current_a = max_current_a
        self.mode = "fast"
        self.status = {c: self._idle(c) for c in connectors}
        self.commands: list[dict] = []
        self.log: list[dict] = []
        self.acked = 0
        self._wake = asyncio.Event()

    def _idle(self, cid: int) -> dict:
        return {"id": cid, "status": "Available", "state": "A", "pilot_output": "+12V", "duty_pct": None,
                "allowed_a": self.max_current_a, "offered_a": 0.0, "contactor": "open", "measured": None,
                "session": None, "faults": [], "reason": "no EV", "last_refusal": None, "limits": {}}

    # --- the Link interface -----------------------------------------------------------
    async def command(self, req: dict) -> dict:
        self.commands.append(req)
        cmd, cid = req.get("cmd"), int(req.get("connector") or 0)
        if cmd == "status":
            return {"ok": True, "charger": self.hello["charger"], "card_reader_error": None, "mode": self.mode,
                    "connectors": [dict(s) for s in self.status.values()]}
        if cmd == "remote-stop" and self.status.get(cid, {}).get("session"):
            self.stop(cid, req.get("reason", "remote"))
            return {"ok": True}
        if cmd == "remote-start" and cid in self.status:
            self.plug(cid)
            self.start(cid, req["id_tag"])
            return {"ok": True}
        if cmd == "clear-faults" and cid in self.status:
            self.clear_faults(cid)
            return {"ok": True, "connector": cid}
        if cmd == "mode":
            self.mode = req["mode"]
            return {"ok": True}
        if cmd == "availability":
            for c in (self.status if cid == 0 else [cid]):
                self._set(c, status="Available" if req["operative"] else "Unavailable",
                          reason="no EV" if req["operative"] else "connector unavailable")
            return {"ok": True}
        if cmd == "reserve":
            return {"ok": True, "result": "Accepted"}
        return {"ok": False, "error": f"the demo charger does not do {cmd!r} now"}

    async def events(self, after: int | None = None) -> AsyncIterator[dict]:
        after = self.acked if after is None else after  # as the daemon: resume after the last ack
        while True:
            wake = self._wake
            pending = [e for e in self.log if e["seq"] > after]
            if not pending:
                await wake.wait()
                continue
            for event in pending:
                yield event
                after = event["seq"]

    async def ack(self, seq: int) -> None:
        self.acked = max(self.acked, seq)

    # --- the scenario -----------------------------------------------------------------
    def emit(self, kind: str, connector: int, at: dt.datetime | None = None, **fields) -> dict:
        event = {"seq": len(self.log) + 1, "at": _iso(at or self.clock()), "type": kind, "connector": connector,
                 **fields}
        self.log.append(event)
        self._wake.set()
        self._wake = asyncio.Event()
        return event

    def _set(self, cid: int, **fields) -> None:
        old = self.status[cid]
        self.status[cid] = {**old, **fields}
        if fields.get("status", old["status"]) != old["status"]:
            self.emit("status", cid, status=self.status[cid]["status"], reason=self.status[cid]["reason"],
                      error_code="NoError", info="")

    def plug(self, cid: int) -> None:
        if self.status[cid]["state"] == "A":
            self._set(cid, state="B", status="Preparing", reason="waiting for a card", pilot_output="+12V")

    def start(self, cid: int, id_tag: str, card_name: str = "", at: dt.datetime | None = None) -> None:
        at = at or self.clock()
        self._set(cid, state="C", status="Charging", reason="", pilot_output="pwm", contactor="closed",
                  offered_a=self.status[cid]["allowed_a"],
                  session={"id_tag": id_tag, "card_name": card_name, "started_at": _iso(at), "energy_wh": 0,
                           "power_w": 0.0, "peak_power_w": 0.0})
        self.emit("session.started", cid, at=at, session=len(self.log), id_tag=id_tag, card_name=card_name,
                  group="", auth_source="local", meter_start_wh=0, started_at=_iso(at))

    def sample(self, cid: int, power_w: float, current_a: list[float], energy_wh: int,
               at: dt.datetime | None = None, **session_fields) -> None:
        session = dict(self.status[cid]["session"] or {})
        session.update(energy_wh=energy_wh, power_w=power_w,
                       peak_power_w=max(power_w, session.get("peak_power_w", 0.0)), **session_fields)
        self._set(cid, session=session, measured={"current_a": current_a, "power_w": power_w, "energy_wh": energy_wh})
        self.emit("session.sample", cid, at=at, session=0, energy_wh=energy_wh, power_w=power_w, current_a=current_a,
                  voltage_v=[230.0] * len(current_a), offered_a=self.status[cid]["offered_a"])

    def stop(self, cid: int, reason: str = "ev_disconnected") -> None:
        session = self.status[cid]["session"] or {}
        self._set(cid, state="B", status="Finishing", reason="session ended; unplug the EV", contactor="open",
                  pilot_output="+12V", offered_a=0.0, session=None, measured=None)
        self.emit("session.stopped", cid, session=0, id_tag=session.get("id_tag"), meter_stop_wh=0,
                  energy_wh=session.get("energy_wh", 0), reason=reason, stopped_at=_iso(self.clock()))

    def unplug(self, cid: int) -> None:
        self.status[cid] = {**self._idle(cid), "limits": self.status[cid]["limits"]}
        self.emit("status", cid, status="Available", reason="no EV", error_code="NoError", info="")

    def fault(self, cid: int, fault: str = "rcd", retry_in_s: float | None = 300.0) -> None:
        self._set(cid, status="Faulted", reason=f"fault: {fault}", contactor="open", offered_a=0.0,
                  faults=[{"fault": fault, "detail": "", "lockout": retry_in_s is None, "retry_in_s": retry_in_s}])
        self.emit("fault.raised", cid, fault=fault, lockout=retry_in_s is None, detail="", error_code="GroundFailure")

    def clear_faults(self, cid: int) -> None:
        faults = [f["fault"] for f in self.status[cid]["faults"]]
        self._set(cid, faults=[], status="Available" if self.status[cid]["state"] == "A" else "Preparing",
                  reason="no EV")
        self.emit("fault.cleared", cid, faults=faults)

    def limit(self, cid: int, source: str, current_a: float | None, until: str | None = None) -> None:
        limits = dict(self.status[cid]["limits"])
        if current_a is None:
            limits.pop(source, None)
        else:
            limits[source] = {"current_a": current_a, "until": until} if until else current_a
        values = [v["current_a"] if isinstance(v, dict) else v for v in limits.values()]
        allowed = min([self.max_current_a, *values])
        offered = min(allowed, self.max_current_a) if self.status[cid]["session"] else 0.0
        self._set(cid, limits=limits, allowed_a=allowed, offered_a=offered)
        self.emit("limit.changed", cid, source=source, current_a=current_a, allowed_a=allowed)


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
